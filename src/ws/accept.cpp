// The server side of the handshake: (TLS,) the HTTP request, the caller's decision, then the WebSocket
// upgrade or a plain HTTP answer; and the public helpers of kws/accept.hpp. Beast does the HTTP.
#include <kws/detail/dial_arena.hpp>
#include "io/tls_memory.hpp"
#include "ws/stream.hpp"
#include "ws/tls_verify.hpp"

#include <kws/accept.hpp>
#include <kws/errc.hpp>

#include <openssl/ssl.h>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/system/system_error.hpp>

#include <string_view>

namespace kws {

const std::string* http_request_info::header(std::string_view name) const {
  for (const auto& [n, v] : headers)
    if (n == name) return &v;
  return nullptr;
}

std::shared_ptr<boost::asio::ssl::context> detail::load_server_tls_context(
    const std::string& cert_chain_file, const std::string& private_key_file) {
  namespace ssl = boost::asio::ssl;
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  detail::release_idle_tls_buffers(*ctx);
  detail::use_certificate_files(ctx->native_handle(), cert_chain_file, private_key_file);
  return ctx;
}

std::shared_ptr<boost::asio::ssl::context> make_server_tls_context(const std::string& cert_chain_file,
                                                                   const std::string& private_key_file) {
  auto ctx = detail::load_server_tls_context(cert_chain_file, private_key_file);
  detail::make_reloadable(*ctx);
  return ctx;
}

}  // namespace kws

namespace kws::detail {
namespace {

// ---- the server side: (TLS,) the HTTP request, the caller's decision, the upgrade or a plain answer -----

std::string endpoint_text(const tcp::endpoint& ep) {
  const auto a = ep.address();
  return (a.is_v6() ? "[" + a.to_string() + "]" : a.to_string()) + ":" + std::to_string(ep.port());
}

template <class NextLayer>
class accept_op {
 public:
  using conn_type = ws_connection<NextLayer>;

  accept_op(accept_config config, accept_decider decide, std::shared_ptr<conn_type> conn, std::string peer)
      : config_(std::move(config)),
        decide_(std::move(decide)),
        conn_(std::move(conn)),
        st_(new (dial_allocator<state>().allocate(1)) state()) {
    st_->info.peer = std::move(peer);
  }

  template <class Self>
  void operator()(Self& self) {
    conn_->tcp().expires_after(config_.handshake_timeout);
    if constexpr (std::is_same_v<NextLayer, tls_next>) {
      stage_ = stage::tls;
      return conn_->stream().async_handshake(asio::ssl::stream_base::server, std::move(self));
    } else {
      read_request(self);
    }
  }

  template <class Self>
  void operator()(Self& self, error_code ec, std::size_t = 0) {
    switch (stage_) {
      case stage::tls:
        if constexpr (std::is_same_v<NextLayer, tls_next>) {
          auto* ssl = conn_->stream().native_handle();
          if (ec) {
            st_->info.tls_failure = tls_failure(ssl, ec, "the client", st_->info.peer);
            return finish(self, ec);
          }
          st_->info.client_subject = peer_subject(ssl);
          if (const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name))
            st_->info.server_name = name;
        }
        return read_request(self);
      case stage::read:
        if (ec)
          return finish(self, ec == beast::http::error::end_of_stream ? error_code(asio::error::eof) : ec);
        return decide(self);
      case stage::decided:
        return act(self);
      case stage::upgrade:
        if (ec) return finish(self, ec);
        upgraded();
        return self.complete(ec, connection(std::move(conn_)), std::move(st_->info));
      case stage::respond: {
        error_code ignored;
        conn_->tcp().socket().shutdown(tcp::socket::shutdown_send, ignored);
        return finish(self, ec ? ec : st_->refusal ? st_->refusal : error_code(errc::upgrade_declined));
      }
    }
  }

 private:
  enum class stage { tls, read, decided, upgrade, respond };

  // Lives apart: the HTTP read and write keep references to it while the operation moves. It, the request's
  // and the answer's memory and the operation's own states come from the dial arena
  // (kws/detail/dial_arena.hpp): all of it is gone once the handshake ends, while the WebSocket connection
  // made before it lives on; from malloc, these left holes among the connections that outlive them.
  struct state {
    beast::basic_flat_buffer<dial_allocator<char>> buffer;
    std::optional<beast::http::request_parser<beast::http::string_body, dial_allocator<char>>> parser;
    beast::http::response<beast::http::string_body, beast::http::basic_fields<dial_allocator<char>>> response;
    http_request_info info;
    accept_decision decision;
    error_code refusal;  // a malformed upgrade request, answered with 400 or 426
  };

  template <class Self>
  void read_request(Self& self) {
    stage_ = stage::read;
    st_->parser.emplace();
    st_->parser->header_limit(static_cast<std::uint32_t>(config_.max_request_bytes));
    st_->parser->body_limit(config_.max_request_bytes);
    beast::http::async_read(conn_->stream(), st_->buffer, *st_->parser, std::move(self));
  }

  template <class Self>
  void decide(Self& self) {
    const auto& req = st_->parser->get();
    auto& info = st_->info;
    info.method = std::string(req.method_string());
    info.target = std::string(req.target());
    info.websocket_upgrade = websocket::is_upgrade(req);
    for (const auto& field : req) {
      std::string name(field.name_string());
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      info.headers.emplace_back(std::move(name), std::string(field.value()));
    }
    conn_->set_url(info.target);
    stage_ = stage::decided;
    // The decider may answer later and from another thread: come back through the connection's executor.
    // Everything needed is taken first: moving `self` moves this object too.
    auto* st = st_.get();
    auto ex = conn_->get_executor();
    auto decide = decide_;
    auto holder = std::allocate_shared<Self>(dial_allocator<Self>(), std::move(self));
    decide(st->info, [holder, st, ex](accept_decision d) {
      st->decision = std::move(d);
      asio::post(ex, [holder]() mutable { (*holder)(error_code{}, 0); });
    });
  }

