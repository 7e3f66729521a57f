#include <kws/accept_loop.hpp>

#include "io/cloexec.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <unistd.h>

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

  static constexpr int max_burst = 64;

  tcp::acceptor* acceptor;
  tcp protocol = tcp::v4();  // the acceptor's, read at the start
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

  // Takes every connection waiting (at most a burst's worth per turn of the event loop, so that the
  // listener does not starve the connections it serves), then waits for the next. The descriptors come from
  // accept4 with SOCK_CLOEXEC (io/cloexec.hpp): Asio's accept makes ones a child process would inherit.
  void accept() {
    for (int n = 0; n < max_burst; ++n) {
      if (stopped || !acceptor->is_open()) return;
      error_code ec;
      const int fd = detail::accept_cloexec(acceptor->native_handle(), ec);
      if (ec == asio::error::would_block) return wait();
      if (ec) return failed(ec);
      tcp::socket s(next ? next() : acceptor->get_executor());
      s.assign(protocol, fd, ec);
      if (ec) {
        ::close(fd);
        return failed(ec);
      }
      accepted(std::move(s));
    }
    asio::post(acceptor->get_executor(), [self = shared_from_this()] { self->accept(); });
  }

  void wait() {
    acceptor->async_wait(tcp::acceptor::wait_read, [self = shared_from_this()](error_code ec) {
      if (self->stopped || ec == asio::error::operation_aborted || !self->acceptor->is_open()) return;
      if (ec) return self->failed(ec);
      self->accept();
    });
  }

  void accepted(tcp::socket s) {
    if (in_a_row != 0) {
      tell(log_level::info,
           options.name + ": accepting again after " + std::to_string(in_a_row) + " failed accept(s)");
      in_a_row = untold = 0;
      pause_for = std::chrono::milliseconds(0);
    }
    on_socket(std::move(s));
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
  // accept4 is called before any wait: it must not block.
  error_code ec;
  st_->acceptor->non_blocking(true, ec);
  if (const auto local = st_->acceptor->local_endpoint(ec); !ec) st_->protocol = local.protocol();
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
