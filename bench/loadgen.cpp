// kws_loadgen: a load generator for the proxy benchmark matrix (bench/run.sh). One thread, epoll, no Asio, so
// that it costs little CPU next to what it measures on a machine it shares with the proxy and the broker.
//
// It opens C connections to a Kafka-framed TCP endpoint (tcp://host:port, the proxy) or to a WebSocket echo
// server (ws://host:port/path, the direct path: one Kafka frame per binary message), either of them under TLS
// (tls://, wss://; OpenSSL, non-blocking in the same loop, certificate checked with --ca-file), keeps D
// requests of S bytes (size header included) in flight on each, and checks every echoed byte: each frame is a
// Fetch v4 request header whose correlation id is a per-connection sequence number, the connection's number,
// then a fixed pseudo-random pattern at an offset that moves with the sequence number. A reordered, replayed,
// mixed up or corrupted echo is counted as a mismatch and makes the exit status 1.
//
// Modes:
//   run   (default): warm up, then count round trips for --duration; print one line of key=value figures
//         (total= counts the warm-up too, for per-round-trip costs measured over the whole run).
//   idle  (--idle N --pid P): read P's VmRSS, open N connections with one round trip each (64 bytes, or
//         --idle-size), hold them, read VmRSS again and print the difference per connection (as the Go
//         proxy's harness measured it).
//         --max-opening M keeps at most M WebSocket upgrades unanswered while opening.
#include "bench_tls.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using clk = std::chrono::steady_clock;

struct options {
  bool ws = false;
  bool tls = false;
  std::string ca_file;
  std::string host = "127.0.0.1";
  int port = 0;
  std::string path = "/";
  int conns = 1;
  int depth = 1;
  std::size_t size = 1024;
  double duration = 3.0;
  double warmup = 0.5;
  int idle = 0;
  long pid = 0;
  double hold = 1.0;
  int max_opening = 0;         // WebSocket upgrades under way at once while opening; 0: no bound
  std::size_t idle_size = 64;  // the frame of the idle mode's one round trip, size header included
};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "kws_loadgen: %s\n", what.c_str());
  std::exit(2);
}

void usage() {
  std::puts(
      "usage: kws_loadgen --target tcp://HOST:PORT|ws://HOST:PORT/PATH [--conns C] [--depth D] [--size S]\n"
      "                   [--duration SECONDS] [--warmup SECONDS] [--ca-file PEM]\n"
      "       kws_loadgen --target ... --idle N --pid PID [--hold SECONDS] [--max-opening M]\n"
      "                   [--idle-size S]\n"
      "S is the Kafka frame size on the wire, size header included (at least 32). tls:// and wss:// targets\n"
      "speak TLS; --ca-file checks the server's certificate against HOST (without it, it is not checked).");
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value for " + a);
      return argv[++i];
    };
    if (a == "--target") {
      std::string t = val();
      if (t.rfind("tcp://", 0) == 0 || t.rfind("tls://", 0) == 0) {
        o.tls = t[1] == 'l';
        t = t.substr(6);
      } else if (t.rfind("ws://", 0) == 0 || t.rfind("wss://", 0) == 0) {
        o.ws = true;
        o.tls = t[2] == 's';
        t = t.substr(o.tls ? 6 : 5);
        if (auto slash = t.find('/'); slash != std::string::npos) {
          o.path = t.substr(slash);
          t = t.substr(0, slash);
        }
      } else {
        die("target must start with tcp://, tls://, ws:// or wss://");
      }
      const auto colon = t.rfind(':');
      if (colon == std::string::npos) die("target needs a port");
      o.host = t.substr(0, colon);
      o.port = std::atoi(t.c_str() + colon + 1);
    } else if (a == "--conns") {
      o.conns = std::atoi(val().c_str());
    } else if (a == "--depth") {
      o.depth = std::atoi(val().c_str());
    } else if (a == "--size") {
      o.size = std::strtoull(val().c_str(), nullptr, 10);
    } else if (a == "--duration") {
      o.duration = std::atof(val().c_str());
    } else if (a == "--warmup") {
      o.warmup = std::atof(val().c_str());
    } else if (a == "--idle") {
      o.idle = std::atoi(val().c_str());
    } else if (a == "--pid") {
      o.pid = std::atol(val().c_str());
    } else if (a == "--hold") {
      o.hold = std::atof(val().c_str());
    } else if (a == "--idle-size") {
      o.idle_size = std::strtoull(val().c_str(), nullptr, 10);
    } else if (a == "--max-opening") {
      o.max_opening = std::atoi(val().c_str());
    } else if (a == "--ca-file") {
      o.ca_file = val();
    } else if (a == "--help" || a == "-h") {
      usage();
      std::exit(0);
    } else {
      die("unknown argument " + a);
    }
  }
  if (o.port <= 0) die("--target is required");
  if (o.size < 32) die("--size must be at least 32");
  if (o.idle_size < 32) die("--idle-size must be at least 32");
  if (o.conns < 1 || o.depth < 1) die("--conns and --depth must be at least 1");
  return o;
}