  // Base64 of 16 bytes (RFC 6455 4.2.1): 22 characters of the base64 alphabet, then "==".
  static bool is_sec_key(std::string_view key) {
    if (key.size() != 24 || key.substr(22) != "==") return false;
    return std::all_of(key.begin(), key.begin() + 22, [](char c) {
      return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
             c == '/';
    });
  }

  // The parts of an upgrade request that is_upgrade() does not check (RFC 6455 4.2.1): 0 when it is usable,
  // otherwise the answer's status, with `refusal` set.
  int check_upgrade_request() {
    namespace http = beast::http;
    const auto& req = st_->parser->get();
    auto& why = st_->refusal;
    if (req[http::field::host].empty()) {
      why = websocket::error::no_host;
    } else if (req[http::field::sec_websocket_key].empty()) {
      why = websocket::error::no_sec_key;
    } else if (!is_sec_key(req[http::field::sec_websocket_key])) {
      why = websocket::error::bad_sec_key;
    } else if (req[http::field::sec_websocket_version] != "13") {
      why = req[http::field::sec_websocket_version].empty() ? websocket::error::no_sec_version
                                                            : websocket::error::bad_sec_version;
      return 426;
    }
    return why ? 400 : 0;
  }

  template <class Self>
  void act(Self& self) {
    namespace http = beast::http;
    auto& d = st_->decision;
    auto& res = st_->response;
    const auto& req = st_->parser->get();
    res.version(req.version());
    res.set(http::field::server, config_.server_name);
    if (d.status == 101 && st_->info.websocket_upgrade) {
      if (const int status = check_upgrade_request()) {
        d = accept_decision::respond(status, st_->refusal.message() + "\n");
        if (status == 426) d.headers.emplace_back("Sec-WebSocket-Version", "13");
      } else {
        stage_ = stage::upgrade;
        res.result(http::status::switching_protocols);
        res.set(http::field::upgrade, "websocket");
        res.set(http::field::connection, "Upgrade");
        res.set(http::field::sec_websocket_accept, ws::accept_for(req[http::field::sec_websocket_key]));
        for (const auto& [name, value] : d.headers) res.set(name, value);
        return http::async_write(conn_->stream(), res, std::move(self));
      }
    }
    // A plain answer (the decider's, or 426 for a non-upgrade that the decider let through), then close.
    stage_ = stage::respond;
    if (d.status == 101)
      d = accept_decision::respond(426, "Kafka over WebSocket only: send a WebSocket upgrade\n");
    res.result(static_cast<unsigned>(d.status));
    res.set(http::field::content_type, "text/plain");
    if (d.status == 426) {
      res.set(http::field::upgrade, "websocket");
      res.set(http::field::connection, "Upgrade");
    }
    for (const auto& [name, value] : d.headers) res.set(name, value);
    res.body() = d.body;
    res.keep_alive(false);
    res.prepare_payload();
    http::async_write(conn_->stream(), res, std::move(self));
  }

  // Frames from here on. A client may not send any before our answer (RFC 6455 4.1), but whatever it did
  // send after its request is kept for the connection, not dropped.
  void upgraded() {
    auto& in = conn_->input();
    const auto early = st_->buffer.data();
    const auto n = asio::buffer_copy(in.prepare(early.size()), early);
    in.commit(n);
    conn_->handshake_done(config_.idle_timeout, config_.keepalive_pings, config_.handshake_timeout);
  }

  template <class Self>
  void finish(Self& self, error_code ec) {
    conn_->abort();
    self.complete(ec, connection{}, std::move(st_->info));
  }

  accept_config config_;
  accept_decider decide_;
  std::shared_ptr<conn_type> conn_;
  std::unique_ptr<state, dial_delete<state>> st_;
  stage stage_ = stage::tls;
};

}  // namespace

void async_accept(tcp::socket socket, const accept_config& config, accept_decider decide,
                  accept_handler handler) {
  error_code ec;
  const auto ep = socket.remote_endpoint(ec);
  std::string peer = !config.peer.empty() ? config.peer : ec ? std::string("?") : endpoint_text(ep);
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  const auto ex = socket.get_executor();
  // The operation's memory comes from the dial arena (see accept_op's state).
  auto h = asio::bind_allocator(dial_allocator<void>(), std::move(handler).bound());
  if (config.tls) {
    auto conn = std::make_shared<ws_connection<tls_next>>(std::string(), config.max_frame_bytes, false,
                                                          std::move(socket), *config.tls);
    asio::async_compose<decltype(h), void(error_code, connection, http_request_info)>(
        accept_op<tls_next>(config, std::move(decide), std::move(conn), std::move(peer)), h, ex);
  } else {
    auto conn = std::make_shared<ws_connection<plain_next>>(std::string(), config.max_frame_bytes, false,
                                                            std::move(socket));
    asio::async_compose<decltype(h), void(error_code, connection, http_request_info)>(
        accept_op<plain_next>(config, std::move(decide), std::move(conn), std::move(peer)), h, ex);
  }
}

}  // namespace kws::detail
