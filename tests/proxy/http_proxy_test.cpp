// kafka-websocket-proxy behind an HTTP forward proxy: the built binary, a real forward proxy (tinyproxy) and
// a real WebSocket server, all on 127.0.0.1. The forward proxy's own log tells whether a connection went
// through it.
#include "forward_proxy_process.hpp"
#include "frame_util.hpp"
#include "process.hpp"
#include "proxy_support.hpp"
#include "test_env.hpp"
#include "ws_test_server.hpp"

#include <gtest/gtest.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <map>
#include <optional>
#include <regex>
#include <string>

namespace {
namespace asio = boost::asio;
using boost::system::error_code;
using kws::test::client;
using kws::test::forward_proxy_process;
using kws::test::frame;
using kws::test::proxy_process;
using kws::test::ws_test_server;
using namespace std::chrono_literals;

using environment = std::map<std::string, std::optional<std::string>>;

// The six forward proxy variables unset, then `set` on top: the tests see only what they set, whatever the
// machine's environment holds.
environment proxy_env(const environment& set = {}) {
  environment env;
  for (const char* n : {"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"})
    env[n] = std::nullopt;
  for (const auto& [k, v] : set) env[k] = v;
  return env;
}

// One frame through the proxy and back.
void round_trip(unsigned short port) {
  client c(port);
  error_code ec;
  EXPECT_EQ(c.exchange(frame("via the forward proxy"), 25, ec), frame("via the forward proxy"));
  EXPECT_FALSE(ec) << ec.message();
}

std::string open_line(const proxy_process& p) {
  return p.proc.wait_for_output(std::regex(R"((conn \d+ open [^\n]*))")).value_or("(no open line)");
}

TEST(HttpProxy, ExplicitProxyCarriesTheConnectionAndTheOpenLineNamesIt) {
  ws_test_server server(kws::test::echo);
  forward_proxy_process fwd({.connect_ports = {server.port()}});
  proxy_process proxy({"--broker", server.address(), "--http-proxy", fwd.url()}, false, proxy_env());
  round_trip(proxy.port);
  const auto line = open_line(proxy);
  EXPECT_TRUE(std::regex_match(line, std::regex("conn 1 open client=127\\.0\\.0\\.1:\\d+ broker=ws://" +
                                                server.address() + "/ via=" + fwd.authority())))
      << line;
  EXPECT_EQ(fwd.connects_to(server.address()), 1) << fwd.log();
  EXPECT_TRUE(proxy.proc.wait_for_output(std::regex("forward proxy \\(--http-proxy\\): ws:// via " +
                                                    fwd.authority() + ", wss:// via " + fwd.authority())))
      << proxy.proc.output();
}

TEST(HttpProxy, TheEnvironmentIsUsedByDefault) {
  ws_test_server server(kws::test::echo);
  forward_proxy_process fwd({.connect_ports = {server.port()}});
  // <-loopback>: the broker is on 127.0.0.1, which the environment's rules otherwise reach directly.
  proxy_process proxy({"--broker", server.address()}, false,
                      proxy_env({{"http_proxy", fwd.url()}, {"no_proxy", "<-loopback>"}}));
  round_trip(proxy.port);
  EXPECT_NE(open_line(proxy).find(" via=" + fwd.authority()), std::string::npos) << proxy.proc.output();
  EXPECT_EQ(fwd.connects_to(server.address()), 1) << fwd.log();
}

TEST(HttpProxy, TheEnvironmentLeavesLoopbackBrokersDirectAsGoDoes) {
  ws_test_server server(kws::test::echo);
  forward_proxy_process fwd({.connect_ports = {server.port()}});
  proxy_process proxy({"--broker", server.address()}, false, proxy_env({{"HTTP_PROXY", fwd.url()}}));
  round_trip(proxy.port);
  EXPECT_EQ(open_line(proxy).find("via="), std::string::npos) << open_line(proxy);
  EXPECT_TRUE(proxy.proc.wait_for_output(std::regex("localhost and loopback direct; broker \\S+ direct")))
      << proxy.proc.output();
  EXPECT_EQ(fwd.connects_to(server.address()), 0) << fwd.log();
}

TEST(HttpProxy, NoProxyNamingTheBrokerBypassesTheProxy) {
  ws_test_server server(kws::test::echo);
  forward_proxy_process fwd({.connect_ports = {server.port()}});
  proxy_process proxy(
      {"--broker", server.address()}, false,
      proxy_env({{"HTTP_PROXY", fwd.url()}, {"NO_PROXY", "<-loopback>,example.com,127.0.0.0/8"}}));
  round_trip(proxy.port);
  EXPECT_EQ(open_line(proxy).find("via="), std::string::npos) << open_line(proxy);
  EXPECT_EQ(fwd.connects_to(server.address()), 0) << fwd.log();
}

TEST(HttpProxy, HttpProxyNoneIgnoresTheEnvironment) {
  ws_test_server server(kws::test::echo);
  forward_proxy_process fwd({.connect_ports = {server.port()}});
  proxy_process proxy({"--broker", server.address(), "-http-proxy", "none"}, false,
                      proxy_env({{"HTTP_PROXY", fwd.url()}, {"NO_PROXY", "<-loopback>"}}));
  round_trip(proxy.port);
  EXPECT_EQ(open_line(proxy).find("via="), std::string::npos) << open_line(proxy);
  EXPECT_TRUE(proxy.proc.wait_for_output(std::regex("forward proxy: none \\(--http-proxy none\\)")))
      << proxy.proc.output();
  EXPECT_EQ(fwd.connects_to(server.address()), 0) << fwd.log();
}

TEST(HttpProxy, CredentialsFromTheEnvironmentAreAcceptedAndNeverLogged) {
  ws_test_server server(kws::test::echo);
  forward_proxy_process fwd({.connect_ports = {server.port()}, .user = "kws-user", .password = "s3cret-pw"});
  proxy_process proxy(
      {"--broker", server.address(), "--log-level", "trace"}, false,
      proxy_env({{"HTTP_PROXY", fwd.url("kws-user:s3cret-pw")}, {"NO_PROXY", "<-loopback>"}}));
  round_trip(proxy.port);
  EXPECT_NE(open_line(proxy).find(" via=" + fwd.authority()), std::string::npos) << proxy.proc.output();
  EXPECT_EQ(proxy.proc.output().find("s3cret"), std::string::npos) << proxy.proc.output();
  EXPECT_EQ(proxy.proc.output().find("kws-user"), std::string::npos) << proxy.proc.output();
}

TEST(HttpProxy, RefusedCredentialsAreRetriedThenReportedWithTheProxyAndWithoutThePassword) {
  ws_test_server server(kws::test::echo);
  forward_proxy_process fwd({.connect_ports = {server.port()}, .user = "kws-user", .password = "s3cret-pw"});
  proxy_process proxy({"--broker", server.address(), "--http-proxy", fwd.url("kws-user:wrong-pw"),
                       "--dial-retries", "2", "--dial-backoff", "50ms"},
                      false, proxy_env());
  client c(proxy.port);
  EXPECT_TRUE(c.closed_by_peer());
  const auto line = proxy.proc.wait_for_output(std::regex("(conn 1 closed [^\\n]*dial failed[^\\n]*)"));
  ASSERT_TRUE(line) << proxy.proc.output();
  EXPECT_NE(line->find(" via=" + fwd.authority() + ": dial failed after 3 attempt(s): forward proxy " +
                       fwd.authority() + " answered CONNECT " + server.address() +
                       " with 401 Unauthorized: it refused the credentials in the proxy URL"),
            std::string::npos)
      << *line;
  // The dial retries and backoff apply as for a direct dial: three CONNECTs reached the forward proxy.
  EXPECT_EQ(fwd.connects_to(server.address()), 3) << fwd.log();
  EXPECT_EQ(proxy.proc.output().find("wrong-pw"), std::string::npos) << proxy.proc.output();
  EXPECT_EQ(server.accepted(), 0);
}

TEST(HttpProxy, AStallingProxyIsBoundedByTheHandshakeTimeout) {
  // A listener that never accepts: the kernel completes the TCP handshake, and nobody ever answers.
  asio::io_context ioc;
  asio::ip::tcp::acceptor silent(ioc, {asio::ip::make_address("127.0.0.1"), 0});
  const auto silent_at = "127.0.0.1:" + std::to_string(silent.local_endpoint().port());
  proxy_process proxy({"--broker", "127.0.0.1:9", "--http-proxy", "http://" + silent_at,
                       "--handshake-timeout", "300ms", "--dial-retries", "1", "--dial-backoff", "10ms"},
                      false, proxy_env());
  client c(proxy.port);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(c.closed_by_peer(10s));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, 550ms);
  EXPECT_LT(took, 5s);
  EXPECT_TRUE(
      proxy.proc.wait_for_output(std::regex("dial failed after 2 attempt\\(s\\): forward proxy " + silent_at +
                                            " did not answer CONNECT 127\\.0\\.0\\.1:9 within 300ms")))
      << proxy.proc.output();
}

