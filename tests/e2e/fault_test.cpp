// Faults around the proxy, with real processes and real sockets on 127.0.0.1: brokers that answer the upgrade
// with something else or not at all, certificates that must be refused, a broker killed and restarted, a
// client that never reads, a thousand clients that reset, a proxy out of descriptors, a client that
// vanishes without a FIN. Each affected connection ends with a line that names the cause; the proxy goes on
// serving. Every wait is bounded.
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
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#if !defined(KWS_PROXY_PATH) || !defined(KWS_DEVBROKER_PATH)
#error "tests/e2e/CMakeLists.txt defines the paths of the proxy and the dev broker"
#endif

namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using kws::test::child_process;
using kws::test::client;
using kws::test::field;
using kws::test::field_matching;
using kws::test::frame;
using kws::test::pattern;
using kws::test::proxy_process;
using kws::test::read_frame;
using kws::test::rss_kib;
using kws::test::wait_for_event;
using kws::test::ws_peer;
using kws::test::ws_test_server;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// A TCP server that answers whatever a connection sends first with fixed bytes, then holds the connection
// until the test ends: a web server, a broken gateway or a TLS server in place of a WebSocket broker.
class canned_server {
 public:
  explicit canned_server(std::string answer)
      : answer_(std::move(answer)), acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    thread_ = std::thread([this] {
      for (;;) {
        auto s = std::make_shared<tcp::socket>(ioc_);
        error_code ec;
        acceptor_.accept(*s, ec);
        if (ec || stopping_) return;
        char buf[4096];
        s->read_some(asio::buffer(buf), ec);  // the request, or a TLS ClientHello
        if (!ec) asio::write(*s, asio::buffer(answer_), ec);
        held_.push_back(s);
      }
    });
  }
  ~canned_server() {
    stopping_ = true;
    ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
    thread_.join();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()); }

 private:
  std::string answer_;
  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  std::atomic<bool> stopping_{false};
  std::vector<std::shared_ptr<tcp::socket>> held_;
  std::thread thread_;
};

// An ApiVersions v0 request: every broker the tests start answers it, and the proxy forwards it.
std::string api_versions_request(std::int32_t correlation_id) {
  return kws::test::request(18, 0, correlation_id);
}

// The dev broker on a WebSocket port of 127.0.0.1 (`port` 0: any).
std::unique_ptr<child_process> start_devbroker(unsigned short port) {
  auto p = std::make_unique<child_process>(std::vector<std::string>{
      KWS_DEVBROKER_PATH, "--listen", "127.0.0.1:" + std::to_string(port), "--log-level", "warn"});
  if (!p->wait_for_output(std::regex(R"(listening ws=127\.0\.0\.1:(\d+))")))
    throw std::runtime_error("the dev broker did not start:\n" + p->output());
  return p;
}

// The proxy dials once; the client's connection ends, and the closing line carries `why`.
void expect_dial_failure(const std::vector<std::string>& proxy_args, const std::string& why) {
  std::vector<std::string> args = proxy_args;
  args.insert(args.end(), {"--dial-retries", "0"});
  proxy_process proxy(args);
  client c(proxy.port);
  c.send(api_versions_request(1));
  EXPECT_TRUE(c.closed_by_peer(10s));
  EXPECT_TRUE(
      proxy.proc.wait_for_output(std::regex("dial failed after 1 attempt\\(s\\): " + why, std::regex::icase)))
      << proxy.proc.output();
}

