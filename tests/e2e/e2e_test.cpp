// End to end: real Kafka clients (kcat, kafka-python, the librdkafka++ example) talk TCP to the built
// kafka-websocket-proxy, which carries every frame over WebSocket to the built kafka-websocket-devbroker.
// The broker has no TCP listener, so every byte the clients exchange crosses the proxy. In the original
// deployment the broker advertises the proxy's own address; with the proxy rewriting addresses, the broker
// may advertise its own. Everything runs on 127.0.0.1 with ephemeral ports; every wait is bounded.
#include "client_tools.hpp"
#include "forward_proxy_process.hpp"
#include "log_events.hpp"
#include "process.hpp"
#include "test_env.hpp"
#include "ws_test_server.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(KWS_PROXY_PATH) || !defined(KWS_DEVBROKER_PATH) || !defined(KWS_KCAT_PATH) || \
    !defined(KWS_KAFKA_PYTHON_SCRIPT) || !defined(KWS_SOCAT_PATH) || !defined(KWS_EDGE_CLIENTS_SCRIPT)
#error \
    "tests/e2e/CMakeLists.txt defines the paths of the proxy, the dev broker, kcat, socat and the Python script"
#endif

namespace {

using namespace std::chrono_literals;
using kws::test::child_process;
using kws::test::read_file;
using kws::test::spawn_options;
using kws::test::write_file;
using namespace kws::test;

class ProxyToDevbroker : public ::testing::Test {
 protected:
  void TearDown() override {
    // Both servers end promptly and cleanly on SIGTERM once the clients are gone.
    for (auto* p : {proxy_.get(), broker_.get()}) {
      if (!p) continue;
      p->signal(SIGTERM);
      const auto rc = p->wait(10s);
      EXPECT_EQ(rc, std::optional<int>(0)) << "a server did not exit with 0 within 10 s of SIGTERM";
    }
    if (HasFailure()) {
      if (proxy_) std::cerr << "---- proxy log ----\n" << proxy_->output();
      if (broker_) std::cerr << "---- devbroker log ----\n" << broker_->output();
      if (forward_proxy_) std::cerr << "---- forward proxy log ----\n" << forward_proxy_->log();
      if (tls_terminator_) std::cerr << "---- TLS terminator log ----\n" << tls_terminator_->output();
      std::cerr << "-------------------\n";
    }
    proxy_.reset();
    broker_.reset();
    tls_terminator_.reset();
    forward_proxy_.reset();
  }

  using environment = std::map<std::string, std::optional<std::string>>;
  // Given the dev broker's WebSocket port, more arguments for the proxy (after those of `start`).
  using late_args = std::function<std::vector<std::string>(const std::string& ws_port)>;

  // Starts the proxy on an ephemeral port, then the dev broker on a port picked for it, advertising the
  // proxy (the original deployment) or, with `broker_advertises_proxy` false, its own addresses. Another
  // process may take the picked port(s) in between: then both start again, up to three times. The proxy
  // gets `proxy_env` as changes to its environment, and the arguments from `more_proxy_args` last.
  void start(const std::vector<std::string>& broker_args, const std::vector<std::string>& proxy_args = {},
             bool broker_advertises_proxy = true, const environment& proxy_env = {},
             const late_args& more_proxy_args = {}) {
    std::string failures;
    for (int attempt = 0; attempt < 3; ++attempt) {
      // Three ports: a dev broker of up to three nodes listens on this one and the next two.
      const auto ws_port = std::to_string(kws::test::free_port_run(3));
      std::vector<std::string> proxy_argv{
          KWS_PROXY_PATH,         "--listen",  "127.0.0.1", "--port",          "0", "--broker",
          "127.0.0.1:" + ws_port, "--threads", "2",         "--drain-timeout", "2s"};
      proxy_argv.insert(proxy_argv.end(), proxy_args.begin(), proxy_args.end());
      if (more_proxy_args) {
        const auto more = more_proxy_args(ws_port);
        proxy_argv.insert(proxy_argv.end(), more.begin(), more.end());
      }
      proxy_ = std::make_unique<child_process>(proxy_argv, spawn_options{.environment = proxy_env});
      const auto port = proxy_->wait_for_output(std::regex(R"(listening on 127\.0\.0\.1:(\d+))"));
      ASSERT_TRUE(port) << "the proxy did not start:\n" << proxy_->output();
      proxy_port_ = *port;
      ws_port_ = ws_port;
      std::vector<std::string> argv{KWS_DEVBROKER_PATH, "--listen", "127.0.0.1:" + ws_port};
      if (broker_advertises_proxy) argv.insert(argv.end(), {"--advertise", "127.0.0.1:" + proxy_port_});
      argv.insert(argv.end(), broker_args.begin(), broker_args.end());
      broker_ = std::make_unique<child_process>(argv);
      if (broker_->wait_for_output(std::regex(R"(listening ws=127\.0\.0\.1:(\d+))"))) return;
      failures += "attempt " + std::to_string(attempt + 1) + ", port " + ws_port + ":\n" + broker_->output();
      broker_.reset();
      proxy_.reset();
    }
    FAIL() << "the dev broker did not start:\n" << failures;
  }

  std::string bootstrap() const { return "127.0.0.1:" + proxy_port_; }
  std::filesystem::path path(const std::string& name) const { return dir_ / name; }

  // kcat against the proxy; `name` names its output files in the test directory.
  std::unique_ptr<child_process> start_kcat(const std::string& name, const std::vector<std::string>& args,
                                            const std::string& in = "/dev/null") {
    return std::make_unique<child_process>(kcat_argv(args), tool_io(in, path(name + ".out")));
  }

