// The proxy as operators meet it: start-up failures, log levels and formats, close causes, shutdown within
// the drain timeout, the default listener, and headers kept out of argv. The built binary, real sockets.
#include "client_tools.hpp"
#include "frame_util.hpp"
#include "process.hpp"
#include "proxy_support.hpp"
#include "test_env.hpp"
#include "ws_test_server.hpp"

#include <gtest/gtest.h>
#include <boost/asio/ip/tcp.hpp>

#include <algorithm>
#include <csignal>
#include <future>
#include <iostream>
#include <regex>
#include <sstream>

namespace {
namespace asio = boost::asio;
using boost::system::error_code;
using kws::test::child_process;
using kws::test::client;
using kws::test::frame;
using kws::test::lines_of;
using kws::test::proxy_process;
using kws::test::ws_peer;
using kws::test::ws_test_server;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// A start-up failure: exit code 1 and exactly one line, in words, without an error category or a source
// location.
void expect_one_plain_line(child_process& p, const std::string& expected) {
  EXPECT_EQ(p.wait(10s), 1) << p.output();
  const auto lines = lines_of(p.output());
  ASSERT_EQ(lines.size(), 1u) << p.output();
  EXPECT_NE(lines[0].find(" critical cannot start: " + expected), std::string::npos) << lines[0];
  EXPECT_EQ(lines[0].find('['), std::string::npos) << lines[0];
  EXPECT_EQ(lines[0].find(".hpp"), std::string::npos) << lines[0];
  EXPECT_EQ(lines[0].find(".cpp"), std::string::npos) << lines[0];
}

TEST(ProxyStartup, APortInUseIsOnePlainLineAndExitCode1) {
  asio::io_context ioc;
  tcp::acceptor taken(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto port = std::to_string(taken.local_endpoint().port());
  child_process p({KWS_PROXY_PATH, "--listen", "127.0.0.1", "--port", port});
  expect_one_plain_line(p, "listening on 127.0.0.1:" + port + ": Address already in use");
}

TEST(ProxyStartup, AnInvalidBrokerAddressIsOnePlainLineAndExitCode1) {
  child_process p({KWS_PROXY_PATH, "--listen", "127.0.0.1", "--port", "0", "--broker", "http://nope:80/"});
  expect_one_plain_line(
      p, "http://nope:80/: invalid broker address: expected host:port or a ws:// or wss:// URL");
}

TEST(ProxyStartup, ACaFileWithoutCertificatesIsOnePlainLineAndExitCode1) {
  kws::test::temp_dir dir("kws-ops");
  kws::test::write_file(dir / "ca.pem", "not a certificate\n");
  child_process p({KWS_PROXY_PATH, "--listen", "127.0.0.1", "--port", "0", "--ca-file",
                   (dir / "ca.pem").string(), "--tls"});
  EXPECT_EQ(p.wait(10s), 1) << p.output();
  const auto lines = lines_of(p.output());
  ASSERT_EQ(lines.size(), 1u) << p.output();
  EXPECT_NE(lines[0].find(" critical cannot start: "), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("ca.pem"), std::string::npos) << "names the file: " << lines[0];
  EXPECT_EQ(lines[0].find('['), std::string::npos) << lines[0];
}

TEST(ProxyStartup, AnUnresolvableBrokerEndsEachConnectionWithOnePlainLine) {
  // The broker is resolved per connection (as the original did), so the proxy starts; each client gets one
  // closed line that names the broker and says why.
  proxy_process proxy(
      {"--broker", "broker.invalid:8787", "--dial-retries", "0", "--handshake-timeout", "5s"});
  client c(proxy.port);
  EXPECT_TRUE(c.closed_by_peer(10s));
  const auto line = proxy.proc.wait_for_output(std::regex(R"(\n(.* warning conn 1 closed .*))"));
  ASSERT_TRUE(line) << proxy.proc.output();
  EXPECT_NE(line->find("broker=ws://broker.invalid:8787/: dial failed after 1 attempt(s): "),
            std::string::npos)
      << *line;
  EXPECT_EQ(line->find('['), std::string::npos) << *line;
}

TEST(ProxyLogs, TheLevelNamesTheLogPrintsAreTheOnesTheFlagTakes) {
  // --log-level warning: the warning line of a failed dial is there, info lines are not.
  const auto port = kws::test::free_port();
  const kws::test::refused_port dead;
  child_process p({KWS_PROXY_PATH, "--listen", "127.0.0.1", "--port", std::to_string(port), "--broker",
                   "127.0.0.1:" + std::to_string(dead.port()), "--dial-retries", "0", "--log-level",
                   "warning"});
  // Nothing is logged at start at this level: wait until the port accepts.
  std::optional<client> c;
  for (auto until = std::chrono::steady_clock::now() + 10s; !c && std::chrono::steady_clock::now() < until;) {
    try {
      c.emplace(port);
    } catch (const boost::system::system_error&) {
      std::this_thread::sleep_for(20ms);
    }
  }
  ASSERT_TRUE(c) << p.output();
  EXPECT_TRUE(c->closed_by_peer(10s));
  EXPECT_TRUE(p.wait_for_output(std::regex(R"(\d warning conn 1 closed )"))) << p.output();
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait(10s), 0) << p.output();
  EXPECT_EQ(p.output().find(" info "), std::string::npos) << p.output();

  // Every name the log prints is accepted, `warn` too; --help lists them.
  for (const auto* level : {"trace", "debug", "info", "warning", "warn", "error", "critical", "off"}) {
    child_process v({KWS_PROXY_PATH, "--log-level", level, "--version"});
    EXPECT_EQ(v.wait(10s), 0) << level << ": " << v.output();
  }
  child_process help({KWS_PROXY_PATH, "--help"});
  EXPECT_EQ(help.wait(10s), 0);
  EXPECT_NE(help.output().find("trace, debug, info, warning, error, critical or off"), std::string::npos)
      << help.output();
}

TEST(ProxyLogs, JsonFormatWritesOneParsableObjectPerLineWithConnectionFields) {
  ws_test_server server(kws::test::echo);
  proxy_process proxy({"--broker", server.address(), "--log-format", "json"});
  {
    client c(proxy.port);
    error_code ec;
    EXPECT_EQ(c.exchange(frame("json"), 8, ec), frame("json"));
  }
  ASSERT_TRUE(proxy.proc.wait_for_output(std::regex(R"("event":"closed")"))) << proxy.proc.output();
  proxy.proc.signal(SIGTERM);
  ASSERT_EQ(proxy.proc.wait(10s), 0) << proxy.proc.output();

  kws::test::temp_dir dir("kws-ops");
  kws::test::write_file(dir / "log", proxy.proc.output());
  // Every line must parse; the closed line carries the connection's fields as their own keys.
  const std::string check = R"(
import json, sys
closed = None
n = 0
for line in sys.stdin.buffer.read().decode("utf-8").splitlines():
    o = json.loads(line)
    n += 1
    assert set(["ts", "level", "msg"]) <= set(o), o
    if o.get("event") == "closed":
        closed = o
assert n >= 4, n
assert closed is not None
for k in ("conn", "client", "broker", "up_bytes", "up_frames", "down_bytes", "down_frames", "duration_ms", "cause"):
    assert k in closed, (k, closed)
assert closed["up_bytes"] == 8 and closed["down_frames"] == 1, closed
assert closed["end"] == "closed" and closed["side"] == "client", closed
assert closed["cause"] == "client closed", closed
assert closed["level"] == "info" and closed["ts"].endswith("Z"), closed
print("ok", n)
)";
  auto r = kws::test::run({"/usr/bin/python3", "-c", check}, {.stdin_file = dir / "log"}, 20s);
  EXPECT_EQ(r.exit_code, 0) << r.out << "\n" << proxy.proc.output();
}

