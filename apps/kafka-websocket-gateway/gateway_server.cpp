#include "gateway_server.hpp"

#include "cluster_dial.hpp"
#include "node_table.hpp"

#include "cli.hpp"
#include "events.hpp"
#include "handshakes.hpp"
#include "health.hpp"
#include "metrics.hpp"
#include "monitoring.hpp"
#include "proxy_header.hpp"
#include "reload.hpp"
#include "runtime.hpp"

#include <kws/accept_loop.hpp>
#include <kws/address.hpp>
#include <kws/detail/shared_slot.hpp>
#include <kws/errc.hpp>
#include <kws/host_port.hpp>
#include <kws/kafka/metadata.hpp>
#include <kws/kafka/sasl.hpp>
#include <kws/kafka/tracker.hpp>
#include <kws/tls_socket.hpp>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>

#include <atomic>
#include <map>
#include <mutex>
#include <optional>

namespace kws::gateway {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using clock = std::chrono::steady_clock;

// Whether a bootstrap server answers a TCP connect (and with --upstream-tls, a TLS handshake), checked at
// most every 2 s: GET /healthz on the WebSocket port, and /readyz on the metrics port.
app::cached_check::probe_function bootstrap_probe(std::vector<upstream> bootstrap,
                                                  std::chrono::milliseconds timeout, upstream_tls tls) {
  return [bootstrap = std::move(bootstrap), timeout, tls](const asio::any_io_executor& ex,
                                                          std::function<void(app::check_result)> done) {
    async_connect_any(ex, bootstrap, timeout, tls, [done](connect_result result) {
      done({!result.ec, result.ec ? "no bootstrap server of the cluster is reachable (" + result.why() + ")"
                                  : std::string()});
    });
  };
}

// The gateway's own metrics, in the registry of the ones it shares with the proxy: handshakes refused and
// timed out.
struct handshake_metrics {
  explicit handshake_metrics(prometheus::Registry& r)
      : refused(
            prometheus::BuildCounter()
                .Name("kws_handshakes_refused_total")
                .Help("Sockets closed as they were accepted, by the bound they were over: --max-handshakes "
                      "(limit) or --max-handshakes-per-address (per_address)")
                .Register(r)),
        refused_over_limit(refused.Add({{"reason", "limit"}})),
        refused_over_per_address(refused.Add({{"reason", "per_address"}})),
        timed_out(
            prometheus::BuildCounter()
                .Name("kws_handshakes_timed_out_total")
                .Help("Handshakes (TLS, HTTP request, decision, upgrade) not done within --handshake-timeout")
                .Register(r)
                .Add({})) {}
  prometheus::Family<prometheus::Counter>& refused;
  prometheus::Counter& refused_over_limit;
  prometheus::Counter& refused_over_per_address;
  prometheus::Counter& timed_out;
};

// What every session shares.
struct shared {
  const gateway_config& cfg;
  std::vector<upstream> bootstrap;
  upstream_tls tls;
  kws::accept_config accept;
  node_table nodes;
  app::cached_check health;
  std::shared_ptr<const kafka::tracker_config> tracking;
  // Brokers by host name (Host, SNI): the advertised host when it holds {node_id}.
  host_pattern names{};
  // The tokens in use: replaced whole by a reload, read by each handshake.
  kws::detail::shared_slot<const token_set> tokens{std::make_shared<const token_set>(cfg.tokens)};
  // Upgraded connections, under --max-connections. Shared with the sessions, which may be destroyed after
  // this struct when the runtime goes.
  std::shared_ptr<std::atomic<std::size_t>> active = std::make_shared<std::atomic<std::size_t>>(0);
  std::shared_ptr<handshake_limits> handshakes =
      handshake_limits::create(cfg.max_handshakes, cfg.max_handshakes_per_address);
  handshake_tally tally{cfg.max_handshakes, cfg.max_handshakes_per_address, cfg.accept.handshake_timeout};
  // Counts a refused or timed-out handshake for the summary line; any thread.
  std::function<void(handshake_tally::event, const std::string& address)> note_handshake{};
  app::server_metrics metrics{};
  handshake_metrics handshake_counts{metrics.registry()};
  bool metrics_on = false;            // relays and trackers count only when the endpoint is there to show it
  std::atomic<bool> draining{false};  // from the first SIGINT/SIGTERM on
};

constexpr const char* draining_text = "draining: the gateway is shutting down";

// One client: the upgrade (with the access checks and the routing decision), the connection to the broker,
// and a relay between them.
class session : public app::drainable, public std::enable_shared_from_this<session> {
 public:
  session(app::worker& w, shared& sh, tcp::socket socket, std::uint64_t id,
          handshake_limits::ticket handshake, std::string peer_address)
      : worker_(w),
        sh_(sh),
        socket_(std::move(socket)),
        id_(id),
        peer_(app::peer_of(socket_)),
        peer_address_(std::move(peer_address)),
        handshake_(std::move(handshake)),
        active_(sh.active) {}
  ~session() override { release_slot(); }

