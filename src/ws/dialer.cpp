// kws::dialer, and the dial behind it: resolve, connect, (CONNECT through a forward proxy,) (TLS,) the
// WebSocket upgrade, each step bounded by the handshake timeout; then the connection (stream.hpp) is handed
// over. Beast does the HTTP of the CONNECT exchange and of the upgrade.
#include <kws/detail/dial_arena.hpp>
#include "io/cloexec.hpp"
#include "ws/dialer_state.hpp"
#include "ws/stream.hpp"
#include "ws/tls_verify.hpp"

#include <kws/dialer.hpp>
#include <kws/errc.hpp>
#include <kws/forward_proxy.hpp>

#include <boost/algorithm/string/predicate.hpp>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/system/system_error.hpp>

#include <charconv>
#include <chrono>
#include <optional>

namespace kws {
namespace {

std::shared_ptr<detail::dialer_state> make_state(dialer_config config) {
  auto st = std::make_shared<detail::dialer_state>();
  st->config = std::move(config);
  boost::system::error_code ec;
  std::string what;
  st->proxies = forward_proxy_rules::compile(st->config.forward_proxy, ec, &what);
  if (ec) throw boost::system::system_error(ec, what);
  const auto& c = st->config;
  if (c.cert_file.empty() != c.key_file.empty()) {
    throw boost::system::system_error(make_error_code(boost::system::errc::invalid_argument),
                                      c.cert_file.empty()
                                          ? "TLS private key " + c.key_file + " without a certificate"
                                          : "TLS certificate " + c.cert_file + " without a private key");
  }
  // TLS 1.2 or later, the system store or ca_file, the client certificate (kws/tls_socket.hpp).
  st->tls.emplace(tls_client_options{.ca_file = c.ca_file, .cert_file = c.cert_file, .key_file = c.key_file});
  st->headers.store(std::make_shared<const detail::header_list>(c.headers));
  return st;
}

}  // namespace

dialer::dialer(executor_type ex, dialer_config config)
    : ex_(std::move(ex)), state_(make_state(std::move(config))) {}

const dialer_config& dialer::config() const {
  return state_->config;
}

void dialer::reload_tls_files() {
  state_->tls->reload();
}

void dialer::set_headers(std::vector<std::pair<std::string, std::string>> headers) {
  state_->headers.store(std::make_shared<const detail::header_list>(std::move(headers)));
}

std::string dialer::via(std::string_view address) const {
  boost::system::error_code ec;
  const auto url = parse_address(address, state_->config.tls, ec);
  if (ec) return {};
  const auto* p = state_->proxies.for_url(url);
  return p ? p->authority() : std::string();
}

connection dialer::dial(std::string_view address, boost::system::error_code& ec, dial_info* info) {
  // The blocking dial runs the asynchronous one (so that every step is bounded by the handshake timeout) on
  // an io_context of its own, which it drives right here: the caller's context, which other threads may be
  // running or which may be stopped on purpose, is left alone. The connection keeps that context; its
  // blocking reads and writes need nobody to run it.
  auto ctx = std::make_shared<boost::asio::io_context>(1);
  std::optional<connection> result;
  dial_info local;
  rebind(ctx->get_executor())
      .async_dial(std::string(address), info ? *info : local, [&](boost::system::error_code e, connection c) {
        ec = e;
        result.emplace(std::move(c));
      });
  while (!result && ctx->run_one() != 0) {
  }
  if (!result) {
    ec = boost::asio::error::operation_aborted;  // cannot happen: the dial always completes
    return {};
  }
  if (result->impl_) result->impl_->owner = ctx;
  return std::move(*result);
}

connection dialer::dial(std::string_view address) {
  boost::system::error_code ec;
  dial_info info;
  auto c = dial(address, ec, &info);
  if (ec) {
    throw boost::system::system_error(
        ec, "kws::dialer::dial " + std::string(address) + (info.failure.empty() ? "" : ": " + info.failure));
  }
  return c;
}

std::optional<connect_to_rule> parse_connect_to(std::string_view text) {
  // Four fields split at the colons outside brackets.
  std::vector<std::string_view> fields;
  std::size_t start = 0;
  bool bracket = false;
  for (std::size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || (text[i] == ':' && !bracket)) {
      fields.push_back(text.substr(start, i - start));
      start = i + 1;
    } else if (text[i] == '[' || text[i] == ']') {
      bracket = text[i] == '[';
    }
  }
  if (fields.size() != 4) return std::nullopt;
  const auto host = [](std::string_view h) -> std::optional<std::string> {
    if (h.starts_with('[') != h.ends_with(']')) return std::nullopt;
    if (h.starts_with('[')) h = h.substr(1, h.size() - 2);
    if (h.empty() || h.find_first_of("[]/ ") != std::string_view::npos) return std::nullopt;
    return std::string(h);
  };
  const auto port = [](std::string_view p) -> std::optional<std::uint16_t> {
    if (p.empty()) return std::uint16_t{0};
    unsigned v = 0;
    const auto [end, err] = std::from_chars(p.data(), p.data() + p.size(), v);
    if (err != std::errc{} || end != p.data() + p.size() || v == 0 || v > 65535) return std::nullopt;
    return static_cast<std::uint16_t>(v);
  };
  const auto from = host(fields[0]);
  const auto from_port = port(fields[1]);
  const auto to = host(fields[2]);
  const auto to_port = port(fields[3]);
  if (!from || !from_port || !to || !to_port) return std::nullopt;
  return connect_to_rule{*from, *from_port, *to, *to_port};
}

}  // namespace kws

