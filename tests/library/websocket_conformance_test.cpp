// RFC 6455 framing after the handshake, as kws::connection handles it in both roles and over TCP and TLS: a
// raw peer in the test (a socket with blocking, time-bounded calls, on the test's thread) does the upgrade by
// hand, writes frames built here to the bit, and parses what the connection sends back. The connection runs
// on an io_context of its own thread; every wait for it is bounded too. Where the current behaviour departs
// from what RFC 6455 asks or allows, the test says so next to the expectation.
#include "frame_util.hpp"
#include "ws_test_server.hpp"

#include <kws/kws.hpp>

#include <gtest/gtest.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/error.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <future>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace websocket = boost::beast::websocket;
using boost::system::error_code;
using kws::test::frame;
using kws::test::pattern;
using namespace std::chrono_literals;

// Every blocking call of the peer and every wait for the connection gives up after this.
constexpr auto wait_limit = 5s;

// ---- frames as they travel (RFC 6455, section 5.2) -----------------------------------------------------

enum opcode : std::uint8_t {
  op_continuation = 0x0,
  op_text = 0x1,
  op_binary = 0x2,
  op_close = 0x8,
  op_ping = 0x9,
  op_pong = 0xA
};

constexpr std::uint8_t rsv1 = 0x4;  // the RSV bits as they sit after FIN: RSV1 RSV2 RSV3

// The mask key the peer uses when it masks (nonzero, and different in every byte).
constexpr std::array<unsigned char, 4> peer_mask{0x37, 0xfa, 0x21, 0x3d};

struct frame_spec {
  std::uint8_t opcode = op_binary;
  std::string payload;
  bool fin = true;
  std::uint8_t rsv = 0;
  /// The length field, when it must announce another length than the payload's.
  std::optional<std::uint64_t> announced;
  /// 126 or 127: that length form even where a shorter one would do.
  unsigned length_form = 0;
};

frame_spec spec(std::uint8_t opcode, std::string payload, bool fin = true) {
  frame_spec f;
  f.opcode = opcode;
  f.payload = std::move(payload);
  f.fin = fin;
  return f;
}

std::string encode(const frame_spec& f, bool masked) {
  std::string out;
  out += static_cast<char>((f.fin ? 0x80 : 0) | (f.rsv << 4) | f.opcode);
  const std::uint64_t len = f.announced.value_or(f.payload.size());
  const unsigned mask_bit = masked ? 0x80 : 0;
  if (len < 126 && f.length_form == 0) {
    out += static_cast<char>(mask_bit | len);
  } else if (len <= 0xffff && f.length_form != 127) {
    out += static_cast<char>(mask_bit | 126);
    for (int shift = 8; shift >= 0; shift -= 8) out += static_cast<char>((len >> shift) & 0xff);
  } else {
    out += static_cast<char>(mask_bit | 127);
    for (int shift = 56; shift >= 0; shift -= 8) out += static_cast<char>((len >> shift) & 0xff);
  }
  if (masked) out.append(reinterpret_cast<const char*>(peer_mask.data()), peer_mask.size());
  for (std::size_t i = 0; i < f.payload.size(); ++i) {
    out += static_cast<char>(f.payload[i] ^ (masked ? peer_mask[i % 4] : 0));
  }
  return out;
}

std::string close_payload(std::uint16_t code, std::string_view reason = {}) {
  std::string p{static_cast<char>(code >> 8), static_cast<char>(code & 0xff)};
  p.append(reason);
  return p;
}

// What the peer read: one frame, or why there was none.
struct received {
  enum kind { a_frame, eof, timeout, error } what = error;
  std::string header;  // the header bytes as sent, mask key included
  bool fin = false;
  std::uint8_t rsv = 0;
  std::uint8_t opcode = 0;
  bool masked = false;
  std::array<unsigned char, 4> mask{};
  std::string payload;  // unmasked

  std::uint16_t close_code() const {
    return payload.size() >= 2 ? static_cast<std::uint16_t>(static_cast<unsigned char>(payload[0]) << 8 |
                                                            static_cast<unsigned char>(payload[1]))
                               : 0;
  }
};

std::ostream& operator<<(std::ostream& os, const received& r) {
  switch (r.what) {
    case received::a_frame:
      return os << "frame opcode " << int(r.opcode) << " fin " << r.fin << " masked " << r.masked << " "
                << r.payload.size() << " bytes";
    case received::eof:
      return os << "end of stream";
    case received::timeout:
      return os << "nothing within the time limit";
    case received::error:
      break;
  }
  return os << "socket error";
}

// ---- the handshake, by hand (RFC 6455, section 4) ------------------------------------------------------

std::string accept_key(std::string_view client_key) {
  const std::string in = std::string(client_key) + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(in.data()), in.size(), digest);
  unsigned char b64[4 * ((SHA_DIGEST_LENGTH + 2) / 3) + 1];
  const int n = EVP_EncodeBlock(b64, digest, SHA_DIGEST_LENGTH);
  return std::string(reinterpret_cast<const char*>(b64), static_cast<std::size_t>(n));
}

// The value of a header field in an HTTP head (name case-insensitive), or empty.
std::string header_value(const std::string& head, std::string_view name) {
  std::string lower = head;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  const auto at = lower.find("\r\n" + std::string(name) + ":");
  if (at == std::string::npos) return {};
  auto begin = at + 3 + name.size();
  const auto end = head.find("\r\n", begin);
  while (begin < end && head[begin] == ' ') ++begin;
  return head.substr(begin, end - begin);
}

