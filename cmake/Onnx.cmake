# Debian's ONNX library (libonnx-dev) and the protobuf runtime it is built on
# (libprotobuf-dev), for the ONNX export / import target tinyqat_onnx.
# ONNX's package config file defines the imported targets `onnx` and
# `onnx_proto`, which carry the compile definitions of the build Debian ships
# (ONNX_NAMESPACE=onnx, ONNX_ML=1); it refers to protobuf::libprotobuf, so
# protobuf is found first.
find_package(Protobuf QUIET)
if(NOT Protobuf_FOUND)
  tinyqat_missing("protobuf (the runtime ONNX files are written with)" "libprotobuf-dev")
endif()
find_package(ONNX CONFIG QUIET)
if(NOT ONNX_FOUND OR NOT TARGET onnx_proto)
  tinyqat_missing("ONNX (onnx/onnx_pb.h, libonnx_proto)" "libonnx-dev")
endif()
