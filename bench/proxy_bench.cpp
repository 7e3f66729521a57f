// End-to-end benchmark of kafka-websocket-proxy against a direct TCP connection measured in the same run.
//
//   DIRECT   client --TCP--> in-process Kafka-frame echo server (Asio, one thread)
//   PROXIED  client --TCP--> kafka-websocket-proxy (child process) --ws--> in-process WebSocket echo server
//                                                                          (Beast, one thread)
//
// The machine this runs on is shared and noisy, so every figure is reported next to the direct figure of the
// same run (a ratio or a difference), and latency/throughput are repeated with alternating order and the
// median taken. Every echoed frame is compared byte for byte with what was sent; mismatches are counted and
// make the tool exit 1, so a broken relay never shows up as a fast one. All traffic is on 127.0.0.1, every
// loop is bounded in count and in time, and the tool stops by itself.
#include <CLI/CLI.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <kws/accept.hpp>

#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifndef KWS_PROXY_PATH
#define KWS_PROXY_PATH "kafka-websocket-proxy"
#endif

extern char** environ;

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
using asio::awaitable;
using asio::use_awaitable;
using namespace asio::experimental::awaitable_operators;

constexpr std::size_t header_bytes = 4;

// ---- options ----------------------------------------------------------------------------------------------

struct options {
  std::string proxy = KWS_PROXY_PATH;
  unsigned proxy_threads = 1;
  std::string proxy_log_level = "warning";
  int reps = 3;
  std::size_t latency_samples = 20000;
  std::size_t latency_warmup = 2000;
  std::size_t latency_frame = 1024;
  std::size_t throughput_frame = 100 * 1024;
  std::size_t window = 8;
  double duration_s = 3.0;
  std::size_t idle_connections = 1000;
  std::size_t concurrency = 10000;
  std::size_t connect_burst = 0;  // 0: every connection starts at once
  bool clamp_concurrency = true;  // lower the concurrency to what RLIMIT_NOFILE allows
  std::size_t small_frame = 64;
  double phase_timeout_s = 60.0;
  std::size_t max_frame = 100u * 1024u * 1024u;
  int latency_cpu = 0;        // -1: no pinned latency runs
  bool latency_split = true;  // also: client on one CPU, echo servers and proxy on another
  std::string proxy_prefix;   // e.g. "valgrind --tool=massif": profiling only, figures then mean little
  std::vector<std::string> phases{"latency", "throughput", "memory", "concurrency"};

  bool wants(const std::string& p) const {
    return std::find(phases.begin(), phases.end(), p) != phases.end();
  }
  clock_type::duration phase_timeout() const {
    return std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(phase_timeout_s));
  }
};

// ---- frames -----------------------------------------------------------------------------------------------

void put_be32(unsigned char* p, std::uint32_t v) {
  p[0] = static_cast<unsigned char>(v >> 24);
  p[1] = static_cast<unsigned char>(v >> 16);
  p[2] = static_cast<unsigned char>(v >> 8);
  p[3] = static_cast<unsigned char>(v);
}

std::uint32_t get_be32(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

// A Kafka-shaped request of `frame_bytes` on the wire (size prefix included): a v1 request header for Fetch
// v4 (a request that expects a response, one the proxy never rewrites), then pseudo-random bytes.
std::vector<unsigned char> make_frame(std::size_t frame_bytes, std::uint32_t seed) {
  std::vector<unsigned char> f(std::max<std::size_t>(frame_bytes, 16));
  std::mt19937 rng(seed);
  for (auto& b : f) b = static_cast<unsigned char>(rng());
  put_be32(f.data(), static_cast<std::uint32_t>(f.size() - header_bytes));
  f[4] = 0;  // api_key = 1 (Fetch)
  f[5] = 1;
  f[6] = 0;  // api_version = 4
  f[7] = 4;
  f[12] = 0xff;  // client_id = null
  f[13] = 0xff;
  return f;
}

// The correlation id carries the sequence number, so a reordered or replayed echo is caught too.
void set_seq(std::vector<unsigned char>& f, std::uint32_t seq) {
  put_be32(f.data() + 8, seq);
}

// ---- small helpers ----------------------------------------------------------------------------------------

struct error_counts {
  std::map<std::string, std::size_t> by_cause;
  void add(const std::string& cause) { ++by_cause[cause]; }
  std::size_t total() const {
    std::size_t n = 0;
    for (const auto& [k, v] : by_cause) n += v;
    return n;
  }
  std::string str() const {
    std::string s;
    for (const auto& [k, v] : by_cause) s += (s.empty() ? "" : "; ") + k + " x" + std::to_string(v);
    return s;
  }
};

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
}

double median(std::vector<double> v) {
  return percentile(std::move(v), 0.5);
}

double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}

std::string read_first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "?";
}

// Resident set of a process in KiB, from /proc/<pid>/status.
long vm_rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

