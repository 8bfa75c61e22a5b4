# Kernels for an instruction set beyond baseline x86-64 live in files of their
# own, named for it (int8_gemm_avx2.cpp). Only those files are compiled for
# that instruction set; the library itself targets baseline x86-64, and runtime
# dispatch decides whether a kernel runs.
#
# One line per instruction set: a file whose name contains "_<tag>" gets the
# flags. Tags combine: a file named x_avx512_vnni.cpp gets both sets.
set(TINYQAT_ISA_TAGS avx2 avx512)
set(TINYQAT_ISA_FLAGS_avx2 -mavx2 -mfma)
set(TINYQAT_ISA_FLAGS_avx512 -mavx2 -mfma -mavx512f -mavx512bw -mavx512vl)

# Adds the flags above to those of `sources` whose names carry a tag. Source
# properties belong to the directory that calls this: call it where the
# target using the sources is created.
function(tinyqat_apply_isa_flags)
  foreach(src IN LISTS ARGN)
    get_filename_component(name "${src}" NAME_WE)
    foreach(tag IN LISTS TINYQAT_ISA_TAGS)
      if(name MATCHES "_${tag}")
        set_property(SOURCE "${src}" APPEND PROPERTY COMPILE_OPTIONS ${TINYQAT_ISA_FLAGS_${tag}})
      endif()
    endforeach()
  endforeach()
endfunction()
