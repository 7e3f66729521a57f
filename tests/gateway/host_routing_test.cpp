// The gateway's brokers told apart by host name on one port: the Host header and, over wss, the TLS server
// name (SNI) against `--advertise kafka-{node_id}.gw.test`, with the proxy's default URL template in front,
// its names dialled at 127.0.0.1 with --connect-to. Real processes on 127.0.0.1, every wait bounded.
#include "client_tools.hpp"
#include "gateway_support.hpp"
#include "log_events.hpp"
#include "process.hpp"
#include "test_env.hpp"
#include "ws_test_server.hpp"

#include <gtest/gtest.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>

#include <optional>
#include <regex>
#include <set>

namespace {

using namespace kws::test;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// The status of the gateway's answer to a WebSocket upgrade of `target` with `host` as the Host header, over
// TLS trusting `ca` with `server_name` as SNI (none when empty); 0 when no answer came within 10 s.
int upgrade_status(unsigned short port, const std::string& ca, const std::string& server_name,
                   const std::string& target, const std::string& host) {
  asio::io_context ioc;
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.load_verify_file(ca);
  asio::ssl::stream<tcp::socket> s(ioc, ctx);
  if (!server_name.empty()) SSL_set_tlsext_host_name(s.native_handle(), server_name.c_str());
  const std::string request = "GET " + target + " HTTP/1.1\r\nHost: " + host +
                              "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
  std::string in;
  int status = 0;
  s.next_layer().async_connect({asio::ip::make_address("127.0.0.1"), port}, [&](error_code ec) {
    if (ec) return;
    s.async_handshake(asio::ssl::stream_base::client, [&](error_code ec) {
      if (ec) return;
      asio::async_write(s, asio::buffer(request), [&](error_code ec, std::size_t) {
        if (ec) return;
        asio::async_read_until(s, asio::dynamic_buffer(in), "\r\n\r\n", [&](error_code ec, std::size_t) {
          std::smatch m;
          if (!ec && std::regex_search(in, m, std::regex(R"(^HTTP/1\.1 (\d{3}))"))) status = std::stoi(m[1]);
          ioc.stop();
        });
      });
    });
  });
  ioc.run_for(10s);
  return status;
}

class HostRouting : public ::testing::Test {
 protected:
  void TearDown() override { stop_and_report(proxy_.get(), gateway_.get(), mock_.get()); }

  void start_mock(int brokers, const std::string& topic) {
    mock_ = std::make_unique<mock_cluster>(dir_.path(), brokers, std::vector<std::string>{topic});
    upstream_ = mock_->bootstrap();
  }

  // wss with a wildcard certificate; brokers advertised as kafka-{node_id}.gw.test at the bound port.
  void start_gateway() {
    gateway_ = std::make_unique<child_process>(std::vector<std::string>{
        KWS_GATEWAY_PATH, "--listen", "127.0.0.1:0", "--upstream", upstream_, "--threads", "2",
        "--drain-timeout", "2s", "--log-format", "json", "--tls-cert", tls_.cert_pem, "--tls-key",
        tls_.key_pem, "--advertise", "kafka-{node_id}.gw.test:0"});
    const auto port = gateway_->wait_for_output(std::regex(R"(listening on 127\.0\.0\.1:(\d+))"));
    ASSERT_TRUE(port) << gateway_->output();
    gateway_port_ = static_cast<unsigned short>(std::stoi(*port));
  }

  std::string name(const std::string& host) const { return host + ":" + std::to_string(gateway_port_); }

