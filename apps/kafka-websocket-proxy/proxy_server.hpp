// The proxy's server: TCP listeners (the main one for the configured broker, one more per further broker
// that responses advertise), one worker thread per core each with its own io_context and dialer, one relay
// per accepted connection, and an orderly drain on shutdown.
#pragma once

#include "runtime.hpp"

#include <kws/dialer.hpp>
#include <kws/kafka/tracker.hpp>
#include <kws/relay.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kws::proxy {

struct proxy_config {
  /// Empty: every interface (IPv6 and IPv4 where the machine has IPv6).
  std::string listen_host;
  std::uint16_t port = 8080;
  /// host:port (scheme from dialer.tls) or a ws:// / wss:// URL.
  std::string broker = "localhost:8787";
  kws::dialer_config dialer;
  /// The upgrade request's headers from --header, and the --header-file files read after them: together
  /// they make dialer.headers, and the files are read again on SIGHUP and when they change.
  std::vector<std::pair<std::string, std::string>> fixed_headers;
  std::vector<std::string> header_files;
  /// Where dialer.forward_proxy came from, for the start-up log line ("the environment", "--http-proxy").
  std::string forward_proxy_origin = "not set";
  kws::relay_options relay;
  int dial_retries = 5;
  std::chrono::milliseconds dial_backoff{200};
  /// Bound on the whole shutdown after SIGINT/SIGTERM (app::response_wait divides it).
  std::chrono::milliseconds drain_timeout{std::chrono::seconds(8)};
  unsigned threads = 1;
  /// Connections at once; more are closed as they are accepted.
  std::size_t max_connections = 10000;
  /// Keep-alive and TCP_USER_TIMEOUT on accepted client sockets.
  /// Every client connection starts with a PROXY protocol header (v2 or v1) from a load balancer, whose
  /// client address then stands for the socket's peer; without one it is refused.
  bool proxy_protocol = false;
  app::client_socket_options client_socket;

  /// Rewrite broker addresses in responses (off: the original byte-for-byte relay).
  bool rewrite = true;
  kws::kafka::broker_api broker_api = kws::kafka::broker_api::negotiate;
  /// Requests in flight to the broker per client connection before the next waits in the proxy; 0: no
  /// limit; unset: 1 with broker_api 0.8, no limit otherwise (kafka::tracker_config::broker_max_in_flight).
  std::optional<std::size_t> broker_max_in_flight;
  /// With broker_api negotiate: a broker that leaves a client's ApiVersions unanswered this long is taken
  /// for Kafka 0.8, for the rest of the process (kafka::tracker_config::api_versions_timeout); 0: never.
  std::chrono::milliseconds api_versions_timeout{std::chrono::seconds(1)};
  /// Host that rewritten responses advertise; empty: the listen host when it is specific, else localhost.
  std::string advertise_host;
  /// Ports for the listeners of further brokers; {0, 0}: the ports right after `port` (any free port when
  /// `port` is 0).
  std::uint16_t first_broker_port = 0;
  std::uint16_t last_broker_port = 0;
  /// The listener of node id N on first_broker_port + N (broker_directory's ports_by_node_id).
  bool ports_by_node_id = false;
  /// With ports_by_node_id: every port of the range bound at start (broker_directory::open_all).
  bool bind_broker_ports_at_start = false;
  /// URL of a further broker from its advertised host, port and node id; empty: ws:// (wss:// with TLS).
  std::string broker_url_template;
  /// TLS for Kafka clients (security.protocol=SSL) on every listener, when both are set; with
  /// client_ca_file, clients must present a certificate that one of its CAs vouches for.
  std::string client_tls_cert;
  std::string client_tls_key;
  std::string client_ca_file;
  /// HOST:PORT of the metrics and health endpoint; empty: none.
  std::string metrics_listen;
};

/// Runs until SIGINT or SIGTERM, then drains and returns the process exit code. Throws on start-up errors
/// (bad broker address or template, port in use, unreadable CA file).
int run(const proxy_config& config);

}  // namespace kws::proxy
