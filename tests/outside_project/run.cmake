# Builds and runs tests/outside_project one way:
#   cmake -DMODE=find_package|add_subdirectory -DTINYQAT_SOURCE=<src> -DTINYQAT_BUILD=<build>
#         -DWORK=<scratch dir> [-DLAUNCHER=ccache] [-DCONFIGURE_ONLY=ON] -P run.cmake
# find_package installs the already built tinyqat into WORK/prefix first.
# add_subdirectory compiles tinyqat again inside the outside project, without
# optimisation (faster to compile); WORK is kept, so a second run only relinks.
# That compile takes minutes, so ctest runs add_subdirectory with
# CONFIGURE_ONLY=ON (the targets resolve, tinyqat's own programs stay out) and
# scripts/check-outside.sh runs the full build.
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "outside project (${MODE}): `${cmd}` failed (${rc}):\n${out}")
  endif()
  set(out "${out}" PARENT_SCOPE)
endfunction()

set(project_dir ${CMAKE_CURRENT_LIST_DIR})
set(generator -G Ninja)
if(LAUNCHER)
  list(APPEND generator -DCMAKE_CXX_COMPILER_LAUNCHER=${LAUNCHER})
endif()
if(MODE STREQUAL "find_package")
  file(REMOVE_RECURSE ${WORK}/prefix ${WORK}/build)
  run(${CMAKE_COMMAND} --install ${TINYQAT_BUILD} --prefix ${WORK}/prefix)
  run(${CMAKE_COMMAND} -S ${project_dir} -B ${WORK}/build ${generator} -DCMAKE_BUILD_TYPE=Release
      -DCMAKE_PREFIX_PATH=${WORK}/prefix)
elseif(MODE STREQUAL "add_subdirectory")
  run(${CMAKE_COMMAND} -S ${project_dir} -B ${WORK}/build ${generator} -DCMAKE_BUILD_TYPE=Debug
      -DTINYQAT_SOURCE_DIR=${TINYQAT_SOURCE})
else()
  message(FATAL_ERROR "run.cmake: MODE must be find_package or add_subdirectory, not '${MODE}'")
endif()
if(CONFIGURE_ONLY)
  file(READ ${WORK}/build/build.ninja ninja)
  if(NOT ninja MATCHES "\nbuild outside: ")
    message(FATAL_ERROR "outside project (${MODE}): no rule builds the program 'outside'")
  endif()
  if(ninja MATCHES "tinyqat_tests|tinyqat_bench")
    message(FATAL_ERROR "outside project (${MODE}): tinyqat's own tests or benchmarks are part of the build")
  endif()
  message("outside project (${MODE}): configured")
  return()
endif()
run(${CMAKE_COMMAND} --build ${WORK}/build)
run(${WORK}/build/outside)
message("${out}")
if(NOT out MATCHES "outside: ok")
  message(FATAL_ERROR "outside project (${MODE}): the program did not print 'outside: ok'")
endif()
if(MODE STREQUAL "find_package" AND NOT EXISTS ${WORK}/prefix/bin/tinyqat)
  message(FATAL_ERROR "outside project: cmake --install did not install the tinyqat command")
endif()
