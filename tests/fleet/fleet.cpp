#include "fleet.hpp"

#include "log_events.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <regex>
#include <set>
#include <stdexcept>

#ifndef KWS_GATEWAY_PATH
#error \
    "tests/fleet/CMakeLists.txt defines KWS_GATEWAY_PATH, KWS_MOCK_CLUSTER_PATH, KWS_HAPROXY and KWS_DEPLOY_DIR"
#endif

namespace kws::test::fleet {
namespace {

using namespace std::chrono_literals;

std::size_t occurrences(std::string_view text, std::string_view what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string_view::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

}  // namespace

shape wss_at_haproxy() {
  return {"wss at HAProxy", std::filesystem::path(KWS_DEPLOY_DIR) / "haproxy" / "gateways-wss.cfg", true, {}};
}

shape wss_passed_through() {
  return {"wss passed through",
          std::filesystem::path(KWS_DEPLOY_DIR) / "haproxy" / "gateways-passthrough.cfg",
          false,
          {"--proxy-protocol"}};
}

fleet::fleet(shape s, int partitions)
    : shape_(std::move(s)), tls_(make_test_certificates("DNS:localhost,DNS:*.fleet.invalid,IP:127.0.0.1")) {
  // librdkafka's mock cluster, its stdin a FIFO held open for as long as the fleet lives (it exits at EOF).
  const auto fifo = dir_ / "mock.in";
  if (::mkfifo(fifo.c_str(), 0600) != 0) throw std::runtime_error("mkfifo failed");
  mock_in_ = ::open(fifo.c_str(), O_RDWR | O_CLOEXEC);
  mock_ = std::make_unique<child_process>(
      std::vector<std::string>{KWS_MOCK_CLUSTER_PATH, "--brokers", "3", "--topic",
                               std::string(topic) + ":" + std::to_string(partitions)},
      spawn_options{.stdin_file = fifo});
  const auto bs = mock_->wait_for_output(std::regex("bootstrap=(\\S+)"));
  if (!bs) throw std::runtime_error("the mock cluster did not start:\n" + mock_->output());
  upstream_ = *bs;

  public_port_ = free_port();
  first_gateway_port_ = free_port_run(2 * replicas);
  for (int i = 0; i < replicas; ++i) start_replica(i);

  std::map<std::string, std::optional<std::string>> env{{"KWS_FRONTEND", public_host_port()}};
  if (shape_.tls_at_haproxy) {
    const auto pem = dir_ / "haproxy.pem";
    write_file(pem, read_file(tls_.cert_pem) + read_file(tls_.key_pem));
    env["KWS_CERT"] = pem.string();
  }
  for (int i = 0; i < replicas; ++i) {
    const auto name = "KWS_GW" + std::to_string(i + 1);
    env[name] = "127.0.0.1:" + std::to_string(first_gateway_port_ + i);
    env[name + "_HEALTH"] = std::to_string(first_gateway_port_ + replicas + i);
  }
  haproxy_ = std::make_unique<child_process>(
      std::vector<std::string>{KWS_HAPROXY, "-db", "-f", shape_.haproxy_config.string()},
      spawn_options{.environment = env});
  // Its listeners are bound before the first checks run; each replica's first passing check is logged.
  for (int i = 0; i < replicas; ++i) {
    const auto passed = "Health check for server gateways/gw" + std::to_string(i + 1) + " succeeded";
    if (!haproxy_->wait_for_output([&](std::string_view out) { return occurrences(out, passed) > 0; }))
      throw std::runtime_error("HAProxy did not start, or did not find replica " + std::to_string(i + 1) +
                               " healthy:\n" + haproxy_->output());
  }
}

fleet::~fleet() {
  if (haproxy_) haproxy_->signal(SIGTERM);
  for (auto& g : gateways_) {
    if (g) g->signal(SIGTERM);
  }
  if (mock_in_ >= 0) ::close(mock_in_);
}

std::string fleet::public_host_port() const {
  return "127.0.0.1:" + std::to_string(public_port_);
}
std::string fleet::bootstrap_url() const {
  return "wss://localhost:" + std::to_string(public_port_) + "/kafka";
}
std::string fleet::node_url_template() const {
  return bootstrap_url() + "/{node_id}";
}
std::string fleet::node_name_template() const {
  return "wss://kafka-{node_id}.fleet.invalid:" + std::to_string(public_port_) + "/";
}
std::string fleet::connect_to() const {
  return "*.fleet.invalid::127.0.0.1:";
}

void fleet::start_replica(int i) {
  const auto port = std::to_string(first_gateway_port_ + i);
  std::vector<std::string> argv{
      KWS_GATEWAY_PATH, "--listen", "127.0.0.1:" + port, "--upstream", upstream_,
      // Every replica advertises the one public port, a name per broker
      // (librdkafka tells brokers apart by address; the name need not resolve).
      "--advertise", "kafka-{node_id}.fleet.invalid:" + std::to_string(public_port_), "--metrics-listen",
      "127.0.0.1:" + std::to_string(first_gateway_port_ + replicas + i), "--threads", "2", "--drain-timeout",
      "5s", "--log-format", "json"};
  argv.insert(argv.end(), shape_.gateway_args.begin(), shape_.gateway_args.end());
  if (!shape_.tls_at_haproxy)
    argv.insert(argv.end(), {"--tls-cert", tls_.cert_pem, "--tls-key", tls_.key_pem});
  if (gateways_[i]) retired_logs_.push_back(gateways_[i]->output());
  gateways_[i] = std::make_unique<child_process>(argv);
  if (!gateways_[i]->wait_for_output(std::regex("listening on 127\\.0\\.0\\.1:" + port)))
    throw std::runtime_error("gateway " + std::to_string(i + 1) + " did not start:\n" +
                             gateways_[i]->output());
}

std::size_t fleet::haproxy_count(int i, const std::string& state) const {
  return occurrences(haproxy_->output(), "Server gateways/gw" + std::to_string(i + 1) + " is " + state);
}

void fleet::await_haproxy(int i, const std::string& state, std::size_t before) const {
  const auto what = "Server gateways/gw" + std::to_string(i + 1) + " is " + state;
  // Health checks every second, two to change state: a few seconds at most.
  if (!haproxy_->wait_for_output([&](std::string_view out) { return occurrences(out, what) > before; }, 15s))
    throw std::runtime_error("HAProxy did not log '" + what + "':\n" + haproxy_->output());
}

void fleet::kill(int i) {
  const auto down = haproxy_count(i, "DOWN");
  gateways_[i]->signal(SIGKILL);
  gateways_[i]->wait(5s);
  await_haproxy(i, "DOWN", down);
}

void fleet::drain(int i) {
  const auto down = haproxy_count(i, "DOWN");
  gateways_[i]->signal(SIGTERM);
  const auto rc = gateways_[i]->wait(15s);
  if (rc != std::optional<int>(0))
    throw std::runtime_error("gateway " + std::to_string(i + 1) + " drained: " + describe_exit(rc) + "\n" +
                             gateways_[i]->output());
  // The mock cluster answers at once, so every connection ends as soon as its responses are out: a drain
  // that waits out its timeout (5 s here) left a connection hanging.
  if (gateways_[i]->output().find("drain timeout reached") != std::string::npos)
    throw std::runtime_error("gateway " + std::to_string(i + 1) + " waited out its drain timeout:\n" +
                             gateways_[i]->output());
  await_haproxy(i, "DOWN", down);
}

void fleet::restart(int i) {
  const auto up = haproxy_count(i, "UP");
  start_replica(i);
  await_haproxy(i, "UP", up);
}

std::size_t fleet::open_broker_connections(int i) const {
  std::set<std::string> open;
  for (const auto& e : events(*gateways_[i], {field("event", "open"), field_matching("node", "^\\d+$")}))
    open.insert(field_text(e, "conn"));
  for (const auto& e : events(*gateways_[i], {field("event", "closed")})) open.erase(field_text(e, "conn"));
  return open.size();
}

int fleet::busiest(int except) const {
  int best = -1;
  std::size_t most = 0;
  for (int i = 0; i < replicas; ++i) {
    if (i == except) continue;
    const auto n = open_broker_connections(i);
    if (best < 0 || n > most) best = i, most = n;
  }
  return best;
}

std::size_t fleet::broker_connections_by_name_through_lb() const {
  std::size_t n = 0;
  for (int i = 0; i < replicas; ++i) {
    if (!gateways_[i]) continue;
    n += events(*gateways_[i], {field("event", "open"), field("target", "/"),
                                field_matching("node", "^\\d+$"), field_matching("lb", "^127\\.0\\.0\\.1:")})
             .size();
  }
  return n;
}

std::string fleet::logs() const {
  std::string out;
  const auto add = [&](const std::string& name, const std::string& text) {
    out += "---- " + name + " ----\n" + text;
  };
  if (mock_) add("mock cluster", mock_->output());
  if (haproxy_) add("haproxy", haproxy_->output());
  for (std::size_t k = 0; k < retired_logs_.size(); ++k)
    add("a replica before its restart", retired_logs_[k]);
  for (int i = 0; i < replicas; ++i) {
    if (gateways_[i]) add("gateway " + std::to_string(i + 1), gateways_[i]->output());
  }
  return out;
}

}  // namespace kws::test::fleet
