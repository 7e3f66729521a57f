// kafka-websocket-gateway to a cluster that listens with TLS (--upstream-tls): the dev broker's TCP listeners
// with --tcp-tls-cert, certificates made at test time. kcat through the proxy and the gateway, byte-exact on
// every partition of three nodes; the gateway's own Metadata lookup over TLS; certificate problems
// (untrusted, self-signed, expired, another host's) ending only the connection that met them, with one line
// naming why.
#include "client_tools.hpp"
#include "frame_util.hpp"
#include "log_events.hpp"
#include "process.hpp"
#include "test_env.hpp"
#include "ws_test_server.hpp"

#include <kws/kws.hpp>

#include <gtest/gtest.h>
#include <boost/asio/io_context.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <csignal>
#include <iostream>
#include <regex>

namespace {

using namespace kws::test;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using boost::system::error_code;

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A Metadata v0 request for topic "t".
std::string metadata_v0(std::int32_t correlation_id) {
  std::string r{0, 3, 0, 0};
  for (int shift = 24; shift >= 0; shift -= 8) r += static_cast<char>((correlation_id >> shift) & 0xff);
  r += std::string{0, 1, 't', 0, 0, 0, 0};
  return frame(r);
}

class UpstreamTls : public ::testing::Test {
 protected:
  void SetUp() override { certs_ = make_test_certificates(); }

  void TearDown() override {
    for (auto* p : {proxy_.get(), gateway_.get()}) {
      if (!p) continue;
      p->signal(SIGTERM);
      EXPECT_EQ(p->wait(15s), std::optional<int>(0)) << "a server did not exit with 0 within 15 s of SIGTERM";
    }
    if (HasFailure()) {
      for (auto& [name, p] : std::vector<std::pair<const char*, child_process*>>{
               {"proxy", proxy_.get()}, {"gateway", gateway_.get()}, {"dev broker", devbroker_.get()}}) {
        if (p) std::cerr << "---- " << name << " log ----\n" << p->output();
      }
    }
  }

  // The dev broker's TCP listeners with TLS (`cert`/`key`), `nodes` of them; the first one's port.
  std::string start_devbroker(const std::string& cert, const std::string& key, int nodes = 1,
                              const std::string& topic = "tls:1") {
    devbroker_ = std::make_unique<child_process>(std::vector<std::string>{
        KWS_DEVBROKER_PATH, "--listen", "127.0.0.1:0", "--tcp-listen", "127.0.0.1:0", "--tcp-tls-cert", cert,
        "--tcp-tls-key", key, "--nodes", std::to_string(nodes), "--topic", topic});
    const auto port = devbroker_->wait_for_output(std::regex(R"(tcp=127\.0\.0\.1:(\d+))"));
    EXPECT_TRUE(port) << devbroker_->output();
    return port.value_or("0");
  }

  void start_gateway(const std::vector<std::string>& args) {
    gateway_ = std::make_unique<child_process>(
        std::vector<std::string>{KWS_GATEWAY_PATH, "--listen", "127.0.0.1:0", "--threads", "2",
                                 "--drain-timeout", "2s", "--connect-timeout", "3s", "--log-format", "json"} +
        args);
    const auto port = gateway_->wait_for_output(std::regex(R"(listening on 127\.0\.0\.1:(\d+))"));
    ASSERT_TRUE(port) << gateway_->output();
    gateway_port_ = static_cast<unsigned short>(std::stoi(*port));
  }

  void start_proxy() {
    const auto gw = "ws://127.0.0.1:" + std::to_string(gateway_port_);
    proxy_ = std::make_unique<child_process>(std::vector<std::string>{
        KWS_PROXY_PATH, "--listen", "127.0.0.1", "--port", "0", "--broker", gw + "/kafka",
        "--broker-url-template", gw + "/kafka/{node_id}", "--threads", "2", "--drain-timeout", "2s"});
    const auto port = proxy_->wait_for_output(std::regex(R"(listening on 127\.0\.0\.1:(\d+))"));
    ASSERT_TRUE(port) << proxy_->output();
    bootstrap_ = "127.0.0.1:" + *port;
  }

  void kcat(const std::string& name, const std::vector<std::string>& args,
            const std::string& in = "/dev/null") {
    const auto r = run(std::vector<std::string>{KWS_KCAT_PATH, "-b", bootstrap_} + args,
                       tool_io(in, dir_ / (name + ".out")), 30s);
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << "kcat " << name << ": " << describe(r.exit_code, r.err);
  }
  std::string output_of(const std::string& name) const { return read_file(dir_ / (name + ".out")); }

  // A WebSocket client of the gateway at `path`, in this process.
  kws::connection dial_gateway(const std::string& path) {
    error_code ec;
    auto c = kws::dialer(ioc_.get_executor(), kws::dialer_config{.handshake_timeout = 5s})
                 .dial("ws://127.0.0.1:" + std::to_string(gateway_port_) + path, ec);
    EXPECT_FALSE(ec) << ec.message();
    return c;
  }

