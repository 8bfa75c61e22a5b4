# Builds and runs tests/outside_project one way (a ctest test per way):
#   cmake -DMODE=find_package|add_subdirectory -DTINYQAT_SOURCE=<src> -DTINYQAT_BUILD=<build>
#         -DWORK=<scratch dir> [-DLAUNCHER=ccache] -P run.cmake
# find_package installs the already built tinyqat into WORK/prefix first.
# add_subdirectory compiles tinyqat again inside the outside project, without
# optimisation (faster to compile); WORK is kept, so a second run only relinks.
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
run(${CMAKE_COMMAND} --build ${WORK}/build)
run(${WORK}/build/outside)
message("${out}")
if(NOT out MATCHES "outside: ok")
  message(FATAL_ERROR "outside project (${MODE}): the program did not print 'outside: ok'")
endif()
if(MODE STREQUAL "find_package" AND NOT EXISTS ${WORK}/prefix/bin/tinyqat)
  message(FATAL_ERROR "outside project: cmake --install did not install the tinyqat command")
endif()
