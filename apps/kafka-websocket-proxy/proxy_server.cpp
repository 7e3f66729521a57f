#include "proxy_server.hpp"

#include "broker_directory.hpp"
#include "cli.hpp"
#include "events.hpp"
#include "metrics.hpp"
#include "monitoring.hpp"
#include "proxy_header.hpp"
#include "reload.hpp"
#include "runtime.hpp"
#include "upgrade_headers.hpp"

#include <kws/accept.hpp>
#include <kws/accept_loop.hpp>
#include <kws/errc.hpp>
#include <kws/tls_socket.hpp>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
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
using clock = std::chrono::steady_clock;

// One client connection: dial the route's broker (with retries), then hand both ends to a relay; dial again
// (with the same retries) when the relay asks for it after the broker closed between requests.
class session : public app::drainable, public std::enable_shared_from_this<session> {
 public:
  session(app::worker& w, const proxy_config& cfg, const kws::dialer& prototype,
          std::shared_ptr<const kafka::tracker_config> tracking, tcp::socket client, std::uint64_t id,
          std::shared_ptr<const route> r, std::shared_ptr<std::atomic<std::size_t>> active,
          app::server_metrics& metrics, std::shared_ptr<asio::ssl::context> client_tls);
  ~session() override { release_slot(); }
  void start();
  void drain(std::chrono::milliseconds timeout) override;
  void stop_now(const std::string& why) override;

 private:
  using dial_done = std::function<void(error_code, kws::connection)>;
  void dial(dial_done done);
  void attempt();
  void complete_dial(error_code ec, kws::connection c);
  // Frees this connection's place under --max-connections, once: when it is reported closed.
  void release_slot() {
    if (!counted_) return;
    counted_ = false;
    --*active_;
    metrics_.connection_closed();
  }
  std::string failure_summary() const;
  // --proxy-protocol: the header first; its client is the one the lines name.
  void proxy_header_read(app::proxy_header_read r);
  // The client's TLS handshake when the listeners serve TLS, then begin().
  void start_client();
  // After the client's TLS handshake (when the listeners serve TLS): the broker's dial.
  void begin();
  // The client's TCP socket, under TLS or not.
  tcp::socket& client_socket() {
    return tls_ && tls_->socket.is_open() ? tls_->socket.next_layer() : client_;
  }
  // The load balancer's and forward proxy's names, made when the first is set.
  struct rare_names {
    std::string lb;   // --proxy-protocol: the load balancer's address
    std::string via;  // the forward proxy of the last dial (host:port), or empty
  };
  rare_names& names() {
    if (!names_) names_ = std::make_unique<rare_names>();
    return *names_;
  }
  void watch_client();
  void start_relay(kws::connection conn);
  template <class Client>
  void run_relay(Client client, kws::connection conn, const std::string& url);
  kafka::api_verdict_handler verdict_logger() const;
  void finish();
  // A shutdown ends a first dial still under way: the dial is given up with a closed line.
  void give_up_dial(const std::string& why);
  // " via=proxy:port" when the broker is reached through a forward proxy, for the log lines.
  // client=, broker= and (through a forward proxy) via=, for the connection's lines.
  std::vector<std::pair<std::string_view, std::string>> endpoint_fields(const std::string& broker) const {
    std::vector<std::pair<std::string_view, std::string>> f{{"client", client_name_}};
    if (names_ && !names_->lb.empty()) f.emplace_back("lb", names_->lb);
    f.emplace_back("broker", broker);
    if (names_ && !names_->via.empty()) f.emplace_back("via", names_->via);
    if (tls_ && !tls_->subject.empty()) f.emplace_back("subject", tls_->subject);
    return f;
  }