  // Metadata v0 over `c`: true when an answer with the same correlation id came back.
  static bool metadata_answered(kws::connection& c, std::int32_t correlation_id) {
    if (!c.is_open()) return false;
    error_code ec;
    const auto req = metadata_v0(correlation_id);
    c.write_frame(asio::buffer(req), ec);
    if (ec) return false;
    boost::beast::flat_buffer in;
    c.read_frame(in, ec);
    if (ec || in.size() < 8) return false;
    const auto* p = static_cast<const unsigned char*>(in.data().data());
    return kws::load_be32(p + 4) == correlation_id;
  }

  // The gateway's one line about a dial that met a certificate problem; the client's connection ends (code
  // 1013), the gateway goes on.
  void expect_one_refusal(const std::string& reason) {
    auto c = dial_gateway("/kafka");
    ASSERT_TRUE(c.is_open());
    error_code ec;
    const auto req = metadata_v0(1);
    c.write_frame(asio::buffer(req), ec);
    boost::beast::flat_buffer in;
    c.read_frame(in, ec);
    EXPECT_TRUE(ec) << "the connection was not closed";
    EXPECT_EQ(c.peer_close_code(), 1013);
    expect_one_line_ending_the_client(reason);
  }

  // The client's connection ended because the cluster could not be reached, for `reason`, said on one line.
  void expect_one_line_ending_the_client(const std::string& reason) {
    ASSERT_TRUE(wait_for_event(*gateway_, {field("event", "closed"), field("end", "cluster_unreachable"),
                                           field("side", "broker"), field_containing("cause", reason)}))
        << gateway_->output();
    EXPECT_EQ(events(*gateway_, {field_containing("msg", reason)}).size(), 1u)
        << "wanted exactly one line with: " << reason << "\n"
        << gateway_->output();
  }

