# Installs the library and rdkafka components into a scratch prefix, then builds examples/librdkafka_websocket
# on its own against it (find_package(kws COMPONENTS rdkafka)) and checks that it runs, and that the plugin
# was installed next to the library.
set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})
foreach(component library rdkafka)
  execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix} --component ${component}
                  RESULT_VARIABLE rc OUTPUT_QUIET)
  if(rc)
    message(FATAL_ERROR "installing ${component} failed: ${rc}")
  endif()
endforeach()
file(GLOB plugin ${prefix}/lib*/libkws_rdkafka.so)
if(NOT plugin)
  message(FATAL_ERROR "the plugin libkws_rdkafka.so was not installed under ${prefix}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/build -G Ninja
                        -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release
                        -DCMAKE_CXX_COMPILER_LAUNCHER=${LAUNCHER}
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configuring the example against the installed package failed: ${rc}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/build RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building the example failed: ${rc}")
endif()
execute_process(COMMAND ${WORK_DIR}/build/kws-example-librdkafka-websocket --help RESULT_VARIABLE rc
                OUTPUT_VARIABLE out)
if(rc OR NOT out MATCHES "usage: kws-example-librdkafka-websocket")
  message(FATAL_ERROR "the example failed: ${rc} ${out}")
endif()
