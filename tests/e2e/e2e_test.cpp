// End to end: real Kafka clients (kcat, kafka-python, the librdkafka++ example) talk TCP to the built
// kafka-websocket-proxy, which carries every frame over WebSocket to the built kafka-websocket-devbroker.
// The broker has no TCP listener, so every byte the clients exchange crosses the proxy. Until the proxy
// rewrites broker addresses, the broker advertises the proxy's own address (as in the original demo).
// Everything runs on 127.0.0.1 with ephemeral ports; every wait is bounded.
#include "process.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
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

#if !defined(KWS_PROXY_PATH) || !defined(KWS_DEVBROKER_PATH) || !defined(KWS_KCAT_PATH) || \
    !defined(KWS_KAFKA_PYTHON_SCRIPT)
#error "tests/e2e/CMakeLists.txt defines the paths of the proxy, the dev broker, kcat and the Python script"
#endif

extern char** environ;

namespace {

using namespace std::chrono_literals;
using kws::test::child_process;
using clock_type = std::chrono::steady_clock;

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

void write_file(const std::filesystem::path& p, const std::string& content) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << content;
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

long long ms_since(clock_type::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t).count();
}

// A port of 127.0.0.1 that was free a moment ago: bound with port 0, then released.
unsigned short free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("bind 127.0.0.1:0");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

// A client tool run to completion with its stdin, stdout and stderr on files (stdout stays byte-exact,
// apart from the tool's diagnostics on stderr). Killed when it outlives its time limit or the object.
class tool {
 public:
  tool(const std::vector<std::string>& argv, const std::string& in, const std::string& out,
       const std::string& err) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, in.c_str(), O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const int rc = ::posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      pid_ = -1;
      throw std::runtime_error("cannot start " + argv[0]);
    }
  }
  ~tool() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int st = 0;
      ::waitpid(pid_, &st, 0);
    }
  }
  tool(const tool&) = delete;
  tool& operator=(const tool&) = delete;

  /// The exit code; -signal when killed; nullopt when it had to be killed at `limit`.
  std::optional<int> wait(std::chrono::milliseconds limit) {
    const auto until = clock_type::now() + limit;
    while (pid_ > 0) {
      int st = 0;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
      }
      if (clock_type::now() > until) return std::nullopt;
      std::this_thread::sleep_for(5ms);
    }
    return std::nullopt;
  }

 private:
  pid_t pid_ = -1;
};

// A text for a failed tool: its exit status and the tail of its stderr.
std::string describe(const std::optional<int>& rc, const std::filesystem::path& err) {
  std::string e = read_file(err);
  if (e.size() > 4000) e = "..." + e.substr(e.size() - 4000);
  return (rc ? "exit " + std::to_string(*rc) : std::string("timed out (killed)")) + ", stderr:\n" + e;
}