TEST(ProxyFaults, AnUpgradeAnsweredWithoutWebSocketEndsTheDialWithWhatTheBrokerSaid) {
  {
    canned_server web("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    expect_dial_failure(
        {"--broker", web.address()},
        "the broker answered the WebSocket upgrade with 200 OK \\(ws://127\\.0\\.0\\.1:\\d+/\\)");
  }
  {
    canned_server missing("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    expect_dial_failure({"--broker", "ws://" + missing.address() + "/kafka"},
                        "the broker answered the WebSocket upgrade with 404 Not Found "
                        "\\(ws://127\\.0\\.0\\.1:\\d+/kafka\\)");
  }
  {
    canned_server garbage("SSH-2.0-OpenSSH_9.2\r\n\r\n");
    expect_dial_failure({"--broker", garbage.address()},
                        "the broker's answer to the WebSocket upgrade is not HTTP: ");
  }
  {
    // A TLS server that refuses the ClientHello: a fatal handshake_failure alert.
    canned_server alert(std::string("\x15\x03\x03\x00\x02\x02\x28", 7));
    expect_dial_failure({"--broker", alert.address(), "--tls"},
                        "the TLS handshake with the broker failed: .*handshake failure");
  }
  {
    // A plain HTTP server where the proxy expects TLS: it answers the ClientHello with a 400.
    canned_server plain("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    expect_dial_failure({"--broker", plain.address(), "--tls"},
                        "the TLS handshake with the broker failed: wrong version number");
  }
}