  void start() {
    if (!sh_.cfg.proxy_protocol) return accept_upgrade();
    app::async_read_proxy_header(
        socket_, sh_.accept.handshake_timeout,
        [self = shared_from_this()](app::proxy_header_read r) { self->proxy_header_read(std::move(r)); });
  }

  void drain(std::chrono::milliseconds timeout) override {
    draining_ = true;
    if (relay_) relay_->drain(timeout);
  }

  // Before the relay starts no open line was logged, so none is owed a closed line.
  void stop_now(const std::string& why) override {
    draining_ = true;
    if (relay_) relay_->stop_now(why);
  }

 private:
  // --proxy-protocol: from here on the client is the header's, and the load balancer is `lb`.
  void proxy_header_read(app::proxy_header_read r) {
    if (!r.error.empty()) {
      app::log_event(r.silent ? spdlog::level::debug : spdlog::level::warn, {.conn = id_,
                                                                             .event = "closed",
                                                                             .fields = {{"peer", peer_}},
                                                                             .end = "bad_proxy_header",
                                                                             .side = "client",
                                                                             .cause = r.error});
      return finish();
    }
    rare().lb = peer_;
    peer_ = app::endpoint_string(r.client);
    peer_address_ = address_text(r.client.address());
    if (sh_.handshakes->place(handshake_, r.client.address()) != handshake_limits::verdict::admitted) {
      sh_.handshake_counts.refused_over_per_address.Increment();
      sh_.note_handshake(handshake_tally::event::refused_over_per_address, peer_address_);
      return finish();
    }
    accept_upgrade();
  }

  void accept_upgrade() {
    auto accept = sh_.accept;
    if (rare_ && !rare_->lb.empty()) accept.peer = peer_;
    kws::async_accept(
        std::move(socket_), accept,
        [self = shared_from_this()](const kws::http_request_info& req,
                                    std::function<void(kws::accept_decision)> done) {
          self->decide(req, std::move(done));
        },
        [self = shared_from_this()](error_code ec, kws::connection c, kws::http_request_info req) {
          self->accepted(ec, std::move(c), req);
        });
  }

  bool shutting_down() const { return draining_ || sh_.draining.load(std::memory_order_acquire); }

  // Takes a place under --max-connections, unless they are all taken.
  bool take_slot() {
    auto n = active_->load();
    do {
      if (n >= sh_.cfg.max_connections) return false;
    } while (!active_->compare_exchange_weak(n, n + 1));
    slot_ = true;
    return true;
  }

  void release_slot() {
    if (slot_) --*active_;
    slot_ = false;
  }

  // The place is taken with the decision, so that handshakes decided at the same time cannot overshoot it.
  void upgrade(std::function<void(kws::accept_decision)>& done) {
    if (!take_slot()) return refuse(done, 503, "too many connections");
    auto d = kws::accept_decision::upgrade();
    if (answer_kafka_) d.headers.emplace_back("Sec-WebSocket-Protocol", "kafka");
    done(std::move(d));
  }

