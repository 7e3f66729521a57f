// Drives a real kws::connection, server side, with hostile WebSocket bytes, in-process: one end of an AF_UNIX
// socketpair goes to kws::async_accept, the other is the peer. The peer sends a valid upgrade request and
// then the input, in chunks whose sizes come from the input, and shuts down its sending side; it reads
// everything the connection sends until the end. The kws side reads frames and echoes each back, with the
// whole-frame calls, the non-waiting try_ calls, corking and a closing handshake chosen by the input, and
// stops at the first read error (sometimes closing first, sometimes just letting go).
//
// Checked: the accept succeeds; every frame read passes check_message and is at most max + 4 bytes; a read
// ends with an error of its own, never operation_aborted or a timeout; no echo write fails; the close never
// times out; everything ends within a bound (a hang is a finding). What the peer received is a 101 answer
// with the right Sec-WebSocket-Accept, then server frames only: unmasked, FIN, binary / pong / close, each
// header valid for parse_header (which refuses lengths not in their shortest form), a valid close payload,
// nothing after the close, and the binary messages exactly the frames echoed, in order (all of them, and a
// close last, when the kws side closed; a prefix when it let go, which may cut the last frame).
//
// Input layout (FuzzedDataProvider): from the end, a flags byte (maximum frame size, small socket buffers,
// the number of chunk sizes), eight operation bytes (cycled, one per frame), the chunk sizes; from the front,
// the bytes sent after the upgrade request (at most 64 KiB).
#include "fuzz_check.hpp"
#include "ws/frame.hpp"

#include <kws/accept.hpp>
#include <kws/connection.hpp>
#include <kws/frame.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <fuzzer/FuzzedDataProvider.h>

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace ws = kws::detail::ws;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using local = asio::local::stream_protocol;
using bytes = std::span<const unsigned char>;

constexpr std::size_t max_input_bytes = 64 * 1024;
constexpr std::string_view upgrade_request =
    "GET / HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
// RFC 6455 1.3: the accept value for that key.
constexpr std::string_view expected_accept = "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
// Far above what one run takes (a few milliseconds); reaching it is a hang.
constexpr auto run_bound = std::chrono::seconds(5);

bytes bytes_of(const beast::flat_buffer& b) {
  return {static_cast<const unsigned char*>(b.data().data()), b.size()};
}

// What the kws side does around one frame: one byte of the input's operation program.
enum op_bits : unsigned {
  op_try_read = 1u << 0,         // try_read_frame first; async_read_frame when it needs more bytes
  op_try_write = 1u << 1,        // echo with try_write_frame; async_write_frame when its buffer is full
  op_cork = 1u << 2,             // corked around the echo (uncorked before any wait for the peer)
  op_close_on_error = 1u << 3,   // at the read error: async_close before letting the connection go
  op_close_after_echo = 7u << 4  // all three bits: async_close after this frame's echo
};

// The accepting side: reads frames and echoes them until a read fails.
class server {
 public:
  server(asio::io_context& io, std::size_t max_frame, std::array<std::uint8_t, 8> ops)
      : io_(io), max_frame_(max_frame), ops_(ops) {}

  void start(int fd) {
    tcp::socket s(io_);
    error_code ec;
    // An AF_UNIX socket under tcp::socket: reads, writes and shutdown work alike; the TCP-only calls
    // (remote_endpoint, no_delay) fail, and async_accept ignores their failures.
    s.assign(tcp::v4(), fd, ec);
    KWS_FUZZ_CHECK(!ec);
    kws::accept_config cfg;
    cfg.max_frame_bytes = max_frame_;
    cfg.idle_timeout = std::chrono::milliseconds(0);
    // Also bounds the closing handshake. The peer always ends its side, so no close needs this long; short,
    // so that a close that never completes shows up at once (the context runs out of work).
    cfg.handshake_timeout = std::chrono::seconds(1);
    kws::async_accept(
        std::move(s), cfg,
        [](const kws::http_request_info&, std::function<void(kws::accept_decision)> done) {
          done(kws::accept_decision::upgrade());
        },
        [this](error_code ec, kws::connection c, const kws::http_request_info& info) {
          KWS_FUZZ_CHECK(!ec);
          KWS_FUZZ_CHECK(info.websocket_upgrade);
          KWS_FUZZ_CHECK(c.is_open() && c.max_frame_bytes() == max_frame_);
          conn_ = std::move(c);
          loop();
        });
  }

  bool done() const { return done_; }
  /// The kws side ended with a closing handshake that completed.
  bool closed() const { return closed_; }
  const std::vector<std::vector<unsigned char>>& echoed() const { return echoed_; }

 private:
  unsigned next_op() { return ops_[op_index_++ % ops_.size()]; }

  void set_cork(bool on) {
    if (on == corked_) return;
    corked_ = on;
    conn_.cork(on);
  }

