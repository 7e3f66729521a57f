// librdkafka clients with nothing but configuration: Debian's kcat and confluent-kafka-python load the built
// plugin (plugin.library.paths=libkws_rdkafka.so) and talk straight to the built dev broker, which has no
// TCP listener, so every byte crosses a WebSocket; no proxy process anywhere. Also the C++ example that uses
// kws::rdkafka::enable. Everything runs on 127.0.0.1 with ephemeral ports; every wait is bounded.
#include "forward_proxy_process.hpp"
#include "process.hpp"
#include "test_env.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#if !defined(KWS_PLUGIN_PATH) || !defined(KWS_DEVBROKER_PATH) || !defined(KWS_KCAT_PATH) || \
    !defined(KWS_EDGE_CLIENTS_SCRIPT) || !defined(KWS_CONFLUENT_SCRIPT) || !defined(KWS_EXAMPLE_PATH)
#error "tests/rdkafka/CMakeLists.txt defines the paths of the plugin, dev broker, kcat, script and example"
#endif

namespace {

using namespace std::chrono_literals;
using kws::test::child_process;
using kws::test::read_file;
using kws::test::spawn_options;
using kws::test::write_file;
using clock_type = std::chrono::steady_clock;

// The environment of kcat and python3. In a sanitizer build the plugin needs the AddressSanitizer runtime
// loaded first; neither tool is instrumented, so leak checks (of their own allocations) are off.
std::map<std::string, std::optional<std::string>> tool_env() {
#ifdef KWS_ASAN_PRELOAD
  return {{"LD_PRELOAD", KWS_ASAN_PRELOAD}, {"ASAN_OPTIONS", "detect_leaks=0"}};
#else
  return {};
#endif
}

long long ms_since(clock_type::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t).count();
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::string describe(const std::optional<int>& rc, std::string err) {
  if (err.size() > 4000) err = "..." + err.substr(err.size() - 4000);
  return kws::test::describe_exit(rc) + ", output:\n" + err;
}

// `n` lines "key:value" with varied lengths and characters (no ':' in keys, no newlines).
std::string keyed_lines(int n, const std::string& prefix) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    s += prefix + "key-" + std::to_string(i) + ":" + prefix + "value-" + std::to_string(i * 7919) + "-" +
         std::string(static_cast<std::size_t>(i % 97), static_cast<char>('A' + i % 26)) + " ~!@#$%^&*()=\n";
  }
  return s;
}

// "broker N at HOST:PORT" lines of `kcat -L`.
std::map<int, std::string> brokers_listed(const std::string& metadata) {
  std::map<int, std::string> out;
  const std::regex line(R"(broker (\d+) at (\S+:\d+))");
  for (std::sregex_iterator it(metadata.begin(), metadata.end(), line), end; it != end; ++it)
    out[std::stoi((*it)[1].str())] = (*it)[2].str();
  return out;
}

class Plugin : public ::testing::Test {
 protected:
  void TearDown() override {
    if (broker_) {
      broker_->signal(SIGTERM);
      EXPECT_EQ(broker_->wait(10s), std::optional<int>(0)) << "the dev broker did not exit with 0 on SIGTERM";
      if (HasFailure())
        std::cerr << "---- devbroker log ----\n" << broker_->output() << "-----------------------\n";
    }
  }

  // The dev broker on `port` ("0": any free one) of 127.0.0.1; returns false when it could not bind.
  bool start_broker(const std::vector<std::string>& args, const std::string& port = "0") {
    std::vector<std::string> argv{KWS_DEVBROKER_PATH, "--listen", "127.0.0.1:" + port};
    argv.insert(argv.end(), args.begin(), args.end());
    broker_ = std::make_unique<child_process>(argv);
    const auto bound = broker_->wait_for_output(std::regex(R"(listening ws=127\.0\.0\.1:(\d+))"));
    if (!bound) {
      broker_->wait(5s);
      broker_.reset();
      return false;
    }
    port_ = *bound;
    return true;
  }

