// kafka-websocket-proxy as users run it: the built binary, a TCP client on one side, a real WebSocket
// server on the other, everything on 127.0.0.1 and bounded in time.
#include "frame_util.hpp"
#include "log_events.hpp"
#include "process.hpp"
#include "proxy_support.hpp"
#include "test_env.hpp"
#include "ws_test_server.hpp"

#include <kws/frame.hpp>

#include <gtest/gtest.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <functional>
#include <future>
#include <regex>

#include <sys/socket.h>
#include <sys/time.h>

namespace {
namespace asio = boost::asio;
using boost::system::error_code;
using kws::test::child_process;
using kws::test::client;
using kws::test::event_filter;
using kws::test::events;
using kws::test::field;
using kws::test::field_containing;
using kws::test::field_matching;
using kws::test::frame;
using kws::test::pattern;
using kws::test::proxy_process;
using kws::test::raw_size;
using kws::test::rss_kib;
using kws::test::wait_for_event;
using kws::test::wait_for_events;
using kws::test::ws_peer;
using kws::test::ws_test_server;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// A WebSocket script that answers each binary message after `delay`.
kws::test::ws_script delayed_echo(std::chrono::milliseconds delay, std::atomic<int>* close_code = nullptr) {
  return [delay, close_code](ws_peer& p) {
    ws_peer::message m;
    while (p.read(m)) {
      std::this_thread::sleep_for(delay);
      p.write_binary(m.data);
    }
    if (close_code) *close_code = p.close_code();
  };
}

std::string many_frames(int n, std::size_t max_body, unsigned seed) {
  std::string s;
  for (int i = 0; i < n; ++i)
    s += frame(pattern((static_cast<std::size_t>(i) * 7919u) % (max_body + 1), seed + i));
  return s;
}

// A Produce v0 request with the given acks and no topics (the rest of the body does not matter here).
std::string produce_v0(std::int16_t acks, std::int32_t correlation_id) {
  const char body[] = {
      static_cast<char>(acks >> 8), static_cast<char>(acks), 0, 0, 3, static_cast<char>(0xe8), 0, 0, 0, 0};
  return kws::test::request(0, 0, correlation_id, std::string(body, sizeof body));
}

TEST(Proxy, RelaysOneFrameEachWay) {
  ws_test_server server(kws::test::echo);
  proxy_process proxy({"--broker", server.address()});
  client c(proxy.port);
  error_code ec;
  EXPECT_EQ(c.exchange(frame("hello"), 9, ec), frame("hello"));
  EXPECT_FALSE(ec) << ec.message();
}

TEST(Proxy, SendsEachFrameAsOneBinaryMessage) {
  std::mutex mu;
  std::vector<ws_peer::message> got;
  ws_test_server server([&](ws_peer& p) {
    ws_peer::message m;
    while (p.read(m)) {
      std::lock_guard lock(mu);
      got.push_back(m);
    }
  });
  // The server never answers, so the proxy waits for the drain timeout once the client is gone.
  proxy_process proxy({"--broker", server.address(), "--drain-timeout", "300ms"});
  {
    client c(proxy.port);
    // Header split 2+2, body in pieces, then two frames in one write: the Go shim's partial-write case.
    const auto f = frame("partial body!");
    for (auto [from, len] :
         std::vector<std::pair<std::size_t, std::size_t>>{{0, 2}, {2, 2}, {4, 5}, {9, 8}}) {
      c.send(f.substr(from, len));
      std::this_thread::sleep_for(20ms);
    }
    c.send(frame("second") + frame("third") + frame(""));
    c.send(many_frames(50, 3000, 7));
    std::this_thread::sleep_for(200ms);
  }
  ASSERT_TRUE(server.wait_finished(1));
  std::vector<std::string> want{frame("partial body!"), frame("second"), frame("third"), frame("")};
  const auto rest = many_frames(50, 3000, 7);
  for (std::size_t pos = 0; pos < rest.size();) {
    const auto len = 4 + static_cast<std::size_t>(
                             kws::load_be32(reinterpret_cast<const unsigned char*>(rest.data() + pos)));
    want.push_back(rest.substr(pos, len));
    pos += len;
  }
  std::lock_guard lock(mu);
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_FALSE(got[i].text);
    EXPECT_EQ(got[i].data, want[i]) << "message " << i;
  }
}

