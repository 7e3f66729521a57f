// The connection as a Kafka client sees it, against a real Beast WebSocket server on 127.0.0.1.
#include "frame_util.hpp"
#include "process.hpp"
#include "ws_test_server.hpp"

#include <kws/kws.hpp>

#include <gtest/gtest.h>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/websocket/error.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <thread>

namespace {
namespace asio = boost::asio;
using kws::test::frame;
using kws::test::pattern;
using kws::test::raw_size;
using kws::test::ws_peer;
using kws::test::ws_test_server;

// Collects what the server received, in order.
struct recorder {
  std::mutex mu;
  std::vector<ws_peer::message> messages;
  std::atomic<int> closed{0};

  kws::test::ws_script script() {
    return [this](ws_peer& p) {
      ws_peer::message m;
      while (p.read(m)) {
        std::lock_guard lock(mu);
        messages.push_back(m);
      }
      ++closed;
    };
  }
  std::vector<std::string> binaries() {
    std::lock_guard lock(mu);
    std::vector<std::string> out;
    for (auto& m : messages) {
      EXPECT_FALSE(m.text);
      out.push_back(m.data);
    }
    return out;
  }
  void wait_closed() {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (closed.load() == 0 && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    ASSERT_GT(closed.load(), 0) << "the server never saw the connection end";
  }
};

// A script that sends the given binary messages and then waits for the client to go away.
kws::test::ws_script sends(std::vector<std::string> messages) {
  return [messages](ws_peer& p) {
    for (auto& m : messages) p.write_binary(m);
    ws_peer::message ignored;
    while (p.read(ignored)) {
    }
  };
}

std::string read_exactly(kws::connection& c, std::size_t n) {
  std::string out(n, '\0');
  asio::read(c, asio::buffer(out));
  return out;
}

class Connection : public ::testing::Test {
 protected:
  asio::io_context ioc;
  kws::dialer_config cfg{.tls = false, .handshake_timeout = std::chrono::seconds(5)};
  kws::dialer dialer{ioc.get_executor(), cfg};
};

// The library's sockets are closed on exec. A child process the application starts while a connection is
// open does not inherit it: aborting the connection ends it for the server at once (with the child holding a
// copy of the socket, the server would see no end until the child exited).
TEST_F(Connection, AChildProcessStartedMeanwhileDoesNotKeepItOpen) {
  std::promise<void> ended;
  auto seen = ended.get_future();
  ws_test_server server([&](ws_peer& p) {
    ws_peer::message m;
    while (p.read(m)) {
    }
    ended.set_value();
  });
  auto c = dialer.dial(server.address());
  kws::test::child_process child({"/bin/sleep", "60"});
  c.abort();
  EXPECT_EQ(seen.wait_for(std::chrono::seconds(10)), std::future_status::ready)
      << "the server saw no end of the connection while the child lived";
}

TEST_F(Connection, ReadsOneMessage) {
  ws_test_server server(sends({frame("hello kafka")}));
  auto c = dialer.dial(server.address());
  EXPECT_EQ(read_exactly(c, 15), frame("hello kafka"));
}

TEST_F(Connection, ReadsManyMessagesInOrder) {
  std::vector<std::string> frames;
  std::string all;
  for (int i = 0; i < 50; ++i) {
    frames.push_back(frame(pattern(static_cast<std::size_t>(i) * 37, i)));
    all += frames.back();
  }
  ws_test_server server(sends(frames));
  auto c = dialer.dial(server.address());
  EXPECT_EQ(read_exactly(c, all.size()), all);
}

TEST_F(Connection, ReadsAMessageAcrossSmallBuffers) {
  const auto f = frame(pattern(1000));
  ws_test_server server(sends({f}));
  auto c = dialer.dial(server.address());
  std::string got;
  char buf[7];
  while (got.size() < f.size()) {
    const auto n = c.read_some(asio::buffer(buf));
    ASSERT_GT(n, 0u);
    ASSERT_LE(n, sizeof buf);
    got.append(buf, n);
  }
  EXPECT_EQ(got, f);
}

TEST_F(Connection, RejectsATextMessage) {
  ws_test_server server([](ws_peer& p) {
    p.write_text(frame("text"));
    ws_peer::message m;
    while (p.read(m)) {
    }
  });
  auto c = dialer.dial(server.address());
  char buf[64];
  boost::system::error_code ec;
  c.read_some(asio::buffer(buf), ec);
  EXPECT_EQ(ec, kws::errc::invalid_message_type);
}

TEST_F(Connection, RejectsReceivedNegativeOversizedAndMismatchedSizes) {
  kws::dialer small(ioc.get_executor(), kws::dialer_config{.max_frame_bytes = 64});
  struct case_t {
    std::string message;
    kws::errc want;
  };
  for (const auto& [message, want] :
       std::vector<case_t>{{raw_size(-1), kws::errc::negative_frame_size},
                           {frame(pattern(65)), kws::errc::frame_too_large},
                           {frame("abc") + "d", kws::errc::frame_size_mismatch},
                           {raw_size(10) + "abc", kws::errc::frame_size_mismatch},
                           {"\x01", kws::errc::frame_size_mismatch}}) {
    ws_test_server server(sends({message}));
    auto c = small.dial(server.address());
    char buf[256];
    boost::system::error_code ec;
    c.read_some(asio::buffer(buf), ec);
    EXPECT_EQ(ec, want) << ec.message();
  }
}

TEST_F(Connection, WritesOneMessagePerFrame) {
  recorder rec;
  ws_test_server server(rec.script());
  {
    auto c = dialer.dial(server.address());
    asio::write(c, asio::buffer(frame("one")));
    asio::write(c, asio::buffer(frame("two")));
    c.close();
  }
  rec.wait_closed();
  EXPECT_EQ(rec.binaries(), (std::vector<std::string>{frame("one"), frame("two")}));
}

// The Go shim's TestWritePartial: header split 2+2, body in pieces, then two messages in one write.
TEST_F(Connection, HoldsPartialWritesUntilTheFrameIsWhole) {
  recorder rec;
  ws_test_server server(rec.script());
  {
    auto c = dialer.dial(server.address());
    const auto f = frame("partial body!");
    EXPECT_EQ(c.write_some(asio::buffer(f.data(), 2)), 2u);
    EXPECT_EQ(c.write_some(asio::buffer(f.data() + 2, 2)), 2u);
    EXPECT_EQ(c.write_some(asio::buffer(f.data() + 4, 5)), 5u);
    EXPECT_EQ(c.pending_write_bytes(), 9u);
    EXPECT_EQ(c.write_some(asio::buffer(f.data() + 9, f.size() - 9)), f.size() - 9);
    EXPECT_EQ(c.pending_write_bytes(), 0u);
    const auto two = frame("second") + frame("third");
    EXPECT_EQ(c.write_some(asio::buffer(two)), two.size());
    c.close();
  }
  rec.wait_closed();
  EXPECT_EQ(rec.binaries(),
            (std::vector<std::string>{frame("partial body!"), frame("second"), frame("third")}));
}

TEST_F(Connection, SplitsAnyChunkingIntoWholeFrames) {
  recorder rec;
  ws_test_server server(rec.script());
  std::vector<std::string> frames;
  std::string stream;
  for (int i = 0; i < 40; ++i) {
    frames.push_back(frame(pattern(static_cast<std::size_t>(i * i * 7), i)));
    stream += frames.back();
  }
  {
    auto c = dialer.dial(server.address());
    std::size_t pos = 0, chunk = 1;
    while (pos < stream.size()) {
      const auto n = std::min(chunk, stream.size() - pos);
      asio::write(c, asio::buffer(stream.data() + pos, n));
      pos += n;
      chunk = chunk * 3 % 1031 + 1;
    }
    c.close();
  }
  rec.wait_closed();
  EXPECT_EQ(rec.binaries(), frames);
}

TEST_F(Connection, RefusesToWriteNegativeOrOversizedFrames) {
  recorder rec;
  ws_test_server server(rec.script());
  kws::dialer small(ioc.get_executor(), kws::dialer_config{.max_frame_bytes = 100});
  auto c = small.dial(server.address());
  boost::system::error_code ec;
  c.write_some(asio::buffer(raw_size(-3)), ec);
  EXPECT_EQ(ec, kws::errc::negative_frame_size);
  // The stream has lost its boundaries: it stays failed.
  c.write_some(asio::buffer(frame("ok")), ec);
  EXPECT_EQ(ec, kws::errc::negative_frame_size);

  auto c2 = small.dial(server.address());
  c2.write_some(asio::buffer(raw_size(101)), ec);
  EXPECT_EQ(ec, kws::errc::frame_too_large);
  ec.clear();
  c2.write_frame(asio::buffer(frame("abc") + "x"), ec);
  EXPECT_EQ(ec, kws::errc::frame_too_large);  // sticky error wins over the new check
}

TEST_F(Connection, WriteFrameChecksTheFrame) {
  recorder rec;
  ws_test_server server(rec.script());
  {
    auto c = dialer.dial(server.address());
    boost::system::error_code ec;
    c.write_frame(asio::buffer(frame("abc") + "x"), ec);
    EXPECT_EQ(ec, kws::errc::frame_size_mismatch);
    c.write_frame(asio::buffer(frame("fine")), ec);
    EXPECT_FALSE(ec);
    c.close();
  }
  rec.wait_closed();
  EXPECT_EQ(rec.binaries(), (std::vector<std::string>{frame("fine")}));
}

TEST_F(Connection, ReportsEndOfStreamOnACleanClose) {
  ws_test_server server([](ws_peer& p) {
    p.write_binary(frame("bye"));
    p.close();
  });
  auto c = dialer.dial(server.address());
  EXPECT_EQ(read_exactly(c, 7), frame("bye"));
  char buf[8];
  boost::system::error_code ec;
  c.read_some(asio::buffer(buf), ec);
  EXPECT_EQ(ec, asio::error::eof);
}

TEST_F(Connection, ReportsATruncatedFrameWhenThePeerClosesMidMessage) {
  ws_test_server server([](ws_peer& p) {
    // A WebSocket frame that announces 100 payload bytes, 10 of them sent, then the TCP connection drops.
    p.write_raw(kws::test::ws_binary_frame_header(100) + raw_size(96) + "012345");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    p.drop();
  });
  auto c = dialer.dial(server.address());
  char buf[128];
  boost::system::error_code ec;
  c.read_some(asio::buffer(buf), ec);
  EXPECT_EQ(ec, kws::errc::truncated_frame) << ec.message();
}

TEST_F(Connection, SendsCustomHeadersOnTheUpgrade) {
  std::promise<std::map<std::string, std::string>> seen;
  std::promise<std::string> target;
  ws_test_server server([&](ws_peer& p) {
    seen.set_value(p.request_headers());
    target.set_value(p.request_target());
  });
  kws::dialer d(ioc.get_executor(), kws::dialer_config{.headers = {{"Authorization", "Bearer s3cret"},
                                                                   {"X-Kafka-Tenant", "blue"}}});
  auto c = d.dial("ws://" + server.address() + "/kafka/0?x=1");
  auto headers = seen.get_future().get();
  EXPECT_EQ(headers["authorization"], "Bearer s3cret");
  EXPECT_EQ(headers["x-kafka-tenant"], "blue");
  EXPECT_EQ(headers["user-agent"], "kafka-websocket-shim");
  EXPECT_EQ(target.get_future().get(), "/kafka/0?x=1");
}

TEST_F(Connection, RejectsInvalidAddresses) {
  for (const char* bad :
       {"", "localhost", "localhost:", "localhost:0", "localhost:99999", "localhost:80x",
        "http://localhost:80/", "tcp://localhost:9092", "ws://", "ws://:80/", "host name:80", "::1:8080",
        "ws://user@host:80/", "[::1]8080", "localhost:8080/path"}) {
    boost::system::error_code ec;
    auto c = dialer.dial(bad, ec);
    EXPECT_EQ(ec, kws::errc::invalid_address) << "'" << bad << "'";
    EXPECT_FALSE(c.is_open());
  }
}

TEST(Address, ParsesHostPortAndUrls) {
  auto a = kws::parse_address("localhost:8787", false);
  EXPECT_EQ(a.str(), "ws://localhost:8787/");
  a = kws::parse_address("broker.example:443", true);
  EXPECT_EQ(a.str(), "wss://broker.example:443/");
  a = kws::parse_address("wss://mybroker.workers.dev", false);
  EXPECT_TRUE(a.secure);
  EXPECT_EQ(a.port, 443);
  EXPECT_EQ(a.target, "/");
  a = kws::parse_address("WS://[::1]:9000/kafka/3?tenant=a", true);
  EXPECT_FALSE(a.secure);
  EXPECT_EQ(a.host, "::1");
  EXPECT_EQ(a.authority(), "[::1]:9000");
  EXPECT_EQ(a.target, "/kafka/3?tenant=a");
}

TEST(UrlTemplate, ExpandsHostPortAndNodeIdWithIpv6InBrackets) {
  const auto t = kws::url_template::parse("wss://gw.example.com/kafka/{node_id}?h={host}&p={port}");
  EXPECT_EQ(t.expand("b-1.internal", 9092, 7), "wss://gw.example.com/kafka/7?h=b-1.internal&p=9092");
  EXPECT_TRUE(t.uses_node_id());
  const auto d = kws::url_template::default_for(false);
  EXPECT_EQ(d.expand("10.0.0.5", 9093, 2), "ws://10.0.0.5:9093/");
  EXPECT_EQ(d.expand("fd00::5", 9093, 2), "ws://[fd00::5]:9093/");
  EXPECT_FALSE(d.uses_node_id());
  EXPECT_EQ(kws::url_template::default_for(true).expand("h", 443, 0), "wss://h:443/");
}

TEST(UrlTemplate, RejectsUnknownPlaceholdersAndNonWebSocketUrls) {
  for (const char* bad : {"ws://{host}:{prot}/", "http://{host}:{port}/", "{host}:{port}",
                          "ws://{host}:{port}/{", "ws://{host}:{port}}/", "ws://{host}:99999/", ""}) {
    boost::system::error_code ec;
    kws::url_template::parse(bad, ec);
    EXPECT_EQ(ec, kws::errc::invalid_address) << bad;
  }
  EXPECT_THROW(kws::url_template::parse("tcp://{host}"), boost::system::system_error);
}

TEST_F(Connection, FailsWhenNothingListens) {
  unsigned short port;
  {
    asio::ip::tcp::acceptor a(ioc, {asio::ip::make_address("127.0.0.1"), 0});
    port = a.local_endpoint().port();
  }
  boost::system::error_code ec;
  dialer.dial("127.0.0.1:" + std::to_string(port), ec);
  EXPECT_EQ(ec, asio::error::connection_refused);
}

TEST_F(Connection, DialsTheHostItIsGivenAndNoOther) {
  // 127.0.0.2 is this machine too, but nothing listens there: a dial that lost its host name on the way (and
  // asked the resolver for no name, which yields loopback) would reach the server anyway.
  ws_test_server server(kws::test::echo);
  kws::dialer d(ioc.get_executor());
  boost::system::error_code ec;
  d.dial("127.0.0.2:" + std::to_string(server.port()), ec);
  EXPECT_EQ(ec, asio::error::connection_refused) << ec.message();
  auto c = d.dial("127.0.0.1:" + std::to_string(server.port()), ec);
  ASSERT_FALSE(ec) << ec.message();
  // The echo answers only after the server counted its connection.
  asio::write(c, asio::buffer(frame("here")));
  EXPECT_EQ(read_exactly(c, 8), frame("here"));
  EXPECT_EQ(server.accepted(), 1);
}

TEST_F(Connection, FailsWhenTheUpgradeIsRefused) {
  ws_test_server server(kws::test::echo, {.reject_status = 403});
  boost::system::error_code ec;
  dialer.dial(server.address(), ec);
  EXPECT_EQ(ec, boost::beast::websocket::error::upgrade_declined) << ec.message();
}

TEST_F(Connection, TimesOutASilentHandshake) {
  ws_test_server server(kws::test::echo, {.silent = true});
  kws::dialer d(ioc.get_executor(), kws::dialer_config{.handshake_timeout = std::chrono::milliseconds(300)});
  const auto start = std::chrono::steady_clock::now();
  boost::system::error_code ec;
  d.dial(server.address(), ec);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(ec, boost::beast::error::timeout) << ec.message();
  EXPECT_LT(took, std::chrono::seconds(3));
}

TEST_F(Connection, WorksWithAsioComposedAsyncOperations) {
  ws_test_server server(kws::test::echo);
  std::string out = frame(pattern(5000)) + frame("x") + frame("");
  std::string in(out.size(), '\0');
  bool done = false;
  std::optional<kws::connection> conn;
  dialer.async_dial(server.address(), [&](boost::system::error_code ec, kws::connection c) {
    ASSERT_FALSE(ec) << ec.message();
    conn.emplace(std::move(c));
    // Three writes of uneven pieces, each completing before the next.
    asio::async_write(*conn, asio::buffer(out.data(), 3), [&](boost::system::error_code ec, std::size_t) {
      ASSERT_FALSE(ec);
      asio::async_write(
          *conn, asio::buffer(out.data() + 3, out.size() - 3),
          [&](boost::system::error_code ec, std::size_t n) {
            ASSERT_FALSE(ec);
            EXPECT_EQ(n, out.size() - 3);
            asio::async_read(*conn, asio::buffer(in), [&](boost::system::error_code ec, std::size_t n) {
              ASSERT_FALSE(ec) << ec.message();
              EXPECT_EQ(n, in.size());
              conn->async_close(kws::close_code::normal, [&](boost::system::error_code) { done = true; });
            });
          });
    });
  });
  ioc.run_for(std::chrono::seconds(10));
  EXPECT_TRUE(done);
  EXPECT_EQ(in, out);
}

TEST_F(Connection, AsyncDialReportsInvalidAddressThroughTheHandler) {
  boost::system::error_code got;
  bool called = false;
  dialer.async_dial("nonsense", [&](boost::system::error_code ec, kws::connection) {
    called = true;
    got = ec;
  });
  EXPECT_FALSE(called);  // never inside the initiating call
  ioc.run_for(std::chrono::seconds(5));
  EXPECT_TRUE(called);
  EXPECT_EQ(got, kws::errc::invalid_address);
}

TEST_F(Connection, TheBlockingDialLeavesTheCallersContextAlone) {
  ws_test_server server(kws::test::echo);
  bool ran = false;
  asio::post(ioc, [&] { ran = true; });
  ioc.stop();  // stopped on purpose, with work queued
  auto c = dialer.dial(server.address());
  EXPECT_FALSE(ran) << "the dial ran the caller's handlers";
  EXPECT_TRUE(ioc.stopped()) << "the dial restarted the caller's context";
  boost::system::error_code ec;
  c.write_frame(asio::buffer(frame("blocking")), ec);
  boost::beast::flat_buffer buf;
  c.read_frame(buf, ec);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(boost::beast::buffers_to_string(buf.data()), frame("blocking"));
}

TEST_F(Connection, WholeFrameReadsAndWrites) {
  ws_test_server server(kws::test::echo);
  auto c = dialer.dial(server.address());
  boost::beast::flat_buffer buf;
  const auto f = frame(pattern(70000));
  boost::system::error_code ec;
  c.write_frame(asio::buffer(f), ec);
  ASSERT_FALSE(ec);
  const auto n = c.read_frame(buf, ec);
  ASSERT_FALSE(ec);
  EXPECT_EQ(n, f.size());
  EXPECT_EQ(boost::beast::buffers_to_string(buf.data()), f);
}

// Dials asynchronously, so that the connection's asynchronous operations run on `ioc` (a blocking dial gives
// the connection a context of its own), running `ioc` until the dial is done (bounded).
kws::connection dial_on(asio::io_context& ioc, kws::dialer& d, const std::string& address) {
  std::optional<kws::connection> out;
  d.async_dial(address, [&](boost::system::error_code ec, kws::connection c) {
    EXPECT_FALSE(ec) << ec.message();
    out.emplace(std::move(c));
  });
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!out && std::chrono::steady_clock::now() < until) ioc.run_one_for(std::chrono::milliseconds(100));
  ioc.restart();
  if (!out) ADD_FAILURE() << "the dial never completed";
  return out ? std::move(*out) : kws::connection{};
}

// A message cut short gives back its memory with its budget: the part received so far leaves the reader's
// buffer when the read fails. (Before, the budget was given back and the bytes stayed in the reader's buffer
// for as long as the reader kept it: a relay keeps it until it ends, so the budget no longer bounded what was
// held, and the gateway held several clients' 60 MiB parts at once.)
TEST_F(Connection, AMessageCutShortLeavesTheReadersBufferWithItsBudget) {
  constexpr std::size_t announced = 1 << 20, sent = 300 * 1024;
  ws_test_server server([](ws_peer& p) {
    p.write_raw(kws::test::ws_binary_frame_header(announced) + raw_size(announced - 4) +
                std::string(sent - 4, 'x'));
    p.drop();
  });
  auto c = dial_on(ioc, dialer, server.address());
  auto budget = std::make_shared<kws::buffer_budget>(4 * announced);
  c.set_buffer_budget(budget);
  boost::beast::flat_buffer buf;
  buf.commit(asio::buffer_copy(buf.prepare(3), asio::buffer("abc", 3)));  // the reader's own bytes stay
  std::optional<boost::system::error_code> result;
  c.async_read_frame(buf, [&](boost::system::error_code ec, std::size_t) { result = ec; });
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!result && std::chrono::steady_clock::now() < until) ioc.run_one_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(result) << "the read never completed";
  EXPECT_EQ(*result, kws::errc::truncated_frame) << result->message();
  ASSERT_EQ(buf.size(), 3u) << "the part received stayed in the reader's buffer";
  EXPECT_EQ(boost::beast::buffers_to_string(buf.data()), "abc");
  EXPECT_LT(buf.capacity(), 4096u);
  EXPECT_EQ(budget->in_use(), 0u);
}

