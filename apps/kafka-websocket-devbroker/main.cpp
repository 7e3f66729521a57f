// kafka-websocket-devbroker: a small in-memory Kafka broker for local development and tests. It speaks Kafka
// over WebSocket (one frame per binary message) and, optionally, over plain TCP. A test target, not a
// product.
#include "broker.hpp"
#include "cli.hpp"
#include "runtime.hpp"
#include "sasl.hpp"
#include "server.hpp"

#include <kws/frame.hpp>

#include <boost/asio/post.hpp>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace {

// --listen and --advertise: HOST:PORT or [V6]:PORT, port 0..65535 (0: the system picks one).
kws::devbroker::endpoint to_endpoint(const std::string& s) {
  const auto hp = kws::app::parse_host_port(s);
  return {hp->host, hp->port};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "kafka-websocket-devbroker: an in-memory Kafka broker for local development and tests.\n"
      "THIS IS A TEST TARGET, NOT A PRODUCT: no persistence, no replication, no authorization, no consumer "
      "groups.\n"
      "By default it speaks what clients take for Kafka 0.10.0: Produce v0-v2, Fetch v0-v2, Metadata v0-v1,\n"
      "plus ListOffsets v0-v1 and ApiVersions v0-v5 (message format v0/v1, no compression), so clients with\n"
      "default settings work; --kafka-0.8-only narrows it to the v0 APIs without ApiVersions. Kafka travels\n"
      "over WebSocket (one frame per binary message) and optionally over TCP (--tcp-listen). The TCP\n"
      "listeners can serve TLS (--tcp-tls-cert/--tcp-tls-key, client certificates with --tcp-tls-client-ca)\n"
      "and require SASL (--sasl-users: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512; SaslHandshake v0-v1,\n"
      "SaslAuthenticate v0-v2 and the raw tokens after SaslHandshake v0), so that clients'\n"
      "security.protocol ssl, sasl_plaintext and sasl_ssl can be tested.\n"
      "--log-level debug logs each request's API and version.\n"
      "At startup it prints one line to stdout: 'listening ws=HOST:PORT[,...] [tcp=HOST:PORT[,...]]'.",
      "kafka-websocket-devbroker"};

  std::string listen = "127.0.0.1:8787";
  std::string tcp_listen, advertise, tcp_advertise;
  std::vector<std::string> topics;
  std::int32_t default_partitions = 1;
  bool no_auto_create = false;
  std::int32_t nodes = 1;
  std::size_t retention_bytes = 64u * 1024u * 1024u;
  std::size_t max_frame_bytes = kws::default_max_frame_bytes;
  bool kafka_08_only = false;
  bool edge_quirks = false;
  std::int64_t close_idle_ms = 0;
  std::string log_level = "info", log_format = "text";
  std::string tcp_tls_cert, tcp_tls_key, tcp_tls_client_ca, sasl_users_file;

  app.add_option("--listen", listen, "WebSocket listener HOST:PORT (port 0: any free port)")
      ->capture_default_str()
      ->check(kws::app::host_port_check());
  app.add_option("--tcp-listen", tcp_listen,
                 "also listen for Kafka over TCP on HOST:PORT (plain; TLS and SASL with the flags below)")
      ->check(kws::app::host_port_check());
  app.add_option("--advertise", advertise,
                 "broker address in Metadata on the WebSocket listeners (default: the bound address); "
                 "node i is advertised at PORT+i")
      ->check(kws::app::host_port_check());
  app.add_option(
         "--tcp-advertise", tcp_advertise,
         "broker address in Metadata on the TCP listeners (default: the bound address); node i at PORT+i")
      ->check(kws::app::host_port_check());
  auto* cert_opt =
      app.add_option(
             "--tcp-tls-cert", tcp_tls_cert,
             "serve TLS (1.2 or later) on the TCP listeners with this PEM certificate chain; clients use "
             "security.protocol=ssl (sasl_ssl with --sasl-users); Metadata advertises the same addresses")
          ->check(CLI::ExistingFile);
  auto* key_opt = app.add_option("--tcp-tls-key", tcp_tls_key, "PEM private key of --tcp-tls-cert")
                      ->check(CLI::ExistingFile);
  app.add_option("--tcp-tls-client-ca", tcp_tls_client_ca,
                 "require a client certificate on the TCP listeners, vouched for by a CA of this PEM file "
                 "(mutual TLS; with --tcp-tls-cert)")
      ->check(CLI::ExistingFile)
      ->needs(cert_opt);
  cert_opt->needs(key_opt)->needs("--tcp-listen");
  key_opt->needs(cert_opt);
  auto* sasl_opt =
      app.add_option("--sasl-users", sasl_users_file,
                     "require SASL on the TCP listeners (SASL_PLAINTEXT, or SASL_SSL with --tcp-tls-cert): "
                     "PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 against this file of user:password lines "
                     "('#' comments; the first ':' ends the user name); a wrong password is answered "
                     "SASL_AUTHENTICATION_FAILED, a request before authentication closes the connection; the "
                     "WebSocket listeners stay open")
          ->check(CLI::ExistingFile)
          ->needs("--tcp-listen");
  app.add_option("--topic", topics,
                 "topic to create at start, NAME[:PARTITIONS] (repeatable; default test-topic:1)");
  app.add_option("--default-partitions", default_partitions, "partitions of auto-created topics")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  app.add_flag("--no-auto-create", no_auto_create, "answer UNKNOWN_TOPIC_OR_PARTITION for unknown topics");
  app.add_option("--nodes", nodes,
                 "brokers presented by this process, each on its own port(s); partition p is "
                 "led by node p mod N")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--retention-bytes", retention_bytes,
                 "per partition; the oldest messages are dropped beyond it")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 40));
  app.add_option("--max-frame-bytes", max_frame_bytes, "largest accepted Kafka request body")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{64}, std::size_t{0x7fffffff} - 4));
  auto* kafka_08_flag = app.add_flag(
      "--kafka-0.8-only", kafka_08_only,
      "behave like the Kafka 0.8 edge broker: ignore ApiVersions (no reply), only the four v0 APIs");
  sasl_opt->excludes(kafka_08_flag);
  app.add_flag(
         "--edge-quirks", edge_quirks,
         "with --kafka-0.8-only, the edge broker's faults too: no reply to a request outside those APIs "
         "and versions, nor to a Fetch naming a topic twice; a Produce reads the log end when it "
         "arrives and stores its messages there 20ms later, so Produce requests pipelined on one "
         "connection get the same base offset and overwrite each other")
      ->needs(kafka_08_flag);
  kws::app::add_duration(app, "--close-idle-after", close_idle_ms,
                         "close a WebSocket connection (code 1000) after this long without a request, e.g. "
                         "500ms or 2s, as edge platforms recycle idle connections (TCP connections never)",
                         "never", std::chrono::milliseconds(1), std::chrono::hours(24));
  kws::app::add_log_level(app, log_level);
  kws::app::add_log_format(app, log_format);
  if (auto exit_code = kws::app::parse_command_line(app, {argv + 1, argv + argc})) return *exit_code;

  kws::app::setup_logging("devbroker", log_level, log_format);

  kws::devbroker::broker_config bc;
  bc.default_partitions = default_partitions;
  bc.auto_create = !no_auto_create;
  bc.nodes = nodes;
  bc.retention_bytes = retention_bytes;
  bc.kafka_08_only = kafka_08_only;
  bc.edge_quirks = edge_quirks;
  if (!topics.empty()) {
    bc.topics.clear();
    for (const auto& t : topics) {
      const auto colon = t.rfind(':');
      std::int32_t partitions = 1;
      std::string name = t;
      if (colon != std::string::npos) {
        name = t.substr(0, colon);
        const std::string count = t.substr(colon + 1);
        auto [end, err] = std::from_chars(count.data(), count.data() + count.size(), partitions);
        if (err != std::errc{} || end != count.data() + count.size() || partitions < 1 ||
            partitions > 10000) {
          fmt::print(stderr, "--topic {}: partitions must be 1..10000\n", t);
          return 2;
        }
      }
      bc.topics.emplace_back(name, partitions);
    }
  }

  kws::devbroker::server_config sc;
  if (!sasl_users_file.empty()) {
    try {
      sc.sasl_users = std::make_shared<const kws::devbroker::sasl::users>(
          kws::devbroker::sasl::users::load(sasl_users_file));
    } catch (const std::exception& e) {
      return kws::app::cannot_start(e);
    }
    bc.sasl_on_tcp = true;
  }
  sc.ws_listen = to_endpoint(listen);
  if (!tcp_listen.empty()) sc.tcp_listen = to_endpoint(tcp_listen);
  if (!advertise.empty()) sc.ws_advertise = to_endpoint(advertise);
  if (!tcp_advertise.empty()) sc.tcp_advertise = to_endpoint(tcp_advertise);
  sc.tcp_tls_cert = tcp_tls_cert;
  sc.tcp_tls_key = tcp_tls_key;
  sc.tcp_tls_client_ca = tcp_tls_client_ca;
  sc.max_frame_bytes = max_frame_bytes;
  sc.ws_close_idle_after = std::chrono::milliseconds(close_idle_ms);

  // One worker: the broker's state and every connection live on that thread alone (sessions on strands of
  // its context); the main thread handles the signals. A signal closes the listeners and stops the worker at
  // once: test clients get no drain.
  kws::app::runtime rt(1, std::chrono::milliseconds(0));
  rt.stop_at_once();
  auto& worker = rt.next_worker();
  std::shared_ptr<kws::devbroker::broker> b;
  std::unique_ptr<kws::devbroker::server> srv;
  try {
    b = std::make_shared<kws::devbroker::broker>(bc);
    srv = std::make_unique<kws::devbroker::server>(worker.context(), b, sc);
    srv->start();
  } catch (const std::exception& e) {
    return kws::app::cannot_start(e);
  }

  // The one line tests and scripts parse; flushed at once because stdout is usually a pipe then.
  const std::string line = srv->listening_line();
  std::fputs((line + "\n").c_str(), stdout);
  std::fflush(stdout);
  spdlog::info(
      "{} nodes={} auto_create={} kafka_0.8_only={} edge_quirks={} retention_bytes={} max_frame_bytes={} "
      "close_idle_after={} tcp_tls={} sasl_users={}",
      line, nodes, !no_auto_create, kafka_08_only, edge_quirks, retention_bytes, max_frame_bytes,
      sc.ws_close_idle_after.count() > 0 ? kws::app::format_duration(sc.ws_close_idle_after) : "never",
      tcp_tls_cert.empty()        ? "off"
      : tcp_tls_client_ca.empty() ? "on"
                                  : "on, client certificates required",
      sc.sasl_users ? sc.sasl_users->size() : 0);

  // The listeners are the worker's: closed on its thread, before its loop stops.
  rt.on_shutdown([&] { boost::asio::post(worker.context(), [&] { srv->stop(); }); });
  const int code = rt.run();
  srv.reset();
  return code;
}
