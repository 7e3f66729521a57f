// TLS over a plain TCP connection, for the relay's TCP side: the Kafka byte stream to a cluster that listens
// with TLS (the gateway's upstream), or from Kafka clients configured with security.protocol=SSL (the
// proxy's listeners). The handshake, with the same certificate checks and the same wording of failures as
// the dialer's wss://, is here; the relay takes the socket after it. The TLS stream is the library's own
// (src/io/tls_stream.hpp: no buffer held while the connection is idle), compiled in one translation unit
// (src/relay/tls_relay.cpp): this header only names it, and its reads and writes go there type-erased.
#pragma once

#include <kws/connection.hpp>
#include <kws/detail/shared_slot.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

namespace boost::asio::ssl {
class context;
}  // namespace boost::asio::ssl

namespace kws {

namespace detail {
template <class NextLayer>
class tls_stream;
using tcp_tls_stream = tls_stream<boost::asio::ip::tcp::socket>;
void async_tls_read_some(tcp_tls_stream& s, boost::asio::mutable_buffer b, io_handler handler);
void async_tls_write_some(tcp_tls_stream& s, boost::asio::const_buffer b, io_handler handler);
}  // namespace detail

/// A TCP connection with TLS over it, its handshake done: a movable handle (the stream itself stays at one
/// address, as OpenSSL's callbacks need). Default-constructed: no connection.
///
/// As a byte stream it models Asio's AsyncReadStream and AsyncWriteStream (one read and one write at a time,
/// on its executor; per-operation cancellation as with a socket). A read that has to wait for the peer waits
/// for the socket to become readable, holding no buffer. Reads end with eof after the peer's close_notify,
/// ssl::error::stream_truncated at a TCP end without one.
class tls_socket {
 public:
  using stream_type = detail::tcp_tls_stream;
  using executor_type = boost::asio::any_io_executor;

  tls_socket() noexcept;
  /// `keep`: what the stream needs alive (its context), released after it.
  explicit tls_socket(std::unique_ptr<stream_type> s, std::shared_ptr<const void> keep = {}) noexcept;
  tls_socket(tls_socket&&) noexcept;
  tls_socket& operator=(tls_socket&&) noexcept;
  ~tls_socket();

  bool is_open() const;
  /// The library's TLS stream (for the library's own use). Requires a connection.
  stream_type& stream() { return *s_; }
  /// The subject of the certificate the peer presented ("CN=client,O=Example"), empty when none.
  std::string peer_subject() const;
  /// The TCP socket under TLS (for socket options and TCP state). Requires a connection.
  boost::asio::ip::tcp::socket& next_layer();
  /// Closes the TCP connection at once, without a TLS close_notify; pending operations complete with
  /// operation_aborted.
  void close();

  /// Requires a connection.
  executor_type get_executor();

  template <class MutableBufferSequence, class CompletionToken>
  auto async_read_some(const MutableBufferSequence& buffers, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, std::size_t)>(
        [](auto handler, stream_type* s, const executor_type& ex, boost::asio::mutable_buffer b) {
          detail::async_tls_read_some(
              *s, b,
              detail::erase_handler<void(boost::system::error_code, std::size_t)>(std::move(handler), ex));
        },
        token, s_.get(), get_executor(), first<boost::asio::mutable_buffer>(buffers));
  }

  template <class ConstBufferSequence, class CompletionToken>
  auto async_write_some(const ConstBufferSequence& buffers, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, std::size_t)>(
        [](auto handler, stream_type* s, const executor_type& ex, boost::asio::const_buffer b) {
          detail::async_tls_write_some(
              *s, b,
              detail::erase_handler<void(boost::system::error_code, std::size_t)>(std::move(handler), ex));
        },
        token, s_.get(), get_executor(), first<boost::asio::const_buffer>(buffers));
  }

 private:
  // Only the first non-empty buffer is taken; async_read and async_write loop over the rest, as with sockets.
  template <class Buffer, class Buffers>
  static Buffer first(const Buffers& buffers) {
    for (auto it = boost::asio::buffer_sequence_begin(buffers);
         it != boost::asio::buffer_sequence_end(buffers); ++it) {
      Buffer b(*it);
      if (b.size() != 0) return b;
    }
    return Buffer();
  }

  std::shared_ptr<const void> keep_;  // declared first: destroyed after the stream
  std::unique_ptr<stream_type> s_;
};