// utime + stime of a process in seconds, from /proc/<pid>/stat.
double cpu_seconds(pid_t pid) {
  const auto s = read_first_line("/proc/" + std::to_string(pid) + "/stat");
  const auto close_paren = s.rfind(')');
  if (close_paren == std::string::npos) return 0;
  std::istringstream in(s.substr(close_paren + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(field);
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// Raises RLIMIT_NOFILE to at least `want` if allowed (the hard limit too, when privileged). Returns the
// resulting soft limit.
rlim_t raise_nofile(rlim_t want) {
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur >= want) return rl.rlim_cur;
  if (rl.rlim_max < want) {
    rlimit wider{want, want};
    if (::setrlimit(RLIMIT_NOFILE, &wider) == 0) return want;
  }
  rl.rlim_cur = std::min(want, rl.rlim_max);
  ::setrlimit(RLIMIT_NOFILE, &rl);
  ::getrlimit(RLIMIT_NOFILE, &rl);
  return rl.rlim_cur;
}

// Sets the CPU affinity of every thread of a process (the bench itself or the proxy).
void set_affinity(pid_t pid, const cpu_set_t& set) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    const auto tid = static_cast<pid_t>(std::stol(e.path().filename().string()));
    ::sched_setaffinity(tid, sizeof set, &set);
  }
}

cpu_set_t one_cpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return set;
}

// ---- echo servers (in process, one thread each) -----------------------------------------------------------

struct server_stats {
  std::atomic<std::uint64_t> accepted{0};
  std::atomic<std::int64_t> active{0};
  std::atomic<std::uint64_t> accept_errors{0};
  std::atomic<std::uint64_t> bad_input{0};
};

// Direct: reads the Kafka byte stream, writes every complete frame back (all complete ones in one write).
awaitable<void> tcp_echo_session(tcp::socket s, server_stats& st, std::size_t max_frame) {
  ++st.active;
  std::vector<unsigned char> buf(64 * 1024);
  std::size_t have = 0;
  for (;;) {
    error_code ec;
    const auto n = co_await s.async_read_some(asio::buffer(buf.data() + have, buf.size() - have),
                                              asio::redirect_error(use_awaitable, ec));
    if (ec) break;
    have += n;
    std::size_t whole = 0;
    bool bad = false;
    while (have - whole >= header_bytes) {
      const std::size_t len = header_bytes + get_be32(buf.data() + whole);
      if (len - header_bytes > max_frame) {
        bad = true;
        break;
      }
      if (have - whole < len) {
        if (len > buf.size()) buf.resize(len);
        break;
      }
      whole += len;
    }
    if (bad) {
      ++st.bad_input;
      break;
    }
    if (whole == 0) continue;
    co_await asio::async_write(s, asio::buffer(buf.data(), whole), asio::redirect_error(use_awaitable, ec));
    if (ec) break;
    std::memmove(buf.data(), buf.data() + whole, have - whole);
    have -= whole;
  }
  --st.active;
}

// WebSocket: the role of a broker that speaks Kafka over WebSocket; every frame is echoed back. The library's
// own server side accepts it, with the same frame checks as the proxy's side.
awaitable<void> ws_echo_session(tcp::socket s, server_stats& st, std::size_t max_frame) {
  ++st.active;
  kws::accept_config cfg;
  cfg.max_frame_bytes = max_frame;
  const auto upgrade_all = [](const kws::http_request_info&, std::function<void(kws::accept_decision)> done) {
    done(kws::accept_decision::upgrade());
  };
  auto [ec, ws, request] =
      co_await kws::async_accept(std::move(s), cfg, upgrade_all, asio::as_tuple(use_awaitable));
  beast::flat_buffer b;
  while (!ec) {
    co_await ws.async_read_frame(b, asio::redirect_error(use_awaitable, ec));
    if (ec) {
      if (ec.category() == kws::error_category() && ec != kws::errc::truncated_frame) ++st.bad_input;
      break;
    }
    co_await ws.async_write_frame(b.data(), asio::redirect_error(use_awaitable, ec));
    b.consume(b.size());
  }
  --st.active;
}

template <class Session>
awaitable<void> accept_loop(tcp::acceptor& acc, server_stats& st, std::size_t max_frame, Session session) {
  asio::steady_timer backoff(acc.get_executor());
  while (acc.is_open()) {
    error_code ec;
    tcp::socket s = co_await acc.async_accept(asio::redirect_error(use_awaitable, ec));
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) {
      // Out of descriptors or similar: count it, back off briefly, keep accepting.
      ++st.accept_errors;
      backoff.expires_after(std::chrono::milliseconds(10));
      co_await backoff.async_wait(asio::redirect_error(use_awaitable, ec));
      continue;
    }
    s.set_option(tcp::no_delay(true), ec);
    ++st.accepted;
    asio::co_spawn(acc.get_executor(), session(std::move(s), st, max_frame), asio::detached);
  }
}

class echo_server {
 public:
  template <class Session>
  echo_server(std::size_t max_frame, Session session) : acceptor_(ioc_), guard_(ioc_.get_executor()) {
    const tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), 0);
    acceptor_.open(ep.protocol());
    acceptor_.set_option(tcp::acceptor::reuse_address(true));
    acceptor_.bind(ep);
    acceptor_.listen(asio::socket_base::max_listen_connections);
    asio::co_spawn(ioc_, accept_loop(acceptor_, stats_, max_frame, session), asio::detached);
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~echo_server() {
    ioc_.stop();
    thread_.join();
  }
  tcp::endpoint endpoint() const { return acceptor_.local_endpoint(); }
  server_stats& stats() { return stats_; }

 private:
  asio::io_context ioc_{1};
  tcp::acceptor acceptor_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  server_stats stats_;
  std::thread thread_;
};

// ---- the proxy as a child process -------------------------------------------------------------------------

