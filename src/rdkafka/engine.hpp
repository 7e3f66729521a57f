// One librdkafka client's WebSocket side: a loopback listener that librdkafka's broker sockets connect to,
// and one event-loop thread that dials each broker's WebSocket and relays the connection to it.
#pragma once

#include <kws/accept_loop.hpp>
#include <kws/address.hpp>
#include <kws/dialer.hpp>
#include <kws/kafka/rewrite.hpp>
#include <kws/rdkafka.hpp>
#include <kws/relay.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <netinet/in.h>

namespace kws::rdkafka::detail {

/// A broker as librdkafka names it when it connects: its current host and port, and its node id (-1 for a
/// bootstrap server).
struct broker_target {
  std::string host;
  std::int32_t port = 0;
  std::int32_t node_id = -1;
};

/// Splits librdkafka's broker name ("host:port", "[v6]:port", possibly "proto://host:port/id") into host and
/// port. False when there is no port.
bool parse_broker_name(std::string_view name, std::string& host, std::int32_t& port);

class engine : public std::enable_shared_from_this<engine> {
 public:
  /// Binds the listener and starts the thread. Throws std::system_error (or boost's) when it cannot.
  static std::shared_ptr<engine> start(config cfg, std::string client_name);
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  /// The address that resolve_cb hands librdkafka for every broker: the loopback listener.
  const sockaddr_in& listener_address() const { return listener_; }

  /// On a librdkafka broker thread, inside connect_cb: connects `sockfd` (non-blocking) to the listener and
  /// notes which broker the connection is for. Returns 0 (connected or in progress) or an errno value.
  int connect(int sockfd, broker_target target);

  /// The client is being destroyed: later connect() calls fail with ECONNREFUSED. Connections already made
  /// go on until librdkafka closes them (closing them first would make librdkafka log disconnects).
  void stop_connecting() { stopping_.store(true); }
  /// Once librdkafka has closed its connections: stops accepting, closes every WebSocket that is still open
  /// (code 1001) and joins the thread, cutting off close handshakes that take longer than a moment: nobody
  /// waits for their answers any more. Idempotent; never from the engine's own thread.
  void shutdown();

  /// Names the client in notes from now on (librdkafka names it only after on_new). Any thread.
  void set_client_name(std::string_view name);

  template <class MakeText>
  void note(log_level level, MakeText&& make_text) const {
    if (cfg_.log && level >= cfg_.min_log_level) cfg_.log(level, client_name(), make_text());
  }

 private:
  struct pending {
    broker_target target;
    std::chrono::steady_clock::time_point since;
  };

  engine(config cfg, std::string client_name);
  std::string client_name() const;
  void on_accepted(boost::asio::ip::tcp::socket s);
  void start_relay(std::uint64_t id, boost::asio::ip::tcp::socket s, connection ws, std::string url,
                   broker_target target);
  void stop_on_loop();
  kafka::api_verdict_handler verdict_note(std::uint64_t id, const std::string& url);
  void note_shared_addresses(const std::vector<kafka::advertised_broker>& brokers);

  config cfg_;
  mutable std::mutex name_mu_;
  std::string name_;
  url_template brokers_;
  url_template bootstrap_;
  std::shared_ptr<const kafka::tracker_config> tracking_;

  boost::asio::io_context ioc_{1};
  boost::asio::ip::tcp::acceptor acceptor_;
  std::optional<accept_loop> accepting_;  // after the acceptor: stopped before it goes
  dialer dialer_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guard_;
  sockaddr_in listener_{};
  std::thread thread_;
  std::promise<void> finished_;
  std::once_flag shutdown_once_;

  std::mutex mu_;  // guards pending_ (filled by broker threads, emptied by the loop)
  std::unordered_map<std::uint16_t, pending> pending_;
  std::atomic<bool> stopping_{false};

  std::mutex shared_mu_;  // guards shared_addresses_: the addresses already reported as several brokers'
  std::set<std::string> shared_addresses_;

  // The loop's own state.
  std::unordered_map<std::uint64_t, std::shared_ptr<relay>> relays_;
  std::uint64_t next_id_ = 0;
  bool stopped_on_loop_ = false;
};

}  // namespace kws::rdkafka::detail
