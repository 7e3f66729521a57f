#include "runtime.hpp"

#include <spdlog/spdlog.h>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>

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
    acceptor.open(ep.protocol());
    acceptor.set_option(tcp::acceptor::reuse_address(true));
    if (dual_stack) acceptor.set_option(asio::ip::v6_only(false));
    acceptor.bind(ep);
    acceptor.listen(asio::socket_base::max_listen_connections);
  };
  if (!host.empty()) return bind(tcp::endpoint(asio::ip::make_address(host), port), false);
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

runtime::runtime(unsigned threads, std::chrono::milliseconds drain_timeout,
                 std::chrono::milliseconds hard_stop_after)
    : drain_timeout_(drain_timeout), hard_stop_after_(hard_stop_after) {
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
    if (++signal_count_ == 1) {
      spdlog::info("signal {}: no new connections; draining open ones for up to {}ms", signo,
                   drain_timeout_.count());
      if (on_shutdown_) on_shutdown_();
      for (auto& w : workers_) asio::post(w->context(), [&w, this] { w->drain(drain_timeout_); });
      hard_stop_.expires_after(hard_stop_after_);
      hard_stop_.async_wait([this](error_code e) {
        if (e) return;
        spdlog::warn("drain did not finish in time: closing everything now");
        for (auto& w : workers_) w->stop();
      });
      wait_signal();
    } else {
      spdlog::warn("signal {} again: closing everything now", signo);
      for (auto& w : workers_) w->stop();
      signals_.cancel();
    }
  });
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
  });
  main_thread.join();
  spdlog::info("stopped");
  return 0;
}

}  // namespace kws::app