  temp_dir dir_{"kws-host-routing"};
  tls_files tls_ = make_test_certificates("DNS:gw.test,DNS:*.gw.test");
  std::unique_ptr<mock_cluster> mock_;
  std::unique_ptr<child_process> gateway_, proxy_;
  std::string upstream_;
  unsigned short gateway_port_ = 0;
};

TEST_F(HostRouting, TheProxysDefaultTemplateReachesEveryBrokerByItsNameOnOnePort) {
  ASSERT_NO_FATAL_FAILURE(start_mock(3, "named:3"));
  ASSERT_NO_FATAL_FAILURE(start_gateway());
  // No --broker-url-template: the default wss://{host}:{port}/ of the names the gateway advertises.
  proxy_ = std::make_unique<child_process>(std::vector<std::string>{KWS_PROXY_PATH,
                                                                    "--listen",
                                                                    "127.0.0.1",
                                                                    "--port",
                                                                    "0",
                                                                    "--broker",
                                                                    name("gw.test"),
                                                                    "--tls",
                                                                    "--ca-file",
                                                                    tls_.ca_pem,
                                                                    "--connect-to",
                                                                    "gw.test::127.0.0.1:",
                                                                    "--connect-to",
                                                                    "*.gw.test::127.0.0.1:",
                                                                    "--http-proxy",
                                                                    "none",
                                                                    "--threads",
                                                                    "2",
                                                                    "--drain-timeout",
                                                                    "2s"});
  const auto port = proxy_->wait_for_output(std::regex(R"(listening on 127\.0\.0\.1:(\d+))"));
  ASSERT_TRUE(port) << proxy_->output();
  const auto kcat = [&](const std::string& what, const std::vector<std::string>& args,
                        const std::string& in) {
    const auto r = run(std::vector<std::string>{KWS_KCAT_PATH, "-b", "127.0.0.1:" + *port} + args,
                       tool_io(in, dir_ / (what + ".out")), 30s);
    EXPECT_EQ(r.exit_code, std::optional<int>(0)) << "kcat " << what << ": " << describe(r.exit_code, r.err);
    return read_file(dir_ / (what + ".out"));
  };
  const auto md = kcat("metadata", {"-L", "-t", "named"}, "/dev/null");
  const auto input = keyed_lines(300, "n-");
  write_file(dir_ / "in", input);
  kcat("produce", {"-P", "-t", "named", "-K:", "-l", dir_ / "in"}, "/dev/null");
  auto got = lines_of(
      kcat("consume", {"-C", "-t", "named", "-o", "beginning", "-e", "-f", "%k:%s\\n"}, "/dev/null"));
  auto sent = lines_of(input);
  std::sort(got.begin(), got.end());
  std::sort(sent.begin(), sent.end());
  EXPECT_TRUE(got == sent) << got.size() << " of " << sent.size() << " messages";
  // Each leader was reached at path / by its name alone.
  const auto led = leaders(md);
  ASSERT_FALSE(led.empty()) << md;
  for (int node : led) {
    EXPECT_FALSE(
        events(*gateway_, {field("event", "open"), field("target", "/"), field("node", std::to_string(node))})
            .empty())
        << "node " << node;
  }
}

TEST_F(HostRouting, TheHostHeaderAndTheServerNameMustNameTheSameBroker) {
  ASSERT_NO_FATAL_FAILURE(start_mock(2, "two:2"));
  ASSERT_NO_FATAL_FAILURE(start_gateway());
  const auto& ca = tls_.ca_pem;
  // Agreeing names, either case, with or without the port: that broker, at / and at the bootstrap path.
  EXPECT_EQ(upgrade_status(gateway_port_, ca, "kafka-2.gw.test", "/", name("kafka-2.gw.test")), 101);
  ASSERT_TRUE(wait_for_event(*gateway_, {field("event", "open"), field("target", "/"), field("node", "2")}));
  EXPECT_EQ(upgrade_status(gateway_port_, ca, "KAFKA-1.gw.test", "/kafka", "kafka-1.GW.test"), 101);
  ASSERT_TRUE(
      wait_for_event(*gateway_, {field("event", "open"), field("target", "/kafka"), field("node", "1")}));
  // No SNI (a client that dialled an address): the Host header alone.
  EXPECT_EQ(upgrade_status(gateway_port_, ca, "", "/kafka/1", name("kafka-1.gw.test")), 101);
  // A name that is not the pattern's (a leading zero, the bare domain): the path decides.
  EXPECT_EQ(upgrade_status(gateway_port_, ca, "gw.test", "/kafka/2", name("gw.test")), 101);
  ASSERT_TRUE(
      wait_for_event(*gateway_, {field("event", "open"), field("target", "/kafka/2"), field("node", "2")}));
  EXPECT_EQ(upgrade_status(gateway_port_, ca, "", "/", "kafka-01.gw.test"), 101);

  // Disagreements: 421, one line each naming both.
  EXPECT_EQ(upgrade_status(gateway_port_, ca, "kafka-1.gw.test", "/", name("kafka-2.gw.test")), 421);
  auto e = wait_for_event(*gateway_, {field("event", "refused"), field("status", "421"),
                                      field_containing("cause", "names node 1 and the Host header")});
  ASSERT_TRUE(e);
  EXPECT_NE(field_text(*e, "cause").find("names node 2"), std::string::npos) << field_text(*e, "cause");
  EXPECT_EQ(upgrade_status(gateway_port_, ca, "gw.test", "/", name("kafka-1.gw.test")), 421);
  EXPECT_TRUE(wait_for_event(*gateway_, {field("event", "refused"), field("status", "421"),
                                         field_containing("cause", "gw.test names no broker")}));
  EXPECT_EQ(upgrade_status(gateway_port_, ca, "kafka-1.gw.test", "/kafka/2", name("kafka-1.gw.test")), 421);
  EXPECT_TRUE(wait_for_event(*gateway_, {field("event", "refused"), field("status", "421"),
                                         field_containing("cause", "the path names node 2")}));
  // The gateway goes on: a good request after the refusals.
  EXPECT_EQ(upgrade_status(gateway_port_, ca, "kafka-1.gw.test", "/", name("kafka-1.gw.test")), 101);
}

}  // namespace
