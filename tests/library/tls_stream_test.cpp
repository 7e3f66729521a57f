// The private TLS stream (src/io/tls_stream.hpp) over real sockets on 127.0.0.1, certificates made at test
// time: both directions at once, a large write, how the TLS stream ends (close_notify or not), a refused
// certificate worded as Asio's ssl::stream had it, and an idle read that holds no buffer; over a bare socket
// (as the relay's TLS side and kws::tls_socket use it), reads after a readiness wait of the caller's own and
// per-operation cancellation.
#include "io/tls_stream.hpp"
#include "io/read_wait.hpp"
#include "run_until.hpp"
#include "ws/tls_verify.hpp"
#include "ws_test_server.hpp"

#include <kws/accept.hpp>
#include <kws/tls_socket.hpp>

#include <malloc.h>

#include <gtest/gtest.h>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace ssl = asio::ssl;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using stream = kws::detail::tls_stream<beast::tcp_stream>;
using kws::test::run_until;

const kws::test::tls_files& certs() {
  static const auto files = kws::test::make_test_certificates();
  return files;
}

std::pair<tcp::socket, tcp::socket> tcp_pair(asio::io_context& ioc) {
  tcp::acceptor acc(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  tcp::socket a(ioc), b(ioc);
  std::optional<error_code> accepted, connected;
  acc.async_accept(b, [&](error_code ec) { accepted = ec; });
  a.async_connect(acc.local_endpoint(), [&](error_code ec) { connected = ec; });
  EXPECT_TRUE(run_until(ioc, [&] { return accepted && connected; }));
  EXPECT_FALSE(*accepted || *connected);
  return {std::move(a), std::move(b)};
}

std::vector<unsigned char> pattern(std::size_t n) {
  std::vector<unsigned char> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<unsigned char>(i * 7 + i / 251);
  return v;
}

// Both handshakes; the client checks the server's name. Then reads wait for readiness without a buffer.
template <class Stream>
void handshake_both(asio::io_context& ioc, Stream& client, Stream& server) {
  ASSERT_FALSE(kws::detail::verify_server(client.native_handle(), "localhost", false));
  std::optional<error_code> c, s;
  client.async_handshake(ssl::stream_base::client, [&](error_code ec) { c = ec; });
  server.async_handshake(ssl::stream_base::server, [&](error_code ec) { s = ec; });
  ASSERT_TRUE(run_until(ioc, [&] { return c && s; }));
  ASSERT_FALSE(*c) << c->message();
  ASSERT_FALSE(*s) << s->message();
  client.read_on_readiness();
  server.read_on_readiness();
}

// A connected pair of streams over `Next` (not yet shaken hands).
template <class Next>
class stream_pair : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ctx_ = kws::make_server_tls_context(certs().cert_pem, certs().key_pem);
    client_ctx_ = kws::make_client_tls_context({.ca_file = certs().ca_pem});
    auto [a, b] = tcp_pair(ioc_);
    client_.emplace(std::move(a), *client_ctx_);
    server_.emplace(std::move(b), *server_ctx_);
  }

  void handshake() { handshake_both(ioc_, *client_, *server_); }

  asio::io_context ioc_;
  std::shared_ptr<ssl::context> server_ctx_, client_ctx_;
  std::optional<kws::detail::tls_stream<Next>> client_, server_;
};

class TlsStream : public stream_pair<beast::tcp_stream> {
 protected:
  // Reads into `into` until it holds `n` bytes or a read fails.
  error_code read_all(stream& from, std::vector<unsigned char>& into, std::size_t n) {
    std::optional<error_code> done;
    into.resize(n);
    asio::async_read(from, asio::buffer(into), [&](error_code ec, std::size_t) { done = ec; });
    EXPECT_TRUE(run_until(ioc_, [&] { return done.has_value(); }));
    return done.value_or(asio::error::timed_out);
  }

  // The error the next read of `s` ends with.
  error_code read_end(stream& s) {
    std::optional<error_code> done;
    unsigned char b[64];
    s.async_read_some(asio::buffer(b), [&](error_code ec, std::size_t) { done = ec; });
    EXPECT_TRUE(run_until(ioc_, [&] { return done.has_value(); }));
    return done.value_or(asio::error::timed_out);
  }
};