void put_be32(unsigned char* p, std::uint32_t v) {
  p[0] = static_cast<unsigned char>(v >> 24);
  p[1] = static_cast<unsigned char>(v >> 16);
  p[2] = static_cast<unsigned char>(v >> 8);
  p[3] = static_cast<unsigned char>(v);
}

std::uint32_t get_be32(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

// The pattern the frames are cut from; a frame's pattern offset moves with its sequence number.
constexpr std::size_t pattern_slack = 4096;
std::vector<unsigned char> pattern;

std::size_t pattern_offset(std::uint32_t seq) {
  return (seq * 61u) % pattern_slack;
}

// Bytes 0-17 of a frame: size, api_key 1 (Fetch), api_version 4, correlation id = seq, client_id null, then
// the connection number. The rest comes from the pattern.
constexpr std::size_t fixed_bytes = 18;

void make_header(unsigned char* h, std::size_t size, std::uint32_t seq, std::uint32_t conn) {
  put_be32(h, static_cast<std::uint32_t>(size - 4));
  h[4] = 0;
  h[5] = 1;
  h[6] = 0;
  h[7] = 4;
  put_be32(h + 8, seq);
  h[12] = 0xff;
  h[13] = 0xff;
  put_be32(h + 14, conn);
}

// A byte buffer whose resize leaves new bytes uninitialized. receive() grows the input by 256 KiB before
// each recv. Value-initializing that (std::vector's resize zero-fills) cost a 256 KiB memset per recv: with
// 200 connections at depth 1 the load generator spent 21 us per round trip with it and 7 without, and it,
// not the broker, was the limit of the direct path.
template <class T>
struct uninit_allocator : std::allocator<T> {
  using value_type = T;
  template <class U>
  struct rebind {
    using other = uninit_allocator<U>;
  };
  uninit_allocator() = default;
  template <class U>
  uninit_allocator(const uninit_allocator<U>&) noexcept {}
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

struct conn_state {
  kws_bench::transport t;
  std::uint32_t id = 0;
  bool open = false;      // handshake done (always true for tcp)
  bool want_out = false;  // EPOLLOUT registered
  std::vector<unsigned char> out;
  std::size_t out_off = 0;
  std::vector<unsigned char, uninit_allocator<unsigned char>> in;
  std::size_t in_off = 0;
  std::uint32_t next_send = 0;
  std::uint32_t next_recv = 0;
  std::deque<clk::time_point> sent_at;
  int rounds_left = -1;  // idle mode: round trips still to do
};

struct stats {
  std::uint64_t msgs = 0;
  std::uint64_t bytes = 0;
  std::uint64_t mismatches = 0;
  std::vector<double> lat_us;
  bool counting = false;
};

class generator {
 public:
  explicit generator(const options& o) : o_(o) {
    ep_ = ::epoll_create1(0);
    if (ep_ < 0) die("epoll_create1");
    if (o_.tls) {
      std::string error;
      ctx_ = kws_bench::make_tls_context(false, o_.ca_file, "", "", error);
      if (!ctx_) die(error);
    }
  }

  void open_all(int n) {
    conns_.resize(static_cast<std::size_t>(n));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<std::uint16_t>(o_.port));
    if (::inet_pton(AF_INET, o_.host.c_str(), &sa.sin_addr) != 1) die("host must be an IPv4 address");
    for (int i = 0; i < n; ++i) {
      auto& c = conns_[static_cast<std::size_t>(i)];
      c.id = static_cast<std::uint32_t>(i);
      c.rounds_left = o_.idle > 0 ? 1 : -1;
      c.t.fd = ::socket(AF_INET, SOCK_STREAM, 0);
      if (c.t.fd < 0) die("socket: " + std::string(std::strerror(errno)) + " (descriptor limit?)");
      // Blocking connect: the backlog absorbs them; connecting one by one keeps the listen queue short.
      if (::connect(c.t.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        die("connect: " + std::string(std::strerror(errno)));
      }
      int one = 1;
      ::setsockopt(c.t.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      ::fcntl(c.t.fd, F_SETFL, ::fcntl(c.t.fd, F_GETFL) | O_NONBLOCK);
      if (ctx_) {
        // The handshake runs inside the first SSL_write/SSL_read of flush() and receive().
        std::string error;
        if (!c.t.start_tls(ctx_, false, o_.ca_file.empty() ? "" : o_.host, error)) die(error);
      }
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u32 = c.id;
      if (::epoll_ctl(ep_, EPOLL_CTL_ADD, c.t.fd, &ev) != 0) die("epoll_ctl");
      if (o_.ws) {
        const std::string req =
            "GET " + o_.path + " HTTP/1.1\r\nHost: " + o_.host + ":" + std::to_string(o_.port) +
            "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        c.out.assign(req.begin(), req.end());
        flush(c);
        ++opening_;
      } else {
        c.open = true;
      }
      // Serve the connections opened so far now and then, as their clients would: a TLS or WebSocket
      // handshake left unanswered while thousands more connect would run into the server's handshake timeout.
      if (i % 64 == 63) poll(0);
      // With --max-opening, clients arrive as a server with a bound on handshakes under way lets them: the
      // next connects once fewer than M upgrades wait for their answer.
      while (o_.max_opening > 0 && opening_ >= o_.max_opening) poll(10);
    }
  }

  static double cpu_seconds() {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    auto secs = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
    return secs(ru.ru_utime) + secs(ru.ru_stime);
  }

  // Run mode: keeps `depth` frames of `size` in flight on every connection.
  int run() {
    open_all(o_.conns);
    const auto start = clk::now();
    for (auto& c : conns_) fill(c, o_.size, o_.depth);
    const auto t_warm =
        start + std::chrono::duration_cast<clk::duration>(std::chrono::duration<double>(o_.warmup));
    const auto t_end =
        t_warm + std::chrono::duration_cast<clk::duration>(std::chrono::duration<double>(o_.duration));
    st_.lat_us.reserve(1 << 20);
    bool counting = false;
    double cpu_at_warm = 0;
    while (true) {
      const auto now = clk::now();
      if (!counting && now >= t_warm) {
        counting = true;
        st_.counting = true;
        cpu_at_warm = cpu_seconds();
      }
      if (now >= t_end) break;
      poll(5);
    }
    const double secs = o_.duration;
    // Its own CPU use while counting: at 100 % of a core the load generator, not the server behind it, sets
    // the pace, and the run measures the wrong thing (run.sh warns).
    const double cpu_pct = 100 * (cpu_seconds() - cpu_at_warm) / secs;
    std::sort(st_.lat_us.begin(), st_.lat_us.end());
    auto pct = [&](double p) {
      if (st_.lat_us.empty()) return 0.0;
      return st_.lat_us[std::min(st_.lat_us.size() - 1, static_cast<std::size_t>(p * st_.lat_us.size()))];
    };
    std::uint64_t total = 0;
    for (const auto& c : conns_) total += c.next_recv;
    std::printf(
        "msgs_per_s=%.0f mb_per_s=%.2f p50_us=%.1f p99_us=%.1f msgs=%llu total=%llu mismatches=%llu "
        "cpu_pct=%.0f\n",
        st_.msgs / secs, st_.bytes / secs / 1e6, pct(0.5), pct(0.99),
        static_cast<unsigned long long>(st_.msgs), static_cast<unsigned long long>(total),
        static_cast<unsigned long long>(st_.mismatches), cpu_pct);
    std::fflush(stdout);
    return st_.mismatches == 0 && st_.msgs > 0 ? 0 : 1;
  }

  // Idle mode: N connections, one small round trip each, then held; the target's RSS per connection.
  int idle() {
    const long before = rss_kib(o_.pid);
    open_all(o_.idle);
    for (auto& c : conns_) fill(c, o_.idle_size, 1);
    std::size_t pending = conns_.size();
    const auto deadline = clk::now() + std::chrono::seconds(120);
    while (pending > 0 && clk::now() < deadline) {
      poll(50);
      pending = 0;
      for (auto& c : conns_) pending += c.rounds_left != 0;
    }
    if (pending > 0) die(std::to_string(pending) + " connections did not complete their round trip");
    // Let the target settle (buffers given back after the last write) before reading its memory.
    std::this_thread::sleep_for(std::chrono::duration<double>(o_.hold));
    const long after = rss_kib(o_.pid);
    std::printf("idle_conns=%d rss_before_kib=%ld rss_after_kib=%ld kib_per_conn=%.2f mismatches=%llu\n",
                o_.idle, before, after, static_cast<double>(after - before) / o_.idle,
                static_cast<unsigned long long>(st_.mismatches));
    std::fflush(stdout);
    return st_.mismatches == 0 ? 0 : 1;
  }

 private:
  static long rss_kib(long pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(f, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
    }
    die("cannot read VmRSS of pid " + std::to_string(pid));
  }

  // Queues frames until `depth` are outstanding.
  void fill(conn_state& c, std::size_t size, int depth) {
    if (!c.open) return;
    bool added = false;
    while (static_cast<int>(c.next_send - c.next_recv) < depth) {
      if (c.rounds_left >= 0 && static_cast<int>(c.next_send) >= c.rounds_left) break;
      append_frame(c, size, c.next_send++);
      c.sent_at.push_back(clk::now());
      added = true;
    }
    if (added) flush(c);
  }

  void append_frame(conn_state& c, std::size_t size, std::uint32_t seq) {
    if (c.out_off == c.out.size()) {
      c.out.clear();
      c.out_off = 0;
    }
    const auto at = c.out.size();
    std::size_t ws_header = 0;
    if (o_.ws) ws_header = size < 126 ? 6 : size < 65536 ? 8 : 14;
    c.out.resize(at + ws_header + size);
    unsigned char* p = c.out.data() + at;
    if (o_.ws) {
      // FIN + binary, masked with a key of its own per frame, as every client must. Not key 0: `ws` skips
      // unmasking an all-zero key, which would spare the broker work that any real client costs it (about
      // 126 us per 100 KiB in this Node.js without bufferutil).
      p[0] = 0x82;
      if (size < 126) {
        p[1] = static_cast<unsigned char>(0x80 | size);
      } else if (size < 65536) {
        p[1] = 0x80 | 126;
        p[2] = static_cast<unsigned char>(size >> 8);
        p[3] = static_cast<unsigned char>(size);
      } else {
        p[1] = 0x80 | 127;
        for (int i = 0; i < 8; ++i)
          p[2 + i] = static_cast<unsigned char>(std::uint64_t{size} >> (56 - 8 * i));
      }
      std::uint32_t key = (seq + 1) * 2654435761u ^ (c.id + 1) * 40503u;
      if (key == 0) key = 1;
      std::memcpy(p + ws_header - 4, &key, 4);
      p += ws_header;
    }
    make_header(p, size, seq, c.id);
    std::memcpy(p + fixed_bytes, pattern.data() + pattern_offset(seq), size - fixed_bytes);
    if (o_.ws) {
      unsigned char key[4];
      std::memcpy(key, p - 4, 4);
      for (std::size_t i = 0; i < size; ++i) p[i] ^= key[i & 3];
    }
  }

  void flush(conn_state& c) {
    while (c.out_off < c.out.size()) {
      const auto n = c.t.send(c.out.data() + c.out_off, c.out.size() - c.out_off);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        die("send: " + io_error());
      }
      c.out_off += static_cast<std::size_t>(n);
    }
    if (c.out_off == c.out.size()) {
      c.out.clear();
      c.out_off = 0;
    }
    sync_events(c);
  }

  // EPOLLOUT while bytes wait to be sent, or while TLS needs the socket writable to go on.
  void sync_events(conn_state& c) {
    const bool want = c.out_off < c.out.size() || c.t.tls_wants_write;
    if (want != c.want_out) {
      c.want_out = want;
      epoll_event ev{};
      ev.events = EPOLLIN | (want ? EPOLLOUT : 0u);
      ev.data.u32 = c.id;
      ::epoll_ctl(ep_, EPOLL_CTL_MOD, c.t.fd, &ev);
    }
  }

  void poll(int timeout_ms) {
    epoll_event evs[256];
    const int n = ::epoll_wait(ep_, evs, 256, timeout_ms);
    for (int i = 0; i < n; ++i) {
      auto& c = conns_[evs[i].data.u32];
      if (c.t.ssl) {
        // Under TLS a read may wait for the socket to take a write and the other way round: both get a turn.
        flush(c);
        receive(c);
        continue;
      }
      if (evs[i].events & EPOLLOUT) flush(c);
      if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) receive(c);
    }
  }

  void receive(conn_state& c) {
    for (;;) {
      if (c.in.size() - c.in_off < 64 * 1024) {
        if (c.in_off > 0) {
          c.in.erase(c.in.begin(), c.in.begin() + static_cast<std::ptrdiff_t>(c.in_off));
          c.in_off = 0;
        }
      }
      const auto have = c.in.size();
      c.in.resize(have + 256 * 1024);
      const auto n = c.t.recv(c.in.data() + have, 256 * 1024);
      c.in.resize(have + static_cast<std::size_t>(std::max<ssize_t>(n, 0)));
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        die("recv: " + io_error());
      }
      if (n == 0) die("connection " + std::to_string(c.id) + " closed by the peer");
      // A plain read that did not fill the buffer emptied the socket; TLS returns one record at a time.
      if (!c.t.ssl && static_cast<std::size_t>(n) < 256 * 1024) {
        parse(c);
        break;
      }
      parse(c);
    }
    fill(c, c.rounds_left >= 0 ? o_.idle_size : o_.size, c.rounds_left >= 0 ? 1 : o_.depth);
    if (c.t.ssl) sync_events(c);
  }

  void parse(conn_state& c) {
    if (!c.open) {
      const std::string_view text(reinterpret_cast<const char*>(c.in.data() + c.in_off),
                                  c.in.size() - c.in_off);
      const auto end = text.find("\r\n\r\n");
      if (end == std::string_view::npos) return;
      if (text.find(" 101 ") == std::string_view::npos || text.find(" 101 ") > end) {
        die("WebSocket upgrade refused: " + std::string(text.substr(0, text.find("\r\n"))));
      }
      c.in_off += end + 4;
      c.open = true;
      --opening_;
      fill(c, c.rounds_left >= 0 ? o_.idle_size : o_.size, c.rounds_left >= 0 ? 1 : o_.depth);
    }
    for (;;) {
      const unsigned char* p = c.in.data() + c.in_off;
      const std::size_t avail = c.in.size() - c.in_off;
      std::size_t header = 0, len = 0;
      if (o_.ws) {
        if (avail < 2) return;
        if ((p[0] & 0x0f) != 0x2 || !(p[0] & 0x80) || (p[1] & 0x80)) {
          die("unexpected WebSocket frame (opcode " + std::to_string(p[0] & 0x0f) + ")");
        }
        len = p[1] & 0x7f;
        header = 2;
        if (len == 126) {
          if (avail < 4) return;
          len = (std::size_t{p[2]} << 8) | p[3];
          header = 4;
        } else if (len == 127) {
          if (avail < 10) return;
          len = 0;
          for (int i = 0; i < 8; ++i) len = (len << 8) | p[2 + i];
          header = 10;
        }
      } else {
        if (avail < 4) return;
        len = 4 + std::size_t{get_be32(p)};
      }
      if (avail < header + len) return;
      check(c, p + header, len);
      c.in_off += header + len;
    }
  }

  void check(conn_state& c, const unsigned char* f, std::size_t len) {
    const std::uint32_t seq = c.next_recv++;
    const std::size_t size = c.rounds_left >= 0 ? o_.idle_size : o_.size;
    unsigned char want[fixed_bytes];
    make_header(want, size, seq, c.id);
    if (len != size || std::memcmp(f, want, fixed_bytes) != 0 ||
        std::memcmp(f + fixed_bytes, pattern.data() + pattern_offset(seq), size - fixed_bytes) != 0) {
      if (st_.mismatches++ < 5) {
        std::fprintf(stderr, "mismatch on connection %u at frame %u (%zu bytes, expected %zu)\n", c.id, seq,
                     len, size);
      }
    }
    const auto sent = c.sent_at.front();
    c.sent_at.pop_front();
    if (c.rounds_left > 0 && c.next_recv >= static_cast<std::uint32_t>(c.rounds_left)) c.rounds_left = 0;
    if (st_.counting) {
      ++st_.msgs;
      st_.bytes += len;
      st_.lat_us.push_back(std::chrono::duration<double, std::micro>(clk::now() - sent).count());
    }
  }

  static std::string io_error() {
    return errno == EPROTO ? "TLS: " + kws_bench::tls_errors() : std::string(std::strerror(errno));
  }

  options o_;
  SSL_CTX* ctx_ = nullptr;
  int ep_;
  int opening_ = 0;  // WebSocket upgrades sent and not yet answered
  std::vector<conn_state> conns_;
  stats st_;
};

}  // namespace

int main(int argc, char** argv) {
  const auto o = parse(argc, argv);
  pattern.resize(std::max(o.size, o.idle_size) + pattern_slack);
  std::mt19937 rng(12345);
  for (auto& b : pattern) b = static_cast<unsigned char>(rng());
  // Two descriptors per connection at most on this side; raise the limit as far as allowed.
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &rl);
  // A peer that closes shows up as an error of the write (EPIPE), not as the end of this process.
  std::signal(SIGPIPE, SIG_IGN);
  generator g(o);
  if (o.idle > 0) {
    if (o.pid <= 0) die("--idle needs --pid");
    return g.idle();
  }
  return g.run();
}