// The proxy corks the broker connection while it writes a burst of buffered requests: each frame must still
// arrive as one message of its own, in order, large ones included (they bypass the cork buffer).
TEST_F(Connection, CorkedWritesStillLeaveAsOneMessagePerFrame) {
  recorder rec;
  ws_test_server server(rec.script());
  auto c = dial_on(ioc, dialer, server.address());
  ASSERT_TRUE(c.is_open());
  std::vector<std::string> frames;
  for (int i = 0; i < 300; ++i) frames.push_back(frame(pattern(i == 150 ? 100000 : 20 + i * 7, i)));
  c.cork(true);
  std::size_t next = 0;
  std::function<void(boost::system::error_code, std::size_t)> write_next = [&](boost::system::error_code ec,
                                                                               std::size_t) {
    ASSERT_FALSE(ec) << ec.message();
    if (next == frames.size()) return c.cork(false);
    c.async_write_frame(asio::buffer(frames[next++]), write_next);
  };
  write_next({}, 0);
  ioc.run_for(std::chrono::seconds(10));
  ASSERT_EQ(next, frames.size());
  c.close();
  rec.wait_closed();
  EXPECT_EQ(rec.binaries(), frames);
}

// A peer script that never reads or writes (so never answers a ping) until `done` (at most 10 s).
auto silent_until(std::atomic<bool>& done) {
  return [&done](ws_peer&) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  };
}

