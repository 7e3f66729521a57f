// kafka-websocket-gateway: puts a TCP Kafka cluster behind WebSocket. Clients (kafka-websocket-proxy, the
// library, the librdkafka plugin) connect over ws:// or wss://; each connection is relayed to the broker that
// its URL path names, and every broker address in the responses becomes the gateway's public address.
#include "cli.hpp"
#include "gateway_server.hpp"
#include "monitoring.hpp"

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <iostream>
#include <thread>

#ifndef KWS_VERSION
#define KWS_VERSION "unknown"
#endif

int main(int argc, char** argv) {
  kws::gateway::gateway_config cfg;

  CLI::App app{
      "kafka-websocket-gateway: puts a TCP Kafka cluster behind WebSocket. Paths: / and /kafka reach a "
      "bootstrap "
      "server, /kafka/{node_id} the broker with that node id; GET /healthz answers 200 while the cluster is "
      "reachable.",
      "kafka-websocket-gateway"};
  app.set_version_flag("--version", std::string("kafka-websocket-gateway ") + KWS_VERSION);
  app.get_formatter()->column_width(34);
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);

  std::string listen = ":8787", advertise, token_file, upstream_sasl_file;
  kws::app::server_flags common;
  std::int64_t handshake_ms = 10000, connect_ms = 5000;
  bool no_rewrite = false;

  app.add_option("--listen", listen,
                 "HOST:PORT to listen on; an empty host is every interface (IPv6 and IPv4)")
      ->check(kws::app::host_port_check(true))
      ->capture_default_str();
  app.add_option("--upstream", cfg.upstreams, "the cluster's bootstrap servers, HOST:PORT[,HOST:PORT...]")
      ->required()
      ->delimiter(',')
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--tls-cert", cfg.tls_cert, "PEM certificate chain: serve wss:// (with --tls-key)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", cfg.tls_key, "PEM private key of --tls-cert")->check(CLI::ExistingFile);
  app.add_option("--client-ca-file", cfg.client_ca_file,
                 "PEM bundle of CAs: require from every client a certificate one of them vouches for, in the "
                 "TLS handshake (with --tls-cert; with --auth-token-file, both are required)")
      ->check(CLI::ExistingFile);
  app.add_flag("--upstream-tls", cfg.upstream_tls,
               "dial the cluster with TLS: every broker, its certificate checked against the host as dialled "
               "(the --upstream host, or the host a broker advertises), trusted by the system store");
  app.add_option(
         "--upstream-ca-file", cfg.upstream_tls_files.ca_file,
         "PEM bundle of CAs to trust for the cluster instead of the system store (with --upstream-tls)")
      ->check(CLI::ExistingFile);
  app.add_option(
         "--upstream-cert", cfg.upstream_tls_files.cert_file,
         "PEM certificate chain the gateway presents to the cluster: mutual TLS (with --upstream-key)")
      ->check(CLI::ExistingFile);
  app.add_option("--upstream-key", cfg.upstream_tls_files.key_file, "PEM private key of --upstream-cert")
      ->check(CLI::ExistingFile);
  app.add_flag("--upstream-insecure", cfg.upstream_insecure,
               "do not verify the cluster's certificates or host names (testing only; logs a warning)");
  app.add_option(
         "--upstream-sasl-file", upstream_sasl_file,
         "credentials for the gateway's own Metadata lookup of a node id it has not seen, on a cluster "
         "that requires SASL: key=value lines mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), "
         "username, password; clients still authenticate themselves")
      ->type_name("FILE");
  app.add_option("--advertise", advertise,
                 "HOST:PORT clients reach this gateway at; every broker in a response is advertised there; "
                 "{node_id} in HOST gives each broker a name of its own, which librdkafka clients need "
                 "(default: the listen address when specific, else localhost, and the listen port)")
      ->check(kws::app::host_port_check(true));
  app.add_option("--auth-token-file", token_file,
                 "require a bearer token on the upgrade, a token per line of FILE: 'Authorization: Bearer "
                 "<token>', or the subprotocol bearer.<token in base64url> offered with kafka (browsers)")
      ->check(CLI::ExistingFile);
  app.add_option("--allow-origin", cfg.allowed_origins,
                 "origins browsers may connect from, e.g. https://app.example.com (repeatable; default any)")
      ->delimiter(',')
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  kws::app::add_duration(app, "--handshake-timeout", handshake_ms,
                         "bound on TLS, the HTTP request and the WebSocket upgrade (and on closing)", "10s");
  app.add_option("--max-handshakes", cfg.max_handshakes,
                 "handshakes under way at once (TLS, HTTP request, upgrade), apart from --max-connections; "
                 "more are closed as they are accepted")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1000000}))
      ->capture_default_str();
  app.add_option("--max-handshakes-per-address", cfg.max_handshakes_per_address,
                 "handshakes under way at once from one client address; more are closed as they are accepted")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1000000}))
      ->capture_default_str();
  kws::app::add_duration(app, "--connect-timeout", connect_ms,
                         "bound on connecting to a broker of the cluster", "5s");
  app.add_flag("--proxy-protocol", cfg.proxy_protocol,
               "every connection starts with a PROXY protocol header (v2 as HAProxy's send-proxy-v2, or v1) "
               "from a load balancer; its client address is the one logged and limited; a connection "
               "without one is refused");
  app.add_flag("--no-rewrite", no_rewrite, "relay every frame byte for byte (no broker address rewriting)");
  kws::app::add_server_flags(app, common);
  app.get_option("--max-connections")
      ->description(
          "upgraded WebSocket connections at once (handshakes under way count under "
          "--max-handshakes); more get 503");
  kws::app::add_metrics_listen(app, cfg.metrics_listen);

  const auto validate = [&] {
    if (cfg.tls_cert.empty() != cfg.tls_key.empty())
      throw CLI::ValidationError("--tls-cert/--tls-key", "give both or neither");
    if (!cfg.client_ca_file.empty() && cfg.tls_cert.empty())
      throw CLI::ValidationError("--client-ca-file", "needs --tls-cert/--tls-key (wss)");
    const auto& up = cfg.upstream_tls_files;
    if (up.cert_file.empty() != up.key_file.empty())
      throw CLI::ValidationError("--upstream-cert/--upstream-key", "give both or neither");
    if (!cfg.upstream_tls && (!up.ca_file.empty() || !up.cert_file.empty() || cfg.upstream_insecure)) {
      throw CLI::ValidationError("--upstream-ca-file/--upstream-cert/--upstream-insecure",
                                 "need --upstream-tls");
    }
  };
  if (auto exit_code = kws::app::parse_command_line(app, {argv + 1, argv + argc}, validate))
    return *exit_code;

  const auto listen_at = kws::app::parse_host_port(listen, true);
  cfg.listen_host = listen_at->host;
  cfg.port = listen_at->port;
  cfg.threads = common.threads;
  cfg.max_connections = common.max_connections;
  cfg.relay.buffer_budget = std::make_shared<kws::buffer_budget>(common.max_buffer_bytes);
  cfg.relay.response_budget = std::make_shared<kws::buffer_budget>(common.max_buffer_bytes);
  cfg.client_socket = {std::chrono::milliseconds(common.keepalive_ms),
                       std::chrono::milliseconds(common.user_timeout_ms)};
  if (!advertise.empty()) {
    const auto at = kws::app::parse_host_port(advertise, true);
    cfg.advertise_host = at->host;
    cfg.advertise_port = at->port;
  }
  cfg.accept.handshake_timeout = std::chrono::milliseconds(handshake_ms);
  cfg.accept.idle_timeout = std::chrono::milliseconds(2 * common.ping_ms);
  cfg.accept.keepalive_pings = common.ping_ms > 0;
  cfg.accept.max_frame_bytes = static_cast<std::size_t>(common.max_frame_bytes);
  cfg.relay.max_frame_bytes = static_cast<std::size_t>(common.max_frame_bytes);
  cfg.connect_timeout = std::chrono::milliseconds(connect_ms);
  cfg.drain_timeout = std::chrono::milliseconds(common.drain_ms);
  cfg.rewrite = !no_rewrite;

  kws::app::setup_logging("kws-gateway", common.log_level, common.log_format);
  try {
    if (!token_file.empty()) cfg.tokens = kws::gateway::token_set::from_file(token_file);
    cfg.token_file = token_file;
    if (!upstream_sasl_file.empty()) {
      cfg.upstream_sasl = kws::gateway::load_upstream_credentials(upstream_sasl_file);
      cfg.upstream_sasl_file = upstream_sasl_file;
    }
    return kws::gateway::run(cfg);
  } catch (const std::exception& e) {
    return kws::app::cannot_start(e);
  }
}