// Listening TCP ports (127.0.0.1) owned by `pid`: /proc/net/tcp LISTEN rows whose inode is one of its fds.
std::vector<unsigned short> listening_ports(pid_t pid) {
  std::vector<std::string> inodes;
  std::error_code fec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", fec)) {
    std::error_code lec;
    const auto target = std::filesystem::read_symlink(e.path(), lec).string();
    if (!lec && target.rfind("socket:[", 0) == 0) inodes.push_back(target.substr(8, target.size() - 9));
  }
  std::vector<unsigned short> ports;
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::istringstream row(line);
    std::string sl, local, remote, state, queues, tr, retr, uid, timeout, inode;
    row >> sl >> local >> remote >> state >> queues >> tr >> retr >> uid >> timeout >> inode;
    if (state != "0A" || local.rfind("0100007F:", 0) != 0) continue;
    if (std::find(inodes.begin(), inodes.end(), inode) == inodes.end()) continue;
    ports.push_back(static_cast<unsigned short>(std::stoul(local.substr(9), nullptr, 16)));
  }
  return ports;
}

class proxy_process {
 public:
  proxy_process(const options& opt, const tcp::endpoint& broker) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    std::vector<std::string> args;
    std::istringstream prefix(opt.proxy_prefix);
    for (std::string word; prefix >> word;) args.push_back(word);
    const std::vector<std::string> proxy_args{opt.proxy,
                                              "--listen",
                                              "127.0.0.1",
                                              "--port",
                                              "0",
                                              "--broker",
                                              "127.0.0.1:" + std::to_string(broker.port()),
                                              "--threads",
                                              std::to_string(opt.proxy_threads),
                                              "--log-level",
                                              opt.proxy_log_level,
                                              "--drain-timeout",
                                              "1s"};
    args.insert(args.end(), proxy_args.begin(), proxy_args.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    // Asio's sockets are not close-on-exec: keep the echo servers' descriptors out of the proxy.
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    const int rc = ::posix_spawnp(&pid_, args[0].c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(fds[1]);
    if (rc != 0) {
      ::close(fds[0]);
      throw std::runtime_error("posix_spawn " + args[0] + ": " + std::strerror(rc));
    }
    stderr_fd_ = fds[0];
    reader_ = std::thread([this] { read_stderr(); });
    std::cerr << "proxy pid " << pid_ << " started:";
    for (const auto& a : args) std::cerr << ' ' << a;
    std::cerr << std::endl;
    // Ready once it listens; bounded by 30 s (a profiler prefix starts slowly) and by the child exiting.
    const auto until = clock_type::now() + std::chrono::seconds(30);
    while (clock_type::now() < until) {
      if (const auto ports = listening_ports(pid_); !ports.empty()) {
        endpoint_ = tcp::endpoint(asio::ip::make_address("127.0.0.1"), ports.front());
        return;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("proxy exited at start: " + log_excerpt());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    throw std::runtime_error("proxy did not listen within 30 s: " + log_excerpt());
  }

  ~proxy_process() { stop(); }

  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      bool gone = false;
      for (int i = 0; i < 1000 && !gone; ++i) {  // up to 10 s
        gone = ::waitpid(pid_, &status, WNOHANG) == pid_;
        if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      if (!gone) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
      }
      pid_ = -1;
    }
    if (reader_.joinable()) reader_.join();
    if (stderr_fd_ >= 0) ::close(stderr_fd_);
    stderr_fd_ = -1;
  }

  pid_t pid() const { return pid_; }
  tcp::endpoint endpoint() const { return endpoint_; }
  std::size_t problem_lines() const { return problems_.load(); }
  std::string log_excerpt() const {
    std::lock_guard lock(mu_);
    std::string s;
    for (const auto& l : kept_) s += "\n    " + l;
    return s;
  }

 private:
  void read_stderr() {
    std::string pending;
    char buf[4096];
    for (;;) {
      const auto n = ::read(stderr_fd_, buf, sizeof buf);
      if (n <= 0) break;  // EOF once the proxy has exited
      pending.append(buf, static_cast<std::size_t>(n));
      for (auto nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n')) {
        auto line = pending.substr(0, nl);
        pending.erase(0, nl + 1);
        const bool problem = line.find(" warn") != std::string::npos ||
                             line.find(" error") != std::string::npos ||
                             line.find(" critical") != std::string::npos;
        if (problem) ++problems_;
        std::lock_guard lock(mu_);
        if (kept_.size() < 8) kept_.push_back(std::move(line));
      }
    }
  }

  pid_t pid_ = -1;
  int stderr_fd_ = -1;
  tcp::endpoint endpoint_;
  std::thread reader_;
  mutable std::mutex mu_;
  std::vector<std::string> kept_;
  std::atomic<std::size_t> problems_{0};
};

// ---- client side: every phase runs on its own io_context in the main thread, bounded by run_for -----------

// Runs one client coroutine to completion or until `limit`; returns false on timeout.
template <class MakeCoro>
bool run_bounded(MakeCoro make, clock_type::duration limit, error_counts& errors) {
  asio::io_context ioc{1};
  bool done = false;
  asio::co_spawn(ioc, make(ioc.get_executor()), [&](std::exception_ptr e) {
    done = true;
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      errors.add(std::string("exception: ") + ex.what());
    }
  });
  ioc.run_for(limit);
  if (!done) errors.add("phase timed out");
  return done;
}

struct latency_result {
  std::vector<double> samples_us;
  std::size_t mismatches = 0;
  error_counts errors;
  double p50() const { return percentile(samples_us, 0.50); }
  double p90() const { return percentile(samples_us, 0.90); }
  double p99() const { return percentile(samples_us, 0.99); }
};