  void refuse(std::function<void(kws::accept_decision)>& done, int status, std::string why,
              std::vector<std::pair<std::string, std::string>> headers = {}) {
    rare().refused_status = status;
    rare().refusal = why;
    auto d = kws::accept_decision::respond(status, why + "\n");
    d.headers = std::move(headers);
    done(std::move(d));
  }

  void decide(const kws::http_request_info& req, std::function<void(kws::accept_decision)> done) {
    target_ = app::printable(req.target);
    if (!req.client_subject.empty()) rare().subject = app::printable(req.client_subject);
    if (!req.websocket_upgrade) {
      if (req.method == "GET" && req.target.substr(0, req.target.find('?')) == "/healthz") {
        health_probe_ = true;
        if (shutting_down())
          return done(kws::accept_decision::respond(503, std::string(draining_text) + "\n"));
        return sh_.health.check(worker_.context().get_executor(), [done](app::check_result r) {
          done(r.ok
                   ? kws::accept_decision::respond(200, "ok\n")
                   : kws::accept_decision::respond(503, "no bootstrap server of the cluster is reachable\n"));
        });
      }
      rare().refused_status = 426;
      rare().refusal = "plain HTTP without a WebSocket upgrade";
      return done(kws::accept_decision::upgrade());  // a non-upgrade request gets 426
    }
    // Accepted before the listener closed: told to go elsewhere, with Connection: close.
    if (shutting_down()) return refuse(done, 503, draining_text);
    // With two, which one a check would read is a guess; an intermediary may have read the other.
    for (const auto& [name, label] :
         {std::pair{"authorization", "Authorization"}, std::pair{"origin", "Origin"}}) {
      const auto n =
          std::count_if(req.headers.begin(), req.headers.end(),
                        [name = std::string_view(name)](const auto& h) { return h.first == name; });
      if (n > 1) return refuse(done, 400, fmt::format("more than one {} header", label));
    }
    if (!origin_allowed(sh_.cfg.allowed_origins, req.header("origin"))) {
      return refuse(done, 403, "origin " + app::printable(*req.header("origin")) + " is not allowed");
    }
    const auto offer = parse_subprotocols(req.headers);
    if (!offer.error.empty()) return refuse(done, 400, offer.error);
    const auto* auth = req.header("authorization");
    // Like two headers: which one counts would be a guess.
    if (auth && offer.bearer)
      return refuse(done, 400, "a bearer token both in Authorization and in a subprotocol");
    answer_kafka_ = offer.kafka;
    if (const auto tokens = sh_.tokens.load(); !tokens->empty()) {
      const bool given = auth || offer.bearer;
      if (!given || !(auth ? tokens->allows(*auth) : tokens->allows_token(*offer.bearer))) {
        return refuse(done, 401, given ? "the bearer token is not valid" : "a bearer token is required",
                      {{"WWW-Authenticate", "Bearer realm=\"kafka-websocket-gateway\""}});
      }
    }
    const auto routed = route_request(sh_.names, req.target, req.header("host"), req.server_name);
    if (!routed.to) return refuse(done, routed.status, app::printable(routed.why));
    const auto& r = routed.to;
    if (!r->bootstrap) node_ = std::to_string(r->node_id);
    if (r->bootstrap) {
      targets_ = sh_.bootstrap;
      return upgrade(done);
    }
    if (auto u = sh_.nodes.find(r->node_id)) {
      targets_ = {*u};
      return upgrade(done);
    }
    // Not seen on this gateway yet (clients may have bootstrapped through another replica): ask the cluster.
    sh_.nodes.refresh(
        worker_.context().get_executor(), [self = shared_from_this(), done, node = r->node_id]() mutable {
          if (auto u = self->sh_.nodes.find(node)) {
            self->targets_ = {*u};
            return self->upgrade(done);
          }
          if (auto failure = self->sh_.nodes.last_failure(); !failure.empty()) {
            return self->refuse(done, 502,
                                fmt::format("cannot learn which broker node id {} is: {}", node, failure));
          }
          self->refuse(done, 404, fmt::format("the cluster has no broker with node id {}", node));
        });
  }