  // Runs kcat to the end; fails the test (with kcat's stderr) unless it exits 0 within `limit`.
  void kcat(const std::string& name, const std::vector<std::string>& args,
            const std::string& in = "/dev/null", std::chrono::milliseconds limit = 20s) {
    const auto t = clock_type::now();
    const auto r = kws::test::run(kcat_argv(args), tool_io(in, path(name + ".out")), limit);
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << "kcat " << name << ": " << describe(r.exit_code, r.err);
    std::cout << "[ measure  ] kcat " << name << ": " << ms_since(t) << " ms\n";
  }

  std::vector<std::string> kcat_argv(const std::vector<std::string>& args) const {
    std::vector<std::string> argv{KWS_KCAT_PATH, "-b", bootstrap()};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }

  std::string output_of(const std::string& name) const { return read_file(path(name + ".out")); }

  // tests/e2e/kafka_python_roundtrip.py against the proxy; its summary line must contain `expect`.
  void kafka_python(const std::string& topic, int count, const std::string& api_version,
                    const std::string& expect) {
    const auto t = clock_type::now();
    // The Debian python3 explicitly: the one first on PATH may not see Debian's python3-kafka.
    const auto py = kws::test::run(
        {"/usr/bin/python3", KWS_KAFKA_PYTHON_SCRIPT, "--bootstrap", bootstrap(), "--topic", topic, "--count",
         std::to_string(count), "--api-version", api_version, "--limit-s", "25"},
        {.stderr_to = spawn_options::stderr_target::captured}, 28s);
    EXPECT_EQ(py.exit_code, std::optional<int>(0)) << describe(py.exit_code, py.err) << "stdout:\n" << py.out;
    EXPECT_NE(py.out.find(expect), std::string::npos) << py.out;
    std::cout << "[ measure  ] " << py.out << "[ measure  ] python run: " << ms_since(t) << " ms\n";
    expect_proxy_carried_connections();
  }

  // Every client connection went through the proxy (the broker has no TCP listener; this checks the log).
  void expect_proxy_carried_connections() const {
    const bool text = proxy_->output().find(" open client=127.0.0.1:") != std::string::npos;
    EXPECT_TRUE(text || !kws::test::events(*proxy_, {kws::test::field("event", "open"),
                                                     kws::test::field_containing("client", "127.0.0.1:")})
                             .empty())
        << proxy_->output();
  }

  // A round trip of `n` keyed messages on `topic` with kcat: produce, consume from the beginning, compare.
  void kcat_round_trip(const std::string& topic, int n) {
    const std::string input = keyed_lines(n, topic + "-");
    write_file(path(topic + ".txt"), input);
    ASSERT_NO_FATAL_FAILURE(kcat("produce-" + topic, {"-P", "-t", topic, "-K:", "-l", path(topic + ".txt")}));
    ASSERT_NO_FATAL_FAILURE(
        kcat("consume-" + topic, {"-C", "-t", topic, "-o", "beginning", "-e", "-f", "%k:%s\\n"}));
    EXPECT_EQ(output_of("consume-" + topic).size(), input.size());
    EXPECT_TRUE(output_of("consume-" + topic) == input)
        << "consumed keys and values differ from the produced ones";
  }

  // A TLS terminator in front of the dev broker (which speaks only plain WebSocket): socat accepts TLS on a
  // free port of 127.0.0.1 with `tls`'s certificate and passes the bytes on to ws_port. Returns its port.
  std::string start_tls_terminator(const kws::test::tls_files& tls, const std::string& ws_port) {
    for (int attempt = 0; attempt < 3; ++attempt) {
      const auto port = std::to_string(kws::test::free_port());
      tls_terminator_ = std::make_unique<child_process>(std::vector<std::string>{
          KWS_SOCAT_PATH, "-d", "-d",
          "OPENSSL-LISTEN:" + port + ",bind=127.0.0.1,reuseaddr,fork,verify=0,cert=" + tls.cert_pem +
              ",key=" + tls.key_pem,
          "TCP:127.0.0.1:" + ws_port});
      if (tls_terminator_->wait_for_output(std::regex("listening on"))) return port;
    }
    ADD_FAILURE() << "socat did not start:\n" << tls_terminator_->output();
    return "1";
  }

