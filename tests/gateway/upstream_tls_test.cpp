// kafka-websocket-gateway to a cluster that listens with TLS (--upstream-tls): the dev broker's TCP listeners
// with --tcp-tls-cert, certificates made at test time. kcat through the proxy and the gateway, byte-exact on
// every partition of three nodes; the gateway's own Metadata lookup over TLS; certificate problems
// (untrusted, self-signed, expired, another host's) ending only the connection that met them, with one line
// naming why. Mutual TLS at both ends of the gateway: client certificates required on its wss listener
// (--client-ca-file) from the proxy (--cert/--key) and the plugin (kws.cert.file/kws.key.file), and the
// gateway's own certificate (--upstream-cert/--upstream-key) presented to a dev broker that requires one
// (--tcp-tls-client-ca).
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

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>

#include <csignal>
#include <iostream>
#include <regex>

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
                              const std::string& topic = "tls:1", const std::vector<std::string>& more = {}) {
    devbroker_ = std::make_unique<child_process>(
        std::vector<std::string>{KWS_DEVBROKER_PATH, "--listen", "127.0.0.1:0", "--tcp-listen", "127.0.0.1:0",
                                 "--tcp-tls-cert", cert, "--tcp-tls-key", key, "--nodes",
                                 std::to_string(nodes), "--topic", topic, "--log-format", "json"} +
        more);
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

  // `wss`: the gateway serves wss:// with the test CA's certificate.
  void start_proxy(const std::vector<std::string>& more = {}, bool wss = false) {
    const auto gw = (wss ? "wss://127.0.0.1:" : "ws://127.0.0.1:") + std::to_string(gateway_port_);
    proxy_ = std::make_unique<child_process>(
        std::vector<std::string>{KWS_PROXY_PATH, "--listen", "127.0.0.1", "--port", "0", "--broker",
                                 gw + "/kafka", "--broker-url-template", gw + "/kafka/{node_id}", "--threads",
                                 "2", "--drain-timeout", "2s"} +
        (wss ? std::vector<std::string>{"--ca-file", certs_.ca_pem} : std::vector<std::string>{}) + more);
    const auto port = proxy_->wait_for_output(std::regex(R"(listening on 127\.0\.0\.1:(\d+))"));
    ASSERT_TRUE(port) << proxy_->output();
    bootstrap_ = "127.0.0.1:" + *port;
  }

  // kcat to the proxy's listener.
  std::vector<std::string> kcat_via_proxy() const { return {KWS_KCAT_PATH, "-b", bootstrap_}; }

  // Runs a client tool (`argv`) to its end, its stdout in `name`.out; it must exit with 0.
  void run_client(const std::string& name, const std::vector<std::string>& argv,
                  const std::map<std::string, std::optional<std::string>>& environment = {}) {
    auto io = tool_io("/dev/null", dir_ / (name + ".out"));
    io.environment = environment;
    const auto r = run(argv, io, 30s);
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << name << ": " << describe(r.exit_code, r.err);
  }
  std::string output_of(const std::string& name) const { return read_file(dir_ / (name + ".out")); }

  // kcat (`client`: the tool and how it connects) produces 300 keyed lines to each of `partitions`
  // partitions of `topic`, then consumes everything: each partition must come back byte for byte, in order.
  void expect_round_trip(const std::vector<std::string>& client, const std::string& topic, int partitions,
                         const std::map<std::string, std::optional<std::string>>& environment = {}) {
    std::map<int, std::vector<std::string>> want;
    for (int p = 0; p < partitions; ++p) {
      const auto name = topic + std::to_string(p);
      const auto lines = keyed_lines(300, name + "-");
      write_file(dir_ / ("in-" + name), lines);
      want[p] = lines_of(lines);
      ASSERT_NO_FATAL_FAILURE(
          run_client("produce-" + name,
                     client + std::vector<std::string>{"-P", "-t", topic, "-p", std::to_string(p),
                                                       "-K:", "-l", dir_ / ("in-" + name)},
                     environment));
    }
    ASSERT_NO_FATAL_FAILURE(run_client(
        "consume-" + topic,
        client + std::vector<std::string>{"-C", "-t", topic, "-o", "beginning", "-e", "-f", "%p|%k:%s\\n"},
        environment));
    EXPECT_TRUE(by_partition(output_of("consume-" + topic)) == want) << "per-partition contents differ";
  }

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
  ASSERT_NO_FATAL_FAILURE(expect_round_trip(kcat_via_proxy(), "tls", 3));
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

// A cluster address that accepts the TCP connection (the kernel's backlog) and never answers the TLS
// handshake: the gateway gives up at --connect-timeout, which bounds the handshake too, and its line names
// that flag rather than --handshake-timeout (the client side's).
TEST_F(UpstreamTls, AClusterThatNeverAnswersTheHandshakeEndsTheClientNamingConnectTimeout) {
  asio::ip::tcp::acceptor silent(ioc_, {asio::ip::make_address("127.0.0.1"), 0});
  ASSERT_NO_FATAL_FAILURE(
      start_gateway({"--upstream", "127.0.0.1:" + std::to_string(silent.local_endpoint().port()),
                     "--upstream-tls", "--upstream-ca-file", certs_.ca_pem, "--connect-timeout", "300ms"}));
  expect_one_refusal("the broker did not finish the TLS handshake within --connect-timeout (127.0.0.1)");
}

// ---- mutual TLS to the cluster: a dev broker that requires client certificates (--tcp-tls-client-ca)
// -------

// Without --upstream-cert the broker refuses the gateway's handshake: the client's connection ends, and the
// gateway's line for it says what the broker answered.
TEST_F(UpstreamTls, AClusterThatRequiresAClientCertificateRefusesAGatewayWithoutOne) {
  const auto port =
      start_devbroker(certs_.cert_pem, certs_.key_pem, 1, "c:1", {"--tcp-tls-client-ca", certs_.ca_pem});
  EXPECT_TRUE(devbroker_->wait_for_output(std::regex("tcp_tls=on, client certificates required")));
  ASSERT_NO_FATAL_FAILURE(start_gateway(
      {"--upstream", "127.0.0.1:" + port, "--upstream-tls", "--upstream-ca-file", certs_.ca_pem}));
  auto c = dial_gateway("/kafka");
  EXPECT_FALSE(metadata_answered(c, 1)) << "answered without a client certificate";
  ASSERT_TRUE(wait_for_event(
      *devbroker_, {field("event", "closed"), field("end", "protocol_error"),
                    field_matching("cause", "^TLS handshake failed: peer did not return a certificate")}))
      << devbroker_->output();
  ASSERT_TRUE(wait_for_event(*gateway_, {field("event", "closed"), field("side", "broker"),
                                         field_containing("cause", "certificate required")}))
      << gateway_->output();
  EXPECT_EQ(events(*gateway_, {field_containing("msg", "certificate required")}).size(), 1u)
      << gateway_->output();
}

// With --upstream-cert/--upstream-key the same cluster serves kcat through the proxy and the gateway, every
// node (the gateway's own certificate on each broker connection), byte for byte.
TEST_F(UpstreamTls, AClusterThatRequiresAClientCertificateServesAGatewayWithOneByteExact) {
  const auto mine = make_client_certificate(certs_, "kws-gateway");
  const auto port =
      start_devbroker(certs_.cert_pem, certs_.key_pem, 2, "c:2", {"--tcp-tls-client-ca", certs_.ca_pem});
  ASSERT_NO_FATAL_FAILURE(
      start_gateway({"--upstream", "127.0.0.1:" + port, "--upstream-tls", "--upstream-ca-file", certs_.ca_pem,
                     "--upstream-cert", mine.cert_pem, "--upstream-key", mine.key_pem}));
  EXPECT_NE(gateway_->output().find(" (tls, client certificate) "), std::string::npos) << gateway_->output();
  ASSERT_NO_FATAL_FAILURE(start_proxy());
  ASSERT_NO_FATAL_FAILURE(expect_round_trip(kcat_via_proxy(), "c", 2));
  for (int node = 0; node < 2; ++node) {
    EXPECT_FALSE(
        events(*gateway_, {field("event", "open"), field("target", "/kafka/" + std::to_string(node))})
            .empty())
        << "node " << node;
  }
  EXPECT_TRUE(events(*devbroker_, {field_containing("cause", "TLS handshake failed")}).empty())
      << devbroker_->output();
}

// ---- mutual TLS at the gateway's wss listener (--client-ca-file) ------------------------------------------

class GatewayClientCertificates : public UpstreamTls {
 protected:
  // A dev broker over plain TCP (its log has a line for every connection it gets) and, in front of it, a wss
  // gateway that requires a client certificate from the test CA (and takes `more` flags).
  void start_cluster_and_gateway(int nodes, const std::string& topic,
                                 const std::vector<std::string>& more = {}) {
    devbroker_ = std::make_unique<child_process>(
        std::vector<std::string>{KWS_DEVBROKER_PATH, "--listen", "127.0.0.1:0", "--tcp-listen", "127.0.0.1:0",
                                 "--nodes", std::to_string(nodes), "--topic", topic, "--log-format", "json"});
    const auto port = devbroker_->wait_for_output(std::regex(R"(tcp=127\.0\.0\.1:(\d+))"));
    ASSERT_TRUE(port) << devbroker_->output();
    ASSERT_NO_FATAL_FAILURE(start_gateway(
        std::vector<std::string>{"--upstream", "127.0.0.1:" + *port, "--tls-cert", certs_.cert_pem,
                                 "--tls-key", certs_.key_pem, "--client-ca-file", certs_.ca_pem} +
        more));
    EXPECT_NE(gateway_->output().find("(wss, client certificates required)"), std::string::npos);
    EXPECT_NE(gateway_->output().find(" auth=certificate "), std::string::npos);
  }

  // One Kafka client of the proxy (a TCP connection), which the proxy relays with one dial of the gateway
  // (--dial-retries 0): connects, then waits until the proxy closes it.
  void one_client_through_proxy() {
    const auto colon = bootstrap_.rfind(':');
    tcp::socket s(ioc_);
    s.connect({asio::ip::make_address(bootstrap_.substr(0, colon)),
               static_cast<unsigned short>(std::stoi(bootstrap_.substr(colon + 1)))});
    std::string ignored;
    std::optional<error_code> ended;
    asio::async_read(s, asio::dynamic_buffer(ignored), [&](error_code ec, std::size_t) { ended = ec; });
    ioc_.restart();
    ioc_.run_for(10s);  // bounded: a proxy that got through keeps its client open
    EXPECT_TRUE(ended) << "the proxy did not close its client within 10 s";
    error_code ignored_ec;
    s.close(ignored_ec);
    ioc_.restart();
    ioc_.poll();  // the read's handler, if it is still pending, runs while `ended` exists
  }

  // That client's dial is refused in the TLS handshake: one line at the gateway with `cause`, no connection
  // opened, nothing at the cluster; the proxy's line says its dial failed.
  void expect_refused_in_the_handshake(const std::string& cause) {
    one_client_through_proxy();
    ASSERT_TRUE(wait_for_event(*gateway_, {field("conn", "1"), field("event", "closed"),
                                           field("side", "client"), field_containing("cause", cause)}))
        << gateway_->output();
    ASSERT_TRUE(proxy_->wait_for_output(std::regex("dial failed after 1 attempt")));
    const auto log = gateway_->output();
    EXPECT_EQ(events(*gateway_, {field_containing("msg", cause)}).size(), 1u)
        << "wanted exactly one line with: " << cause;
    EXPECT_EQ(events(*gateway_, {field("conn", "1")}).size(), 1u)
        << "more than one line about the connection";
    EXPECT_TRUE(events(*gateway_, {field("event", "open")}).empty()) << "a connection was opened";
    EXPECT_TRUE(events(*devbroker_, {field("listener", "tcp")}).empty())
        << "a connection reached the cluster";
  }
};

TEST_F(GatewayClientCertificates, AProxyWithoutACertificateIsRefusedBeforeAnyByteReachesTheCluster) {
  ASSERT_NO_FATAL_FAILURE(start_cluster_and_gateway(1, "m:1"));
  ASSERT_NO_FATAL_FAILURE(start_proxy({"--dial-retries", "0"}, true));
  expect_refused_in_the_handshake(
      "the TLS handshake with the client failed: peer did not return a certificate");
}

TEST_F(GatewayClientCertificates, AProxyWithAnUntrustedCertificateIsRefusedBeforeAnyByteReachesTheCluster) {
  ASSERT_NO_FATAL_FAILURE(start_cluster_and_gateway(1, "m:1"));
  const auto other = make_test_certificates();
  const auto stranger = make_client_certificate(other, "kws-stranger");
  ASSERT_NO_FATAL_FAILURE(
      start_proxy({"--dial-retries", "0", "--cert", stranger.cert_pem, "--key", stranger.key_pem}, true));
  expect_refused_in_the_handshake(
      "the client's TLS certificate was refused: unable to get local issuer certificate");
}

// A trusted certificate gets kcat through proxy -> wss -> gateway -> cluster on every node, byte for byte;
// the certificate's subject is on each connection's lines at the gateway.
TEST_F(GatewayClientCertificates, AProxyWithATrustedCertificateIsServedByteExactAndNamedInTheLog) {
  ASSERT_NO_FATAL_FAILURE(start_cluster_and_gateway(2, "m:2"));
  const auto mine = make_client_certificate(certs_, "kws-proxy");
  ASSERT_NO_FATAL_FAILURE(start_proxy({"--cert", mine.cert_pem, "--key", mine.key_pem}, true));
  ASSERT_NO_FATAL_FAILURE(expect_round_trip(kcat_via_proxy(), "m", 2));
  const auto log = gateway_->output();
  for (const std::string target : {"/kafka", "/kafka/0", "/kafka/1"}) {
    EXPECT_FALSE(
        events(*gateway_, {field("event", "open"), field("target", target), field("subject", "CN=kws-proxy")})
            .empty())
        << target << "\n"
        << log;
  }
  EXPECT_TRUE(wait_for_event(*gateway_, {field("event", "closed"), field("subject", "CN=kws-proxy")})) << log;
  EXPECT_TRUE(events(*gateway_, {field_containing("msg", "TLS handshake with the client failed")}).empty())
      << log;
}

#ifdef KWS_PLUGIN_PATH
// The librdkafka plugin presents kws.cert.file/kws.key.file on its wss dials; a key that is not the
// certificate's stops kcat at its configuration, with a line naming the property.
TEST_F(GatewayClientCertificates, ThePluginWithACertificateIsServedByteExact) {
  // librdkafka tells brokers apart by address: each gets a name of its own (which need not resolve).
  ASSERT_NO_FATAL_FAILURE(
      start_cluster_and_gateway(2, "p:2", {"--advertise", "kafka-{node_id}.gateway.invalid:443"}));
  const auto mine = make_client_certificate(certs_, "kws-plugin");
  const auto gw = "wss://127.0.0.1:" + std::to_string(gateway_port_);
  const std::vector<std::string> plugin{KWS_KCAT_PATH,
                                        "-b",
                                        "127.0.0.1:" + std::to_string(gateway_port_),
                                        "-X",
                                        std::string("plugin.library.paths=") + KWS_PLUGIN_PATH,
                                        "-X",
                                        "kws.bootstrap.url.template=" + gw + "/kafka",
                                        "-X",
                                        "kws.url.template=" + gw + "/kafka/{node_id}",
                                        "-X",
                                        "kws.ca.file=" + certs_.ca_pem};
  std::map<std::string, std::optional<std::string>> environment;
#ifdef KWS_ASAN_PRELOAD
  environment = {{"LD_PRELOAD", KWS_ASAN_PRELOAD}, {"ASAN_OPTIONS", "detect_leaks=0"}};
#endif
  ASSERT_NO_FATAL_FAILURE(
      expect_round_trip(plugin + std::vector<std::string>{"-X", "kws.cert.file=" + mine.cert_pem, "-X",
                                                          "kws.key.file=" + mine.key_pem},
                        "p", 2, environment));
  EXPECT_TRUE(wait_for_event(
      *gateway_, {field("event", "open"), field("target", "/kafka/1"), field("subject", "CN=kws-plugin")}))
      << gateway_->output();

  auto io = tool_io("/dev/null", dir_ / "mismatch.out");
  io.environment = environment;
  const auto r = run(plugin + std::vector<std::string>{"-X", "kws.cert.file=" + mine.cert_pem, "-X",
                                                       "kws.key.file=" + certs_.key_pem, "-L"},
                     io, 20s);
  EXPECT_NE(r.exit_code, std::optional<int>(0));
  EXPECT_NE(r.err.find("configuration property \"kws.key.file\": cannot load the client certificate: "
                       "TLS private key " +
                       certs_.key_pem),
            std::string::npos)
      << r.err;
}
#endif

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
  check({"--client-ca-file", certs.ca_pem}, 2, "--client-ca-file: needs --tls-cert/--tls-key (wss)");
  // The dev broker's client CA needs its TLS listener.
  const auto db =
      run({KWS_DEVBROKER_PATH, "--tcp-listen", "127.0.0.1:0", "--tcp-tls-client-ca", certs.ca_pem}, {}, 10s);
  EXPECT_EQ(db.exit_code, std::optional<int>(2)) << db.out;
  EXPECT_NE(db.out.find("--tcp-tls-client-ca requires --tcp-tls-cert"), std::string::npos) << db.out;
}

}  // namespace
