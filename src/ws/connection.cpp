// kws::connection's WebSocket, and kws::dialer's and kws::async_accept's handshakes. Beast does the HTTP of
// the handshakes; after them the connection frames its messages itself (src/ws_frame.hpp): many messages per
// read and per write, one completion per operation, no per-message composed operations. All the templates
// are instantiated here, once for plain TCP and once for TLS.
#include "io/dial_arena.hpp"
#include "ws/dialer_state.hpp"
#include "io/lazy_optional.hpp"
#include "io/read_buffer.hpp"
#include "io/read_wait.hpp"
#include "io/tick_list.hpp"
#include "ws/frame.hpp"

#include <kws/accept.hpp>
#include <kws/buffer_budget.hpp>
#include <kws/connection.hpp>
#include <kws/dialer.hpp>
#include <kws/errc.hpp>
#include <kws/forward_proxy.hpp>
#include <kws/frame.hpp>

#include <boost/asio/append.hpp>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/beast/websocket/error.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>

namespace kws::detail {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using boost::system::error_code;
using tcp = asio::ip::tcp;

using plain_next = beast::tcp_stream;
using tls_next = beast::ssl_stream<beast::tcp_stream>;

// Reads take what the socket has. Over plain TCP the buffer exists only while there are bytes (see
// start_read), so every read takes up to hot_read_bytes. Over TLS a read waits with its buffer: it takes up
// to hot_read_bytes once a read has filled its buffer (a burst of pipelined messages), cold_read_bytes
// otherwise (what an idle TLS connection keeps waiting).
constexpr std::size_t cold_read_bytes = small_read_buffer_bytes;
constexpr std::size_t hot_read_bytes = read_buffer_bytes;
// The rest of a payload this large, with nothing else buffered, is read straight into the message, at most
// max_direct_read_bytes a read.
constexpr std::size_t direct_read_bytes = 16 * 1024;
constexpr std::size_t max_direct_read_bytes = 1024 * 1024;
// A message's buffer starts at up to this much (less for a shorter message), then doubles as bytes arrive,
// never past the end of what is being read: a size that a header merely claims reserves at most this much
// ahead of the bytes. 256 KiB takes a typical large response (100 KiB) in one allocation and no copy: with
// 64 KiB, the copy into a second buffer cost the proxy about half again its CPU per 100 KiB round trip.
constexpr std::size_t first_message_bytes = 256 * 1024;
// Encoded messages gather up to this much before a write is waited for (see cork).
constexpr std::size_t cork_limit_bytes = 64 * 1024;
// Buffers larger than this are given back once empty, so that idle connections stay small.
constexpr std::size_t keep_buffer_bytes = 64 * 1024;

template <class Buffer>
void trim(Buffer& b, std::size_t keep = keep_buffer_bytes) {
  if (b.size() == 0 && b.capacity() > keep) b = Buffer();
}

using input_buffer = read_flat_buffer;

bool is_truncation(const error_code& ec) {
  return ec == asio::error::eof || ec == asio::ssl::error::stream_truncated;
}

// One WebSocket connection after its handshake: RFC 6455 framing over a TCP or TLS stream, client role
// (masks what it sends, refuses masked frames) or server role (the opposite).
//
// Reads: bytes from the socket gather in `in_`, and are parsed there: control frames are answered (a ping
// with a pong) or taken (a close), data frames are unmasked into the reader's buffer, fragments joined; a
// message completes the read. A read completes from what is buffered without touching the socket, so a batch
// of messages costs one system call. The rest of a large payload is read straight into the message.
//
// Writes: each message is encoded (and masked, as a client) into `out_`, which one write at a time sends
// whole; while it is on the way, further messages gather behind it. A write completes when its bytes have
// been handed to the socket, or, while corked or through try_write_frame, at once (taken while less than
// cork_limit_bytes wait, so at most that plus one message gathers that way).
// Control frames (pongs, pings, the close) take the same path, in order.
template <class Stream>
class ws_connection final : public connection_impl {
 public:
  static constexpr bool tls = std::is_same_v<Stream, tls_next>;

  template <class... Args>
  ws_connection(std::string url, std::size_t max_frame_bytes, bool client, Args&&... args)
      : stream_(std::in_place, std::forward<Args>(args)...),
        url_(std::move(url)),
        max_frame_bytes_(max_frame_bytes),
        client_(client) {}

  Stream& stream() { return *stream_; }
  /// The TCP socket, before and after the handshake.
  asio::ip::tcp::socket& sock() { return sock_ ? *sock_ : beast::get_lowest_layer(*stream_).socket(); }
  beast::tcp_stream& tcp() { return beast::get_lowest_layer(*stream_); }
  /// The handshake reads into this; what follows the HTTP header there is the first frames.
  input_buffer& input() { return in_; }
  void set_url(std::string url) { url_ = std::move(url); }

  /// The handshake is done: frames from here on. An idle timeout of zero means none.
  void handshake_done(std::chrono::milliseconds idle_timeout, bool keepalive_pings,
                      std::chrono::milliseconds close_timeout) {
    tcp().expires_never();
    if constexpr (!tls) {
      // From here on only the socket is used: Beast's stream (and the timers it keeps for the handshake's
      // deadline) goes.
      sock_.emplace(stream_->release_socket());
      stream_.reset();
      waiter_ = reactor_of(*sock_);
      if (on_io_context(sock_->get_executor())) wait_op_.emplace(this, &ws_connection::readable_cb);
    }
    open_ = true;
    close_timeout_ = close_timeout;
    if (idle_timeout.count() > 0) {
      idle_timeout_ = idle_timeout;
      keepalive_pings_ = keepalive_pings;
      arm_idle_timer();
    }
  }

  asio::any_io_executor get_executor() override { return sock().get_executor(); }
  bool is_open() const override { return open_ && !aborted_ && !closed_ && !timed_out_; }
  const std::string& url() const override { return url_; }
  std::size_t max_frame_bytes() const override { return max_frame_bytes_; }
  std::size_t pending_write_bytes() const override { return bs_ ? bs_->write.size() : 0; }

  void cork(bool on) override {
    corked_ = on;
    if (!on) start_flush();
  }
  void set_buffer_budget(std::shared_ptr<buffer_budget> budget) override {
    release_budget();
    budget_ = std::move(budget);
  }
  ~ws_connection() override { release_budget(); }
  bool on_read_wait(std::function<void()> f) override {
    on_read_wait_ = std::move(f);
    return true;
  }

  // ---- reads ------------------------------------------------------------------------------------------

  std::span<const unsigned char> readable() const override {
    return bs_ ? bytes_of(bs_->read.data()) : std::span<const unsigned char>();
  }
  void consume(std::size_t n) override {
    rbuf().consume(n);
    trim(rbuf());
  }

  void fill(error_code& ec) override {
    rbuf().clear();
    read_frame(rbuf(), ec);
    if (ec) rbuf().clear();
  }

  void async_fill(done_handler handler) override {
    rbuf().clear();
    io_handler h{handler.executor, asio::any_completion_handler<void(error_code, std::size_t)>(
                                       [this, keep = shared_from_this(), h = std::move(handler.handler)](
                                           error_code ec, std::size_t) mutable {
                                         if (ec) rbuf().clear();
                                         std::move(h)(ec);
                                       })};
    async_read_frame(rbuf(), std::move(h));
  }

  std::size_t read_frame(beast::flat_buffer& out, error_code& ec) override {
    release_held();
    if ((ec = read_gate())) return 0;
    const auto before = out.size();
    const sync_scope scope(*this);
    sync_out_ = &out;
    for (;;) {
      const auto r = advance(&out, ec);
      if (out_.size() != 0) sync_flush();
      if (r == step::message) return finish_message(out, before, ec);
      if (r != step::need_more) {
        if (teardown_after_flush_) teardown();
        return 0;
      }
      const auto b = read_buffer(&out);
      const auto n = sync_read_some(b.buffer, ec);
      took(b, n);
      if (ec) {
        ec = read_failed(ec);
        return 0;
      }
    }
  }

  std::size_t try_read_frame(beast::flat_buffer& out, error_code& ec) override {
    release_held();
    if ((ec = read_gate())) return 0;
    if (!whole_message_buffered()) return 0;
    const auto before = out.size();
    const auto r = advance(&out, ec);
    if (r == step::message) {
      const auto n = finish_message(out, before, ec);
      if (ec) return 0;
      return n;
    }
    if (r == step::ended) ec = read_error_;
    return 0;
  }

  bool try_write_frame(asio::const_buffer frame, error_code& ec) override {
    if (!(ec = write_gate())) ec = check_message(bytes_of(frame), max_frame_bytes_);
    if (ec) return true;
    if (out_.size() >= cork_limit_bytes) return false;
    encode(ws::op_binary, bytes_of(frame));
    if (!corked_) start_flush();
    return true;
  }