  kws::test::temp_dir dir_{"kws-e2e"};
  std::unique_ptr<kws::test::forward_proxy_process> forward_proxy_;
  std::unique_ptr<child_process> tls_terminator_;
  std::unique_ptr<child_process> proxy_, broker_;
  std::string proxy_port_;
  std::string ws_port_;  // the dev broker's first WebSocket port
};

const std::vector<std::string> kafka_08_flags{"-X", "api.version.request=false", "-X",
                                              "broker.version.fallback=0.8.0"};

std::vector<std::string> concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

TEST_F(ProxyToDevbroker, KcatWithDefaultSettingsRoundTripsTenThousandKeyedMessages) {
  ASSERT_NO_FATAL_FAILURE(start({}));
  const std::string input = keyed_lines(10000, "");
  write_file(path("in.txt"), input);
  // Default settings: librdkafka asks ApiVersions and picks the highest versions both sides speak.
  ASSERT_NO_FATAL_FAILURE(kcat("produce", {"-P", "-t", "test-topic", "-K:", "-l", path("in.txt")}));
  ASSERT_NO_FATAL_FAILURE(
      kcat("consume", {"-C", "-t", "test-topic", "-o", "beginning", "-e", "-f", "%k:%s\\n"}));
  const std::string output = output_of("consume");
  EXPECT_EQ(lines_of(output).size(), 10000u);
  EXPECT_EQ(output.size(), input.size());
  EXPECT_TRUE(output == input) << "consumed keys and values differ from the produced ones";
  std::cout << "[ measure  ] 10000 messages, " << input.size() << " bytes of key:value lines\n";
  expect_proxy_carried_connections();
}

TEST_F(ProxyToDevbroker, OriginalDemoKafka08BrokerWithKcatWithoutApiVersionRequest) {
  // The original's deployment exactly: the broker advertises the proxy, and the proxy relays byte for byte.
  ASSERT_NO_FATAL_FAILURE(start({"--kafka-0.8-only"}, {"--no-rewrite"}));
  const std::string input = keyed_lines(10000, "old-");
  write_file(path("in.txt"), input);
  ASSERT_NO_FATAL_FAILURE(
      kcat("produce", concat(kafka_08_flags, {"-P", "-t", "test-topic", "-K:", "-l", path("in.txt")})));
  ASSERT_NO_FATAL_FAILURE(kcat("consume", concat(kafka_08_flags, {"-C", "-t", "test-topic", "-o", "beginning",
                                                                  "-e", "-f", "%k:%s\\n"})));
  const std::string output = output_of("consume");
  EXPECT_EQ(lines_of(output).size(), 10000u);
  EXPECT_TRUE(output == input) << "consumed keys and values differ from the produced ones";
  expect_proxy_carried_connections();
}

TEST_F(ProxyToDevbroker, KafkaPythonAtApiVersion080RoundTripsKeyedNullKeyAndEmptyValueMessages) {
  ASSERT_NO_FATAL_FAILURE(start({"--kafka-0.8-only"}));
  kafka_python("py-topic", 2000, "0.8.0", "api_version 0.8.0");
}

TEST_F(ProxyToDevbroker, KcatCarriesThree900KiBBinaryValues) {
  ASSERT_NO_FATAL_FAILURE(start({}));
  constexpr std::size_t size = 900 * 1024;
  std::string expected;
  std::vector<std::string> produce{"-P", "-t", "big", "-p", "0", "-k", "big-key"};
  for (unsigned i = 0; i < 3; ++i) {
    // Every byte value, newlines and NULs included: kcat sends each file argument as one message.
    const std::string value = random_bytes(size, 1000 + i);
    const auto file = path("big" + std::to_string(i) + ".bin");
    write_file(file, value);
    produce.push_back(file);
    expected += "7:big-key|" + std::to_string(size) + ":" + value + "\n";
  }
  ASSERT_NO_FATAL_FAILURE(kcat("produce", produce));
  ASSERT_NO_FATAL_FAILURE(
      kcat("consume", {"-C", "-t", "big", "-p", "0", "-o", "beginning", "-e", "-f", "%K:%k|%S:%s\\n"}));
  const std::string output = output_of("consume");
  EXPECT_EQ(output.size(), expected.size());
  EXPECT_TRUE(output == expected) << "the large values came back different";
  expect_proxy_carried_connections();
}

TEST_F(ProxyToDevbroker, KcatKeepsEmptyAndNullKeysAndValuesApart) {
  ASSERT_NO_FATAL_FAILURE(start({}));
  // Without -Z an empty key or value is sent as empty (length 0); a line without the delimiter has no key
  // (null, length -1). With -Z empty ones are sent as null. Consumed with %K/%S: the lengths, -1 for null.
  write_file(path("plain.txt"), "k1:\n:v1\nno-key-at-all\nk2:v2\n:\n");
  write_file(path("nulls.txt"), "k3:\n:v3\nk4:v4\n");
  ASSERT_NO_FATAL_FAILURE(kcat("produce-plain", {"-P", "-t", "empties", "-K:", "-l", path("plain.txt")}));
  ASSERT_NO_FATAL_FAILURE(
      kcat("produce-nulls", {"-P", "-t", "empties", "-K:", "-Z", "-l", path("nulls.txt")}));
  ASSERT_NO_FATAL_FAILURE(
      kcat("consume", {"-C", "-t", "empties", "-o", "beginning", "-e", "-f", "%o %K:%k|%S:%s\\n"}));
  EXPECT_EQ(output_of("consume"),
            "0 2:k1|0:\n"
            "1 0:|2:v1\n"
            "2 -1:|13:no-key-at-all\n"
            "3 2:k2|2:v2\n"
            "4 0:|0:\n"
            "5 2:k3|-1:\n"
            "6 -1:|2:v3\n"
            "7 2:k4|2:v4\n");
  expect_proxy_carried_connections();
}

TEST_F(ProxyToDevbroker, KcatUsesEveryPartitionOfAFourPartitionTopic) {
  ASSERT_NO_FATAL_FAILURE(start({"--topic", "multi:4", "--topic", "spread:4"}));
  constexpr int per_partition = 500;

  // Explicit partitions: each gets its own lines, and gives back exactly those, in order.
  std::map<int, std::vector<std::string>> want;
  for (int p = 0; p < 4; ++p) {
    const std::string lines = keyed_lines(per_partition, "p" + std::to_string(p) + "-");
    const auto file = path("in" + std::to_string(p) + ".txt");
    write_file(file, lines);
    want[p] = lines_of(lines);
    ASSERT_NO_FATAL_FAILURE(kcat("produce-p" + std::to_string(p),
                                 {"-P", "-t", "multi", "-p", std::to_string(p), "-K:", "-l", file}));
  }
  ASSERT_NO_FATAL_FAILURE(
      kcat("consume-multi", {"-C", "-t", "multi", "-o", "beginning", "-e", "-f", "%p|%k:%s\\n"}));
  EXPECT_TRUE(by_partition(output_of("consume-multi")) == want) << "per-partition contents differ";
  ASSERT_NO_FATAL_FAILURE(
      kcat("consume-p2", {"-C", "-t", "multi", "-p", "2", "-o", "beginning", "-e", "-f", "%k:%s\\n"}));
  EXPECT_TRUE(output_of("consume-p2") == read_file(path("in2.txt")));

  // Keys and librdkafka's default partitioner: the messages spread over all four partitions, none is lost
  // or duplicated, and each partition keeps the order in which they were produced.
  const std::string spread = keyed_lines(2000, "s-");
  write_file(path("spread.txt"), spread);
  ASSERT_NO_FATAL_FAILURE(kcat("produce-spread", {"-P", "-t", "spread", "-K:", "-l", path("spread.txt")}));
  ASSERT_NO_FATAL_FAILURE(
      kcat("consume-spread", {"-C", "-t", "spread", "-o", "beginning", "-e", "-f", "%p|%k:%s\\n"}));
  const auto got = by_partition(output_of("consume-spread"));
  const auto sent = lines_of(spread);
  std::map<std::string, std::size_t> position;
  for (std::size_t i = 0; i < sent.size(); ++i) position[sent[i]] = i;
  std::multiset<std::string> all;
  EXPECT_EQ(got.size(), 4u) << "not every partition received messages";
  for (const auto& [p, lines] : got) {
    std::cout << "[ measure  ] spread partition " << p << ": " << lines.size() << " messages\n";
    for (std::size_t i = 0; i < lines.size(); ++i) {
      all.insert(lines[i]);
      ASSERT_TRUE(position.count(lines[i])) << "unknown message in partition " << p << ": " << lines[i];
      if (i > 0) {
        EXPECT_LT(position[lines[i - 1]], position[lines[i]]) << "partition " << p << " out of order";
      }
    }
  }
  EXPECT_TRUE(all == std::multiset<std::string>(sent.begin(), sent.end())) << "messages lost or duplicated";
  expect_proxy_carried_connections();
}

TEST_F(ProxyToDevbroker, TwoProducersAtOnceWhileAConsumerReads) {
  ASSERT_NO_FATAL_FAILURE(start({"--topic", "duo:2"}));
  constexpr int per_producer = 2500;  // two rounds of two producers: 10,000 messages in all
  std::map<int, std::vector<std::string>> want;
  for (const char* round : {"r1", "r2"}) {
    for (int p = 0; p < 2; ++p) {
      const std::string lines =
          keyed_lines(per_producer, std::string(round) + "-p" + std::to_string(p) + "-");
      write_file(path(std::string(round) + "-" + std::to_string(p) + ".txt"), lines);
      for (auto& l : lines_of(lines)) want[p].push_back(std::move(l));
    }
  }
  const auto produce_round = [&](const std::string& round) {
    // Both producers at once, one per partition.
    std::vector<std::unique_ptr<child_process>> producers;
    for (int p = 0; p < 2; ++p) {
      const auto name = round + "-" + std::to_string(p);
      producers.push_back(start_kcat(
          "produce-" + name, {"-P", "-t", "duo", "-p", std::to_string(p), "-K:", "-l", path(name + ".txt")}));
    }
    for (int p = 0; p < 2; ++p) {
      const auto rc = producers[p]->wait(20s);
      EXPECT_EQ(rc, std::optional<int>(0)) << describe(rc, producers[p]->error_output());
    }
  };

  const auto t = clock_type::now();
  // The consumer waits for all 10,000 messages. Once it has printed most of the first round it is certainly
  // connected and fetching, so the second round is written while it reads.
  auto consumer = start_kcat("consume", {"-C", "-t", "duo", "-o", "beginning", "-c",
                                         std::to_string(4 * per_producer), "-f", "%p|%k:%s\\n"});
  ASSERT_NO_FATAL_FAILURE(produce_round("r1"));
  const auto first_round_bytes = read_file(path("r1-0.txt")).size() + read_file(path("r1-1.txt")).size();
  const auto until = clock_type::now() + 10s;
  while (output_of("consume").size() < first_round_bytes / 2 && clock_type::now() < until)
    std::this_thread::sleep_for(10ms);
  ASSERT_GE(output_of("consume").size(), first_round_bytes / 2)
      << "the consumer did not read the first round";
  ASSERT_NO_FATAL_FAILURE(produce_round("r2"));
  const auto rc = consumer->wait(20s);
  ASSERT_EQ(rc, std::optional<int>(0)) << describe(rc, consumer->error_output());
  std::cout << "[ measure  ] 2 rounds of 2 concurrent producers x " << per_producer
            << " messages with a live consumer: " << ms_since(t) << " ms\n";
  EXPECT_TRUE(by_partition(output_of("consume")) == want) << "the concurrent clients' messages differ";
  expect_proxy_carried_connections();
}

// ---- the Kafka-aware proxy ------------------------------------------------------------------------------

// "broker N at HOST:PORT" lines of `kcat -L`.
std::map<int, std::string> brokers_listed(const std::string& metadata) {
  std::map<int, std::string> out;
  const std::regex line(R"(broker (\d+) at (\S+:\d+))");
  for (std::sregex_iterator it(metadata.begin(), metadata.end(), line), end; it != end; ++it)
    out[std::stoi((*it)[1].str())] = (*it)[2].str();
  return out;
}

TEST_F(ProxyToDevbroker, ThreeBrokersAdvertisingThemselvesAreReachedOnlyThroughProxyListeners) {
  ASSERT_NO_FATAL_FAILURE(
      start({"--nodes", "3", "--topic", "three:3"}, {}, /*broker_advertises_proxy=*/false));
  ASSERT_NO_FATAL_FAILURE(kcat("metadata", {"-L", "-t", "three"}));
  const auto listed = brokers_listed(output_of("metadata"));
  ASSERT_EQ(listed.size(), 3u) << output_of("metadata");
  EXPECT_EQ(listed.at(0), "127.0.0.1:" + proxy_port_) << "the bootstrap broker is the main listener";
  const int first_ws = std::stoi(ws_port_);
  std::set<std::string> distinct;
  for (const auto& [node, address] : listed) {
    distinct.insert(address);
    EXPECT_TRUE(address.starts_with("127.0.0.1:")) << address;
    for (int ws = first_ws; ws < first_ws + 3; ++ws)
      EXPECT_NE(address, "127.0.0.1:" + std::to_string(ws)) << "broker " << node << " leaks its own address";
    if (node > 0) {
      EXPECT_TRUE(proxy_->wait_for_output(std::regex(
          "broker " + std::to_string(node) + R"( at 127\.0\.0\.1:\d+ is reachable through )" + address)))
          << proxy_->output();
    }
  }
  EXPECT_EQ(distinct.size(), 3u);

  // Each partition has another leader, so producing to all three goes through all three listeners.
  std::map<int, std::vector<std::string>> want;
  for (int p = 0; p < 3; ++p) {
    const std::string lines = keyed_lines(300, "n" + std::to_string(p) + "-");
    const auto file = path("in" + std::to_string(p) + ".txt");
    write_file(file, lines);
    want[p] = lines_of(lines);
    ASSERT_NO_FATAL_FAILURE(kcat("produce-p" + std::to_string(p),
                                 {"-P", "-t", "three", "-p", std::to_string(p), "-K:", "-l", file}));
  }
  ASSERT_NO_FATAL_FAILURE(
      kcat("consume", {"-C", "-t", "three", "-o", "beginning", "-e", "-f", "%p|%k:%s\\n"}));
  EXPECT_TRUE(by_partition(output_of("consume")) == want) << "per-partition contents differ";
  for (int ws = first_ws + 1; ws < first_ws + 3; ++ws) {
    EXPECT_NE(proxy_->output().find("broker=ws://127.0.0.1:" + std::to_string(ws) + "/"), std::string::npos)
        << "no client connection reached the broker on port " << ws;
  }
}

TEST_F(ProxyToDevbroker, Kafka08BrokerWithBrokerApi08AndKcatAtDefaultSettings) {
  ASSERT_NO_FATAL_FAILURE(start({"--kafka-0.8-only"}, {"--broker-api", "0.8"}, false));
  const std::string input = keyed_lines(2000, "k08-");
  write_file(path("in.txt"), input);
  // No fallback flags: librdkafka asks ApiVersions and gets the proxy's answer for the 0.8 broker.
  ASSERT_NO_FATAL_FAILURE(
      kcat("produce", {"-P", "-t", "test-topic", "-K:", "-l", path("in.txt")}, "/dev/null", 15s));
  ASSERT_NO_FATAL_FAILURE(kcat(
      "consume", {"-C", "-t", "test-topic", "-o", "beginning", "-e", "-f", "%k:%s\\n"}, "/dev/null", 15s));
  EXPECT_TRUE(output_of("consume") == input) << "consumed keys and values differ from the produced ones";
  EXPECT_EQ(brokers_listed(read_file(path("produce.out"))).size(), 0u);
}

TEST_F(ProxyToDevbroker, Kafka08BrokerWithBrokerApi08AndKafkaPythonWithoutApiVersion) {
  ASSERT_NO_FATAL_FAILURE(start({"--kafka-0.8-only"}, {"--broker-api", "0.8"}, false));
  // kafka-python probes down to 0.8 because nothing answers its ApiVersions v0. At its default settings it
  // pipelines; the 0.8 profile sends its requests one at a time, and every message arrives.
  kafka_python("py08", 500, "auto", "api_version 0.8");
  EXPECT_NE(proxy_->output().find("at most 1 request(s) in flight to the broker"), std::string::npos)
      << proxy_->output();
}

// tests/e2e/edge_clients.py MODE against the proxy, bounded; returns its exit code and output.
kws::test::run_result edge_client(const std::string& bootstrap, const std::string& mode,
                                  const std::string& topic, int count) {
  return kws::test::run({"/usr/bin/python3", KWS_EDGE_CLIENTS_SCRIPT, mode, "--bootstrap", bootstrap,
                         "--topic", topic, "--count", std::to_string(count), "--limit-s", "25"},
                        {.stderr_to = spawn_options::stderr_target::captured}, 28s);
}

// The edge broker's faults (--edge-quirks) with clients at their default settings and no proxy flag: the
// proxy detects the 0.8 broker and its profile protects them.
const std::vector<std::string> edge_broker{"--kafka-0.8-only", "--edge-quirks", "--default-partitions", "3"};

TEST_F(ProxyToDevbroker, EdgeBrokerKafkaPythonPipeliningDeliversEveryMessageInOrder) {
  ASSERT_NO_FATAL_FAILURE(start(edge_broker, {}, false));
  const auto py = edge_client(bootstrap(), "pipeline", "pipelined", 2000);
  EXPECT_EQ(py.exit_code, std::optional<int>(0)) << describe(py.exit_code, py.err) << py.out;
  EXPECT_NE(py.out.find("distinct_offsets 2000 consumed 2000 distinct_values 2000 in_order yes"),
            std::string::npos)
      << py.out;
  EXPECT_EQ(broker_->output().find("overwrote"), std::string::npos) << broker_->output();
}

TEST_F(ProxyToDevbroker, EdgeBrokerWithoutTheInFlightBoundLosesPipelinedMessages) {
  // The same run with requests passed on as kafka-python pipelines them: batches overwrite each other.
  ASSERT_NO_FATAL_FAILURE(start(edge_broker, {"--broker-api", "0.8", "--broker-max-in-flight", "0"}, false));
  const auto py = edge_client(bootstrap(), "pipeline", "pipelined", 2000);
  EXPECT_EQ(py.exit_code, std::optional<int>(1)) << describe(py.exit_code, py.err) << py.out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(py.out, m,
                                std::regex(R"(distinct_offsets (\d+) consumed \d+ distinct_values (\d+))")))
      << py.out;
  EXPECT_LT(std::stoi(m[1].str()), 2000) << "no two batches got the same offset";
  EXPECT_LT(std::stoi(m[2].str()), 2000) << "no message was lost";
  EXPECT_NE(broker_->output().find("overwrote"), std::string::npos) << broker_->output();
}