kws::dialer_config keepalive_config(std::chrono::milliseconds idle_timeout) {
  return kws::dialer_config{.tls = false,
                            .handshake_timeout = std::chrono::seconds(5),
                            .idle_timeout = idle_timeout,
                            .keepalive_pings = true};
}

// The idle timeout runs in the connection rather than in Beast (which re-armed a timer per message): a
// peer that stops answering (never reads, so never answers the ping) ends the connection with a timeout.
TEST_F(Connection, EndsWithATimeoutWhenThePeerStopsAnsweringPings) {
  std::atomic<bool> done{false};
  ws_test_server server(silent_until(done));
  kws::dialer d(ioc.get_executor(), keepalive_config(std::chrono::milliseconds(300)));
  auto c = dial_on(ioc, d, server.address());
  ASSERT_TRUE(c.is_open());
  boost::beast::flat_buffer buf;
  std::optional<boost::system::error_code> result;
  c.async_read_frame(buf, [&](boost::system::error_code ec, std::size_t) { result = ec; });
  ioc.run_for(std::chrono::seconds(8));
  done = true;
  ASSERT_TRUE(result.has_value()) << "the read never ended";
  EXPECT_EQ(*result, boost::beast::error::timeout) << result->message();
}

// A peer that answers pings keeps an idle connection open well past the idle timeout.
TEST_F(Connection, StaysOpenPastTheIdleTimeoutWhileThePeerAnswersPings) {
  ws_test_server server(kws::test::echo);
  kws::dialer d(ioc.get_executor(), keepalive_config(std::chrono::milliseconds(200)));
  auto c = dial_on(ioc, d, server.address());
  ASSERT_TRUE(c.is_open());
  // Idle for five idle timeouts: the pings are answered, so nothing ends.
  boost::beast::flat_buffer buf;
  std::optional<boost::system::error_code> early;
  c.async_read_frame(buf, [&](boost::system::error_code ec, std::size_t) { early = ec; });
  ioc.run_for(std::chrono::milliseconds(1000));
  ASSERT_FALSE(early.has_value()) << "the connection ended while idle: " << early->message();
  const auto f = frame(pattern(3000));
  std::optional<boost::system::error_code> wrote;
  c.async_write_frame(asio::buffer(f), [&](boost::system::error_code ec, std::size_t) { wrote = ec; });
  ioc.restart();
  ioc.run_for(std::chrono::seconds(5));
  ASSERT_TRUE(wrote.has_value() && early.has_value());
  EXPECT_FALSE(*wrote) << wrote->message();
  EXPECT_FALSE(*early) << early->message();
  EXPECT_EQ(boost::beast::buffers_to_string(buf.data()), f);
}