TEST(ProxyFaults, ABrokerThatNeverAnswersTheUpgradeIsBoundedByTheHandshakeTimeout) {
  ws_test_server silent(kws::test::echo, {.silent = true});
  const auto start = std::chrono::steady_clock::now();
  expect_dial_failure({"--broker", silent.address(), "--handshake-timeout", "500ms"},
                      "the broker did not answer the WebSocket upgrade within the handshake timeout");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(ProxyFaults, CertificatesThatAreExpiredSelfSignedOrForAnotherHostAreRefusedWithTheReason) {
  const auto files = kws::test::make_test_certificates();
  {
    auto expired = files;
    expired.cert_pem = kws::test::make_expired_certificate(files);
    ws_test_server server(kws::test::echo, {.tls = &expired});
    expect_dial_failure(
        {"--broker", "localhost:" + std::to_string(server.port()), "--tls", "--ca-file", files.ca_pem},
        "the broker's TLS certificate was refused: certificate has expired \\(localhost\\)");
  }
  {
    const auto self = kws::test::make_self_signed_certificate(files);
    ws_test_server server(kws::test::echo, {.tls = &self});
    expect_dial_failure(
        {"--broker", "localhost:" + std::to_string(server.port()), "--tls", "--ca-file", files.ca_pem},
        "the broker's TLS certificate was refused: self.signed certificate \\(localhost\\)");
  }
  {
    const auto other = kws::test::make_test_certificates("DNS:broker.example");
    ws_test_server server(kws::test::echo, {.tls = &other});
    expect_dial_failure(
        {"--broker", "localhost:" + std::to_string(server.port()), "--tls", "--ca-file", other.ca_pem},
        "the broker's TLS certificate was refused: hostname mismatch \\(localhost\\)");
    std::filesystem::remove_all(other.dir);
  }
  std::filesystem::remove_all(files.dir);
}

TEST(ProxyFaults, ABrokerKilledWithARequestInFlightEndsThatClientAndARestartedOneServesNewClients) {
  auto broker = start_devbroker(0);
  const auto ws_port = broker->wait_for_output(std::regex(R"(listening ws=127\.0\.0\.1:(\d+))"));
  ASSERT_TRUE(ws_port);
  proxy_process proxy({"--broker", "127.0.0.1:" + *ws_port, "--log-format", "json"});
  client c(proxy.port);
  error_code ec;
  c.send(api_versions_request(1));
  ASSERT_FALSE(read_frame(c, ec).empty()) << ec.message() << "\n" << proxy.proc.output();
  // Stopped, the broker cannot answer what comes next; killed, its kernel ends the connection.
  // A key no broker knows: the proxy notes it (debug) as it takes it in flight, and forwards it.
  broker->signal(SIGSTOP);
  c.send(kws::test::request(999, 0, 2));
  ASSERT_TRUE(proxy.proc.wait_for_output(std::regex("passed through \\(a key unknown here\\)")))
      << proxy.proc.output();
  broker->signal(SIGKILL);
  ASSERT_TRUE(broker->wait(5s));
  EXPECT_TRUE(c.closed_by_peer(10s));
  EXPECT_TRUE(wait_for_event(proxy.proc, {field("event", "closed"), field("side", "broker"),
                                          field_matching("cause", R"(1 request\(s\) in flight)")}))
      << proxy.proc.output();

  // The same port again: new clients get through, the proxy never went away.
  broker = start_devbroker(static_cast<unsigned short>(std::stoi(*ws_port)));
  client again(proxy.port);
  again.send(api_versions_request(3));
  EXPECT_FALSE(read_frame(again, ec).empty()) << ec.message() << "\n" << proxy.proc.output();
}

TEST(ProxyFaults, AClientThatNeverReadsHoldsTheBrokerBackNotTheProxysMemory) {
  constexpr int messages = 100;
  constexpr std::size_t message_bytes = 1024 * 1024;  // 100 MiB in all
  std::atomic<int> written{0};
  ws_test_server server([&](ws_peer& p) {
    ws_peer::message m;
    if (!p.read(m)) return;
    for (int i = 0; i < messages; ++i) {
      p.write_binary(frame(pattern(message_bytes - 4, static_cast<unsigned>(i))));
      ++written;
    }
    while (p.read(m)) {
    }
  });
  // AddressSanitizer keeps freed blocks in quarantine (up to 256 MiB), which would make resident memory
  // follow the bytes relayed rather than the bytes held; without it, RSS says what the proxy holds.
  const char* asan = std::getenv("ASAN_OPTIONS");
  proxy_process proxy({"--broker", server.address(), "--max-frame-bytes", "2MiB"}, false,
                      {{"ASAN_OPTIONS", std::string(asan ? asan : "") + ":quarantine_size_mb=0"}});
  client c(proxy.port);
  c.send(frame("go"));
  // Until the client reads, the broker is held back by the buffers on the way, and the proxy by one frame.
  const auto until = std::chrono::steady_clock::now() + 10s;
  int before = -1;
  while (std::chrono::steady_clock::now() < until) {  // wait for the writes to stall
    const int now = written.load();
    if (now == before && now > 0) break;
    before = now;
    std::this_thread::sleep_for(300ms);
  }
  const auto rss_before_reading = rss_kib(proxy.proc.pid());
  EXPECT_LT(written.load(), messages / 2) << "the broker was not held back";
  std::string expected;
  expected.reserve(messages * message_bytes);
  for (int i = 0; i < messages; ++i) expected += frame(pattern(message_bytes - 4, static_cast<unsigned>(i)));
  error_code ec;
  const auto got = c.recv(expected.size(), ec, 60s);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(got == expected) << "received " << got.size() << " of " << expected.size() << " bytes";
  const auto rss_peak = rss_kib(proxy.proc.pid());
  // Without backpressure the proxy would hold what the broker could send: tens of MiB.
  EXPECT_LT(rss_peak, rss_before_reading + 16 * 1024) << "KiB " << rss_before_reading << " -> " << rss_peak;
}

TEST(ProxyFaults, AThousandClientsThatConnectAndResetLeaveItServing) {
  auto broker = start_devbroker(0);
  const auto ws_port = broker->wait_for_output(std::regex(R"(listening ws=127\.0\.0\.1:(\d+))"));
  ASSERT_TRUE(ws_port);
  proxy_process proxy({"--broker", "127.0.0.1:" + *ws_port, "--log-level", "info"});
  asio::io_context ioc;
  const tcp::endpoint at(asio::ip::make_address("127.0.0.1"), proxy.port);
  for (int i = 0; i < 1000; ++i) {
    tcp::socket s(ioc);
    s.connect(at);
    if (i % 2) asio::write(s, asio::buffer(std::string("\0\0\0\x20\0\x12", 6)));  // inside a request
    s.set_option(asio::socket_base::linger(true, 0));                             // close with a reset
    s.close();
  }
  client c(proxy.port);
  error_code ec;
  c.send(api_versions_request(7));
  EXPECT_FALSE(read_frame(c, ec).empty()) << ec.message() << "\n" << proxy.proc.output();
  EXPECT_FALSE(proxy.proc.wait(0ms)) << "the proxy exited:\n" << proxy.proc.output();
}

TEST(ProxyFaults, RunningOutOfDescriptorsBacksOffAndRecovers) {
#if defined(__SANITIZE_ADDRESS__)
  // UndefinedBehaviorSanitizer's vptr check probes memory through a pipe; in a process with no descriptor
  // left that probe fails and the sanitizer itself reports a bad vptr and aborts. The dev and ThreadSanitizer
  // builds run this test.
  GTEST_SKIP() << "the sanitizer runtime needs free descriptors of its own (dev and tsan builds run this)";
#endif
  auto broker = start_devbroker(0);
  const auto ws_port = broker->wait_for_output(std::regex(R"(listening ws=127\.0\.0\.1:(\d+))"));
  ASSERT_TRUE(ws_port);
  // prlimit runs the proxy with room for a few connections only.
  child_process proxy({"/usr/bin/prlimit", "--nofile=40:40", "--", KWS_PROXY_PATH, "--listen", "127.0.0.1",
                       "--port", "0", "--threads", "1", "--broker", "127.0.0.1:" + *ws_port});
  const auto port = proxy.wait_for_output(std::regex(R"(listening on 127\.0\.0\.1:(\d+))"));
  ASSERT_TRUE(port) << proxy.output();
  const auto proxy_port = static_cast<unsigned short>(std::stoi(*port));
  {
    std::vector<std::unique_ptr<client>> many;
    for (int i = 0; i < 40; ++i) many.push_back(std::make_unique<client>(proxy_port));
    EXPECT_TRUE(proxy.wait_for_output(std::regex("accept failed: Too many open files"))) << proxy.output();
  }
  // The clients are gone; the proxy accepts again.
  const auto until = std::chrono::steady_clock::now() + 20s;
  bool served = false;
  while (!served && std::chrono::steady_clock::now() < until) {
    client c(proxy_port);
    error_code ec;
    c.send(api_versions_request(9));
    served = !read_frame(c, ec).empty();
  }
  EXPECT_TRUE(served) << proxy.output();
}

// nftables rules in a table of the test's own, removed at the end whatever happens.
class nft_table {
 public:
  nft_table() : name_("kws_test_" + std::to_string(::getpid())) {
    run("delete table inet " + name_, true);
    run("add table inet " + name_);
    run("add chain inet " + name_ + " out '{ type filter hook output priority 0; }'");
  }
  ~nft_table() { run("delete table inet " + name_, true); }
  void add_rule(const std::string& rule) { run("add rule inet " + name_ + " out " + rule); }

 private:
  void run(const std::string& args, bool may_fail = false) {
    const auto cmd = "/usr/sbin/nft " + args + " 2>/dev/null";
    if (std::system(cmd.c_str()) != 0 && !may_fail) throw std::runtime_error("failed: " + cmd);
  }
  std::string name_;
};

TEST(ProxyFaults, AClientThatVanishesWithoutAFinIsEndedByKeepAlive) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for an nftables rule that makes a client vanish";
  std::atomic<int> close_code{-1};
  ws_test_server server([&](ws_peer& p) {
    ws_peer::message m;
    while (p.read(m)) p.write_binary(m.data);
    close_code = p.close_code();
  });
  proxy_process proxy({"--broker", server.address(), "--tcp-keepalive", "1s", "--tcp-user-timeout", "3s",
                       "--log-format", "json"});
  asio::io_context ioc;
  tcp::socket s(ioc);
  s.connect({asio::ip::make_address("127.0.0.1"), proxy.port});
  const auto request = frame("hello");
  asio::write(s, asio::buffer(request));
  std::string reply(request.size(), '\0');
  asio::read(s, asio::buffer(reply));
  ASSERT_EQ(reply, request);
  // From now on nothing from the client's port arrives: no FIN, no ACK, no keep-alive answer.
  nft_table table;
  table.add_rule("tcp sport " + std::to_string(s.local_endpoint().port()) + " drop");
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(wait_for_event(
      proxy.proc,
      {field("event", "closed"), field("client", "127.0.0.1:" + std::to_string(s.local_endpoint().port()))},
      15s))
      << proxy.proc.output();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  // Its WebSocket is closed too, not left to the broker's timeouts.
  EXPECT_TRUE(server.wait_finished(1, 5s));
}

}  // namespace