  // Reads and echoes while that completes at once; returns once an operation is pending or the end is
  // reached.
  void loop() {
    for (;;) {
      const unsigned op = next_op();
      frame_.clear();
      if (op & op_try_read) {
        error_code ec;
        const std::size_t n = conn_.try_read_frame(frame_, ec);
        if (ec) return read_ended(ec, op);
        if (n != 0) {
          if (!echo(n, op)) return;
          continue;
        }
        // Nothing taken: the reader's buffer holds no part of a message.
        KWS_FUZZ_CHECK(frame_.size() == 0);
      }
      set_cork(false);
      conn_.async_read_frame(frame_, [this, op](error_code ec, std::size_t n) {
        if (ec) return read_ended(ec, op);
        if (echo(n, op)) loop();
      });
      return;
    }
  }

  // Checks the frame read and echoes it. True when that completed at once and reading goes on.
  bool echo(std::size_t n, unsigned op) {
    const bytes f = bytes_of(frame_);
    KWS_FUZZ_CHECK(n == f.size());
    KWS_FUZZ_CHECK(n >= kws::frame_header_bytes && n <= max_frame_ + kws::frame_header_bytes);
    KWS_FUZZ_CHECK(!kws::check_message(f, max_frame_));
    echoed_.emplace_back(f.begin(), f.end());
    set_cork((op & op_cork) != 0);
    if (op & op_try_write) {
      error_code ec;
      if (conn_.try_write_frame(frame_.data(), ec)) {
        KWS_FUZZ_CHECK(!ec);
        return after_echo(op);
      }
      KWS_FUZZ_CHECK(!ec);
    }
    conn_.async_write_frame(frame_.data(), [this, op](error_code ec, std::size_t written) {
      KWS_FUZZ_CHECK(!ec);
      KWS_FUZZ_CHECK(written == frame_.size());
      if (after_echo(op)) loop();
    });
    return false;
  }

  bool after_echo(unsigned op) {
    if ((op & op_close_after_echo) != op_close_after_echo) return true;
    close();
    return false;
  }

  void read_ended(error_code ec, unsigned op) {
    // Nothing here aborts the connection or has a timer running for reads.
    KWS_FUZZ_CHECK(ec != asio::error::operation_aborted);
    KWS_FUZZ_CHECK(ec != beast::error::timeout);
    if (op & op_close_on_error) return close();
    release();
  }

  void close() {
    conn_.async_close(kws::close_code::normal, [this](error_code ec) {
      KWS_FUZZ_CHECK(ec != beast::error::timeout);
      KWS_FUZZ_CHECK(ec != asio::error::operation_aborted);
      closed_ = true;
      release();
    });
  }

  // Lets the connection go: its socket closes, and the peer's reads and writes end.
  void release() {
    conn_ = kws::connection();
    done_ = true;
  }

  asio::io_context& io_;
  std::size_t max_frame_;
  std::array<std::uint8_t, 8> ops_;
  std::size_t op_index_ = 0;
  kws::connection conn_;
  beast::flat_buffer frame_;
  bool corked_ = false;
  bool closed_ = false;
  bool done_ = false;
  std::vector<std::vector<unsigned char>> echoed_;
};

// The client side: writes the request and the input in chunks, reads everything until the end.
class peer {
 public:
  peer(asio::io_context& io, std::vector<unsigned char> out, std::vector<std::size_t> plan)
      : sock_(io), out_(std::move(out)), plan_(std::move(plan)), rbuf_(64 * 1024) {}

  void start(int fd) {
    error_code ec;
    sock_.assign(local(), fd, ec);
    KWS_FUZZ_CHECK(!ec);
    write_next();
    read_next();
  }

  bool done() const { return writer_done_ && reader_done_; }
  const std::vector<unsigned char>& received() const { return received_; }

 private:
  void write_next() {
    if (pos_ == out_.size()) {
      error_code ignored;
      sock_.shutdown(local::socket::shutdown_send, ignored);
      writer_done_ = true;
      return;
    }
    std::size_t n = out_.size() - pos_;
    if (!plan_.empty()) n = std::min(n, plan_[chunk_++ % plan_.size()]);
    asio::async_write(sock_, asio::buffer(out_.data() + pos_, n), [this](error_code ec, std::size_t written) {
      pos_ += written;
      if (ec) {
        // The kws side let its socket go before reading all of the input.
        KWS_FUZZ_CHECK(ec == asio::error::broken_pipe || ec == asio::error::connection_reset);
        writer_done_ = true;
        return;
      }
      write_next();
    });
  }

  void read_next() {
    sock_.async_read_some(asio::buffer(rbuf_), [this](error_code ec, std::size_t n) {
      received_.insert(received_.end(), rbuf_.begin(), rbuf_.begin() + static_cast<std::ptrdiff_t>(n));
      if (ec) {
        // The end of what kws sends: its shutdown, or its socket closed (with input unread: a reset).
        KWS_FUZZ_CHECK(ec == asio::error::eof || ec == asio::error::connection_reset);
        reader_done_ = true;
        return;
      }
      read_next();
    });
  }