  void async_read_frame(beast::flat_buffer& out, io_handler handler) override {
    release_held();
    if (auto ec = read_gate()) return post(std::move(handler), ec, 0);
    rd_.emplace(read_op{std::move(handler), &out, out.size()});
    pump(true);
  }

  // ---- writes -----------------------------------------------------------------------------------------

  std::size_t write_some(asio::const_buffer in, error_code& ec) override {
    const sync_scope scope(*this);
    const auto consumed = encode_stream(in, ec);
    if (!ec) sync_flush(ec);
    return consumed;
  }

  void async_write_some(asio::const_buffer in, io_handler handler) override {
    error_code ec;
    const auto consumed = encode_stream(in, ec);
    finish_write_call(std::move(handler), ec, consumed);
  }

  void write_frame(asio::const_buffer frame, error_code& ec) override {
    const sync_scope scope(*this);
    if ((ec = write_gate())) return;
    if ((ec = check_message(bytes_of(frame), max_frame_bytes_))) return;
    encode(ws::op_binary, bytes_of(frame));
    sync_flush(ec);
  }

  void async_write_frame(asio::const_buffer frame, io_handler handler) override {
    error_code ec = write_gate();
    if (!ec) ec = check_message(bytes_of(frame), max_frame_bytes_);
    if (!ec) encode(ws::op_binary, bytes_of(frame));
    finish_write_call(std::move(handler), ec, ec ? 0 : frame.size());
  }

  // ---- closing ----------------------------------------------------------------------------------------

  void close(std::uint16_t code, error_code& ec) override {
    ec.clear();
    if (aborted_) {
      ec = asio::error::operation_aborted;
      return;
    }
    const sync_scope scope(*this);
    if (bs_) bs_->write.clear();
    cancel_timers();
    if (!close_sent_) send_close(code);
    sync_flush(ec);
    // Wait for the peer's close, dropping what comes before it (no reader is left to take it).
    while (!ec && !stream_broken_) {
      const auto r = advance(nullptr, ec);
      if (out_.size() != 0) sync_flush();
      if (r != step::need_more) break;
      const auto b = read_buffer(nullptr);
      const auto n = sync_read_some(b.buffer, ec);
      took(b, n);
      if (ec) read_failed(ec);
    }
    ec = (ec == asio::error::eof) ? error_code() : ec;
    if (!ec && read_error_ && read_error_ != asio::error::eof && !peer_closed_) ec = read_error_;
    teardown();
  }

  void async_close(std::uint16_t code, done_handler handler) override {
    if (aborted_) return post(std::move(handler), error_code(asio::error::operation_aborted));
    if (cl_) return post(std::move(handler), error_code(asio::error::in_progress));
    if (bs_) bs_->write.clear();
    cl_.emplace(std::move(handler));
    corked_ = false;
    if (!close_sent_) send_close(code);
    start_flush();
    // The closing handshake is bounded by a timeout of its own, not by the idle timeout.
    idle_tick_.cancel();
    if (!close_timer_) close_timer_ = std::make_unique<asio::steady_timer>(sock().get_executor());
    closing_deadline_ = true;
    close_timer_->expires_after(close_timeout_);
    close_timer_->async_wait([w = weak_from_this(), this](error_code ec) {
      const auto keep = w.lock();
      if (ec || !keep || !cl_) return;
      close_timed_out_ = true;
      kill_socket();
      // An operation in flight completes with the closed socket and finishes the close; with none, nothing
      // else would.
      stream_broken_ = true;
      if (!reading_ && !writing_) maybe_finish_close();
    });
    // The peer's close comes through reads: with no reader waiting, read for it here.
    if (!reading_) return pump(true);
    maybe_finish_close(true);
  }

  void abort() noexcept override {
    aborted_ = true;
    kill_socket();
  }

  std::uint16_t peer_close_code() const override { return peer_close_code_; }

 private:
  // blocked: the next frame's bytes are not covered by the buffer budget (see set_buffer_budget).
  enum class step { need_more, message, ended, blocked };

  // Held by every socket operation in flight: keeps the connection alive, and, when the operation is
  // destroyed without ever running (its io_context was destroyed first), drops the callers' handlers that
  // were waiting on it. They may own the very handle that owns this connection; Asio's own operations hold
  // their handlers, and are destroyed with the context, so that no such cycle outlives it. Every waiting
  // handler (read, write, close) has a read or a write in flight while it waits.
  class op_guard {
   public:
    explicit op_guard(std::shared_ptr<ws_connection> c) noexcept : c_(std::move(c)) {}
    op_guard(op_guard&& o) noexcept : c_(std::move(o.c_)), ran_(o.ran_) {}
    op_guard& operator=(op_guard&&) = delete;
    ~op_guard() {
      if (c_ && !ran_) c_->drop_waiting();
    }
    void ran() noexcept { ran_ = true; }

   private:
    std::shared_ptr<ws_connection> c_;
    bool ran_ = false;
  };

  std::shared_ptr<ws_connection> shared_from_this() {
    return std::static_pointer_cast<ws_connection>(connection_impl::shared_from_this());
  }

  void drop_waiting() noexcept {
    rd_.reset();
    wr_.reset();
    cl_.reset();
  }

  // While a blocking call runs, nothing asynchronous starts (its context may have nobody to run it).
  struct sync_scope {
    explicit sync_scope(ws_connection& c) : c(c) { c.sync_ = true; }
    ~sync_scope() { c.sync_ = false; }
    sync_scope(const sync_scope&) = delete;
    sync_scope& operator=(const sync_scope&) = delete;
    ws_connection& c;
  };

  struct read_op {
    io_handler handler;
    beast::flat_buffer* out;
    std::size_t before;
  };
  struct write_op {
    io_handler handler;
    std::size_t n;
    std::uint64_t end;  // enqueued_ once the write's bytes are sent
  };
  struct read_target {
    asio::mutable_buffer buffer;
    bool direct = false;  // straight into the message
  };

  // ---- completions ------------------------------------------------------------------------------------

  template <class Handler, class... Args>
  void post(Handler h, Args... args) {
    auto ex = std::move(h.executor);
    asio::post(ex, asio::append(std::move(h.handler), args...));
  }
  // From inside one of this connection's own completions: run the caller's handler now when it may run on
  // this thread, as a composed operation's completion would.
  template <class Handler, class... Args>
  void complete(Handler h, Args... args) {
    auto ex = std::move(h.executor);
    asio::dispatch(ex, asio::append(std::move(h.handler), args...));
  }

  // An operation that was pending when the socket was closed may fail on its next step with whatever the
  // closed socket says (EBADF, say); callers are promised operation_aborted, or timeout after the idle timer
  // or the closing handshake's ran out.
  error_code after_abort(error_code ec) const {
    if (timed_out_ || close_timed_out_) return beast::error::timeout;
    if (aborted_) return asio::error::operation_aborted;
    return ec;
  }
  error_code read_gate() const {
    if (aborted_ || timed_out_) return after_abort(asio::error::operation_aborted);
    return read_error_;
  }
  error_code write_gate() const {
    if (aborted_ || timed_out_) return after_abort(asio::error::operation_aborted);
    if (write_error_) return write_error_;
    if (close_sent_) return websocket::error::closed;
    return {};
  }

  // ---- parsing ------------------------------------------------------------------------------------------