// Idle checks of the connections on one context share one list and timer per period: each connection is
// checked, the one behind the others in the list too, and one timing out leaves the others alone.
TEST_F(Connection, IdleChecksOfConnectionsOnOneContextEachTimeOutOnTheirOwn) {
  std::atomic<bool> done{false};
  ws_test_server silent(silent_until(done));
  ws_test_server answering(kws::test::echo);
  kws::dialer d(ioc.get_executor(), keepalive_config(std::chrono::milliseconds(300)));
  auto first = dial_on(ioc, d, silent.address());
  auto alive = dial_on(ioc, d, answering.address());
  auto last = dial_on(ioc, d, silent.address());  // scheduled after the others
  ASSERT_TRUE(first.is_open() && alive.is_open() && last.is_open());
  boost::beast::flat_buffer fbuf, abuf, lbuf;
  std::optional<boost::system::error_code> fres, ares, lres;
  first.async_read_frame(fbuf, [&](boost::system::error_code ec, std::size_t) { fres = ec; });
  alive.async_read_frame(abuf, [&](boost::system::error_code ec, std::size_t) { ares = ec; });
  last.async_read_frame(lbuf, [&](boost::system::error_code ec, std::size_t) { lres = ec; });
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(8);
  while (!(fres && lres) && !ares && std::chrono::steady_clock::now() < until)
    ioc.run_one_for(std::chrono::milliseconds(50));
  done = true;
  ASSERT_TRUE(fres.has_value() && lres.has_value()) << "a silent peer's connection never timed out";
  EXPECT_EQ(*fres, boost::beast::error::timeout) << fres->message();
  EXPECT_EQ(*lres, boost::beast::error::timeout) << lres->message();
  // The answering peer's connection: still open two idle periods after both timeouts, and still carrying
  // messages.
  ioc.restart();
  ioc.run_for(std::chrono::milliseconds(700));
  ASSERT_FALSE(ares.has_value()) << "the answering peer's connection ended: " << ares->message();
  const auto f = frame(pattern(100));
  std::optional<boost::system::error_code> wrote;
  alive.async_write_frame(asio::buffer(f), [&](boost::system::error_code ec, std::size_t) { wrote = ec; });
  ioc.restart();
  const auto until2 = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!ares && std::chrono::steady_clock::now() < until2) ioc.run_one_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(wrote.has_value() && ares.has_value());
  EXPECT_FALSE(*ares) << ares->message();
  EXPECT_EQ(boost::beast::buffers_to_string(abuf.data()), f);
}