TEST(ProxyCloseCauses, ABrokerThatStopsAnsweringPingsIsSaidSo) {
  std::promise<void> got;
  std::promise<void> release;
  auto released = release.get_future().share();
  ws_test_server server([&](ws_peer& p) {
    ws_peer::message m;
    if (p.read(m)) got.set_value();
    // Reads nothing more: pings go unanswered.
    released.wait_for(15s);
  });
  proxy_process proxy({"--broker", server.address(), "--ping-interval", "200ms", "--log-format", "json"});
  client c(proxy.port);
  c.send(frame("never answered"));
  ASSERT_EQ(got.get_future().wait_for(10s), std::future_status::ready);
  EXPECT_TRUE(proxy.proc.wait_for_output(
      std::regex(R"re("conn":1,"event":"closed",.*"end":"ping_timeout","side":"broker",)re"
                 R"re("cause":"broker did not answer pings with 1 request\(s\) in flight"\})re")))
      << proxy.proc.output();
  release.set_value();
}

TEST(ProxyCloseCauses, ABrokerCloseNamesItsCode) {
  ws_test_server server([](ws_peer& p) {
    ws_peer::message m;
    if (p.read(m)) p.close();  // the test server closes with 1000; the cause names it
  });
  proxy_process proxy({"--broker", server.address(), "--log-format", "json"});
  client c(proxy.port);
  c.send(frame("lost"));
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_TRUE(proxy.proc.wait_for_output(
      std::regex(R"re("end":"closed_owing","side":"broker",)re"
                 R"re("cause":"broker closed with 1 request\(s\) in flight \(code 1000 normal\)"\})re")))
      << proxy.proc.output();
}