TEST(Proxy, RelaysManyFramesAndLargeOnesByteExact) {
  ws_test_server server(kws::test::echo);
  proxy_process proxy({"--broker", server.address()});
  client c(proxy.port);
  const auto stream = many_frames(300, 20000, 3) + frame(pattern(5 * 1024 * 1024, 99)) + frame("");
  error_code ec;
  const auto back = c.exchange(stream, stream.size(), ec, 30s);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(back == stream) << "echoed bytes differ (" << back.size() << " of " << stream.size() << ")";
}

TEST(Proxy, ServesSeveralClientsAtOnce) {
  ws_test_server server(kws::test::echo);
  proxy_process proxy({"--broker", server.address()});
  std::vector<std::future<bool>> results;
  for (int i = 0; i < 8; ++i) {
    results.push_back(std::async(std::launch::async, [i, port = proxy.port] {
      client c(port);
      const auto stream = many_frames(100, 4000, static_cast<unsigned>(i * 1000));
      error_code ec;
      return c.exchange(stream, stream.size(), ec, 20s) == stream && !ec;
    }));
  }
  for (auto& r : results) EXPECT_TRUE(r.get());
}

TEST(Proxy, ClosesTheClientOnATextMessageAndTellsTheBrokerWithCode1003) {
  std::atomic<int> code{0};
  ws_test_server server([&](ws_peer& p) {
    ws_peer::message m;
    p.read(m);
    p.write_text(frame("not binary"));
    while (p.read(m)) {
    }
    code = p.close_code();
  });
  proxy_process proxy({"--broker", server.address(), "--log-format", "json"});
  client c(proxy.port);
  c.send(frame("request"));
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_TRUE(proxy.proc.wait_for_output(
      std::regex(R"re("end":"protocol_error","side":"broker",)re"
                 R"re("cause":"broker sent a text message \(Kafka frames must be binary\)")re")))
      << proxy.proc.output();
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(code.load(), 1003) << "a text message is 'unsupported data'";
}