  // Takes what `in_` holds: answers control frames, unmasks data into `out` (dropped when null, while the
  // close waits), until a whole message, or the end (read_error_ set, `ec` too), or the bytes run out.
  step advance(beast::flat_buffer* out, error_code& ec) {
    for (;;) {
      if (!in_frame_) {
        const auto in = bytes_of(in_.data());
        ws::frame_header h;
        const auto header = ws::parse_header(in, h, ec);
        if (ec) return protocol_failure(ec);
        if (header == 0) return step::need_more;
        if (h.masked == client_) {
          ec = client_ ? websocket::error::bad_masked_frame : websocket::error::bad_unmasked_frame;
          return protocol_failure(ec);
        }
        if (ws::is_control(h.op)) {
          const auto len = static_cast<std::size_t>(h.length);
          if (in.size() < header + len) return step::need_more;
          unsigned char payload[ws::max_control_payload];
          ws::apply_mask(payload, in.data() + header, len, h.key, 0);  // the key is zero when unmasked
          in_.consume(header + len);
          const std::span<const unsigned char> p(payload, len);
          if (h.op == ws::op_ping) {
            pong(p);
          } else if (h.op == ws::op_close) {
            return peer_close(p, ec);
          }
          continue;
        }
        if (h.op == ws::op_continuation && !msg_open_) {
          ec = websocket::error::bad_continuation;
          return protocol_failure(ec);
        }
        if ((h.op == ws::op_binary || h.op == ws::op_text) && msg_open_) {
          // A new message before the last one's final fragment (RFC 6455 5.4).
          ec = websocket::error::bad_data_frame;
          return protocol_failure(ec);
        }
        if (h.op == ws::op_text) msg_text_ = true;
        if (h.length > max_frame_bytes_ + frame_header_bytes - msg_bytes_) {
          // Refused at its header, nothing of it read: the connection fails with 1009, a message too big to
          // process (RFC 6455 7.1.7, 7.4.1).
          ec = errc::frame_too_large;
          return fail_connection(ec, 1009);
        }
        if (out && budget_ && !sync_ && h.length != 0) {
          const auto len = static_cast<std::size_t>(h.length);
          if (charged_ + len > budget_->capacity()) {
            // It could never be read: the budget is smaller than the message.
            ec = errc::frame_too_large;
            return fail_connection(ec, 1009);
          }
          if (!budget_->try_acquire(len)) return step::blocked;
          charged_ += len;
        }
        in_.consume(header);
        in_frame_ = true;
        frame_fin_ = h.fin;
        frame_masked_ = h.masked;
        frame_key_ = h.key;
        frame_left_ = static_cast<std::size_t>(h.length);
        frame_pos_ = 0;
        msg_open_ = true;
      }
      const auto take = std::min(in_.size(), frame_left_);
      if (take != 0) {
        if (out) {
          const auto src = static_cast<const unsigned char*>(in_.data().data());
          if (!make_room(*out, take)) return out_of_memory(ec);
          auto* dst = static_cast<unsigned char*>(out->prepare(take).data());
          if (frame_masked_) {
            ws::apply_mask(dst, src, take, frame_key_, frame_pos_);
          } else {
            std::memcpy(dst, src, take);
          }
          out->commit(take);
        }
        in_.consume(take);
        payload_taken(take);
      }
      if (frame_left_ != 0) return step::need_more;
      in_frame_ = false;
      if (!frame_fin_) continue;
      msg_open_ = false;
      msg_bytes_ = 0;
      held_ += std::exchange(charged_, 0);
      if (std::exchange(msg_text_, false) && out) {
        // Kafka frames are binary. As with any bad frame, the reader decides what happens next.
        ec = errc::invalid_message_type;
        return step::message;
      }
      if (out) return step::message;
    }
  }

  // Whether `in_` holds a whole message (or something advance() fails on), so that advance() completes
  // without leaving part of a message in the reader's buffer. Only between messages.
  bool whole_message_buffered() const {
    if (in_frame_ || msg_open_) return false;
    auto in = bytes_of(in_.data());
    for (;;) {
      ws::frame_header h;
      error_code ec;
      const auto header = ws::parse_header(in, h, ec);
      if (ec) return true;
      if (header == 0 || in.size() - header < h.length) return false;
      if (!ws::is_control(h.op) && h.fin) return true;
      in = in.subspan(header + static_cast<std::size_t>(h.length));
    }
  }

  void payload_taken(std::size_t n) {
    frame_left_ -= n;
    frame_pos_ += n;
    msg_bytes_ += n;
  }

  std::size_t finish_message(beast::flat_buffer& out, std::size_t before, error_code& ec) {
    if (ec) return 0;
    const auto msg = bytes_of(out.data()).subspan(before);
    ec = check_message(msg, max_frame_bytes_);
    return ec ? 0 : msg.size();
  }

  // The peer broke RFC 6455: tell it so (close 1002) and end.
  step protocol_failure(const error_code& ec) { return fail_connection(ec, 1002); }

  // RFC 6455 7.1.7, failing the connection: our close with `code`, then the end of TCP, without waiting for
  // the peer's answer.
  step fail_connection(const error_code& ec, std::uint16_t code) {
    read_error_ = ec;
    stream_broken_ = true;
    release_partial();
    if (!close_sent_) send_close(code);
    teardown_when_flushed();
    return step::ended;
  }

  void teardown_when_flushed() {
    teardown_after_flush_ = true;
    corked_ = false;
    start_flush();
    if (!writing_ && out_.size() == 0 && !cl_) teardown();
  }

  void pong(std::span<const unsigned char> payload) {
    // A peer that pings without reading gets no more than a buffer's worth of pongs: past that, the pong of
    // a later ping answers for this one (RFC 6455 5.5.3 allows answering the latest only).
    if (close_sent_ || out_.size() > cork_limit_bytes) return;
    encode(ws::op_pong, payload);
    if (!corked_) start_flush();
  }

  step peer_close(std::span<const unsigned char> payload, error_code& ec) {
    std::uint16_t code = 0;
    if ((ec = ws::check_close_payload(payload, code))) return protocol_failure(ec);
    peer_closed_ = true;
    stream_broken_ = true;  // nothing may follow a close
    release_partial();
    peer_close_code_ = code;
    ec = asio::error::eof;
    read_error_ = ec;
    if (!close_sent_) {
      // Echo the code; with none received, send none.
      close_sent_ = true;
      unsigned char echo[2] = {static_cast<unsigned char>(code >> 8), static_cast<unsigned char>(code)};
      encode(ws::op_close, std::span<const unsigned char>(echo, code ? 2 : 0));
    }
    teardown_when_flushed();
    return step::ended;
  }

  // ---- reading from the socket ------------------------------------------------------------------------

  read_target read_buffer(beast::flat_buffer* out) {
    if (out && in_frame_ && in_.size() == 0 && frame_left_ >= direct_read_bytes) {
      const auto n = std::min(frame_left_, max_direct_read_bytes);
      // Without room for more, take what in_ holds; advance() then meets the failure again and ends.
      if (make_room(*out, n)) return {out->prepare(n), true};
    }
    // Back from a burst, over TLS: give back its large buffer (over plain TCP, every wait gives it back).
    if (tls && in_.size() == 0 && !read_hot_) trim(in_, 2 * cold_read_bytes);
    return {in_.prepare(!tls || read_hot_ ? hot_read_bytes : cold_read_bytes), false};
  }

  void took(const read_target& t, std::size_t n) {
    if (n == 0) return;
    drained_ = false;
    active_ = true;
    if (!t.direct) {
      in_.commit(n);
      // A read that took more than a cold buffer holds is a burst: keep reading in bulk until one is small.
      read_hot_ = n >= cold_read_bytes;
      return;
    }
    auto* p = static_cast<unsigned char*>(t.buffer.data());
    if (frame_masked_) ws::apply_mask(p, p, n, frame_key_, frame_pos_);
    rd_out()->commit(n);
    payload_taken(n);
  }

  beast::flat_buffer* rd_out() { return rd_ ? rd_->out : sync_out_; }

  std::size_t sync_read_some(asio::mutable_buffer b, error_code& ec) {
    if constexpr (tls) {
      return stream_->read_some(b, ec);
    } else {
      return sock().read_some(b, ec);
    }
  }

  // A read of the socket failed: the error every later read gets.
  error_code read_failed(error_code ec) {
    ec = after_abort(ec);
    if (ec != asio::error::operation_aborted && ec != beast::error::timeout) {
      const bool partial = in_frame_ || msg_open_ || in_.size() != 0;
      if (partial) {
        ec = errc::truncated_frame;
      } else if (is_truncation(ec)) {
        ec = asio::error::eof;
      }
    }
    read_error_ = ec;
    stream_broken_ = true;
    release_partial();
    return ec;
  }

  // Runs the read side: what is buffered first, the socket when that is not enough. `initiating`: called
  // from an operation's initiating function, which must not complete it inline.
  void pump(bool initiating) {
    for (;;) {
      if (read_error_ && rd_) {
        auto op = std::move(*rd_);
        rd_.reset();
        initiating ? post(std::move(op.handler), read_error_, std::size_t{0})
                   : complete(std::move(op.handler), read_error_, std::size_t{0});
      }
      if (!rd_ && !cl_) return;
      if (stream_broken_) return maybe_finish_close(initiating);
      error_code ec;
      const auto r = advance(rd_ ? rd_->out : nullptr, ec);
      if (r == step::message) {
        auto op = std::move(*rd_);
        rd_.reset();
        const auto n = finish_message(*op.out, op.before, ec);
        initiating ? post(std::move(op.handler), ec, n) : complete(std::move(op.handler), ec, n);
        return;
      }
      if (r == step::ended) continue;
      if (r == step::blocked) {
        if (cl_ && rd_) {
          // Closing: the reader gets no more messages, and what comes before the peer's close is dropped
          // (and so needs no budget).
          auto op = std::move(*rd_);
          rd_.reset();
          initiating
              ? post(std::move(op.handler), error_code(asio::error::operation_aborted), std::size_t{0})
              : complete(std::move(op.handler), error_code(asio::error::operation_aborted), std::size_t{0});
          continue;
        }
        return wait_for_budget();
      }
      if (reading_) return;
      if constexpr (!tls) {
        // Bytes may be there that no wake-up would announce (the last read filled its buffer): read them
        // now, without a round through the event loop.
        if (!drained_ && read_now()) continue;
      }
      return start_read();
    }
  }