// ---- the raw peer --------------------------------------------------------------------------------------

// One TCP connection, TLS optionally, with blocking calls bounded by SO_RCVTIMEO / SO_SNDTIMEO.
class raw_peer {
 public:
  raw_peer() = default;
  raw_peer(const raw_peer&) = delete;
  raw_peer& operator=(const raw_peer&) = delete;
  ~raw_peer() { close(); }

  // Takes the next connection on `listener` (waiting at most wait_limit); a TLS server when ctx is set.
  bool accept_from(int listener, SSL_CTX* ctx) {
    pollfd p{listener, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(wait_limit).count())) != 1) return false;
    fd_ = ::accept(listener, nullptr, nullptr);
    return fd_ >= 0 && setup(ctx, false);
  }

  bool connect_to(unsigned short port, SSL_CTX* ctx) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return false;
    return setup(ctx, true);
  }

  bool send(std::string_view bytes) {
    while (!bytes.empty()) {
      const long n = ssl_ ? SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size()))
                          : ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // Each byte in a write (and a TCP segment, or TLS record) of its own.
  bool send_byte_by_byte(std::string_view bytes) {
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      if (!send(bytes.substr(i, 1))) return false;
    }
    return true;
  }

  // Reads exactly n bytes; what the last read ended with otherwise.
  received::kind read_exactly(std::size_t n, std::string& out) {
    const auto start = out.size();
    out.resize(start + n);
    std::size_t have = 0;
    while (have < n) {
      errno = 0;
      const long got = ssl_ ? SSL_read(ssl_, out.data() + start + have, static_cast<int>(n - have))
                            : ::recv(fd_, out.data() + start + have, n - have, 0);
      if (got > 0) {
        have += static_cast<std::size_t>(got);
        continue;
      }
      out.resize(start + have);
      if (ssl_) {
        const int err = SSL_get_error(ssl_, static_cast<int>(got));
        if (err == SSL_ERROR_ZERO_RETURN) return received::eof;
        if (err == SSL_ERROR_WANT_READ) return received::timeout;
        return errno == EAGAIN ? received::timeout : received::error;
      }
      if (got == 0) return received::eof;
      return errno == EAGAIN || errno == EWOULDBLOCK ? received::timeout : received::error;
    }
    return received::a_frame;
  }

  // The HTTP head up to its blank line, read a byte at a time so that nothing after it is taken.
  std::string read_http_head() {
    std::string head;
    while (!head.ends_with("\r\n\r\n") && head.size() < 16 * 1024) {
      if (read_exactly(1, head) != received::a_frame) return {};
    }
    return head;
  }

  received read_frame() {
    received r;
    std::string& h = r.header;
    if (auto k = read_exactly(2, h); k != received::a_frame) {
      r.what = h.empty() ? k : received::error;
      return r;
    }
    const auto b0 = static_cast<unsigned char>(h[0]);
    const auto b1 = static_cast<unsigned char>(h[1]);
    r.fin = b0 & 0x80;
    r.rsv = (b0 >> 4) & 0x7;
    r.opcode = b0 & 0xf;
    r.masked = b1 & 0x80;
    std::uint64_t len = b1 & 0x7f;
    const std::size_t extended = len == 126 ? 2 : len == 127 ? 8 : 0;
    if (extended != 0) {
      if (auto k = read_exactly(extended, h); k != received::a_frame) return r.what = k, r;
      len = 0;
      for (std::size_t i = 0; i < extended; ++i) len = len << 8 | static_cast<unsigned char>(h[2 + i]);
    }
    if (r.masked) {
      if (auto k = read_exactly(4, h); k != received::a_frame) return r.what = k, r;
      std::copy_n(h.end() - 4, 4, r.mask.begin());
    }
    if (len > 64 * 1024 * 1024) return r.what = received::error, r;
    if (auto k = read_exactly(len, r.payload); k != received::a_frame) return r.what = k, r;
    if (r.masked) {
      for (std::size_t i = 0; i < r.payload.size(); ++i)
        r.payload[i] = static_cast<char>(r.payload[i] ^ r.mask[i % 4]);
    }
    r.what = received::a_frame;
    return r;
  }

  // Closes the TCP connection at once (after a TLS close_notify, over TLS), unread input or not.
  void close() {
    if (ssl_) {
      SSL_shutdown(ssl_);
      SSL_free(ssl_);
      ssl_ = nullptr;
    }
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  // Closes the TCP connection at once, without even a TLS close_notify: as if the peer had crashed.
  void drop() {
    if (ssl_) {
      SSL_free(ssl_);
      ssl_ = nullptr;
    }
    close();
  }

  // Ends the connection as a well-behaved peer does: shuts down its sending side (close_notify first, over
  // TLS), reads until the other side has closed too (bounded), then closes. Unlike close(), leaves nothing
  // unread for the kernel to answer with a reset.
  void finish() {
    if (fd_ < 0) return;
    if (ssl_) SSL_shutdown(ssl_);
    ::shutdown(fd_, SHUT_WR);
    char sink[4096];
    while ((ssl_ ? SSL_read(ssl_, sink, sizeof sink) : ::recv(fd_, sink, sizeof sink, 0)) > 0) {
    }
    close();
  }

 private:
  bool setup(SSL_CTX* ctx, bool client) {
    const timeval tv{static_cast<time_t>(std::chrono::seconds(wait_limit).count()), 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!ctx) return true;
    ssl_ = SSL_new(ctx);
    SSL_set_fd(ssl_, fd_);
    return (client ? SSL_connect(ssl_) : SSL_accept(ssl_)) == 1;
  }

  int fd_ = -1;
  SSL* ssl_ = nullptr;
};

