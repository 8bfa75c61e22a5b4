# Every dependency is a Debian package. A missing one stops the configure step
# with the name of the package that provides it (scripts/setup.sh installs all).
function(tinyqat_missing what package)
  message(FATAL_ERROR "tinyqat: ${what} not found. Install it with: apt-get install ${package}"
                      " (or run scripts/setup.sh, which installs every dependency)")
endfunction()

find_package(Threads REQUIRED)

include(${CMAKE_CURRENT_LIST_DIR}/tinyqatOpenBLAS.cmake)  # tinyqat::OpenBLAS
if(NOT TARGET tinyqat::OpenBLAS)
  tinyqat_missing("OpenBLAS (cblas.h, libopenblas)" "libopenblas-dev")
endif()

find_package(fmt QUIET)
if(NOT fmt_FOUND)
  tinyqat_missing("fmt" "libfmt-dev")
endif()

find_package(ZLIB QUIET)
if(NOT ZLIB_FOUND)
  tinyqat_missing("zlib (zlib.h, libz; reads the gzip-compressed IDX datasets)" "zlib1g-dev")
endif()

if(TINYQAT_BUILD_TOOLS)
  find_package(cxxopts QUIET)
  if(NOT cxxopts_FOUND)
    tinyqat_missing("cxxopts" "libcxxopts-dev")
  endif()
endif()

if(TINYQAT_BUILD_TESTS)
  find_package(Catch2 2 QUIET)
  if(NOT Catch2_FOUND)
    tinyqat_missing("Catch2 v2" "catch2")
  endif()
  # The report test parses the HTML report with a real XML parser.
  find_package(LibXml2 QUIET)
  if(NOT LibXml2_FOUND)
    tinyqat_missing("libxml2 (tests/test_report.cpp parses the HTML report with it)" "libxml2-dev")
  endif()
endif()

# Data-parallel training (docs/distributed.md): the command line links the MPI
# communicator (tinyqat_dist); the library itself never needs MPI.
if(TINYQAT_BUILD_TOOLS)
  find_package(MPI COMPONENTS CXX QUIET)
  if(NOT MPI_CXX_FOUND)
    tinyqat_missing("MPI (Open MPI: mpi.h, libmpi, mpirun)" "libopenmpi-dev openmpi-bin")
  endif()
endif()

find_package(nlohmann_json 3 QUIET)
if(NOT nlohmann_json_FOUND)
  tinyqat_missing("nlohmann-json" "nlohmann-json3-dev")
endif()
