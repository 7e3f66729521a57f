#include "proxy_server.hpp"

#include <spdlog/spdlog.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <memory>
#include <optional>
#include <thread>
#include <unordered_set>
#include <vector>

namespace kws::proxy {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;

std::string endpoint_string(const tcp::endpoint& ep) {
  auto a = ep.address();
  // IPv4 clients of a dual-stack listener arrive as ::ffff:a.b.c.d; log them as the IPv4 address they are.
  if (a.is_v6() && a.to_v6().is_v4_mapped()) a = asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
  return (a.is_v6() ? "[" + a.to_string() + "]" : a.to_string()) + ":" + std::to_string(ep.port());
}

std::string peer_of(const tcp::socket& s) {
  error_code ec;
  auto ep = s.remote_endpoint(ec);
  return ec ? std::string("?") : endpoint_string(ep);
}

std::string human_duration(std::chrono::steady_clock::duration d) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  if (us < 10'000) return std::to_string(us) + "us";
  if (us < 10'000'000) return std::to_string(us / 1000) + "ms";
  return std::to_string(us / 1'000'000) + "s";
}

// Binds the listener. No host means every interface, IPv6 and IPv4 on one socket where the machine has IPv6
// (as Go's ":8080" does), else IPv4 only.
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

class worker;

// One client connection: dial the broker (with retries), then hand both ends to a relay; dial again (with
// the same retries) when the relay asks for it after the broker closed between requests.
class session : public std::enable_shared_from_this<session> {
 public:
  session(worker& w, tcp::socket client, std::uint64_t id);
  void start();
  void drain(std::chrono::milliseconds timeout);

 private:
  using dial_done = std::function<void(error_code, kws::connection)>;
  void dial(dial_done done);
  void attempt(std::shared_ptr<dial_done> done);
  void start_relay(kws::connection conn);
  void finish();

  worker& worker_;
  tcp::socket client_;
  std::uint64_t id_;
  std::string client_name_;
  int attempt_ = 0;
  std::chrono::milliseconds backoff_;
  asio::steady_timer timer_;
  std::shared_ptr<kws::relay> relay_;
  bool draining_ = false;
};

class worker {
 public:
  worker(const proxy_config& cfg, const kws::dialer& d)
      : cfg_(cfg),
        broker_url_(kws::parse_address(cfg.broker, cfg.dialer.tls).str()),
        dialer_(d.rebind(ioc_.get_executor())),
        guard_(ioc_.get_executor()) {}

  asio::io_context& context() { return ioc_; }
  const proxy_config& config() const { return cfg_; }
  const std::string& broker_url() const { return broker_url_; }
  kws::dialer& dialer() { return dialer_; }

  void adopt(tcp::socket s, std::uint64_t id) {
    auto sess = std::make_shared<session>(*this, std::move(s), id);
    sessions_.insert(sess);
    sess->start();
  }
  void forget(const std::shared_ptr<session>& s) { sessions_.erase(s); }

  // Called on this worker's thread once the listener is closed.
  void drain(std::chrono::milliseconds timeout) {
    draining_ = true;
    // Copy: a session may finish (and erase itself) inside drain.
    auto all = std::vector<std::shared_ptr<session>>(sessions_.begin(), sessions_.end());
    for (auto& s : all) s->drain(timeout);
    guard_.reset();  // run() returns once the last session is gone
  }
  bool draining() const { return draining_; }
  std::size_t sessions() const { return sessions_.size(); }

  void run() { ioc_.run(); }
  void stop() { ioc_.stop(); }

 private:
  asio::io_context ioc_{1};
  const proxy_config& cfg_;
  std::string broker_url_;
  kws::dialer dialer_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::unordered_set<std::shared_ptr<session>> sessions_;
  bool draining_ = false;
};

session::session(worker& w, tcp::socket client, std::uint64_t id)
    : worker_(w),
      client_(std::move(client)),
      id_(id),
      client_name_(peer_of(client_)),
      backoff_(w.config().dial_backoff),
      timer_(w.context()) {}

void session::start() {
  dial([self = shared_from_this()](error_code ec, kws::connection conn) {
    if (ec) return self->finish();
    self->start_relay(std::move(conn));
  });
}

// Dials until it works, the retries are spent, or a drain begins; `done` runs once either way.
void session::dial(dial_done done) {
  attempt_ = 0;
  backoff_ = worker_.config().dial_backoff;
  attempt(std::make_shared<dial_done>(std::move(done)));
}

void session::attempt(std::shared_ptr<dial_done> done) {
  ++attempt_;
  worker_.dialer().async_dial(worker_.config().broker, [self = shared_from_this(), done](error_code ec,
                                                                                         kws::connection c) {
    const auto& cfg = self->worker_.config();
    if (!ec && self->draining_) {
      c.abort();
      ec = asio::error::operation_aborted;
    }
    if (ec && self->attempt_ <= cfg.dial_retries && !self->draining_ && ec != kws::errc::invalid_address) {
      spdlog::debug("conn {} dial attempt {} failed: {}; retrying in {}ms", self->id_, self->attempt_,
                    ec.message(), self->backoff_.count());
      self->timer_.expires_after(self->backoff_);
      self->backoff_ *= 2;
      return self->timer_.async_wait([self, done](error_code e) {
        if (e || self->draining_) return (*done)(asio::error::operation_aborted, kws::connection{});
        self->attempt(done);
      });
    }
    if (ec && ec != asio::error::operation_aborted && !self->relay_) {
      // A failed reconnect is reported by the relay's own closing line.
      spdlog::warn("conn {} closed client={} broker={}: dial failed after {} attempt(s): {}", self->id_,
                   self->client_name_, self->worker_.broker_url(), self->attempt_, ec.message());
    }
    (*done)(ec, std::move(c));
  });
}

void session::start_relay(kws::connection conn) {
  const auto& cfg = worker_.config();
  const std::string url = conn.url();
  spdlog::info("conn {} open client={} broker={}", id_, client_name_, url);
  auto options = cfg.relay;
  options.log = [id = id_](kws::log_level level, std::string_view text) {
    spdlog::log(static_cast<spdlog::level::level_enum>(level), "conn {} {}", id, text);
  };
  options.min_log_level = static_cast<kws::log_level>(std::min<int>(spdlog::get_level(), 4));
  std::weak_ptr<session> weak = shared_from_this();
  relay_ = kws::relay::create(
      std::move(client_), std::move(conn), std::move(options), nullptr,
      [self = shared_from_this(), url](const kws::relay_report& r) {
        const auto level = r.error ? spdlog::level::warn : spdlog::level::info;
        spdlog::log(level, "conn {} closed client={} broker={} up={}B/{}f down={}B/{}f duration={} cause={}",
                    self->id_, self->client_name_, url, r.up_bytes, r.up_frames, r.down_bytes, r.down_frames,
                    human_duration(r.duration), r.cause);
        // Break the cycle relay -> handler -> session -> relay once the relay is done.
        asio::post(self->worker_.context(), [self] {
          self->relay_.reset();
          self->worker_.forget(self);
        });
      },
      [weak](std::function<void(error_code, kws::connection)> done) {
        auto self = weak.lock();
        if (!self) return;
        self->dial(std::move(done));
      });
  relay_->start();
}

void session::drain(std::chrono::milliseconds timeout) {
  draining_ = true;
  timer_.cancel();  // a backoff wait ends the dial; a dial in progress is dropped when it completes
  if (relay_) relay_->drain(timeout);
}

void session::finish() {
  error_code ignored;
  client_.close(ignored);
  worker_.forget(shared_from_this());
}

}  // namespace

