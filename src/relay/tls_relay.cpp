// TLS over TCP (kws/tls_socket.hpp): the socket handle and its reads and writes, the contexts, the handshake
// with the dialer's certificate checks and wording (ws/tls_verify.hpp), and the relay over it
// (relay_impl.hpp with tls_side.hpp). The one translation unit that compiles the TLS stream over a plain
// socket (io/tls_stream.hpp) for all of these.
#include "io/tls_memory.hpp"
#include "io/tls_stream.hpp"
#include "relay/relay_impl.hpp"
#include "relay/tls_side.hpp"
#include "ws/tls_verify.hpp"

#include <kws/tls_socket.hpp>

#include <boost/asio/append.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/system/system_error.hpp>

#include <openssl/ssl.h>

namespace kws {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using boost::system::error_code;
using tcp = asio::ip::tcp;

// ---- the socket ---------------------------------------------------------------------------------------

tls_socket::tls_socket() noexcept = default;
tls_socket::tls_socket(std::unique_ptr<stream_type> s, std::shared_ptr<const void> keep) noexcept
    : keep_(std::move(keep)), s_(std::move(s)) {}
tls_socket::tls_socket(tls_socket&&) noexcept = default;
tls_socket& tls_socket::operator=(tls_socket&& other) noexcept {
  // The stream goes before what it needs.
  s_ = std::move(other.s_);
  keep_ = std::move(other.keep_);
  return *this;
}
tls_socket::~tls_socket() = default;

bool tls_socket::is_open() const {
  return s_ && s_->next_layer().is_open();
}

tcp::socket& tls_socket::next_layer() {
  return s_->next_layer();
}

tls_socket::executor_type tls_socket::get_executor() {
  return s_->get_executor();
}

void tls_socket::close() {
  if (!s_) return;
  error_code ignored;
  s_->next_layer().close(ignored);
}

std::string tls_socket::peer_subject() const {
  return s_ ? detail::peer_subject(s_->native_handle()) : std::string();
}

namespace detail {

void async_tls_read_some(tcp_tls_stream& s, asio::mutable_buffer b, io_handler handler) {
  s.async_read_some(b, std::move(handler).bound());
}

void async_tls_write_some(tcp_tls_stream& s, asio::const_buffer b, io_handler handler) {
  s.async_write_some(b, std::move(handler).bound());
}

}  // namespace detail

// ---- contexts -----------------------------------------------------------------------------------------

std::shared_ptr<ssl::context> make_client_tls_context(const tls_client_options& o) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  detail::release_idle_tls_buffers(*ctx);
  error_code ec;
  if (o.ca_file.empty()) {
    ctx->set_default_verify_paths(ec);
    if (ec) throw boost::system::system_error(ec, "the system's trusted CAs");
  } else {
    ctx->load_verify_file(o.ca_file, ec);
    if (ec) throw boost::system::system_error(ec, "CA file " + o.ca_file);
  }
  detail::use_certificate_files(ctx->native_handle(), o.cert_file, o.key_file);
  return ctx;
}

reloadable_client_tls::reloadable_client_tls(tls_client_options options)
    : options_(std::move(options)), current_(make_client_tls_context(options_)) {}

std::shared_ptr<ssl::context> reloadable_client_tls::current() const {
  return current_.load();
}

void reloadable_client_tls::reload() {
  current_.store(make_client_tls_context(options_));
}

void require_client_certificates(ssl::context& server, const std::string& ca_file) {
  error_code ec;
  server.load_verify_file(ca_file, ec);
  if (ec) throw boost::system::system_error(ec, "client CA file " + ca_file);
  // The CAs' names go to clients in the CertificateRequest, so that one with several certificates picks.
  if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(ca_file.c_str()))
    SSL_CTX_set_client_CA_list(server.native_handle(), names);
  server.set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
}

// ---- the handshake ------------------------------------------------------------------------------------

namespace detail {
namespace {

struct handshake_state {
  handshake_state(tcp::socket s, std::shared_ptr<ssl::context> c, tls_handshake_options o,
                  tls_handshake_handler h)
      : ctx(std::move(c)),
        stream(std::make_unique<tls_socket::stream_type>(std::move(s), *ctx)),
        timer(stream->get_executor()),
        options(std::move(o)),
        handler(std::move(h)) {}
  std::shared_ptr<ssl::context> ctx;
  std::unique_ptr<tls_socket::stream_type> stream;
  asio::steady_timer timer;
  tls_handshake_options options;
  tls_handshake_handler handler;
  bool timed_out = false;

  // After a failure: the sentence, and the socket closed.
  std::string failed(const error_code& ec) {
    auto why =
        tls_failure(stream->native_handle(), ec, options.peer_name, options.host, options.timeout_name);
    error_code ignored;
    stream->next_layer().close(ignored);
    return why;
  }
};

}  // namespace

void async_tls_handshake(tcp::socket socket, std::shared_ptr<ssl::context> ctx, tls_handshake_options options,
                         tls_handshake_handler handler) {
  const bool client = options.side == tls_handshake_options::role::client;
  auto st = std::make_shared<handshake_state>(std::move(socket), std::move(ctx), std::move(options),
                                              std::move(handler));
  if (client) {
    if (auto ec =
            verify_server(st->stream->native_handle(), st->options.host, st->options.insecure_skip_verify)) {
      auto why = st->failed(ec);
      return asio::post(st->stream->get_executor(),
                        asio::append(std::move(st->handler).bound(), ec, tls_socket(), std::move(why)));
    }
  }
  st->timer.expires_after(st->options.timeout);
  st->timer.async_wait([st](error_code ec) {
    if (ec || !st->stream) return;
    st->timed_out = true;
    error_code ignored;
    st->stream->next_layer().cancel(ignored);  // the handshake completes with operation_aborted
  });
  st->stream->async_handshake(
      client ? ssl::stream_base::client : ssl::stream_base::server, [st](error_code ec) {
        st->timer.cancel();
        if (ec && st->timed_out) ec = asio::error::timed_out;
        std::string why;
        tls_socket done;
        if (ec) {
          why = st->failed(ec);
        } else {
          // From now on a read that waits for the peer holds no buffer.
          st->stream->read_on_readiness();
          done = tls_socket(std::move(st->stream), st->ctx);
        }
        asio::dispatch(asio::append(std::move(st->handler).bound(), ec, std::move(done), std::move(why)));
      });
}

}  // namespace detail

// ---- the relay ----------------------------------------------------------------------------------------

using detail::relay_impl;

std::shared_ptr<relay> relay::create(tls_socket client, connection broker, relay_options options,
                                     std::shared_ptr<frame_hook> hook, done_handler on_done,
                                     reconnect_function<connection> reconnect) {
  return std::make_shared<relay_impl<tls_socket, connection>>(std::move(client), std::move(broker),
                                                              std::move(options), std::move(hook),
                                                              std::move(on_done), std::move(reconnect));
}

std::shared_ptr<relay> relay::create(connection client, tls_socket broker, relay_options options,
                                     std::shared_ptr<frame_hook> hook, done_handler on_done,
                                     reconnect_function<tls_socket> reconnect) {
  return std::make_shared<relay_impl<connection, tls_socket>>(std::move(client), std::move(broker),
                                                              std::move(options), std::move(hook),
                                                              std::move(on_done), std::move(reconnect));
}

}  // namespace kws