// A closed connection's idle check leaves nothing pending: run() returns at once, not after the check's
// period (a minute here).
TEST_F(Connection, RunReturnsOnceTheLastConnectionWithKeepAliveIsClosed) {
  ws_test_server server(kws::test::echo);
  kws::dialer d(ioc.get_executor(), keepalive_config(std::chrono::seconds(120)));
  auto c = dial_on(ioc, d, server.address());
  ASSERT_TRUE(c.is_open());
  std::optional<boost::system::error_code> closed;
  c.async_close(kws::close_code::normal, [&](boost::system::error_code ec) { closed = ec; });
  auto ran = std::async(std::launch::async, [&] { ioc.run(); });
  const auto status = ran.wait_for(std::chrono::seconds(5));
  if (status != std::future_status::ready) ioc.stop();
  ASSERT_EQ(status, std::future_status::ready) << "run() is still waiting, for the idle check's timer";
  ASSERT_TRUE(closed.has_value());
  EXPECT_FALSE(*closed) << closed->message();
}

// A close started while a read waits: the read gets the message that comes first, its owner reads no more
// (as a relay that is shutting down does), and the close still hears the peer's close frame and completes,
// without the owner reading again and without waiting for a timeout. The server sends its message only once
// both calls are made, so that the message reaches the waiting read while the close waits. Plain here, over
// TLS below.
const std::string last_request = frame("the last request");