  // A read of what a plain socket holds now: true when it took bytes (or failed), false when there were none.
  bool read_now() {
    const auto t = read_buffer(rd_ ? rd_->out : nullptr);
    error_code ec;
    const auto n = recv_now(sock(), t.buffer.data(), t.buffer.size(), ec);
    if (ec == asio::error::would_block) {
      drained_ = true;
      return false;
    }
    took(t, n);
    if (ec) read_failed(ec);
    return true;
  }

  // Waits for the peer. Over TLS a read waits (its buffer held: OpenSSL decides what a read takes); over
  // plain TCP, whose socket is drained now, a wait for readability without a buffer (src/read_wait.hpp), so
  // that an idle connection holds no read buffer, and then read_now().
  void start_read() {
    reading_ = true;
    if (on_read_wait_) on_read_wait_();
    if constexpr (tls) {
      const auto t = read_buffer(rd_ ? rd_->out : nullptr);
      stream_->async_read_some(
          t.buffer, [this, g = op_guard(shared_from_this()), t](error_code ec, std::size_t n) mutable {
            g.ran();
            reading_ = false;
            took(t, n);
            if (ec) read_failed(ec);
            pump(false);
          });
    } else {
      if (in_.size() == 0) in_ = input_buffer();
      if (wait_op_) {
        wait_keep_ = shared_from_this();
        return wait_op_->start(*sock_, waiter_);
      }
      async_wait_readable(sock(), waiter_, [this, g = op_guard(shared_from_this())](error_code ec) mutable {
        g.ran();
        readable(ec);
      });
    }
  }

  // The end of a wait for readability (plain TCP).
  void readable(error_code ec) {
    reading_ = false;
    if (ec) {
      read_failed(ec);
    } else {
      drained_ = false;
    }
    pump(false);
  }
  static void readable_cb(void* self, const error_code& ec, bool destroyed) {
    auto* c = static_cast<ws_connection*>(self);
    const auto keep = std::move(c->wait_keep_);  // lets go of the connection after this, not before
    if (destroyed) return c->drop_waiting();     // as op_guard does for a handler's operation
    c->readable(ec);
  }

  // ---- writing ------------------------------------------------------------------------------------------

  void encode(std::uint8_t op, std::span<const unsigned char> payload) {
    unsigned char header[ws::max_header_bytes];
    ws::mask_key key;
    if (client_) key = ws::next_mask_key();
    const auto hn = ws::write_header(header, op, true, payload.size(), client_ ? &key : nullptr);
    auto* dst = static_cast<unsigned char*>(out_.prepare(hn + payload.size()).data());
    std::memcpy(dst, header, hn);
    if (client_) {
      ws::apply_mask(dst + hn, payload.data(), payload.size(), key, 0);
    } else if (!payload.empty()) {
      std::memcpy(dst + hn, payload.data(), payload.size());
    }
    out_.commit(hn + payload.size());
    enqueued_ += hn + payload.size();
  }

  void send_close(std::uint16_t code) {
    close_sent_ = true;
    unsigned char p[2] = {static_cast<unsigned char>(code >> 8), static_cast<unsigned char>(code)};
    encode(ws::op_close, std::span<const unsigned char>(p, 2));
  }

  // The byte stream's writes: whole frames are encoded, the bytes of an unfinished one held in wbuf(). Stops
  // after cork_limit_bytes of encoded messages (the caller writes the rest again), but always takes one.
  std::size_t encode_stream(asio::const_buffer in, error_code& ec) {
    if ((ec = write_gate())) return 0;
    std::size_t consumed = 0;
    const auto start = out_.size();
    while (consumed < in.size() && (consumed == 0 || out_.size() - start < cork_limit_bytes)) {
      const auto st = next_write(in + consumed);
      consumed += st.consumed;
      if (st.ec) {
        ec = st.ec;
        break;
      }
      if (st.send) {
        encode(ws::op_binary, bytes_of(*st.send));
        if (wbuf().size() != 0 && st.send->data() == wbuf().data().data()) {
          wbuf().clear();
          trim(wbuf());
        }
      }
    }
    return consumed;
  }

  // After a write's bytes are encoded: complete it now (corked, or nothing was encoded) or once they are
  // sent.
  void finish_write_call(io_handler handler, error_code ec, std::size_t n) {
    if (ec) return post(std::move(handler), ec, n);
    if (out_.size() == 0 || (corked_ && out_.size() < cork_limit_bytes))
      return post(std::move(handler), ec, n);
    wr_.emplace(write_op{std::move(handler), n, enqueued_});
    start_flush();
  }

  void start_flush() {
    if (sync_ || writing_ || out_.size() == 0 || aborted_) return;
    if constexpr (!tls) {
      // Most writes fit in the socket's buffer: sent at once, they complete nothing through the event loop.
      // The rest (or an error) takes the asynchronous write below.
      const auto n =
          ::send(sock().native_handle(), out_.data().data(), out_.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) {
        sent_ += static_cast<std::size_t>(n);
        out_.consume(static_cast<std::size_t>(n));
      }
      if (out_.size() == 0) {
        trim(out_);
        if (wr_ && sent_ >= wr_->end) {
          auto op = std::move(*wr_);
          wr_.reset();
          post(std::move(op.handler), error_code{}, op.n);
        }
        if (teardown_after_flush_ && !cl_) teardown();
        return;
      }
    }
    std::swap(out_, sending_);
    writing_ = true;
    asio::async_write(stream_for_io(), sending_.data(),
                      [this, g = op_guard(shared_from_this())](error_code ec, std::size_t n) mutable {
                        g.ran();
                        flushed(ec, n);
                      });
  }

  auto& stream_for_io() {
    if constexpr (tls) {
      return *stream_;
    } else {
      return sock();
    }
  }

  void flushed(error_code ec, std::size_t n) {
    writing_ = false;
    sent_ += n;
    sending_.clear();
    trim(sending_);
    if (ec && !write_error_) write_error_ = after_abort(ec);
    if (wr_ && (write_error_ || sent_ >= wr_->end)) {
      auto op = std::move(*wr_);
      wr_.reset();
      complete(std::move(op.handler), write_error_, write_error_ ? 0 : op.n);
    }
    if (write_error_) {
      out_.clear();
      return maybe_finish_close();
    }
    // The next write may finish at once (see start_flush): the checks below see where it left things.
    if (out_.size() != 0 && (!corked_ || wr_ || out_.size() >= cork_limit_bytes || close_sent_))
      start_flush();
    if (teardown_after_flush_ && !cl_ && !writing_ && out_.size() == 0) teardown();
    maybe_finish_close();
  }

  void sync_flush(error_code& ec) {
    if (out_.size() == 0) return;
    asio::write(stream_for_io(), out_.data(), ec);
    sent_ += out_.size();
    out_.clear();
    trim(out_);
    if (ec) write_error_ = ec;
  }
  void sync_flush() {
    error_code ignored;
    sync_flush(ignored);
  }

  // ---- ending -------------------------------------------------------------------------------------------

  // The close completes once our close frame is sent and the peer's has come (or reads have ended).
  void maybe_finish_close(bool initiating = false) {
    if (!cl_) return;
    const bool sent = write_error_ || (!writing_ && out_.size() == 0);
    if (!sent || !stream_broken_) return;
    auto h = std::move(*cl_);
    cl_.reset();
    cancel_timers();
    error_code ec;
    if (close_timed_out_ || aborted_) {
      ec = after_abort(asio::error::operation_aborted);
    } else if (write_error_) {
      ec = write_error_;  // our close frame did not go out
    } else if (!peer_closed_ && read_error_ != asio::error::eof) {
      ec = read_error_;
    }
    teardown();
    initiating ? post(std::move(h), ec) : complete(std::move(h), ec);
  }

  // The closing handshake is over (or failed): no more bytes either way.
  void teardown() {
    closed_ = true;
    cancel_timers();
    error_code ignored;
    // The socket itself closes with the connection (or abort()); until then the peer can still read what
    // was sent.
    sock().shutdown(tcp::socket::shutdown_send, ignored);
  }

  void kill_socket() noexcept {
    cancel_timers();
    error_code ignored;
    sock().close(ignored);
    if (budget_waiting_) {
      // No socket operation is there to complete the waiting read with the closed socket's error: end it
      // here.
      budget_waiting_ = false;
      read_failed(asio::error::operation_aborted);
      pump(true);
    }
  }

  // ---- the buffer budget --------------------------------------------------------------------------------

