// kafka-websocket-proxy serving TLS to Kafka clients (--client-tls-cert/--client-tls-key, optionally
// --client-ca-file): kcat with security.protocol=ssl and kafka-python with security_protocol='SSL' through
// the proxy to the dev broker over WebSocket, byte-exact, the further brokers' listeners included; client
// certificates required and checked. Certificates made at test time; everything on 127.0.0.1.
#include "client_tools.hpp"
#include "log_events.hpp"
#include "process.hpp"
#include "test_env.hpp"
#include "ws_test_server.hpp"

#include <gtest/gtest.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

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

class ClientTls : public ::testing::Test {
 protected:
  void SetUp() override { certs_ = make_test_certificates(); }

  void TearDown() override {
    if (proxy_) {
      proxy_->signal(SIGTERM);
      EXPECT_EQ(proxy_->wait(15s), std::optional<int>(0));
    }
    if (HasFailure()) {
      if (proxy_) std::cerr << "---- proxy log ----\n" << proxy_->output();
      if (devbroker_) std::cerr << "---- dev broker log ----\n" << devbroker_->output();
    }
  }

  void start(const std::vector<std::string>& proxy_args, int nodes = 2, const std::string& topic = "s:2") {
    devbroker_ = std::make_unique<child_process>(std::vector<std::string>{
        KWS_DEVBROKER_PATH, "--listen", "127.0.0.1:0", "--nodes", std::to_string(nodes), "--topic", topic});
    const auto ws = devbroker_->wait_for_output(std::regex(R"(ws=127\.0\.0\.1:(\d+))"));
    ASSERT_TRUE(ws) << devbroker_->output();
    proxy_ = std::make_unique<child_process>(
        std::vector<std::string>{KWS_PROXY_PATH, "--listen", "127.0.0.1", "--port", "0", "--broker",
                                 "127.0.0.1:" + *ws, "--threads", "2", "--drain-timeout", "2s",
                                 "--client-tls-cert", certs_.cert_pem, "--client-tls-key", certs_.key_pem,
                                 "--log-format", "json"} +
        proxy_args);
    const auto port = proxy_->wait_for_output(std::regex(R"(listening on 127\.0\.0\.1:(\d+) \(tls)"));
    ASSERT_TRUE(port) << proxy_->output();
    bootstrap_ = "127.0.0.1:" + *port;
  }

  run_result kcat(const std::string& name, const std::vector<std::string>& args,
                  const std::string& in = "/dev/null") {
    return run(std::vector<std::string>{KWS_KCAT_PATH, "-b", bootstrap_, "-X", "security.protocol=ssl", "-X",
                                        "ssl.ca.location=" + certs_.ca_pem} +
                   args,
               tool_io(in, dir_ / (name + ".out")), 30s);
  }
  std::string output_of(const std::string& name) const { return read_file(dir_ / (name + ".out")); }

  temp_dir dir_{"kws-client-tls"};
  tls_files certs_;
  std::unique_ptr<child_process> devbroker_, proxy_;
  std::string bootstrap_;
};

TEST_F(ClientTls, KcatWithSecurityProtocolSslProducesAndConsumesByteExactOnEveryBroker) {
  ASSERT_NO_FATAL_FAILURE(start({}));
  std::map<int, std::vector<std::string>> want;
  for (int p = 0; p < 2; ++p) {
    const auto lines = keyed_lines(400, "s" + std::to_string(p) + "-");
    write_file(dir_ / ("in" + std::to_string(p)), lines);
    want[p] = lines_of(lines);
    const auto r = kcat("produce" + std::to_string(p), {"-P", "-t", "s", "-p", std::to_string(p), "-K:", "-l",
                                                        dir_ / ("in" + std::to_string(p))});
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r.exit_code, r.err);
  }
  const auto r = kcat("consume", {"-C", "-t", "s", "-o", "beginning", "-e", "-f", "%p|%k:%s\\n"});
  ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r.exit_code, r.err);
  EXPECT_TRUE(by_partition(output_of("consume")) == want) << "per-partition contents differ";
  // Node 1 leads partition 1: kcat reached it through a further listener, over TLS too.
  EXPECT_NE(proxy_->output().find("broker 1 at "), std::string::npos);
  EXPECT_EQ(proxy_->output().find("TLS handshake with the client failed"), std::string::npos);
}