// Request/response round trips of one frame at a time on one connection.
awaitable<void> latency_client(tcp::endpoint ep, const options& opt, latency_result& r,
                               clock_type::time_point deadline) {
  auto ex = co_await asio::this_coro::executor;
  tcp::socket s(ex);
  error_code ec;
  co_await s.async_connect(ep, asio::redirect_error(use_awaitable, ec));
  if (ec) co_return r.errors.add("connect: " + ec.message());
  s.set_option(tcp::no_delay(true));
  auto out = make_frame(opt.latency_frame, 1);
  std::vector<unsigned char> in(out.size());
  r.samples_us.reserve(opt.latency_samples);
  const std::size_t total = opt.latency_warmup + opt.latency_samples;
  for (std::size_t i = 0; i < total; ++i) {
    if (clock_type::now() > deadline) co_return r.errors.add("latency loop hit its time bound");
    set_seq(out, static_cast<std::uint32_t>(i));
    const auto t0 = clock_type::now();
    co_await asio::async_write(s, asio::buffer(out), asio::redirect_error(use_awaitable, ec));
    if (ec) co_return r.errors.add("write: " + ec.message());
    co_await asio::async_read(s, asio::buffer(in), asio::redirect_error(use_awaitable, ec));
    if (ec) co_return r.errors.add("read: " + ec.message());
    const auto t1 = clock_type::now();
    if (in != out) ++r.mismatches;
    if (i >= opt.latency_warmup)
      r.samples_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
}

struct throughput_result {
  std::size_t frames = 0;
  std::size_t bytes_up = 0;
  std::size_t bytes_down = 0;
  double seconds = 0;
  std::size_t mismatches = 0;
  double proxy_cpu_s = 0;
  error_counts errors;
  double mb_up() const { return seconds > 0 ? static_cast<double>(bytes_up) / seconds / 1e6 : 0; }
  double mb_down() const { return seconds > 0 ? static_cast<double>(bytes_down) / seconds / 1e6 : 0; }
};

// Streams frames with at most `window` in flight for `duration`, reading the echoes concurrently.
awaitable<void> throughput_client(tcp::endpoint ep, const options& opt, throughput_result& r) {
  auto ex = co_await asio::this_coro::executor;
  tcp::socket s(ex);
  error_code ec;
  co_await s.async_connect(ep, asio::redirect_error(use_awaitable, ec));
  if (ec) co_return r.errors.add("connect: " + ec.message());
  s.set_option(tcp::no_delay(true));

  // More distinct frames than can be in flight: frame i lives in slot i % slots until its echo is checked.
  const std::size_t slots = 2 * opt.window + 1;
  std::vector<std::vector<unsigned char>> frames;
  for (std::size_t i = 0; i < slots; ++i) frames.push_back(make_frame(opt.throughput_frame, 100 + i));
  const std::size_t frame_bytes = frames[0].size();
  std::vector<unsigned char> in(frame_bytes);

  std::size_t sent = 0;
  std::size_t received = 0;
  bool stop = false;
  asio::steady_timer wake(ex, clock_type::time_point::max());
  const auto start = clock_type::now();
  const auto end =
      start + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(opt.duration_s));
  auto last = start;

  auto writer = [&]() -> awaitable<void> {
    error_code wec;
    while (!stop) {
      while (sent - received >= opt.window && !stop) {
        wake.expires_at(clock_type::time_point::max());
        co_await wake.async_wait(asio::redirect_error(use_awaitable, wec));
      }
      if (stop) break;
      auto& f = frames[sent % slots];
      set_seq(f, static_cast<std::uint32_t>(sent));
      ++sent;  // in flight from here on
      co_await asio::async_write(s, asio::buffer(f), asio::redirect_error(use_awaitable, wec));
      if (wec) {
        r.errors.add("write: " + wec.message());
        stop = true;
        s.close(wec);
        break;
      }
    }
  };
  auto reader = [&]() -> awaitable<void> {
    error_code rec;
    while (!(stop && received == sent)) {
      co_await asio::async_read(s, asio::buffer(in), asio::redirect_error(use_awaitable, rec));
      if (rec) {
        if (!stop) r.errors.add("read: " + rec.message());
        stop = true;
        break;
      }
      if (in != frames[received % slots]) ++r.mismatches;
      ++received;
      last = clock_type::now();
      if (last >= end) stop = true;
      wake.cancel();
    }
  };
  co_await (writer() && reader());
  r.frames = received;
  r.bytes_up = received * frame_bytes;
  r.bytes_down = received * frame_bytes;
  r.seconds = std::chrono::duration<double>(last - start).count();
}

struct many_result {
  std::size_t ok = 0;
  std::size_t mismatches = 0;
  error_counts errors;
  std::vector<double> conn_ms;  // connect + one round trip, per connection
  double wall_s = 0;            // from the first connect to the last successful round trip
};

