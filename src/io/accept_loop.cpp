#include <kws/accept_loop.hpp>

#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <utility>

namespace kws {

namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using clock = std::chrono::steady_clock;

// Shared with the operation in flight, so that a loop destroyed while an accept or a pause is pending leaves
// their handlers something to find stopped.
struct accept_loop::state : std::enable_shared_from_this<state> {
  state(tcp::acceptor& a, executor_function n, socket_handler s, accept_loop_options o)
      : acceptor(&a),
        next(std::move(n)),
        on_socket(std::move(s)),
        options(std::move(o)),
        pause(a.get_executor()) {}

  tcp::acceptor* acceptor;
  executor_function next;
  socket_handler on_socket;
  accept_loop_options options;
  asio::steady_timer pause;
  bool stopped = false;
  std::uint64_t failures = 0;
  std::uint64_t untold = 0;    // failures since the last line
  std::uint64_t in_a_row = 0;  // failures since the last accept that succeeded
  std::chrono::milliseconds pause_for{0};
  clock::time_point last_told{};

  void accept() {
    if (stopped) return;
    auto done = [self = shared_from_this()](error_code ec, tcp::socket s) {
      self->accepted(ec, std::move(s));
    };
    if (next) return acceptor->async_accept(next(), std::move(done));
    acceptor->async_accept(std::move(done));
  }

  void accepted(const error_code& ec, tcp::socket s) {
    if (stopped || ec == asio::error::operation_aborted || !acceptor->is_open()) return;
    if (ec) return failed(ec);
    if (in_a_row != 0) {
      tell(log_level::info,
           options.name + ": accepting again after " + std::to_string(in_a_row) + " failed accept(s)");
      in_a_row = untold = 0;
      pause_for = std::chrono::milliseconds(0);
    }
    on_socket(std::move(s));
    accept();
  }

  void failed(const error_code& ec) {
    ++failures;
    ++untold;
    ++in_a_row;
    pause_for = pause_for.count() == 0 ? options.first_pause : std::min(2 * pause_for, options.max_pause);
    if (const auto now = clock::now(); now - last_told >= std::chrono::seconds(1)) {
      tell(log_level::warn, options.name + ": accept failed: " + ec.message() + " (" +
                                std::to_string(untold) +
                                " time(s) since the last line); pausing accepts for " +
                                std::to_string(pause_for.count()) + "ms");
      untold = 0;
      last_told = now;
    }
    pause.expires_after(pause_for);
    pause.async_wait([self = shared_from_this()](error_code e) {
      if (!e) self->accept();
    });
  }

  void tell(log_level level, const std::string& text) const {
    if (options.log) options.log(level, text);
  }
};

accept_loop::accept_loop(tcp::acceptor& acceptor, executor_function next, socket_handler on_socket,
                         accept_loop_options options)
    : st_(std::make_shared<state>(acceptor, std::move(next), std::move(on_socket), std::move(options))) {}

accept_loop::accept_loop(tcp::acceptor& acceptor, socket_handler on_socket, accept_loop_options options)
    : accept_loop(acceptor, executor_function{}, std::move(on_socket), std::move(options)) {}

accept_loop::~accept_loop() {
  stop();
}

void accept_loop::start() {
  st_->accept();
}

void accept_loop::stop() {
  st_->stopped = true;
  st_->pause.cancel();
}

std::uint64_t accept_loop::failures() const {
  return st_->failures;
}

}  // namespace kws