TEST_F(ClientTls, KafkaPythonWithSecurityProtocolSsl) {
  ASSERT_NO_FATAL_FAILURE(start({}, 1, "py:1"));
  const auto py =
      run({"/usr/bin/python3", KWS_KAFKA_PYTHON_SCRIPT, "--bootstrap", bootstrap_, "--topic", "py", "--count",
           "300", "--api-version", "auto", "--ssl-cafile", certs_.ca_pem, "--limit-s", "25"},
          {.stderr_to = spawn_options::stderr_target::captured}, 28s);
  EXPECT_EQ(py.exit_code, std::optional<int>(0)) << describe(py.exit_code, py.err) << "stdout:\n" << py.out;
  EXPECT_NE(py.out.find("300 messages round-tripped"), std::string::npos) << py.out;
}

// --client-ca-file: a client with a certificate from that CA gets through (its subject on the connection's
// lines); one without gets one line naming the failed handshake, and nothing reaches the broker.
TEST_F(ClientTls, ClientCertificatesRequiredWithClientCaFile) {
  const auto client = make_test_certificates("DNS:kafka-client");
  ASSERT_NO_FATAL_FAILURE(start({"--client-ca-file", client.ca_pem}, 1, "m:1"));
  write_file(dir_ / "in", "k:v\n");
  const auto with =
      kcat("with", {"-X", "ssl.certificate.location=" + client.cert_pem, "-X",
                    "ssl.key.location=" + client.key_pem, "-P", "-t", "m", "-K:", "-l", dir_ / "in"});
  EXPECT_EQ(with.exit_code, std::optional<int>(0)) << describe(with.exit_code, with.err);
  EXPECT_TRUE(wait_for_event(*proxy_, {field("event", "open"), field("subject", "CN=localhost")}));
  const auto without = kcat("without", {"-L", "-m", "3"});
  EXPECT_NE(without.exit_code, std::optional<int>(0));
  EXPECT_TRUE(wait_for_event(*proxy_, {field("event", "closed"), field("side", "client"),
                                       field_matching("cause", "^the TLS handshake with the client failed")}))
      << proxy_->output();
}