int run(const proxy_config& cfg) {
  // Fail early, and once, on a broker address that can never work.
  const auto url = kws::parse_address(cfg.broker, cfg.dialer.tls);
  kws::dialer prototype(asio::system_executor(), cfg.dialer);

  asio::io_context main_ioc{1};
  tcp::acceptor acceptor(main_ioc);
  open_listener(acceptor, cfg.listen_host, cfg.port);

  std::vector<std::unique_ptr<worker>> workers;
  for (unsigned i = 0; i < std::max(1u, cfg.threads); ++i)
    workers.push_back(std::make_unique<worker>(cfg, prototype));
  std::vector<std::thread> threads;
  for (auto& w : workers) threads.emplace_back([&w] { w->run(); });

  spdlog::info("listening on {} broker={} threads={} max_frame_bytes={}",
               endpoint_string(acceptor.local_endpoint()), url.str(), workers.size(),
               cfg.relay.max_frame_bytes);

  std::uint64_t next_id = 0;
  std::size_t next_worker = 0;
  asio::steady_timer accept_retry(main_ioc);
  std::function<void()> accept_next = [&] {
    auto& w = *workers[next_worker];
    next_worker = (next_worker + 1) % workers.size();
    acceptor.async_accept(w.context(), [&](error_code ec, tcp::socket s) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
      if (ec) {
        // Out of descriptors or similar: say so, back off, and keep accepting.
        spdlog::error("accept failed: {}; retrying in 100ms", ec.message());
        accept_retry.expires_after(std::chrono::milliseconds(100));
        return accept_retry.async_wait([&](error_code e) {
          if (!e) accept_next();
        });
      }
      error_code ignored;
      s.set_option(tcp::no_delay(true), ignored);
      const auto id = ++next_id;
      asio::post(w.context(), [&w, s = std::move(s), id]() mutable { w.adopt(std::move(s), id); });
      accept_next();
    });
  };
  accept_next();

  asio::signal_set signals(main_ioc, SIGINT, SIGTERM);
  asio::steady_timer hard_stop(main_ioc);
  int signal_count = 0;
  std::function<void()> wait_signal = [&] {
    signals.async_wait([&](error_code ec, int signo) {
      if (ec) return;
      if (++signal_count == 1) {
        spdlog::info("signal {}: no new connections; draining open ones for up to {}ms", signo,
                     cfg.drain_timeout.count());
        error_code ignored;
        acceptor.close(ignored);
        accept_retry.cancel();
        for (auto& w : workers) asio::post(w->context(), [&w, &cfg] { w->drain(cfg.drain_timeout); });
        // Responses get the drain timeout, close handshakes their own timeout; past both, stop regardless.
        hard_stop.expires_after(cfg.drain_timeout + cfg.dialer.handshake_timeout + std::chrono::seconds(1));
        hard_stop.async_wait([&](error_code e) {
          if (e) return;
          spdlog::warn("drain did not finish in time: closing everything now");
          for (auto& w : workers) w->stop();
        });
        wait_signal();
      } else {
        spdlog::warn("signal {} again: closing everything now", signo);
        for (auto& w : workers) w->stop();
        signals.cancel();
      }
    });
  };
  wait_signal();

  // The main context ends when the listener is closed and the signal wait is cancelled.
  std::thread main_thread([&] { main_ioc.run(); });
  for (auto& t : threads) t.join();
  asio::post(main_ioc, [&] {
    signals.cancel();
    hard_stop.cancel();
  });
  main_thread.join();
  spdlog::info("stopped");
  return 0;
}

}  // namespace kws::proxy
