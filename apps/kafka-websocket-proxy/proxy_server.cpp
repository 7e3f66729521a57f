#include "proxy_server.hpp"

#include "broker_directory.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_set>
#include <vector>

#include <ifaddrs.h>
#include <netinet/in.h>
#include <unistd.h>

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

// One client connection: dial the route's broker (with retries), then hand both ends to a relay; dial again
// (with the same retries) when the relay asks for it after the broker closed between requests.
class session : public std::enable_shared_from_this<session> {
 public:
  session(worker& w, tcp::socket client, std::uint64_t id, std::shared_ptr<const route> r);
  void start();
  void drain(std::chrono::milliseconds timeout);

 private:
  using dial_done = std::function<void(error_code, kws::connection)>;
  void dial(dial_done done);
  void attempt(std::shared_ptr<dial_done> done);
  void start_relay(kws::connection conn);
  void finish();
  // " via=proxy:port" when the broker is reached through a forward proxy, for the log lines.
  std::string via_field() const { return via_.empty() ? std::string() : " via=" + via_; }

  worker& worker_;
  tcp::socket client_;
  std::uint64_t id_;
  std::shared_ptr<const route> route_;
  std::string client_name_;
  int attempt_ = 0;
  std::chrono::milliseconds backoff_;
  asio::steady_timer timer_;
  std::shared_ptr<kws::relay> relay_;
  bool draining_ = false;
  std::string via_;  // the forward proxy of the last dial (host:port), or empty
};

class worker {
 public:
  worker(const proxy_config& cfg, const kws::dialer& d, std::shared_ptr<const kafka::tracker_config> tracking)
      : cfg_(cfg),
        tracking_(std::move(tracking)),
        dialer_(d.rebind(ioc_.get_executor())),
        guard_(ioc_.get_executor()) {}

  asio::io_context& context() { return ioc_; }
  const proxy_config& config() const { return cfg_; }
  const std::shared_ptr<const kafka::tracker_config>& tracking() const { return tracking_; }
  kws::dialer& dialer() { return dialer_; }

  void adopt(tcp::socket s, std::uint64_t id, std::shared_ptr<const route> r) {
    auto sess = std::make_shared<session>(*this, std::move(s), id, std::move(r));
    sessions_.insert(sess);
    sess->start();
  }
  void forget(const std::shared_ptr<session>& s) { sessions_.erase(s); }

  // Called on this worker's thread once the listeners are closed.
  void drain(std::chrono::milliseconds timeout) {
    // Copy: a session may finish (and erase itself) inside drain.
    auto all = std::vector<std::shared_ptr<session>>(sessions_.begin(), sessions_.end());
    for (auto& s : all) s->drain(timeout);
    guard_.reset();  // run() returns once the last session is gone
  }

  void run() { ioc_.run(); }
  void stop() { ioc_.stop(); }

 private:
  asio::io_context ioc_{1};
  const proxy_config& cfg_;
  std::shared_ptr<const kafka::tracker_config> tracking_;
  kws::dialer dialer_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::unordered_set<std::shared_ptr<session>> sessions_;
};

session::session(worker& w, tcp::socket client, std::uint64_t id, std::shared_ptr<const route> r)
    : worker_(w),
      client_(std::move(client)),
      id_(id),
      route_(std::move(r)),
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
  auto info = std::make_shared<kws::dial_info>();
  auto& info_ref = *info;
  worker_.dialer().async_dial(
      route_->url, info_ref, [self = shared_from_this(), done, info](error_code ec, kws::connection c) {
        const auto& cfg = self->worker_.config();
        self->via_ = info->via;
        // The dialer's sentence names the forward proxy and what it answered; the error code alone cannot.
        const std::string why = info->failure.empty() ? ec.message() : info->failure;
        if (!ec && self->draining_) {
          c.abort();
          ec = asio::error::operation_aborted;
        }
        if (ec && self->attempt_ <= cfg.dial_retries && !self->draining_ &&
            ec != kws::errc::invalid_address) {
          spdlog::debug("conn {} dial attempt {} failed: {}; retrying in {}ms", self->id_, self->attempt_,
                        why, self->backoff_.count());
          self->timer_.expires_after(self->backoff_);
          self->backoff_ *= 2;
          return self->timer_.async_wait([self, done](error_code e) {
            if (e || self->draining_) return (*done)(asio::error::operation_aborted, kws::connection{});
            self->attempt(done);
          });
        }
        if (ec && ec != asio::error::operation_aborted && !self->relay_) {
          // A failed reconnect is reported by the relay's own closing line.
          spdlog::warn("conn {} closed client={} broker={}{}: dial failed after {} attempt(s): {}", self->id_,
                       self->client_name_, self->route_->url, self->via_field(), self->attempt_, why);
        }
        (*done)(ec, std::move(c));
      });
}