  void accepted(error_code ec, kws::connection conn, const kws::http_request_info& req) {
    handshake_.release();
    if (ec == boost::beast::error::timeout) {
      sh_.handshake_counts.timed_out.Increment();
      sh_.note_handshake(handshake_tally::event::timed_out, peer_address_);
    } else if (!req.tls_failure.empty() && !sh_.cfg.client_ca_file.empty()) {
      // With client certificates required, a refused handshake is an access decision: said, like a 401.
      app::log_event(spdlog::level::warn, {.conn = id_,
                                           .event = "closed",
                                           .fields = {{"peer", peer_}},
                                           .end = "tls_failed",
                                           .side = "client",
                                           .cause = req.tls_failure});
      return finish();
    }
    if (ec == kws::errc::upgrade_declined) {
      if (health_probe_) return finish();
      app::log_event(
          spdlog::level::info,
          {.conn = id_,
           .event = "refused",
           .fields = client_fields({{"target", target_}, {"status", std::to_string(rare().refused_status)}}),
           .end = "refused",
           .cause = rare().refusal});
      return finish();
    }
    if (ec) {
      app::log_event(spdlog::level::debug, {.conn = id_,
                                            .fields = {{"peer", peer_}},
                                            .end = "no_handshake",
                                            .side = "client",
                                            .cause = "no WebSocket handshake: " + ec.message()});
      return finish();
    }
    client_ = std::move(conn);
    opened_ = true;
    sh_.metrics.connection_opened();
    sh_.metrics.dial_started();
    async_connect_any(worker_.context().get_executor(), std::move(targets_), sh_.cfg.connect_timeout, sh_.tls,
                      [self = shared_from_this(), started = clock::now()](connect_result r) {
                        self->count_dial(r.ec, started);
                        self->connected(std::move(r));
                      });
  }

  void connected(connect_result r) {
    if (r.ec || draining_) {
      app::log_event(spdlog::level::warn,
                     {.conn = id_,
                      .event = "closed",
                      .fields = client_fields({{"target", target_}}),
                      .end = draining_ ? "shut_down" : "cluster_unreachable",
                      .side = draining_ ? "" : "broker",
                      .cause = draining_ ? std::string("shutting down") : "cluster unreachable: " + r.why()});
      client_.async_close(kws::close_code::try_again_later,
                          [self = shared_from_this()](error_code) { self->finish(); });
      return;
    }
    upstream_ = std::move(r.to);
    std::vector<std::pair<std::string_view, std::string>> fields{{"target", target_}};
    if (!node_.empty()) fields.emplace_back("node", node_);
    fields.emplace_back("upstream", upstream_.text());
    app::log_event(spdlog::level::info,
                   {.conn = id_, .event = "open", .fields = client_fields(std::move(fields))});
    if (r.socket) return start_relay(std::move(*r.socket));
    start_relay(std::move(r.tls));
  }

