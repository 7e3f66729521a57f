// libkws_rdkafka.so, the librdkafka plugin: `plugin.library.paths=libkws_rdkafka.so` puts the WebSocket hook
// on a configuration, and the kws.* properties (set after it) configure it. librdkafka calls conf_init when
// the plugin is loaded for a configuration; copies of that configuration get the hook from on_conf_dup.
#include "../hook.hpp"

#include <cstdio>
#include <exception>
#include <string>

extern "C" __attribute__((visibility("default"))) rd_kafka_resp_err_t conf_init(rd_kafka_conf_t* conf,
                                                                                void** plug_opaquep,
                                                                                char* errstr,
                                                                                size_t errstr_size) {
  *plug_opaquep = nullptr;
  try {
    std::string error;
    if (auto* state = kws::rdkafka::detail::attach(conf, error)) {
      // Like kafka-websocket-proxy, the plugin takes its forward proxy from the environment unless
      // kws.http.proxy says otherwise.
      kws::rdkafka::detail::settings(*state).dialer.forward_proxy = kws::rdkafka::environment_forward_proxy();
      return RD_KAFKA_RESP_ERR_NO_ERROR;
    }
    std::snprintf(errstr, errstr_size, "%s", error.c_str());
  } catch (const std::exception& e) {
    std::snprintf(errstr, errstr_size, "kws: %s", e.what());
  }
  return RD_KAFKA_RESP_ERR__INVALID_ARG;
}
