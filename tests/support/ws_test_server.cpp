#include "ws_test_server.hpp"

#include "test_env.hpp"

#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace kws::test {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

template <class Stream>
class peer_impl final : public ws_peer {
 public:
  template <class... Args>
  explicit peer_impl(Args&&... args) : ws_(std::forward<Args>(args)...) {}

  websocket::stream<Stream>& ws() { return ws_; }
  std::map<std::string, std::string> headers_;
  std::string target_;

  bool read(message& out) override {
    beast::flat_buffer buf;
    beast::error_code ec;
    ws_.read(buf, ec);
    if (ec) return false;
    out.text = ws_.got_text();
    out.data = beast::buffers_to_string(buf.data());
    return true;
  }
  void write_binary(const std::string& data) override {
    ws_.binary(true);
    beast::error_code ec;
    ws_.write(asio::buffer(data), ec);
  }
  void write_text(const std::string& data) override {
    ws_.text(true);
    beast::error_code ec;
    ws_.write(asio::buffer(data), ec);
  }
  void write_raw(const std::string& bytes) override {
    beast::error_code ec;
    asio::write(ws_.next_layer(), asio::buffer(bytes), ec);
  }
  void close() override {
    beast::error_code ec;
    ws_.close(websocket::close_code::normal, ec);
    // Wait for the peer's close reply so the handshake completes.
    beast::flat_buffer buf;
    while (!ec) ws_.read(buf, ec);
  }
  void drop() override {
    beast::error_code ec;
    beast::get_lowest_layer(ws_).shutdown(tcp::socket::shutdown_both, ec);
    beast::get_lowest_layer(ws_).close(ec);
  }
  const std::map<std::string, std::string>& request_headers() const override { return headers_; }
  const std::string& request_target() const override { return target_; }
  int close_code() const override { return static_cast<int>(ws_.reason().code); }
  const std::string& server_name() const override { return server_name_; }
  std::string server_name_;

 private:
  websocket::stream<Stream> ws_;
};

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

template <class Stream>
void serve(peer_impl<Stream>& peer, const ws_test_server::options& opts, const ws_script& script,
           std::atomic<int>& accepted, const std::atomic<bool>& stopping) {
  beast::flat_buffer buf;
  http::request<http::string_body> req;
  beast::error_code ec;
  http::read(peer.ws().next_layer(), buf, req, ec);
  if (ec) return;
  for (const auto& field : req)
    peer.headers_[lower(std::string(field.name_string()))] = std::string(field.value());
  peer.target_ = std::string(req.target());
  if (opts.silent) {
    while (!stopping.load()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return;
  }
  if (opts.reject_status != 0) {
    http::response<http::string_body> res{static_cast<http::status>(opts.reject_status), req.version()};
    res.body() = "rejected by test server";
    res.prepare_payload();
    http::write(peer.ws().next_layer(), res, ec);
    return;
  }
  peer.ws().read_message_max(512u * 1024u * 1024u);
  peer.ws().accept(req, ec);
  if (ec) return;
  ++accepted;
  script(peer);
}

}  // namespace

void echo(ws_peer& peer) {
  ws_peer::message m;
  while (peer.read(m)) {
    if (m.text) {
      peer.write_text(m.data);
    } else {
      peer.write_binary(m.data);
    }
  }
}

std::string ws_binary_frame_header(std::size_t n) {
  std::string h;
  h += static_cast<char>(0x82);
  if (n < 126) {
    h += static_cast<char>(n);
  } else if (n < 65536) {
    h += static_cast<char>(126);
    h += static_cast<char>(n >> 8);
    h += static_cast<char>(n & 0xff);
  } else {
    h += static_cast<char>(127);
    for (int i = 7; i >= 0; --i) h += static_cast<char>((static_cast<std::uint64_t>(n) >> (8 * i)) & 0xff);
  }
  return h;
}

namespace {
void run_openssl(const std::string& dir, const std::string& cmd) {
  const std::string quiet = "(cd '" + dir + "' && " + cmd + ") >>'" + dir + "/openssl.log' 2>&1";
  if (std::system(quiet.c_str()) != 0)
    throw std::runtime_error("openssl failed, see " + dir + "/openssl.log");
}
}  // namespace

std::string make_expired_certificate(const tls_files& f) {
  // `openssl ca` is the one that takes explicit dates (x509 -days cannot go back in time).
  run_openssl(f.dir,
              "printf '[ca]\\ndefault_ca=ca_default\\n[ca_default]\\ndatabase=index.txt\\nnew_certs_dir=.\\n"
              "serial=ca.serial\\ndefault_md=sha256\\npolicy=any\\ncopy_extensions=copy\\n[any]\\n"
              "commonName=supplied\\n' > ca.cnf && : > index.txt && echo 1000 > ca.serial && "
              "openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in server.csr -extfile ext.cnf "
              "-startdate 20200101000000Z -enddate 20200102000000Z -notext -out expired.pem");
  return f.dir + "/expired.pem";
}