  // The relay to the broker over `broker`: a plain socket, or a TLS one (--upstream-tls); reconnects go the
  // same way, to the same broker (upstream_).
  template <class Socket>
  void start_relay(Socket broker) {
    auto options = sh_.cfg.relay;
    if (sh_.metrics_on) options.counters = sh_.metrics.relay_counters();
    options.log = app::connection_log(id_);
    options.min_log_level = static_cast<kws::log_level>(std::min<int>(spdlog::get_level(), 4));
    std::weak_ptr<session> weak = shared_from_this();
    relay_ = kws::relay::create(
        std::move(client_), std::move(broker), std::move(options),
        std::make_shared<kafka::tracker>(sh_.tracking),
        [self = shared_from_this()](const kws::relay_report& r) {
          self->sh_.metrics.relay_ended(r);
          auto e = app::relay_closed_event(self->id_, r);
          e.fields = self->client_fields({{"upstream", self->upstream_.text()}});
          if (r.error == kws::errc::unusable_response)
            e.cause += " (--no-rewrite passes responses unchanged)";
          app::log_event(r.error ? spdlog::level::warn : spdlog::level::info, e);
          asio::post(self->worker_.context(), [self] { self->finish(); });
        },
        // Kafka brokers close idle connections (connections.max.idle.ms); the client need not notice.
        // Only the weak reference is captured: the std::function then holds 16 bytes, for as long as the
        // connection lives.
        [weak](std::function<void(error_code, Socket)> done) {
          auto self = weak.lock();
          if (!self) return;
          self->sh_.metrics.dial_started();
          async_connect_any(self->worker_.context().get_executor(), {self->upstream_},
                            self->sh_.cfg.connect_timeout, self->sh_.tls,
                            [done, ex = self->worker_.context().get_executor(), weak,
                             started = clock::now()](connect_result r) {
                              auto self = weak.lock();
                              if (self) self->count_dial(r.ec, started);
                              if (r.ec) {
                                // The relay's closed line gives the error code; a TLS failure's reason is
                                // said here.
                                if (self && !r.failure.empty())
                                  app::log_event(spdlog::level::warn,
                                                 {.conn = self->id_, .cause = r.failure});
                                if constexpr (std::is_same_v<Socket, tcp::socket>) {
                                  return done(r.ec, tcp::socket(ex));
                                } else {
                                  return done(r.ec, Socket());
                                }
                              }
                              if constexpr (std::is_same_v<Socket, tcp::socket>) {
                                done(r.ec, std::move(*r.socket));
                              } else {
                                done(r.ec, std::move(r.tls));
                              }
                            });
        });
    relay_->start();
  }

  // peer=, then `more`, then (with a client certificate) subject=, for the connection's lines.
  std::vector<std::pair<std::string_view, std::string>> client_fields(
      std::vector<std::pair<std::string_view, std::string>> more) const {
    more.insert(more.begin(), {"peer", peer_});
    if (rare_ && !rare_->lb.empty()) more.insert(more.begin() + 1, {"lb", rare_->lb});
    if (rare_ && !rare_->subject.empty()) more.emplace_back("subject", rare_->subject);
    return more;
  }

  void count_dial(const error_code& ec, clock::time_point started) {
    if (!ec) {
      sh_.metrics.dial_succeeded(clock::now() - started);
    } else if (ec != asio::error::operation_aborted) {
      sh_.metrics.dial_failed(ec);
    }
  }

  void finish() {
    if (opened_) sh_.metrics.connection_closed();
    opened_ = false;
    release_slot();
    relay_.reset();
    worker_.forget(shared_from_this());
  }