  std::string bootstrap() const { return "127.0.0.1:" + port_; }
  std::filesystem::path path(const std::string& name) const { return dir_ / name; }
  std::string output_of(const std::string& name) const { return read_file(path(name + ".out")); }

  // kcat with the plugin first (the kws.* properties exist only once it is loaded), then `settings`.
  std::vector<std::string> kcat_argv(const std::vector<std::string>& settings,
                                     const std::vector<std::string>& args) const {
    std::vector<std::string> argv{KWS_KCAT_PATH, "-X",
                                  std::string("plugin.library.paths=") + KWS_PLUGIN_PATH};
    for (const auto& s : settings) argv.insert(argv.end(), {"-X", s});
    argv.insert(argv.end(), {"-b", bootstrap()});
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }

  // Runs kcat to the end; fails the test (with kcat's stderr) unless it exits 0 within `limit`.
  void kcat(const std::string& name, const std::vector<std::string>& settings,
            const std::vector<std::string>& args, const std::string& in = "/dev/null",
            std::chrono::milliseconds limit = 20s) {
    const auto t = clock_type::now();
    const auto r = kws::test::run(kcat_argv(settings, args),
                                  {.stdin_file = in,
                                   .stdout_file = path(name + ".out"),
                                   .stderr_to = spawn_options::stderr_target::captured,
                                   .environment = tool_env()},
                                  limit);
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << "kcat " << name << ": " << describe(r.exit_code, r.err);
    std::cout << "[ measure  ] kcat " << name << ": " << ms_since(t) << " ms\n";
  }

  // The dev broker's log shows WebSocket connections from the plugin (it has no other listener).
  void expect_websocket_connections() const {
    EXPECT_NE(broker_->output().find(" open peer=127.0.0.1:"), std::string::npos) << broker_->output();
  }

  kws::test::temp_dir dir_{"kws-rdkafka"};
  std::unique_ptr<child_process> broker_;
  std::string port_;
};

TEST_F(Plugin, KcatListsMetadataOfThreeBrokersAtTheirOwnAddresses) {
  ASSERT_TRUE(start_broker({"--nodes", "3", "--topic", "three:3"}));
  ASSERT_NO_FATAL_FAILURE(kcat("metadata", {}, {"-L", "-t", "three"}));
  const auto listed = brokers_listed(output_of("metadata"));
  ASSERT_EQ(listed.size(), 3u) << output_of("metadata");
  // No proxy, no rewriting: librdkafka sees each broker at the address it advertises.
  EXPECT_EQ(listed.at(0), bootstrap());
  EXPECT_NE(output_of("metadata").find(R"(topic "three" with 3 partitions)"), std::string::npos);
}

TEST_F(Plugin, KcatRoundTripsTenThousandKeyedMessagesByteExact) {
  ASSERT_TRUE(start_broker({}));
  const std::string input = keyed_lines(10000, "");
  write_file(path("in.txt"), input);
  ASSERT_NO_FATAL_FAILURE(kcat("produce", {}, {"-P", "-t", "test-topic", "-K:", "-l", path("in.txt")}));
  ASSERT_NO_FATAL_FAILURE(
      kcat("consume", {}, {"-C", "-t", "test-topic", "-o", "beginning", "-e", "-f", "%k:%s\\n"}));
  const std::string output = output_of("consume");
  EXPECT_EQ(lines_of(output).size(), 10000u);
  EXPECT_EQ(output.size(), input.size());
  EXPECT_TRUE(output == input) << "consumed keys and values differ from the produced ones";
  std::cout << "[ measure  ] 10000 messages, " << input.size() << " bytes of key:value lines\n";
  expect_websocket_connections();
}

