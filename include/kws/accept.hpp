// The server side of the library: turn an accepted TCP socket into a kws::connection. Reads the HTTP request
// (after a TLS handshake for wss), lets the caller decide what to do with it (upgrade, or answer plainly:
// 401, 403, 404, 426, a health check), and completes the WebSocket handshake with the same limits and checks
// as the client side (binary messages only, one Kafka frame each, a frame size limit).
#pragma once

#include <kws/connection.hpp>
#include <kws/frame.hpp>

#include <boost/asio/async_result.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boost::asio::ssl {
class context;
}

namespace kws {

/// The HTTP request a client sent to the server.
struct http_request_info {
  std::string method;
  std::string target;
  /// True for a well-formed WebSocket upgrade request.
  bool websocket_upgrade = false;
  /// Header fields with lower-case names, in the order received.
  std::vector<std::pair<std::string, std::string>> headers;
  /// The client's address, as `host:port` (IPv6 in brackets).
  std::string peer;
  /// wss: the subject of the certificate the client presented (RFC 2253, "CN=client,O=Example"), empty when
  /// it presented none. Only a context that verifies client certificates (require_client_certificates in
  /// kws/tls_socket.hpp) makes it trustworthy.
  std::string client_subject;
  /// wss: the server name the client asked for in the TLS handshake (SNI), empty when it sent none.
  std::string server_name;
  /// After a failed TLS handshake: why, in one sentence with the client's address ("the TLS handshake with
  /// the client failed: peer did not return a certificate (10.0.0.5:40112)", "the client's TLS certificate
  /// was refused: self-signed certificate (...)"). Empty otherwise.
  std::string tls_failure;

  /// The first header of that (lower-case) name, if any.
  const std::string* header(std::string_view name) const;
};

/// What the server does with a request.
struct accept_decision {
  /// 101 upgrades a WebSocket request; anything else is answered with this status and `body`, then closed.
  int status = 101;
  std::string body;
  /// Extra response header fields, on the 101 too (for example WWW-Authenticate with 401, or the
  /// Sec-WebSocket-Protocol chosen from the client's offer with 101).
  std::vector<std::pair<std::string, std::string>> headers;

  static accept_decision upgrade() { return {}; }
  static accept_decision respond(int status, std::string body) { return {status, std::move(body), {}}; }
};

/// Decides about one request; calls `done` exactly once, possibly later (it may ask someone first).
using accept_decider =
    std::function<void(const http_request_info& request, std::function<void(accept_decision)> done)>;

struct accept_config {
  /// Largest Kafka frame body accepted either way.
  std::size_t max_frame_bytes = default_max_frame_bytes;
  /// Bound on the TLS handshake, reading the request, the decision and the upgrade together, so that a
  /// half-open client cannot hold a connection.
  std::chrono::milliseconds handshake_timeout{std::chrono::seconds(10)};
  /// With keepalive pings on, a ping goes out after half of this with nothing received, and the connection
  /// fails after all of it. Zero: no idle timeout and no pings.
  std::chrono::milliseconds idle_timeout{0};
  bool keepalive_pings = true;
  /// Largest HTTP request (line and headers) accepted before the upgrade.
  std::size_t max_request_bytes = 16 * 1024;
  /// The Server header of responses.
  std::string server_name = "kafka-websocket-shim";
  /// wss: the TLS context (certificate and key loaded); null for ws.
  std::shared_ptr<boost::asio::ssl::context> tls{};
  /// The client's address for http_request_info::peer when the socket's peer is not the client (one
  /// connection's config, taken from a PROXY protocol header); empty: the socket's peer.
  std::string peer{};
};

/// A TLS server context with the certificate chain and key from PEM files, TLS 1.2 or later. Throws
/// boost::system::system_error naming the file that cannot be loaded.
std::shared_ptr<boost::asio::ssl::context> make_server_tls_context(const std::string& cert_chain_file,
                                                                   const std::string& private_key_file);

/// Certificate rotation: loads `cert_chain_file` and `private_key_file` (and with `client_ca_file`, the CAs
/// that client certificates must come from, as require_client_certificates does) into a new context, to which
/// `server` then hands every handshake that starts; connections already open keep what they have. `server`
/// must come from make_server_tls_context. Throws boost::system::system_error naming the file that cannot be
/// loaded (or whose key does not belong to the certificate), and `server` keeps serving what it served.
void reload_server_tls_context(boost::asio::ssl::context& server, const std::string& cert_chain_file,
                               const std::string& private_key_file, const std::string& client_ca_file = {});

namespace detail {
/// A context with the chain and key loaded, TLS 1.2 or later, not reloadable (make_server_tls_context's
/// start, and each reload's).
std::shared_ptr<boost::asio::ssl::context> load_server_tls_context(const std::string& cert_chain_file,
                                                                   const std::string& private_key_file);
/// Lets reload_server_tls_context replace what `server` serves.
void make_reloadable(boost::asio::ssl::context& server);
}  // namespace detail

namespace detail {
using accept_handler = erased_handler<void(boost::system::error_code, connection, http_request_info)>;
void async_accept(boost::asio::ip::tcp::socket socket, const accept_config& config, accept_decider decide,
                  accept_handler handler);
}  // namespace detail

/// Accepts a WebSocket connection on `socket`. Completion: void(error_code, kws::connection,
/// http_request_info). A request the decider answered plainly completes with kws::errc::upgrade_declined
/// (its request info is still given); a timeout with boost::beast::error::timeout.
template <class CompletionToken>
auto async_accept(boost::asio::ip::tcp::socket socket, const accept_config& config, accept_decider decide,
                  CompletionToken&& token) {
  return boost::asio::async_initiate<CompletionToken,
                                     void(boost::system::error_code, connection, http_request_info)>(
      [](auto handler, boost::asio::ip::tcp::socket s, const accept_config& cfg, accept_decider d) {
        auto ex = s.get_executor();
        detail::async_accept(
            std::move(s), cfg, std::move(d),
            detail::erase_handler<void(boost::system::error_code, connection, http_request_info)>(
                std::move(handler), ex));
      },
      token, std::move(socket), config, std::move(decide));
}

}  // namespace kws
