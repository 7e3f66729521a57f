// A real WebSocket server (Beast, plain or TLS) for tests, on 127.0.0.1 and an ephemeral port. Each
// accepted connection runs a test-supplied script on its own thread with blocking calls.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace kws::test {

/// One WebSocket peer as the script sees it.
class ws_peer {
 public:
  virtual ~ws_peer() = default;
  struct message {
    bool text = false;
    std::string data;
  };
  /// Next message; false once the connection ended (closed, error).
  virtual bool read(message& out) = 0;
  virtual void write_binary(const std::string& data) = 0;
  virtual void write_text(const std::string& data) = 0;
  /// Bytes straight onto the TCP/TLS stream, below WebSocket (for malformed or truncated frames).
  virtual void write_raw(const std::string& bytes) = 0;
  /// Clean WebSocket close.
  virtual void close() = 0;
  /// Drop the TCP connection without a close handshake.
  virtual void drop() = 0;
  /// Headers of the upgrade request (lower-case names).
  virtual const std::map<std::string, std::string>& request_headers() const = 0;
  virtual const std::string& request_target() const = 0;
  /// Close code the client sent (0 when none arrived).
  virtual int close_code() const = 0;
  /// Server name the client sent in its TLS ClientHello (empty for plain connections or none sent).
  virtual const std::string& server_name() const = 0;
};

using ws_script = std::function<void(ws_peer&)>;

/// A script that echoes every message back as it came (binary or text).
void echo(ws_peer& peer);

/// Builds a server-to-client WebSocket frame header (FIN, binary, unmasked) for `payload_len` bytes.
std::string ws_binary_frame_header(std::size_t payload_len);

struct tls_files {
  std::string dir;
  std::string ca_pem;    // CA certificate clients should trust
  std::string cert_pem;  // server certificate for localhost and 127.0.0.1, signed by the CA
  std::string key_pem;
};

/// Makes a throw-away CA and server certificate with the openssl command (in a fresh temp directory).
/// `subject_alt_names` in openssl's syntax, e.g. "DNS:localhost,IP:127.0.0.1".
tls_files make_test_certificates(const std::string& subject_alt_names = "DNS:localhost,IP:127.0.0.1");

/// A server certificate for the same key, signed by the same CA, that expired in 2020: `dir`/expired.pem.
std::string make_expired_certificate(const tls_files& files);

/// A self-signed certificate for localhost with a key of its own (no CA vouches for it): `dir`/self.pem and
/// `dir`/self.key.
tls_files make_self_signed_certificate(const tls_files& files);

/// A client certificate with subject CN=`common_name` and a key of its own, signed by the CA of `files`:
/// `dir`/`common_name`.pem and `dir`/`common_name`.key (`common_name` must be a plain file name).
tls_files make_client_certificate(const tls_files& files, const std::string& common_name);

class ws_test_server {
 public:
  struct options {
    const tls_files* tls = nullptr;  // wss when set
    /// Reject the upgrade with this HTTP status instead of accepting (0: accept).
    int reject_status = 0;
    /// Accept TCP but never answer the upgrade.
    bool silent = false;
  };

  explicit ws_test_server(ws_script script);
  ws_test_server(ws_script script, options opts);
  ~ws_test_server();

  unsigned short port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  /// Connections whose upgrade succeeded.
  int accepted() const { return accepted_.load(); }
  /// Waits until `n` connection scripts have returned (bounded).
  bool wait_finished(int n, std::chrono::milliseconds limit = std::chrono::seconds(10)) const;

 private:
  void accept_loop();

  ws_script script_;
  options opts_;
  boost::asio::io_context ioc_;
  boost::asio::ip::tcp::acceptor acceptor_;
  unsigned short port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> accepted_{0};
  std::atomic<int> finished_{0};
  std::thread accept_thread_;
  std::mutex mu_;
  std::vector<std::thread> sessions_;
  std::vector<int> session_fds_;  // duplicates of the sessions' descriptors, for the destructor
};

}  // namespace kws::test