// A plain port: a client that speaks TLS (kcat with security.protocol=ssl, openssl s_client) or HTTP is told
// apart at its first bytes, with one line that says what to change, instead of "frame larger than the
// maximum".
TEST(PlainPort, TlsAndHttpClientsAreRecognisedAtTheirFirstBytes) {
  temp_dir dir("kws-plain-port");
  const auto certs = make_test_certificates();
  child_process devbroker({KWS_DEVBROKER_PATH, "--listen", "127.0.0.1:0"});
  const auto ws = devbroker.wait_for_output(std::regex(R"(ws=127\.0\.0\.1:(\d+))"));
  ASSERT_TRUE(ws) << devbroker.output();
  child_process proxy({KWS_PROXY_PATH, "--listen", "127.0.0.1", "--port", "0", "--broker", "127.0.0.1:" + *ws,
                       "--drain-timeout", "2s"});
  const auto port = proxy.wait_for_output(std::regex(R"(listening on 127\.0\.0\.1:(\d+) broker)"));
  ASSERT_TRUE(port) << proxy.output();
  const std::string tls_line =
      "client spoke TLS on a plain Kafka port (a TLS record): set security.protocol=PLAINTEXT/"
      "SASL_PLAINTEXT, or run the proxy with --client-tls-cert/--client-tls-key";

  const auto k = run({KWS_KCAT_PATH, "-b", "127.0.0.1:" + *port, "-X", "security.protocol=ssl", "-X",
                      "ssl.ca.location=" + certs.ca_pem, "-L", "-m", "2"},
                     tool_io("/dev/null", dir / "kcat.out"), 20s);
  EXPECT_NE(k.exit_code, std::optional<int>(0));
  EXPECT_TRUE(proxy.wait_for_output(
      std::regex("closed .*" + std::regex_replace(tls_line, std::regex(R"([().+/])"), R"(\$&)"))))
      << proxy.output();

  const auto before = proxy.output().size();
  const auto s = run({"/usr/bin/openssl", "s_client", "-connect", "127.0.0.1:" + *port},
                     {.stderr_to = spawn_options::stderr_target::captured}, 20s);
  EXPECT_TRUE(s.exit_code.has_value()) << "openssl s_client did not end";
  const auto tls_line_after = [&](std::size_t from) {
    return proxy.wait_for_output([&](std::string_view out) { return out.find(tls_line, from) != out.npos; },
                                 10s);
  };
  EXPECT_TRUE(tls_line_after(before)) << proxy.output();

  // What librdkafka sends when it gives up on a connection before its ClientHello went out (kcat above does,
  // now and then, as it exits): a lone fatal alert. Still a TLS client, not a 350 MB Kafka frame.
  const auto send_and_wait_for_close = [&](const std::string& bytes) {
    asio::io_context ioc;
    tcp::socket sock(ioc);
    sock.connect({asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(std::stoi(*port))});
    asio::write(sock, asio::buffer(bytes));
    std::string ignored;
    error_code ec;
    asio::read(sock, asio::dynamic_buffer(ignored), ec);  // until the proxy closes
    EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
  };
  const auto after_s_client = proxy.output().size();
  send_and_wait_for_close(std::string("\x15\x03\x01\x00\x02\x02\x50", 7));
  EXPECT_TRUE(tls_line_after(after_s_client)) << proxy.output();

  // A raw HTTP request, as a browser or curl would send it; the proxy closes the connection.
  {
    asio::io_context ioc;
    tcp::socket sock(ioc);
    sock.connect({asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(std::stoi(*port))});
    const std::string get = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    asio::write(sock, asio::buffer(get));
    std::string ignored;
    error_code ec;
    asio::read(sock, asio::dynamic_buffer(ignored), ec);  // until the proxy closes
    EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
  }
  EXPECT_TRUE(proxy.wait_for_output(std::regex(
      "client spoke HTTP on a Kafka port \\(an HTTP request\\): this port speaks the Kafka protocol")))
      << proxy.output();
  EXPECT_EQ(proxy.output().find("larger than the maximum"), std::string::npos) << proxy.output();
  proxy.signal(SIGTERM);
  EXPECT_EQ(proxy.wait(15s), std::optional<int>(0));
}

TEST(ClientTlsFlags, InconsistentFlagsAreRefused) {
  const auto certs = make_test_certificates();
  const auto check = [](const std::vector<std::string>& args, const std::string& says) {
    const auto r = run(std::vector<std::string>{KWS_PROXY_PATH, "--port", "0"} + args, {}, 10s);
    EXPECT_EQ(r.exit_code, std::optional<int>(2)) << r.out;
    EXPECT_NE(r.out.find(says), std::string::npos) << r.out;
  };
  check({"--client-tls-cert", certs.cert_pem}, "give both or neither");
  check({"--client-ca-file", certs.ca_pem}, "needs --client-tls-cert");
  check({"--cert", certs.cert_pem}, "--cert/--key: give both or neither");
  // A key that is not the certificate's: refused at start, one line naming the key file.
  const auto other = make_test_certificates();
  const auto r = run({KWS_PROXY_PATH, "--port", "0", "--listen", "127.0.0.1", "--broker",
                      "wss://127.0.0.1:9/", "--cert", certs.cert_pem, "--key", other.key_pem},
                     {}, 10s);
  EXPECT_EQ(r.exit_code, std::optional<int>(1)) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  EXPECT_NE(r.out.find("cannot start: TLS private key " + other.key_pem), std::string::npos) << r.out;
}

}  // namespace