TEST_F(ProxyToDevbroker, EdgeBrokerConfluentKafkaConsumesTwoTopicsWithInterleavedPartitions) {
  ASSERT_NO_FATAL_FAILURE(start(edge_broker, {"--log-level", "debug"}, false));
  const auto py = edge_client(bootstrap(), "two-topics", "pair", 300);
  EXPECT_EQ(py.exit_code, std::optional<int>(0)) << describe(py.exit_code, py.err) << py.out;
  EXPECT_NE(py.out.find("consumed 1800 of 1800"), std::string::npos) << py.out;
  // librdkafka did name a topic twice in one Fetch, and the broker never saw such a request.
  EXPECT_NE(proxy_->output().find("names a topic more than once"), std::string::npos) << proxy_->output();
  EXPECT_EQ(broker_->output().find("twice"), std::string::npos) << broker_->output();
}

TEST_F(ProxyToDevbroker, EdgeBrokerConfluentKafkaSubscribeFailsWithUnsupportedVersion) {
  ASSERT_NO_FATAL_FAILURE(start(edge_broker, {}, false));
  const auto py = edge_client(bootstrap(), "subscribe", "grouped", 0);
  EXPECT_EQ(py.exit_code, std::optional<int>(0)) << describe(py.exit_code, py.err) << py.out;
  EXPECT_NE(
      py.out.find("error 35 UNSUPPORTED_VERSION: FindCoordinator response error: Broker: API version not "
                  "supported"),
      std::string::npos)
      << py.out;
  EXPECT_NE(
      proxy_->output().find("consumer groups; clients that subscribe or commit offsets need a broker that "
                            "has them"),
      std::string::npos)
      << proxy_->output();
}