/// Where the client side's TLS material comes from: the trusted CAs (empty: the system store), and a client
/// certificate for mutual TLS (both or neither).
struct tls_client_options {
  std::string ca_file{};
  std::string cert_file{};
  std::string key_file{};
};

/// A TLS client context (TLS 1.2 or later) for tls_handshake_options::role::client. Throws
/// boost::system::system_error whose message names the file that cannot be loaded.
std::shared_ptr<boost::asio::ssl::context> make_client_tls_context(const tls_client_options& options);

/// A client context whose files can be read again while connections run: a handshake takes current(), and
/// one started after a reload() gets the new material; connections already up keep theirs (OpenSSL holds
/// the context a connection was made with). Thread-safe.
class reloadable_client_tls {
 public:
  /// Loads the files (make_client_tls_context); throws naming the file that cannot be loaded.
  explicit reloadable_client_tls(tls_client_options options);
  const tls_client_options& options() const noexcept { return options_; }
  std::shared_ptr<boost::asio::ssl::context> current() const;
  /// Loads the files again and puts the result in use; throws naming the file, and then changes nothing.
  void reload();

 private:
  tls_client_options options_;
  detail::shared_slot<boost::asio::ssl::context> current_;
};

/// Makes a server context ask every client for a certificate and refuse the handshake without one that a CA
/// of `ca_file` vouches for. Throws boost::system::system_error naming the file.
void require_client_certificates(boost::asio::ssl::context& server, const std::string& ca_file);

struct tls_handshake_options {
  enum class role : unsigned char { client, server };
  role side = role::client;
  /// Client: the host as dialled, sent as SNI (unless an IP address) and checked against the certificate
  /// (unless insecure). Server: the client's address, for the failure's sentence only.
  std::string host{};
  /// Client: skip certificate and host name verification (testing only).
  bool insecure_skip_verify = false;
  /// Bound on the handshake.
  std::chrono::milliseconds timeout{std::chrono::seconds(10)};
  /// The peer as the failure's sentence names it: "the broker's TLS certificate was refused: ...".
  std::string peer_name = "the broker";
  /// The bound on the handshake as the timeout's sentence names it: "... within the handshake timeout".
  std::string timeout_name = "the handshake timeout";
};

namespace detail {
using tls_handshake_handler = erased_handler<void(boost::system::error_code, tls_socket, std::string)>;
void async_tls_handshake(boost::asio::ip::tcp::socket socket, std::shared_ptr<boost::asio::ssl::context> ctx,
                         tls_handshake_options options, tls_handshake_handler handler);
}  // namespace detail

/// The TLS handshake over a connected socket. Completion: void(error_code, kws::tls_socket, std::string):
/// after a failure the string is one sentence for people, in the dialer's words ("the broker's TLS
/// certificate was refused: certificate has expired (broker.example)", "... hostname mismatch ...", "the
/// TLS handshake with the broker failed: wrong version number (10.0.0.5)"), and the socket is closed.
/// `ctx` is kept for as long as the connection lives.
template <class CompletionToken>
auto async_tls_handshake(boost::asio::ip::tcp::socket socket, std::shared_ptr<boost::asio::ssl::context> ctx,
                         tls_handshake_options options, CompletionToken&& token) {
  return boost::asio::async_initiate<CompletionToken,
                                     void(boost::system::error_code, tls_socket, std::string)>(
      [](auto handler, boost::asio::ip::tcp::socket s, std::shared_ptr<boost::asio::ssl::context> c,
         tls_handshake_options o) {
        auto ex = s.get_executor();
        detail::async_tls_handshake(
            std::move(s), std::move(c), std::move(o),
            detail::erase_handler<void(boost::system::error_code, tls_socket, std::string)>(
                std::move(handler), ex));
      },
      token, std::move(socket), std::move(ctx), std::move(options));
}

}  // namespace kws
