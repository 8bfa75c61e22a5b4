# tinyqat_add_layer(<layer> [PUBLIC <targets>...] [PRIVATE <targets>...])
#
# The static library tinyqat_<layer> (alias tinyqat::<layer>) from
# src/<layer>/*.cpp. PUBLIC: what the layer's headers include; PRIVATE: what
# only its sources use.
#
# Headers are included as "<layer>/<file>.h". Each layer gets an include root
# of its own, <build>/layers/<layer>, holding a single link <layer> ->
# src/<layer>: a target sees the headers of its own layer and of the layers it
# links, and a wrong-way #include fails to compile. Installed, every header is
# under <prefix>/include/tinyqat/<layer>/.
#
# A program, tinyqat_layer_check_<layer>, links the whole archive of the layer
# with its dependencies only: a call into a layer above fails to link.
include(GNUInstallDirs)

set(TINYQAT_LAYER_INCLUDE_ROOT ${PROJECT_BINARY_DIR}/layers)
set(TINYQAT_LAYER_TARGETS "")
file(MAKE_DIRECTORY ${TINYQAT_LAYER_INCLUDE_ROOT}/umbrella)
file(CREATE_LINK ${PROJECT_SOURCE_DIR}/src/tinyqat.h ${TINYQAT_LAYER_INCLUDE_ROOT}/umbrella/tinyqat.h SYMBOLIC)

function(tinyqat_add_layer layer)
  cmake_parse_arguments(arg "" "" "PUBLIC;PRIVATE" ${ARGN})
  set(target tinyqat_${layer})
  set(root ${TINYQAT_LAYER_INCLUDE_ROOT}/${layer})
  file(MAKE_DIRECTORY ${root})
  file(CREATE_LINK ${PROJECT_SOURCE_DIR}/src/${layer} ${root}/${layer} SYMBOLIC)

  file(GLOB sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/${layer}/*.cpp)
  tinyqat_apply_isa_flags(${sources})
  add_library(${target} STATIC ${sources})
  add_library(tinyqat::${layer} ALIAS ${target})
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/src/${layer}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/tinyqat/${layer}
          FILES_MATCHING PATTERN "*.h")
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${layer})
  target_include_directories(${target} PUBLIC $<BUILD_INTERFACE:${root}>
                                              $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/tinyqat>)
  target_link_libraries(${target} PUBLIC ${arg_PUBLIC} PRIVATE ${arg_PRIVATE})

  # The layer check: main() only; every object of the archive is linked in.
  if(NOT TINYQAT_BUILD_TESTS)
    set(TINYQAT_LAYER_TARGETS ${TINYQAT_LAYER_TARGETS} ${target} PARENT_SCOPE)
    return()
  endif()
  set(check_main ${CMAKE_CURRENT_BINARY_DIR}/layers/check_main.cpp)
  if(NOT EXISTS ${check_main})
    file(WRITE ${check_main} "int main() { return 0; }\n")
  endif()
  add_executable(tinyqat_layer_check_${layer} ${check_main})
  target_link_libraries(tinyqat_layer_check_${layer} PRIVATE
                        "-Wl,--whole-archive" ${target} "-Wl,--no-whole-archive" ${arg_PUBLIC} ${arg_PRIVATE})

  set(TINYQAT_LAYER_TARGETS ${TINYQAT_LAYER_TARGETS} ${target} PARENT_SCOPE)
endfunction()