class ProxyToDevbroker : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "kws-e2e-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }

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
      std::cerr << "-------------------\n";
    }
    proxy_.reset();
    broker_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  // Starts the proxy on an ephemeral port, then the dev broker on a port picked for it, advertising the
  // proxy. Another process may take the picked port in between: then both start again, up to three times.
  void start(const std::vector<std::string>& broker_args) {
    std::string failures;
    for (int attempt = 0; attempt < 3; ++attempt) {
      const auto ws_port = std::to_string(free_port());
      proxy_ = std::make_unique<child_process>(
          std::vector<std::string>{KWS_PROXY_PATH, "--listen", "127.0.0.1", "--port", "0", "--broker",
                                   "127.0.0.1:" + ws_port, "--threads", "2", "--drain-timeout", "2s"});
      const auto port = proxy_->wait_for_output(std::regex(R"(listening on 127\.0\.0\.1:(\d+))"));
      ASSERT_TRUE(port) << "the proxy did not start:\n" << proxy_->output();
      proxy_port_ = *port;
      std::vector<std::string> argv{KWS_DEVBROKER_PATH, "--listen", "127.0.0.1:" + ws_port, "--advertise",
                                    "127.0.0.1:" + proxy_port_};
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
  std::unique_ptr<tool> start_kcat(const std::string& name, std::vector<std::string> args,
                                   const std::string& in = "/dev/null") {
    std::vector<std::string> argv{KWS_KCAT_PATH, "-b", bootstrap()};
    argv.insert(argv.end(), args.begin(), args.end());
    return std::make_unique<tool>(argv, in, path(name + ".out"), path(name + ".err"));
  }

  // Runs kcat to the end; fails the test (with kcat's stderr) unless it exits 0 within `limit`.
  void kcat(const std::string& name, std::vector<std::string> args, const std::string& in = "/dev/null",
            std::chrono::milliseconds limit = 20s) {
    const auto t = clock_type::now();
    const auto rc = start_kcat(name, std::move(args), in)->wait(limit);
    ASSERT_EQ(rc, std::optional<int>(0)) << "kcat " << name << ": " << describe(rc, path(name + ".err"));
    std::cout << "[ measure  ] kcat " << name << ": " << ms_since(t) << " ms\n";
  }

  std::string output_of(const std::string& name) const { return read_file(path(name + ".out")); }

  // Every client connection went through the proxy (the broker has no TCP listener; this checks the log).
  void expect_proxy_carried_connections() const {
    EXPECT_NE(proxy_->output().find(" open client=127.0.0.1:"), std::string::npos) << proxy_->output();
  }

  std::filesystem::path dir_;
  std::unique_ptr<child_process> proxy_, broker_;
  std::string proxy_port_;
};

const std::vector<std::string> kafka_08_flags{"-X", "api.version.request=false", "-X",
                                              "broker.version.fallback=0.8.0"};

std::vector<std::string> concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
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
  // Default settings: librdkafka asks ApiVersions and settles on the v0 APIs the broker offers.
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
  ASSERT_NO_FATAL_FAILURE(start({"--kafka-0.8-only"}));
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
  const auto t = clock_type::now();
  // The Debian python3 explicitly: the one first on PATH may not see Debian's python3-kafka.
  tool py({"/usr/bin/python3", KWS_KAFKA_PYTHON_SCRIPT, "--bootstrap", bootstrap(), "--topic", "py-topic",
           "--count", "2000", "--limit-s", "25"},
          "/dev/null", path("py.out"), path("py.err"));
  const auto rc = py.wait(28s);
  EXPECT_EQ(rc, std::optional<int>(0)) << describe(rc, path("py.err")) << "stdout:\n"
                                       << read_file(path("py.out"));
  std::cout << "[ measure  ] " << read_file(path("py.out")) << "[ measure  ] python run: " << ms_since(t)
            << " ms\n";
  expect_proxy_carried_connections();
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

// Lines "P|rest" grouped by partition P, in the order they came.
std::map<int, std::vector<std::string>> by_partition(const std::string& output) {
  std::map<int, std::vector<std::string>> out;
  for (const auto& line : lines_of(output)) {
    const auto bar = line.find('|');
    out[std::stoi(line.substr(0, bar))].push_back(line.substr(bar + 1));
  }
  return out;
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
    std::vector<std::unique_ptr<tool>> producers;
    for (int p = 0; p < 2; ++p) {
      const auto name = round + "-" + std::to_string(p);
      producers.push_back(start_kcat(
          "produce-" + name, {"-P", "-t", "duo", "-p", std::to_string(p), "-K:", "-l", path(name + ".txt")}));
    }
    for (int p = 0; p < 2; ++p) {
      const auto rc = producers[p]->wait(20s);
      EXPECT_EQ(rc, std::optional<int>(0))
          << describe(rc, path("produce-" + round + "-" + std::to_string(p) + ".err"));
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
  ASSERT_EQ(rc, std::optional<int>(0)) << describe(rc, path("consume.err"));
  std::cout << "[ measure  ] 2 rounds of 2 concurrent producers x " << per_producer
            << " messages with a live consumer: " << ms_since(t) << " ms\n";
  EXPECT_TRUE(by_partition(output_of("consume")) == want) << "the concurrent clients' messages differ";
  expect_proxy_carried_connections();
}

#ifdef KWS_LIBRDKAFKA_EXAMPLE_PATH
void run_example(const std::string& name, const std::vector<std::string>& argv,
                 const std::filesystem::path& dir, int count) {
  const auto t = clock_type::now();
  tool ex(argv, "/dev/null", dir / (name + ".out"), dir / (name + ".err"));
  const auto rc = ex.wait(28s);
  const std::string out = read_file(dir / (name + ".out"));
  EXPECT_EQ(rc, std::optional<int>(0)) << describe(rc, dir / (name + ".err")) << "stdout:\n" << out;
  EXPECT_NE(out.find("OK: " + std::to_string(count) + " messages round-tripped"), std::string::npos) << out;
  std::cout << "[ measure  ] example " << name << ": " << ms_since(t) << " ms\n" << out;
}

TEST_F(ProxyToDevbroker, LibrdkafkaCppExampleRoundTripsThroughTheProxy) {
  ASSERT_NO_FATAL_FAILURE(start({}));
  run_example("example",
              {KWS_LIBRDKAFKA_EXAMPLE_PATH, "--bootstrap", bootstrap(), "--topic", "cpp-topic", "--count",
               "5000", "--timeout-ms", "20000"},
              dir_, 5000);
  expect_proxy_carried_connections();
}

TEST_F(ProxyToDevbroker, LibrdkafkaCppExampleAgainstTheKafka08Broker) {
  ASSERT_NO_FATAL_FAILURE(start({"--kafka-0.8-only"}));
  run_example("example08",
              concat({KWS_LIBRDKAFKA_EXAMPLE_PATH, "--bootstrap", bootstrap(), "--topic", "cpp-topic",
                      "--count", "5000", "--timeout-ms", "20000"},
                     kafka_08_flags),
              dir_, 5000);
  expect_proxy_carried_connections();
}
#endif

}  // namespace