// ---- the connection under test, on a thread of its own ------------------------------------------------

struct read_outcome {
  error_code ec;
  std::string bytes;
};

template <class T>
std::optional<T> within(std::future<T>& f, std::chrono::milliseconds limit = wait_limit) {
  if (f.wait_for(limit) != std::future_status::ready) return std::nullopt;
  return f.get();
}

class kws_end {
 public:
  kws_end() : thread_([this] { ioc_.run_for(60s); }) {}
  kws_end(const kws_end&) = delete;
  kws_end& operator=(const kws_end&) = delete;
  ~kws_end() {
    asio::post(ioc_, [this] {
      conn_ = kws::connection();
      acceptor_.close();
    });
    work_.reset();
    thread_.join();
  }

  // Runs f on the connection's thread and returns its result (bounded).
  template <class F>
  auto on_thread(F f) {
    auto task = std::make_shared<std::packaged_task<decltype(f())()>>(std::move(f));
    auto fut = task->get_future();
    asio::post(ioc_, [task] { (*task)(); });
    if (fut.wait_for(wait_limit) != std::future_status::ready)
      throw std::runtime_error("connection thread stuck");
    return fut.get();
  }

  std::future<error_code> dial(std::string url, kws::dialer_config cfg) {
    auto done = std::make_shared<std::promise<error_code>>();
    auto fut = done->get_future();
    asio::post(ioc_, [this, url, cfg, done] {
      dialer_.emplace(ioc_.get_executor(), cfg);
      dialer_->async_dial(url, [this, done](error_code ec, kws::connection c) {
        conn_ = std::move(c);
        done->set_value(ec);
      });
    });
    return fut;
  }

  // Listens on 127.0.0.1 and accepts one connection through kws::async_accept; returns the port.
  unsigned short listen(kws::accept_config cfg, std::shared_ptr<std::promise<error_code>> done) {
    acceptor_.open(asio::ip::tcp::v4());
    acceptor_.bind({asio::ip::make_address("127.0.0.1"), 0});
    acceptor_.listen();
    const auto port = acceptor_.local_endpoint().port();  // before the connection's thread uses the acceptor
    asio::post(ioc_, [this, cfg, done] {
      acceptor_.async_accept([this, cfg, done](error_code ec, asio::ip::tcp::socket s) {
        if (ec) return done->set_value(ec);
        kws::async_accept(
            std::move(s), cfg,
            [](const kws::http_request_info&, std::function<void(kws::accept_decision)> decide) {
              decide(kws::accept_decision::upgrade());
            },
            [this, done](error_code ec, kws::connection c, kws::http_request_info) {
              conn_ = std::move(c);
              done->set_value(ec);
            });
      });
    });
    return port;
  }

  std::future<read_outcome> read_frame() {
    auto done = std::make_shared<std::promise<read_outcome>>();
    auto fut = done->get_future();
    asio::post(ioc_, [this, done] {
      auto buf = std::make_shared<boost::beast::flat_buffer>();
      conn_.async_read_frame(*buf, [buf, done](error_code ec, std::size_t) {
        done->set_value({ec, boost::beast::buffers_to_string(buf->data())});
      });
    });
    return fut;
  }

  std::future<error_code> write_frame(std::string bytes) {
    auto done = std::make_shared<std::promise<error_code>>();
    auto fut = done->get_future();
    asio::post(ioc_, [this, done, data = std::make_shared<std::string>(std::move(bytes))] {
      conn_.async_write_frame(asio::buffer(*data),
                              [data, done](error_code ec, std::size_t) { done->set_value(ec); });
    });
    return fut;
  }

  std::future<error_code> close(kws::close_code code) {
    auto done = std::make_shared<std::promise<error_code>>();
    auto fut = done->get_future();
    asio::post(ioc_, [this, done, code] {
      conn_.async_close(code, [done](error_code ec) { done->set_value(ec); });
    });
    return fut;
  }

  // connection::close, the blocking one, on the connection's thread.
  std::future<error_code> close_blocking(kws::close_code code) {
    auto done = std::make_shared<std::promise<error_code>>();
    auto fut = done->get_future();
    asio::post(ioc_, [this, done, code] {
      error_code ec;
      conn_.close(ec, code);
      done->set_value(ec);
    });
    return fut;
  }

  // Keeps the connection's thread busy until the returned promise is set, so that whatever arrives meanwhile
  // is found together by its next look at the socket.
  std::shared_ptr<std::promise<void>> pause() {
    auto release = std::make_shared<std::promise<void>>();
    auto running = std::make_shared<std::promise<void>>();
    auto paused = running->get_future();
    asio::post(ioc_, [gate = release->get_future().share(), running] {
      running->set_value();
      gate.wait();
    });
    paused.wait();
    return release;
  }

