// kws::rdkafka: Kafka over WebSocket for librdkafka clients, in-process and without a proxy. After enable(),
// every broker connection of a client made from that configuration goes over its own WebSocket: librdkafka
// keeps speaking plain Kafka to a loopback socket of the hook, and the hook relays each connection to the
// broker's WebSocket URL (the library's kws::relay with a kws::kafka::tracker, as the proxy does).
//
// The same hook is the librdkafka plugin libkws_rdkafka.so (`plugin.library.paths`), configured with the
// `kws.*` properties below, so that kcat, confluent-kafka-python and other librdkafka bindings need no code.
//
// Needs librdkafka 2.0 or later (the on_broker_state_change interceptor). It takes over the configuration's
// resolve_cb and connect_cb: the application must not set its own.
#pragma once

#include <kws/dialer.hpp>
#include <kws/frame_hook.hpp>
#include <kws/kafka/tracker.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

struct rd_kafka_conf_s;
namespace RdKafka {
class Conf;
}

namespace kws::rdkafka {

/// Where the hook's notes go: their level, the client's name (rdkafka#producer-1) and the text.
using log_function = std::function<void(log_level, std::string_view client, std::string_view text)>;

/// Writes one line per note to stderr in librdkafka's own format: `%4|1700000000.123|KWS|rdkafka#producer-1|
/// text` (the number is the syslog level).
void log_to_stderr(log_level level, std::string_view client, std::string_view text);

/// The dialer settings the hook starts from: those of kws::dialer_config, with keepalive pings every 30 s
/// and a 60 s idle timeout, as kafka-websocket-proxy has by default.
dialer_config default_dialer_config();

/// How the hook reaches the brokers. Each field is also a `kws.*` configuration property (see set_property).
struct config {
  /// WebSocket URL of a broker from the `{host}`, `{port}` and `{node_id}` that Kafka advertises for it
  /// (kws.url.template). Empty: `ws://{host}:{port}/`, or `wss://{host}:{port}/` with dialer.tls.
  std::string url_template{};
  /// The same for the bootstrap servers, which have no node id yet (node id -1); empty: url_template
  /// (kws.bootstrap.url.template). Set it when url_template tells brokers apart by `{node_id}`.
  std::string bootstrap_url_template{};
  /// TLS (kws.tls, kws.ca.file, kws.insecure, a client certificate: kws.cert.file, kws.key.file), upgrade
  /// headers (kws.header.NAME), kws.handshake.timeout.ms, keepalive pings (kws.ping.interval.ms),
  /// kws.max.frame.bytes.
  dialer_config dialer = default_dialer_config();
  /// kws.broker.api: `auto` (the broker answers ApiVersions) or `0.8` (it never does; the hook answers).
  kafka::broker_api broker_api = kafka::broker_api::negotiate;
  /// With `auto`: a broker that leaves an ApiVersions request unanswered this long is taken for Kafka 0.8,
  /// for every client of the process from then on (kws.api.versions.timeout.ms; 0: never).
  std::chrono::milliseconds api_versions_timeout{1000};
  /// Requests in flight on one connection before the hook stops reading librdkafka (kws.max.in.flight).
  std::size_t max_in_flight = 1024;
  /// Requests in flight to the broker on one connection before librdkafka's next one waits in the hook, in
  /// order, until a response goes back (kws.broker.max.in.flight). 0: no limit beyond max_in_flight; unset:
  /// 1 with broker_api 0.8, no limit otherwise. Produce with acks=0 gets no response and takes no place.
  std::optional<std::size_t> broker_max_in_flight{};
  /// Empty: no notes at all (kws.log.level=off).
  log_function log = log_to_stderr;
  /// Notes below this level are not formatted (kws.log.level: trace, debug, info, warn, error).
  log_level min_log_level = log_level::warn;
};

/// Result of set_property, with librdkafka's meanings (RD_KAFKA_CONF_OK, _INVALID, _UNKNOWN).
enum class property_result { ok, invalid, unknown };

/// Applies one `kws.*` property to `cfg`, as the plugin does for `rd_kafka_conf_set`. A null `value` resets
/// the property to its default. `invalid` leaves librdkafka-style text naming the property in `error`;
/// `unknown` (any name that is not one of the properties below) leaves `error` alone.
///
///   kws.url.template, kws.bootstrap.url.template   URL templates, checked to expand to ws:// or wss:// URLs
///   kws.tls, kws.insecure                          true or false
///   kws.ca.file                                    PEM file of CAs, loaded now to check it
///   kws.cert.file, kws.key.file                    PEM client certificate chain and its private key for
///                                                  wss://, each loaded now, checked to match once both are
///                                                  set (validate: both or neither)
///   kws.header.NAME                                header NAME on the upgrade request (never logged)
///   kws.broker.api                                 auto or 0.8
///   kws.api.versions.timeout.ms                    0 (never take a broker for Kafka 0.8) .. 60000
///   kws.handshake.timeout.ms                       1 .. 300000
///   kws.ping.interval.ms                           0 (no pings, no idle timeout) .. 3600000
///   kws.max.frame.bytes                            1024 .. 1000000000
///   kws.max.in.flight                              1 .. 1000000
///   kws.broker.max.in.flight                       0 (no limit) .. 1000000
///   kws.log.level                                  trace, debug, info, warn, error or off
///   kws.http.proxy                                 none, env (HTTP_PROXY, HTTPS_PROXY and NO_PROXY of the
///                                                  process, read now, as kafka-websocket-proxy reads them)
///                                                  or a forward proxy URL for every broker; the plugin
///                                                  starts from env, a config made in code from none
property_result set_property(config& cfg, std::string_view name, const char* value, std::string& error);

/// HTTP_PROXY, HTTPS_PROXY and NO_PROXY of this process as Go's ProxyFromEnvironment reads them (what
/// kws.http.proxy=env sets).
forward_proxy_settings environment_forward_proxy();

/// Checks everything set_property checks (templates, CA file, client certificate and key, header names) for a
/// config made in code.
bool validate(const config& cfg, std::string& error);

/// Makes every client created from `conf` (also from copies of it made later, as librdkafka++ does) reach
/// its brokers over WebSocket. Replaces the kws settings already on `conf` (from the plugin's properties, or
/// an earlier enable). Returns false with librdkafka-style text in `error` when `cfg` is not valid.
bool enable(rd_kafka_conf_s* conf, const config& cfg, std::string& error);
/// As above; throws std::invalid_argument.
void enable(rd_kafka_conf_s* conf, const config& cfg);

/// The same for librdkafka++ (its global configuration).
bool enable(RdKafka::Conf* conf, const config& cfg, std::string& error);
void enable(RdKafka::Conf* conf, const config& cfg);

}  // namespace kws::rdkafka
