// What the gateway's process tests share: librdkafka's mock cluster as a child process, big-endian fields of
// hand-made Kafka frames, bounded blocking socket I/O, and the leaders in `kcat -L` output.
#pragma once

#include "process.hpp"

#include <gtest/gtest.h>
#include <boost/asio/ip/tcp.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <memory>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace kws::test {

/// kws-mock-cluster with `brokers` brokers (node ids 1..N) and the given topics (NAME:PARTITIONS); its
/// commands ("down 2") go through a FIFO in `dir`.
class mock_cluster {
 public:
  mock_cluster(const std::filesystem::path& dir, int brokers, const std::vector<std::string>& topics) {
    const auto fifo = dir / "mock.in";
    if (::mkfifo(fifo.c_str(), 0600) != 0) throw std::runtime_error("mkfifo " + fifo.string());
    // Held open before the child starts: posix_spawn waits for the child to exec, and the child's open of a
    // FIFO waits for a writer (Linux opens a FIFO read-write at once).
    in_ = ::open(fifo.c_str(), O_RDWR | O_CLOEXEC);
    if (in_ < 0) throw std::runtime_error("open " + fifo.string());
    std::vector<std::string> argv{KWS_MOCK_CLUSTER_PATH, "--brokers", std::to_string(brokers)};
    for (const auto& t : topics) argv.insert(argv.end(), {"--topic", t});
    proc_ = std::make_unique<child_process>(argv, spawn_options{.stdin_file = fifo});
    const auto bs = proc_->wait_for_output(std::regex("bootstrap=(\\S+)"));
    if (!bs) throw std::runtime_error("the mock cluster did not start:\n" + proc_->output());
    bootstrap_ = *bs;
  }
  ~mock_cluster() {
    if (in_ >= 0) ::close(in_);
  }
  mock_cluster(const mock_cluster&) = delete;
  mock_cluster& operator=(const mock_cluster&) = delete;

  /// Its bootstrap servers, host:port,...
  const std::string& bootstrap() const { return bootstrap_; }
  child_process& process() { return *proc_; }

 private:
  int in_ = -1;
  std::unique_ptr<child_process> proc_;
  std::string bootstrap_;
};

/// A test's end: SIGTERM to the proxy and the gateway (either may be null), each expected to exit 0 within
/// 15 s; after any failure of the test, every log.
inline void stop_and_report(child_process* proxy, child_process* gateway, mock_cluster* mock) {
  for (auto* p : {proxy, gateway}) {
    if (!p) continue;
    p->signal(SIGTERM);
    EXPECT_EQ(p->wait(std::chrono::seconds(15)), std::optional<int>(0))
        << "a server did not exit with 0 within 15 s of SIGTERM";
  }
  if (!::testing::Test::HasFailure()) return;
  for (const auto& [name, p] : {std::pair<const char*, child_process*>{"proxy", proxy},
                                {"gateway", gateway},
                                {"mock cluster", mock ? &mock->process() : nullptr}}) {
    if (p) std::cerr << "---- " << name << " log ----\n" << p->output();
  }
}

inline std::string be32(std::int32_t v) {
  std::string s;
  for (int shift = 24; shift >= 0; shift -= 8) s += static_cast<char>((v >> shift) & 0xff);
  return s;
}

/// `body` with its Kafka size header.
inline std::string sized(const std::string& body) {
  return be32(static_cast<std::int32_t>(body.size())) + body;
}

/// Blocking reads and writes on `s` give up after 10 s instead of waiting for good.
inline void bound_io(boost::asio::ip::tcp::socket& s) {
  const timeval limit{10, 0};
  ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  ::setsockopt(s.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
}

/// The node ids that lead a partition, from `kcat -L` output.
inline std::set<int> leaders(const std::string& metadata) {
  std::set<int> out;
  const std::regex leader(R"(partition \d+, leader (\d+))");
  for (std::sregex_iterator it(metadata.begin(), metadata.end(), leader), end; it != end; ++it)
    out.insert(std::stoi((*it)[1].str()));
  return out;
}

}  // namespace kws::test
