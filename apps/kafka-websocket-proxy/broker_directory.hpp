// Which local listener stands for which broker. The proxy's main listener leads to the configured
// (bootstrap) broker; every further broker that a response advertises gets a listener of its own the first
// time it is seen, stable for the life of the process and shared by every worker thread. Responses are then
// rewritten so that clients only ever see the proxy's listeners. See docs/addressing.md.
#pragma once

#include <kws/address.hpp>
#include <kws/kafka/rewrite.hpp>

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace kws::proxy {

/// One listener and the broker its clients reach.
struct route {
  std::string url;            ///< the WebSocket URL dialled for this listener's clients
  std::int32_t node_id = -1;  ///< node id of the broker when first seen; -1 for the bootstrap listener
  std::string advertised;     ///< host:port the broker advertised (empty for the bootstrap listener)
  std::uint16_t port = 0;     ///< local port
};

struct directory_config {
  /// Host written into rewritten responses.
  std::string advertise_host = "localhost";
  /// The bootstrap (main) listener's bound port.
  std::uint16_t main_port = 0;
  /// The configured broker: its URL (what the main listener dials) and its host and port.
  std::string bootstrap_url;
  std::string bootstrap_host;
  std::uint16_t bootstrap_port = 0;
  kws::url_template url_template = kws::url_template::default_for(false);
  /// Ports for further listeners, tried in order; {0, 0}: any free port.
  std::uint16_t first_port = 0;
  std::uint16_t last_port = 0;
  /// Names and addresses by which clients reach this machine (besides loopback ones), to recognise a broker
  /// that advertises the proxy itself.
  std::vector<std::string> self_hosts;
};

/// Binds and starts a listener for `r` on `port` (0: any free one); returns the bound port or sets `ec`.
using listener_opener =
    std::function<std::uint16_t(const route& r, std::uint16_t port, boost::system::error_code& ec)>;

class broker_directory {
 public:
  broker_directory(directory_config config, listener_opener open);

  /// The address mapper of every connection's tracker; thread-safe. Leaves alone a broker that already
  /// advertises one of this proxy's listeners; maps the bootstrap broker to the main listener and every
  /// other broker to its own listener, opened on first sight.
  std::optional<kafka::broker_endpoint> map(const kafka::advertised_broker& b, boost::system::error_code& ec);

  /// The listeners opened so far for further brokers.
  std::vector<route> routes() const;

  /// True for loopback names and addresses: localhost, 127.0.0.0/8, ::1.
  static bool is_loopback(std::string_view host);

 private:
  bool is_self(std::string_view host, std::int32_t port) const;

  directory_config config_;
  listener_opener open_;
  mutable std::mutex mu_;
  std::map<std::string, route> by_url_;
  std::set<std::int32_t> own_ports_;
  std::uint32_t next_port_;
};

}  // namespace kws::proxy