  // Drops the connection (closing its socket), ready for the next dial or accept.
  void reset() {
    on_thread([this] {
      conn_ = kws::connection();
      acceptor_.close();
      return 0;
    });
  }

  std::uint16_t peer_close_code() {
    return on_thread([this] { return conn_.peer_close_code(); });
  }

 private:
  asio::io_context ioc_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{ioc_.get_executor()};
  asio::ip::tcp::acceptor acceptor_{ioc_};
  std::optional<kws::dialer> dialer_;
  kws::connection conn_;
  std::thread thread_;
};

// ---- the two ends, set up in either role ---------------------------------------------------------------

// The role kws plays; the raw peer plays the other.
enum class role { client, server };

struct setup {
  role kws_role;
  bool tls;
};

std::string name_of(const setup& s) {
  return std::string(s.kws_role == role::client ? "KwsDials" : "KwsAccepts") + (s.tls ? "Tls" : "Plain");
}
std::string param_name(const testing::TestParamInfo<setup>& info) {
  return name_of(info.param);
}
void PrintTo(const setup& s, std::ostream* os) {
  *os << name_of(s);
}

struct ssl_ctx_deleter {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using ssl_ctx_ptr = std::unique_ptr<SSL_CTX, ssl_ctx_deleter>;

class conformance : public testing::TestWithParam<setup> {
 protected:
  // Large enough for the 70,000-byte message; the too-large cases go just past it.
  static constexpr std::size_t max_frame = 80000;

  static void SetUpTestSuite() {
    // TLS writes to a connection that kws has already failed must fail, not kill the test.
    std::signal(SIGPIPE, SIG_IGN);
    certs_ = std::make_unique<kws::test::tls_files>(kws::test::make_test_certificates());
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(certs_->dir);
    certs_.reset();
  }

  void SetUp() override { open(); }

  // A fresh connection in place of the current one.
  void reopen() {
    kws.reset();
    peer.close();
    open();
  }

  void open() {
    if (GetParam().kws_role == role::client) {
      dial_to_peer();
    } else {
      connect_to_kws();
    }
  }

  bool kws_is_client() const { return GetParam().kws_role == role::client; }

  // A frame from the peer, masked when the peer is the client (as RFC 6455 requires of clients only).
  void send(const frame_spec& f) { ASSERT_TRUE(peer.send(encode(f, !kws_is_client()))); }
  void send_all(const std::vector<frame_spec>& frames) {
    std::string bytes;
    for (const auto& f : frames) bytes += encode(f, !kws_is_client());
    ASSERT_TRUE(peer.send(bytes));
  }

  // The kws read that the peer's bytes complete.
  read_outcome read() {
    auto f = kws.read_frame();
    auto r = within(f);
    if (!r) {
      ADD_FAILURE() << "the read did not complete";
      return {};
    }
    return *r;
  }

  // The next frame the peer gets, which must be a close frame, masked as kws's role requires.
  received expect_close() {
    const auto r = peer.read_frame();
    if (r.what != received::a_frame || r.opcode != op_close) {
      ADD_FAILURE() << "expected a close frame, got " << r;
    } else {
      EXPECT_TRUE(r.fin);
      EXPECT_EQ(r.masked, kws_is_client());
    }
    return r;
  }

  // What a protocol violation ended with: the error of the read that was waiting, and what the peer got
  // first after sending `bytes` (a close frame, or the end of the stream).
  struct failure {
    error_code ec;
    received answer;
  };
  failure after_sending(const std::string& bytes) {
    auto pending = kws.read_frame();
    failure f;
    // Not checked: a connection that fails at the header may close before the rest has been sent.
    peer.send(bytes);
    f.answer = peer.read_frame();
    peer.finish();
    if (const auto r = within(pending)) {
      f.ec = r->ec;
    } else {
      ADD_FAILURE() << "the read did not complete";
    }
    return f;
  }
  // What the waiting read ends with when the peer sends `bytes` and then closes TCP at once; over TLS, after
  // a close_notify or (`dropped`) without one.
  error_code after_ending_with(const std::string& bytes, bool dropped) {
    auto pending = kws.read_frame();
    if (!peer.send(bytes)) ADD_FAILURE() << "the peer could not send";
    if (dropped) {
      peer.drop();
    } else {
      peer.close();
    }
    const auto r = within(pending);
    if (!r) ADD_FAILURE() << "the read did not complete";
    return r ? r->ec : error_code{};
  }
  // The read fails with `want` and the peer gets a close frame with `code`.
  void expect_failure(const std::string& bytes, error_code want, std::uint16_t code) {
    const auto f = after_sending(bytes);
    EXPECT_EQ(f.ec, want) << f.ec.message();
    ASSERT_EQ(f.answer.what, received::a_frame) << f.answer;
    EXPECT_EQ(f.answer.opcode, op_close) << f.answer;
    EXPECT_EQ(f.answer.close_code(), code);
  }
  std::string wire(const frame_spec& f) const { return encode(f, !kws_is_client()); }

  kws_end kws;
  raw_peer peer;

 private:
  void dial_to_peer() {
    const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::listen(listener, 4), 0);
    ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    const auto port = std::to_string(ntohs(addr.sin_port));