  app::worker& worker_;
  shared& sh_;
  tcp::socket socket_;
  std::uint64_t id_;
  std::string peer_;
  std::string peer_address_;            // without the port, for the handshake summary
  handshake_limits::ticket handshake_;  // until the handshake ends
  std::shared_ptr<std::atomic<std::size_t>> active_;
  std::string target_;
  upstream upstream_;  // the broker connected to (and reconnected to)
  std::string node_;   // the node id the path or the host name picked; empty: a bootstrap server
  // What most connections never set, held apart and made when first set, so that the session stays within
  // 432 bytes: jemalloc's 448-byte class, which no short-lived allocation of a connection's setup shares. In
  // the 640-byte class it shared with coroutine frames and the handshake's stream, those left its slabs
  // more than half empty once thousands of connections had opened at once.
  struct rare_fields {
    std::string lb;       // --proxy-protocol: the load balancer's address
    std::string subject;  // the client certificate's subject (--client-ca-file), if any
    std::string refusal;  // why the handshake was answered with refused_status
    int refused_status = 0;
  };
  std::unique_ptr<rare_fields> rare_;
  rare_fields& rare() {
    if (!rare_) rare_ = std::make_unique<rare_fields>();
    return *rare_;
  }
  bool slot_ = false;  // holds a place under --max-connections
  bool health_probe_ = false;
  bool answer_kafka_ = false;  // the client offered the kafka subprotocol: the 101 names it
  bool draining_ = false;
  bool opened_ = false;  // counted as an open connection
  std::vector<upstream> targets_;
  kws::connection client_;
  std::shared_ptr<kws::relay> relay_;
};

// A session past 432 bytes moves to the 512- or 640-byte allocation class, where a connection's short-lived
// setup allocations leave holes: see the comment on its rarely set fields.
static_assert(sizeof(session) <= 432, "keep the session within jemalloc's 448-byte class");

// The advertised host for one broker: `{node_id}` in it becomes the broker's node id.
std::string advertised_host_of(const std::string& pattern, std::int32_t node_id) {
  std::string out = pattern;
  for (auto at = out.find("{node_id}"); at != std::string::npos; at = out.find("{node_id}", at))
    out.replace(at, 9, std::to_string(node_id));
  return out;
}

bool is_unspecified(const std::string& host) {
  error_code ec;
  const auto a = asio::ip::make_address(host, ec);
  return host.empty() || (!ec && a.is_unspecified());
}

}  // namespace