// tests/e2e/sarama_roundtrip (Go, Debian's sarama at its default settings): 500 messages both ways.
void sarama(const std::string& bootstrap, const std::string& topic) {
#ifdef KWS_SARAMA_PATH
  const auto go = kws::test::run({KWS_SARAMA_PATH, "-bootstrap", bootstrap, "-topic", topic, "-count", "500"},
                                 {.stderr_to = spawn_options::stderr_target::captured}, 28s);
  EXPECT_EQ(go.exit_code, std::optional<int>(0)) << describe(go.exit_code, go.err) << go.out;
  EXPECT_NE(go.out.find("OK: 500 messages"), std::string::npos) << go.out;
#else
  (void)bootstrap;
  (void)topic;
#endif
}

#ifdef KWS_SARAMA_PATH
#define KWS_NEEDS_SARAMA()
#else
#define KWS_NEEDS_SARAMA()                                                                                \
  GTEST_SKIP() << "no sarama client: go or sarama was missing when this was configured (scripts/deps.sh " \
                  "installs golang-go and golang-github-shopify-sarama-dev)"
#endif

TEST_F(ProxyToDevbroker, SaramaThroughTheEdgeProfile) {
  KWS_NEEDS_SARAMA();
  ASSERT_NO_FATAL_FAILURE(start(edge_broker, {}, false));
  sarama(bootstrap(), "go08");
  EXPECT_EQ(broker_->output().find("overwrote"), std::string::npos) << broker_->output();
}

