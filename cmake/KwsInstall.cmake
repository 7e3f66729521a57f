include(CMakePackageConfigHelpers)

# The library and its CMake package form the `library` component; the executables install as `apps`.
install(TARGETS kws_shim EXPORT kwsTargets COMPONENT library
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/kws DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT library)
install(EXPORT kwsTargets NAMESPACE kws:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kws COMPONENT library)

configure_package_config_file(cmake/kwsConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/kwsConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kws)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/kwsConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/kwsConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/kwsConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kws COMPONENT library)
