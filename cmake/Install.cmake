# Install rules, the CMake package and the Debian package.
#
#   cmake --install build --prefix /usr/local      headers, libraries, the tinyqat command, the package config
#   cd build && cpack -G DEB                        tinyqat_<version>_amd64.deb
#
# Then another project does
#   find_package(tinyqat REQUIRED)
#   target_link_libraries(app PRIVATE tinyqat::tinyqat)
# or add_subdirectory(<tinyqat source> tinyqat) and links the same name.
include(CMakePackageConfigHelpers)

set(TINYQAT_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/tinyqat)

install(TARGETS ${TINYQAT_LAYER_TARGETS} tinyqat EXPORT tinyqatTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/tinyqat)
install(FILES ${PROJECT_SOURCE_DIR}/src/tinyqat.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/tinyqat)
if(TARGET tinyqat_cli)
  install(TARGETS tinyqat_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

install(EXPORT tinyqatTargets NAMESPACE tinyqat:: DESTINATION ${TINYQAT_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/tinyqatConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/tinyqatConfig.cmake
                              INSTALL_DESTINATION ${TINYQAT_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/tinyqatConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/tinyqatConfig.cmake ${PROJECT_BINARY_DIR}/tinyqatConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/cmake/tinyqatOpenBLAS.cmake
        DESTINATION ${TINYQAT_CMAKE_DIR})

# The Debian package: `cpack -G DEB` in the build directory. Its dependencies
# are the -dev packages a program built against tinyqat needs.
if(PROJECT_IS_TOP_LEVEL)
  set(CPACK_PACKAGE_NAME tinyqat)
  set(CPACK_PACKAGE_VENDOR "tinyqat")
  set(CPACK_PACKAGE_CONTACT "tinyqat maintainers <tinyqat@localhost>")
  set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
  set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
  set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
  set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
  set(CPACK_DEBIAN_PACKAGE_SECTION devel)
  set(CPACK_DEBIAN_PACKAGE_DEPENDS
      "libopenblas-dev, libfmt-dev, nlohmann-json3-dev, zlib1g-dev, libstdc++6, libc6")
  include(CPack)
endif()
