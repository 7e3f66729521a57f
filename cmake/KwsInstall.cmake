include(CMakePackageConfigHelpers)

# The library and its CMake package form the `library` component; the executables install as `apps`; the
# librdkafka hook (kws::rdkafka, with a CMake export of its own) and the plugin libkws_rdkafka.so as `rdkafka`.
install(TARGETS kws_shim EXPORT kwsTargets COMPONENT library
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(TARGET kws_rdkafka)
  install(DIRECTORY include/kws DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT library)
  install(TARGETS kws_rdkafka EXPORT kwsRdkafkaTargets COMPONENT rdkafka
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
          INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  install(EXPORT kwsRdkafkaTargets NAMESPACE kws:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kws COMPONENT rdkafka)
  # Where the dynamic loader finds it: plugin.library.paths=libkws_rdkafka works once the directory is known
  # to ld.so (a full path always does).
  install(TARGETS kws_rdkafka_plugin LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT rdkafka)
else()
  install(DIRECTORY include/kws DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT library
          PATTERN rdkafka.hpp EXCLUDE)
endif()
install(EXPORT kwsTargets NAMESPACE kws:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kws COMPONENT library)

configure_package_config_file(cmake/kwsConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/kwsConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kws)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/kwsConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/kwsConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/kwsConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kws COMPONENT library)