namespace kws::detail {
namespace {

// Largest answer header accepted from a forward proxy; a 407 with its Proxy-Authenticate lines is far
// smaller.
constexpr std::uint32_t max_proxy_header_bytes = 16 * 1024;

// Tries each address in turn, as asio::async_connect does, on a socket opened close-on-exec (see
// io/cloexec.hpp; Asio's own opens one a child process would inherit). Completes with the endpoint connected
// to, or with the last address's error; the stream's deadline passing (or a cancel) ends it at once.
class connect_each_op {
 public:
  connect_each_op(beast::tcp_stream& stream, tcp::resolver::results_type results)
      : stream_(&stream), results_(std::move(results)), it_(results_.begin()) {}

  template <class Self>
  void operator()(Self& self) {
    try_from_here(self);
  }

  template <class Self>
  void operator()(Self& self, error_code ec) {
    if (!ec) return self.complete(ec, it_->endpoint());
    last_ = ec;
    if (ec == beast::error::timeout || ec == asio::error::operation_aborted) return self.complete(ec, {});
    ++it_;
    try_from_here(self);
  }

 private:
  template <class Self>
  void try_from_here(Self& self) {
    for (; it_ != results_.end(); ++it_) {
      error_code ec;
      stream_->socket().close(ec);
      open_cloexec(stream_->socket(), it_->endpoint().protocol(), ec);
      if (!ec) return stream_->async_connect(it_->endpoint(), std::move(self));
      last_ = ec;
    }
    self.complete(last_, {});
  }

  beast::tcp_stream* stream_;
  tcp::resolver::results_type results_;
  tcp::resolver::results_type::const_iterator it_;  // shares the results' storage: valid after a move
  error_code last_ = asio::error::not_found;        // no address at all
};

template <class Handler>
void async_connect_each(beast::tcp_stream& stream, tcp::resolver::results_type results, Handler&& handler) {
  asio::async_compose<Handler, void(error_code, tcp::endpoint)>(connect_each_op(stream, std::move(results)),
                                                                handler, stream);
}

// Resolve, connect, (CONNECT through a forward proxy,) (TLS handshake,) WebSocket upgrade; every step bounded
// by the handshake timeout. Through a proxy, TLS and the upgrade run inside the tunnel and concern the broker
// alone: SNI, certificate and host-name checks use the broker's name, never the proxy's.
template <class NextLayer>
class dial_op {
 public:
  using conn_type = ws_connection<NextLayer>;

  dial_op(std::shared_ptr<const dialer_state> state, ws_url url, std::shared_ptr<conn_type> conn,
          dial_info* info)
      : state_(std::move(state)),
        url_(std::move(url)),
        conn_(std::move(conn)),
        info_(info),
        proxy_(state_->proxies.for_url(url_)) {}

  // Start: resolve the first hop, the forward proxy or the broker.
  template <class Self>
  void operator()(Self& self) {
    deadline_ = std::chrono::steady_clock::now() + state_->config.handshake_timeout;
    if (proxy_ && info_) info_->via = proxy_->authority();
    if (proxy_) return resolve(self, proxy_->host, proxy_->port);
    for (const auto& rule : state_->config.connect_to) {
      if (rule.port != 0 && rule.port != url_.port) continue;
      const bool any_under = rule.host.starts_with("*.");
      if (any_under ? !(url_.host.size() > rule.host.size() - 1 &&
                        boost::algorithm::iends_with(url_.host, std::string_view(rule.host).substr(1)))
                    : !boost::algorithm::iequals(rule.host, url_.host))
        continue;
      return resolve(self, rule.to_host, rule.to_port != 0 ? rule.to_port : url_.port);
    }
    resolve(self, url_.host, url_.port);
  }