  local::socket sock_;
  std::vector<unsigned char> out_;
  std::vector<std::size_t> plan_;
  std::size_t pos_ = 0;
  std::size_t chunk_ = 0;
  std::vector<unsigned char> rbuf_;
  std::vector<unsigned char> received_;
  bool writer_done_ = false;
  bool reader_done_ = false;
};

// What a server may send after the handshake, checked against what the kws side echoed.
void check_server_output(bytes got, const server& s, std::size_t max_frame) {
  const std::string_view text(reinterpret_cast<const char*>(got.data()), got.size());
  const auto head_end = text.find("\r\n\r\n");
  KWS_FUZZ_CHECK(head_end != std::string_view::npos);
  const auto head = text.substr(0, head_end + 2);
  KWS_FUZZ_CHECK(head.starts_with("HTTP/1.1 101 "));
  KWS_FUZZ_CHECK(head.find(expected_accept) != std::string_view::npos);

  bytes in = got.subspan(head_end + 4);
  const auto& echoed = s.echoed();
  std::size_t binary = 0;
  bool close_seen = false;
  bool cut = false;
  while (!in.empty()) {
    ws::frame_header h;
    error_code ec;
    const std::size_t hn = ws::parse_header(in, h, ec);
    KWS_FUZZ_CHECK(!ec);
    if (hn == 0 || in.size() - hn < h.length) {
      cut = true;
      break;
    }
    KWS_FUZZ_CHECK(!close_seen);  // nothing follows a close
    KWS_FUZZ_CHECK(!h.masked);
    KWS_FUZZ_CHECK(h.fin);
    KWS_FUZZ_CHECK(h.op == ws::op_binary || h.op == ws::op_pong || h.op == ws::op_close);
    const bytes payload = in.subspan(hn, static_cast<std::size_t>(h.length));
    if (h.op == ws::op_binary) {
      KWS_FUZZ_CHECK(!kws::check_message(payload, max_frame));
      KWS_FUZZ_CHECK(binary < echoed.size());
      KWS_FUZZ_CHECK(
          std::equal(payload.begin(), payload.end(), echoed[binary].begin(), echoed[binary].end()));
      ++binary;
    } else if (h.op == ws::op_close) {
      std::uint16_t code = 0;
      KWS_FUZZ_CHECK(!ws::check_close_payload(payload, code));
      close_seen = true;
    }
    in = in.subspan(hn + payload.size());
  }
  if (s.closed()) {
    // A completed close has sent everything before it, and the close itself.
    KWS_FUZZ_CHECK(!cut);
    KWS_FUZZ_CHECK(close_seen);
    KWS_FUZZ_CHECK(binary == echoed.size());
  }
}

void set_small_buffers(int fd) {
  const int n = 4096;
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &n, sizeof n);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &n, sizeof n);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // A write to a socket whose peer is gone must fail with EPIPE, not end the process.
  std::signal(SIGPIPE, SIG_IGN);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const unsigned flags = in.ConsumeIntegral<std::uint8_t>();
  // Mostly small, so that 1009 is reachable; 64 KiB lets payloads be read straight into the message.
  constexpr std::array<std::size_t, 4> max_frames{4096, 4096, 64 * 1024, 100};
  const std::size_t max_frame = max_frames[flags & 3];
  const bool small_buffers = (flags & 4) != 0;
  std::array<std::uint8_t, 8> ops{};
  for (auto& op : ops) op = in.ConsumeIntegral<std::uint8_t>();
  std::vector<std::size_t> plan((flags >> 3) & 7);
  for (auto& n : plan) n = in.ConsumeIntegralInRange<std::size_t>(1, 4096);
  std::vector<unsigned char> out(upgrade_request.begin(), upgrade_request.end());
  const auto input = in.ConsumeBytes<unsigned char>(max_input_bytes);
  out.insert(out.end(), input.begin(), input.end());

  int fds[2];
  KWS_FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  if (small_buffers) {
    set_small_buffers(fds[0]);
    set_small_buffers(fds[1]);
  }

  static asio::io_context io;
  io.restart();
  {
    server kws_side(io, max_frame, ops);
    peer client(io, std::move(out), std::move(plan));
    kws_side.start(fds[0]);
    client.start(fds[1]);
    io.run_for(run_bound);
    if (!kws_side.done() || !client.done()) {
      // Either still busy at the bound, or nothing left to run while something waits for a handler that
      // will never be called.
      std::fprintf(stderr, "websocket_fuzz: %s %llds, with the kws side %s and the peer %s\n",
                   io.stopped() ? "nothing left to run before" : "still running after",
                   static_cast<long long>(run_bound.count()), kws_side.done() ? "done" : "pending",
                   client.done() ? "done" : "pending");
      std::abort();
    }
    KWS_FUZZ_CHECK(io.stopped());
    check_server_output(client.received(), kws_side, max_frame);
  }
  return 0;
}