struct sends_one_when_told {
  std::promise<void> go;
  kws::test::ws_script script() {
    return [f = go.get_future().share()](ws_peer& p) {
      f.wait_for(std::chrono::seconds(10));  // bounded: a test that failed before giving the word ends too
      p.write_binary(last_request);
      ws_peer::message ignored;
      while (p.read(ignored)) {  // Beast answers the client's close frame with its own
      }
    };
  }
};

void expect_the_close_completes_after_the_waiting_read(asio::io_context& ioc, kws::connection& c,
                                                       sends_one_when_told& server) {
  ASSERT_TRUE(c.is_open());
  boost::beast::flat_buffer buf;
  std::optional<boost::system::error_code> read, closed;
  c.async_read_frame(buf, [&](boost::system::error_code ec, std::size_t) { read = ec; });
  c.async_close(kws::close_code::going_away, [&](boost::system::error_code ec) { closed = ec; });
  server.go.set_value();
  ioc.restart();
  // Returns as soon as nothing is pending; the bound only keeps a failure from hanging the suite.
  ioc.run_for(std::chrono::seconds(10));
  ASSERT_TRUE(read.has_value());
  EXPECT_FALSE(*read) << read->message();
  EXPECT_EQ(boost::beast::buffers_to_string(buf.data()), last_request);
  ASSERT_TRUE(closed.has_value()) << "the close is still waiting for a read nobody starts";
  EXPECT_FALSE(*closed) << closed->message();
}