// A broker that takes one request and then neither answers nor reads (so no close handshake either).
struct hung_broker {
  std::promise<void> got;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  ws_test_server server{[this](ws_peer& p) {
    ws_peer::message m;
    if (p.read(m)) got.set_value();
    released.wait_for(30s);
  }};
  ~hung_broker() { release.set_value(); }
};

TEST(ProxyShutdown, TheWholeShutdownFitsTheDrainTimeoutAndLogsTheClosedLine) {
  hung_broker broker;
  proxy_process proxy({"--broker", broker.server.address(), "--drain-timeout", "2s", "--log-format", "json"});
  client c(proxy.port);
  c.send(frame("never answered"));
  ASSERT_EQ(broker.got.get_future().wait_for(10s), std::future_status::ready);
  const auto start = std::chrono::steady_clock::now();
  proxy.proc.signal(SIGTERM);
  EXPECT_EQ(proxy.proc.wait(10s), 0) << proxy.proc.output();
  const auto took = std::chrono::steady_clock::now() - start;
  // 1.5 s for the response, then the close handshake the broker never answers, cut at 2 s.
  EXPECT_GE(took, 1500ms);
  EXPECT_LT(took, 3000ms) << proxy.proc.output();
  EXPECT_TRUE(proxy.proc.wait_for_output(std::regex(
      R"re("conn":1,"event":"closed",.*"end":"shut_down","cause":"shut down with 1 response\(s\) not delivered )re"
      R"re(\(drain timeout\)"\})re")))
      << proxy.proc.output();
  std::cout << "shutdown took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
            << " ms with --drain-timeout 2s\n";
}

TEST(ProxyShutdown, ASecondSignalStopsAtOnceWithTheClosedLine) {
  hung_broker broker;
  proxy_process proxy(
      {"--broker", broker.server.address(), "--drain-timeout", "30s", "--log-format", "json"});
  client c(proxy.port);
  c.send(frame("never answered"));
  ASSERT_EQ(broker.got.get_future().wait_for(10s), std::future_status::ready);
  proxy.proc.signal(SIGTERM);
  ASSERT_TRUE(proxy.proc.wait_for_output(std::regex("signal 15: no new connections")));
  const auto start = std::chrono::steady_clock::now();
  proxy.proc.signal(SIGTERM);
  EXPECT_EQ(proxy.proc.wait(10s), 0) << proxy.proc.output();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  EXPECT_TRUE(proxy.proc.wait_for_output(
      std::regex(R"re("conn":1,"event":"closed",.*"end":"stopped",)re"
                 R"re("cause":"stopped by a second signal with 1 response\(s\) not delivered"\})re")))
      << proxy.proc.output();
}