// Opens `count` connections (at most `burst` connecting at a time, 0: all at once), each does one small
// round trip, and all stay open in `keep`.
awaitable<void> open_many(tcp::endpoint ep, std::size_t count, std::size_t burst, std::size_t frame_bytes,
                          std::vector<tcp::socket>& keep, many_result& r, clock_type::time_point deadline) {
  auto ex = co_await asio::this_coro::executor;
  keep.reserve(keep.size() + count);
  const std::size_t workers = std::min(count, burst == 0 ? count : burst);
  std::size_t next = 0;
  std::size_t running = workers;
  asio::steady_timer all_done(ex, clock_type::time_point::max());
  const auto start = clock_type::now();

  auto worker = [&]() -> awaitable<void> {
    auto out = make_frame(frame_bytes, 7);
    std::vector<unsigned char> in(out.size());
    while (next < count && clock_type::now() < deadline) {
      const auto i = next++;
      const auto t0 = clock_type::now();
      tcp::socket s(ex);
      error_code ec;
      co_await s.async_connect(ep, asio::redirect_error(use_awaitable, ec));
      if (ec) {
        r.errors.add("connect: " + ec.message());
        continue;
      }
      s.set_option(tcp::no_delay(true), ec);
      set_seq(out, static_cast<std::uint32_t>(i));
      co_await asio::async_write(s, asio::buffer(out), asio::redirect_error(use_awaitable, ec));
      if (ec) {
        r.errors.add("write: " + ec.message());
        continue;
      }
      co_await asio::async_read(s, asio::buffer(in), asio::redirect_error(use_awaitable, ec));
      if (ec) {
        r.errors.add("read: " + ec.message());
        continue;
      }
      if (in != out) {
        ++r.mismatches;
        continue;
      }
      ++r.ok;
      r.conn_ms.push_back(std::chrono::duration<double, std::milli>(clock_type::now() - t0).count());
      r.wall_s = seconds_since(start);  // until the last success, also when the phase times out
      keep.push_back(std::move(s));
    }
  };
  for (std::size_t w = 0; w < workers; ++w) {
    asio::co_spawn(ex, worker(), [&](std::exception_ptr e) {
      if (e) r.errors.add("exception in connection worker");
      if (--running == 0) all_done.cancel();
    });
  }
  error_code ec;
  if (workers > 0) co_await all_done.async_wait(asio::redirect_error(use_awaitable, ec));
}