TEST_F(Connection, ACloseCompletesAfterTheWaitingReadGotAMessageAndNobodyReadsAgain) {
  sends_one_when_told script;
  ws_test_server server(script.script());
  auto c = dial_on(ioc, dialer, server.address());
  expect_the_close_completes_after_the_waiting_read(ioc, c, script);
}

// Asio's rule for I/O objects: destroying one with operations pending is allowed; they complete with
// operation_aborted and touch nothing that was freed. Run under AddressSanitizer to catch a use after free.
TEST_F(Connection, DestroyingItWithAnyOperationPendingAbortsThatOperation) {
  std::atomic<bool> release{false};
  ws_test_server server([&](ws_peer&) {  // neither reads nor writes: every operation stays pending
    while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  // The server's scripts end even when an assertion below returns early.
  const std::unique_ptr<std::atomic<bool>, void (*)(std::atomic<bool>*)> releaser(
      &release, [](std::atomic<bool>* r) { *r = true; });
  const std::string big = frame(pattern(16 * 1024 * 1024));  // more than the socket buffers take
  boost::beast::flat_buffer frame_buf;
  char read_buf[64];
  using start_fn = std::function<void(kws::connection&, std::function<void(boost::system::error_code)>)>;
  const std::vector<std::pair<std::string, start_fn>> operations{
      {"async_read_some",
       [&](kws::connection& c, auto done) {
         c.async_read_some(asio::buffer(read_buf), [done](auto ec, std::size_t) { done(ec); });
       }},
      {"async_read_frame",
       [&](kws::connection& c, auto done) {
         c.async_read_frame(frame_buf, [done](auto ec, std::size_t) { done(ec); });
       }},
      {"async_write_some",
       [&](kws::connection& c, auto done) {
         c.async_write_some(asio::buffer(big), [done](auto ec, std::size_t) { done(ec); });
       }},
      {"async_write_frame",
       [&](kws::connection& c, auto done) {
         c.async_write_frame(asio::buffer(big), [done](auto ec, std::size_t) { done(ec); });
       }},
      {"async_close", [&](kws::connection& c, auto done) { c.async_close(kws::close_code::normal, done); }},
  };
  for (const auto& [name, start] : operations) {
    SCOPED_TRACE(name);
    // Asynchronous use: dialled on the fixture's context (a blocking dial's connection has its own).
    std::unique_ptr<kws::connection> conn;
    dialer.async_dial(server.address(), [&](boost::system::error_code ec, kws::connection c) {
      ASSERT_FALSE(ec) << ec.message();
      conn = std::make_unique<kws::connection>(std::move(c));
    });
    ioc.restart();
    ioc.run_for(std::chrono::seconds(5));
    ASSERT_TRUE(conn);
    std::optional<boost::system::error_code> result;
    start(*conn, [&](boost::system::error_code ec) { result = ec; });
    ioc.restart();
    ioc.run_for(std::chrono::milliseconds(50));
    ASSERT_FALSE(result) << "completed early: " << result->message();
    conn.reset();
    ioc.restart();
    ioc.run_for(std::chrono::seconds(5));
    ASSERT_TRUE(result) << "the pending operation never completed";
    EXPECT_EQ(*result, asio::error::operation_aborted) << result->message();
  }
  release = true;
}

// ---- TLS ------------------------------------------------------------------------------------------------

class Tls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { files_ = new kws::test::tls_files(kws::test::make_test_certificates()); }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(files_->dir);
    delete files_;
  }
  static kws::test::tls_files* files_;
  asio::io_context ioc;
};
kws::test::tls_files* Tls::files_ = nullptr;