  std::shared_ptr<std::atomic<std::size_t>> active_;
  app::server_metrics& metrics_;
  app::worker& worker_;
  const proxy_config& cfg_;
  kws::dialer dialer_;
  std::shared_ptr<const kafka::tracker_config> tracking_;
  tcp::socket client_;
  // TLS towards the client, only when the listeners serve it. What a plain connection does not use is held
  // apart (here and in names_), so that the session stays within 432 bytes: jemalloc's 448-byte class,
  // which no short-lived allocation of a connection's setup shares (in the 640-byte class it used to share,
  // those left its slabs 40 % empty once thousands of connections had opened at once).
  struct tls_state {
    std::shared_ptr<asio::ssl::context> context;
    kws::tls_socket socket;  // after the TLS handshake
    std::string subject;     // the client certificate's subject, if any
  };
  std::unique_ptr<tls_state> tls_;
  std::uint64_t id_;
  std::shared_ptr<const route> route_;
  std::string client_name_;
  int attempt_ = 0;
  bool counted_ = true;  // (the flags sit in the int's padding)
  bool draining_ = false;
  std::chrono::steady_clock::time_point attempt_started_{};
  std::chrono::milliseconds backoff_;
  // The dial's retry timer and the watch on the client while dialling: made when first needed and dropped
  // once the relay runs, so that an established connection does not carry them.
  std::unique_ptr<asio::steady_timer> timer_;
  std::unique_ptr<asio::steady_timer> watch_;
  asio::steady_timer& timer() {
    if (!timer_) timer_ = std::make_unique<asio::steady_timer>(worker_.context());
    return *timer_;
  }
  void cancel_timers() {
    if (timer_) timer_->cancel();
    if (watch_) watch_->cancel();
  }
  std::shared_ptr<dial_done> pending_;  // the dial under way, until it completes or is given up
  std::vector<std::string> failures_;   // each failed attempt's error
  std::shared_ptr<kws::relay> relay_;
  std::chrono::steady_clock::time_point started_at_ = clock::now();
  std::unique_ptr<rare_names> names_;
};

// A session past 432 bytes moves to the 512- or 640-byte allocation class, where a connection's short-lived
// setup allocations leave holes: see the comment on its rarely set fields.
static_assert(sizeof(session) <= 432, "keep the session within jemalloc's 448-byte class");

session::session(app::worker& w, const proxy_config& cfg, const kws::dialer& prototype,
                 std::shared_ptr<const kafka::tracker_config> tracking, tcp::socket client, std::uint64_t id,
                 std::shared_ptr<const route> r, std::shared_ptr<std::atomic<std::size_t>> active,
                 app::server_metrics& metrics, std::shared_ptr<asio::ssl::context> client_tls)
    : active_(std::move(active)),
      metrics_(metrics),
      worker_(w),
      cfg_(cfg),
      dialer_(prototype.rebind(w.context().get_executor())),
      tracking_(std::move(tracking)),
      client_(std::move(client)),
      tls_(client_tls ? new tls_state{std::move(client_tls), {}, {}} : nullptr),
      id_(id),
      route_(std::move(r)),
      client_name_(app::peer_of(client_)),
      backoff_(cfg.dial_backoff) {
  ++*active_;
  metrics_.connection_opened();
}

void session::start() {
  if (!cfg_.proxy_protocol) return start_client();
  app::async_read_proxy_header(
      client_, cfg_.dialer.handshake_timeout,
      [self = shared_from_this()](app::proxy_header_read r) { self->proxy_header_read(std::move(r)); });
}

void session::proxy_header_read(app::proxy_header_read r) {
  if (!r.error.empty()) {
    app::log_event(r.silent ? spdlog::level::debug : spdlog::level::warn,
                   {.conn = id_,
                    .event = "closed",
                    .fields = {{"client", client_name_}},
                    .end = "bad_proxy_header",
                    .side = "client",
                    .cause = r.error});
    return finish();
  }
  names().lb = client_name_;
  client_name_ = app::endpoint_string(r.client);
  start_client();
}

void session::start_client() {
  if (!tls_) return begin();
  kws::tls_handshake_options o;
  o.side = kws::tls_handshake_options::role::server;
  o.host = client_name_;
  o.timeout = cfg_.dialer.handshake_timeout;
  o.peer_name = "the client";
  kws::async_tls_handshake(std::move(client_), tls_->context, std::move(o),
                           [self = shared_from_this()](error_code ec, kws::tls_socket s, std::string why) {
                             if (ec) {
                               app::log_event(spdlog::level::warn,
                                              {.conn = self->id_,
                                               .event = "closed",
                                               .fields = {{"client", self->client_name_}},
                                               .end = "tls_failed",
                                               .side = "client",
                                               .cause = why});
                               return self->finish();
                             }
                             self->tls_->socket = std::move(s);
                             self->tls_->subject = self->tls_->socket.peer_subject();
                             self->begin();
                           });
}

