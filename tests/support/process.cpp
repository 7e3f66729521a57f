#include "process.hpp"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <csignal>
#include <fcntl.h>
#include <stdexcept>

extern char** environ;

namespace kws::test {

child_process::child_process(std::vector<std::string> argv) {
  int fds[2];
  // Close-on-exec, so that other children started meanwhile do not hold the write end open.
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  const int rc = ::posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    throw std::runtime_error("cannot start " + argv[0]);
  }
  out_fd_ = fds[0];
  reader_ = std::thread([this] {
    char buf[4096];
    for (;;) {
      const auto n = ::read(out_fd_, buf, sizeof buf);
      if (n <= 0) break;
      std::lock_guard lock(mu_);
      output_.append(buf, static_cast<std::size_t>(n));
    }
  });
}

child_process::~child_process() {
  if (!status_) {
    ::kill(pid_, SIGKILL);
    int st = 0;
    ::waitpid(pid_, &st, 0);
  }
  if (reader_.joinable()) reader_.join();
  ::close(out_fd_);
}

std::string child_process::output() const {
  std::lock_guard lock(mu_);
  return output_;
}

std::optional<std::string> child_process::wait_for_output(const std::regex& re,
                                                          std::chrono::milliseconds limit) const {
  const auto until = std::chrono::steady_clock::now() + limit;
  for (;;) {
    {
      std::lock_guard lock(mu_);
      std::smatch m;
      if (std::regex_search(output_, m, re)) return m.size() > 1 ? m[1].str() : m[0].str();
    }
    if (std::chrono::steady_clock::now() > until) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void child_process::signal(int signo) {
  ::kill(pid_, signo);
}

std::optional<int> child_process::wait(std::chrono::milliseconds limit) {
  if (status_) return status_;
  const auto until = std::chrono::steady_clock::now() + limit;
  for (;;) {
    int st = 0;
    const auto r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
      // The child is gone: collect the rest of its output before anyone looks at it.
      if (reader_.joinable()) reader_.join();
      return status_;
    }
    if (std::chrono::steady_clock::now() > until) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace kws::test
