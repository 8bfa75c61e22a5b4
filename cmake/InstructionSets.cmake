# Kernels for an instruction set beyond baseline x86-64 live in files of their
# own, named for it (int8_gemm_avx2.cpp). Only those files are compiled for
# that instruction set; the library itself targets baseline x86-64, and runtime
# dispatch decides whether a kernel runs.
#
# One line per instruction set: a file whose name contains "_<tag>" gets the
# flags. Tags combine: a file named x_avx512_vnni.cpp gets both sets.
set(TINYQAT_ISA_TAGS avx2 avxvnni avx512 avx512vnni amx)
set(TINYQAT_ISA_FLAGS_avx2 -mavx2 -mfma)
set(TINYQAT_ISA_FLAGS_avxvnni -mavx2 -mfma -mavxvnni)
set(TINYQAT_ISA_FLAGS_avx512 -mavx2 -mfma -mavx512f -mavx512bw -mavx512vl -mavx512dq)
# int8_gemm_avx512vnni.cpp carries both tags: the AVX-512 flags and VNNI's.
set(TINYQAT_ISA_FLAGS_avx512vnni -mavx512vnni)
set(TINYQAT_ISA_FLAGS_amx ${TINYQAT_ISA_FLAGS_avx512} -mavx512vnni -mamx-tile -mamx-int8)

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
