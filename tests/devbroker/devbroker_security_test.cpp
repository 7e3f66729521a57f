// Process-level tests of the dev broker's TCP listener with TLS (--tcp-tls-cert/--tcp-tls-key) and SASL
// (--sasl-users): real clients (kcat, kafka-python, confluent-kafka) and raw Kafka frames over 127.0.0.1,
// with certificates made at test time.
#include "devbroker_fixture.hpp"
#include "ws_test_server.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

using namespace kws::devbroker::test;
using kws::test::read_file;
using kws::test::write_file;

namespace {

/// Lines of `key:value` for kcat -K:, distinct per index.
std::string keyed_lines(int count, const std::string& prefix) {
  std::string out;
  for (int i = 0; i < count; ++i)
    out += prefix + "-key-" + std::to_string(i) + ":value-" + std::to_string(i * 7919) + "\n";
  return out;
}

/// `text` sorted by line, so that messages consumed from several partitions compare with what was produced.
std::string sorted_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream s(text);
  for (std::string line; std::getline(s, line);) lines.push_back(line);
  std::sort(lines.begin(), lines.end());
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

class DevbrokerSecurity : public DevbrokerProcess {
 protected:
  void SetUp() override { tls_ = kws::test::make_test_certificates(); }

  std::vector<std::string> tls_flags() const {
    return {"--tcp-tls-cert", tls_.cert_pem, "--tcp-tls-key", tls_.key_pem};
  }
  /// kcat's settings for the TLS listener, trusting the test CA.
  std::vector<std::string> kcat_tls(const std::string& protocol = "ssl") const {
    return {"-X", "security.protocol=" + protocol, "-X", "ssl.ca.location=" + tls_.ca_pem};
  }

  /// Produces `input` (key:value lines) to `topic` and consumes it back with `extra` kcat settings; the
  /// consumed lines, sorted.
  std::string kcat_round_trip(const std::string& topic, const std::string& input,
                              const std::vector<std::string>& extra) {
    write_file(path("in.txt"), input);
    std::vector<std::string> produce{"-P", "-t", topic, "-K:"};
    produce.insert(produce.end(), extra.begin(), extra.end());
    EXPECT_EQ(kcat(produce, path("in.txt"), "/dev/null"), 0) << read_file(path("kcat.err"));
    std::vector<std::string> consume{"-C", "-t", topic, "-o", "beginning", "-e", "-f", "%k:%s\\n"};
    consume.insert(consume.end(), extra.begin(), extra.end());
    EXPECT_EQ(kcat(consume, "/dev/null", path("out.txt")), 0) << read_file(path("kcat.err"));
    return sorted_lines(read_file(path("out.txt")));
  }

  kws::test::tls_files tls_;
};

}  // namespace

TEST_F(DevbrokerSecurity, KcatOverTlsProducesAndConsumesByteExactOnThreeNodes) {
  ASSERT_TRUE(have("/usr/bin/kcat")) << "kcat is missing: scripts/deps.sh installs it";
  auto flags = tls_flags();
  flags.insert(flags.end(), {"--nodes", "3", "--topic", "secure:3"});
  ASSERT_NO_FATAL_FAILURE(start(flags));
  // Metadata advertises the TLS listeners' own addresses; kcat reaches every partition's leader through them.
  write_file(path("meta.in"), "");
  auto list = kcat_tls();
  list.insert(list.begin(), {"-L", "-t", "secure"});
  ASSERT_EQ(kcat(list, path("meta.in"), path("meta.txt")), 0) << read_file(path("kcat.err"));
  const std::string meta = read_file(path("meta.txt"));
  for (auto port : tcp_ports_)
    EXPECT_NE(meta.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << meta;

  const std::string input = keyed_lines(3000, "tls");
  EXPECT_EQ(kcat_round_trip("secure", input, kcat_tls()), sorted_lines(input));
  // Every partition got messages, so every node's TLS listener carried traffic.
  for (int p = 0; p < 3; ++p) {
    auto one = kcat_tls();
    one.insert(one.begin(),
               {"-C", "-t", "secure", "-p", std::to_string(p), "-o", "beginning", "-e", "-c", "1"});
    EXPECT_EQ(kcat(one, "/dev/null", path("one.txt")), 0) << read_file(path("kcat.err"));
    EXPECT_FALSE(read_file(path("one.txt")).empty()) << "partition " << p;
  }
}

TEST_F(DevbrokerSecurity, FailedTlsHandshakesEndOnlyTheirConnectionWithOneLineEach) {
  ASSERT_TRUE(have("/usr/bin/kcat")) << "kcat is missing: scripts/deps.sh installs it";
  ASSERT_NO_FATAL_FAILURE(start(tls_flags()));

  // A plain-text Kafka client: its ApiVersions request is no TLS record, and the connection just ends.
  tcp_client plain;
  ASSERT_FALSE(plain.connect(tcp_ports_.at(0)));
  ASSERT_FALSE(plain.send(api_versions_request(1, 0)));
  std::string got;
  EXPECT_TRUE(plain.read_until_close(got)) << "the connection stayed open";
  EXPECT_TRUE(got.empty() || got[0] == 0x15) << "only a TLS alert may come back";
  ASSERT_TRUE(log_contains("TLS handshake failed: ")) << log();

  // A client that does not trust the certificate (another CA) refuses it: its alert is the reason logged.
  const auto other = kws::test::make_test_certificates();
  write_file(path("in.txt"), "k:v\n");
  EXPECT_NE(kcat({"-P", "-t", "test-topic", "-K:", "-X", "security.protocol=ssl", "-X",
                  "ssl.ca.location=" + other.ca_pem, "-X", "message.timeout.ms=3000"},
                 path("in.txt"), "/dev/null", 15s),
            0);
  ASSERT_TRUE(log_contains("unknown ca")) << log();

  // Each failed connection has its one close line naming the cause; other clients still work.
  const std::string input = keyed_lines(100, "after");
  EXPECT_EQ(kcat_round_trip("test-topic", input, kcat_tls()), sorted_lines(input));
  const std::string text = log();
  EXPECT_GE(count_of(text, "cause=\"TLS handshake failed: "), 2u) << text;
}
