// kws::relay with its TCP side over TLS, in the test process: the relay's end made by
// kws::async_tls_handshake (server role for a Kafka client, client role towards a broker), the test's end an
// Asio ssl::stream with a CA and certificates made at test time; the WebSocket side a kws::connection pair.
// Frames both ways, how TLS endings map onto the relay's causes, the handshake's one-line failures, and the
// socket as an Asio stream of its own.
#include "frame_util.hpp"
#include "run_until.hpp"
#include "ws_test_server.hpp"

#include <kws/kws.hpp>
#include <kws/tls_socket.hpp>

#include <gtest/gtest.h>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

namespace {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using boost::system::error_code;
using kws::relay_end;
using kws::relay_side;
using kws::test::frame;
using kws::test::pattern;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

using kws::test::run_until;

void must(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(what);
}

const kws::test::tls_files& certs() {
  static const auto files = kws::test::make_test_certificates();
  return files;
}

// A connected TCP pair on 127.0.0.1: {connecting end, accepted end}.
std::pair<tcp::socket, tcp::socket> make_tcp_pair(asio::io_context& ioc) {
  tcp::acceptor acc(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  tcp::socket a(ioc), b(ioc);
  std::optional<error_code> accepted, connected;
  acc.async_accept(b, [&](error_code ec) { accepted = ec; });
  a.async_connect(acc.local_endpoint(), [&](error_code ec) { connected = ec; });
  must(run_until(ioc, [&] { return accepted && connected; }), "tcp pair: timeout");
  must(!*accepted && !*connected, "tcp pair: failed");
  return {std::move(a), std::move(b)};
}

void upgrade(const kws::http_request_info&, std::function<void(kws::accept_decision)> done) {
  done(kws::accept_decision::upgrade());
}

// {dialled end, accepted end}
std::pair<kws::connection, kws::connection> make_ws_pair(asio::io_context& ioc) {
  tcp::acceptor acc(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  std::optional<error_code> dial_ec, accept_ec;
  kws::connection dialled, accepted;
  acc.async_accept([&](error_code ec, tcp::socket s) {
    if (ec) {
      accept_ec = ec;
      return;
    }
    kws::async_accept(std::move(s), kws::accept_config{}, upgrade,
                      [&](error_code ec, kws::connection c, kws::http_request_info) {
                        accept_ec = ec;
                        accepted = std::move(c);
                      });
  });
  kws::dialer(ioc.get_executor(), kws::dialer_config{.handshake_timeout = 5s})
      .async_dial("127.0.0.1:" + std::to_string(acc.local_endpoint().port()),
                  [&](error_code ec, kws::connection c) {
                    dial_ec = ec;
                    dialled = std::move(c);
                  });
  must(run_until(ioc, [&] { return dial_ec && accept_ec; }), "ws pair: timeout");
  must(!*dial_ec && !*accept_ec, "ws pair: failed");
  return {std::move(dialled), std::move(accepted)};
}

struct handshake_outcome {
  bool done = false;
  error_code ec;
  kws::tls_socket socket;
  std::string why;
};

std::shared_ptr<handshake_outcome> start_kws_handshake(tcp::socket s, std::shared_ptr<ssl::context> ctx,
                                                       kws::tls_handshake_options o) {
  auto out = std::make_shared<handshake_outcome>();
  kws::async_tls_handshake(std::move(s), std::move(ctx), std::move(o),
                           [out](error_code ec, kws::tls_socket t, std::string why) {
                             out->ec = ec;
                             out->socket = std::move(t);
                             out->why = std::move(why);
                             out->done = true;
                           });
  return out;
}

// The test's own TLS server context for `cert`/`key`.
std::shared_ptr<ssl::context> server_context(const std::string& cert, const std::string& key) {
  return kws::make_server_tls_context(cert, key);
}

// The test's own TLS client context, trusting the test CA.
ssl::context client_context() {
  ssl::context ctx(ssl::context::tls_client);
  ctx.load_verify_file(certs().ca_pem);
  ctx.set_verify_mode(ssl::verify_peer);
  return ctx;
}

enum class shape { proxy, gateway };

struct done_record {
  int calls = 0;
  std::optional<kws::relay_report> report;
};

// One relay: the proxy's shape (a TLS Kafka client, the broker over WebSocket) or the gateway's (a WebSocket
// client, a TLS broker). `peer` is the test's TLS end, `ws` its WebSocket end.
class tls_harness {
 public:
  asio::io_context ioc;
  ssl::context test_ctx{ssl::context::tls_client};
  std::shared_ptr<ssl::context> test_server_ctx;
  std::optional<ssl::stream<tcp::socket>> peer;
  kws::connection ws;
  std::shared_ptr<done_record> done = std::make_shared<done_record>();
  std::shared_ptr<kws::relay> relay;
  shape shp;

  explicit tls_harness(shape s) : shp(s) {
    auto [a, b] = make_tcp_pair(ioc);
    auto [c, d] = make_ws_pair(ioc);
    std::optional<error_code> peer_ec;
    std::shared_ptr<handshake_outcome> relay_end_hs;
    if (shp == shape::proxy) {
      // The test is the Kafka client; the relay's end is the server.
      test_ctx = client_context();
      peer.emplace(std::move(a), test_ctx);
      SSL_set_tlsext_host_name(peer->native_handle(), "localhost");
      peer->set_verify_callback(ssl::host_name_verification("localhost"));
      peer->async_handshake(ssl::stream_base::client, [&](error_code ec) { peer_ec = ec; });
      relay_end_hs =
          start_kws_handshake(std::move(b), server_context(certs().cert_pem, certs().key_pem),
                              kws::tls_handshake_options{.side = kws::tls_handshake_options::role::server,
                                                         .host = "test client"});
      ws_relay_ = std::move(c);
      ws = std::move(d);
    } else {
      // The test is the broker; the relay's end dials it, checking the certificate against "localhost".
      test_server_ctx = server_context(certs().cert_pem, certs().key_pem);
      peer.emplace(std::move(b), *test_server_ctx);
      peer->async_handshake(ssl::stream_base::server, [&](error_code ec) { peer_ec = ec; });
      relay_end_hs =
          start_kws_handshake(std::move(a), kws::make_client_tls_context({.ca_file = certs().ca_pem}),
                              kws::tls_handshake_options{.host = "localhost"});
      ws = std::move(c);
      ws_relay_ = std::move(d);
    }
    must(run_until(ioc, [&] { return peer_ec && relay_end_hs->done; }), "tls handshake: timeout");
    must(!*peer_ec && !relay_end_hs->ec, "tls handshake: failed");
    tls_relay_ = std::move(relay_end_hs->socket);
  }

  ~tls_harness() {
    if (relay && !done->report) relay->stop_now("test over");
    relay.reset();
    error_code ignored;
    if (peer) peer->next_layer().close(ignored);
    ws.abort();
    ioc.restart();
    ioc.run_for(5s);
  }

  void start(kws::relay_options o = {}) {
    o.linger_timeout = 1s;
    auto on_done = [d = done](const kws::relay_report& r) {
      ++d->calls;
      d->report = r;
    };
    relay = shp == shape::proxy
                ? kws::relay::create(std::move(tls_relay_), std::move(ws_relay_), o, nullptr, on_done)
                : kws::relay::create(std::move(ws_relay_), std::move(tls_relay_), o, nullptr, on_done);
    relay->start();
  }

  bool wait_done(clock_type::duration limit = 10s) {
    return run_until(
        ioc, [&] { return done->report.has_value(); }, limit);
  }
  const kws::relay_report& report() const { return *done->report; }

  // Starts writing `data` on the TLS peer; the flag holds how it ended.
  std::shared_ptr<std::optional<error_code>> start_peer_write(std::string data) {
    auto buf = std::make_shared<std::string>(std::move(data));
    auto ec = std::make_shared<std::optional<error_code>>();
    asio::async_write(*peer, asio::buffer(*buf), [buf, ec](error_code e, std::size_t) { *ec = e; });
    return ec;
  }
  void peer_write(const std::string& data) {
    auto ec = start_peer_write(data);
    must(run_until(ioc, [&] { return ec->has_value(); }), "peer write: timeout");
    must(!**ec, "peer write failed");
  }
  // Starts writing `frames` one after the other on the WebSocket peer; the flag holds how it ended.
  struct ws_writes {
    std::vector<std::string> frames;
    std::optional<error_code> ec;
  };
  std::shared_ptr<ws_writes> start_ws_writes(std::vector<std::string> frames) {
    auto w = std::make_shared<ws_writes>();
    w->frames = std::move(frames);
    write_next(w, 0);
    return w;
  }
  void write_next(const std::shared_ptr<ws_writes>& w, std::size_t i) {
    if (i == w->frames.size()) {
      w->ec = error_code();
      return;
    }
    ws.async_write_frame(asio::buffer(w->frames[i]), [this, w, i](error_code e, std::size_t) {
      if (e) {
        w->ec = e;
        return;
      }
      write_next(w, i + 1);
    });
  }
  void ws_write(const std::string& f) {
    std::optional<error_code> ec;
    ws.async_write_frame(asio::buffer(f), [&](error_code e, std::size_t) { ec = e; });
    must(run_until(ioc, [&] { return ec.has_value(); }), "ws write: timeout");
    must(!*ec, "ws write failed");
  }
  // Reads exactly `n` bytes from the TLS peer ("<timeout>" / "<error: ...>" otherwise).
  std::string peer_read(std::size_t n) {
    auto buf = std::make_shared<std::string>(n, '\0');
    auto ec = std::make_shared<std::optional<error_code>>();
    asio::async_read(*peer, asio::buffer(*buf), [buf, ec](error_code e, std::size_t) { *ec = e; });
    if (!run_until(ioc, [&] { return ec->has_value(); })) return "<timeout>";
    if (**ec) return "<error: " + (*ec)->message() + ">";
    return *buf;
  }
  // Reads from the TLS peer until its end: what came, and how it ended.
  std::pair<std::string, error_code> peer_read_to_end() {
    auto data = std::make_shared<std::string>();
    auto ec = std::make_shared<std::optional<error_code>>();
    asio::async_read(*peer, asio::dynamic_buffer(*data), [data, ec](error_code e, std::size_t) { *ec = e; });
    if (!run_until(ioc, [&] { return ec->has_value(); })) return {"<timeout>", {}};
    return {*data, **ec};
  }
  // Reads (and drops) WebSocket messages until the connection ends, so that the relay's closing handshake
  // with the WebSocket peer is answered.
  void ws_read_on() {
    auto b = std::make_shared<boost::beast::flat_buffer>();
    ws.async_read_frame(*b, [this, b](error_code e, std::size_t) {
      if (!e) ws_read_on();
    });
  }
  std::string ws_read_frames(std::size_t n) {
    std::string out;
    for (std::size_t i = 0; i < n; ++i) {
      boost::beast::flat_buffer b;
      std::optional<error_code> ec;
      ws.async_read_frame(b, [&](error_code e, std::size_t) { ec = e; });
      if (!run_until(ioc, [&] { return ec.has_value(); })) return out + "<timeout>";
      if (*ec) return out + "<error: " + ec->message() + ">";
      out += boost::beast::buffers_to_string(b.data());
    }
    return out;
  }

 private:
  kws::tls_socket tls_relay_;
  kws::connection ws_relay_;
};

class RelayTls : public testing::TestWithParam<shape> {};
INSTANTIATE_TEST_SUITE_P(Shapes, RelayTls, testing::Values(shape::proxy, shape::gateway),
                         [](const testing::TestParamInfo<shape>& i) {
                           return i.param == shape::proxy ? "TlsClient" : "TlsBroker";
                         });

// Frames from the TLS peer reach the WebSocket peer whole, and the other way, byte for byte, a large one
// (several TLS records) among them.
TEST_P(RelayTls, CarriesFramesBothWaysByteExact) {
  tls_harness h(GetParam());
  h.start();
  std::vector<std::string> to_ws, to_tls;
  for (int i = 0; i < 40; ++i) {
    const std::size_t len = i % 13 == 3 ? 300'000 : 1 + (i * 41) % 5000;
    to_ws.push_back(frame(pattern(len, static_cast<unsigned>(i))));
    to_tls.push_back(frame(pattern(len + 7, static_cast<unsigned>(100 + i))));
  }
  std::string all_to_ws, all_to_tls;
  for (const auto& f : to_ws) all_to_ws += f;
  for (const auto& f : to_tls) all_to_tls += f;
  // Each direction is written while the other end reads, so that backpressure cannot stall the test.
  if (GetParam() == shape::proxy) {
    // Requests first (the relay counts what is owed), then the answers.
    auto wrote = h.start_peer_write(all_to_ws);
    EXPECT_TRUE(h.ws_read_frames(to_ws.size()) == all_to_ws);
    ASSERT_TRUE(run_until(h.ioc, [&] { return wrote->has_value(); }));
    EXPECT_FALSE(**wrote);
    auto answers = h.start_ws_writes(to_tls);
    EXPECT_TRUE(h.peer_read(all_to_tls.size()) == all_to_tls);
    ASSERT_TRUE(run_until(h.ioc, [&] { return answers->ec.has_value(); }));
    EXPECT_FALSE(*answers->ec);
  } else {
    auto requests = h.start_ws_writes(to_ws);
    EXPECT_TRUE(h.peer_read(all_to_ws.size()) == all_to_ws);
    ASSERT_TRUE(run_until(h.ioc, [&] { return requests->ec.has_value(); }));
    EXPECT_FALSE(*requests->ec);
    auto wrote = h.start_peer_write(all_to_tls);
    EXPECT_TRUE(h.ws_read_frames(to_tls.size()) == all_to_tls);
    ASSERT_TRUE(run_until(h.ioc, [&] { return wrote->has_value(); }));
    EXPECT_FALSE(**wrote);
  }
  EXPECT_FALSE(h.done->report.has_value());
}

// close_notify from the TLS peer is its orderly close, as a FIN is on plain TCP.
TEST_P(RelayTls, CloseNotifyFromTheTlsPeerIsAnOrderlyClose) {
  tls_harness h(GetParam());
  h.start();
  std::optional<error_code> shut;
  h.peer->async_shutdown([&](error_code ec) { shut = ec; });
  h.ws_read_on();
  ASSERT_TRUE(h.wait_done());
  EXPECT_EQ(h.report().end, relay_end::closed) << h.report().cause;
  EXPECT_EQ(h.report().side, GetParam() == shape::proxy ? relay_side::client : relay_side::broker)
      << h.report().cause;
  EXPECT_FALSE(h.report().error) << h.report().error.message();
}

// A FIN without close_notify (many Kafka clients close that way) between frames is an orderly close too;
// inside a frame it is a truncated one, as on plain TCP.
TEST_P(RelayTls, AFinWithoutCloseNotifyIsAClosedOrATruncatedEnd) {
  for (const bool inside : {false, true}) {
    SCOPED_TRACE(inside ? "inside a frame" : "between frames");
    tls_harness h(GetParam());
    h.start();
    if (inside) h.peer_write(frame(pattern(1000, 5)).substr(0, 300));
    h.peer->next_layer().shutdown(tcp::socket::shutdown_send);
    h.ws_read_on();
    ASSERT_TRUE(h.wait_done());
    const auto who = GetParam() == shape::proxy ? relay_side::client : relay_side::broker;
    EXPECT_EQ(h.report().side, who) << h.report().cause;
    EXPECT_EQ(h.report().end, inside ? relay_end::truncated : relay_end::closed) << h.report().cause;
  }
}

TEST_P(RelayTls, AResetFromTheTlsPeerIsAReset) {
  tls_harness h(GetParam());
  h.start();
  h.peer->next_layer().set_option(asio::socket_base::linger(true, 0));
  h.peer->next_layer().close();
  h.ws_read_on();
  ASSERT_TRUE(h.wait_done());
  EXPECT_EQ(h.report().end, relay_end::reset) << h.report().cause;
}

// When the relay ends, its TLS peer gets everything written, then close_notify: a clean end of stream, not
// a truncated one.
TEST_P(RelayTls, TheRelaysCloseSendsCloseNotifyAfterTheLastBytes) {
  tls_harness h(GetParam());
  h.start();
  const auto f = frame(pattern(70'000, 9));
  if (GetParam() == shape::proxy) {
    // A request, its response, then the broker's WebSocket closes.
    h.peer_write(frame(pattern(20, 1)));
    ASSERT_EQ(h.ws_read_frames(1).size(), 24u);
  }
  h.ws_write(f);
  std::optional<error_code> closed;
  h.ws.async_close(kws::close_code::normal, [&](error_code ec) { closed = ec; });
  const auto [data, ec] = h.peer_read_to_end();
  EXPECT_TRUE(data == f) << data.size() << " bytes";
  EXPECT_EQ(ec, asio::error::eof) << ec.message();
  ASSERT_TRUE(h.wait_done());
}

// ---- the handshake's failures, one sentence each ------------------------------------------------------

class TlsHandshake : public testing::Test {
 protected:
  // The relay's end as a client against a test server presenting `cert`/`key`, checked against `host`.
  std::shared_ptr<handshake_outcome> dial(const std::string& cert, const std::string& key,
                                          const std::string& host, kws::tls_client_options client = {},
                                          bool server_requires_cert = false) {
    auto [a, b] = make_tcp_pair(ioc_);
    server_ctx_ = server_context(cert, key);
    if (server_requires_cert) kws::require_client_certificates(*server_ctx_, certs().ca_pem);
    server_.emplace(std::move(b), *server_ctx_);
    server_->async_handshake(ssl::stream_base::server, [this](error_code ec) { server_ec_ = ec; });
    if (client.ca_file.empty()) client.ca_file = certs().ca_pem;
    auto out = start_kws_handshake(std::move(a), kws::make_client_tls_context(client),
                                   kws::tls_handshake_options{.host = host, .timeout = 5s});
    must(run_until(ioc_, [&] { return out->done; }), "handshake: timeout");
    return out;
  }

  asio::io_context ioc_;
  std::shared_ptr<ssl::context> server_ctx_;
  std::optional<ssl::stream<tcp::socket>> server_;
  std::optional<error_code> server_ec_;
};

TEST_F(TlsHandshake, ATrustedCertificateForTheHostSucceeds) {
  const auto out = dial(certs().cert_pem, certs().key_pem, "localhost");
  EXPECT_FALSE(out->ec) << out->why;
  EXPECT_TRUE(out->socket.is_open());
  EXPECT_TRUE(out->why.empty());
}

TEST_F(TlsHandshake, ASelfSignedCertificateIsRefusedWithTheReason) {
  const auto self = kws::test::make_self_signed_certificate(certs());
  const auto out = dial(self.cert_pem, self.key_pem, "localhost");
  EXPECT_TRUE(out->ec);
  EXPECT_FALSE(out->socket.is_open());
  EXPECT_EQ(out->why, "the broker's TLS certificate was refused: self-signed certificate (localhost)");
}

TEST_F(TlsHandshake, AnExpiredCertificateIsRefusedWithTheReason) {
  const auto expired = kws::test::make_expired_certificate(certs());
  const auto out = dial(expired, certs().key_pem, "localhost");
  EXPECT_EQ(out->why, "the broker's TLS certificate was refused: certificate has expired (localhost)");
}

TEST_F(TlsHandshake, ACertificateForAnotherHostIsRefusedWithTheReason) {
  const auto other = kws::test::make_test_certificates("DNS:broker.example");
  const auto out = dial(other.cert_pem, other.key_pem, "localhost", {.ca_file = other.ca_pem});
  EXPECT_EQ(out->why, "the broker's TLS certificate was refused: hostname mismatch (localhost)");
  const auto by_ip = dial(other.cert_pem, other.key_pem, "127.0.0.1", {.ca_file = other.ca_pem});
  EXPECT_EQ(by_ip->why, "the broker's TLS certificate was refused: IP address mismatch (127.0.0.1)");
}

TEST_F(TlsHandshake, APeerThatDoesNotSpeakTlsFailsTheHandshakeWithTheReason) {
  auto [a, b] = make_tcp_pair(ioc_);
  const std::string garbage = "HTTP/1.1 400 Bad Request\r\n\r\n";
  asio::async_write(b, asio::buffer(garbage), [](error_code, std::size_t) {});
  auto out = start_kws_handshake(std::move(a), kws::make_client_tls_context({.ca_file = certs().ca_pem}),
                                 kws::tls_handshake_options{.host = "localhost", .timeout = 5s});
  ASSERT_TRUE(run_until(ioc_, [&] { return out->done; }));
  EXPECT_EQ(out->why.rfind("the TLS handshake with the broker failed: ", 0), 0u) << out->why;
  EXPECT_NE(out->why.find("(localhost)"), std::string::npos) << out->why;
}

TEST_F(TlsHandshake, APeerThatNeverAnswersTimesOut) {
  auto [a, b] = make_tcp_pair(ioc_);
  auto out = start_kws_handshake(std::move(a), kws::make_client_tls_context({.ca_file = certs().ca_pem}),
                                 kws::tls_handshake_options{.host = "localhost", .timeout = 300ms});
  ASSERT_TRUE(run_until(ioc_, [&] { return out->done; }));
  EXPECT_EQ(out->ec, asio::error::timed_out);
  EXPECT_EQ(out->why, "the broker did not finish the TLS handshake within the handshake timeout (localhost)");
  // The bound is named as its owner's flag where it is not the handshake timeout.
  auto [c, d] = make_tcp_pair(ioc_);
  auto named = start_kws_handshake(
      std::move(c), kws::make_client_tls_context({.ca_file = certs().ca_pem}),
      kws::tls_handshake_options{.host = "localhost", .timeout = 300ms, .timeout_name = "--connect-timeout"});
  ASSERT_TRUE(run_until(ioc_, [&] { return named->done; }));
  EXPECT_EQ(named->why, "the broker did not finish the TLS handshake within --connect-timeout (localhost)");
}

// Mutual TLS: a server that requires a client certificate gets the one make_client_tls_context loaded, and
// its subject is readable on the server's side.
TEST_F(TlsHandshake, AClientCertificateIsPresentedWhenTheServerAsksForOne) {
  const auto client = kws::test::make_test_certificates("DNS:gateway.client");
  // The client's certificate comes from its own CA; the server trusts that CA.
  auto [a, b] = make_tcp_pair(ioc_);
  auto server_ctx = server_context(certs().cert_pem, certs().key_pem);
  kws::require_client_certificates(*server_ctx, client.ca_pem);
  auto server = start_kws_handshake(
      std::move(b), server_ctx,
      kws::tls_handshake_options{.side = kws::tls_handshake_options::role::server, .host = "127.0.0.1:1"});
  auto out = start_kws_handshake(
      std::move(a),
      kws::make_client_tls_context(
          {.ca_file = certs().ca_pem, .cert_file = client.cert_pem, .key_file = client.key_pem}),
      kws::tls_handshake_options{.host = "localhost", .timeout = 5s});
  ASSERT_TRUE(run_until(ioc_, [&] { return out->done && server->done; }));
  EXPECT_FALSE(out->ec) << out->why;
  EXPECT_FALSE(server->ec) << server->why;
  EXPECT_EQ(server->socket.peer_subject(), "CN=localhost");
}

TEST_F(TlsHandshake, AServerRequiringAClientCertificateRefusesAClientWithout) {
  auto [a, b] = make_tcp_pair(ioc_);
  auto server_ctx = server_context(certs().cert_pem, certs().key_pem);
  kws::require_client_certificates(*server_ctx, certs().ca_pem);
  auto server =
      start_kws_handshake(std::move(b), server_ctx,
                          kws::tls_handshake_options{.side = kws::tls_handshake_options::role::server,
                                                     .host = "127.0.0.1:1",
                                                     .peer_name = "the client"});
  auto out = start_kws_handshake(std::move(a), kws::make_client_tls_context({.ca_file = certs().ca_pem}),
                                 kws::tls_handshake_options{.host = "localhost", .timeout = 5s});
  ASSERT_TRUE(run_until(ioc_, [&] { return out->done && server->done; }));
  EXPECT_TRUE(server->ec);
  EXPECT_EQ(server->why.rfind("the TLS handshake with the client failed: ", 0), 0u) << server->why;
}

// After its handshake a kws::tls_socket is an Asio stream of its own (the gateway's lookup and the dev
// broker's TLS listener use it so): bytes both ways with Asio's ssl::stream as the peer, a waiting read
// cancelled through its slot (a timeout made of a parallel group does that), and the peer's close_notify as
// eof.
TEST_F(TlsHandshake, TheSocketReadsAndWritesAsAnAsioStream) {
  auto out = dial(certs().cert_pem, certs().key_pem, "localhost");
  ASSERT_TRUE(run_until(ioc_, [&] { return server_ec_.has_value(); }));
  ASSERT_FALSE(out->ec) << out->why;
  ASSERT_FALSE(*server_ec_) << server_ec_->message();
  auto& ours = out->socket;

  const auto request = frame(pattern(40'000, 3));
  std::optional<error_code> wrote, served;
  asio::async_write(ours, asio::buffer(request), [&](error_code ec, std::size_t) { wrote = ec; });
  std::string at_server(request.size(), '\0');
  asio::async_read(*server_, asio::buffer(at_server), [&](error_code ec, std::size_t) { served = ec; });
  ASSERT_TRUE(run_until(ioc_, [&] { return wrote && served; }));
  EXPECT_FALSE(*wrote) << wrote->message();
  EXPECT_FALSE(*served) << served->message();
  EXPECT_TRUE(at_server == request);

  asio::cancellation_signal cancel;
  std::optional<error_code> waited;
  std::string answer(5, '\0');
  asio::async_read(
      ours, asio::buffer(answer),
      asio::bind_cancellation_slot(cancel.slot(), [&](error_code ec, std::size_t) { waited = ec; }));
  ioc_.poll();
  ASSERT_FALSE(waited.has_value());
  cancel.emit(asio::cancellation_type::terminal);
  ASSERT_TRUE(run_until(ioc_, [&] { return waited.has_value(); }));
  EXPECT_EQ(*waited, asio::error::operation_aborted);

  std::optional<error_code> answered, read, shut;
  asio::async_write(*server_, asio::buffer(std::string("hello")),
                    [&](error_code ec, std::size_t) { answered = ec; });
  asio::async_read(ours, asio::buffer(answer), [&](error_code ec, std::size_t) { read = ec; });
  ASSERT_TRUE(run_until(ioc_, [&] { return answered && read; }));
  EXPECT_FALSE(*read) << read->message();
  EXPECT_EQ(answer, "hello");

  server_->async_shutdown([&](error_code ec) { shut = ec; });
  std::optional<error_code> ended;
  ours.async_read_some(asio::buffer(answer), [&](error_code ec, std::size_t) { ended = ec; });
  ASSERT_TRUE(run_until(ioc_, [&] { return ended.has_value(); }));
  EXPECT_EQ(*ended, asio::error::eof) << ended->message();
  ours.close();
  ASSERT_TRUE(run_until(ioc_, [&] { return shut.has_value(); }));
}

TEST(TlsContext, AnUnreadableCaFileIsNamed) {
  try {
    kws::make_client_tls_context({.ca_file = "/nonexistent/ca.pem"});
    FAIL() << "no exception";
  } catch (const boost::system::system_error& e) {
    EXPECT_NE(std::string(e.what()).find("CA file /nonexistent/ca.pem"), std::string::npos) << e.what();
  }
}

}  // namespace