  temp_dir dir_{"kws-upstream-tls"};
  tls_files certs_;
  asio::io_context ioc_;
  std::unique_ptr<child_process> devbroker_, gateway_, proxy_;
  unsigned short gateway_port_ = 0;
  std::string bootstrap_;
};

TEST_F(UpstreamTls, KcatThroughProxyAndGatewayToATlsClusterOfThreeNodesByteExact) {
  const auto port = start_devbroker(certs_.cert_pem, certs_.key_pem, 3, "tls:3");
  ASSERT_NO_FATAL_FAILURE(start_gateway(
      {"--upstream", "127.0.0.1:" + port, "--upstream-tls", "--upstream-ca-file", certs_.ca_pem}));
  EXPECT_FALSE(events(*gateway_, {field_containing("msg", " (tls) ")}).empty()) << gateway_->output();
  ASSERT_NO_FATAL_FAILURE(start_proxy());
  std::map<int, std::vector<std::string>> want;
  for (int p = 0; p < 3; ++p) {
    const auto lines = keyed_lines(300, "t" + std::to_string(p) + "-");
    write_file(dir_ / ("in" + std::to_string(p)), lines);
    want[p] = lines_of(lines);
    ASSERT_NO_FATAL_FAILURE(
        kcat("produce" + std::to_string(p),
             {"-P", "-t", "tls", "-p", std::to_string(p), "-K:", "-l", dir_ / ("in" + std::to_string(p))}));
  }
  ASSERT_NO_FATAL_FAILURE(kcat("consume", {"-C", "-t", "tls", "-o", "beginning", "-e", "-f", "%p|%k:%s\\n"}));
  EXPECT_TRUE(by_partition(output_of("consume")) == want) << "per-partition contents differ";
  // Every node was reached over TLS, its certificate checked against the address it advertises.
  for (int node = 0; node < 3; ++node) {
    EXPECT_FALSE(
        events(*gateway_, {field("event", "open"), field("target", "/kafka/" + std::to_string(node))})
            .empty())
        << "node " << node;
  }
  EXPECT_EQ(gateway_->output().find("certificate was refused"), std::string::npos);
}

// A fresh gateway whose first client asks for a node by id learns the cluster's brokers with a Metadata
// request of its own, over TLS.
TEST_F(UpstreamTls, AFreshGatewayLearnsANodeIdOverTls) {
  const auto port = start_devbroker(certs_.cert_pem, certs_.key_pem, 3, "tls:3");
  ASSERT_NO_FATAL_FAILURE(start_gateway({"--upstream", "127.0.0.1:" + port, "--upstream-tls",
                                         "--upstream-ca-file", certs_.ca_pem, "--log-level", "debug"}));
  auto c = dial_gateway("/kafka/2");
  EXPECT_TRUE(metadata_answered(c, 7));
  EXPECT_NE(gateway_->output().find("learned 3 broker(s) from 127.0.0.1:" + port), std::string::npos);
}

// The bootstrap host is checked as dialled (localhost), and each broker as it advertises itself (127.0.0.1):
// a certificate for localhost alone serves the bootstrap connection and is refused for the nodes' own,
// which end alone with one line; the bootstrap client goes on.
TEST_F(UpstreamTls, ABrokerWhoseCertificateDoesNotNameItsAdvertisedHostEndsOnlyThatConnection) {
  const auto local_only = make_test_certificates("DNS:localhost");
  const auto port = start_devbroker(local_only.cert_pem, local_only.key_pem);
  ASSERT_NO_FATAL_FAILURE(start_gateway(
      {"--upstream", "localhost:" + port, "--upstream-tls", "--upstream-ca-file", local_only.ca_pem}));
  auto bootstrap = dial_gateway("/kafka");
  ASSERT_TRUE(metadata_answered(bootstrap, 1));  // teaches the gateway node 0 at 127.0.0.1
  auto node = dial_gateway("/kafka/0");
  ASSERT_TRUE(node.is_open());
  boost::beast::flat_buffer in;
  error_code ec;
  const auto req = metadata_v0(2);
  node.write_frame(asio::buffer(req), ec);
  node.read_frame(in, ec);
  EXPECT_TRUE(ec) << "the node's connection was not closed";
  EXPECT_EQ(node.peer_close_code(), 1013);
  expect_one_line_ending_the_client(
      "the broker's TLS certificate was refused: IP address mismatch (127.0.0.1)");
  EXPECT_TRUE(metadata_answered(bootstrap, 3)) << "the bootstrap connection did not go on";
}

TEST_F(UpstreamTls, AnUntrustedCertificateIsRefusedWithItsReason) {
  const auto port = start_devbroker(certs_.cert_pem, certs_.key_pem);
  // The system store does not know the test CA.
  ASSERT_NO_FATAL_FAILURE(start_gateway({"--upstream", "127.0.0.1:" + port, "--upstream-tls"}));
  expect_one_refusal(
      "the broker's TLS certificate was refused: unable to get local issuer certificate (127.0.0.1)");
}

TEST_F(UpstreamTls, ASelfSignedCertificateIsRefusedWithItsReason) {
  const auto self = make_self_signed_certificate(certs_);
  const auto port = start_devbroker(self.cert_pem, self.key_pem);
  ASSERT_NO_FATAL_FAILURE(start_gateway(
      {"--upstream", "127.0.0.1:" + port, "--upstream-tls", "--upstream-ca-file", certs_.ca_pem}));
  expect_one_refusal("the broker's TLS certificate was refused: self-signed certificate (127.0.0.1)");
}

TEST_F(UpstreamTls, AnExpiredCertificateIsRefusedWithItsReason) {
  const auto port = start_devbroker(make_expired_certificate(certs_), certs_.key_pem);
  ASSERT_NO_FATAL_FAILURE(start_gateway(
      {"--upstream", "127.0.0.1:" + port, "--upstream-tls", "--upstream-ca-file", certs_.ca_pem}));
  expect_one_refusal("the broker's TLS certificate was refused: certificate has expired (127.0.0.1)");
}

TEST_F(UpstreamTls, InsecureSkipsVerificationAndSaysSoAtStart) {
  const auto self = make_self_signed_certificate(certs_);
  const auto port = start_devbroker(self.cert_pem, self.key_pem);
  ASSERT_NO_FATAL_FAILURE(
      start_gateway({"--upstream", "127.0.0.1:" + port, "--upstream-tls", "--upstream-insecure"}));
  EXPECT_TRUE(gateway_->wait_for_output(
      std::regex("--upstream-insecure: the cluster's TLS certificates and host names are not verified")));
  auto c = dial_gateway("/kafka");
  EXPECT_TRUE(metadata_answered(c, 5));
}

// A plain gateway to a TLS listener (no --upstream-tls) fails that client's connection; so does a TLS gateway
// to a plain listener, with the handshake's reason.
TEST_F(UpstreamTls, TlsToAPlainListenerNamesTheHandshakeFailure) {
  devbroker_ = std::make_unique<child_process>(std::vector<std::string>{
      KWS_DEVBROKER_PATH, "--listen", "127.0.0.1:0", "--tcp-listen", "127.0.0.1:0", "--topic", "plain:1"});
  const auto port = devbroker_->wait_for_output(std::regex(R"(tcp=127\.0\.0\.1:(\d+))"));
  ASSERT_TRUE(port) << devbroker_->output();
  ASSERT_NO_FATAL_FAILURE(start_gateway(
      {"--upstream", "127.0.0.1:" + *port, "--upstream-tls", "--upstream-ca-file", certs_.ca_pem}));
  expect_one_refusal("the TLS handshake with the broker failed: ");
}

TEST(UpstreamTlsFlags, InconsistentFlagsAreRefusedAndAnUnreadableCaFileStopsTheStart) {
  const auto check = [](const std::vector<std::string>& args, int code, const std::string& says) {
    const auto r = run(
        std::vector<std::string>{KWS_GATEWAY_PATH, "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9"} +
            args,
        {}, 10s);
    EXPECT_EQ(r.exit_code, std::optional<int>(code)) << r.out;
    EXPECT_NE(r.out.find(says), std::string::npos) << r.out;
  };
  const auto certs = make_test_certificates();
  check({"--upstream-ca-file", certs.ca_pem}, 2, "need --upstream-tls");
  check({"--upstream-tls", "--upstream-cert", certs.cert_pem}, 2, "give both or neither");
  check({"--upstream-tls", "--upstream-ca-file", certs.key_pem}, 1, "cannot start: CA file " + certs.key_pem);
}

}  // namespace