  void wait_for_budget() {
    if (budget_waiting_) return;
    budget_waiting_ = true;
    budget_->async_wait(sock().get_executor(), asio::cancellation_slot(), [w = weak_from_this()](bool) {
      const auto keep = w.lock();
      if (!keep) return;
      auto* c = static_cast<ws_connection*>(keep.get());
      if (!std::exchange(c->budget_waiting_, false)) return;
      c->pump(false);
    });
  }
  // The reader is done with the last message it was given.
  void release_held() {
    if (held_ != 0) budget_->release(std::exchange(held_, 0));
  }
  // Reading is over: the part of a message received so far will never be whole.
  void release_partial() {
    if (charged_ != 0) budget_->release(std::exchange(charged_, 0));
  }
  void release_budget() {
    if (!budget_) return;
    if (const auto n = std::exchange(held_, 0) + std::exchange(charged_, 0)) budget_->release(n);
  }

  // Room in `out` for `n` more bytes of the message being read: doubled as bytes arrive, never past the end
  // of what is being read, which is the message's once its Kafka size header is in (a peer may send a message
  // in many small fragments), else the WebSocket frame's. False when the memory for it cannot be had.
  bool make_room(beast::flat_buffer& out, std::size_t n) {
    if (out.capacity() - out.size() >= n) return true;
    const auto need = out.size() + n;
    auto end = out.size() + frame_left_;
    if (msg_bytes_ >= frame_header_bytes && msg_bytes_ <= out.size()) {
      // The message's bytes so far are the last msg_bytes_ of `out`.
      const auto start = out.size() - msg_bytes_;
      const auto size = load_be32(static_cast<const unsigned char*>(out.data().data()) + start);
      if (size >= 0 && static_cast<std::size_t>(size) <= max_frame_bytes_)
        end = std::max(end, start + frame_header_bytes + static_cast<std::size_t>(size));
    }
    const auto cap = std::max(need, std::min(std::max(2 * out.capacity(), first_message_bytes), end));
    try {
      beast::flat_buffer bigger;
      bigger.reserve(cap);
      bigger.commit(asio::buffer_copy(bigger.prepare(out.size()), out.data()));
      out = std::move(bigger);
      return true;
    } catch (const std::bad_alloc&) {
      return false;
    }
  }

  // The message being received cannot be held: this connection fails (1011, an internal error), others go
  // on.
  step out_of_memory(error_code& ec) {
    ec = make_error_code(boost::system::errc::not_enough_memory);
    return fail_connection(ec, 1011);
  }

  // ---- idle timeout -------------------------------------------------------------------------------------

  // Checked every half timeout (with pings) or every timeout: any byte received since the last check counts;
  // in silence a ping is sent, and a second silent period ends the connection with a timeout. The check is an
  // entry in the context's tick lists (src/tick_list.hpp), not a timer of the connection's own.
  void arm_idle_timer() {
    idle_tick_.schedule(sock().get_executor(), keepalive_pings_ ? idle_timeout_ / 2 : idle_timeout_);
  }
  void idle_check() {
    if (aborted_ || closed_ || cl_ || closing_deadline_) return;
    // A peer held back by the buffer budget is not idle: it is not being read.
    if (std::exchange(active_, false) || budget_waiting_) {
      idle_pinged_ = false;
      return arm_idle_timer();
    }
    if (keepalive_pings_ && !idle_pinged_ && !close_sent_) {
      idle_pinged_ = true;
      encode(ws::op_ping, {});
      start_flush();
      return arm_idle_timer();
    }
    timed_out_ = true;
    kill_socket();
  }
  static std::shared_ptr<void> idle_lock(void* self) {
    return static_cast<ws_connection*>(self)->weak_from_this().lock();
  }
  // From the tick list's timer: the check runs on the connection's executor (at once on its io_context's
  // own thread).
  static void idle_fire(void* self, std::shared_ptr<void> keep) {
    auto* c = static_cast<ws_connection*>(self);
    asio::dispatch(c->sock().get_executor(), [c, keep = std::move(keep)] { c->idle_check(); });
  }
  static constexpr tick_lists::owner_ops idle_ops{&ws_connection::idle_lock, &ws_connection::idle_fire};

  void cancel_timers() {
    idle_tick_.cancel();
    if (close_timer_) close_timer_->cancel();
  }

  // ---- the byte stream's held partial frame -----------------------------------------------------------

  struct write_step {
    std::size_t consumed = 0;
    std::optional<asio::const_buffer> send;  // a whole frame to send now
    error_code ec;
  };

  // Decides what to do with the next bytes of a byte-stream write: send a whole frame straight from the
  // caller's buffer, or add to the held partial frame (and send it once it is whole).
  write_step next_write(asio::const_buffer rest) {
    write_step st;
    const auto in = bytes_of(rest);
    if (in.empty()) return st;
    if (wbuf().size() == 0) {
      const auto len = peek_frame(in, max_frame_bytes_, st.ec);
      if (st.ec) return fail_write(st);
      if (len != 0 && len <= in.size()) {
        st.consumed = len;
        st.send = asio::const_buffer(in.data(), len);
        return st;
      }
      if (len != 0) wbuf().reserve(len);
      append(in);
      st.consumed = in.size();
      return st;
    }
    const auto held = bytes_of(wbuf().data());
    if (held.size() < frame_header_bytes) {
      st.consumed = std::min(frame_header_bytes - held.size(), in.size());
      append(in.first(st.consumed));
      if (wbuf().size() < frame_header_bytes) return st;
      const auto len = peek_frame(bytes_of(wbuf().data()), max_frame_bytes_, st.ec);
      if (st.ec) return fail_write(st);
      wbuf().reserve(len);
      if (len == frame_header_bytes) st.send = wbuf().data();
      return st;
    }
    const auto len = frame_header_bytes + static_cast<std::size_t>(load_be32(held.data()));
    st.consumed = std::min(len - held.size(), in.size());
    append(in.first(st.consumed));
    if (wbuf().size() == len) st.send = wbuf().data();
    return st;
  }

  write_step& fail_write(write_step& st) {
    // The stream has lost its frame boundaries; every later write fails the same way.
    write_error_ = st.ec;
    wbuf().clear();
    return st;
  }

  void append(std::span<const unsigned char> bytes) {
    auto dst = wbuf().prepare(bytes.size());
    std::memcpy(dst.data(), bytes.data(), bytes.size());
    wbuf().commit(bytes.size());
  }

  // The stream: over TLS for the connection's life; over plain TCP only until the handshake is done, after
  // which sock_ holds its socket.
  std::optional<Stream> stream_;
  std::optional<asio::ip::tcp::socket> sock_;
  std::string url_;
  std::size_t max_frame_bytes_;
  bool client_;

  // Reading.
  input_buffer in_;
  std::optional<read_op> rd_;
  beast::flat_buffer* sync_out_ = nullptr;
  bool reading_ = false;  // a socket read (or, over plain TCP, a wait for readability) is in flight
  bool drained_ = false;  // the last read found the socket empty: wait before reading again
  read_waiter waiter_{};  // plain TCP: the reactor that async_wait_readable queues on
  // Plain TCP on an io_context's own executor: the read wait's operation, and the connection it keeps alive
  // while queued. Elsewhere (a strand, say) the wait is a handler's operation.
  std::optional<read_wait_op> wait_op_;
  std::shared_ptr<ws_connection> wait_keep_;
  bool read_hot_ = false;  // the last read filled its buffer
  bool in_frame_ = false;  // a data frame's header is taken, frame_left_ bytes of it are not
  bool frame_fin_ = false;
  bool frame_masked_ = false;
  ws::mask_key frame_key_{};
  std::size_t frame_left_ = 0;
  std::size_t frame_pos_ = 0;
  bool msg_open_ = false;  // a message is under way (between its first frame and its last byte)
  bool msg_text_ = false;  // it is a text message: refused once whole
  bool stream_broken_ =
      false;  // no more frames can be read: the peer closed, broke the protocol, or a read failed
  std::size_t msg_bytes_ = 0;
  error_code read_error_;  // sticky: eof after the peer's close
  std::function<void()> on_read_wait_;

  // Writing.
  beast::flat_buffer out_;      // encoded, waiting for the write in flight
  beast::flat_buffer sending_;  // the write in flight
  // The byte-stream API's buffers (read_some/write_some and friends), made on its first use: the frame API
  // (the relay's) never needs them.
  struct byte_stream_buffers {
    beast::flat_buffer read;   // the current message
    beast::flat_buffer write;  // the unfinished frame
  };
  std::unique_ptr<byte_stream_buffers> bs_;
  byte_stream_buffers& bs() {
    if (!bs_) bs_ = std::make_unique<byte_stream_buffers>();
    return *bs_;
  }
  beast::flat_buffer& rbuf() { return bs().read; }
  beast::flat_buffer& wbuf() { return bs().write; }
  lazy_optional<write_op> wr_;  // storage made by the first write that waits
  bool writing_ = false;
  bool corked_ = false;
  std::uint64_t enqueued_ = 0;
  std::uint64_t sent_ = 0;
  error_code write_error_;