TEST_F(Plugin, KcatReachesTheBrokerThroughAForwardProxyFromKwsHttpProxyOrTheEnvironment) {
  ASSERT_TRUE(start_broker({}));
  kws::test::forward_proxy_process forward_proxy;
  const auto target = bootstrap();
  // Set explicitly: every broker, loopback included, goes through it.
  write_file(path("in.txt"), "k1:through the forward proxy\n");
  ASSERT_NO_FATAL_FAILURE(kcat("produce", {"kws.http.proxy=" + forward_proxy.url()},
                               {"-P", "-t", "test-topic", "-K:", "-l", path("in.txt")}));
  EXPECT_TRUE(forward_proxy.wait_for_connects(target, 1)) << forward_proxy.log();
  // From the environment by default (NO_PROXY=<-loopback> so that this loopback broker is not exempt).
  forward_proxy.sync();
  const int before = forward_proxy.connects_to(target);
  auto env = tool_env();
  env["HTTP_PROXY"] = forward_proxy.url();
  env["NO_PROXY"] = "<-loopback>";
  const auto r =
      kws::test::run(kcat_argv({}, {"-C", "-t", "test-topic", "-o", "beginning", "-e", "-f", "%k:%s\\n"}),
                     {.stdout_file = path("consume.out"),
                      .stderr_to = spawn_options::stderr_target::captured,
                      .environment = env},
                     20s);
  ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r.exit_code, r.err);
  EXPECT_EQ(output_of("consume"), "k1:through the forward proxy\n");
  EXPECT_TRUE(forward_proxy.wait_for_connects(target, before + 1)) << forward_proxy.log();
  // kws.http.proxy=none ignores the environment.
  forward_proxy.sync();
  const int after_env = forward_proxy.connects_to(target);
  const auto direct = kws::test::run(kcat_argv({"kws.http.proxy=none"}, {"-L"}),
                                     {.stdout_file = path("direct.out"),
                                      .stderr_to = spawn_options::stderr_target::captured,
                                      .environment = env},
                                     20s);
  ASSERT_EQ(direct.exit_code, std::optional<int>(0)) << describe(direct.exit_code, direct.err);
  forward_proxy.sync();
  EXPECT_EQ(forward_proxy.connects_to(target), after_env) << forward_proxy.log();
}

TEST_F(Plugin, KcatReachesEveryBrokerOfAThreeNodeCluster) {
  ASSERT_TRUE(start_broker({"--nodes", "3", "--topic", "three:3"}));
  // Each partition has another leader: producing to all three needs a connection to each broker.
  std::map<int, std::vector<std::string>> want;
  for (int p = 0; p < 3; ++p) {
    const std::string lines = keyed_lines(300, "n" + std::to_string(p) + "-");
    write_file(path("in" + std::to_string(p) + ".txt"), lines);
    want[p] = lines_of(lines);
    ASSERT_NO_FATAL_FAILURE(kcat("produce-p" + std::to_string(p), {},
                                 {"-P", "-t", "three", "-p", std::to_string(p), "-K:", "-l",
                                  path("in" + std::to_string(p) + ".txt")}));
  }
  ASSERT_NO_FATAL_FAILURE(
      kcat("consume", {}, {"-C", "-t", "three", "-o", "beginning", "-e", "-f", "%p|%k:%s\\n"}));
  std::map<int, std::vector<std::string>> got;
  for (const auto& line : lines_of(output_of("consume"))) {
    const auto bar = line.find('|');
    got[std::stoi(line.substr(0, bar))].push_back(line.substr(bar + 1));
  }
  EXPECT_TRUE(got == want) << "per-partition contents differ";
  for (const char* node : {"node=0", "node=1", "node=2"})
    EXPECT_NE(broker_->output().find(node), std::string::npos) << "no connection reached " << node;
}