TEST_F(ProxyToDevbroker, SaramaAgainstTheDefaultBroker) {
  KWS_NEEDS_SARAMA();
  ASSERT_NO_FATAL_FAILURE(start({}, {}, false));
  sarama(bootstrap(), "go10");
}

// --broker-api auto, the default: the broker's silence on ApiVersions is detected, once per broker URL.
TEST_F(ProxyToDevbroker, Kafka08BrokerDetectedWithNoProxyFlagAndKcatAtDefaultSettings) {
  ASSERT_NO_FATAL_FAILURE(
      start({"--kafka-0.8-only"}, {"--log-format", "json", "--log-level", "debug"}, false));
  // kcat at its default settings: no fallback flags, no proxy flag.
  ASSERT_NO_FATAL_FAILURE(kcat_round_trip("auto08", 2000));
  const kws::test::event_filter detected{kws::test::field("event", "broker_api"),
                                         kws::test::field("verdict", "detected"),
                                         kws::test::field("broker", "ws://127.0.0.1:" + ws_port_ + "/")};
  EXPECT_EQ(kws::test::events(*proxy_, detected).size(), 1u) << proxy_->output();
  // The consumer's connections started in the profile: nothing waited for the broker again.
  EXPECT_FALSE(kws::test::events(*proxy_, {kws::test::field("event", "broker_api"),
                                           kws::test::field("verdict", "remembered")})
                   .empty());
}