  // Closing and timeouts.
  lazy_optional<done_handler> cl_;
  bool open_ = false;
  bool close_sent_ = false;
  bool peer_closed_ = false;
  bool teardown_after_flush_ = false;
  bool closed_ = false;
  bool aborted_ = false;
  bool timed_out_ = false;
  bool close_timed_out_ = false;
  bool closing_deadline_ = false;
  std::uint16_t peer_close_code_ = 0;
  std::unique_ptr<asio::steady_timer> close_timer_;  // the closing handshake's deadline, made when needed
  tick_lists::entry idle_tick_{this, &idle_ops};     // the idle check
  std::chrono::milliseconds idle_timeout_{0};
  std::chrono::milliseconds close_timeout_{std::chrono::seconds(10)};
  bool keepalive_pings_ = false;
  bool idle_pinged_ = false;
  bool active_ = false;  // bytes arrived since the idle timer last looked
  bool sync_ = false;    // a blocking call is running

  // The buffer budget (see set_buffer_budget): bytes reserved for the message being received, and for the
  // last one handed to the reader.
  std::shared_ptr<buffer_budget> budget_;
  std::size_t charged_ = 0;
  std::size_t held_ = 0;
  bool budget_waiting_ = false;
};

}  // namespace
}  // namespace kws::detail

