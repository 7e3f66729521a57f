# The Debian package (scripts/package.sh, or `cpack --preset package` after a build of the `package` preset):
# one package, kafka-websocket-shim, made of the install components `apps` (proxy and gateway), `library`
# (kws::shim, headers, CMake package), `rdkafka` (kws::rdkafka and the plugin libkws_rdkafka.so) and `service`
# (the proxy's systemd unit and its /etc/default file). The dev broker installs as `devbroker`, which is not
# packaged: it is a test target.
if(TARGET kafka-websocket-proxy)
  set(KWS_PROXY_PATH ${CMAKE_INSTALL_FULL_BINDIR}/kafka-websocket-proxy)
  configure_file(packaging/kafka-websocket-proxy.service.in ${PROJECT_BINARY_DIR}/kafka-websocket-proxy.service
                 @ONLY)
  # Not part of a plain `cmake --install` (it would write to /etc): only the package, or --component service.
  install(FILES ${PROJECT_BINARY_DIR}/kafka-websocket-proxy.service DESTINATION lib/systemd/system
          COMPONENT service EXCLUDE_FROM_ALL)
  install(FILES packaging/kafka-websocket-proxy.default DESTINATION ${CMAKE_INSTALL_FULL_SYSCONFDIR}/default
          RENAME kafka-websocket-proxy COMPONENT service EXCLUDE_FROM_ALL)
endif()

# A project that adds kws with add_subdirectory packages itself.
if(NOT PROJECT_IS_TOP_LEVEL)
  return()
endif()

set(CPACK_PACKAGE_NAME kafka-websocket-shim)
set(CPACK_PACKAGE_VENDOR "kafka-websocket-shim")
set(CPACK_PACKAGE_CONTACT "kafka-websocket-shim maintainers <maintainers@kafka-websocket-shim.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Kafka over WebSocket: proxy, gateway, C++ library and librdkafka plugin")
string(CONCAT CPACK_PACKAGE_DESCRIPTION
       "Lets Kafka clients reach brokers that speak Kafka over WebSocket (ws:// or wss://).\n"
       "kafka-websocket-proxy relays plain TCP Kafka clients to such a broker (with a systemd unit,\n"
       "kafka-websocket-proxy.service); kafka-websocket-gateway puts a TCP Kafka cluster behind WebSocket;\n"
       "libkws_rdkafka.so is a librdkafka plugin; kws::shim (static, with headers and a CMake package)\n"
       "is the C++20 library under them.")
set(CPACK_GENERATOR DEB)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_GROUPING ALL_COMPONENTS_IN_ONE)
set(CPACK_COMPONENTS_ALL apps library service)
if(TARGET kws_rdkafka)
  list(APPEND CPACK_COMPONENTS_ALL rdkafka)
endif()
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
# Depends: computed from the ELF files by dpkg-shlibdeps (libc6, libstdc++6, libssl3, libspdlog, librdkafka1…).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# What find_package(kws) needs besides the package itself.
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "libboost1.81-dev, libssl-dev, librdkafka-dev, pkg-config")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${PROJECT_SOURCE_DIR}/packaging/conffiles
    ${PROJECT_SOURCE_DIR}/packaging/postinst ${PROJECT_SOURCE_DIR}/packaging/prerm
    ${PROJECT_SOURCE_DIR}/packaging/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