void session::start_relay(kws::connection conn) {
  const auto& cfg = worker_.config();
  const std::string url = conn.url();
  spdlog::info("conn {} open client={} broker={}{}", id_, client_name_, url, via_field());
  auto options = cfg.relay;
  options.log = [id = id_](kws::log_level level, std::string_view text) {
    spdlog::log(static_cast<spdlog::level::level_enum>(level), "conn {} {}", id, text);
  };
  options.min_log_level = static_cast<kws::log_level>(std::min<int>(spdlog::get_level(), 4));
  std::weak_ptr<session> weak = shared_from_this();
  relay_ = kws::relay::create(
      std::move(client_), std::move(conn), std::move(options),
      std::make_shared<kafka::tracker>(worker_.tracking()),
      [self = shared_from_this(), url](const kws::relay_report& r) {
        const auto level = r.error ? spdlog::level::warn : spdlog::level::info;
        spdlog::log(level,
                    "conn {} closed client={} broker={}{} up={}B/{}f down={}B/{}f duration={} cause={}",
                    self->id_, self->client_name_, url, self->via_field(), r.up_bytes, r.up_frames,
                    r.down_bytes, r.down_frames, human_duration(r.duration), r.cause);
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

// Names and addresses that reach this machine, to recognise a broker that advertises the proxy itself.
std::vector<std::string> local_names(const std::string& listen_host) {
  std::vector<std::string> out;
  if (!listen_host.empty()) out.push_back(listen_host);
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) == 0 && name[0] != '\0') out.emplace_back(name);
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) == 0) {
    for (auto* i = list; i; i = i->ifa_next) {
      if (!i->ifa_addr) continue;
      if (i->ifa_addr->sa_family == AF_INET) {
        const auto* a = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
        asio::ip::address_v4::bytes_type b;
        std::memcpy(b.data(), &a->sin_addr, b.size());
        out.push_back(asio::ip::address_v4(b).to_string());
      } else if (i->ifa_addr->sa_family == AF_INET6) {
        const auto* a = reinterpret_cast<const sockaddr_in6*>(i->ifa_addr);
        asio::ip::address_v6::bytes_type b;
        std::memcpy(b.data(), &a->sin6_addr, b.size());
        out.push_back(asio::ip::address_v6(b).to_string());
      }
    }
    ::freeifaddrs(list);
  }
  return out;
}

bool is_unspecified(const std::string& host) {
  error_code ec;
  const auto a = asio::ip::make_address(host, ec);
  return host.empty() || (!ec && a.is_unspecified());
}

// The listeners and the accept loop. Listeners are opened from any thread (the directory opens one when a
// worker's relay first sees a broker) but accept only on the main context.
class server {
 public:
  server(const proxy_config& cfg) : cfg_(cfg) {}