TEST_F(Plugin, NodeIdsPickTheUrlWhenBrokersAdvertiseNamesThatDoNotResolve) {
  // The gateway case without a gateway: every broker advertises an unresolvable name, and only the node id
  // tells them apart. The template turns node id N into the dev broker's port BASE+N (BASE ends in 0).
  bool started = false;
  std::string base;
  for (int attempt = 0; attempt < 5 && !started; ++attempt) {
    base = std::to_string(kws::test::free_port_run(3, 10));
    started =
        start_broker({"--nodes", "3", "--topic", "three:3", "--advertise", "broker.invalid:9092"}, base);
  }
  ASSERT_TRUE(started) << "no three consecutive free ports for the dev broker";
  const std::vector<std::string> settings{
      "kws.url.template=ws://127.0.0.1:" + base.substr(0, base.size() - 1) + "{node_id}/",
      "kws.bootstrap.url.template=ws://{host}:{port}/"};
  ASSERT_NO_FATAL_FAILURE(kcat("metadata", settings, {"-L", "-t", "three"}));
  const auto listed = brokers_listed(output_of("metadata"));
  ASSERT_EQ(listed.size(), 3u) << output_of("metadata");
  EXPECT_EQ(listed.at(2), "broker.invalid:9094") << "librdkafka keeps the advertised names";
  for (int p = 0; p < 3; ++p) {
    write_file(path("in" + std::to_string(p) + ".txt"), keyed_lines(50, "g" + std::to_string(p) + "-"));
    ASSERT_NO_FATAL_FAILURE(kcat("produce-p" + std::to_string(p), settings,
                                 {"-P", "-t", "three", "-p", std::to_string(p), "-K:", "-l",
                                  path("in" + std::to_string(p) + ".txt")}));
  }
  ASSERT_NO_FATAL_FAILURE(
      kcat("consume", settings, {"-C", "-t", "three", "-p", "2", "-o", "beginning", "-e", "-f", "%k:%s\\n"}));
  EXPECT_TRUE(output_of("consume") == read_file(path("in2.txt")));
  for (const char* node : {"node=1", "node=2"})
    EXPECT_NE(broker_->output().find(node), std::string::npos) << "no connection reached " << node;
}

TEST_F(Plugin, Kafka08BrokerWithBrokerApi08AndOtherwiseDefaultSettings) {
  ASSERT_TRUE(start_broker({"--kafka-0.8-only"}));
  const std::string input = keyed_lines(10000, "k08-");
  write_file(path("in.txt"), input);
  // No api.version.request or broker.version.fallback: the hook answers ApiVersions for the 0.8 broker.
  const std::vector<std::string> settings{"kws.broker.api=0.8"};
  ASSERT_NO_FATAL_FAILURE(
      kcat("produce", settings, {"-P", "-t", "test-topic", "-K:", "-l", path("in.txt")}, "/dev/null", 15s));
  ASSERT_NO_FATAL_FAILURE(kcat("consume", settings,
                               {"-C", "-t", "test-topic", "-o", "beginning", "-e", "-f", "%k:%s\\n"},
                               "/dev/null", 15s));
  EXPECT_EQ(lines_of(output_of("consume")).size(), 10000u);
  EXPECT_TRUE(output_of("consume") == input) << "consumed keys and values differ from the produced ones";
}

TEST_F(Plugin, Kafka08BrokerDetectedWithOnlyThePluginSet) {
  ASSERT_TRUE(start_broker({"--kafka-0.8-only"}));
  const std::string input = keyed_lines(2000, "auto08-");
  write_file(path("in.txt"), input);
  // Each kcat is a process of its own: each waits once for the broker's silence, and says so once.
  for (const char* step : {"produce", "consume"}) {
    const bool produce = std::string(step) == "produce";
    const auto r = kws::test::run(
        kcat_argv({}, produce
                          ? std::vector<std::string>{"-P", "-t", "test-topic", "-K:", "-l", path("in.txt")}
                          : std::vector<std::string>{"-C", "-t", "test-topic", "-o", "beginning", "-e", "-f",
                                                     "%k:%s\\n"}),
        {.stdout_file = path(std::string(step) + ".out"),
         .stderr_to = spawn_options::stderr_target::captured,
         .environment = tool_env()},
        20s);
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << step << ": " << describe(r.exit_code, r.err);
    const std::regex verdict(
        "ws://127\\.0\\.0\\.1:" + port_ +
        "/ left ApiVersions unanswered for 1000ms: taken for a Kafka 0\\.8 broker.*kws\\.broker\\.api=0\\.8");
    const auto lines =
        std::distance(std::sregex_iterator(r.err.begin(), r.err.end(), verdict), std::sregex_iterator());
    EXPECT_EQ(lines, 1) << step << ":\n" << r.err;
  }
  EXPECT_TRUE(output_of("consume") == input) << "consumed keys and values differ from the produced ones";
}

