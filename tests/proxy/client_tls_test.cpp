// kafka-websocket-proxy serving TLS to Kafka clients (--client-tls-cert/--client-tls-key, optionally
// --client-ca-file): kcat with security.protocol=ssl and kafka-python with security_protocol='SSL' through
// the proxy to the dev broker over WebSocket, byte-exact, the further brokers' listeners included; client
// certificates required and checked. Certificates made at test time; everything on 127.0.0.1.
#include "client_tools.hpp"
#include "process.hpp"
#include "test_env.hpp"
#include "ws_test_server.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <iostream>
#include <regex>

namespace {

using namespace kws::test;
using namespace std::chrono_literals;

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
                                 "--client-tls-cert", certs_.cert_pem, "--client-tls-key", certs_.key_pem} +
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
  EXPECT_TRUE(proxy_->wait_for_output(std::regex("open client=\\S+ broker=\\S+ subject=CN=localhost")));
  const auto without = kcat("without", {"-L", "-m", "3"});
  EXPECT_NE(without.exit_code, std::optional<int>(0));
  EXPECT_TRUE(
      proxy_->wait_for_output(std::regex("closed client=\\S+: the TLS handshake with the client failed")));
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
}

}  // namespace
