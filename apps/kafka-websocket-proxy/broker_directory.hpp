// Which local listener stands for which broker. The proxy's main listener leads to the configured
// (bootstrap) broker; every further broker that a response advertises gets a listener of its own the first
// time it is seen, stable for the life of the process and shared by every worker thread. Responses are then
// rewritten so that clients only ever see the proxy's listeners. See docs/addressing.md.
//
// Two parts. `decide` is pure: from the configuration alone it says what a client should see for an
// advertised broker (itself, the main listener, or the listener of a broker URL). `map`, the trackers'
// address mapper, looks the URL up and, on a broker's first sight only, has the opener bind its listener
// before it answers: the port a client is handed is always listening (its connect completes in the kernel's
// backlog even before the accept loop starts), with no lock held across the bind. See docs/architecture.md.
#pragma once

#include <kws/address.hpp>
#include <kws/kafka/rewrite.hpp>

#include <boost/system/error_code.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
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
  /// The listener of the broker with node id N is on first_port + N, whatever else is free (another proxy, or
  /// this one restarted, maps each broker to the same port); a node id outside the range fails the response.
  bool ports_by_node_id = false;
  /// Names and addresses by which clients reach this machine (besides loopback ones), to recognise a broker
  /// that advertises the proxy itself.
  std::vector<std::string> self_hosts;
};

/// Binds a listener for `r` on `port` (0: any free one), listening when it returns, and has it accepted on
/// later; returns the bound port or sets `ec`. Called from worker threads, never under the directory's locks.
using listener_opener =
    std::function<std::uint16_t(const route& r, std::uint16_t port, boost::system::error_code& ec)>;

/// What a client should be shown for one advertised broker.
struct route_decision {
  enum class kind {
    keep,      ///< the broker advertises this proxy already: leave the entry alone
    main,      ///< the bootstrap broker: the main listener
    listener,  ///< a further broker: the listener of `url`
    invalid,   ///< the advertised address makes no WebSocket URL with the template
  };
  kind what = kind::keep;
  std::string url;                  ///< for `listener`: the broker's WebSocket URL, normalised
  boost::system::error_code error;  ///< for `invalid`: why the address makes no URL
};

class broker_directory {
 public:
  broker_directory(directory_config config, listener_opener open);

  /// The pure part of the mapping, from the configuration alone; `own_port` says whether `b.port` is one of
  /// this proxy's listener ports (the only state it needs, to recognise a broker advertising the proxy).
  route_decision decide(const kafka::advertised_broker& b, bool own_port) const;

  /// The address mapper of every connection's tracker; thread-safe. Leaves alone a broker that already
  /// advertises one of this proxy's listeners; maps the bootstrap broker to the main listener and every
  /// other broker to its own listener, opened on first sight. A broker seen before costs a shared lock and a
  /// map lookup; only the first sight of a broker binds, and only that broker's other first sights wait for
  /// it. When two node ids come to share one listener (the template makes the same URL for both), logs one
  /// warning for that listener: a client sends what it means for either broker to that one URL.
  std::optional<kafka::broker_endpoint> map(const kafka::advertised_broker& b, boost::system::error_code& ec);

  /// The listeners opened so far for further brokers.
  std::vector<route> routes() const;

  /// With ports_by_node_id and a template that makes a URL from the node id alone: opens every port of the
  /// range at once, first_port + N for node id N, so that a client holding cached metadata finds its broker's
  /// port listening before any response has named it. Stops at the first port that cannot be opened.
  void open_all(boost::system::error_code& ec);

  /// Whether open_all can work with this template: it uses {node_id} and neither {host} nor {port}.
  static bool names_brokers_by_node_id_alone(const kws::url_template& t);

  /// True for loopback names and addresses: localhost, 127.0.0.0/8, ::1.
  static bool is_loopback(std::string_view host);

 private:
  bool is_self(std::string_view host) const;
  std::optional<std::uint16_t> find(const std::string& url) const;
  std::optional<std::uint16_t> open(route r, boost::system::error_code& ec);
  std::optional<std::uint16_t> bind_next(route& r, boost::system::error_code& ec);
  std::optional<std::uint16_t> bind_by_node_id(route& r, boost::system::error_code& ec);

  const directory_config config_;
  const listener_opener open_;

  // Read on every rewritten response, written once per further broker: never held across a bind or a log
  // line.
  mutable std::shared_mutex mu_;
  std::map<std::string, route> by_url_;
  std::set<std::int32_t> own_ports_;

  // The URLs whose listener one worker is binding right now; another worker that sees the same broker first
  // waits on `opened_` for it (a bind, microseconds) instead of binding a second listener.
  std::mutex opening_mu_;
  std::condition_variable opened_;
  std::set<std::string> opening_;
  // Node ids already reported as outside the range (ports_by_node_id), so that the line comes once each.
  std::set<std::int32_t> out_of_range_;

  // The first node id mapped to each listener port, and the ports already reported as shared by two node
  // ids (see note_node): the line comes once per port.
  void note_node(std::uint16_t port, const kafka::advertised_broker& b, const std::string& url);
  std::mutex nodes_mu_;
  std::map<std::uint16_t, std::int32_t> node_at_port_;
  std::set<std::uint16_t> reported_shared_;

  // The next port of the range to try; the kernel's bind settles two workers trying the same one.
  std::atomic<std::uint32_t> next_port_;
};

}  // namespace kws::proxy
