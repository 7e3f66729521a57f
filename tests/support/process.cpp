#include "process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <string_view>

extern char** environ;

namespace kws::test {
namespace {

using clock_type = std::chrono::steady_clock;

// How long the output may take to reach its end once the child is gone: only a grandchild that inherited a
// pipe can hold it open that long, and then the rest of its output is not waited for.
constexpr auto drain_limit = std::chrono::seconds(2);

// A pipe whose ends are close-on-exec, so that other children started meanwhile do not hold the write end
// open (the child gets its own copy through dup2, which clears the flag).
void make_pipe(int (&fds)[2]) {
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// The file actions own copies of the paths they are given (glibc), but keep them simple to reason about.
class file_actions {
 public:
  file_actions() { posix_spawn_file_actions_init(&fa_); }
  ~file_actions() { posix_spawn_file_actions_destroy(&fa_); }
  file_actions(const file_actions&) = delete;
  file_actions& operator=(const file_actions&) = delete;

  void open(int fd, const std::filesystem::path& path, int flags) {
    check(posix_spawn_file_actions_addopen(&fa_, fd, path.c_str(), flags, 0644), "addopen");
  }
  void dup2(int from, int to) { check(posix_spawn_file_actions_adddup2(&fa_, from, to), "adddup2"); }
  const posix_spawn_file_actions_t* get() const { return &fa_; }

 private:
  static void check(int rc, const char* what) {
    if (rc != 0)
      throw std::runtime_error(std::string("posix_spawn_file_actions_") + what + ": " + std::strerror(rc));
  }
  posix_spawn_file_actions_t fa_;
};

}  // namespace

child_process::child_process(std::vector<std::string> argv, spawn_options options) {
  using target = spawn_options::stderr_target;
  if (argv.empty()) throw std::invalid_argument("child_process: empty argv");
  if ((options.stderr_to == target::file) == options.stderr_file.empty())
    throw std::invalid_argument("child_process: stderr_file goes with stderr_target::file, and only with it");

  int out[2] = {-1, -1};
  int err[2] = {-1, -1};
  try {
    file_actions fa;
    fa.open(0, options.stdin_file, O_RDONLY);
    if (options.stdout_file.empty()) {
      make_pipe(out);
      fa.dup2(out[1], 1);
    } else {
      fa.open(1, options.stdout_file, O_WRONLY | O_CREAT | O_TRUNC);
    }
    switch (options.stderr_to) {
      case target::with_stdout:
        // The actions run in order: fd 1 is already the pipe or the file here.
        fa.dup2(1, 2);
        break;
      case target::captured:
        make_pipe(err);
        fa.dup2(err[1], 2);
        break;
      case target::file:
        fa.open(2, options.stderr_file, O_WRONLY | O_CREAT | O_TRUNC);
        break;
    }
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    // This process's environment, less the variables the options change, plus those they set.
    std::vector<std::string> env_strings;
    for (char** e = environ; *e; ++e) {
      const std::string_view entry(*e);
      if (!options.environment.count(std::string(entry.substr(0, entry.find('=')))))
        env_strings.emplace_back(entry);
    }
    for (const auto& [name, value] : options.environment) {
      if (value) env_strings.push_back(name + "=" + *value);
    }
    std::vector<char*> env;
    for (auto& e : env_strings) env.push_back(e.data());
    env.push_back(nullptr);
    const int rc = ::posix_spawn(&pid_, args[0], fa.get(), nullptr, args.data(), env.data());
    if (rc != 0) throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
  } catch (...) {
    for (int* fd : {&out[0], &out[1], &err[0], &err[1]}) close_fd(*fd);
    pid_ = -1;
    throw;
  }
  // Only the child writes: without these ends closed here, the reader would never see the end.
  close_fd(out[1]);
  close_fd(err[1]);
  out_fd_ = out[0];
  err_fd_ = err[0];
  if (out_fd_ < 0 && err_fd_ < 0) {
    reader_done_ = true;
  } else {
    reader_ = std::thread([this] { read_loop(); });
  }
}

child_process::~child_process() {
  if (!status_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
  }
  finish_reading();
  close_fd(out_fd_);
  close_fd(err_fd_);
}

void child_process::read_loop() {
  const int fds[2] = {out_fd_, err_fd_};
  std::string* const sinks[2] = {&output_, &error_output_};
  bool open[2] = {out_fd_ >= 0, err_fd_ >= 0};
  char buf[65536];
  while (open[0] || open[1]) {
    {
      std::lock_guard lock(mu_);
      if (stop_) break;
    }
    pollfd p[2];
    int which[2];
    nfds_t n = 0;
    for (int i = 0; i < 2; ++i) {
      if (!open[i]) continue;
      p[n] = pollfd{fds[i], POLLIN, 0};
      which[n++] = i;
    }
    // A short timeout, so that a request to stop is seen even while a grandchild keeps a pipe open.
    const int ready = ::poll(p, n, 50);
    if (ready < 0 && errno != EINTR) break;
    for (nfds_t k = 0; ready > 0 && k < n; ++k) {
      if (p[k].revents == 0) continue;
      const int i = which[k];
      const auto got = ::read(fds[i], buf, sizeof buf);
      if (got > 0) {
        std::lock_guard lock(mu_);
        sinks[i]->append(buf, static_cast<std::size_t>(got));
        changed_.notify_all();
      } else if (got == 0 || errno != EINTR) {
        open[i] = false;
      }
    }
  }
  std::lock_guard lock(mu_);
  reader_done_ = true;
  changed_.notify_all();
}

void child_process::finish_reading() {
  if (!reader_.joinable()) return;
  {
    std::unique_lock lock(mu_);
    changed_.wait_for(lock, drain_limit, [this] { return reader_done_; });
    stop_ = true;
  }
  reader_.join();
}

std::string child_process::output() const {
  std::lock_guard lock(mu_);
  return output_;
}

std::string child_process::error_output() const {
  std::lock_guard lock(mu_);
  return error_output_;
}

std::optional<std::string> child_process::wait_for_output(const std::regex& re,
                                                          std::chrono::milliseconds limit) const {
  std::smatch m;
  std::unique_lock lock(mu_);
  // Ends early once the output is complete: no later match can come.
  changed_.wait_for(lock, limit, [&] { return std::regex_search(output_, m, re) || reader_done_; });
  if (m.empty()) return std::nullopt;
  return m.size() > 1 ? m[1].str() : m[0].str();
}

bool child_process::wait_for_output(const std::function<bool(std::string_view)>& done,
                                    std::chrono::milliseconds limit) const {
  std::unique_lock lock(mu_);
  bool seen = false;
  changed_.wait_for(lock, limit, [&] {
    seen = done(output_);
    return seen || reader_done_;
  });
  return seen;
}

std::optional<std::string> child_process::read_line(std::chrono::milliseconds limit) {
  std::unique_lock lock(mu_);
  std::size_t nl = std::string::npos;
  changed_.wait_for(lock, limit, [&] {
    nl = output_.find('\n', line_start_);
    return nl != std::string::npos || reader_done_;
  });
  if (nl == std::string::npos) return std::nullopt;
  std::string line = output_.substr(line_start_, nl - line_start_);
  line_start_ = nl + 1;
  return line;
}

void child_process::signal(int signo) {
  // Never after reaping: the pid may belong to someone else by then.
  if (!status_ && pid_ > 0) ::kill(pid_, signo);
}

std::optional<int> child_process::wait(std::chrono::milliseconds limit) {
  if (status_) return status_;
  const auto until = clock_type::now() + limit;
  for (;;) {
    int st = 0;
    const auto r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
      // The child is gone: collect the rest of its output before anyone looks at it.
      finish_reading();
      return status_;
    }
    if (r < 0 && errno != EINTR) throw std::runtime_error(std::string("waitpid: ") + std::strerror(errno));
    if (clock_type::now() > until) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

run_result run(std::vector<std::string> argv, spawn_options options, std::chrono::milliseconds limit) {
  child_process child(std::move(argv), std::move(options));
  run_result r;
  r.exit_code = child.wait(limit);
  if (!r.exit_code) {
    // Reaped here rather than in the destructor, so that the output up to the kill is collected.
    child.signal(SIGKILL);
    (void)child.wait(std::chrono::seconds(10));
  }
  r.out = child.output();
  r.err = child.error_output();
  return r;
}

std::string describe_exit(const std::optional<int>& code) {
  if (!code) return "timed out (killed)";
  if (*code < 0) return "killed by signal " + std::to_string(-*code);
  return "exit " + std::to_string(*code);
}

}  // namespace kws::test
