// A child process for tests: started with posix_spawn, its stdout and stderr collected, always killed and
// reaped at the end.
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <sys/types.h>

namespace kws::test {

class child_process {
 public:
  explicit child_process(std::vector<std::string> argv);
  ~child_process();
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  pid_t pid() const { return pid_; }
  /// Everything the child printed so far (stdout and stderr interleaved).
  std::string output() const;
  /// Waits until the output matches `re`; returns the first submatch (or the whole match).
  std::optional<std::string> wait_for_output(
      const std::regex& re, std::chrono::milliseconds limit = std::chrono::seconds(10)) const;
  void signal(int signo);
  /// Waits for the exit; returns the exit code, or -signal, or nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds limit = std::chrono::seconds(10));

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::optional<int> status_;
  mutable std::mutex mu_;
  std::string output_;
  std::thread reader_;
};

}  // namespace kws::test
