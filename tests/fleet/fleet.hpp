// A fleet on 127.0.0.1 for tests: librdkafka's mock cluster (three brokers, node ids 1 to 3), three
// kafka-websocket-gateway replicas, each on ports fixed for the test (so that a restarted replica is where
// the load balancer expects it), and HAProxy in front of them, run with a configuration file from
// deploy/haproxy.
#pragma once

#include "process.hpp"
#include "test_env.hpp"
#include "ws_test_server.hpp"

#include <array>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kws::test::fleet {

/// How the load balancer stands in front of the replicas: its configuration under deploy/haproxy and what
/// the replicas need to match it.
struct shape {
  std::string name;
  std::filesystem::path haproxy_config;
  /// TLS ends at HAProxy (its frontend gets the certificate); else the replicas serve wss:// themselves
  /// (each gets the certificate, for localhost and every broker name *.fleet.invalid).
  bool tls_at_haproxy = true;
  /// Flags added to every replica's command line.
  std::vector<std::string> gateway_args;
};

/// HAProxy ends wss:// and dials each replica over ws:// (deploy/haproxy/gateways-wss.cfg).
shape wss_at_haproxy();
/// HAProxy passes wss:// through in TCP mode with a PROXY protocol v2 header; the replicas end TLS and route
/// a broker's connection by its name (SNI and Host) (deploy/haproxy/gateways-passthrough.cfg).
shape wss_passed_through();

class fleet {
 public:
  static constexpr int replicas = 3;

  /// Starts everything; a topic of `partitions` partitions exists on the cluster. Throws std::runtime_error
  /// with the logs when something does not start.
  fleet(shape s, int partitions);
  ~fleet();
  fleet(const fleet&) = delete;
  fleet& operator=(const fleet&) = delete;

  static constexpr const char* topic = "fleet";
  /// The one public address: host and port, and the URLs clients dial.
  std::string public_host_port() const;
  std::string bootstrap_url() const;
  /// Brokers by path through HAProxy (/kafka/{node_id}).
  std::string node_url_template() const;
  /// Brokers by name, every one at the public port (kafka-{node_id}.fleet.invalid, which a client dials at
  /// 127.0.0.1 with connect_to()).
  std::string node_name_template() const;
  /// The proxy's --connect-to for those names.
  std::string connect_to() const;
  const std::string& ca_file() const { return tls_.ca_pem; }
  const std::filesystem::path& dir() const { return dir_.path(); }

  /// SIGKILL to replica `i` (0-based); returns once it is gone and HAProxy has taken it out.
  void kill(int i);
  /// SIGTERM to replica `i`; returns once it exited (with 0, else throws) and HAProxy has taken it out.
  void drain(int i);
  /// Starts replica `i` again on its ports; returns once HAProxy has it in service.
  void restart(int i);

  /// How many WebSocket connections to a broker (target /kafka/N) replica `i` holds open, from its log.
  std::size_t open_broker_connections(int i) const;
  /// The running replica, other than `except`, with the most open connections to brokers.
  int busiest(int except = -1) const;

  /// Connections the running replicas opened to a broker named by the TLS server name and Host at "/", behind
  /// a PROXY protocol header from HAProxy (the `lb` field of their open lines).
  std::size_t broker_connections_by_name_through_lb() const;

  /// Every process's output, for a failure message.
  std::string logs() const;

 private:
  void start_replica(int i);
  // Waits until HAProxy has logged `state` (UP or DOWN) for replica i once more than before.
  void await_haproxy(int i, const std::string& state, std::size_t before) const;
  std::size_t haproxy_count(int i, const std::string& state) const;

  shape shape_;
  temp_dir dir_{"kws-fleet"};
  tls_files tls_;
  int mock_in_ = -1;
  std::unique_ptr<child_process> mock_, haproxy_;
  std::array<std::unique_ptr<child_process>, replicas> gateways_;
  std::vector<std::string> retired_logs_;
  std::string upstream_;
  unsigned short public_port_ = 0;
  unsigned short first_gateway_port_ = 0;  // replica i: ws on first + i, metrics on first + replicas + i
};

}  // namespace kws::test::fleet