TEST(ProxyShutdown, TheDefaultDrainTimeoutFitsDockersTenSecondGrace) {
  child_process help({KWS_PROXY_PATH, "--help"});
  EXPECT_EQ(help.wait(10s), 0);
  EXPECT_TRUE(std::regex_search(help.output(), std::regex(R"(--drain-timeout [^\n]*=8s\n)")))
      << help.output();
}

bool have_ipv6_loopback() {
  asio::io_context ioc;
  error_code ec;
  tcp::acceptor a(ioc);
  a.open(tcp::v6(), ec);
  if (!ec) a.bind(tcp::endpoint(asio::ip::make_address("::1"), 0), ec);
  return !ec;
}

TEST(ProxyListener, TheDefaultListenerServesIpv4AndIpv6Loopback) {
  ws_test_server server(kws::test::echo);
  proxy_process proxy({"--broker", server.address()}, false, {}, proxy_process::listen_on::default_listener);
  std::vector<std::string> addresses{"127.0.0.1"};
  if (have_ipv6_loopback()) {
    addresses.push_back("::1");
  } else {
    std::cout << "this machine has no IPv6 loopback: only 127.0.0.1 is tested\n";
  }
  for (const auto& a : addresses) {
    client c(proxy.port, a);
    error_code ec;
    EXPECT_EQ(c.exchange(frame("over " + a), 4 + 5 + a.size(), ec), frame("over " + a)) << a;
    EXPECT_FALSE(ec) << a << ": " << ec.message();
  }
}

TEST(ProxyHeaders, AHeaderFileReachesTheBrokerAndItsValuesAreNeverPrinted) {
  kws::test::temp_dir dir("kws-ops");
  kws::test::write_file(dir / "headers",
                        "# a comment\n\nAuthorization: Bearer file-secret-token\r\nX-Tenant:  t1\n");
  std::promise<std::map<std::string, std::string>> seen;
  ws_test_server server([&](ws_peer& p) {
    seen.set_value(p.request_headers());
    kws::test::echo(p);
  });
  proxy_process proxy({"--broker", server.address(), "--header-file", (dir / "headers").string(), "--header",
                       "X-Other: o", "--log-level", "trace"});
  client c(proxy.port);
  error_code ec;
  EXPECT_EQ(c.exchange(frame("h"), 5, ec), frame("h"));
  auto headers = seen.get_future().get();
  EXPECT_EQ(headers["authorization"], "Bearer file-secret-token");
  EXPECT_EQ(headers["x-tenant"], "t1");
  EXPECT_EQ(headers["x-other"], "o");
  EXPECT_EQ(proxy.proc.output().find("file-secret-token"), std::string::npos) << proxy.proc.output();

  // A bad line, or a bad --header: exit 2, naming the file and line, never the text.
  kws::test::write_file(dir / "bad", "Authorization: Bearer ok\nBearer another-secret\n");
  child_process bad({KWS_PROXY_PATH, "--header-file", (dir / "bad").string()});
  EXPECT_EQ(bad.wait(10s), 2);
  EXPECT_NE(bad.output().find("line 2"), std::string::npos) << bad.output();
  EXPECT_EQ(bad.output().find("secret"), std::string::npos) << bad.output();
  child_process bad_flag({KWS_PROXY_PATH, "--header", "Bearer argv-secret"});
  EXPECT_EQ(bad_flag.wait(10s), 2);
  EXPECT_EQ(bad_flag.output().find("argv-secret"), std::string::npos) << bad_flag.output();
  child_process help({KWS_PROXY_PATH, "--header", "Authorization: Bearer help-secret", "--help"});
  EXPECT_EQ(help.wait(10s), 0);
  EXPECT_EQ(help.output().find("help-secret"), std::string::npos);
  child_process missing({KWS_PROXY_PATH, "--header-file", (dir / "missing").string()});
  EXPECT_EQ(missing.wait(10s), 2);
  EXPECT_NE(missing.output().find("cannot read"), std::string::npos) << missing.output();
}

}  // namespace