int run(const gateway_config& cfg) {
  if (cfg.upstreams.empty()) throw std::invalid_argument("no --upstream given");
  std::vector<upstream> bootstrap;
  for (const auto& u : cfg.upstreams) bootstrap.push_back(parse_upstream(u));

  app::runtime rt(cfg.threads, cfg.drain_timeout);
  tcp::acceptor acceptor(rt.main_context());
  app::open_listener(acceptor, cfg.listen_host, cfg.port);
  const auto bound = acceptor.local_endpoint();

  kws::accept_config accept = cfg.accept;
  accept.server_name = "kafka-websocket-gateway";
  // Certificates, the client CA and tokens are read again on SIGHUP and when their files change, watched from
  // here on.
  app::reloader reloading(rt.main_context());
  if (!cfg.tls_cert.empty()) {
    accept.tls = kws::make_server_tls_context(cfg.tls_cert, cfg.tls_key);  // throws naming the file
    if (!cfg.client_ca_file.empty()) kws::require_client_certificates(*accept.tls, cfg.client_ca_file);
    reloading.add(
        cfg.client_ca_file.empty() ? "--tls-cert/--tls-key" : "--tls-cert/--tls-key/--client-ca-file",
        {cfg.tls_cert, cfg.tls_key, cfg.client_ca_file},
        [&] { kws::reload_server_tls_context(*accept.tls, cfg.tls_cert, cfg.tls_key, cfg.client_ca_file); });
  }

  const std::string advertise_host = !cfg.advertise_host.empty()        ? cfg.advertise_host
                                     : !is_unspecified(cfg.listen_host) ? cfg.listen_host
                                                                        : std::string("localhost");
  const std::int32_t advertise_port = cfg.advertise_port != 0 ? cfg.advertise_port : bound.port();

  auto tracking = std::make_shared<kafka::tracker_config>();
  tracking->rewrite = cfg.rewrite;
  upstream_tls tls;
  if (cfg.upstream_tls) {
    // Throws naming the file.
    tls.material = std::make_shared<kws::reloadable_client_tls>(cfg.upstream_tls_files);
    tls.insecure = cfg.upstream_insecure;
    const auto& f = cfg.upstream_tls_files;
    if (!f.ca_file.empty() || !f.cert_file.empty()) {
      reloading.add(f.cert_file.empty() ? "--upstream-ca-file"
                    : f.ca_file.empty() ? "--upstream-cert/--upstream-key"
                                        : "--upstream-ca-file/--upstream-cert/--upstream-key",
                    {f.ca_file, f.cert_file, f.key_file}, [material = tls.material] { material->reload(); });
    }
  }
  shared sh{cfg,
            bootstrap,
            tls,
            accept,
            node_table(bootstrap, cfg.connect_timeout, tls, cfg.upstream_sasl),
            app::cached_check(bootstrap_probe(bootstrap, cfg.connect_timeout, tls)),
            tracking};
  if (!cfg.upstream_sasl_file.empty()) {
    reloading.add("--upstream-sasl-file", {cfg.upstream_sasl_file},
                  [&] { sh.nodes.set_credentials(load_upstream_credentials(cfg.upstream_sasl_file)); });
  }
  sh.names = host_pattern(advertise_host);
  if (!cfg.token_file.empty()) {
    reloading.add("--auth-token-file", {cfg.token_file}, [&] {
      sh.tokens.store(std::make_shared<const token_set>(token_set::from_file(cfg.token_file)));
    });
  }
  sh.metrics_on = !cfg.metrics_listen.empty();
  if (sh.metrics_on) tracking->observer = sh.metrics.request_observer();
  if (cfg.rewrite) {
    tracking->map = [&sh, advertise_host, advertise_port](const kafka::advertised_broker& b, error_code&) {
      sh.nodes.learn(b.node_id, b.host, b.port);
      return std::optional<kafka::broker_endpoint>(
          kafka::broker_endpoint{advertised_host_of(advertise_host, b.node_id), advertise_port});
    };
  }

  std::string upstream_list;
  for (const auto& u : bootstrap) upstream_list += (upstream_list.empty() ? "" : ",") + u.text();
  spdlog::info(
      "listening on {} ({}{}) upstream={}{} lookup_auth={} advertise={}:{} threads={} auth={} origins={} "
      "max_connections={} "
      "max_handshakes={} max_handshakes_per_address={}",
      app::endpoint_string(bound),
      !accept.tls                  ? "ws"
      : cfg.client_ca_file.empty() ? "wss"
                                   : "wss, client certificates required",
      cfg.proxy_protocol ? ", PROXY protocol header required" : "", upstream_list,
      !tls.material                              ? ""
      : tls.insecure                             ? " (tls, not verified)"
      : cfg.upstream_tls_files.cert_file.empty() ? " (tls)"
                                                 : " (tls, client certificate)",
      cfg.upstream_sasl ? fmt::format("{}:{}", kafka::sasl::mechanism_name(cfg.upstream_sasl->which),
                                      cfg.upstream_sasl->username)
                        : std::string("none"),
      advertise_host, advertise_port, rt.threads(),
      cfg.client_ca_file.empty() ? (cfg.tokens.empty() ? "none" : "bearer")
                                 : (cfg.tokens.empty() ? "certificate" : "certificate+bearer"),
      cfg.allowed_origins.empty() ? std::string("any")
                                  : fmt::format("{}", fmt::join(cfg.allowed_origins, ",")),
      cfg.max_connections, cfg.max_handshakes, cfg.max_handshakes_per_address);

  if (tls.insecure)
    spdlog::warn(
        "--upstream-insecure: the cluster's TLS certificates and host names are not verified (testing only)");

  // Refused and timed-out handshakes: one summary a second at most, a second after the first of them. At
  // shutdown what is counted is told at once, and so is anything counted later, so that no timer holds the
  // main context open.
  asio::steady_timer summary_timer(rt.main_context());
  bool shutting_down = false;  // main thread only
  const auto tell_handshakes = [&sh] {
    for (const auto& line : sh.tally.take()) spdlog::info("{}", line);
  };
  sh.note_handshake = [&](handshake_tally::event e, const std::string& address) {
    if (!sh.tally.add(e, address)) return;
    asio::post(rt.main_context(), [&] {
      if (shutting_down) return tell_handshakes();
      summary_timer.expires_after(std::chrono::seconds(1));
      summary_timer.async_wait([&](error_code ec) {
        if (!ec) tell_handshakes();
      });
    });
  };
  sh.metrics.scraped().add_gauge_function(
      "kws_handshakes_in_progress", "Handshakes under way (sockets accepted, not yet upgraded or answered)",
      {}, [limits = sh.handshakes] { return static_cast<double>(limits->in_progress()); });

  std::uint64_t next_id = 0;
  // Each socket is accepted onto the next worker's context; one accept is in flight at a time, so `next` is
  // the worker of the socket that comes.
  app::worker* next = nullptr;
  kws::accept_loop accepting(
      acceptor,
      [&] {
        next = &rt.next_worker();
        return asio::any_io_executor(next->context().get_executor());
      },
      [&](tcp::socket s) {
        auto& w = *next;
        error_code ignored, pec;
        const auto peer = s.remote_endpoint(pec);
        if (pec) {
          s.close(ignored);  // the client is gone already
          return;
        }
        // Over a handshake bound: closed before any byte is read, and told in the summary line.
        handshake_limits::ticket ticket;
        // Behind --proxy-protocol the socket's peer is the load balancer: the client's own bound waits for
        // the header.
        const auto verdict = cfg.proxy_protocol ? sh.handshakes->admit_unaddressed(ticket)
                                                : sh.handshakes->admit(peer.address(), ticket);
        if (verdict != handshake_limits::verdict::admitted) {
          const bool total = verdict == handshake_limits::verdict::over_limit;
          (total ? sh.handshake_counts.refused_over_limit : sh.handshake_counts.refused_over_per_address)
              .Increment();
          sh.note_handshake(total ? handshake_tally::event::refused_over_limit
                                  : handshake_tally::event::refused_over_per_address,
                            address_text(peer.address()));
          s.close(ignored);
          return;
        }
        const auto id = ++next_id;
        app::tune_client_socket(s, cfg.client_socket);
        app::log_event(spdlog::level::debug,
                       {.conn = id, .event = "accepted", .fields = {{"peer", app::endpoint_string(peer)}}});
        asio::post(w.context(), [&w, &sh, s = std::move(s), id, ticket = std::move(ticket),
                                 address = address_text(peer.address())]() mutable {
          auto sess =
              std::make_shared<session>(w, sh, std::move(s), id, std::move(ticket), std::move(address));
          w.adopt(sess);
          sess->start();
        });
      },
      kws::accept_loop_options{.name = "listener " + app::endpoint_string(bound),
                               .log = app::log_to_spdlog()});
  // After the line above: tests take the first "listening on" line for the WebSocket port.
  std::unique_ptr<app::monitoring_endpoint> monitoring;
  if (sh.metrics_on) {
    const auto where = app::parse_listen_address(cfg.metrics_listen);
    if (!where)
      throw std::invalid_argument("--metrics-listen: expected ADDRESS:PORT, got " + cfg.metrics_listen);
    monitoring = std::make_unique<app::monitoring_endpoint>(
        rt.main_context(), *where,
        app::monitoring_endpoint::handlers{[&sh] { return sh.metrics.render(); },
                                           [&sh, &rt](std::function<void(app::check_result)> done) {
                                             if (rt.draining()) return done({false, draining_text});
                                             sh.health.check(rt.main_context().get_executor(),
                                                             std::move(done));
                                           }});
    monitoring->start();
  }
  reloading.count_in(sh.metrics.registry());
  reloading.start();
  accepting.start();
  rt.on_shutdown([&] {
    error_code ignored;
    sh.draining.store(true, std::memory_order_release);
    reloading.stop();
    acceptor.close(ignored);
    accepting.stop();
    shutting_down = true;
    summary_timer.cancel();
    tell_handshakes();
  });
  // /readyz answers 503 through the drain, until the last connection is done.
  rt.on_stopped([&] {
    if (monitoring) monitoring->stop();
  });
  return rt.run();
}

}  // namespace kws::gateway