void session::begin() {
  watch_client();
  dial([self = shared_from_this()](error_code ec, kws::connection conn) {
    if (ec) return self->finish();
    self->start_relay(std::move(conn));
  });
}

// Dials until it works, the retries are spent, the client leaves or a drain begins; `done` runs once.
void session::dial(dial_done done) {
  attempt_ = 0;
  backoff_ = cfg_.dial_backoff;
  failures_.clear();
  pending_ = std::make_shared<dial_done>(std::move(done));
  attempt();
}

void session::complete_dial(error_code ec, kws::connection c) {
  if (!pending_) return c.abort();  // the dial was given up meanwhile
  auto done = std::move(pending_);
  (*done)(ec, std::move(c));
}

void session::attempt() {
  ++attempt_;
  attempt_started_ = std::chrono::steady_clock::now();
  metrics_.dial_started();
  auto info = std::make_shared<kws::dial_info>();
  auto& info_ref = *info;
  dialer_.async_dial(
      route_->url, info_ref, [self = shared_from_this(), info](error_code ec, kws::connection c) {
        const auto& cfg = self->cfg_;
        if (!ec) {
          self->metrics_.dial_succeeded(std::chrono::steady_clock::now() - self->attempt_started_);
        } else if (ec != asio::error::operation_aborted) {
          self->metrics_.dial_failed(ec);
        }
        if (!self->pending_) return c.abort();
        if (self->names_ || !info->via.empty()) self->names().via = info->via;
        // The dialer's sentence names the forward proxy and what it answered; the error code alone cannot.
        const std::string why = info->failure.empty() ? ec.message() : info->failure;
        if (!ec && self->draining_) {
          c.abort();
          ec = asio::error::operation_aborted;
        }
        if (ec && ec != asio::error::operation_aborted) self->failures_.push_back(why);
        if (ec && self->attempt_ <= cfg.dial_retries && !self->draining_ &&
            ec != kws::errc::invalid_address) {
          app::log_event(spdlog::level::debug,
                         {.conn = self->id_,
                          .cause = fmt::format("dial attempt {} failed: {}; retrying in {}ms", self->attempt_,
                                               why, self->backoff_.count())});
          self->timer().expires_after(self->backoff_);
          self->backoff_ *= 2;
          return self->timer().async_wait([self](error_code e) {
            if (!self->pending_) return;
            if (e || self->draining_)
              return self->complete_dial(asio::error::operation_aborted, kws::connection{});
            self->attempt();
          });
        }
        if (ec && ec != asio::error::operation_aborted && !self->relay_) {
          // A failed reconnect is reported by the relay's own closing line.
          app::log_event(spdlog::level::warn,
                         {.conn = self->id_,
                          .event = "closed",
                          .fields = self->endpoint_fields(self->route_->url),
                          .end = "dial_failed",
                          .side = "broker",
                          .cause = fmt::format("dial failed after {} attempt(s): {}", self->attempt_,
                                               self->failure_summary())});
        }
        self->complete_dial(ec, std::move(c));
      });
}

// "Connection refused (2x), Operation timed out": every attempt's error, repeats counted.
std::string session::failure_summary() const {
  std::string out;
  for (std::size_t i = 0; i < failures_.size();) {
    std::size_t n = 1;
    while (i + n < failures_.size() && failures_[i + n] == failures_[i]) ++n;
    if (!out.empty()) out += ", ";
    out += failures_[i] + (n > 1 ? " (" + std::to_string(n) + "x)" : std::string());
    i += n;
  }
  return out;
}

// While the first dial runs nobody reads the client; a client that gives up meanwhile (kcat's connect
// timeout, say) must not keep the proxy dialling a hung broker for it.
void session::watch_client() {
  if (!watch_) watch_ = std::make_unique<asio::steady_timer>(worker_.context());
  watch_->expires_after(std::chrono::milliseconds(250));
  watch_->async_wait([self = shared_from_this()](error_code ec) {
    if (ec || !self->pending_ || self->relay_) return;
    if (!app::peer_has_closed(self->client_socket())) return self->watch_client();
    app::log_event(
        spdlog::level::info,
        {.conn = self->id_,
         .event = "closed",
         .fields = {{"client", self->client_name_}, {"broker", self->route_->url}},
         .end = "closed",
         .side = "client",
         .cause = fmt::format("the client left while the broker was being dialled ({} attempt(s){}{})",
                              self->attempt_, self->failures_.empty() ? "" : ": ", self->failure_summary())});
    if (self->timer_) self->timer_->cancel();
    self->complete_dial(asio::error::operation_aborted, kws::connection{});
  });
}