tls_files make_self_signed_certificate(const tls_files& f) {
  run_openssl(
      f.dir,
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost "
      "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout self.key -out self.pem");
  tls_files out = f;
  out.cert_pem = f.dir + "/self.pem";
  out.key_pem = f.dir + "/self.key";
  return out;
}

tls_files make_test_certificates(const std::string& subject_alt_names) {
  tls_files f;
  f.dir = make_temp_dir("kws-tls").string();
  f.ca_pem = f.dir + "/ca.pem";
  f.cert_pem = f.dir + "/server.pem";
  f.key_pem = f.dir + "/server.key";
  const std::string d = f.dir;
  const std::string cmd =
      "cd '" + d +
      "' && "
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
      "-subj /CN=kws-test-ca -keyout ca.key -out ca.pem && "
      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost "
      "-keyout server.key -out server.csr && "
      "printf 'subjectAltName=" +
      subject_alt_names +
      "\\nbasicConstraints=CA:FALSE\\n' > ext.cnf && "
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
      "-extfile ext.cnf -out server.pem";
  const std::string quiet = "(" + cmd + ") >'" + d + "/openssl.log' 2>&1";
  if (std::system(quiet.c_str()) != 0) throw std::runtime_error("openssl failed, see " + d + "/openssl.log");
  return f;
}

tls_files make_client_certificate(const tls_files& f, const std::string& cn) {
  run_openssl(f.dir, "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=" + cn +
                         "' -keyout '" + cn + ".key' -out '" + cn + ".csr' && " +
                         "printf 'basicConstraints=CA:FALSE\\nextendedKeyUsage=clientAuth\\n' > '" + cn +
                         ".cnf' && openssl x509 -req -in '" + cn + ".csr' -CA ca.pem -CAkey ca.key " +
                         "-CAcreateserial -days 2 -extfile '" + cn + ".cnf' -out '" + cn + ".pem'");
  tls_files out = f;
  out.cert_pem = f.dir + "/" + cn + ".pem";
  out.key_pem = f.dir + "/" + cn + ".key";
  return out;
}

ws_test_server::ws_test_server(ws_script script) : ws_test_server(std::move(script), options{}) {}

ws_test_server::ws_test_server(ws_script script, options opts)
    : script_(std::move(script)),
      opts_(opts),
      acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
  port_ = acceptor_.local_endpoint().port();
  accept_thread_ = std::thread([this] { accept_loop(); });
}

ws_test_server::~ws_test_server() {
  stopping_ = true;
  ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
  accept_thread_.join();
  {
    std::lock_guard lock(mu_);
    for (const int fd : session_fds_)
      if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
  }
  for (auto& t : sessions_) t.join();
}

bool ws_test_server::wait_finished(int n, std::chrono::milliseconds limit) const {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (finished_.load() < n) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

void ws_test_server::accept_loop() {
  std::shared_ptr<asio::ssl::context> ssl;
  if (opts_.tls) {
    ssl = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
    ssl->use_certificate_chain_file(opts_.tls->cert_pem);
    ssl->use_private_key_file(opts_.tls->key_pem, asio::ssl::context::pem);
  }
  for (;;) {
    auto sock = std::make_shared<tcp::socket>(ioc_);
    beast::error_code ec;
    acceptor_.accept(*sock, ec);
    if (ec || stopping_) return;
    std::lock_guard lock(mu_);
    // A duplicate of the descriptor, owned here: the destructor shuts the connection down through it while
    // the session's thread may be closing its own (the socket object is not touched across threads).
    // It is closed when the session ends, so that the connection ends with it as before.
    const std::size_t slot = session_fds_.size();
    session_fds_.push_back(::dup(sock->native_handle()));
    sessions_.emplace_back([this, sock, ssl, slot] {
      if (ssl) {
        peer_impl<beast::ssl_stream<tcp::socket&>> peer(*sock, *ssl);
        beast::error_code ec;
        peer.ws().next_layer().handshake(asio::ssl::stream_base::server, ec);
        if (const char* sni =
                SSL_get_servername(peer.ws().next_layer().native_handle(), TLSEXT_NAMETYPE_host_name))
          peer.server_name_ = sni;
        if (!ec) serve(peer, opts_, script_, accepted_, stopping_);
      } else {
        peer_impl<tcp::socket&> peer(*sock);
        serve(peer, opts_, script_, accepted_, stopping_);
      }
      {
        std::lock_guard lock(mu_);
        ::close(session_fds_[slot]);
        session_fds_[slot] = -1;
      }
      ++finished_;
    });
  }
}

}  // namespace kws::test
