#include "runtime.hpp"

#include <spdlog/spdlog.h>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>

#include <stdexcept>
#include <thread>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace kws::app {

namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;

std::string endpoint_string(const tcp::endpoint& ep) {
  auto a = ep.address();
  if (a.is_v6() && a.to_v6().is_v4_mapped()) a = asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
  return (a.is_v6() ? "[" + a.to_string() + "]" : a.to_string()) + ":" + std::to_string(ep.port());
}

std::string peer_of(const tcp::socket& s) {
  error_code ec;
  auto ep = s.remote_endpoint(ec);
  return ec ? std::string("?") : endpoint_string(ep);
}

std::string human_duration(std::chrono::steady_clock::duration d) {
  // Rounded to the nearest unit shown, not truncated: 19.98 s is "20s".
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  if (us < 10'000) return std::to_string(us) + "us";
  if (us < 9'999'500) return std::to_string((us + 500) / 1000) + "ms";
  return std::to_string((us + 500'000) / 1'000'000) + "s";
}

void open_listener(tcp::acceptor& acceptor, const std::string& host, std::uint16_t port) {
  auto bind = [&](const tcp::endpoint& ep, bool dual_stack) {
    // The message names the address, for the one start-up line: "listening on [::]:8080: Address already
    // in use".
    error_code ec;
    acceptor.open(ep.protocol(), ec);
    if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec && dual_stack) acceptor.set_option(asio::ip::v6_only(false), ec);
    if (!ec) acceptor.bind(ep, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) throw boost::system::system_error(ec, "listening on " + endpoint_string(ep));
  };
  if (!host.empty()) {
    error_code ec;
    const auto address = asio::ip::make_address(host, ec);
    if (ec) throw std::invalid_argument("listen address '" + host + "' is not an IP address");
    return bind(tcp::endpoint(address, port), false);
  }
  try {
    bind(tcp::endpoint(tcp::v6(), port), true);
  } catch (const boost::system::system_error& e) {
    if (e.code() != asio::error::address_family_not_supported &&
        e.code() != boost::system::errc::address_not_available)
      throw;
    error_code ignored;
    acceptor.close(ignored);
    bind(tcp::endpoint(tcp::v4(), port), false);
  }
}

void tune_client_socket(tcp::socket& s, const client_socket_options& o) {
  error_code ignored;
  s.set_option(tcp::no_delay(true), ignored);
  const int fd = s.native_handle();
  if (o.keepalive_idle.count() > 0) {
    const int on = 1;
    const int idle = std::max<int>(1, static_cast<int>(o.keepalive_idle.count() / 1000));
    const int interval = std::max(1, idle / 3);
    const int count = 3;
    ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  }
  if (o.user_timeout.count() > 0) {
    const unsigned ms = static_cast<unsigned>(o.user_timeout.count());
    ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms);
  }
}

bool peer_has_closed(tcp::socket& s) {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (::getsockopt(s.native_handle(), IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return false;
  // CLOSE_WAIT: the peer's FIN is in; CLOSE: the connection is gone (a reset, say).
  return info.tcpi_state == TCP_CLOSE_WAIT || info.tcpi_state == TCP_CLOSE;
}

void worker::run() {
  for (;;) {
    try {
      ioc_.run();
      return;
    } catch (const std::exception& e) {
      spdlog::error("a connection's handler failed: {}; other connections go on", e.what());
    } catch (...) {
      spdlog::error("a connection's handler failed with an unknown exception; other connections go on");
    }
  }
}

void worker::drain(std::chrono::milliseconds timeout) {
  // Copy: a session may finish (and forget itself) inside drain.
  auto all = std::vector<std::shared_ptr<drainable>>(sessions_.begin(), sessions_.end());
  for (auto& s : all) s->drain(timeout);
  guard_.reset();
}

void worker::stop_now(const std::string& why) {
  auto all = std::vector<std::shared_ptr<drainable>>(sessions_.begin(), sessions_.end());
  for (auto& s : all) s->stop_now(why);
  guard_.reset();
  // The aborted operations complete with operation_aborted and must run: Beast keeps an operation that waits
  // for another inside the stream, where destroying the loop would not free it. Only an operation that
  // nothing aborts (a dial under way) is cut short when the loop stops.
  stop_timer_.expires_after(std::chrono::milliseconds(100));
  stop_timer_.async_wait([this](error_code ec) {
    if (!ec) ioc_.stop();
  });
}

std::chrono::milliseconds response_wait(std::chrono::milliseconds drain_timeout) {
  return drain_timeout - std::min<std::chrono::milliseconds>(drain_timeout / 4, std::chrono::seconds(2));
}

runtime::runtime(unsigned threads, std::chrono::milliseconds drain_timeout) : drain_timeout_(drain_timeout) {
  for (unsigned i = 0; i < std::max(1u, threads); ++i) workers_.push_back(std::make_unique<worker>());
}

worker& runtime::next_worker() {
  auto& w = *workers_[next_];
  next_ = (next_ + 1) % workers_.size();
  return w;
}

void runtime::wait_signal() {
  signals_.async_wait([this](error_code ec, int signo) {
    if (ec) return;
    if (stop_at_once_) {
      spdlog::info("signal {}: closing listeners and exiting", signo);
      if (on_shutdown_) on_shutdown_();
      for (auto& w : workers_) asio::post(w->context(), [&w] { w->stop(); });
      return;
    }
    if (++signal_count_ == 1) {
      draining_.store(true, std::memory_order_release);
      const auto wait = response_wait(drain_timeout_);
      spdlog::info(
          "signal {}: no new connections; open ones get {} for responses already requested and stop within "
          "{}",
          signo, human_duration(wait), human_duration(drain_timeout_));
      if (on_shutdown_) on_shutdown_();
      for (auto& w : workers_) asio::post(w->context(), [&w, wait] { w->drain(wait); });
      hard_stop_.expires_after(drain_timeout_);
      hard_stop_.async_wait([this](error_code e) {
        if (e) return;
        spdlog::warn("drain timeout reached: closing the connections still open now");
        stop_all("stopped at the drain timeout");
      });
      wait_signal();
    } else {
      spdlog::warn("signal {} again: closing every connection now", signo);
      stop_all("stopped by a second signal");
      signals_.cancel();
      hard_stop_.cancel();
    }
  });
}

void runtime::stop_all(const std::string& why) {
  // Each worker stops its own sessions on its own thread; a worker already finished never runs this.
  for (auto& w : workers_) asio::post(w->context(), [&w, why] { w->stop_now(why); });
}

int runtime::run() {
  std::vector<std::thread> threads;
  for (auto& w : workers_) threads.emplace_back([&w] { w->run(); });
  wait_signal();
  // The main context ends when the listeners are closed and the signal wait is cancelled.
  std::thread main_thread([this] { main_ioc_.run(); });
  for (auto& t : threads) t.join();
  asio::post(main_ioc_, [this] {
    signals_.cancel();
    hard_stop_.cancel();
    if (on_stopped_) on_stopped_();
  });
  main_thread.join();
  spdlog::info("stopped");
  return 0;
}

}  // namespace kws::app
