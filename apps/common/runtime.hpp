// What the servers in apps/ share: worker threads that each run their own io_context and the sessions
// placed on it, the main thread's context for listeners and signals, the shutdown on SIGINT/SIGTERM (an
// orderly drain, all of it within the drain timeout; a second signal stops at once), and the small
// formatting helpers of their log lines.
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

namespace kws::app {

/// `host:port` for logs, IPv6 in brackets; IPv4 clients of a dual-stack listener as the IPv4 address they
/// are.
std::string endpoint_string(const boost::asio::ip::tcp::endpoint& ep);
/// The socket's peer as endpoint_string, or "?".
std::string peer_of(const boost::asio::ip::tcp::socket& s);
/// 950us, 12ms, 3000ms, 20s: rounded to the unit shown.
std::string human_duration(std::chrono::steady_clock::duration d);

/// Binds and listens. No host means every interface, IPv6 and IPv4 on one socket where the machine has IPv6
/// (as Go's ":8080" does), else IPv4 only. Throws boost::system::system_error.
void open_listener(boost::asio::ip::tcp::acceptor& acceptor, const std::string& host, std::uint16_t port);

/// How accepted client sockets notice a peer that vanished without a FIN (cable pulled, NAT state dropped):
/// TCP keep-alive probes after `keepalive_idle` of silence (then every third of it, three unanswered probes
/// end the connection), and TCP_USER_TIMEOUT for data that stays unacknowledged. Zero turns either off.
struct client_socket_options {
  std::chrono::milliseconds keepalive_idle{std::chrono::seconds(30)};
  std::chrono::milliseconds user_timeout{std::chrono::seconds(60)};
};
/// Applies them, and TCP_NODELAY; failures are ignored (the socket works without them).
void tune_client_socket(boost::asio::ip::tcp::socket& s, const client_socket_options& options);

/// True once the peer has closed its side (a FIN arrived), whether or not its data has been read.
bool peer_has_closed(boost::asio::ip::tcp::socket& s);

/// A session a worker runs, and asks to wind down on shutdown.
class drainable {
 public:
  virtual ~drainable() = default;
  /// No new requests; finish those under way within `timeout`, then end.
  virtual void drain(std::chrono::milliseconds timeout) = 0;
  /// End at once, without closing handshakes, and log the connection's closed line with `why` as its cause
  /// before returning.
  virtual void stop_now(const std::string& why) = 0;
};

/// One worker thread with its own io_context (so its sessions need no strands) and the sessions on it.
/// adopt, forget and drain are called on the worker's own thread.
class worker {
 public:
  worker() : guard_(ioc_.get_executor()) {}
  boost::asio::io_context& context() { return ioc_; }
  void adopt(std::shared_ptr<drainable> s) { sessions_.insert(std::move(s)); }
  void forget(const std::shared_ptr<drainable>& s) { sessions_.erase(s); }
  std::size_t sessions() const { return sessions_.size(); }
  /// Drains every session; run() returns once the last one is gone.
  void drain(std::chrono::milliseconds timeout);
  /// Stops every session at once (each logs its closed line), then, once the handlers of the operations
  /// this aborted have run (at most 100 ms), the loop.
  void stop_now(const std::string& why);
  /// Runs until stopped or out of work. An exception escaping a handler (bad_alloc, say) is logged and the
  /// loop goes on: the connection it belonged to loses that handler and ends by its own timers, the others
  /// keep being served.
  void run();
  void stop() { ioc_.stop(); }

 private:
  boost::asio::io_context ioc_{1};
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_;
  boost::asio::steady_timer stop_timer_{ioc_};
  std::unordered_set<std::shared_ptr<drainable>> sessions_;
};

/// How the shutdown divides the drain timeout: responses to requests already sent may take all of it but a
/// reserve (a quarter of it, at most 2 s) in which the closing handshakes run; at the end of it whatever is
/// still open is stopped at once.
std::chrono::milliseconds response_wait(std::chrono::milliseconds drain_timeout);

/// The workers, the main context, and the shutdown sequence.
class runtime {
 public:
  /// `drain_timeout`: after the first signal, how long the whole shutdown may take (see response_wait).
  runtime(unsigned threads, std::chrono::milliseconds drain_timeout);

  /// Listeners and timers of the main thread live here.
  boost::asio::io_context& main_context() { return main_ioc_; }
  /// Workers in turn (main thread only).
  worker& next_worker();
  std::size_t threads() const { return workers_.size(); }
  /// Runs on the main thread at the first signal, before the workers drain: close the listeners here.
  void on_shutdown(std::function<void()> f) { on_shutdown_ = std::move(f); }
  /// Runs on the main thread once every worker is done, before run() returns: close what must answer during
  /// the drain (the monitoring endpoint's /readyz) here.
  void on_stopped(std::function<void()> f) { on_stopped_ = std::move(f); }
  /// True from the first signal on (any thread).
  bool draining() const { return draining_.load(std::memory_order_acquire); }
  /// No drain: at the first signal, after on_shutdown, every worker's loop stops at once (after what
  /// on_shutdown posted to it), and what was still pending there is destroyed with the workers. For the dev
  /// broker, whose clients are tests and whose sessions keep nothing worth finishing.
  void stop_at_once() { stop_at_once_ = true; }

  /// Runs the workers and the main context until a signal has been handled and every worker is done.
  int run();

 private:
  void wait_signal();

  void stop_all(const std::string& why);

  std::chrono::milliseconds drain_timeout_;
  boost::asio::io_context main_ioc_{1};
  std::vector<std::unique_ptr<worker>> workers_;
  std::size_t next_ = 0;
  boost::asio::signal_set signals_{main_ioc_, SIGINT, SIGTERM};
  boost::asio::steady_timer hard_stop_{main_ioc_};
  int signal_count_ = 0;
  bool stop_at_once_ = false;
  std::function<void()> on_shutdown_;
  std::function<void()> on_stopped_;
  std::atomic<bool> draining_{false};
};

}  // namespace kws::app