namespace kws::detail {
namespace {

bool is_ip_literal(const std::string& host) {
  error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

// Largest answer header accepted from a forward proxy; a 407 with its Proxy-Authenticate lines is far
// smaller.
constexpr std::uint32_t max_proxy_header_bytes = 16 * 1024;

// Resolve, connect, (CONNECT through a forward proxy,) (TLS handshake,) WebSocket upgrade; every step bounded
// by the handshake timeout. Through a proxy, TLS and the upgrade run inside the tunnel and concern the broker
// alone: SNI, certificate and host-name checks use the broker's name, never the proxy's.
template <class NextLayer>
class dial_op {
 public:
  using conn_type = ws_connection<NextLayer>;

  dial_op(std::shared_ptr<const dialer_state> state, ws_url url, std::shared_ptr<conn_type> conn,
          dial_info* info)
      : state_(std::move(state)),
        url_(std::move(url)),
        conn_(std::move(conn)),
        info_(info),
        proxy_(state_->proxies.for_url(url_)) {}

  // Start: resolve the first hop, the forward proxy or the broker.
  template <class Self>
  void operator()(Self& self) {
    deadline_ = std::chrono::steady_clock::now() + state_->config.handshake_timeout;
    if (proxy_ && info_) info_->via = proxy_->authority();
    if (proxy_) return resolve(self, proxy_->host, proxy_->port);
    resolve(self, url_.host, url_.port);
  }

  template <class Self>
  void operator()(Self& self, error_code ec, const tcp::resolver::results_type& results) {
    if (ec) {
      return fail(self, proxy_ ? errc::proxy_unreachable : ec,
                  "cannot resolve the forward proxy " + proxy_name() + ": " + ec.message());
    }
    auto& tcp_layer = conn_->tcp();
    tcp_layer.expires_at(deadline_);
    tcp_layer.async_connect(results, std::move(self));
  }

  template <class Self>
  void operator()(Self& self, error_code ec, const tcp::endpoint&) {
    if (ec) {
      return fail(self, proxy_ ? errc::proxy_unreachable : ec,
                  "cannot connect to the forward proxy " + proxy_name() + ": " + ec.message());
    }
    error_code ignored;
    conn_->tcp().socket().set_option(tcp::no_delay(true), ignored);
    if (proxy_) return send_connect(self);
    secure(self);
  }

  // The CONNECT request written, or the proxy's answer read.
  template <class Self>
  void operator()(Self& self, error_code ec, std::size_t) {
    if (stage_ == stage::upgrade_write) {
      if (ec) return upgrade_failed(self, ec);
      stage_ = stage::upgrade_read;
      return beast::http::async_read_header(conn_->stream(), conn_->input(), up_->parser, std::move(self));
    }
    if (stage_ == stage::upgrade_read) {
      if (!ec) ec = check_upgrade_answer();
      if (ec) return upgrade_failed(self, ec);
      up_.reset();
      const auto& cfg = state_->config;
      // The closing handshake gets a whole handshake timeout of its own, not what the dial left of it.
      conn_->handshake_done(cfg.idle_timeout, cfg.keepalive_pings, cfg.handshake_timeout);
      return self.complete(ec, connection(std::move(conn_)));
    }
    auto& tcp_layer = conn_->tcp();
    if (stage_ == stage::proxy_write) {
      if (ec) return proxy_failed(self, ec);
      stage_ = stage::proxy_read;
      return beast::http::async_read_header(tcp_layer, tunnel_->buffer, tunnel_->parser, std::move(self));
    }
    if (ec) return proxy_failed(self, ec);
    const auto& res = tunnel_->parser.get();
    const unsigned status = res.result_int();
    const auto answer = std::to_string(status) + " " + printable(res.reason());
    if (auto refused = connect_status_error(status)) {
      std::string why =
          "forward proxy " + proxy_name() + " answered CONNECT " + url_.authority() + " with " + answer;
      if (refused == errc::proxy_auth_required) {
        why += proxy_->has_password ? ": it refused the credentials in the proxy URL"
                                    : ": it wants credentials (user:password@ in the proxy URL)";
      }
      return fail(self, refused, why);
    }
    // The broker speaks only after the client (TLS ClientHello, upgrade request): anything here is not its.
    if (tunnel_->buffer.size() != 0) {
      return fail(self, errc::proxy_bad_response,
                  "forward proxy " + proxy_name() + " sent bytes after its " + answer + " answer to CONNECT");
    }
    tunnel_.reset();
    secure(self);
  }

  // After the TLS handshake.
  template <class Self>
  void operator()(Self& self, error_code ec) {
    if (ec) {
      note_tls_problem(ec);
      return self.complete(ec, connection{});
    }
    upgrade(self);
  }

 private:
  enum class stage { tcp, proxy_write, proxy_read, tls, upgrade_write, upgrade_read };

  // The upgrade request and the parser of its answer, at stable addresses while the operation moves.
  struct upgrade_state {
    beast::http::request<beast::http::empty_body, beast::http::basic_fields<dial_allocator<char>>> request;
    beast::http::response_parser<beast::http::empty_body, dial_allocator<char>> parser;
    std::string key;
  };
  struct upgrade_delete {
    void operator()(upgrade_state* p) const noexcept {
      p->~upgrade_state();
      dial_allocator<upgrade_state>().deallocate(p, 1);
    }
  };

  // What the CONNECT exchange needs, kept at stable addresses while the operation moves.
  struct tunnel_state {
    std::string request;
    beast::flat_buffer buffer{max_proxy_header_bytes};
    beast::http::response_parser<beast::http::empty_body> parser;
  };

  std::string proxy_name() const { return proxy_ ? proxy_->authority() : std::string(); }

  // getaddrinfo cannot be interrupted, so the resolve races a timer: at the deadline the dial goes on without
  // it (and fails), and an answer that comes later is dropped.
  // `host` by value: it may be a member of this operation, which moves below.
  template <class Self>
  void resolve(Self& self, std::string host, std::uint16_t port) {
    struct race {
      explicit race(const asio::any_io_executor& ex) : resolver(ex), timer(ex) {}
      tcp::resolver resolver;
      asio::steady_timer timer;
      std::optional<Self> op;
    };
    const asio::any_io_executor ex = conn_->get_executor();
    const auto handler_ex = asio::get_associated_executor(self, ex);
    auto r = std::allocate_shared<race>(dial_allocator<race>(), ex);
    r->timer.expires_at(deadline_);
    const auto service = std::to_string(port);
    // `this` lives inside `self`: nothing of it may be used once `self` has moved.
    r->op.emplace(std::move(self));
    r->timer.async_wait(
        asio::bind_allocator(dial_allocator<void>(), asio::bind_executor(handler_ex, [r](error_code ec) {
                               if (ec || !r->op) return;
                               r->resolver.cancel();
                               auto op = std::move(*r->op);
                               r->op.reset();
                               op(error_code(asio::error::timed_out), tcp::resolver::results_type{});
                             })));
    r->resolver.async_resolve(
        host, service,
        asio::bind_allocator(
            dial_allocator<void>(),
            asio::bind_executor(handler_ex, [r](error_code ec, tcp::resolver::results_type res) {
              r->timer.cancel();
              if (!r->op) return;
              auto op = std::move(*r->op);
              r->op.reset();
              op(ec, res);
            })));
  }

  template <class Self>
  void send_connect(Self& self) {
    stage_ = stage::proxy_write;
    tunnel_ = std::make_unique<tunnel_state>();
    tunnel_->request = connect_request(*proxy_, url_.authority(), state_->config.user_agent);
    tunnel_->parser.header_limit(max_proxy_header_bytes);
    // The answer to CONNECT has no body that matters here; only its header is read.
    tunnel_->parser.skip(true);
    asio::async_write(conn_->tcp(), asio::buffer(tunnel_->request), std::move(self));
  }

  // A failed write or read of the CONNECT exchange, told apart by what the proxy did.
  template <class Self>
  void proxy_failed(Self& self, error_code ec) {
    const auto target = url_.authority();
    if (ec == beast::error::timeout || ec == asio::error::timed_out) {
      return fail(self, errc::proxy_timeout,
                  "forward proxy " + proxy_name() + " did not answer CONNECT " + target + " within " +
                      std::to_string(state_->config.handshake_timeout.count()) + "ms");
    }
    if (ec == asio::error::eof || ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
        ec == beast::http::error::end_of_stream || ec == beast::http::error::partial_message) {
      return fail(
          self, errc::proxy_closed,
          "forward proxy " + proxy_name() + " closed the connection before answering CONNECT " + target);
    }
    if (ec.category() == make_error_code(beast::http::error::bad_version).category()) {
      return fail(self, errc::proxy_bad_response,
                  "forward proxy " + proxy_name() + " answered CONNECT " + target + " with no usable HTTP (" +
                      ec.message() + ")");
    }
    fail(self, ec,
         "forward proxy " + proxy_name() + " failed during CONNECT " + target + ": " + ec.message());
  }

  // OpenSSL's error says only "certificate verify failed"; the verification result says why (expired,
  // self-signed, another host's), which is what an operator needs to fix it. Other failures (an alert from
  // the broker, a peer that does not speak TLS) are named as the TLS handshake's.
  void note_tls_problem(error_code ec) {
    if constexpr (std::is_same_v<NextLayer, tls_next>) {
      if (!info_) return;
      const auto result = SSL_get_verify_result(conn_->stream().native_handle());
      if (result != X509_V_OK) {
        info_->failure = std::string("the broker's TLS certificate was refused: ") +
                         X509_verify_cert_error_string(result) + " (" + url_.host + ")";
      } else if (ec == beast::error::timeout) {
        info_->failure =
            "the broker did not finish the TLS handshake within the handshake timeout (" + url_.host + ")";
      } else {
        info_->failure = "the TLS handshake with the broker failed: " + ec.message() + " (" + url_.host + ")";
      }
    }
  }

  template <class Self>
  void fail(Self& self, error_code ec, std::string why) {
    if (proxy_ && info_) info_->failure = std::move(why);
    self.complete(ec, connection{});
  }

  template <class Self>
  void secure(Self& self) {
    if constexpr (std::is_same_v<NextLayer, tls_next>) {
      auto& tls = conn_->stream();
      if (!is_ip_literal(url_.host) && !SSL_set_tlsext_host_name(tls.native_handle(), url_.host.c_str())) {
        return self.complete(error_code(static_cast<int>(::ERR_get_error()), asio::error::get_ssl_category()),
                             connection{});
      }
      if (state_->config.insecure_skip_verify) {
        tls.set_verify_mode(asio::ssl::verify_none);
      } else {
        tls.set_verify_mode(asio::ssl::verify_peer);
        // OpenSSL checks the name (or address) as part of the chain, so a mismatch is reported as such
        // ("hostname mismatch") rather than as an unspecified failure of a verify callback.
        X509_VERIFY_PARAM* param = SSL_get0_param(tls.native_handle());
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        const int named = is_ip_literal(url_.host) ? X509_VERIFY_PARAM_set1_ip_asc(param, url_.host.c_str())
                                                   : X509_VERIFY_PARAM_set1_host(param, url_.host.c_str(), 0);
        if (named != 1) {
          return self.complete(
              error_code(static_cast<int>(::ERR_get_error()), asio::error::get_ssl_category()), connection{});
        }
      }
      stage_ = stage::tls;
      return tls.async_handshake(asio::ssl::stream_base::client, std::move(self));
    } else {
      upgrade(self);
    }
  }

  // The WebSocket upgrade (RFC 6455 4.1), still under the dial's deadline on the TCP stream. What follows
  // the answer's header in the read buffer is the broker's first frames: the connection starts from it.
  template <class Self>
  void upgrade(Self& self) {
    namespace http = beast::http;
    stage_ = stage::upgrade_write;
    const auto& cfg = state_->config;
    up_.reset(new (dial_allocator<upgrade_state>().allocate(1)) upgrade_state());
    up_->key = ws::make_key();
    const bool default_port = url_.port == (url_.secure ? 443 : 80);
    const auto authority = url_.authority();
    auto& req = up_->request;
    req.version(11);
    req.method(http::verb::get);
    req.target(url_.target);
    req.set(http::field::host, default_port ? authority.substr(0, authority.rfind(':')) : authority);
    req.set(http::field::upgrade, "websocket");
    req.set(http::field::connection, "Upgrade");
    req.set(http::field::sec_websocket_key, up_->key);
    req.set(http::field::sec_websocket_version, "13");
    req.set(http::field::user_agent, cfg.user_agent);
    for (const auto& [name, value] : cfg.headers) req.set(name, value);
    up_->parser.get().result(0u);  // stays 0 unless a status line is parsed (the default would be 200)
    http::async_write(conn_->stream(), req, std::move(self));
  }

  error_code check_upgrade_answer() const {
    namespace http = beast::http;
    const auto& res = up_->parser.get();
    if (res.result_int() != 101) return websocket::error::upgrade_declined;
    if (!beast::iequals(res[http::field::upgrade], "websocket"))
      return websocket::error::no_upgrade_websocket;
    if (!http::token_list(res[http::field::connection]).exists("upgrade"))
      return websocket::error::no_connection_upgrade;
    const auto accept = res[http::field::sec_websocket_accept];
    if (accept.empty()) return websocket::error::no_sec_accept;
    if (accept != ws::accept_for(up_->key)) return websocket::error::bad_sec_accept;
    return {};
  }

  template <class Self>
  void upgrade_failed(Self& self, error_code ec) {
    note_upgrade_problem(ec);
    self.complete(ec, connection{});
  }

  // The status line the broker sent (a 404 for a wrong path, a 200 from a plain web server, a 401 without a
  // token) is what an operator needs.
  void note_upgrade_problem(error_code ec) {
    if (!info_ || !up_) return;
    const auto& res = up_->parser.get();
    const auto url = " (" + url_.str() + ")";
    if (ec == beast::error::timeout) {
      info_->failure = "the broker did not answer the WebSocket upgrade within the handshake timeout" + url;
    } else if (ec.category() == beast::http::make_error_code(beast::http::error::bad_version).category()) {
      info_->failure = "the broker's answer to the WebSocket upgrade is not HTTP: " + ec.message() + url;
    } else if (res.result_int() == 101) {
      info_->failure = "the broker's 101 answer to the WebSocket upgrade is unusable: " + ec.message() + url;
    } else if (ec == websocket::error::upgrade_declined && res.result_int() != 0) {
      info_->failure = "the broker answered the WebSocket upgrade with " + std::to_string(res.result_int()) +
                       (res.reason().empty() ? std::string() : " " + printable(res.reason())) + url;
    }
  }

  std::shared_ptr<const dialer_state> state_;
  ws_url url_;
  std::shared_ptr<conn_type> conn_;
  dial_info* info_;
  const proxy_url* proxy_;  // owned by state_
  std::unique_ptr<tunnel_state> tunnel_;
  std::unique_ptr<upgrade_state, upgrade_delete> up_;
  std::chrono::steady_clock::time_point deadline_;
  stage stage_ = stage::tcp;
};

// ---- the server side: (TLS,) the HTTP request, the caller's decision, the upgrade or a plain answer -----

std::string endpoint_text(const tcp::endpoint& ep) {
  const auto a = ep.address();
  return (a.is_v6() ? "[" + a.to_string() + "]" : a.to_string()) + ":" + std::to_string(ep.port());
}

template <class NextLayer>
class accept_op {
 public:
  using conn_type = ws_connection<NextLayer>;

  accept_op(accept_config config, accept_decider decide, std::shared_ptr<conn_type> conn, std::string peer)
      : config_(std::move(config)),
        decide_(std::move(decide)),
        conn_(std::move(conn)),
        st_(std::make_unique<state>()) {
    st_->info.peer = std::move(peer);
  }

  template <class Self>
  void operator()(Self& self) {
    st_->deadline = std::chrono::steady_clock::now() + config_.handshake_timeout;
    conn_->tcp().expires_at(st_->deadline);
    if constexpr (std::is_same_v<NextLayer, tls_next>) {
      stage_ = stage::tls;
      return conn_->stream().async_handshake(asio::ssl::stream_base::server, std::move(self));
    } else {
      read_request(self);
    }
  }

  template <class Self>
  void operator()(Self& self, error_code ec, std::size_t = 0) {
    switch (stage_) {
      case stage::tls:
        if (ec) return finish(self, ec);
        return read_request(self);
      case stage::read:
        if (ec)
          return finish(self, ec == beast::http::error::end_of_stream ? error_code(asio::error::eof) : ec);
        return decide(self);
      case stage::decided:
        return act(self);
      case stage::upgrade:
        if (ec) return finish(self, ec);
        upgraded();
        return self.complete(ec, connection(std::move(conn_)), std::move(st_->info));
      case stage::respond: {
        error_code ignored;
        conn_->tcp().socket().shutdown(tcp::socket::shutdown_send, ignored);
        return finish(self, ec ? ec : st_->refusal ? st_->refusal : error_code(errc::upgrade_declined));
      }
    }
  }

 private:
  enum class stage { tls, read, decided, upgrade, respond };

  // Lives on the heap: the HTTP read and write keep references to it while the operation moves.
  struct state {
    beast::flat_buffer buffer;
    std::optional<beast::http::request_parser<beast::http::string_body>> parser;
    beast::http::response<beast::http::string_body> response;
    http_request_info info;
    accept_decision decision;
    error_code refusal;  // a malformed upgrade request, answered with 400 or 426
    std::chrono::steady_clock::time_point deadline;
  };

  template <class Self>
  void read_request(Self& self) {
    stage_ = stage::read;
    st_->parser.emplace();
    st_->parser->header_limit(static_cast<std::uint32_t>(config_.max_request_bytes));
    st_->parser->body_limit(config_.max_request_bytes);
    beast::http::async_read(conn_->stream(), st_->buffer, *st_->parser, std::move(self));
  }

  template <class Self>
  void decide(Self& self) {
    const auto& req = st_->parser->get();
    auto& info = st_->info;
    info.method = std::string(req.method_string());
    info.target = std::string(req.target());
    info.websocket_upgrade = websocket::is_upgrade(req);
    for (const auto& field : req) {
      std::string name(field.name_string());
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      info.headers.emplace_back(std::move(name), std::string(field.value()));
    }
    conn_->set_url(info.target);
    stage_ = stage::decided;
    // The decider may answer later and from another thread: come back through the connection's executor.
    // Everything needed is taken first: moving `self` moves this object too.
    auto* st = st_.get();
    auto ex = conn_->get_executor();
    auto decide = decide_;
    auto holder = std::make_shared<Self>(std::move(self));
    decide(st->info, [holder, st, ex](accept_decision d) {
      st->decision = std::move(d);
      asio::post(ex, [holder]() mutable { (*holder)(error_code{}, 0); });
    });
  }

  // Base64 of 16 bytes (RFC 6455 4.2.1): 22 characters of the base64 alphabet, then "==".
  static bool is_sec_key(std::string_view key) {
    if (key.size() != 24 || key.substr(22) != "==") return false;
    return std::all_of(key.begin(), key.begin() + 22, [](char c) {
      return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
             c == '/';
    });
  }

  // The parts of an upgrade request that is_upgrade() does not check (RFC 6455 4.2.1): 0 when it is usable,
  // otherwise the answer's status, with `refusal` set.
  int check_upgrade_request() {
    namespace http = beast::http;
    const auto& req = st_->parser->get();
    auto& why = st_->refusal;
    if (req[http::field::host].empty()) {
      why = websocket::error::no_host;
    } else if (req[http::field::sec_websocket_key].empty()) {
      why = websocket::error::no_sec_key;
    } else if (!is_sec_key(req[http::field::sec_websocket_key])) {
      why = websocket::error::bad_sec_key;
    } else if (req[http::field::sec_websocket_version] != "13") {
      why = req[http::field::sec_websocket_version].empty() ? websocket::error::no_sec_version
                                                            : websocket::error::bad_sec_version;
      return 426;
    }
    return why ? 400 : 0;
  }

  template <class Self>
  void act(Self& self) {
    namespace http = beast::http;
    auto& d = st_->decision;
    auto& res = st_->response;
    const auto& req = st_->parser->get();
    res.version(req.version());
    res.set(http::field::server, config_.server_name);
    if (d.status == 101 && st_->info.websocket_upgrade) {
      if (const int status = check_upgrade_request()) {
        d = accept_decision::respond(status, st_->refusal.message() + "\n");
        if (status == 426) d.headers.emplace_back("Sec-WebSocket-Version", "13");
      } else {
        stage_ = stage::upgrade;
        res.result(http::status::switching_protocols);
        res.set(http::field::upgrade, "websocket");
        res.set(http::field::connection, "Upgrade");
        res.set(http::field::sec_websocket_accept, ws::accept_for(req[http::field::sec_websocket_key]));
        return http::async_write(conn_->stream(), res, std::move(self));
      }
    }
    // A plain answer (the decider's, or 426 for a non-upgrade that the decider let through), then close.
    stage_ = stage::respond;
    if (d.status == 101)
      d = accept_decision::respond(426, "Kafka over WebSocket only: send a WebSocket upgrade\n");
    res.result(static_cast<unsigned>(d.status));
    res.set(http::field::content_type, "text/plain");
    if (d.status == 426) {
      res.set(http::field::upgrade, "websocket");
      res.set(http::field::connection, "Upgrade");
    }
    for (const auto& [name, value] : d.headers) res.set(name, value);
    res.body() = d.body;
    res.keep_alive(false);
    res.prepare_payload();
    http::async_write(conn_->stream(), res, std::move(self));
  }

  // Frames from here on. A client may not send any before our answer (RFC 6455 4.1), but whatever it did
  // send after its request is kept for the connection, not dropped.
  void upgraded() {
    auto& in = conn_->input();
    const auto early = st_->buffer.data();
    const auto n = asio::buffer_copy(in.prepare(early.size()), early);
    in.commit(n);
    conn_->handshake_done(config_.idle_timeout, config_.keepalive_pings, config_.handshake_timeout);
  }

  template <class Self>
  void finish(Self& self, error_code ec) {
    conn_->abort();
    self.complete(ec, connection{}, std::move(st_->info));
  }

  accept_config config_;
  accept_decider decide_;
  std::shared_ptr<conn_type> conn_;
  std::unique_ptr<state> st_;
  stage stage_ = stage::tls;
};

}  // namespace

void async_accept(tcp::socket socket, const accept_config& config, accept_decider decide,
                  accept_handler handler) {
  error_code ec;
  const auto ep = socket.remote_endpoint(ec);
  std::string peer = ec ? std::string("?") : endpoint_text(ep);
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  const auto ex = socket.get_executor();
  auto h = std::move(handler).bound();
  if (config.tls) {
    auto conn = std::make_shared<ws_connection<tls_next>>(std::string(), config.max_frame_bytes, false,
                                                          std::move(socket), *config.tls);
    asio::async_compose<decltype(h), void(error_code, connection, http_request_info)>(
        accept_op<tls_next>(config, std::move(decide), std::move(conn), std::move(peer)), h, ex);
  } else {
    auto conn = std::make_shared<ws_connection<plain_next>>(std::string(), config.max_frame_bytes, false,
                                                            std::move(socket));
    asio::async_compose<decltype(h), void(error_code, connection, http_request_info)>(
        accept_op<plain_next>(config, std::move(decide), std::move(conn), std::move(peer)), h, ex);
  }
}

void async_dial(const std::shared_ptr<const dialer_state>& state, const asio::any_io_executor& ex,
                std::string address, dial_info* info, dial_handler handler) {
  if (info) *info = dial_info{};
  error_code ec;
  auto url = parse_address(address, state->config.tls, ec);
  if (ec) {
    return asio::post(ex, asio::append(std::move(handler).bound(), ec, connection{}));
  }
  const auto max_frame = state->config.max_frame_bytes;
  // The dial's operations take their memory from the dial arena (see dial_arena.hpp).
  if (url.secure) {
    auto conn = std::make_shared<ws_connection<tls_next>>(url.str(), max_frame, true, ex, state->ssl);
    auto h = asio::bind_allocator(dial_allocator<void>(), std::move(handler).bound());
    asio::async_compose<decltype(h), void(error_code, connection)>(
        dial_op<tls_next>(state, std::move(url), std::move(conn), info), h, ex);
  } else {
    auto conn = std::make_shared<ws_connection<plain_next>>(url.str(), max_frame, true, ex);
    auto h = asio::bind_allocator(dial_allocator<void>(), std::move(handler).bound());
    asio::async_compose<decltype(h), void(error_code, connection)>(
        dial_op<plain_next>(state, std::move(url), std::move(conn), info), h, ex);
  }
}

}  // namespace kws::detail