TEST_F(TlsStream, CarriesBytesBothWaysWithAReadAndAWriteOutstandingOnEachSide) {
  handshake();
  const auto to_server = pattern(3000), to_client = pattern(5000);
  std::vector<unsigned char> at_server(to_server.size()), at_client(to_client.size());
  int done = 0;
  std::vector<error_code> errors;
  const auto count = [&](error_code ec, std::size_t) {
    if (ec) errors.push_back(ec);
    ++done;
  };
  // Reads first, so that each write finds the peer's read waiting.
  asio::async_read(*server_, asio::buffer(at_server), count);
  asio::async_read(*client_, asio::buffer(at_client), count);
  asio::async_write(*client_, asio::buffer(to_server), count);
  asio::async_write(*server_, asio::buffer(to_client), count);
  ASSERT_TRUE(run_until(ioc_, [&] { return done == 4; }));
  EXPECT_TRUE(errors.empty()) << errors.front().message();
  EXPECT_EQ(at_server, to_server);
  EXPECT_EQ(at_client, to_client);
}

TEST_F(TlsStream, WritesAMebibyteInOneCall) {
  handshake();
  const auto big = pattern(1024 * 1024);
  std::optional<error_code> wrote;
  asio::async_write(*client_, asio::buffer(big), [&](error_code ec, std::size_t) { wrote = ec; });
  std::vector<unsigned char> got;
  EXPECT_FALSE(read_all(*server_, got, big.size()));
  ASSERT_TRUE(run_until(ioc_, [&] { return wrote.has_value(); }));
  EXPECT_FALSE(*wrote);
  EXPECT_TRUE(got == big);
  // Everything sent and taken: no ciphertext is held either side.
  EXPECT_EQ(client_->buffered_capacity(), 0u);
  EXPECT_EQ(server_->buffered_capacity(), 0u);
}

TEST_F(TlsStream, ATcpEndWithoutCloseNotifyIsATruncation) {
  handshake();
  // A FIN (a close could be a reset: the server's session tickets may be unread at the client).
  client_->next_layer().socket().shutdown(tcp::socket::shutdown_send);
  EXPECT_EQ(read_end(*server_), ssl::error::stream_truncated);
}

TEST_F(TlsStream, CloseNotifyEndsTheStreamCleanly) {
  handshake();
  std::optional<error_code> shut;
  client_->async_shutdown([&](error_code ec) { shut = ec; });
  EXPECT_EQ(read_end(*server_), asio::error::eof);
  ASSERT_TRUE(shut.has_value());
  EXPECT_FALSE(*shut);
  client_->next_layer().socket().shutdown(tcp::socket::shutdown_send);
  EXPECT_EQ(read_end(*server_), asio::error::eof);
}

TEST_F(TlsStream, BlockingReadsAndWritesWorkAfterTheHandshake) {
  handshake();
  const auto bytes = pattern(70000);
  error_code ec;
  asio::write(*client_, asio::buffer(bytes), ec);
  ASSERT_FALSE(ec) << ec.message();
  std::vector<unsigned char> got(bytes.size());
  asio::read(*server_, asio::buffer(got), ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_TRUE(got == bytes);
}

TEST_F(TlsStream, AnIdleReadHoldsNoBuffer) {
  handshake();
  std::optional<error_code> read;
  std::size_t n = 0;
  unsigned char b[256];
  server_->async_read_some(asio::buffer(b), [&](error_code ec, std::size_t got) {
    read = ec;
    n = got;
  });
  // The read is queued on the socket: nothing more is ready to run.
  ioc_.poll();
  ASSERT_FALSE(read.has_value());
  EXPECT_EQ(server_->buffered_capacity(), 0u);
  EXPECT_EQ(client_->buffered_capacity(), 0u);

  const std::string hello = "hello";
  asio::write(*client_, asio::buffer(hello));
  ASSERT_TRUE(run_until(ioc_, [&] { return read.has_value(); }));
  EXPECT_FALSE(*read);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(b), n), hello);
  EXPECT_EQ(server_->buffered_capacity(), 0u);
}