TEST(Proxy, AMessageWhoseSizeHeaderDoesNotMatchGetsCloseCode1002) {
  std::atomic<int> code{0};
  ws_test_server server([&](ws_peer& p) {
    ws_peer::message m;
    p.read(m);
    p.write_binary(raw_size(100) + "short");
    while (p.read(m)) {
    }
    code = p.close_code();
  });
  proxy_process proxy({"--broker", server.address(), "--log-format", "json"});
  client c(proxy.port);
  c.send(frame("request"));
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_TRUE(proxy.proc.wait_for_output(
      std::regex(R"re("end":"protocol_error","side":"broker",)re"
                 R"re("cause":"broker sent a WebSocket message whose length does not match)re")))
      << proxy.proc.output();
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(code.load(), 1002);
}

TEST(Proxy, HalfCloseStillDeliversResponses) {
  ws_test_server server(delayed_echo(150ms));
  proxy_process proxy({"--broker", server.address(), "--log-format", "json"});
  client c(proxy.port);
  const auto requests = frame("r1") + frame("r2") + frame("r3");
  c.send(requests);
  c.shutdown_send();
  error_code ec;
  EXPECT_EQ(c.recv(requests.size(), ec), requests);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_TRUE(
      wait_for_event(proxy.proc, {field("event", "closed"), field("end", "closed"), field("side", "client"),
                                  field("down_bytes", "18"), field("down_frames", "3")}))
      << proxy.proc.output();
}

TEST(Proxy, HalfCloseAfterAcksZeroProduceDoesNotWait) {
  ws_test_server server([](ws_peer& p) {
    ws_peer::message m;
    while (p.read(m)) {
    }  // a broker never answers acks=0
  });
  proxy_process proxy({"--broker", server.address()});
  client c(proxy.port);
  c.send(produce_v0(0, 1));
  c.shutdown_send();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(c.closed_by_peer(5s));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

TEST(Proxy, RetriesADownBrokerOnTheBackoffScheduleThenCloses) {
  const kws::test::refused_port dead;
  proxy_process proxy({"--broker", "127.0.0.1:" + std::to_string(dead.port()), "--dial-retries", "3",
                       "--dial-backoff", "100ms"});
  client c(proxy.port);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(c.closed_by_peer(10s));
  const auto took = std::chrono::steady_clock::now() - start;
  // Waits of 100 + 200 + 400 ms between four attempts.
  EXPECT_GE(took, 650ms);
  EXPECT_LT(took, 5s);
  EXPECT_TRUE(proxy.proc.wait_for_output(
      std::regex("dial failed after 4 attempt\\(s\\): Connection refused \\(4x\\)")))
      << proxy.proc.output();
}

TEST(Proxy, SigtermDrainsRequestedResponsesAndClosesWith1001) {
  std::atomic<int> close_code{0};
  ws_test_server server(delayed_echo(400ms, &close_code));
  proxy_process proxy({"--broker", server.address(), "--drain-timeout", "5s", "--log-format", "json"});
  {
    client c(proxy.port);
    c.send(frame("in flight"));
    // The relay's first handler reads the request that waited for the dial, before a drain can run.
    ASSERT_TRUE(wait_for_event(proxy.proc, {field("conn", "1"), field("event", "open")}))
        << proxy.proc.output();
    proxy.proc.signal(SIGTERM);
    error_code ec;
    EXPECT_EQ(c.recv(13, ec), frame("in flight"));
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_TRUE(c.closed_by_peer());
  }  // the client closes once it has seen the end, as Kafka clients do; the proxy waits for that
  EXPECT_EQ(proxy.proc.wait(10s), 0) << proxy.proc.output();
  ASSERT_TRUE(server.wait_finished(1));
  EXPECT_EQ(close_code.load(), 1001);
  // No new connections after the signal.
  EXPECT_THROW(client{proxy.port}, boost::system::system_error);
}

TEST(Proxy, StopsReadingTheClientWhileTheBrokerDoesNotRead) {
  std::atomic<bool> release{false};
  std::atomic<std::size_t> received{0}, messages{0};
  ws_test_server server([&](ws_peer& p) {
    while (!release.load()) std::this_thread::sleep_for(5ms);
    ws_peer::message m;
    while (p.read(m)) {
      received += m.data.size();
      ++messages;
    }
  });
  proxy_process proxy({"--broker", server.address(), "--max-frame-bytes", "1MiB"});
  client c(proxy.port);
  std::string data;
  for (int i = 0; i < 256; ++i) data += frame(pattern(256 * 1024 - 4, static_cast<unsigned>(i)));  // 64 MiB
  const auto rss_before = rss_kib(proxy.proc.pid());
  // Far more than the socket buffers on the way can hold: the client must be made to wait.
  const auto sent = c.send_for(data, 2s);
  const auto rss_after = rss_kib(proxy.proc.pid());
  EXPECT_LT(sent, data.size() / 2);
  // The proxy holds about one frame, not what the client pushed.
  EXPECT_LT(rss_after - rss_before, 16u * 1024u) << "KiB before " << rss_before << ", after " << rss_after;
  release = true;
  EXPECT_EQ(c.send_for(std::string_view(data).substr(sent), 30s), data.size() - sent);
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (messages.load() < 256 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(messages.load(), 256u);
  EXPECT_EQ(received.load(), data.size());
}

TEST(Proxy, ClientClosingInsideARequestIsLogged) {
  ws_test_server server(kws::test::echo);
  proxy_process proxy({"--broker", server.address(), "--log-format", "json"});
  {
    client c(proxy.port);
    error_code ec;
    ASSERT_EQ(c.exchange(frame("whole"), 9, ec), frame("whole"));
    c.send(frame("cut short").substr(0, 7));
  }
  EXPECT_TRUE(proxy.proc.wait_for_output(std::regex(
      R"re("end":"truncated","side":"client","cause":"client closed inside a request \(7 bytes dropped\)")re")))
      << proxy.proc.output();
}

TEST(Proxy, BadFrameSizeEndsOnlyThatConnection) {
  ws_test_server server(kws::test::echo);
  proxy_process proxy({"--broker", server.address(), "--max-frame-bytes", "1KiB", "--log-format", "json"});
  client good(proxy.port);
  error_code ec;
  ASSERT_EQ(good.exchange(frame("before"), 10, ec), frame("before"));
  for (const auto& bad : {raw_size(1025) + "x", raw_size(-7)}) {
    client evil(proxy.port);
    evil.send(bad);
    EXPECT_TRUE(evil.closed_by_peer());
  }
  EXPECT_TRUE(proxy.proc.wait_for_output(std::regex(
      R"re("end":"protocol_error","side":"client","cause":"client sent a Kafka frame larger than the maximum )re"
      R"re(frame size")re")));
  EXPECT_TRUE(proxy.proc.wait_for_output(std::regex(
      R"re("end":"protocol_error","side":"client","cause":"client sent a negative Kafka frame size")re")));
  EXPECT_EQ(good.exchange(frame(pattern(1024)), 1028, ec), frame(pattern(1024)));
  EXPECT_FALSE(ec);
}

TEST(Proxy, BrokerClosingMidFrameEndsOnlyThatConnection) {
  std::atomic<int> n{0};
  ws_test_server server([&](ws_peer& p) {
    if (n++ == 0) {
      ws_peer::message m;
      p.read(m);
      p.write_raw(kws::test::ws_binary_frame_header(100) + raw_size(96) + "0123");
      std::this_thread::sleep_for(50ms);
      return p.drop();
    }
    kws::test::echo(p);
  });
  proxy_process proxy({"--broker", server.address(), "--log-format", "json"});
  client victim(proxy.port);
  victim.send(frame("x"));
  EXPECT_TRUE(victim.closed_by_peer());
  EXPECT_TRUE(proxy.proc.wait_for_output(std::regex(
      R"re("end":"truncated","side":"broker","cause":"broker closed in the middle of a Kafka frame)re")))
      << proxy.proc.output();
  client other(proxy.port);
  error_code ec;
  EXPECT_EQ(other.exchange(frame("still fine"), 14, ec), frame("still fine"));
}

TEST(Proxy, SendsHeadersWithoutLoggingTheirValues) {
  std::promise<std::map<std::string, std::string>> seen;
  ws_test_server server([&](ws_peer& p) {
    seen.set_value(p.request_headers());
    kws::test::echo(p);
  });
  proxy_process proxy({"--broker", "ws://" + server.address() + "/kafka?tenant=1", "--header",
                       "Authorization: Bearer very-secret-token", "--log-level", "trace"});
  client c(proxy.port);
  error_code ec;
  EXPECT_EQ(c.exchange(frame("x"), 5, ec), frame("x"));
  auto headers = seen.get_future().get();
  EXPECT_EQ(headers["authorization"], "Bearer very-secret-token");
  EXPECT_EQ(proxy.proc.output().find("very-secret-token"), std::string::npos);
}

TEST(Proxy, TlsVerifiesTheBrokerCertificate) {
  const auto files = kws::test::make_test_certificates();
  ws_test_server server(kws::test::echo, {.tls = &files});
  const auto broker = "localhost:" + std::to_string(server.port());
  {
    proxy_process proxy({"--broker", broker, "--tls", "--ca-file", files.ca_pem});
    client c(proxy.port);
    error_code ec;
    EXPECT_EQ(c.exchange(frame("secure"), 10, ec), frame("secure"));
  }
  {
    proxy_process proxy({"--broker", broker, "--tls", "--dial-retries", "0"});
    client c(proxy.port);
    EXPECT_TRUE(c.closed_by_peer());
    EXPECT_TRUE(proxy.proc.wait_for_output(
        std::regex("dial failed after 1 attempt\\(s\\): the broker's TLS certificate was refused: "
                   "unable to get local issuer certificate \\(localhost\\)")))
        << proxy.proc.output();
  }
  {
    proxy_process proxy({"--broker", broker, "-tls", "-insecure"});
    client c(proxy.port);
    error_code ec;
    EXPECT_EQ(c.exchange(frame("anyway"), 10, ec), frame("anyway"));
  }
  std::filesystem::remove_all(files.dir);
}

// A client that reads slowly through a 16 KiB receive buffer and keeps sending small requests while it
// reads, until the proxy ends the connection. What a pipelining client looks like during a drain.
struct slow_reader_result {
  std::string received;
  error_code end;  // eof when the proxy closed in order, connection_reset when it reset
};

slow_reader_result read_slowly_while_sending(unsigned short port, const std::string& first_request,
                                             const std::function<void()>& after_first_bytes) {
  asio::io_context ioc;
  tcp::socket s(ioc);
  s.open(tcp::v4());
  s.set_option(asio::socket_base::receive_buffer_size(16 * 1024));
  const timeval limit{10, 0};  // no read may hang the test
  ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  s.connect({asio::ip::make_address("127.0.0.1"), port});
  asio::write(s, asio::buffer(first_request));
  slow_reader_result r;
  std::vector<char> buf(16 * 1024);
  const auto small = frame("more");
  for (int i = 0; i < 100000; ++i) {
    const auto n = s.read_some(asio::buffer(buf), r.end);
    r.received.append(buf.data(), n);
    if (r.end) break;
    if (i == 0) after_first_bytes();
    if (i < 200) {
      s.non_blocking(true);
      error_code ignored;
      s.write_some(asio::buffer(small), ignored);
      s.non_blocking(false);
    }
    std::this_thread::sleep_for(1ms);  // a slow reader, not a wait for an event
  }
  return r;
}

// The broker side: a "big" request gets a 3 MiB response, anything else is echoed.
constexpr std::size_t big_response_bytes = 3u * 1024u * 1024u;
std::string big_response() {
  return frame(pattern(big_response_bytes, 5));
}

// Splits the received bytes into frames; returns how many whole frames precede the end, or -1 when bytes of
// a frame are missing.
int whole_frames(const std::string& bytes) {
  int n = 0;
  for (std::size_t pos = 0; pos < bytes.size(); ++n) {
    if (bytes.size() - pos < 4) return -1;
    const auto len = 4 + static_cast<std::size_t>(
                             kws::load_be32(reinterpret_cast<const unsigned char*>(bytes.data() + pos)));
    if (bytes.size() - pos < len) return -1;
    pos += len;
  }
  return n;
}

TEST(ProxyClose, DrainDeliversTheWholeResponseToAClientThatKeepsSending) {
  ws_test_server server([](ws_peer& p) {
    ws_peer::message m;
    while (p.read(m)) p.write_binary(m.data == frame("big") ? big_response() : m.data);
  });
  proxy_process proxy({"--broker", server.address(), "--drain-timeout", "10s"});
  const auto r = read_slowly_while_sending(proxy.port, frame("big"), [&] { proxy.proc.signal(SIGTERM); });
  EXPECT_EQ(r.end, asio::error::eof) << r.end.message() << " after " << r.received.size() << " bytes";
  ASSERT_GE(r.received.size(), big_response_bytes + 4);
  EXPECT_TRUE(r.received.compare(0, big_response_bytes + 4, big_response()) == 0);
  EXPECT_GE(whole_frames(r.received), 1) << "a response was cut short";
  EXPECT_EQ(proxy.proc.wait(15s), 0) << proxy.proc.output();
}

TEST(ProxyClose, BrokerClosingWithARequestInFlightDeliversEverythingBeforeToAClientThatKeepsSending) {
  ws_test_server server([](ws_peer& p) {
    ws_peer::message m;
    p.read(m);
    p.write_binary(big_response());
    p.read(m);  // a request in flight that will never be answered
    p.close();
  });
  proxy_process proxy({"--broker", server.address(), "--log-format", "json"});
  const auto r = read_slowly_while_sending(proxy.port, frame("big"), [] {});
  EXPECT_EQ(r.end, asio::error::eof) << r.end.message() << " after " << r.received.size() << " bytes";
  EXPECT_EQ(r.received.size(), big_response_bytes + 4);
  EXPECT_TRUE(r.received == big_response());
  EXPECT_TRUE(wait_for_event(proxy.proc,
                             {field("event", "closed"), field("end", "closed_owing"), field("side", "broker"),
                              field_matching("cause", R"(^broker closed with \d+ request\(s\) in flight)")}))
      << proxy.proc.output();
  EXPECT_EQ(server.accepted(), 1);
}

TEST(ProxyReconnect, BrokerClosingBetweenRequestsIsInvisibleToTheClient) {
  // Each WebSocket connection answers one request, then closes, as edge platforms recycle connections.
  ws_test_server server([](ws_peer& p) {
    ws_peer::message m;
    if (p.read(m)) p.write_binary(m.data);
    p.close();
  });
  proxy_process proxy({"--broker", server.address(), "--log-format", "json"});
  client c(proxy.port);
  const event_filter broker_left{field("conn", "1"),
                                 field_containing("msg", "reconnecting on the next request")};
  for (int i = 0; i < 3; ++i) {
    const auto request = frame("request " + std::to_string(i));
    error_code ec;
    EXPECT_EQ(c.exchange(request, request.size(), ec), request) << "request " << i;
    EXPECT_FALSE(ec) << ec.message();
    // The broker's close has reached the proxy before the next request goes out.
    ASSERT_EQ(wait_for_events(proxy.proc, broker_left, i + 1), static_cast<std::size_t>(i + 1))
        << proxy.proc.output();
  }
  EXPECT_EQ(server.accepted(), 3);
  EXPECT_TRUE(events(proxy.proc, {field("event", "closed")}).empty()) << proxy.proc.output();
}

TEST(ProxyReconnect, ReconnectFailureClosesTheClientWithOneLine) {
  std::atomic<int> connections{0};
  std::unique_ptr<ws_test_server> server = std::make_unique<ws_test_server>([&](ws_peer& p) {
    ++connections;
    ws_peer::message m;
    if (p.read(m)) p.write_binary(m.data);
    p.close();
  });
  proxy_process proxy({"--broker", server->address(), "--dial-retries", "1", "--dial-backoff", "50ms",
                       "--log-format", "json"});
  client c(proxy.port);
  error_code ec;
  EXPECT_EQ(c.exchange(frame("one"), 7, ec), frame("one"));
  ASSERT_TRUE(wait_for_event(proxy.proc, {field_containing("msg", "reconnecting on the next request")}));
  server.reset();  // the broker is gone for good
  c.send(frame("two"));
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_TRUE(wait_for_event(
      proxy.proc, {field("event", "closed"), field("end", "reconnect_failed"), field("side", "broker"),
                   field("cause", "could not reconnect to the broker: Connection refused")}))
      << proxy.proc.output();
  EXPECT_EQ(events(proxy.proc, {field("event", "closed")}).size(), 1u) << "one closing line per connection:\n"
                                                                       << proxy.proc.output();
}

TEST(ProxyLimits, ConnectionsOverTheLimitAreClosedAtOnceWithALogLine) {
  ws_test_server server(kws::test::echo);
  proxy_process proxy({"--broker", server.address(), "--max-connections", "2", "--log-format", "json"});
  auto first = std::make_unique<client>(proxy.port);
  client second(proxy.port);
  error_code ec;
  EXPECT_EQ(first->exchange(frame("1"), 5, ec), frame("1"));
  EXPECT_EQ(second.exchange(frame("2"), 5, ec), frame("2"));
  client third(proxy.port);
  EXPECT_TRUE(third.closed_by_peer());
  EXPECT_TRUE(wait_for_event(proxy.proc,
                             {field("event", "refused"), field_matching("client", R"(^127\.0\.0\.1:\d+$)"),
                              field_matching("cause", "^2 connections open")}))
      << proxy.proc.output();
  first.reset();
  ASSERT_TRUE(wait_for_event(proxy.proc, {field("conn", "1"), field("event", "closed")}));
  client fourth(proxy.port);
  EXPECT_EQ(fourth.exchange(frame("4"), 5, ec), frame("4")) << "room again once one has gone";
}

TEST(ProxyLimits, AClientThatLeavesWhileTheBrokerIsDialledEndsTheDial) {
  ws_test_server hung(kws::test::echo, {.silent = true});  // accepts TCP, never answers the upgrade
  proxy_process proxy({"--broker", hung.address(), "--handshake-timeout", "2s", "--dial-retries", "5",
                       "--log-format", "json"});
  {
    client c(proxy.port);
    ASSERT_TRUE(wait_for_event(proxy.proc, {field("conn", "1"), field("event", "accepted")}));
  }  // gone before the first attempt has timed out
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(wait_for_event(
      proxy.proc,
      {field("conn", "1"), field("event", "closed"), field("side", "client"),
       field_matching("cause", R"(^the client left while the broker was being dialled \(1 attempt)")},
      5s))
      << proxy.proc.output();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s) << "noticed before the attempt timed out";
  EXPECT_EQ(proxy.proc.output().find("dial attempt 2"), std::string::npos) << "no further attempts";
}

// Virtual memory of a process (what it has reserved, touched or not), from /proc.
std::size_t vm_kib(pid_t pid) {
  const auto status = kws::test::read_file("/proc/" + std::to_string(pid) + "/status");
  std::smatch m;
  if (!std::regex_search(status, m, std::regex(R"(VmSize:\s+(\d+) kB)"))) return 0;
  return std::stoul(m[1].str());
}

TEST(ProxyLimits, SizeHeadersAloneReserveNoMemory) {
  ws_test_server server(kws::test::echo);
  // A budget large enough for every frame below: this is about memory, not about the budget.
  proxy_process proxy({"--broker", server.address(), "--max-buffer-bytes", "4GiB", "--log-format", "json"});
  const auto before = vm_kib(proxy.proc.pid());
  std::vector<std::unique_ptr<client>> clients;
  for (int i = 0; i < 20; ++i) {
    clients.push_back(std::make_unique<client>(proxy.port));
    clients.back()->send(raw_size(100 * 1024 * 1024 - 1) + "x");  // claims 100 MiB
  }
  ASSERT_TRUE(wait_for_event(proxy.proc, {field("conn", "20"), field("event", "open")}))
      << proxy.proc.output();
  for (auto& c : clients) c->send("y");  // a second read of each frame, once its size is known
  // Round trips behind those bytes on every worker: by their answers the workers have read the bytes.
  for (int i = 0; i < 4; ++i) {
    client probe(proxy.port);
    error_code ec;
    ASSERT_EQ(probe.exchange(frame("probe"), 9, ec), frame("probe"));
  }
  // Twenty 100 MiB frames reserved ahead of their bytes would be 2 GB of address space. What does grow is
  // glibc's malloc arenas for the worker threads (64 MiB of address space each): hence 1 GiB, not less.
  EXPECT_LT(vm_kib(proxy.proc.pid()) - before, 1024u * 1024u) << "KiB before " << before;
}

TEST(ProxyLimits, AFrameThatDoesNotFitTheBufferBudgetWaitsUntilAnotherIsDone) {
  ws_test_server server(kws::test::echo);
  proxy_process proxy({"--broker", server.address(), "--max-frame-bytes", "1MiB", "--max-buffer-bytes",
                       "3MiB", "--log-level", "debug"});
  // Three frames of 1 MiB + 4 and room for two: each client sends the start of its frame, and whichever the
  // workers read last is not read further.
  std::vector<std::unique_ptr<client>> clients;
  std::vector<std::string> frames;
  for (unsigned i = 0; i < 3; ++i) {
    clients.push_back(std::make_unique<client>(proxy.port));
    frames.push_back(frame(pattern(1024 * 1024, i + 1)));
    clients.back()->send(frames.back().substr(0, 1000));
  }
  const auto paused =
      proxy.proc.wait_for_output(std::regex("conn (\\d) reading paused: the frame buffer budget"));
  ASSERT_TRUE(paused) << proxy.proc.output();
  const auto waiting = static_cast<std::size_t>(std::stoi(*paused) - 1);  // conn ids follow the accepts
  error_code ec;
  for (std::size_t i = 0; i < 3; ++i) {
    if (i == waiting) continue;
    EXPECT_EQ(clients[i]->exchange(frames[i].substr(1000), frames[i].size(), ec), frames[i])
        << "client " << i;
  }
  // Done frames gave their bytes back: the waiting one is read now.
  EXPECT_EQ(clients[waiting]->exchange(frames[waiting].substr(1000), frames[waiting].size(), ec),
            frames[waiting]);
  EXPECT_FALSE(ec) << ec.message();
}

TEST(ProxyFlags, AcceptsTheOriginalGoFlags) {
  ws_test_server server(kws::test::echo);
  proxy_process proxy({"-broker", server.address(), "-tls=false"}, /*go_style=*/true);
  client c(proxy.port);
  error_code ec;
  EXPECT_EQ(c.exchange(frame("go"), 6, ec), frame("go"));
}

TEST(ProxyFlags, AcceptsGnuFlagsWithEquals) {
  ws_test_server server(kws::test::echo);
  proxy_process proxy({"--broker=" + server.address(), "--dial-backoff=50ms", "--idle-timeout=30s"});
  client c(proxy.port);
  error_code ec;
  EXPECT_EQ(c.exchange(frame("gnu"), 7, ec), frame("gnu"));
}

TEST(ProxyFlags, RejectsBadFlagsWithExitCode2) {
  for (const auto& args : std::vector<std::vector<std::string>>{{"--bogus"},
                                                                {"-port", "nope"},
                                                                {"--port", "70000"},
                                                                {"--header", "no colon"},
                                                                {"--dial-retries", "-1"},
                                                                {"--dial-backoff", "soon"},
                                                                {"--max-frame-bytes", "lots"},
                                                                {"--log-level", "loud"},
                                                                {"--ca-file", "/nonexistent.pem"},
                                                                {"--broker-max-in-flight", "1025"},
                                                                {"--broker-max-in-flight", "-1"}}) {
    std::vector<std::string> argv{KWS_PROXY_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    child_process p(argv);
    EXPECT_EQ(p.wait(10s), 2) << args[0] << "\n" << p.output();
    const auto out = p.output();
    EXPECT_NE(out.find("--help"), std::string::npos) << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2) << out;
  }
}

TEST(ProxyFlags, HelpAndVersionExitZero) {
  child_process help({KWS_PROXY_PATH, "--help"});
  EXPECT_EQ(help.wait(10s), 0);
  EXPECT_NE(help.output().find("--broker"), std::string::npos);
  child_process version({KWS_PROXY_PATH, "--version"});
  EXPECT_EQ(version.wait(10s), 0);
  EXPECT_NE(version.output().find("kafka-websocket-proxy "), std::string::npos);
}

TEST(ProxyFlags, RefusesAnInvalidBrokerAddressAtStartup) {
  child_process p({KWS_PROXY_PATH, "--listen", "127.0.0.1", "--port", "0", "--broker", "http://nope:80/"});
  EXPECT_EQ(p.wait(10s), 1);
  EXPECT_NE(p.output().find("invalid broker address"), std::string::npos) << p.output();
}

}  // namespace