TEST_F(Plugin, Kafka08BrokerWithoutDetectionTimesOutOnApiVersions) {
  // What kws.broker.api=0.8 and detection spare: librdkafka waits for an ApiVersions answer that never comes.
  ASSERT_TRUE(start_broker({"--kafka-0.8-only"}));
  const auto r = kws::test::run(
      kcat_argv({"kws.api.versions.timeout.ms=0", "api.version.request.timeout.ms=1000"}, {"-L", "-m", "3"}),
      {.stderr_to = spawn_options::stderr_target::captured, .environment = tool_env()}, 20s);
  EXPECT_NE(r.exit_code, std::optional<int>(0)) << r.out;
  EXPECT_NE(r.err.find("ApiVersion"), std::string::npos) << r.err;
}

TEST_F(Plugin, TlsSettingDialsWssUrls) {
  // The dev broker speaks plain ws://, so the TLS handshake fails: the point is the URL the hook dials.
  ASSERT_TRUE(start_broker({}));
  const auto r =
      kws::test::run(kcat_argv({"kws.tls=true", "kws.handshake.timeout.ms=2000"}, {"-L", "-m", "2"}),
                     {.stderr_to = spawn_options::stderr_target::captured, .environment = tool_env()}, 20s);
  EXPECT_NE(r.exit_code, std::optional<int>(0));
  EXPECT_NE(r.err.find("cannot open wss://127.0.0.1:" + port_ + "/"), std::string::npos) << r.err;
}

TEST_F(Plugin, MisconfigurationFailsAtConfigurationTimeNamingTheProperty) {
  kws::test::write_file(path("garbage.pem"), "not a certificate\n");
  struct bad {
    std::string setting;
    std::string expect;
  };
  const std::vector<bad> cases{
      {"kws.url.template=http://{host}:{port}/", R"(configuration property "kws.url.template")"},
      {"kws.url.template=ws://{host}:{port}/{topic}", R"(configuration property "kws.url.template")"},
      {"kws.bogus=1", R"(No such configuration property: "kws.bogus")"},
      {"kws.ca.file=" + path("missing.pem").string(), R"(configuration property "kws.ca.file")"},
      {"kws.ca.file=" + path("garbage.pem").string(), R"(configuration property "kws.ca.file")"},
      {"kws.ca.file=" + dir_.path().string(), R"(configuration property "kws.ca.file")"},
      {"kws.tls=maybe", R"(configuration property "kws.tls")"},
      {"kws.broker.api=0.10", R"(configuration property "kws.broker.api")"},
  };
  port_ = "9";  // never dialled: kcat stops at the configuration
  for (const auto& c : cases) {
    const auto r =
        kws::test::run(kcat_argv({c.setting}, {"-L"}),
                       {.stderr_to = spawn_options::stderr_target::captured, .environment = tool_env()}, 10s);
    EXPECT_EQ(r.exit_code, std::optional<int>(1)) << c.setting << ": " << describe(r.exit_code, r.err);
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.setting << ": " << r.err;
  }
  // confluent-kafka-python reports the same at construction, as a KafkaException.
  const auto py =
      kws::test::run({"/usr/bin/python3", KWS_CONFLUENT_SCRIPT, "--plugin", KWS_PLUGIN_PATH, "--bootstrap",
                      "127.0.0.1:9", "--topic", "t", "--set", "kws.url.template=tcp://x"},
                     {.stderr_to = spawn_options::stderr_target::captured, .environment = tool_env()}, 20s);
  EXPECT_EQ(py.exit_code, std::optional<int>(2)) << describe(py.exit_code, py.err);
  EXPECT_NE(py.err.find(R"(configuration property "kws.url.template")"), std::string::npos) << py.err;
}