TEST_F(ProxyToDevbroker, Kafka08BrokerDetectedWithNoProxyFlagAndKafkaPythonAtDefaultSettings) {
  ASSERT_NO_FATAL_FAILURE(start({"--kafka-0.8-only"}, {"--log-format", "json"}, false));
  // Its ApiVersions v0 goes unanswered, as from a 0.8 broker, and it probes down; its pipelined requests
  // then go one at a time, and every message arrives.
  kafka_python("pyauto", 500, "auto", "api_version 0.8");
  EXPECT_TRUE(kws::test::wait_for_event(
      *proxy_, {kws::test::field("event", "broker_api"), kws::test::field("verdict", "detected")}))
      << proxy_->output();
}

TEST_F(ProxyToDevbroker, DefaultBrokerAnswersApiVersionsAndNothingIsDetected) {
  ASSERT_NO_FATAL_FAILURE(start({}, {"--log-format", "json"}, false));
  ASSERT_NO_FATAL_FAILURE(kcat_round_trip("answered", 500));
  EXPECT_TRUE(kws::test::events(*proxy_, {kws::test::field("event", "broker_api")}).empty())
      << proxy_->output();
}

TEST_F(ProxyToDevbroker, KafkaPythonWithDefaultSettingsAgainstTheDefaultBroker) {
  ASSERT_NO_FATAL_FAILURE(start({}, {}, false));
  kafka_python("py10", 1000, "auto", "api_version 0.10");
}

