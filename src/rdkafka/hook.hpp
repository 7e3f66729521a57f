// The librdkafka side of the hook, shared by kws::rdkafka::enable and the plugin's conf_init.
#pragma once

#include <kws/rdkafka.hpp>

#include <librdkafka/rdkafka.h>

#include <string>

namespace kws::rdkafka::detail {

struct conf_state;

/// Puts the hook's interceptors and callbacks on `conf` unless they are there already, and returns the
/// settings they use (new: the defaults). Null, with librdkafka-style text in `error`, when librdkafka
/// refuses an interceptor.
conf_state* attach(rd_kafka_conf_t* conf, std::string& error);

/// The settings of an attached configuration.
config& settings(conf_state& state);

}  // namespace kws::rdkafka::detail