// Runs the proxy to its end (it must not start), with the given environment.
kws::test::run_result run_proxy(std::vector<std::string> args, const environment& env) {
  args.insert(args.begin(), KWS_PROXY_PATH);
  return kws::test::run(std::move(args), {.environment = env}, 10s);
}

TEST(HttpProxy, CredentialsNeverAppearInHelpOrInErrors) {
  const std::string secret = "t0p-s3cret";
  const environment env = proxy_env({{"HTTPS_PROXY", "http://alice:" + secret + "@proxy.example:3128"}});
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--help"}, {"--http-proxy", "http://alice:" + secret + "@proxy.example:3128", "--help"}}) {
    const auto r = run_proxy(args, env);
    EXPECT_EQ(r.exit_code, std::optional<int>(0)) << r.out;
    EXPECT_NE(r.out.find("--http-proxy"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find(secret), std::string::npos) << r.out;
  }
  // A value that cannot be used: exit 2, the value shown without its user info.
  const auto bad_flag =
      run_proxy({"--http-proxy", "https://alice:" + secret + "@proxy.example:3128"}, proxy_env());
  EXPECT_EQ(bad_flag.exit_code, std::optional<int>(2)) << bad_flag.out;
  EXPECT_NE(bad_flag.out.find("https://***@proxy.example:3128"), std::string::npos) << bad_flag.out;
  EXPECT_EQ(bad_flag.out.find(secret), std::string::npos) << bad_flag.out;
  const auto bad_env =
      run_proxy({}, proxy_env({{"https_proxy", "socks5://alice:" + secret + "@proxy.example:1080"}}));
  EXPECT_EQ(bad_env.exit_code, std::optional<int>(2)) << bad_env.out;
  EXPECT_NE(bad_env.out.find("HTTPS_PROXY"), std::string::npos) << bad_env.out;
  EXPECT_NE(bad_env.out.find("socks5://***@proxy.example:1080"), std::string::npos) << bad_env.out;
  EXPECT_EQ(bad_env.out.find(secret), std::string::npos) << bad_env.out;
}

}  // namespace
