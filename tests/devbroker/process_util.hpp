// Child processes for the dev broker's process-level tests: spawn with redirected stdio, wait with a
// deadline, and never leave a child behind.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace kws::devbroker::test {

struct stdio_files {
  std::string in = "/dev/null";
  std::string out = "/dev/null";  ///< ignored when the stdout pipe is requested
  std::string err = "/dev/null";
};

class child_process {
 public:
  /// Starts `argv[0]` with `argv`. With `pipe_stdout`, stdout is readable through read_line().
  child_process(const std::vector<std::string>& argv, const stdio_files& io, bool pipe_stdout = false) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, io.in.c_str(), O_RDONLY, 0);
    int fds[2] = {-1, -1};
    if (pipe_stdout) {
      if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
      posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    } else {
      posix_spawn_file_actions_addopen(&fa, 1, io.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    }
    posix_spawn_file_actions_addopen(&fa, 2, io.err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const int rc = ::posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (pipe_stdout) {
      ::close(fds[1]);
      out_fd_ = fds[0];
    }
    if (rc != 0) {
      pid_ = -1;
      throw std::runtime_error("posix_spawn " + argv[0] + ": " + std::strerror(rc));
    }
  }

  ~child_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    if (out_fd_ >= 0) ::close(out_fd_);
  }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  pid_t pid() const { return pid_; }

  /// One line from the stdout pipe, or nullopt after `timeout` or at end of file.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (auto nl = pending_.find('\n'); nl != std::string::npos) {
        std::string line = pending_.substr(0, nl);
        pending_.erase(0, nl + 1);
        return line;
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{out_fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::read(out_fd_, buf, sizeof buf);
      if (n <= 0) return std::nullopt;
      pending_.append(buf, static_cast<std::size_t>(n));
    }
  }

  /// Exit status (as from waitpid) once the child has ended, or nullopt after `timeout`.
  std::optional<int> wait_for(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (pid_ > 0) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return status;
      }
      if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return std::nullopt;
  }

  void signal(int signo) {
    if (pid_ > 0) ::kill(pid_, signo);
  }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string pending_;
};

/// Runs a tool to completion within `timeout`; returns its exit code, or -1 when it timed out (then killed)
/// or died from a signal.
inline int run_tool(const std::vector<std::string>& argv, const stdio_files& io,
                    std::chrono::milliseconds timeout) {
  child_process c(argv, io);
  const auto status = c.wait_for(timeout);
  if (!status || !WIFEXITED(*status)) return -1;
  return WEXITSTATUS(*status);
}

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

inline void write_file(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << content;
}

}  // namespace kws::devbroker::test
