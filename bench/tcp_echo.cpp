// kws_tcp_echo: the Kafka broker of bench/run.sh's gateway cases. A TCP server that speaks the Kafka framing
// (int32 big-endian size, then that many bytes) and sends every complete frame back as it came, in order;
// with --tls-cert/--tls-key it does so over TLS. One thread, epoll, no Asio: what it costs should be small
// next to the gateway it stands behind, and the same on both paths.
//
//   kws_tcp_echo [--listen HOST] [--port N] [--tls-cert PEM --tls-key PEM] [--max-frame-bytes N]
//
// Prints "listening PORT" once it accepts connections. A frame whose size is negative or above
// --max-frame-bytes (default 100 MiB) ends that connection with one line on stderr; the others go on.
// Echoes are sent from the receive buffer itself; while more than 4 MiB of complete frames wait for a peer
// that does not read, that peer is not read either.
#include "bench_tls.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "kws_tcp_echo: %s\n", what.c_str());
  std::exit(2);
}

struct options {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string cert, key;
  std::uint64_t max_frame = 100ull * 1024 * 1024;
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value for " + a);
      return argv[++i];
    };
    if (a == "--listen") {
      o.host = val();
    } else if (a == "--port") {
      o.port = std::atoi(val().c_str());
    } else if (a == "--tls-cert") {
      o.cert = val();
    } else if (a == "--tls-key") {
      o.key = val();
    } else if (a == "--max-frame-bytes") {
      o.max_frame = std::strtoull(val().c_str(), nullptr, 10);
    } else if (a == "--help" || a == "-h") {
      std::puts(
          "usage: kws_tcp_echo [--listen HOST] [--port N] [--tls-cert PEM --tls-key PEM] [--max-frame-bytes "
          "N]");
      std::exit(0);
    } else {
      die("unknown argument " + a);
    }
  }
  if (o.cert.empty() != o.key.empty()) die("--tls-cert and --tls-key go together");
  return o;
}

// Grows without zero-filling, as kws_loadgen's input buffer (see there).
struct raw_buffer {
  std::unique_ptr<unsigned char[]> data;
  std::size_t size = 0;

  void grow_to(std::size_t n, std::size_t keep) {
    std::unique_ptr<unsigned char[]> bigger(new unsigned char[n]);
    if (keep > 0) std::memcpy(bigger.get(), data.get(), keep);
    data = std::move(bigger);
    size = n;
  }
};

constexpr std::size_t first_buffer = 64 * 1024;
constexpr std::size_t backlog_cap = 4 * 1024 * 1024;

struct peer {
  kws_bench::transport t;
  raw_buffer buf;
  std::size_t sent = 0;      // echoed up to here
  std::size_t complete = 0;  // complete frames up to here
  std::size_t end = 0;       // received up to here
  std::uint32_t events = 0;  // registered with epoll
};