TEST_F(Tls, VerifiesTheServerWithTheGivenCa) {
  ws_test_server server(kws::test::echo, {.tls = files_});
  kws::dialer d(ioc.get_executor(), kws::dialer_config{.tls = true, .ca_file = files_->ca_pem});
  auto c = d.dial("localhost:" + std::to_string(server.port()));
  asio::write(c, asio::buffer(frame("over tls")));
  EXPECT_EQ(read_exactly(c, 12), frame("over tls"));
  EXPECT_EQ(c.url(), "wss://localhost:" + std::to_string(server.port()) + "/");
}

TEST_F(Tls, ACloseCompletesAfterTheWaitingReadGotAMessageAndNobodyReadsAgain) {
  sends_one_when_told script;
  ws_test_server server(script.script(), {.tls = files_});
  kws::dialer d(ioc.get_executor(), kws::dialer_config{.tls = true, .ca_file = files_->ca_pem});
  auto c = dial_on(ioc, d, "localhost:" + std::to_string(server.port()));
  expect_the_close_completes_after_the_waiting_read(ioc, c, script);
}

TEST_F(Tls, FailsVerificationWithoutTheCa) {
  ws_test_server server(kws::test::echo, {.tls = files_});
  kws::dialer d(ioc.get_executor(), kws::dialer_config{.tls = true});
  boost::system::error_code ec;
  d.dial("localhost:" + std::to_string(server.port()), ec);
  ASSERT_TRUE(ec);
  EXPECT_EQ(ec.category(), asio::error::get_ssl_category()) << ec.message();
  EXPECT_NE(ec.message().find("certificate verify failed"), std::string::npos) << ec.message();
}

TEST_F(Tls, FailsVerificationForAnotherHostName) {
  // A certificate from the trusted CA, but for another name: the chain is fine, the host name is not.
  const auto other = kws::test::make_test_certificates("DNS:broker.example");
  ws_test_server server(kws::test::echo, {.tls = &other});
  kws::dialer d(ioc.get_executor(), kws::dialer_config{.ca_file = other.ca_pem});
  boost::system::error_code ec;
  d.dial("wss://localhost:" + std::to_string(server.port()) + "/", ec);
  EXPECT_EQ(ec.category(), asio::error::get_ssl_category()) << ec.message();
  EXPECT_NE(ec.message().find("certificate verify failed"), std::string::npos) << ec.message();
  EXPECT_EQ(server.accepted(), 0);
  // The same server passes when verification is not asked for, so the failure was the name alone.
  kws::dialer lax(ioc.get_executor(), kws::dialer_config{.insecure_skip_verify = true});
  EXPECT_NO_THROW(lax.dial("wss://localhost:" + std::to_string(server.port()) + "/"));
  std::filesystem::remove_all(other.dir);
}

TEST_F(Tls, InsecureSkipVerifyConnectsAnyway) {
  ws_test_server server(kws::test::echo, {.tls = files_});
  kws::dialer d(ioc.get_executor(), kws::dialer_config{.tls = true, .insecure_skip_verify = true});
  auto c = d.dial("localhost:" + std::to_string(server.port()));
  asio::write(c, asio::buffer(frame("x")));
  EXPECT_EQ(read_exactly(c, 5), frame("x"));
}

TEST_F(Tls, SendsTheHostNameAsSniButNotAnAddress) {
  std::mutex mu;
  std::vector<std::string> names;
  ws_test_server server(
      [&](ws_peer& p) {
        std::lock_guard lock(mu);
        names.push_back(p.server_name());
      },
      {.tls = files_});
  kws::dialer d(ioc.get_executor(), kws::dialer_config{.tls = true, .ca_file = files_->ca_pem});
  d.dial("localhost:" + std::to_string(server.port()));
  // RFC 6066 allows only host names in SNI; an address literal is verified against the certificate's IP SAN.
  d.dial("127.0.0.1:" + std::to_string(server.port()));
  ASSERT_TRUE(server.wait_finished(2));
  std::lock_guard lock(mu);
  EXPECT_EQ(names, (std::vector<std::string>{"localhost", ""}));
}

TEST_F(Tls, ReportsAMissingCaFile) {
  EXPECT_THROW(kws::dialer(ioc.get_executor(), kws::dialer_config{.ca_file = "/nonexistent/ca.pem"}),
               boost::system::system_error);
}

}  // namespace