TEST_F(TlsStream, ReadNowSaysWouldBlockUntilBytesCome) {
  handshake();
  unsigned char b[64];
  error_code ec;
  EXPECT_EQ(server_->read_now(asio::buffer(b), ec), 0u);
  EXPECT_EQ(ec, asio::error::would_block);
  EXPECT_EQ(server_->buffered_capacity(), 0u);
  asio::write(*client_, asio::buffer(std::string("x")));
  ASSERT_TRUE(run_until(ioc_, [&] {
    server_->read_now(asio::buffer(b), ec);
    return ec != asio::error::would_block;
  }));
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(b[0], 'x');
}

// The failure a caller reports (tls_failure) reads as it did over Asio's ssl::stream, for the same refusal.
TEST_F(TlsStream, ARefusedCertificateFailsAsAsiosStreamDid) {
  // Verified against a CA that did not sign the server's certificate.
  const auto other = kws::test::make_self_signed_certificate(certs());
  auto stranger_ctx = kws::make_client_tls_context({.ca_file = other.cert_pem});

  const auto failure = [&](auto& client, auto& server) {
    EXPECT_FALSE(kws::detail::verify_server(client.native_handle(), "localhost", false));
    std::optional<error_code> c, s;
    client.async_handshake(ssl::stream_base::client, [&](error_code ec) { c = ec; });
    server.async_handshake(ssl::stream_base::server, [&](error_code ec) { s = ec; });
    EXPECT_TRUE(run_until(ioc_, [&] { return c && s; }));
    EXPECT_TRUE(c && *c);
    EXPECT_TRUE(s && *s);
    return std::pair(c.value_or(error_code()),
                     kws::detail::tls_failure(client.native_handle(), c.value_or(error_code()), "the broker",
                                              "localhost"));
  };

  auto [a, b] = tcp_pair(ioc_);
  stream ours_client(std::move(a), *stranger_ctx), ours_server(std::move(b), *server_ctx_);
  const auto ours = failure(ours_client, ours_server);

  auto [x, y] = tcp_pair(ioc_);
  ssl::stream<tcp::socket> asio_client(std::move(x), *stranger_ctx), asio_server(std::move(y), *server_ctx_);
  const auto theirs = failure(asio_client, asio_server);

  EXPECT_EQ(ours.first, theirs.first) << ours.first.message() << " / " << theirs.first.message();
  EXPECT_EQ(ours.second, theirs.second);
  EXPECT_EQ(ours.second,
            "the broker's TLS certificate was refused: unable to get local issuer certificate (localhost)");
}

// OpenSSL keeps a buffer of about 16 KiB after a client has read the server's session tickets, which
// SSL_MODE_RELEASE_BUFFERS does not give back: a read that is about to wait gives it back (measured on the
// heap, over many connections).
TEST_F(TlsStream, AClientThatReadTheSessionTicketsHoldsNoOpenSslBufferOnceItWaits) {
  std::vector<std::pair<std::unique_ptr<stream>, std::unique_ptr<stream>>> pairs;
  double grown = 0;
  const int n = 50;
  for (int i = 0; i < n; ++i) {
    auto [a, b] = tcp_pair(ioc_);
    auto c = std::make_unique<stream>(std::move(a), *client_ctx_);
    auto s = std::make_unique<stream>(std::move(b), *server_ctx_);
    ASSERT_FALSE(kws::detail::verify_server(c->native_handle(), "localhost", false));
    int done = 0;
    c->async_handshake(ssl::stream_base::client, [&](error_code ec) { done += ec ? 10 : 1; });
    s->async_handshake(ssl::stream_base::server, [&](error_code ec) { done += ec ? 10 : 1; });
    ASSERT_TRUE(run_until(ioc_, [&] { return done >= 2; }));
    ASSERT_EQ(done, 2);
    // The tickets are on their way or here: wait for them, then read until nothing is left.
    error_code waited;
    c->next_layer().socket().wait(tcp::socket::wait_read, waited);
    const auto before = mallinfo2().uordblks;
    unsigned char b1[16];
    error_code ec;
    c->read_now(asio::buffer(b1), ec);
    ASSERT_EQ(ec, asio::error::would_block);
    grown += static_cast<double>(mallinfo2().uordblks) - static_cast<double>(before);
    pairs.emplace_back(std::move(c), std::move(s));
  }
  EXPECT_LT(grown / n, 4096.0);
}