// tests/rdkafka/confluent_roundtrip.py: confluent-kafka-python with the plugin; prints "OK: N messages".
void confluent_kafka(const std::string& bootstrap, const std::string& topic, int count,
                     const std::vector<std::string>& settings) {
  std::vector<std::string> argv{"/usr/bin/python3", KWS_CONFLUENT_SCRIPT,
                                "--plugin",         KWS_PLUGIN_PATH,
                                "--bootstrap",      bootstrap,
                                "--topic",          topic,
                                "--count",          std::to_string(count)};
  for (const auto& s : settings) argv.insert(argv.end(), {"--set", s});
  const auto t = clock_type::now();
  // The Debian python3 explicitly: the one first on PATH may not see Debian's python3-confluent-kafka.
  const auto py = kws::test::run(
      argv, {.stderr_to = spawn_options::stderr_target::captured, .environment = tool_env()}, 28s);
  EXPECT_EQ(py.exit_code, std::optional<int>(0)) << describe(py.exit_code, py.err) << "stdout:\n" << py.out;
  EXPECT_NE(py.out.find("OK: " + std::to_string(count) + " messages"), std::string::npos) << py.out;
  std::cout << "[ measure  ] " << py.out << "[ measure  ] python run: " << ms_since(t) << " ms\n";
}

TEST_F(Plugin, ConfluentKafkaPythonProducesAndConsumes) {
  ASSERT_TRUE(start_broker({}));
  confluent_kafka(bootstrap(), "py-topic", 2000, {});
  expect_websocket_connections();
}

TEST_F(Plugin, UnreachableBrokerIsRetriedUntilItComesUp) {
  // confluent-kafka rather than kcat: kcat gives up by itself once all brokers are down, WebSocket or not.
  const auto port = std::to_string(kws::test::free_port());
  child_process client(
      {"/usr/bin/python3", KWS_CONFLUENT_SCRIPT, "--plugin", KWS_PLUGIN_PATH, "--bootstrap",
       "127.0.0.1:" + port, "--topic", "late", "--count", "1000", "--set", "reconnect.backoff.max.ms=500"},
      {.environment = tool_env()});
  // Nothing listens yet: the hook says why, librdkafka reports the failure its own way and reconnects.
  const std::regex refused("conn 1 bootstrap server 127\\.0\\.0\\.1:" + port +
                           ": cannot open ws://127\\.0\\.0\\.1:" + port + "/: Connection refused");
  ASSERT_TRUE(client.wait_for_output(refused, 15s)) << client.output();
  ASSERT_TRUE(client.wait_for_output(std::regex("conn [2-9] bootstrap server"), 15s))
      << "librdkafka did not retry:\n"
      << client.output();
  EXPECT_TRUE(client.wait_for_output(std::regex("FAIL\\|rdkafka#producer-1\\|"), 5s)) << client.output();
  const auto t = clock_type::now();
  ASSERT_TRUE(start_broker({}, port)) << "the port was taken meanwhile";
  const auto rc = client.wait(25s);
  ASSERT_EQ(rc, std::optional<int>(0)) << describe(rc, client.output());
  EXPECT_NE(client.output().find("OK: 1000 messages"), std::string::npos) << client.output();
  std::cout << "[ measure  ] round trip done " << ms_since(t) << " ms after the broker came up\n";
}

TEST_F(Plugin, ConfluentKafkaPythonAgainstTheKafka08Broker) {
  ASSERT_TRUE(start_broker({"--kafka-0.8-only"}));
  confluent_kafka(bootstrap(), "py08", 2000, {"kws.broker.api=0.8"});
}