// Waits (bounded) until a server has no sessions left, so phases do not overlap.
void wait_idle(server_stats& st, std::chrono::seconds bound) {
  const auto until = clock_type::now() + bound;
  while (st.active.load() > 0 && clock_type::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

// ---- report -----------------------------------------------------------------------------------------------

struct totals {
  std::size_t mismatches = 0;
  std::size_t errors = 0;
  std::vector<std::string> notes;
};

void note_errors(totals& t, const std::string& what, std::size_t mismatches, const error_counts& e) {
  t.mismatches += mismatches;
  t.errors += e.total();
  if (mismatches)
    t.notes.push_back(what + ": " + std::to_string(mismatches) + " echoed frame(s) differ from sent");
  if (e.total()) t.notes.push_back(what + ": " + e.str());
}

std::string fmt(double v, int prec = 1) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}

std::string delta_us(double d) {
  return (d >= 0 ? "+" : "") + fmt(d) + " us";
}

void row(const std::string& name, const std::string& direct, const std::string& proxied,
         const std::string& cmp, const std::string& target = "") {
  std::printf("  %-30s %12s %12s %16s  %s\n", name.c_str(), direct.c_str(), proxied.c_str(), cmp.c_str(),
              target.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  options opt;
  CLI::App app{
      "kws_proxy_bench: kafka-websocket-proxy against a direct TCP connection, measured in the same run "
      "(latency, throughput, idle memory per connection, concurrent connections). Loopback only."};
  app.add_option("--proxy", opt.proxy, "proxy binary")->capture_default_str();
  app.add_option("--proxy-threads", opt.proxy_threads, "proxy --threads")->capture_default_str();
  app.add_option("--proxy-prefix", opt.proxy_prefix,
                 "command words put before the proxy (profiling only, e.g. 'valgrind --tool=massif')");
  app.add_option("--proxy-log-level", opt.proxy_log_level, "proxy --log-level")->capture_default_str();
  app.add_option("--reps", opt.reps, "repetitions of latency and throughput (median reported)")
      ->check(CLI::Range(1, 20))
      ->capture_default_str();
  app.add_option("--latency-samples", opt.latency_samples, "round trips measured per run")
      ->check(CLI::Range(1, 10'000'000))
      ->capture_default_str();
  app.add_option("--latency-warmup", opt.latency_warmup, "round trips before measuring")
      ->capture_default_str();
  app.add_option("--latency-frame", opt.latency_frame,
                 "latency frame bytes on the wire (size prefix included)")
      ->check(CLI::Range(16, 1 << 24))
      ->capture_default_str();
  app.add_option("--latency-cpu", opt.latency_cpu,
                 "CPU to pin every bench and proxy thread to for the pinned latency runs (-1: none)")
      ->capture_default_str();
  app.add_option("--latency-split", opt.latency_split,
                 "also measure latency with the client on --latency-cpu, servers and proxy on another CPU")
      ->capture_default_str();
  app.add_option("--throughput-frame", opt.throughput_frame, "throughput frame bytes on the wire")
      ->check(CLI::Range(16, 64 << 20))
      ->capture_default_str();
  app.add_option("--window", opt.window, "throughput frames in flight")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--duration", opt.duration_s, "seconds of streaming per throughput run")
      ->check(CLI::Range(0.1, 120.0))
      ->capture_default_str();
  app.add_option("--idle-connections", opt.idle_connections, "idle proxied connections for the memory figure")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--concurrency", opt.concurrency, "concurrent connections, one round trip each")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--connect-burst", opt.connect_burst, "connections being opened at a time (0: all at once)")
      ->capture_default_str();
  app.add_option("--clamp-concurrency", opt.clamp_concurrency,
                 "lower --concurrency to what RLIMIT_NOFILE allows (false: try anyway and count failures)")
      ->capture_default_str();
  app.add_option("--phase-timeout", opt.phase_timeout_s, "bound on each phase, seconds")
      ->check(CLI::Range(1.0, 600.0))
      ->capture_default_str();
  app.add_option("--phases", opt.phases, "latency, throughput, memory, concurrency")
      ->check(CLI::IsMember({"latency", "throughput", "memory", "concurrency"}))
      ->delimiter(',');
  CLI11_PARSE(app, argc, argv);

  ::signal(SIGPIPE, SIG_IGN);
  if (::access(opt.proxy.c_str(), X_OK) != 0) {
    std::cerr << "kws_proxy_bench: proxy binary not executable: " << opt.proxy << '\n';
    return 2;
  }

  // Per proxied connection the bench holds a client socket and the WebSocket server's socket, and the proxy
  // (which inherits the limit) holds two; besides those each process has a few dozen descriptors at most
  // (stdio, listeners, epoll, eventfds, timerfds, a pipe).
  constexpr std::size_t fd_slack = 64;
  const std::size_t most = std::max(opt.concurrency, opt.idle_connections);
  const rlim_t want = static_cast<rlim_t>(2 * most + fd_slack);
  const rlim_t nofile = raise_nofile(want);
  std::size_t concurrency = opt.concurrency;
  std::string concurrency_note;
  if (nofile < want && opt.clamp_concurrency) {
    concurrency = std::min<std::size_t>(concurrency, nofile > 2 * fd_slack ? (nofile - fd_slack) / 2 : 1);
    concurrency_note = "RLIMIT_NOFILE is " + std::to_string(nofile) + " and cannot be raised to " +
                       std::to_string(want) +
                       " (hard limit; raising it needs CAP_SYS_RESOURCE): concurrency lowered to " +
                       std::to_string(concurrency) + " (2 descriptors per proxied connection in the proxy)";
  }

  std::printf(
      "kws_proxy_bench\n  proxy %s --threads %u\n  nproc %u, cpu %s, loadavg %s\n  RLIMIT_NOFILE %lu\n",
      opt.proxy.c_str(), opt.proxy_threads, std::thread::hardware_concurrency(), cpu_model().c_str(),
      read_first_line("/proc/loadavg").c_str(), static_cast<unsigned long>(nofile));
  std::fflush(stdout);

  echo_server direct_server(opt.max_frame, tcp_echo_session);
  echo_server ws_server(opt.max_frame, ws_echo_session);
  const auto direct_ep = direct_server.endpoint();
  totals t;

  // [0: everything on one CPU, 1: split over two][0: direct, 1: proxied]
  std::vector<latency_result> lat[2][2];
  cpu_set_t all_cpus;
  ::sched_getaffinity(0, sizeof all_cpus, &all_cpus);
  if (opt.latency_cpu >= 0 && !CPU_ISSET(opt.latency_cpu, &all_cpus)) {
    std::cerr << "kws_proxy_bench: --latency-cpu " << opt.latency_cpu
              << " is not available to this process\n";
    return 2;
  }
  int split_cpu = -1;  // the other CPU of the split placement
  for (int c = 0; c < CPU_SETSIZE && opt.latency_split && opt.latency_cpu >= 0 && split_cpu < 0; ++c) {
    if (c != opt.latency_cpu && CPU_ISSET(c, &all_cpus)) split_cpu = c;
  }
  std::vector<throughput_result> tp_direct, tp_proxied;
  std::optional<long> rss_before, rss_after;
  many_result mem;
  many_result conc_direct, conc_proxied;
  double mem_wait_s = 0.5;

  try {
    if (opt.wants("latency") || opt.wants("throughput")) {
      proxy_process proxy(opt, ws_server.endpoint());
      for (int rep = 0; rep < opt.reps; ++rep) {
        // Alternate which path goes first, so drift on the machine does not favour one of them.
        const bool direct_first = rep % 2 == 0;
        for (int mode = 0; mode < 2 && opt.wants("latency"); ++mode) {
          const bool pinned = mode == 0;
          if (pinned ? opt.latency_cpu < 0 : split_cpu < 0) continue;
          // Fixed placements: on a virtual machine a cross-CPU wake-up can cost more than the work measured,
          // and where the scheduler happens to put the threads would decide the figure.
          // 1 CPU: every thread of the bench and of the proxy on one CPU (the CPU cost of each path).
          // split: the client (this thread) on one CPU, the echo servers and the proxy on another, as when
          // client and proxy run on different cores.
          set_affinity(::getpid(), one_cpu(pinned ? opt.latency_cpu : split_cpu));
          set_affinity(proxy.pid(), one_cpu(pinned ? opt.latency_cpu : split_cpu));
          if (!pinned) {
            const auto mine = one_cpu(opt.latency_cpu);
            ::sched_setaffinity(0, sizeof mine, &mine);
          }
          for (int k = 0; k < 2; ++k) {
            const bool direct = (k == 0) == direct_first;
            const auto ep = direct ? direct_ep : proxy.endpoint();
            const std::string name =
                std::string(direct ? "direct" : "proxied") + (pinned ? " 1cpu" : " split");
            latency_result r;
            const auto deadline = clock_type::now() + opt.phase_timeout();
            run_bounded([&](auto) { return latency_client(ep, opt, r, deadline); }, opt.phase_timeout(),
                        r.errors);
            note_errors(t, "latency " + name + " rep " + std::to_string(rep + 1), r.mismatches, r.errors);
            std::fprintf(stderr, "rep %d latency %-12s p50 %.1f p90 %.1f p99 %.1f us (%zu samples)\n",
                         rep + 1, name.c_str(), r.p50(), r.p90(), r.p99(), r.samples_us.size());
            lat[mode][direct ? 0 : 1].push_back(std::move(r));
          }
          set_affinity(::getpid(), all_cpus);
          set_affinity(proxy.pid(), all_cpus);
        }
        for (int k = 0; k < 2; ++k) {
          const bool direct = (k == 0) == direct_first;
          const auto ep = direct ? direct_ep : proxy.endpoint();
          const std::string name = direct ? "direct" : "proxied";
          if (opt.wants("throughput")) {
            throughput_result r;
            const double cpu0 = cpu_seconds(proxy.pid());
            run_bounded([&](auto) { return throughput_client(ep, opt, r); }, opt.phase_timeout(), r.errors);
            r.proxy_cpu_s = cpu_seconds(proxy.pid()) - cpu0;
            note_errors(t, "throughput " + name + " rep " + std::to_string(rep + 1), r.mismatches, r.errors);
            std::fprintf(stderr,
                         "rep %d throughput %-7s %.1f MB/s up, %.1f MB/s down (%zu frames, %.2f s, proxy cpu "
                         "%.2f s)\n",
                         rep + 1, name.c_str(), r.mb_up(), r.mb_down(), r.frames, r.seconds, r.proxy_cpu_s);
            (direct ? tp_direct : tp_proxied).push_back(std::move(r));
          }
        }
      }
      proxy.stop();
      if (proxy.problem_lines())
        t.notes.push_back("proxy logged " + std::to_string(proxy.problem_lines()) +
                          " warning/error line(s):" + proxy.log_excerpt());
      wait_idle(ws_server.stats(), std::chrono::seconds(10));
    }

    if (opt.wants("memory")) {
      // A fresh proxy, so buffers freed by earlier phases do not hide what idle connections cost.
      proxy_process proxy(opt, ws_server.endpoint());
      const auto ep = proxy.endpoint();
      run_bounded(
          [&](auto) -> awaitable<void> {
            auto ex = co_await asio::this_coro::executor;
            const auto deadline = clock_type::now() + opt.phase_timeout();
            asio::steady_timer settle(ex);
            error_code ec;
            {
              // One connection first, so lazily created state (dialer, first buffers) is in the baseline.
              std::vector<tcp::socket> warm;
              many_result w;
              co_await open_many(ep, 1, 1, opt.small_frame, warm, w, deadline);
              note_errors(t, "memory warm-up", w.mismatches, w.errors);
            }
            settle.expires_after(std::chrono::milliseconds(500));
            co_await settle.async_wait(asio::redirect_error(use_awaitable, ec));
            rss_before = vm_rss_kib(proxy.pid());
            std::vector<tcp::socket> keep;
            co_await open_many(ep, opt.idle_connections, opt.connect_burst, opt.small_frame, keep, mem,
                               deadline);
            settle.expires_after(
                std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(mem_wait_s)));
            co_await settle.async_wait(asio::redirect_error(use_awaitable, ec));
            rss_after = vm_rss_kib(proxy.pid());
          },
          opt.phase_timeout(), mem.errors);
      note_errors(t, "memory", mem.mismatches, mem.errors);
      std::fprintf(stderr, "memory: %zu idle proxied connections, VmRSS %ld -> %ld KiB\n", mem.ok,
                   rss_before.value_or(-1), rss_after.value_or(-1));
      proxy.stop();
      if (proxy.problem_lines())
        t.notes.push_back("proxy (memory) logged " + std::to_string(proxy.problem_lines()) +
                          " warning/error line(s):" + proxy.log_excerpt());
      wait_idle(ws_server.stats(), std::chrono::seconds(10));
    }

    if (opt.wants("concurrency")) {
      for (int k = 0; k < 2; ++k) {
        const bool direct = k == 0;
        std::optional<proxy_process> proxy;
        if (!direct) proxy.emplace(opt, ws_server.endpoint());
        const auto ep = direct ? direct_ep : proxy->endpoint();
        auto& r = direct ? conc_direct : conc_proxied;
        run_bounded(
            [&](auto) -> awaitable<void> {
              std::vector<tcp::socket> keep;
              co_await open_many(ep, concurrency, opt.connect_burst, opt.small_frame, keep, r,
                                 clock_type::now() + opt.phase_timeout());
            },
            opt.phase_timeout(), r.errors);
        const std::string name = direct ? "direct" : "proxied";
        note_errors(t, "concurrency " + name, r.mismatches, r.errors);
        std::fprintf(stderr, "concurrency %-7s %zu/%zu ok in %.2f s\n", name.c_str(), r.ok, concurrency,
                     r.wall_s);
        if (proxy) {
          proxy->stop();
          if (proxy->problem_lines())
            t.notes.push_back("proxy (concurrency) logged " + std::to_string(proxy->problem_lines()) +
                              " warning/error line(s):" + proxy->log_excerpt());
        }
        wait_idle(direct ? direct_server.stats() : ws_server.stats(), std::chrono::seconds(20));
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "kws_proxy_bench: " << e.what() << '\n';
    return 1;
  }

  // ---- table ----
  std::printf("\n  %-30s %12s %12s %16s  %s\n", "metric", "direct", "proxied", "proxied vs direct", "target");
  for (int mode = 0; mode < 2; ++mode) {
    if (lat[mode][0].empty() || lat[mode][1].empty()) continue;
    auto med = [](const std::vector<latency_result>& v, double (latency_result::*f)() const) {
      std::vector<double> x;
      for (const auto& r : v) x.push_back((r.*f)());
      return median(x);
    };
    const auto& ld = lat[mode][0];
    const auto& lp = lat[mode][1];
    const double d50 = med(ld, &latency_result::p50), p50 = med(lp, &latency_result::p50);
    const double d90 = med(ld, &latency_result::p90), p90 = med(lp, &latency_result::p90);
    const double d99 = med(ld, &latency_result::p99), p99 = med(lp, &latency_result::p99);
    const std::string where = mode == 0 ? "1 CPU" : "split";
    row("latency p50 us (" + std::to_string(opt.latency_frame) + " B, " + where + ")", fmt(d50), fmt(p50),
        delta_us(p50 - d50), std::string("<= +25 us: ") + (p50 - d50 <= 25 ? "met" : "MISSED"));
    row("latency p90 us (" + where + ")", fmt(d90), fmt(p90), delta_us(p90 - d90));
    row("latency p99 us (" + where + ")", fmt(d99), fmt(p99), delta_us(p99 - d99));
  }
  if (!tp_direct.empty()) {
    auto med = [](const std::vector<throughput_result>& v, double (throughput_result::*f)() const) {
      std::vector<double> x;
      for (const auto& r : v) x.push_back((r.*f)());
      return median(x);
    };
    const double du = med(tp_direct, &throughput_result::mb_up),
                 pu = med(tp_proxied, &throughput_result::mb_up);
    const double dd = med(tp_direct, &throughput_result::mb_down),
                 pd = med(tp_proxied, &throughput_result::mb_down);
    std::vector<double> cpu;
    for (const auto& r : tp_proxied) cpu.push_back(r.seconds > 0 ? 100.0 * r.proxy_cpu_s / r.seconds : 0);
    const std::string frame = std::to_string(opt.throughput_frame / 1024) + " KiB";
    row("throughput up MB/s (" + frame + ")", fmt(du), fmt(pu), "x" + fmt(du > 0 ? pu / du : 0, 2),
        std::string(">= x0.5: ") + (du > 0 && pu / du >= 0.5 ? "met" : "MISSED"));
    row("throughput down MB/s", fmt(dd), fmt(pd), "x" + fmt(dd > 0 ? pd / dd : 0, 2));
    row("proxy CPU while streaming %", "-", fmt(median(cpu), 0), "");
  }
  if (rss_before && rss_after) {
    const double per =
        mem.ok ? static_cast<double>(*rss_after - *rss_before) / static_cast<double>(mem.ok) : 0;
    row("idle: proxy VmRSS KiB", std::to_string(*rss_before), std::to_string(*rss_after),
        std::to_string(mem.ok) + " conns");
    row("idle: KiB per proxied conn", "-", fmt(per, 2), "",
        std::string("<= 12 KiB: ") + (per <= 12 ? "met" : "MISSED"));
  }
  if (opt.wants("concurrency")) {
    row("concurrent conns ok of " + std::to_string(concurrency), std::to_string(conc_direct.ok),
        std::to_string(conc_proxied.ok), "");
    row("concurrent wall s", fmt(conc_direct.wall_s, 2), fmt(conc_proxied.wall_s, 2),
        "x" + fmt(conc_direct.wall_s > 0 ? conc_proxied.wall_s / conc_direct.wall_s : 0, 2));
    row("concurrent conn+rtt p50/p99 ms",
        fmt(percentile(conc_direct.conn_ms, 0.5), 1) + "/" + fmt(percentile(conc_direct.conn_ms, 0.99), 0),
        fmt(percentile(conc_proxied.conn_ms, 0.5), 1) + "/" + fmt(percentile(conc_proxied.conn_ms, 0.99), 0),
        "");
    if (!concurrency_note.empty()) std::printf("  note: %s\n", concurrency_note.c_str());
  }
  const auto& ds = direct_server.stats();
  const auto& ws = ws_server.stats();
  std::printf(
      "\n  servers: direct accepted %lu (accept errors %lu, bad input %lu); ws accepted %lu (accept errors "
      "%lu, non-binary %lu)\n",
      static_cast<unsigned long>(ds.accepted.load()), static_cast<unsigned long>(ds.accept_errors.load()),
      static_cast<unsigned long>(ds.bad_input.load()), static_cast<unsigned long>(ws.accepted.load()),
      static_cast<unsigned long>(ws.accept_errors.load()), static_cast<unsigned long>(ws.bad_input.load()));
  std::printf("  verification: %zu mismatched echo(es), %zu client error(s)\n", t.mismatches, t.errors);
  for (const auto& n : t.notes) std::printf("    %s\n", n.c_str());
  std::printf("  loadavg at end %s\n", read_first_line("/proc/loadavg").c_str());
  return t.mismatches == 0 && ds.bad_input.load() == 0 && ws.bad_input.load() == 0 ? 0 : 1;
}