// The stream over a bare socket, as the relay's TLS side and kws::tls_socket have it, its handshake done.
class TlsStreamOverASocket : public stream_pair<tcp::socket> {
 protected:
  void SetUp() override {
    stream_pair::SetUp();
    handshake();
  }

  // Waits (without a buffer) for the server's socket to become readable.
  bool wait_readable() {
    std::optional<error_code> woken;
    auto& s = server_->next_layer();
    kws::detail::async_wait_readable(s, kws::detail::reactor_of(s), [&](error_code e) { woken = e; });
    return run_until(ioc_, [&] { return woken.has_value(); }) && !*woken;
  }

  // The relay's way to read: read_now until `into` holds `n` bytes or reading ends, and whenever it would
  // block, a readiness wait; nothing is held meanwhile.
  error_code read_now_until(std::string& into, std::size_t n) {
    unsigned char got[64];
    error_code ec;
    while (into.size() < n) {
      into.append(reinterpret_cast<const char*>(got), server_->read_now(asio::buffer(got), ec));
      if (ec && ec != asio::error::would_block) return ec;
      if (!ec) continue;
      EXPECT_EQ(server_->buffered_capacity(), 0u);
      if (!wait_readable()) return asio::error::timed_out;
    }
    return ec;
  }
};

// Over a bare socket, as the relay's TLS side reads: read_now until it would block, then a wait for
// readability of the caller's own (io/read_wait.hpp), during which neither side holds ciphertext, then
// read_now again; the peer's close_notify reads as eof.
TEST_F(TlsStreamOverASocket, ReadsNowAfterAReadinessWaitOfItsOwnHoldingNothingMeanwhile) {
  std::string read;
  const std::string hello = "hello over a bare socket";
  asio::write(*client_, asio::buffer(hello));
  EXPECT_FALSE(read_now_until(read, hello.size()));
  EXPECT_EQ(read, hello);
  EXPECT_EQ(client_->buffered_capacity(), 0u);

  std::optional<error_code> shut;
  client_->async_shutdown([&](error_code e) { shut = e; });
  EXPECT_EQ(read_now_until(read, hello.size() + 1), asio::error::eof);
  EXPECT_EQ(read, hello);
  ASSERT_TRUE(run_until(ioc_, [&] { return shut.has_value(); }));
  EXPECT_FALSE(*shut);
}

// A read waiting for the peer ends with operation_aborted when its cancellation slot is signalled (as
// kws::tls_socket's reads promise, and a timeout built from a parallel group needs), and the stream reads on.
TEST_F(TlsStreamOverASocket, AWaitingReadIsCancelledThroughItsSlot) {
  asio::cancellation_signal cancel;
  std::optional<error_code> read;
  unsigned char got[16];
  server_->async_read_some(
      asio::buffer(got),
      asio::bind_cancellation_slot(cancel.slot(), [&](error_code ec, std::size_t) { read = ec; }));
  ioc_.poll();
  ASSERT_FALSE(read.has_value());
  cancel.emit(asio::cancellation_type::terminal);
  ASSERT_TRUE(run_until(ioc_, [&] { return read.has_value(); }));
  EXPECT_EQ(*read, asio::error::operation_aborted);

  asio::write(*client_, asio::buffer(std::string("x")));
  std::vector<unsigned char> one;
  one.resize(1);
  std::optional<error_code> again;
  asio::async_read(*server_, asio::buffer(one), [&](error_code ec, std::size_t) { again = ec; });
  ASSERT_TRUE(run_until(ioc_, [&] { return again.has_value(); }));
  EXPECT_FALSE(*again) << again->message();
  EXPECT_EQ(one[0], 'x');
}

}  // namespace