// tests/e2e/edge_clients.py MODE (a confluent-kafka one) through the plugin with no kws.* setting but `more`:
// the plugin detects the 0.8 broker itself.
kws::test::run_result edge_client(const std::string& bootstrap, const std::string& mode,
                                  const std::string& topic, int count,
                                  const std::vector<std::string>& more = {}) {
  std::vector<std::string> argv{"/usr/bin/python3",
                                KWS_EDGE_CLIENTS_SCRIPT,
                                mode,
                                "--bootstrap",
                                bootstrap,
                                "--topic",
                                topic,
                                "--count",
                                std::to_string(count),
                                "--limit-s",
                                "25",
                                "--set",
                                std::string("plugin.library.paths=") + KWS_PLUGIN_PATH};
  for (const auto& s : more) argv.insert(argv.end(), {"--set", s});
  return kws::test::run(
      argv, {.stderr_to = spawn_options::stderr_target::captured, .environment = tool_env()}, 28s);
}

const std::vector<std::string> edge_broker{"--kafka-0.8-only", "--edge-quirks", "--default-partitions", "3"};

TEST_F(Plugin, EdgeBrokerConfluentKafkaRoundTripAndTwoInterleavedTopics) {
  ASSERT_TRUE(start_broker(edge_broker));
  // librdkafka pipelines its Produce requests; the plugin's 0.8 profile, detected, sends them one at a time.
  confluent_kafka(bootstrap(), "edge08", 2000, {});
  const auto py = edge_client(bootstrap(), "two-topics", "pair", 300, {"kws.log.level=debug"});
  EXPECT_EQ(py.exit_code, std::optional<int>(0)) << describe(py.exit_code, py.err) << py.out;
  EXPECT_NE(py.out.find("consumed 1800 of 1800"), std::string::npos) << py.out;
  EXPECT_NE(py.err.find("names a topic more than once"), std::string::npos) << py.err;
  EXPECT_EQ(broker_->output().find("overwrote"), std::string::npos) << broker_->output();
  EXPECT_EQ(broker_->output().find("twice"), std::string::npos) << broker_->output();
}

TEST_F(Plugin, EdgeBrokerConfluentKafkaSubscribeFailsWithUnsupportedVersion) {
  ASSERT_TRUE(start_broker(edge_broker));
  const auto py = edge_client(bootstrap(), "subscribe", "grouped", 0, {"kws.log.level=info"});
  EXPECT_EQ(py.exit_code, std::optional<int>(0)) << describe(py.exit_code, py.err) << py.out;
  EXPECT_NE(
      py.out.find("error 35 UNSUPPORTED_VERSION: FindCoordinator response error: Broker: API version not "
                  "supported"),
      std::string::npos)
      << py.out;
  EXPECT_NE(py.err.find("need a broker that has them"), std::string::npos) << py.err;
}

void run_example(const std::vector<std::string>& args, int count) {
  std::vector<std::string> argv{KWS_EXAMPLE_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  const auto t = clock_type::now();
  // Instrumented itself in a sanitizer build (leak checks included): no preloading.
  const auto ex = kws::test::run(argv, {.stderr_to = spawn_options::stderr_target::captured}, 28s);
  EXPECT_EQ(ex.exit_code, std::optional<int>(0)) << describe(ex.exit_code, ex.err) << "stdout:\n" << ex.out;
  EXPECT_NE(ex.out.find("OK: " + std::to_string(count) + " messages round-tripped over WebSocket"),
            std::string::npos)
      << ex.out;
  std::cout << "[ measure  ] example: " << ms_since(t) << " ms\n" << ex.out;
}

TEST_F(Plugin, CppExampleWithEnableRoundTripsInProcess) {
  ASSERT_TRUE(start_broker({}));
  run_example(
      {"--bootstrap", bootstrap(), "--topic", "cpp-topic", "--count", "5000", "--timeout-ms", "20000"}, 5000);
  expect_websocket_connections();
}

TEST_F(Plugin, CppExampleAgainstTheKafka08Broker) {
  ASSERT_TRUE(start_broker({"--kafka-0.8-only"}));
  run_example({"--bootstrap", bootstrap(), "--topic", "cpp08", "--count", "5000", "--broker-api", "0.8"},
              5000);
}

}  // namespace