  template <class Self>
  void operator()(Self& self, error_code ec, const tcp::resolver::results_type& results) {
    if (ec) {
      return fail(self, proxy_ ? errc::proxy_unreachable : ec,
                  "cannot resolve the forward proxy " + proxy_name() + ": " + ec.message());
    }
    auto& tcp_layer = conn_->tcp();
    tcp_layer.expires_at(deadline_);
    async_connect_each(tcp_layer, results, std::move(self));
  }

  template <class Self>
  void operator()(Self& self, error_code ec, const tcp::endpoint&) {
    if (ec) {
      return fail(self, proxy_ ? errc::proxy_unreachable : ec,
                  "cannot connect to the forward proxy " + proxy_name() + ": " + ec.message());
    }
    error_code ignored;
    conn_->tcp().socket().set_option(tcp::no_delay(true), ignored);
    if (proxy_) return send_connect(self);
    secure(self);
  }

  // The CONNECT request written, or the proxy's answer read.
  template <class Self>
  void operator()(Self& self, error_code ec, std::size_t) {
    if (stage_ == stage::upgrade_write) {
      if (ec) return upgrade_failed(self, ec);
      stage_ = stage::upgrade_read;
      return beast::http::async_read_header(conn_->stream(), conn_->input(), up_->parser, std::move(self));
    }
    if (stage_ == stage::upgrade_read) {
      if (!ec) ec = check_upgrade_answer();
      if (ec) return upgrade_failed(self, ec);
      up_.reset();
      const auto& cfg = state_->config;
      // The closing handshake gets a whole handshake timeout of its own, not what the dial left of it.
      conn_->handshake_done(cfg.idle_timeout, cfg.keepalive_pings, cfg.handshake_timeout);
      return self.complete(ec, connection(std::move(conn_)));
    }
    auto& tcp_layer = conn_->tcp();
    if (stage_ == stage::proxy_write) {
      if (ec) return proxy_failed(self, ec);
      stage_ = stage::proxy_read;
      return beast::http::async_read_header(tcp_layer, tunnel_->buffer, tunnel_->parser, std::move(self));
    }
    if (ec) return proxy_failed(self, ec);
    const auto& res = tunnel_->parser.get();
    const unsigned status = res.result_int();
    const auto answer = std::to_string(status) + " " + printable(res.reason());
    if (auto refused = connect_status_error(status)) {
      std::string why =
          "forward proxy " + proxy_name() + " answered CONNECT " + url_.authority() + " with " + answer;
      if (refused == errc::proxy_auth_required) {
        why += proxy_->has_password ? ": it refused the credentials in the proxy URL"
                                    : ": it wants credentials (user:password@ in the proxy URL)";
      }
      return fail(self, refused, why);
    }
    // The broker speaks only after the client (TLS ClientHello, upgrade request): anything here is not its.
    if (tunnel_->buffer.size() != 0) {
      return fail(self, errc::proxy_bad_response,
                  "forward proxy " + proxy_name() + " sent bytes after its " + answer + " answer to CONNECT");
    }
    tunnel_.reset();
    secure(self);
  }

  // After the TLS handshake.
  template <class Self>
  void operator()(Self& self, error_code ec) {
    if (ec) {
      note_tls_problem(ec);
      return self.complete(ec, connection{});
    }
    upgrade(self);
  }

 private:
  enum class stage { tcp, proxy_write, proxy_read, tls, upgrade_write, upgrade_read };

  // The upgrade request and the parser of its answer, at stable addresses while the operation moves.
  struct upgrade_state {
    beast::http::request<beast::http::empty_body, beast::http::basic_fields<dial_allocator<char>>> request;
    beast::http::response_parser<beast::http::empty_body, dial_allocator<char>> parser;
    std::string key;
  };

  // What the CONNECT exchange needs, kept at stable addresses while the operation moves.
  struct tunnel_state {
    std::string request;
    beast::flat_buffer buffer{max_proxy_header_bytes};
    beast::http::response_parser<beast::http::empty_body> parser;
  };

  std::string proxy_name() const { return proxy_ ? proxy_->authority() : std::string(); }