  int run() {
    // Fail early, and once, on a broker address or template that can never work.
    const auto url = kws::parse_address(cfg_.broker, cfg_.dialer.tls);
    const auto templ = cfg_.broker_url_template.empty() ? kws::url_template::default_for(cfg_.dialer.tls)
                                                        : kws::url_template::parse(cfg_.broker_url_template);
    kws::dialer prototype(asio::system_executor(), cfg_.dialer);

    auto main_route = std::make_shared<route>(route{url.str(), -1, {}, 0});
    auto& main = add_listener(main_route);
    open_listener(main.acceptor, cfg_.listen_host, cfg_.port);
    main_route->port = main.acceptor.local_endpoint().port();

    directory_config dc;
    dc.advertise_host = !cfg_.advertise_host.empty()        ? cfg_.advertise_host
                        : !is_unspecified(cfg_.listen_host) ? cfg_.listen_host
                                                            : std::string("localhost");
    dc.main_port = main_route->port;
    dc.bootstrap_url = url.str();
    dc.bootstrap_host = url.host;
    dc.bootstrap_port = url.port;
    dc.url_template = templ;
    if (cfg_.first_broker_port != 0) {
      dc.first_port = cfg_.first_broker_port;
      dc.last_port = cfg_.last_broker_port;
    } else if (cfg_.port != 0) {
      dc.first_port = static_cast<std::uint16_t>(std::min(65535, cfg_.port + 1));
      dc.last_port = static_cast<std::uint16_t>(std::min(65535, cfg_.port + 100));
    }
    dc.self_hosts = local_names(cfg_.listen_host);
    const auto first = dc.first_port, last = dc.last_port;
    const auto advertise = dc.advertise_host;
    auto directory = std::make_shared<broker_directory>(
        std::move(dc),
        [this](const route& r, std::uint16_t port, error_code& ec) { return open_for(r, port, ec); });

    auto tracking = std::make_shared<kafka::tracker_config>();
    tracking->rewrite = cfg_.rewrite;
    tracking->api = cfg_.broker_api;
    if (cfg_.rewrite) {
      tracking->map = [directory](const kafka::advertised_broker& b, error_code& ec) {
        return directory->map(b, ec);
      };
    }

    for (unsigned i = 0; i < std::max(1u, cfg_.threads); ++i)
      workers_.push_back(std::make_unique<worker>(cfg_, prototype, tracking));
    std::vector<std::thread> threads;
    for (auto& w : workers_) threads.emplace_back([&w] { w->run(); });

    spdlog::info("listening on {} broker={} threads={} max_frame_bytes={} rewrite={}{}{}",
                 endpoint_string(main.acceptor.local_endpoint()), url.str(), workers_.size(),
                 cfg_.relay.max_frame_bytes, cfg_.rewrite ? "on" : "off",
                 cfg_.rewrite ? " advertise=" + advertise : std::string(),
                 cfg_.rewrite ? (first ? fmt::format(" broker_ports={}-{}", first, last)
                                       : std::string(" broker_ports=any"))
                              : std::string());
    log_forward_proxy(prototype, url.str());
    if (cfg_.broker_api == kafka::broker_api::kafka_0_8)
      spdlog::info("broker api 0.8: ApiVersions v1+ answered by the proxy, v0 dropped as the broker would");

    accept_next(main);
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

 private:
  struct listener {
    listener(asio::io_context& ioc, std::shared_ptr<const route> r)
        : acceptor(ioc), retry(ioc), r(std::move(r)) {}
    tcp::acceptor acceptor;
    asio::steady_timer retry;
    std::shared_ptr<const route> r;
  };

  // Which forward proxy the brokers are reached through, host and port only: the URLs may hold credentials.
  void log_forward_proxy(const kws::dialer& d, const std::string& broker_url) const {
    const auto& fp = cfg_.dialer.forward_proxy;
    if (fp.empty()) {
      spdlog::info("forward proxy: none ({})", cfg_.forward_proxy_origin);
      return;
    }
    const auto name = [](const std::string& url) {
      error_code ec;
      const auto p = kws::parse_proxy_url(url, ec);
      return url.empty() || ec ? std::string("direct") : "via " + p.authority();
    };
    const auto via = d.via(broker_url);
    const auto no_proxy = kws::no_proxy_list::parse(fp.no_proxy);
    spdlog::info("forward proxy ({}): ws:// {}, wss:// {}, no_proxy='{}'{}; broker {} {}",
                 cfg_.forward_proxy_origin, name(fp.http_proxy), name(fp.https_proxy), fp.no_proxy,
                 fp.direct_loopback && !no_proxy.proxies_loopback() ? ", localhost and loopback direct" : "",
                 broker_url, via.empty() ? std::string("direct") : "via " + via);
    for (const auto& bad : no_proxy.ignored())
      spdlog::warn("NO_PROXY entry '{}' is not a host name, address or CIDR range: ignored", bad);
  }

  listener& add_listener(std::shared_ptr<const route> r) {
    std::lock_guard lock(mu_);
    listeners_.push_back(std::make_unique<listener>(main_ioc_, std::move(r)));
    return *listeners_.back();
  }

  // The directory's opener: binds a listener for a further broker and starts accepting on it.
  std::uint16_t open_for(const route& r, std::uint16_t port, error_code& ec) {
    auto l = std::make_unique<listener>(main_ioc_, nullptr);
    try {
      open_listener(l->acceptor, cfg_.listen_host, port);
    } catch (const boost::system::system_error& e) {
      ec = e.code();
      return 0;
    }
    auto bound = std::make_shared<route>(r);
    bound->port = l->acceptor.local_endpoint().port();
    l->r = bound;
    std::lock_guard lock(mu_);
    listener& ref = *l;
    listeners_.push_back(std::move(l));
    // Shutting down: the port is taken (so that the response can still be rewritten) but nobody is served.
    if (closed_) {
      error_code ignored;
      ref.acceptor.close(ignored);
    } else {
      asio::post(main_ioc_, [this, &ref] { accept_next(ref); });
    }
    return bound->port;
  }

  void accept_next(listener& l) {
    auto& w = *workers_[next_worker_];
    next_worker_ = (next_worker_ + 1) % workers_.size();
    l.acceptor.async_accept(w.context(), [this, &l, &w](error_code ec, tcp::socket s) {
      if (ec == asio::error::operation_aborted || !l.acceptor.is_open()) return;
      if (ec) {
        // Out of descriptors or similar: say so, back off, and keep accepting.
        spdlog::error("accept failed: {}; retrying in 100ms", ec.message());
        l.retry.expires_after(std::chrono::milliseconds(100));
        return l.retry.async_wait([this, &l](error_code e) {
          if (!e) accept_next(l);
        });
      }
      error_code ignored;
      s.set_option(tcp::no_delay(true), ignored);
      const auto id = ++next_id_;
      asio::post(w.context(),
                 [&w, s = std::move(s), id, r = l.r]() mutable { w.adopt(std::move(s), id, r); });
      accept_next(l);
    });
  }

  void close_listeners() {
    std::lock_guard lock(mu_);
    closed_ = true;
    for (auto& l : listeners_) {
      error_code ignored;
      l->acceptor.close(ignored);
      l->retry.cancel();
    }
  }

  void wait_signal() {
    signals_.async_wait([this](error_code ec, int signo) {
      if (ec) return;
      if (++signal_count_ == 1) {
        spdlog::info("signal {}: no new connections; draining open ones for up to {}ms", signo,
                     cfg_.drain_timeout.count());
        close_listeners();
        for (auto& w : workers_) asio::post(w->context(), [&w, this] { w->drain(cfg_.drain_timeout); });
        // Responses get the drain timeout, close handshakes their own timeout; past both, stop regardless.
        hard_stop_.expires_after(cfg_.drain_timeout + cfg_.dialer.handshake_timeout +
                                 std::chrono::seconds(1));
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

  const proxy_config& cfg_;
  asio::io_context main_ioc_{1};
  std::vector<std::unique_ptr<worker>> workers_;
  std::mutex mu_;  // guards listeners_ and closed_
  std::vector<std::unique_ptr<listener>> listeners_;
  bool closed_ = false;
  std::size_t next_worker_ = 0;
  std::uint64_t next_id_ = 0;
  asio::signal_set signals_{main_ioc_, SIGINT, SIGTERM};
  asio::steady_timer hard_stop_{main_ioc_};
  int signal_count_ = 0;
};

}  // namespace

int run(const proxy_config& cfg) {
  server s(cfg);
  return s.run();
}

}  // namespace kws::proxy
