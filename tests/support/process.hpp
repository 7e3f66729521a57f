// Child processes for tests: started with posix_spawn, stdin from a file, stdout and stderr captured or
// written to files, every wait bounded, and always killed and reaped at the end.
#pragma once

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <sys/types.h>

namespace kws::test {

/// Where a child's standard streams go, and its environment. The defaults suit a server whose log a test
/// reads: stdin from /dev/null, stdout and stderr captured together, interleaved as written.
struct spawn_options {
  /// stdin is read from this file.
  std::filesystem::path stdin_file = "/dev/null";
  /// Empty: stdout is captured (output(), wait_for_output(), read_line()); otherwise it is written to this
  /// file, created or truncated, byte for byte.
  std::filesystem::path stdout_file{};
  enum class stderr_target {
    with_stdout,  ///< wherever stdout goes, interleaved with it (2>&1)
    captured,     ///< captured apart from stdout (error_output())
    file,         ///< written to `stderr_file`, created or truncated
  };
  stderr_target stderr_to = stderr_target::with_stdout;
  std::filesystem::path stderr_file{};  ///< only with stderr_target::file
  /// Changes to the child's environment, on top of this process's own: a value sets the variable, nullopt
  /// removes it.
  std::map<std::string, std::optional<std::string>> environment{};
};

class child_process {
 public:
  /// Starts `argv[0]` (a path; PATH is not searched). Throws std::runtime_error when it cannot start and
  /// std::invalid_argument on inconsistent options.
  explicit child_process(std::vector<std::string> argv, spawn_options options = {});
  /// Kills (SIGKILL) and reaps a child still running, then stops the reader.
  ~child_process();
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  pid_t pid() const { return pid_; }
  /// Captured stdout so far (with stderr interleaved under stderr_target::with_stdout).
  std::string output() const;
  /// Captured stderr so far (stderr_target::captured only).
  std::string error_output() const;
  /// Waits until the captured stdout matches `re`; returns the first submatch (or the whole match).
  std::optional<std::string> wait_for_output(
      const std::regex& re, std::chrono::milliseconds limit = std::chrono::seconds(10)) const;
  /// Waits until `done(stdout so far)` is true, called under the output's lock each time more arrives; false
  /// after `limit` or once the output is complete without it.
  bool wait_for_output(const std::function<bool(std::string_view)>& done,
                       std::chrono::milliseconds limit = std::chrono::seconds(10)) const;
  /// The next whole line of captured stdout (without its '\n'), each line once; nullopt after `limit` or
  /// when stdout ended without another whole line.
  std::optional<std::string> read_line(std::chrono::milliseconds limit = std::chrono::seconds(10));
  void signal(int signo);
  /// Waits for the exit; returns the exit code, or -signal, or nullopt on timeout (the child keeps
  /// running). Once it returns a status, everything the child wrote to captured streams is collected.
  std::optional<int> wait(std::chrono::milliseconds limit = std::chrono::seconds(10));

 private:
  void read_loop();
  void finish_reading();

  pid_t pid_ = -1;
  std::optional<int> status_;
  int out_fd_ = -1;  ///< read end of the stdout pipe, or -1
  int err_fd_ = -1;  ///< read end of the stderr pipe, or -1
  mutable std::mutex mu_;
  mutable std::condition_variable changed_;
  std::string output_;
  std::string error_output_;
  std::size_t line_start_ = 0;  ///< read_line() has returned everything before this
  bool reader_done_ = false;    ///< the reader has seen the end of every pipe, or gave up
  bool stop_ = false;           ///< the reader must give up (a grandchild kept a pipe open)
  std::thread reader_;
};

/// What run() saw.
struct run_result {
  std::optional<int> exit_code;  ///< exit code, or -signal; nullopt when it timed out and was killed
  std::string out;               ///< captured stdout (with stderr unless told otherwise)
  std::string err;               ///< captured stderr (stderr_target::captured)
};

/// Runs a short-lived tool to its end within `limit` (killing it then), with its output collected. For
/// separate stdout and stderr, pass `{.stderr_to = spawn_options::stderr_target::captured}`.
run_result run(std::vector<std::string> argv, spawn_options options, std::chrono::milliseconds limit);

/// "exit N" / "killed by signal N" / "timed out (killed)", for failure messages.
std::string describe_exit(const std::optional<int>& code);

}  // namespace kws::test