void session::start_relay(kws::connection conn) {
  const std::string url = conn.url();
  app::log_event(spdlog::level::info, {.conn = id_, .event = "open", .fields = endpoint_fields(url)});
  if (tls_ && tls_->socket.is_open()) {
    run_relay(std::move(tls_->socket), std::move(conn), url);
  } else {
    run_relay(std::move(client_), std::move(conn), url);
  }
  // Waits still pending on them complete with operation_aborted and find the relay there.
  timer_.reset();
  watch_.reset();
}

template <class Client>
void session::run_relay(Client client, kws::connection conn, const std::string& url) {
  const auto& cfg = cfg_;
  auto options = cfg.relay;
  if (!cfg.metrics_listen.empty()) options.counters = metrics_.relay_counters();
  options.log = app::connection_log(id_);
  options.min_log_level = static_cast<kws::log_level>(std::min<int>(spdlog::get_level(), 4));
  std::weak_ptr<session> weak = shared_from_this();
  relay_ = kws::relay::create(
      std::move(client), std::move(conn), std::move(options),
      std::make_shared<kafka::tracker>(tracking_, route_->url, verdict_logger()),
      [self = shared_from_this(), url](const kws::relay_report& r) {
        self->release_slot();
        self->metrics_.relay_ended(r);
        auto e = app::relay_closed_event(self->id_, r);
        e.fields = self->endpoint_fields(url);
        if (r.error == kws::errc::unusable_response) e.cause += " (--no-rewrite passes responses unchanged)";
        if (r.error == kws::errc::tls_on_kafka_port) {
          e.cause +=
              ": set security.protocol=PLAINTEXT/SASL_PLAINTEXT, or run the proxy with "
              "--client-tls-cert/--client-tls-key";
        }
        if (r.error == kws::errc::http_on_kafka_port) {
          e.cause +=
              ": this port speaks the Kafka protocol; point Kafka clients at it, and HTTP or WebSocket "
              "clients at the broker's URL";
        }
        app::log_event(r.error ? spdlog::level::warn : spdlog::level::info, e);
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

// One info line for the first verdict on a broker URL; debug lines for the connections that follow it.
kafka::api_verdict_handler session::verdict_logger() const {
  return [id = id_, url = route_->url, wait = cfg_.api_versions_timeout,
          limit = kafka::request_limit(*tracking_, kafka::broker_api::kafka_0_8)](kafka::api_verdict v) {
    app::connection_event e{.conn = id,
                            .event = "broker_api",
                            .fields = {{"broker", url}, {"api", "0.8"}, {"verdict", "detected"}}};
    if (v == kafka::api_verdict::remembered) {
      e.fields.back().second = "remembered";
      e.cause = "broker taken for Kafka 0.8 earlier: ApiVersions answered by the proxy from the start";
      return app::log_event(spdlog::level::debug, e);
    }
    e.cause = fmt::format(
        "the broker left ApiVersions unanswered for {}: taken for Kafka 0.8 for the rest of this process "
        "(ApiVersions answered by the proxy, {} request(s) in flight per connection); --broker-api 0.8 "
        "skips the wait",
        app::format_duration(wait), limit);
    if (v == kafka::api_verdict::detected_again) e.fields.back().second = "detected_again";
    app::log_event(v == kafka::api_verdict::detected ? spdlog::level::info : spdlog::level::debug, e);
  };
}

void session::drain(std::chrono::milliseconds timeout) {
  draining_ = true;
  cancel_timers();
  if (relay_) return relay_->drain(timeout);
  give_up_dial("shut down while the broker was being dialled");
}

void session::stop_now(const std::string& why) {
  draining_ = true;
  cancel_timers();
  if (relay_) return relay_->stop_now(why);
  give_up_dial(why + " while the broker was being dialled");
}

void session::give_up_dial(const std::string& why) {
  if (!pending_) return;
  app::log_event(spdlog::level::info, {.conn = id_,
                                       .event = "closed",
                                       .fields = endpoint_fields(route_->url),
                                       .counts = app::connection_event::traffic{},
                                       .duration = clock::now() - started_at_,
                                       .end = "shut_down",
                                       .cause = why});
  // The dial itself ends by its own timeout; its connection is dropped then.
  complete_dial(asio::error::operation_aborted, kws::connection{});
}

void session::finish() {
  release_slot();
  error_code ignored;
  client_.close(ignored);
  if (tls_) tls_->socket.close();
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
  explicit server(const proxy_config& cfg) : cfg_(cfg), rt_(cfg.threads, cfg.drain_timeout) {}

  int run() {
    // Fail early, and once, on a broker address or template that can never work.
    const auto url = kws::parse_address(cfg_.broker, cfg_.dialer.tls);
    const auto templ = cfg_.broker_url_template.empty() ? kws::url_template::default_for(cfg_.dialer.tls)
                                                        : kws::url_template::parse(cfg_.broker_url_template);
    // Throws naming the CA, certificate or key file that cannot be used.
    prototype_.emplace(asio::system_executor(), cfg_.dialer);
    // What the dial side reads from files is read again on SIGHUP and when a file changes, watched from here
    // on; every worker's dialer is a rebind of this one and sees the result at its next dial.
    if (!cfg_.dialer.ca_file.empty() || !cfg_.dialer.cert_file.empty()) {
      std::string what = "--ca-file";
      std::vector<std::string> files{cfg_.dialer.ca_file};
      if (!cfg_.dialer.cert_file.empty()) {
        what = cfg_.dialer.ca_file.empty() ? "--cert/--key" : "--ca-file/--cert/--key";
        files.push_back(cfg_.dialer.cert_file);
        files.push_back(cfg_.dialer.key_file);
      }
      reloading_.add(std::move(what), std::move(files), [this] { prototype_->reload_tls_files(); });
    }
    if (!cfg_.header_files.empty()) {
      reloading_.add("--header-file", cfg_.header_files, [this] {
        prototype_->set_headers(collect_headers(cfg_.fixed_headers, cfg_.header_files));
      });
    }

    if (!cfg_.client_tls_cert.empty()) {
      // Throws naming the file that cannot be loaded.
      client_tls_ = kws::make_server_tls_context(cfg_.client_tls_cert, cfg_.client_tls_key);
      if (!cfg_.client_ca_file.empty()) kws::require_client_certificates(*client_tls_, cfg_.client_ca_file);
      // Read again on SIGHUP and when a file changes, watched from here on.
      reloading_.add(cfg_.client_ca_file.empty() ? "--client-tls-cert/--client-tls-key"
                                                 : "--client-tls-cert/--client-tls-key/--client-ca-file",
                     {cfg_.client_tls_cert, cfg_.client_tls_key, cfg_.client_ca_file}, [this] {
                       kws::reload_server_tls_context(*client_tls_, cfg_.client_tls_cert, cfg_.client_tls_key,
                                                      cfg_.client_ca_file);
                     });
    }

    auto main_route = std::make_shared<route>(route{url.str(), -1, {}, 0});
    auto& main = add_listener(main_route);
    app::open_listener(main.acceptor, cfg_.listen_host, cfg_.port);
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
    dc.ports_by_node_id = cfg_.ports_by_node_id;
    const auto first = dc.first_port, last = dc.last_port;
    const auto advertise = dc.advertise_host;
    auto directory = std::make_shared<broker_directory>(
        std::move(dc),
        [this](const route& r, std::uint16_t port, error_code& ec) { return open_for(r, port, ec); });
    if (cfg_.bind_broker_ports_at_start) {
      if (!broker_directory::names_brokers_by_node_id_alone(templ))
        throw std::runtime_error(
            "--bind-broker-ports-at-start needs a --broker-url-template that names a broker "
            "by {node_id} alone (no {host} or {port}), got '" +
            templ.str() + "'");
      error_code ec;
      directory->open_all(ec);
      if (ec) throw boost::system::system_error(ec, "binding --broker-ports at start");
      spdlog::info("listening on ports {}-{} for node ids 0-{}, each dialling {}", first, last, last - first,
                   templ.str());
    }

    auto tracking = std::make_shared<kafka::tracker_config>();
    tracking->rewrite = cfg_.rewrite;
    tracking->api = cfg_.broker_api;
    tracking->broker_max_in_flight = cfg_.broker_max_in_flight;
    tracking->api_versions_timeout = cfg_.api_versions_timeout;
    tracking->verdicts = std::make_shared<kafka::api_verdicts>();
    if (cfg_.rewrite) {
      tracking->map = [directory](const kafka::advertised_broker& b, error_code& ec) {
        return directory->map(b, ec);
      };
    }
    if (!cfg_.metrics_listen.empty()) {
      tracking->observer = metrics_.request_observer();
      metrics_.scraped().add_gauge_function(
          "kws_brokers_detected_kafka_0_8",
          "proxy only: broker URLs taken for Kafka 0.8 because they left ApiVersions unanswered", {},
          [v = tracking->verdicts] { return static_cast<double>(v->size()); });
    }
    tracking_ = tracking;

    spdlog::info("listening on {}{}{} broker={} threads={} max_frame_bytes={} rewrite={}{}{}",
                 app::endpoint_string(main.acceptor.local_endpoint()),
                 !client_tls_                  ? ""
                 : cfg_.client_ca_file.empty() ? " (tls)"
                                               : " (tls, client certificates required)",
                 cfg_.proxy_protocol ? " (PROXY protocol header required)" : "", url.str(), rt_.threads(),
                 cfg_.relay.max_frame_bytes, cfg_.rewrite ? "on" : "off",
                 cfg_.rewrite ? " advertise=" + advertise : std::string(),
                 cfg_.rewrite ? (first ? fmt::format(" broker_ports={}-{}{}", first, last,
                                                     cfg_.ports_by_node_id ? " (by node id)" : "")
                                       : std::string(" broker_ports=any"))
                              : std::string());
    log_forward_proxy(*prototype_, url.str());
    if (cfg_.broker_api == kafka::broker_api::kafka_0_8)
      spdlog::info("broker api 0.8: ApiVersions v1+ answered by the proxy, v0 dropped as the broker would");
    if (const auto limit = kafka::request_limit(*tracking); limit < tracking->max_in_flight)
      spdlog::info(
          "at most {} request(s) in flight to the broker per client connection; later ones wait in "
          "order (--broker-max-in-flight)",
          limit);

    if (!cfg_.metrics_listen.empty()) start_monitoring(url.str());
    reloading_.count_in(metrics_.registry());
    reloading_.start();
    start_accepting(main);
    rt_.on_shutdown([this] {
      reloading_.stop();
      close_listeners();
    });
    // /readyz answers 503 through the drain, until the last connection is done.
    rt_.on_stopped([this] {
      if (monitoring_) monitoring_->stop();
    });
    return rt_.run();
  }

 private:
  struct listener {
    listener(asio::io_context& ioc, std::shared_ptr<const route> r) : acceptor(ioc), r(std::move(r)) {}
    tcp::acceptor acceptor;
    std::shared_ptr<const route> r;
    std::unique_ptr<kws::accept_loop> loop;  // once it accepts
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

  // /metrics, /healthz, and /readyz: ready while the broker answers a WebSocket upgrade, asked at most every
  // 2 s. That dial is not counted in the metrics: they describe the clients' connections.
  void start_monitoring(const std::string& broker_url) {
    const auto where = app::parse_listen_address(cfg_.metrics_listen);
    if (!where)
      throw std::invalid_argument("--metrics-listen: expected ADDRESS:PORT, got " + cfg_.metrics_listen);
    readiness_ = std::make_unique<app::cached_check>(
        [this, broker_url](const asio::any_io_executor& ex, std::function<void(app::check_result)> done) {
          auto info = std::make_shared<kws::dial_info>();
          auto& info_ref = *info;
          prototype_->rebind(ex).async_dial(
              broker_url, info_ref, [done, info, broker_url](error_code ec, kws::connection c) {
                if (ec) {
                  return done({false, "broker " + broker_url + ": " +
                                          (info->failure.empty() ? ec.message() : info->failure)});
                }
                auto conn = std::make_shared<kws::connection>(std::move(c));
                conn->async_close(kws::close_code::normal, [conn](error_code) {});
                done({true, {}});
              });
        });
    monitoring_ = std::make_unique<app::monitoring_endpoint>(
        rt_.main_context(), *where,
        app::monitoring_endpoint::handlers{[this] { return metrics_.render(); },
                                           [this](std::function<void(app::check_result)> done) {
                                             if (rt_.draining())
                                               return done({false, "draining: the proxy is shutting down"});
                                             readiness_->check(rt_.main_context().get_executor(),
                                                               std::move(done));
                                           }});
    monitoring_->start();
  }

  listener& add_listener(std::shared_ptr<const route> r) {
    std::lock_guard lock(mu_);
    listeners_.push_back(std::make_unique<listener>(rt_.main_context(), std::move(r)));
    return *listeners_.back();
  }

  // The directory's opener, on the worker whose response first names a further broker: socket, bind and
  // listen (non-blocking system calls on an IP address, no name lookup) before it returns, so that the port
  // the response is about to carry already completes connects in the kernel's backlog; accepting starts on
  // the main context, which is the only place the acceptor is used from then on.
  std::uint16_t open_for(const route& r, std::uint16_t port, error_code& ec) {
    auto l = std::make_unique<listener>(rt_.main_context(), nullptr);
    try {
      app::open_listener(l->acceptor, cfg_.listen_host, port);
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
      asio::post(rt_.main_context(), [this, &ref] { start_accepting(ref); });
    }
    return bound->port;
  }

  // On the main context. Each socket is accepted onto the next worker's context (one accept is in flight on
  // a listener at a time, so `next` is the worker of the socket that comes).
  void start_accepting(listener& l) {
    auto next = std::make_shared<app::worker*>(nullptr);
    l.loop = std::make_unique<kws::accept_loop>(
        l.acceptor,
        [this, next] {
          *next = &rt_.next_worker();
          return asio::any_io_executor((*next)->context().get_executor());
        },
        [this, &l, next](tcp::socket s) {
          auto& w = **next;
          const auto id = ++next_id_;
          if (active_->load() >= cfg_.max_connections) return refuse(s, id);
          app::tune_client_socket(s, cfg_.client_socket);
          app::log_event(spdlog::level::debug,
                         {.conn = id,
                          .event = "accepted",
                          .fields = {{"client", app::peer_of(s)}, {"listener", std::to_string(l.r->port)}}});
          asio::post(w.context(), [this, &w, s = std::move(s), id, r = l.r]() mutable {
            auto sess = std::make_shared<session>(w, cfg_, *prototype_, tracking_, std::move(s), id, r,
                                                  active_, metrics_, client_tls_);
            w.adopt(sess);
            sess->start();
          });
        },
        kws::accept_loop_options{.name = "listener " + std::to_string(l.r->port),
                                 .log = app::log_to_spdlog()});
    l.loop->start();
  }

  // Over --max-connections: closed at once (not queued), with a log line at most once a second.
  void refuse(tcp::socket& s, std::uint64_t id) {
    ++refused_;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_refusal_log_ >= std::chrono::seconds(1)) {
      app::log_event(
          spdlog::level::warn,
          {.conn = id,
           .event = "refused",
           .fields = {{"client", app::peer_of(s)}},
           .end = "refused",
           .cause = fmt::format("{} connections open (--max-connections); {} refused since the last "
                                "such line",
                                active_->load(), refused_)});
      refused_ = 0;
      last_refusal_log_ = now;
    }
    error_code ignored;
    s.close(ignored);
  }

  void close_listeners() {
    std::lock_guard lock(mu_);
    closed_ = true;
    for (auto& l : listeners_) {
      error_code ignored;
      l->acceptor.close(ignored);
      if (l->loop) l->loop->stop();
    }
  }

  const proxy_config& cfg_;
  app::server_metrics metrics_;
  app::runtime rt_;
  std::optional<kws::dialer> prototype_;
  std::shared_ptr<asio::ssl::context> client_tls_;  // TLS for Kafka clients; null: plain TCP
  app::reloader reloading_{rt_.main_context()};
  std::shared_ptr<const kafka::tracker_config> tracking_;
  std::mutex mu_;  // guards listeners_ and closed_
  std::vector<std::unique_ptr<listener>> listeners_;
  bool closed_ = false;
  std::uint64_t next_id_ = 0;
  std::shared_ptr<std::atomic<std::size_t>> active_ = std::make_shared<std::atomic<std::size_t>>(0);
  std::uint64_t refused_ = 0;
  std::chrono::steady_clock::time_point last_refusal_log_{};
  std::unique_ptr<app::cached_check> readiness_;
  std::unique_ptr<app::monitoring_endpoint> monitoring_;  // after what its handlers use
};

}  // namespace

int run(const proxy_config& cfg) {
  server s(cfg);
  return s.run();
}

}  // namespace kws::proxy
