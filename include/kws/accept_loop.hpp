// kws::accept_loop: the one way every listener of the project accepts TCP connections (the proxy's, the
// gateway's, the dev broker's, the metrics endpoint's, the librdkafka plugin's loopback listener). It keeps
// accepting whatever happens. A failed accept (out of descriptors, EMFILE or ENFILE, or out of memory) pauses
// it: 50 ms at first, doubling while accepts go on failing, at most 1 s, so that a process out of
// descriptors does not spin on a backlog it cannot take. Failures are told at most once a second (with how
// many there were), and once more when an accept succeeds again. The sockets it hands out are closed on exec
// (a child process the host starts does not inherit them).
#pragma once

#include <kws/frame_hook.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace kws {

struct accept_loop_options {
  /// The first pause after a failed accept; doubled while accepts go on failing, up to max_pause.
  std::chrono::milliseconds first_pause{50};
  std::chrono::milliseconds max_pause{1000};
  /// What the log lines call the listener ("listener 127.0.0.1:8080").
  std::string name = "listener";
  /// Where failures are told (may be empty), at warn; the line after a run of failures at info.
  frame_hook::log_function log{};
};

class accept_loop {
 public:
  /// The executor of the next socket, asked once for each connection accepted: `on_socket` gets it on the
  /// executor this returned just before.
  using executor_function = std::function<boost::asio::any_io_executor()>;
  using socket_handler = std::function<void(boost::asio::ip::tcp::socket)>;

  /// Accepts on `acceptor` (open and listening) until stop(), on the acceptor's executor, on which every
  /// member function must be called. `acceptor` must outlive the loop, or stop() be called first.
  accept_loop(boost::asio::ip::tcp::acceptor& acceptor, executor_function next, socket_handler on_socket,
              accept_loop_options options = {});
  accept_loop(boost::asio::ip::tcp::acceptor& acceptor, socket_handler on_socket,
              accept_loop_options options = {});
  ~accept_loop();
  accept_loop(const accept_loop&) = delete;
  accept_loop& operator=(const accept_loop&) = delete;

  void start();
  /// No accept is started after this, and a pause is cut short; an accept in flight ends when the acceptor
  /// is closed. Idempotent.
  void stop();

  /// Accepts that failed since the start.
  std::uint64_t failures() const;

 private:
  struct state;
  std::shared_ptr<state> st_;
};

}  // namespace kws