  // getaddrinfo cannot be interrupted, so the resolve races a timer: at the deadline the dial goes on without
  // it (and fails), and an answer that comes later is dropped.
  // `host` by value: it may be a member of this operation, which moves below.
  template <class Self>
  void resolve(Self& self, std::string host, std::uint16_t port) {
    struct race {
      explicit race(const asio::any_io_executor& ex) : resolver(ex), timer(ex) {}
      tcp::resolver resolver;
      asio::steady_timer timer;
      std::optional<Self> op;
    };
    const asio::any_io_executor ex = conn_->get_executor();
    const auto handler_ex = asio::get_associated_executor(self, ex);
    auto r = std::allocate_shared<race>(dial_allocator<race>(), ex);
    r->timer.expires_at(deadline_);
    const auto service = std::to_string(port);
    // `this` lives inside `self`: nothing of it may be used once `self` has moved.
    r->op.emplace(std::move(self));
    r->timer.async_wait(
        asio::bind_allocator(dial_allocator<void>(), asio::bind_executor(handler_ex, [r](error_code ec) {
                               if (ec || !r->op) return;
                               r->resolver.cancel();
                               auto op = std::move(*r->op);
                               r->op.reset();
                               op(error_code(asio::error::timed_out), tcp::resolver::results_type{});
                             })));
    r->resolver.async_resolve(
        host, service,
        asio::bind_allocator(
            dial_allocator<void>(),
            asio::bind_executor(handler_ex, [r](error_code ec, tcp::resolver::results_type res) {
              r->timer.cancel();
              if (!r->op) return;
              auto op = std::move(*r->op);
              r->op.reset();
              op(ec, res);
            })));
  }

  template <class Self>
  void send_connect(Self& self) {
    stage_ = stage::proxy_write;
    tunnel_ = std::make_unique<tunnel_state>();
    tunnel_->request = connect_request(*proxy_, url_.authority(), state_->config.user_agent);
    tunnel_->parser.header_limit(max_proxy_header_bytes);
    // The answer to CONNECT has no body that matters here; only its header is read.
    tunnel_->parser.skip(true);
    asio::async_write(conn_->tcp(), asio::buffer(tunnel_->request), std::move(self));
  }

  // A failed write or read of the CONNECT exchange, told apart by what the proxy did.
  template <class Self>
  void proxy_failed(Self& self, error_code ec) {
    const auto target = url_.authority();
    if (ec == beast::error::timeout || ec == asio::error::timed_out) {
      return fail(self, errc::proxy_timeout,
                  "forward proxy " + proxy_name() + " did not answer CONNECT " + target + " within " +
                      std::to_string(state_->config.handshake_timeout.count()) + "ms");
    }
    if (ec == asio::error::eof || ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
        ec == beast::http::error::end_of_stream || ec == beast::http::error::partial_message) {
      return fail(
          self, errc::proxy_closed,
          "forward proxy " + proxy_name() + " closed the connection before answering CONNECT " + target);
    }
    if (ec.category() == make_error_code(beast::http::error::bad_version).category()) {
      return fail(self, errc::proxy_bad_response,
                  "forward proxy " + proxy_name() + " answered CONNECT " + target + " with no usable HTTP (" +
                      ec.message() + ")");
    }
    fail(self, ec,
         "forward proxy " + proxy_name() + " failed during CONNECT " + target + ": " + ec.message());
  }

  // OpenSSL's error says only "certificate verify failed": tls_failure says why (expired, self-signed,
  // another host's), which is what an operator needs to fix it.
  void note_tls_problem(error_code ec) {
    if constexpr (std::is_same_v<NextLayer, tls_next>) {
      if (info_) info_->failure = tls_failure(conn_->stream().native_handle(), ec, "the broker", url_.host);
    }
  }

  template <class Self>
  void fail(Self& self, error_code ec, std::string why) {
    if (proxy_ && info_) info_->failure = std::move(why);
    self.complete(ec, connection{});
  }

  template <class Self>
  void secure(Self& self) {
    if constexpr (std::is_same_v<NextLayer, tls_next>) {
      auto& tls = conn_->stream();
      if (auto ec = verify_server(tls.native_handle(), url_.host, state_->config.insecure_skip_verify))
        return self.complete(ec, connection{});
      stage_ = stage::tls;
      return tls.async_handshake(asio::ssl::stream_base::client, std::move(self));
    } else {
      upgrade(self);
    }
  }

