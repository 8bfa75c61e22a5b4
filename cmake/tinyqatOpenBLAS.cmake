# OpenBLAS ships no CMake package on Debian: find its header and library and
# wrap them in the imported target tinyqat::OpenBLAS. Used by the build
# (cmake/Dependencies.cmake) and, installed beside it, by tinyqatConfig.cmake.
if(NOT TARGET tinyqat::OpenBLAS)
  find_path(CBLAS_INCLUDE_DIR cblas.h PATHS /usr/include/x86_64-linux-gnu /usr/include/openblas)
  find_library(OPENBLAS_LIBRARY NAMES openblas)
  if(CBLAS_INCLUDE_DIR AND OPENBLAS_LIBRARY)
    add_library(tinyqat::OpenBLAS INTERFACE IMPORTED)
    set_target_properties(tinyqat::OpenBLAS PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${CBLAS_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES "${OPENBLAS_LIBRARY}")
  endif()
endif()