TEST_F(ProxyToDevbroker, BrokerClosingIdleWebSocketsBetweenRequestsGoesUnnoticed) {
  ASSERT_NO_FATAL_FAILURE(start({"--close-idle-after", "300ms"}, {"--log-level", "debug"}, false));
  const auto fifo = path("in.fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // Held open before kcat starts: posix_spawn waits for the child to exec, and the child's open of a FIFO
  // waits for a writer (Linux opens a FIFO read-write at once).
  const int writer = ::open(fifo.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(writer, 0);
  auto producer = start_kcat("produce", {"-P", "-t", "idle", "-K:"}, fifo);
  const auto send = [&](const std::string& text) {
    ASSERT_EQ(::write(writer, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  };
  ASSERT_NO_FATAL_FAILURE(send(keyed_lines(100, "before-")));
  // kcat keeps its connection (librdkafka reuses the bootstrap connection for broker 0, whose advertised
  // address is the same); the broker closes the idle WebSocket behind the proxy. Then kcat sends more.
  const bool noticed =
      proxy_->wait_for_output(std::regex("reconnecting on the next request"), 15s).has_value();
  if (noticed) send(keyed_lines(100, "after-"));
  ::close(writer);  // EOF: kcat flushes and exits
  ASSERT_TRUE(noticed) << proxy_->output();
  const auto rc = producer->wait(20s);
  ASSERT_EQ(rc, std::optional<int>(0)) << describe(rc, producer->error_output());
  EXPECT_EQ(producer->error_output().find("ERROR"), std::string::npos) << producer->error_output();
  // The second batch went over a new WebSocket behind the producer's one TCP connection (the first accepted).
  EXPECT_NE(proxy_->output().find("conn 1 broker connection open again"), std::string::npos)
      << proxy_->output();
  EXPECT_EQ(proxy_->output().find("conn 2 "), std::string::npos) << "the producer opened a second connection";
  ASSERT_NO_FATAL_FAILURE(kcat("consume", {"-C", "-t", "idle", "-o", "beginning", "-e", "-f", "%k:%s\\n"}));
  EXPECT_TRUE(output_of("consume") == keyed_lines(100, "before-") + keyed_lines(100, "after-"));
  EXPECT_EQ(proxy_->output().find("in flight"), std::string::npos) << proxy_->output();
}

#ifdef KWS_LIBRDKAFKA_EXAMPLE_PATH
void run_example(const std::string& name, const std::vector<std::string>& argv, int count) {
  const auto t = clock_type::now();
  const auto ex = kws::test::run(argv, {.stderr_to = spawn_options::stderr_target::captured}, 28s);
  const std::string& out = ex.out;
  EXPECT_EQ(ex.exit_code, std::optional<int>(0)) << describe(ex.exit_code, ex.err) << "stdout:\n" << out;
  EXPECT_NE(out.find("OK: " + std::to_string(count) + " messages round-tripped"), std::string::npos) << out;
  std::cout << "[ measure  ] example " << name << ": " << ms_since(t) << " ms\n" << out;
}

TEST_F(ProxyToDevbroker, LibrdkafkaCppExampleRoundTripsThroughTheProxy) {
  ASSERT_NO_FATAL_FAILURE(start({}));
  run_example("example",
              {KWS_LIBRDKAFKA_EXAMPLE_PATH, "--bootstrap", bootstrap(), "--topic", "cpp-topic", "--count",
               "5000", "--timeout-ms", "20000"},
              5000);
  expect_proxy_carried_connections();
}

TEST_F(ProxyToDevbroker, LibrdkafkaCppExampleAgainstTheKafka08Broker) {
  ASSERT_NO_FATAL_FAILURE(start({"--kafka-0.8-only"}));
  run_example("example08",
              concat({KWS_LIBRDKAFKA_EXAMPLE_PATH, "--bootstrap", bootstrap(), "--topic", "cpp-topic",
                      "--count", "5000", "--timeout-ms", "20000"},
                     kafka_08_flags),
              5000);
  expect_proxy_carried_connections();
}
#endif

}  // namespace

// ---- behind an HTTP forward proxy ---------------------------------------------------------------------

namespace {

using environment = std::map<std::string, std::optional<std::string>>;

// The six forward proxy variables unset, then `set` on top, whatever the machine's environment holds.
environment proxy_env(const environment& set = {}) {
  environment env;
  for (const char* n : {"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"})
    env[n] = std::nullopt;
  for (const auto& [k, v] : set) env[k] = v;
  return env;
}

TEST_F(ProxyToDevbroker, KcatThroughAForwardProxyOverWs) {
  forward_proxy_ = std::make_unique<kws::test::forward_proxy_process>();
  ASSERT_NO_FATAL_FAILURE(start({}, {"--http-proxy", forward_proxy_->url()}, true, proxy_env()));
  ASSERT_NO_FATAL_FAILURE(kcat_round_trip("tunnelled", 2000));
  EXPECT_GE(forward_proxy_->connects_to("127.0.0.1:" + ws_port_), 1) << forward_proxy_->log();
  EXPECT_NE(
      proxy_->output().find("broker=ws://127.0.0.1:" + ws_port_ + "/ via=" + forward_proxy_->authority()),
      std::string::npos)
      << proxy_->output();
}

TEST_F(ProxyToDevbroker, KcatThroughAForwardProxyOverWssVerifyingTheBrokersCertificate) {
  // The certificate names only "localhost": the proxy verifies it against the broker's name, inside the
  // tunnel.
  const auto tls = kws::test::make_test_certificates("DNS:localhost");
  forward_proxy_ = std::make_unique<kws::test::forward_proxy_process>();
  std::string tls_port;
  ASSERT_NO_FATAL_FAILURE(
      start({}, {"--http-proxy", forward_proxy_->url()}, true, proxy_env(), [&](const std::string& ws_port) {
        tls_port = start_tls_terminator(tls, ws_port);
        return std::vector<std::string>{"--broker", "localhost:" + tls_port, "--tls", "--ca-file",
                                        tls.ca_pem};
      }));
  ASSERT_NO_FATAL_FAILURE(kcat_round_trip("tunnelled-tls", 2000));
  EXPECT_GE(forward_proxy_->connects_to("localhost:" + tls_port), 1) << forward_proxy_->log();
  EXPECT_NE(
      proxy_->output().find("broker=wss://localhost:" + tls_port + "/ via=" + forward_proxy_->authority()),
      std::string::npos)
      << proxy_->output();
  std::filesystem::remove_all(tls.dir);
}

TEST_F(ProxyToDevbroker, KcatThroughHttpsProxyFromTheEnvironmentWithBasicAuthentication) {
  // What a user of the original behind an authenticating proxy has: HTTPS_PROXY with credentials, and no
  // flag.
  const auto tls = kws::test::make_test_certificates("DNS:localhost");
  forward_proxy_ = std::make_unique<kws::test::forward_proxy_process>(
      kws::test::forward_proxy_options{.user = "kafka-user", .password = "s3cret-pw"});
  std::string tls_port;
  const auto env = proxy_env({{"HTTPS_PROXY", forward_proxy_->url("kafka-user:s3cret-pw")},
                              // The broker is on this machine, which the environment's rules reach directly.
                              {"NO_PROXY", "<-loopback>"}});
  ASSERT_NO_FATAL_FAILURE(start({}, {}, true, env, [&](const std::string& ws_port) {
    tls_port = start_tls_terminator(tls, ws_port);
    return std::vector<std::string>{"-broker", "localhost:" + tls_port, "-tls", "--ca-file", tls.ca_pem};
  }));
  ASSERT_NO_FATAL_FAILURE(kcat_round_trip("from-env", 2000));
  EXPECT_GE(forward_proxy_->connects_to("localhost:" + tls_port), 1) << forward_proxy_->log();
  EXPECT_NE(proxy_->output().find(" via=" + forward_proxy_->authority()), std::string::npos)
      << proxy_->output();
  EXPECT_EQ(proxy_->output().find("s3cret-pw"), std::string::npos) << proxy_->output();
  std::filesystem::remove_all(tls.dir);
}

TEST_F(ProxyToDevbroker, KcatWithNoProxyNamingTheBrokerGoesDirect) {
  forward_proxy_ = std::make_unique<kws::test::forward_proxy_process>();
  ASSERT_NO_FATAL_FAILURE(
      start({}, {}, true,
            proxy_env({{"HTTP_PROXY", forward_proxy_->url()}, {"NO_PROXY", "<-loopback>,127.0.0.1"}})));
  ASSERT_NO_FATAL_FAILURE(kcat_round_trip("direct", 500));
  EXPECT_EQ(forward_proxy_->connects_to("127.0.0.1:" + ws_port_), 0) << forward_proxy_->log();
  EXPECT_EQ(proxy_->output().find("via="), std::string::npos) << proxy_->output();
}

}  // namespace
