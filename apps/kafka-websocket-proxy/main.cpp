// kafka-websocket-proxy: lets any Kafka client reach a broker that speaks Kafka over WebSocket. Clients
// connect over plain TCP; each connection is relayed to the broker over its own WebSocket.
#include "cli.hpp"
#include "monitoring.hpp"
#include "proxy_server.hpp"
#include "upgrade_headers.hpp"

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <boost/asio/ip/address.hpp>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <set>
#include <thread>

#ifndef KWS_VERSION
#define KWS_VERSION "unknown"
#endif

namespace {

// The original Go proxy takes single-dash long flags (-port 8080 -broker host:port -tls, also -port=8080).
// Rewrite those to GNU spelling before parsing; short flags (-h) and values are left alone.
std::vector<std::string> normalize_go_flags(int argc, char** argv, const std::set<std::string>& long_names) {
  std::vector<std::string> out;
  bool only_values = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (!only_values && a == "--") only_values = true;
    if (!only_values && a.size() > 2 && a[0] == '-' && a[1] != '-') {
      const auto name = a.substr(1, a.find('=') == std::string::npos ? std::string::npos : a.find('=') - 1);
      if (long_names.count(name)) a = "-" + a;
    }
    out.push_back(std::move(a));
  }
  return out;
}

// The one place the proxy reads its environment: the forward proxy variables, as Go's ProxyFromEnvironment
// did for the original.
std::optional<std::string> from_environment(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  return v ? std::optional<std::string>(v) : std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  kws::proxy::proxy_config cfg;
  cfg.dialer.idle_timeout = std::chrono::seconds(60);

  CLI::App app{
      "kafka-websocket-proxy: accepts Kafka clients over TCP and relays each connection to a Kafka broker "
      "over WebSocket (one Kafka frame per binary message).\n"
      "Single-dash flags as in the original Go proxy work too: -port 8080 -broker localhost:8787 -tls",
      "kafka-websocket-proxy"};
  app.set_version_flag("--version", std::string("kafka-websocket-proxy ") + KWS_VERSION);
  app.get_formatter()->column_width(34);

  // As with Go's flag package, a flag given twice takes its last value.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);

  std::int64_t dial_backoff_ms = cfg.dial_backoff.count();
  std::int64_t handshake_ms = cfg.dialer.handshake_timeout.count();
  std::int64_t idle_ms = 0;
  std::vector<std::string> headers;
  kws::app::server_flags common;
  std::string listen = cfg.listen_host;

  app.add_option("--port", cfg.port, "TCP port to listen on for Kafka clients")->capture_default_str();
  app.add_option("--listen", listen, "address to listen on (default: all interfaces, IPv6 and IPv4)")
      ->check([](const std::string& v) -> std::string {
        boost::system::error_code ec;
        boost::asio::ip::make_address(v, ec);
        return ec ? "expected an IP address, got '" + v + "'" : std::string();
      });
  app.add_option(
         "--broker", cfg.broker,
         "broker as host:port (ws://, or wss:// with --tls) or a full ws:// or wss:// URL with a path")
      ->capture_default_str();
  app.add_flag("--tls", cfg.dialer.tls, "use wss:// for a host:port broker");
  app.add_option("--header", headers,
                 "extra header on the upgrade request, 'Name: value' (repeatable; values never logged; a "
                 "secret is better in --header-file, out of the process list)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->each([](const std::string& h) {
        if (auto problem = kws::proxy::header_problem(h); !problem.empty())
          throw CLI::ValidationError("--header", problem);
      });
  app.add_option("--header-file", cfg.header_files,
                 "FILE of headers for the upgrade request, one 'Name: value' per line (# comments); "
                 "repeatable; values never logged; read again on SIGHUP and when it changes")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->each([](const std::string& path) {
        try {
          kws::proxy::read_header_file(path);
        } catch (const std::runtime_error& e) {
          throw CLI::ValidationError("--header-file", e.what());
        }
      });
  app.add_option("--ca-file", cfg.dialer.ca_file,
                 "PEM file of CA certificates to trust (default: system store)")
      ->check(CLI::ExistingFile);
  app.add_option("--cert", cfg.dialer.cert_file,
                 "PEM certificate chain to present to a wss:// broker that requires client certificates "
                 "(with --key)")
      ->check(CLI::ExistingFile);
  app.add_option("--key", cfg.dialer.key_file, "PEM private key of --cert")->check(CLI::ExistingFile);
  app.add_flag("--insecure", cfg.dialer.insecure_skip_verify, "do not verify the broker's TLS certificate");
  app.add_option(
         "--client-tls-cert", cfg.client_tls_cert,
         "PEM certificate chain: serve TLS to Kafka clients (security.protocol=SSL) on every listener "
         "(with --client-tls-key)")
      ->check(CLI::ExistingFile);
  app.add_option("--client-tls-key", cfg.client_tls_key, "PEM private key of --client-tls-cert")
      ->check(CLI::ExistingFile);
  app.add_option(
         "--client-ca-file", cfg.client_ca_file,
         "PEM bundle of CAs: require a client certificate one of them vouches for (with --client-tls-cert)")
      ->check(CLI::ExistingFile);
  app.add_option("--dial-retries", cfg.dial_retries, "retries after a failed dial")
      ->check(CLI::Range(0, 100))
      ->capture_default_str();
  kws::app::add_duration(app, "--dial-backoff", dial_backoff_ms,
                         "wait before the first retry, doubled for each next one", "200ms");
  kws::app::add_duration(app, "--handshake-timeout", handshake_ms,
                         "bound on connect + TLS + WebSocket upgrade, and on closing", "10s");
  std::int64_t half_close_ms = 2000;
  kws::app::add_duration(
      app, "--half-close-timeout", half_close_ms,
      "after a client stops sending, how long answers to its requests may take (a client that "
      "closed entirely looks the same)",
      "2s");
  kws::app::add_duration(app, "--idle-timeout", idle_ms,
                         "close a connection after this long with no traffic (0: never)", "0");
  std::string broker_ports, broker_api = "auto";
  bool no_rewrite = false;
  app.add_flag("--no-rewrite", no_rewrite,
               "relay every frame byte for byte: no broker address rewriting, no ApiVersions clamping");
  app.add_option("--advertise", cfg.advertise_host,
                 "host that rewritten responses advertise for this proxy's listeners (default: the listen "
                 "address when it is specific, else localhost)");
  app.add_option(
         "--broker-ports", broker_ports,
         "FIRST-LAST: ports for the listeners of further brokers (default: the 100 ports after --port; "
         "any free port when --port is 0)")
      ->check([](const std::string& v) -> std::string {
        unsigned a = 0, b = 0;
        char dash = 0, extra = 0;
        if (std::sscanf(v.c_str(), "%u%c%u%c", &a, &dash, &b, &extra) != 3 || dash != '-' || a == 0 ||
            a > b || b > 65535)
          return "expected FIRST-LAST with 1 <= FIRST <= LAST <= 65535, got '" + v + "'";
        return {};
      });
  app.add_flag("--ports-by-node-id", cfg.ports_by_node_id,
               "the listener of the broker with node id N is on FIRST+N of --broker-ports, so that a "
               "restarted proxy, or several behind one address, give each broker the same port; a node id "
               "outside the range fails the responses that name it");
  app.add_flag("--bind-broker-ports-at-start", cfg.bind_broker_ports_at_start,
               "with --ports-by-node-id: bind every port of --broker-ports at start, so that clients holding "
               "cached metadata reach their broker before any response names it (needs a "
               "--broker-url-template with {node_id} and neither {host} nor {port})");
  app.add_option(
         "--broker-url-template", cfg.broker_url_template,
         "WebSocket URL of a further broker from its advertised {host}, {port} and {node_id} (default: "
         "ws://{host}:{port}/, or wss:// with --tls)")
      ->check([](const std::string& v) -> std::string {
        boost::system::error_code ec;
        kws::url_template::parse(v, ec);
        return ec ? "expected a ws:// or wss:// URL with {host}, {port} or {node_id}, got '" + v + "'"
                  : std::string();
      });
  const auto* broker_api_opt =
      app.add_option(
             "--broker-api", broker_api,
             "auto: the broker answers ApiVersions, or is taken for Kafka 0.8 when it leaves one "
             "unanswered for --api-versions-timeout; 0.8: the proxy answers it for a Kafka 0.8 broker")
          ->check(CLI::IsMember({"auto", "0.8"}))
          ->capture_default_str();
  std::int64_t api_versions_ms = 1000;
  const auto* api_versions_opt = kws::app::add_duration(
      app, "--api-versions-timeout", api_versions_ms,
      "with --broker-api auto: a broker that leaves a client's ApiVersions unanswered this long (while its "
      "WebSocket stays open) is taken for Kafka 0.8 until the proxy exits (0: never)",
      "1s", std::chrono::milliseconds::zero(), std::chrono::seconds(60));
  std::size_t broker_max_in_flight = 0;
  const auto* broker_max_in_flight_opt =
      app.add_option("--broker-max-in-flight", broker_max_in_flight,
                     "requests in flight to the broker per client connection; later ones wait in the proxy, "
                     "in order, until a response goes out (the client sees latency, no error). Produce with "
                     "acks=0 gets no response and takes no place. 0: no limit (the proxy's own bound of "
                     "1024 remains). Default: 1 with --broker-api 0.8, else no limit")
          ->check(CLI::Range(0, 1024));
  std::string http_proxy;
  app.add_option("--http-proxy", http_proxy,
                 "HTTP forward proxy for every broker, http://[user:password@]host[:port]; 'none': connect "
                 "directly (default: HTTPS_PROXY, HTTP_PROXY and NO_PROXY from the environment)")
      ->check([](const std::string& v) -> std::string {
        boost::system::error_code ec;
        if (v != "none") kws::parse_proxy_url(v, ec);
        // The value may hold a password: never echo it whole.
        return ec ? "expected 'none' or http://[user:password@]host[:port], got '" +
                        kws::redact_proxy_url(v) + "'"
                  : std::string();
      });
  app.add_flag("--proxy-protocol", cfg.proxy_protocol,
               "every client connection starts with a PROXY protocol header (v2 as HAProxy's send-proxy-v2, "
               "or v1) from a load balancer; its client address is the one logged; a connection without one "
               "is refused");
  std::vector<std::string> connect_to;
  app.add_option(
         "--connect-to", connect_to,
         "HOST:PORT:TO_HOST:TO_PORT: dial a broker URL's HOST:PORT at TO_HOST:TO_PORT instead, keeping "
         "HOST for TLS and the Host header (as curl's --connect-to; HOST *.example.com is every name "
         "under it, an empty PORT any port, an empty TO_PORT the same; repeatable, the first match wins; not "
         "through a forward proxy)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->check([](const std::string& v) -> std::string {
        return kws::parse_connect_to(v) ? std::string()
                                        : "expected HOST:PORT:TO_HOST:TO_PORT, got '" + v + "'";
      });
  kws::app::add_server_flags(app, common);
  kws::app::add_metrics_listen(app, cfg.metrics_listen);

  std::set<std::string> long_names;
  for (const auto* opt : app.get_options()) {
    for (const auto& n : opt->get_lnames()) long_names.insert(n);
  }
  const auto validate = [&] {
    if (cfg.client_tls_cert.empty() != cfg.client_tls_key.empty())
      throw CLI::ValidationError("--client-tls-cert/--client-tls-key", "give both or neither");
    if (!cfg.client_ca_file.empty() && cfg.client_tls_cert.empty())
      throw CLI::ValidationError("--client-ca-file", "needs --client-tls-cert/--client-tls-key");
    if (cfg.dialer.cert_file.empty() != cfg.dialer.key_file.empty())
      throw CLI::ValidationError("--cert/--key", "give both or neither");
    if (api_versions_opt->count() > 0 && broker_api_opt->count() > 0 && broker_api != "auto")
      throw CLI::ValidationError("--api-versions-timeout",
                                 "only with --broker-api auto (the broker answers "
                                 "nothing to wait for under --broker-api 0.8)");
    if (cfg.ports_by_node_id && broker_ports.empty())
      throw CLI::ValidationError("--ports-by-node-id", "needs --broker-ports FIRST-LAST");
    if (cfg.bind_broker_ports_at_start && !cfg.ports_by_node_id)
      throw CLI::ValidationError("--bind-broker-ports-at-start", "needs --ports-by-node-id");
  };
  if (auto exit_code =
          kws::app::parse_command_line(app, normalize_go_flags(argc, argv, long_names), validate)) {
    return *exit_code;
  }

  if (http_proxy.empty()) {
    cfg.dialer.forward_proxy = kws::forward_proxy_from_environment(from_environment);
    cfg.forward_proxy_origin = "from the environment";
    boost::system::error_code ec;
    std::string what;
    kws::forward_proxy_rules::compile(cfg.dialer.forward_proxy, ec, &what);
    if (ec) {
      std::cerr << "kafka-websocket-proxy: " << what
                << " (from HTTP_PROXY / HTTPS_PROXY or their lower-case forms) is not a usable URL: expected "
                   "http://[user:password@]host[:port]. Fix the variable, or run with --http-proxy none.\n";
      return 2;
    }
  } else if (http_proxy == "none") {
    cfg.forward_proxy_origin = "--http-proxy none";
  } else {
    cfg.dialer.forward_proxy = kws::forward_proxy_settings::through(http_proxy);
    cfg.forward_proxy_origin = "--http-proxy";
  }
  for (const auto& c : connect_to) cfg.dialer.connect_to.push_back(*kws::parse_connect_to(c));
  cfg.listen_host = listen;
  cfg.threads = common.threads;
  cfg.max_connections = common.max_connections;
  cfg.relay.buffer_budget = std::make_shared<kws::buffer_budget>(common.max_buffer_bytes);
  cfg.relay.response_budget = std::make_shared<kws::buffer_budget>(common.max_buffer_bytes);
  cfg.client_socket = {std::chrono::milliseconds(common.keepalive_ms),
                       std::chrono::milliseconds(common.user_timeout_ms)};
  cfg.rewrite = !no_rewrite;
  cfg.broker_api =
      broker_api == "0.8" ? kws::kafka::broker_api::kafka_0_8 : kws::kafka::broker_api::negotiate;
  if (broker_max_in_flight_opt->count() > 0) cfg.broker_max_in_flight = broker_max_in_flight;
  cfg.api_versions_timeout = std::chrono::milliseconds(api_versions_ms);
  if (!broker_ports.empty()) {
    unsigned a = 0, b = 0;
    std::sscanf(broker_ports.c_str(), "%u-%u", &a, &b);
    cfg.first_broker_port = static_cast<std::uint16_t>(a);
    cfg.last_broker_port = static_cast<std::uint16_t>(b);
  }
  cfg.dial_backoff = std::chrono::milliseconds(dial_backoff_ms);
  cfg.dialer.handshake_timeout = std::chrono::milliseconds(handshake_ms);
  cfg.dialer.idle_timeout = std::chrono::milliseconds(2 * common.ping_ms);
  cfg.dialer.keepalive_pings = common.ping_ms > 0;
  cfg.dialer.max_frame_bytes = static_cast<std::size_t>(common.max_frame_bytes);
  cfg.relay.max_frame_bytes = static_cast<std::size_t>(common.max_frame_bytes);
  cfg.relay.idle_timeout = std::chrono::milliseconds(idle_ms);
  cfg.drain_timeout = std::chrono::milliseconds(common.drain_ms);
  cfg.relay.half_close_timeout = std::chrono::milliseconds(half_close_ms);
  for (const auto& h : headers) cfg.fixed_headers.push_back(kws::proxy::split_header(h));

  kws::app::setup_logging("kws", common.log_level, common.log_format);

  try {
    cfg.dialer.headers = kws::proxy::collect_headers(cfg.fixed_headers, cfg.header_files);
    return kws::proxy::run(cfg);
  } catch (const std::exception& e) {
    return kws::app::cannot_start(e);
  }
}