    ssl_ctx_ptr ctx;
    if (GetParam().tls) {
      ctx.reset(SSL_CTX_new(TLS_server_method()));
      ASSERT_EQ(SSL_CTX_use_certificate_chain_file(ctx.get(), certs_->cert_pem.c_str()), 1);
      ASSERT_EQ(SSL_CTX_use_PrivateKey_file(ctx.get(), certs_->key_pem.c_str(), SSL_FILETYPE_PEM), 1);
      SSL_CTX_set_options(ctx.get(), SSL_OP_IGNORE_UNEXPECTED_EOF);
    }
    auto dialled = kws.dial((GetParam().tls ? "wss://localhost:" : "ws://127.0.0.1:") + port + "/kafka",
                            kws::dialer_config{.tls = GetParam().tls,
                                               .ca_file = GetParam().tls ? certs_->ca_pem : "",
                                               .handshake_timeout = wait_limit,
                                               .max_frame_bytes = max_frame});
    const bool accepted = peer.accept_from(listener, ctx.get());
    ::close(listener);
    ASSERT_TRUE(accepted);
    const auto request = peer.read_http_head();
    ASSERT_TRUE(request.starts_with("GET /kafka HTTP/1.1\r\n")) << request;
    const auto key = header_value(request, "sec-websocket-key");
    ASSERT_FALSE(key.empty()) << request;
    ASSERT_TRUE(
        peer.send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Accept: " +
                  accept_key(key) + "\r\n\r\n"));
    const auto ec = within(dialled);
    ASSERT_TRUE(ec) << "the dial did not complete";
    ASSERT_FALSE(*ec) << ec->message();
  }

  void connect_to_kws() {
    kws::accept_config cfg{.max_frame_bytes = max_frame, .handshake_timeout = wait_limit};
    ssl_ctx_ptr ctx;
    if (GetParam().tls) {
      cfg.tls = kws::make_server_tls_context(certs_->cert_pem, certs_->key_pem);
      ctx.reset(SSL_CTX_new(TLS_client_method()));
      SSL_CTX_set_options(ctx.get(), SSL_OP_IGNORE_UNEXPECTED_EOF);
    }
    auto done = std::make_shared<std::promise<error_code>>();
    auto accepted = done->get_future();
    const auto port = kws.listen(cfg, done);
    ASSERT_TRUE(peer.connect_to(port, ctx.get()));
    const std::string key = "dGhlIHNhbXBsZSBub25jZQ==";
    ASSERT_TRUE(
        peer.send("GET /kafka HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: " +
                  key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"));
    const auto response = peer.read_http_head();
    ASSERT_TRUE(response.starts_with("HTTP/1.1 101")) << response;
    // The sample key and answer of RFC 6455, section 1.3.
    ASSERT_EQ(header_value(response, "sec-websocket-accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") << response;
    const auto ec = within(accepted);
    ASSERT_TRUE(ec) << "the accept did not complete";
    ASSERT_FALSE(*ec) << ec->message();
  }

  static inline std::unique_ptr<kws::test::tls_files> certs_;
};

// ---- what every conforming endpoint does, in both roles --------------------------------------------------

using WebSocketConformance = conformance;

TEST_P(WebSocketConformance, ReassemblesAFragmentedMessageAndAnswersAPingBetweenItsFragments) {
  const auto f = frame(pattern(3000));
  send(spec(op_binary, f.substr(0, 1000), false));
  send(spec(op_ping, "between fragments"));
  send(spec(op_continuation, f.substr(1000, 1500), false));
  send(spec(op_continuation, f.substr(2500)));
  const auto r = read();
  ASSERT_FALSE(r.ec) << r.ec.message();
  EXPECT_EQ(r.bytes, f);
  const auto pong = peer.read_frame();
  ASSERT_EQ(pong.what, received::a_frame) << pong;
  EXPECT_EQ(pong.opcode, op_pong);
  EXPECT_TRUE(pong.fin);
  EXPECT_EQ(pong.masked, kws_is_client());
  EXPECT_EQ(pong.payload, "between fragments");
}

TEST_P(WebSocketConformance, ReadsManyMessagesSentInOneWriteInOrder) {
  std::vector<frame_spec> frames;
  for (int i = 0; i < 30; ++i)
    frames.push_back(spec(op_binary, frame(pattern(static_cast<std::size_t>(i) * 11, i))));
  send_all(frames);
  for (const auto& f : frames) {
    const auto r = read();
    ASSERT_FALSE(r.ec) << r.ec.message();
    EXPECT_EQ(r.bytes, f.payload);
  }
}

TEST_P(WebSocketConformance, ReadsAMessageThatArrivesOneByteAtATime) {
  // 16-bit extended length: the header alone takes four (or eight, masked) writes.
  const auto f = frame(pattern(300));
  ASSERT_TRUE(peer.send_byte_by_byte(encode(spec(op_binary, f), !kws_is_client())));
  const auto r = read();
  ASSERT_FALSE(r.ec) << r.ec.message();
  EXPECT_EQ(r.bytes, f);
}

TEST_P(WebSocketConformance, AnswersPingsWithTheirPayloadWhileReading) {
  auto pending = kws.read_frame();
  for (const auto& payload : {std::string(), std::string("p"), pattern(125, 9)}) {
    send(spec(op_ping, payload));
    const auto pong = peer.read_frame();
    ASSERT_EQ(pong.what, received::a_frame) << pong;
    EXPECT_EQ(pong.opcode, op_pong);
    EXPECT_EQ(pong.payload, payload);
  }
  send(spec(op_binary, frame("after the pings")));
  const auto r = within(pending);
  ASSERT_TRUE(r) << "the read did not complete";
  ASSERT_FALSE(r->ec) << r->ec.message();
  EXPECT_EQ(r->bytes, frame("after the pings"));
}

TEST_P(WebSocketConformance, IgnoresAnUnsolicitedPong) {
  send(spec(op_pong, "unsolicited"));
  send(spec(op_binary, frame("next")));
  const auto r = read();
  ASSERT_FALSE(r.ec) << r.ec.message();
  EXPECT_EQ(r.bytes, frame("next"));
  // Nothing answered the pong: the next thing the peer gets is what kws writes now.
  auto w = kws.write_frame(frame("reply"));
  ASSERT_EQ(within(w), std::optional<error_code>(error_code{}));
  const auto got = peer.read_frame();
  ASSERT_EQ(got.what, received::a_frame) << got;
  EXPECT_EQ(got.opcode, op_binary);
  EXPECT_EQ(got.payload, frame("reply"));
}

TEST_P(WebSocketConformance, ReadsMessagesOfEveryLengthForm) {
  for (const std::size_t size : {10u, 125u, 126u, 200u, 65535u, 65536u, 70000u}) {
    const auto f = frame(pattern(size - 4, static_cast<unsigned>(size)));
    send(spec(op_binary, f));
    const auto r = read();
    ASSERT_FALSE(r.ec) << size << ": " << r.ec.message();
    EXPECT_EQ(r.bytes, f) << size;
  }
}

TEST_P(WebSocketConformance, WritesEachFrameAsOneBinaryMessageWithTheShortestLengthForm) {
  const std::vector<std::size_t> sizes{10, 125, 126, 200, 65535, 65536, 70000};
  std::set<std::array<unsigned char, 4>> masks;
  for (const auto size : sizes) {
    const auto f = frame(pattern(size - 4, static_cast<unsigned>(size)));
    auto w = kws.write_frame(f);
    const auto got = peer.read_frame();
    ASSERT_EQ(within(w), std::optional<error_code>(error_code{})) << size;
    ASSERT_EQ(got.what, received::a_frame) << size << ": " << got;
    EXPECT_TRUE(got.fin) << size;
    EXPECT_EQ(got.rsv, 0) << size;
    EXPECT_EQ(got.opcode, op_binary) << size;
    // A client masks every frame, a server none (RFC 6455, section 5.1).
    EXPECT_EQ(got.masked, kws_is_client()) << size;
    const std::size_t length_bytes = size < 126 ? 0 : size <= 0xffff ? 2 : 8;
    EXPECT_EQ(got.header.size(), 2 + length_bytes + (kws_is_client() ? 4 : 0)) << size;
    const auto len7 = static_cast<unsigned char>(got.header[1]) & 0x7f;
    EXPECT_EQ(len7, size < 126 ? size : size <= 0xffff ? 126u : 127u) << size;
    EXPECT_EQ(got.payload, f) << size;
    masks.insert(got.mask);
  }
  // A fresh, unpredictable key for every frame (section 5.3); seven random keys all differ but for a
  // chance of about 5e-9.
  if (kws_is_client()) {
    EXPECT_EQ(masks.size(), sizes.size());
  }
}

TEST_P(WebSocketConformance, ThePeersCloseEndsTheReadAndIsEchoed) {
  auto pending = kws.read_frame();
  send(spec(op_close, close_payload(1000)));
  EXPECT_EQ(expect_close().payload, close_payload(1000));
  peer.finish();
  const auto r = within(pending);
  ASSERT_TRUE(r) << "the read did not complete";
  EXPECT_EQ(r->ec, asio::error::eof) << r->ec.message();
  EXPECT_EQ(kws.peer_close_code(), 1000);
}

TEST_P(WebSocketConformance, ThePeersCloseWithAReasonIsEchoedWithItsCodeAlone) {
  auto pending = kws.read_frame();
  send(spec(op_close, close_payload(4001, "going to lunch")));
  // RFC 6455, section 5.5.1: the answer "typically echos the status code it received"; the reason is not.
  EXPECT_EQ(expect_close().payload, close_payload(4001));
  peer.finish();
  const auto r = within(pending);
  ASSERT_TRUE(r) << "the read did not complete";
  EXPECT_EQ(r->ec, asio::error::eof) << r->ec.message();
  EXPECT_EQ(kws.peer_close_code(), 4001);
}

TEST_P(WebSocketConformance, AnEmptyCloseIsAnsweredWithAnEmptyCloseAndLeavesNoCode) {
  // RFC 6455 5.5.1: the answer echoes the status code received; none was.
  auto pending = kws.read_frame();
  send(spec(op_close, ""));
  EXPECT_EQ(expect_close().payload, "");
  peer.finish();
  const auto r = within(pending);
  ASSERT_TRUE(r) << "the read did not complete";
  EXPECT_EQ(r->ec, asio::error::eof) << r->ec.message();
  EXPECT_EQ(kws.peer_close_code(), 0);
}

TEST_P(WebSocketConformance, ACloseSendsItsCodeAndCompletesOnThePeersAnswer) {
  for (const bool blocking : {false, true}) {
    SCOPED_TRACE(blocking ? "connection::close" : "connection::async_close");
    if (blocking) reopen();
    const auto code = blocking ? kws::close_code::policy_violation : kws::close_code::going_away;
    auto closing = blocking ? kws.close_blocking(code) : kws.close(code);
    EXPECT_EQ(expect_close().payload, close_payload(static_cast<std::uint16_t>(code)));
    send(spec(op_close, close_payload(static_cast<std::uint16_t>(code))));
    if (!kws_is_client()) {
      // The server ends TCP first (RFC 6455, section 7.1.1): it shuts down its sending side, then waits for
      // the client's end of stream.
      EXPECT_EQ(peer.read_frame().what, received::eof);
    }
    peer.finish();
    const auto ec = within(closing);
    ASSERT_TRUE(ec) << "the close did not complete";
    EXPECT_FALSE(*ec) << ec->message();
  }
}

// ---- protocol violations: the read fails, and the connection is failed with a close code ------------------

TEST_P(WebSocketConformance, RejectsATextMessageWithoutClosing) {
  send(spec(op_text, frame("text")));
  const auto r = read();
  EXPECT_EQ(r.ec, kws::errc::invalid_message_type) << r.ec.message();
  // The read failing sends nothing: the next thing the peer gets is what kws writes now.
  auto w = kws.write_frame(frame("still open"));
  ASSERT_EQ(within(w), std::optional<error_code>(error_code{}));
  const auto got = peer.read_frame();
  ASSERT_EQ(got.what, received::a_frame) << got;
  EXPECT_EQ(got.opcode, op_binary);
}

TEST_P(WebSocketConformance, FailsOnAReservedBit) {
  auto f = spec(op_binary, frame("rsv1"));
  f.rsv = rsv1;  // no extension was negotiated that would give it a meaning
  expect_failure(wire(f), websocket::error::bad_reserved_bits, 1002);
}

TEST_P(WebSocketConformance, FailsOnAReservedDataOpcode) {
  expect_failure(wire(spec(0x3, frame("op 3"))), websocket::error::bad_opcode, 1002);
}

TEST_P(WebSocketConformance, FailsOnAReservedControlOpcode) {
  expect_failure(wire(spec(0xB, "op B")), websocket::error::bad_opcode, 1002);
}

TEST_P(WebSocketConformance, FailsOnAControlFrameOver125Bytes) {
  expect_failure(wire(spec(op_ping, pattern(126))), websocket::error::bad_control_size, 1002);
}

TEST_P(WebSocketConformance, FailsOnAFragmentedControlFrame) {
  expect_failure(wire(spec(op_ping, "half a ping", false)), websocket::error::bad_control_fragment, 1002);
}

TEST_P(WebSocketConformance, FailsOnAContinuationWithNoMessageStarted) {
  expect_failure(wire(spec(op_continuation, frame("orphan"))), websocket::error::bad_continuation, 1002);
}

TEST_P(WebSocketConformance, FailsOnANewMessageBeforeTheFragmentedOneEnds) {
  const auto f = frame(pattern(100));
  // RFC 6455 5.4: the fragments of one message may not be interleaved with another's.
  expect_failure(wire(spec(op_binary, f.substr(0, 50), false)) + wire(spec(op_binary, f.substr(50))),
                 websocket::error::bad_data_frame, 1002);
}

TEST_P(WebSocketConformance, FailsOnATextMessageBeforeTheFragmentedOneEnds) {
  const auto f = frame(pattern(100));
  // A protocol error (1002), not a text message to refuse (1003): the text frame starts a second message.
  expect_failure(wire(spec(op_binary, f.substr(0, 50), false)) + wire(spec(op_text, f.substr(50))),
                 websocket::error::bad_data_frame, 1002);
}

TEST_P(WebSocketConformance, FailsOnAFrameMaskedTheWrongWay) {
  // A client must mask, a server must not (RFC 6455, section 5.1).
  expect_failure(encode(spec(op_binary, frame("wrong mask")), kws_is_client()),
                 kws_is_client() ? websocket::error::bad_masked_frame : websocket::error::bad_unmasked_frame,
                 1002);
}

TEST_P(WebSocketConformance, FailsOnAMessageOverTheFrameLimit) {
  expect_failure(wire(spec(op_binary, frame(pattern(max_frame + 1)))), kws::errc::frame_too_large, 1009);
}

TEST_P(WebSocketConformance, FailsOnAnOversizedLengthAtTheHeaderWithoutWaitingForThePayload) {
  auto f = spec(op_binary, "");
  f.announced = max_frame + 5;  // and nothing after the header
  expect_failure(wire(f), kws::errc::frame_too_large, 1009);
}

TEST_P(WebSocketConformance, FailsOnAFragmentedMessageThatGrowsOverTheFrameLimit) {
  const auto f = frame(pattern(max_frame + 1));
  expect_failure(
      wire(spec(op_binary, f.substr(0, 50000), false)) + wire(spec(op_continuation, f.substr(50000))),
      kws::errc::frame_too_large, 1009);
}

TEST_P(WebSocketConformance, AcceptsAMessageOfExactlyTheFrameLimit) {
  const auto f = frame(pattern(max_frame));
  send(spec(op_binary, f));
  const auto r = read();
  ASSERT_FALSE(r.ec) << r.ec.message();
  EXPECT_EQ(r.bytes, f);
}

TEST_P(WebSocketConformance, FailsOnALengthNotInItsShortestForm) {
  // RFC 6455, section 5.2: "the minimal number of bytes MUST be used to encode the length".
  auto f16 = spec(op_binary, frame("short"));
  f16.length_form = 126;
  expect_failure(wire(f16), websocket::error::bad_size, 1002);
}

TEST_P(WebSocketConformance, FailsOnA64BitLengthInsteadOfA16BitOne) {
  auto f64 = spec(op_binary, frame(pattern(1000)));
  f64.length_form = 127;
  expect_failure(wire(f64), websocket::error::bad_size, 1002);
}

TEST_P(WebSocketConformance, FailsOnA64BitLengthWithItsHighestBitSet) {
  // RFC 6455, section 5.2: that bit MUST be 0, so this is a protocol error, whatever the limit.
  auto f = spec(op_binary, "");
  f.announced = (std::uint64_t{1} << 63) | 1000;
  expect_failure(wire(f), websocket::error::bad_size, 1002);
}

TEST_P(WebSocketConformance, FailsOnACloseReasonThatIsNotUtf8) {
  // Closed with 1002 (protocol error), not 1007 (data inconsistent with its type).
  expect_failure(wire(spec(op_close, close_payload(1000, "\xff\xfe"))), websocket::error::bad_close_payload,
                 1002);
}

TEST_P(WebSocketConformance, FailsOnACloseWithAOneBytePayload) {
  expect_failure(wire(spec(op_close, std::string(1, '\x03'))), websocket::error::bad_close_size, 1002);
}

TEST_P(WebSocketConformance, FailsOnACloseCodeThatMustNotBeSent) {
  expect_failure(wire(spec(op_close, close_payload(1005))), websocket::error::bad_close_code, 1002);
}

TEST_P(WebSocketConformance, FailsOnACloseCodeBelow1000) {
  expect_failure(wire(spec(op_close, close_payload(999))), websocket::error::bad_close_code, 1002);
}

// ---- the peer vanishing mid-frame -------------------------------------------------------------------------

TEST_P(WebSocketConformance, ReportsATruncatedFrameWhenTheStreamEndsInsideAFrameHeader) {
  for (const bool dropped : {false, true}) {
    SCOPED_TRACE(dropped ? "dropped" : "closed");
    if (dropped) reopen();
    // Three bytes: the first two and one of the 16-bit length.
    EXPECT_EQ(after_ending_with(wire(spec(op_binary, frame(pattern(1000)))).substr(0, 3), dropped),
              kws::errc::truncated_frame);
  }
}

TEST_P(WebSocketConformance, ReportsATruncatedFrameWhenTheStreamEndsInsideThePayload) {
  for (const bool dropped : {false, true}) {
    SCOPED_TRACE(dropped ? "dropped" : "closed");
    if (dropped) reopen();
    EXPECT_EQ(after_ending_with(wire(spec(op_binary, frame(pattern(1000)))).substr(0, 500), dropped),
              kws::errc::truncated_frame);
  }
}

TEST_P(WebSocketConformance, ReportsATruncatedFrameWhenTheStreamEndsBetweenFragments) {
  for (const bool dropped : {false, true}) {
    SCOPED_TRACE(dropped ? "dropped" : "closed");
    if (dropped) reopen();
    EXPECT_EQ(after_ending_with(wire(spec(op_binary, frame(pattern(1000)), false)), dropped),
              kws::errc::truncated_frame);
  }
}

// A read that takes the last message may find less than it asked for while the peer's FIN is already there:
// that FIN raised no wake-up of its own, so the next read must still see it rather than wait for one.
TEST_P(WebSocketConformance, ReportsTheEndWhenTheStreamEndsRightAfterAMessage) {
  for (int i = 0; i < 5; ++i) {
    SCOPED_TRACE(i);
    if (i > 0) reopen();
    const auto message = frame(pattern(300, i));
    // Odd rounds: the read waits before the bytes come, and both come while its thread is busy, to be seen
    // by one wake-up; even ones: message and FIN are there before the read starts.
    std::optional<std::future<read_outcome>> pending;
    std::shared_ptr<std::promise<void>> paused;
    if (i % 2 == 1) {
      pending = kws.read_frame();
      // Two turns of its thread: the read has started and, finding nothing, is waiting.
      for (int turn = 0; turn < 2; ++turn) kws.on_thread([] { return 0; });
      paused = kws.pause();
    }
    ASSERT_TRUE(peer.send(wire(spec(op_binary, message))));
    peer.close();
    if (paused) paused->set_value();
    if (!pending) pending = kws.read_frame();
    const auto first = within(*pending);
    ASSERT_TRUE(first) << "the message was not read";
    EXPECT_FALSE(first->ec) << first->ec.message();
    EXPECT_EQ(first->bytes, message);
    auto next = kws.read_frame();
    const auto end = within(next);
    ASSERT_TRUE(end) << "the end of the stream was not seen";
    EXPECT_EQ(end->ec, asio::error::eof) << end->ec.message();
  }
}

INSTANTIATE_TEST_SUITE_P(Roles, WebSocketConformance,
                         testing::Values(setup{role::client, false}, setup{role::server, false},
                                         setup{role::client, true}, setup{role::server, true}),
                         param_name);

}  // namespace