  // The WebSocket upgrade (RFC 6455 4.1), still under the dial's deadline on the TCP stream. What follows
  // the answer's header in the read buffer is the broker's first frames: the connection starts from it.
  template <class Self>
  void upgrade(Self& self) {
    namespace http = beast::http;
    stage_ = stage::upgrade_write;
    const auto& cfg = state_->config;
    up_.reset(new (dial_allocator<upgrade_state>().allocate(1)) upgrade_state());
    up_->key = ws::make_key();
    const bool default_port = url_.port == (url_.secure ? 443 : 80);
    const auto authority = url_.authority();
    auto& req = up_->request;
    req.version(11);
    req.method(http::verb::get);
    req.target(url_.target);
    req.set(http::field::host, default_port ? authority.substr(0, authority.rfind(':')) : authority);
    req.set(http::field::upgrade, "websocket");
    req.set(http::field::connection, "Upgrade");
    req.set(http::field::sec_websocket_key, up_->key);
    req.set(http::field::sec_websocket_version, "13");
    req.set(http::field::user_agent, cfg.user_agent);
    const auto headers = state_->headers.load();
    for (const auto& [name, value] : *headers) req.set(name, value);
    up_->parser.get().result(0u);  // stays 0 unless a status line is parsed (the default would be 200)
    http::async_write(conn_->stream(), req, std::move(self));
  }

  error_code check_upgrade_answer() const {
    namespace http = beast::http;
    const auto& res = up_->parser.get();
    if (res.result_int() != 101) return websocket::error::upgrade_declined;
    if (!beast::iequals(res[http::field::upgrade], "websocket"))
      return websocket::error::no_upgrade_websocket;
    if (!http::token_list(res[http::field::connection]).exists("upgrade"))
      return websocket::error::no_connection_upgrade;
    const auto accept = res[http::field::sec_websocket_accept];
    if (accept.empty()) return websocket::error::no_sec_accept;
    if (accept != ws::accept_for(up_->key)) return websocket::error::bad_sec_accept;
    return {};
  }

  template <class Self>
  void upgrade_failed(Self& self, error_code ec) {
    note_upgrade_problem(ec);
    self.complete(ec, connection{});
  }

  // The status line the broker sent (a 404 for a wrong path, a 200 from a plain web server, a 401 without a
  // token) is what an operator needs.
  void note_upgrade_problem(error_code ec) {
    if (!info_ || !up_) return;
    const auto& res = up_->parser.get();
    const auto url = " (" + url_.str() + ")";
    if (ec == beast::error::timeout) {
      info_->failure = "the broker did not answer the WebSocket upgrade within the handshake timeout" + url;
    } else if (ec.category() == beast::http::make_error_code(beast::http::error::bad_version).category()) {
      info_->failure = "the broker's answer to the WebSocket upgrade is not HTTP: " + ec.message() + url;
    } else if (res.result_int() == 101) {
      info_->failure = "the broker's 101 answer to the WebSocket upgrade is unusable: " + ec.message() + url;
    } else if (ec == websocket::error::upgrade_declined && res.result_int() != 0) {
      info_->failure = "the broker answered the WebSocket upgrade with " + std::to_string(res.result_int()) +
                       (res.reason().empty() ? std::string() : " " + printable(res.reason())) + url;
    }
  }

  std::shared_ptr<const dialer_state> state_;
  ws_url url_;
  std::shared_ptr<conn_type> conn_;
  dial_info* info_;
  const proxy_url* proxy_;  // owned by state_
  std::unique_ptr<tunnel_state> tunnel_;
  std::unique_ptr<upgrade_state, dial_delete<upgrade_state>> up_;
  std::chrono::steady_clock::time_point deadline_;
  stage stage_ = stage::tcp;
};

}  // namespace

void async_dial(const std::shared_ptr<const dialer_state>& state, const asio::any_io_executor& ex,
                std::string address, dial_info* info, dial_handler handler) {
  if (info) *info = dial_info{};
  error_code ec;
  auto url = parse_address(address, state->config.tls, ec);
  if (ec) {
    return asio::post(ex, asio::append(std::move(handler).bound(), ec, connection{}));
  }
  const auto max_frame = state->config.max_frame_bytes;
  // The dial's operations take their memory from the dial arena (see dial_arena.hpp).
  if (url.secure) {
    // The context current now; a reload later leaves this connection's alone (its SSL holds a reference).
    const auto tls = state->tls->current();
    auto conn = std::make_shared<ws_connection<tls_next>>(url.str(), max_frame, true, ex, *tls);
    auto h = asio::bind_allocator(dial_allocator<void>(), std::move(handler).bound());
    asio::async_compose<decltype(h), void(error_code, connection)>(
        dial_op<tls_next>(state, std::move(url), std::move(conn), info), h, ex);
  } else {
    auto conn = std::make_shared<ws_connection<plain_next>>(url.str(), max_frame, true, ex);
    auto h = asio::bind_allocator(dial_allocator<void>(), std::move(handler).bound());
    asio::async_compose<decltype(h), void(error_code, connection)>(
        dial_op<plain_next>(state, std::move(url), std::move(conn), info), h, ex);
  }
}

}  // namespace kws::detail