class server {
 public:
  explicit server(const options& o) : o_(o) {
    if (!o_.cert.empty()) {
      std::string error;
      ctx_ = kws_bench::make_tls_context(true, "", o_.cert, o_.key, error);
      if (!ctx_) die(error);
    }
    ep_ = ::epoll_create1(0);
    lfd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (ep_ < 0 || lfd_ < 0) die("epoll_create1/socket: " + std::string(std::strerror(errno)));
    int one = 1;
    ::setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<std::uint16_t>(o_.port));
    if (::inet_pton(AF_INET, o_.host.c_str(), &sa.sin_addr) != 1) die("--listen must be an IPv4 address");
    if (::bind(lfd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(lfd_, 4096) != 0)
      die("bind/listen: " + std::string(std::strerror(errno)));
    socklen_t len = sizeof sa;
    ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&sa), &len);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = lfd_;
    ::epoll_ctl(ep_, EPOLL_CTL_ADD, lfd_, &ev);
    std::printf("listening %d\n", ntohs(sa.sin_port));
    std::fflush(stdout);
  }

  [[noreturn]] void run() {
    epoll_event evs[256];
    for (;;) {
      const int n = ::epoll_wait(ep_, evs, 256, -1);
      for (int i = 0; i < n; ++i) {
        const int fd = evs[i].data.fd;
        if (fd == lfd_) {
          accept_all();
          continue;
        }
        auto* p = fd < static_cast<int>(peers_.size()) ? peers_[static_cast<std::size_t>(fd)].get() : nullptr;
        if (!p) continue;
        // Either direction may be waiting on the other under TLS, so both get a turn on any event.
        if (!flush(*p) || !receive(*p)) {
          drop(fd);
          continue;
        }
        update_events(*p);
      }
    }
  }

 private:
  void accept_all() {
    for (;;) {
      const int fd = ::accept4(lfd_, nullptr, nullptr, SOCK_NONBLOCK);
      if (fd < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED)
          std::fprintf(stderr, "kws_tcp_echo: accept: %s\n", std::strerror(errno));
        return;
      }
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (static_cast<std::size_t>(fd) >= peers_.size()) peers_.resize(static_cast<std::size_t>(fd) + 1);
      auto p = std::make_unique<peer>();
      p->t.fd = fd;
      std::string error;
      if (ctx_ && !p->t.start_tls(ctx_, true, "", error)) {
        std::fprintf(stderr, "kws_tcp_echo: %s\n", error.c_str());
        p->t.close();
        continue;
      }
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = fd;
      p->events = EPOLLIN;
      ::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
      peers_[static_cast<std::size_t>(fd)] = std::move(p);
    }
  }

  void drop(int fd) {
    auto& p = peers_[static_cast<std::size_t>(fd)];
    ::epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
    p->t.close();
    p.reset();
  }

  // Reads until the socket has nothing more (or the backlog cap), marking complete frames. False: drop it.
  bool receive(peer& p) {
    while (p.complete - p.sent < backlog_cap) {
      if (p.end == p.buf.size) {
        if (p.sent > 0) {
          std::memmove(p.buf.data.get(), p.buf.data.get() + p.sent, p.end - p.sent);
          p.end -= p.sent;
          p.complete -= p.sent;
          p.sent = 0;
        }
        if (p.end == p.buf.size) p.buf.grow_to(std::max(first_buffer, 2 * p.buf.size), p.end);
      }
      const std::size_t room = p.buf.size - p.end;
      const auto n = p.t.recv(p.buf.data.get() + p.end, room);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
        if (errno != ECONNRESET)
          std::fprintf(stderr, "kws_tcp_echo: receive: %s\n",
                       errno == EPROTO ? kws_bench::tls_errors().c_str() : std::strerror(errno));
        return false;
      }
      if (n == 0) return false;
      p.end += static_cast<std::size_t>(n);
      while (p.end - p.complete >= 4) {
        const unsigned char* h = p.buf.data.get() + p.complete;
        const auto size = static_cast<std::int32_t>(
            (std::uint32_t{h[0]} << 24) | (std::uint32_t{h[1]} << 16) | (std::uint32_t{h[2]} << 8) | h[3]);
        if (size < 0 || static_cast<std::uint64_t>(size) > o_.max_frame) {
          std::fprintf(stderr, "kws_tcp_echo: connection closed: frame size %d outside 0..%llu\n", size,
                       static_cast<unsigned long long>(o_.max_frame));
          return false;
        }
        if (p.end - p.complete < 4 + static_cast<std::size_t>(size)) break;
        p.complete += 4 + static_cast<std::size_t>(size);
      }
      if (!flush(p)) return false;
      // A plain read that did not fill the room emptied the socket; TLS may hold a further record.
      if (!p.t.ssl && static_cast<std::size_t>(n) < room) return true;
    }
    return true;
  }

  bool flush(peer& p) {
    while (p.sent < p.complete) {
      const auto n = p.t.send(p.buf.data.get() + p.sent, p.complete - p.sent);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
        if (errno != ECONNRESET && errno != EPIPE)
          std::fprintf(stderr, "kws_tcp_echo: send: %s\n",
                       errno == EPROTO ? kws_bench::tls_errors().c_str() : std::strerror(errno));
        return false;
      }
      p.sent += static_cast<std::size_t>(n);
    }
    if (p.sent == p.end) p.sent = p.complete = p.end = 0;
    return true;
  }

  void update_events(peer& p) {
    std::uint32_t want = 0;
    if (p.complete - p.sent < backlog_cap) want |= EPOLLIN;
    if (p.sent < p.complete || p.t.tls_wants_write) want |= EPOLLOUT;
    if (want == p.events) return;
    p.events = want;
    epoll_event ev{};
    ev.events = want;
    ev.data.fd = p.t.fd;
    ::epoll_ctl(ep_, EPOLL_CTL_MOD, p.t.fd, &ev);
  }

  options o_;
  SSL_CTX* ctx_ = nullptr;
  int ep_ = -1;
  int lfd_ = -1;
  std::vector<std::unique_ptr<peer>> peers_;
};

}  // namespace

int main(int argc, char** argv) {
  const auto o = parse(argc, argv);
  std::signal(SIGPIPE, SIG_IGN);
  // One descriptor per connection; the idle cases hold thousands.
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &rl);
  server s(o);
  s.run();
}
