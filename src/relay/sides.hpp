// The kinds of side a relay pumps between, with one interface: tcp_side (the plain Kafka byte stream,
// frames found by their size headers) and ws_side (a kws::connection, one message one frame); tls_side
// (tls_side.hpp) is the Kafka byte stream over TLS, read as tcp_side reads it (socket_frames).
// relay_impl.hpp is their only user.
#pragma once

#include "io/handler_slot.hpp"
#include "io/read_buffer.hpp"
#include "io/read_wait.hpp"
#include "kafka/foreign_protocol.hpp"

#include <kws/errc.hpp>
#include <kws/kafka/api.hpp>
#include <kws/relay.hpp>

#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/assert.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <utility>

namespace kws::detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using clock = std::chrono::steady_clock;
using bytes = std::span<const unsigned char>;

// Smallest read from a TCP peer into a buffer that holds part of a frame (a read into an empty buffer takes
// detail::read_buffer_bytes), and the largest single read while a big frame's body streams in: the read
// buffer grows with the bytes that arrive, never ahead of them to the size a header merely claims.
constexpr std::size_t min_read_bytes = 16 * 1024;
constexpr std::size_t max_read_bytes = 1024 * 1024;

inline void append_to(beast::flat_buffer& b, bytes data) {
  const auto dst = b.prepare(data.size());
  std::memcpy(dst.data(), data.data(), data.size());
  b.commit(data.size());
}

// Frames written to a byte stream while it is corked gather here and leave in one write: the relay corks a
// side while it has further frames at hand and uncorks it before it waits for anything, so nothing is held
// back. At most gather_limit_bytes plus the frame that crosses it gather; a large frame with nothing before
// it goes out on its own, uncopied. Nothing is held while empty.
constexpr std::size_t gather_limit_bytes = 64 * 1024;
constexpr std::size_t gather_max_frame_bytes = 16 * 1024;

class write_gather {
 public:
  /// True when `f` was appended (corked, room left, no flush under way).
  bool take(bytes f) {
    if (!corked || flushing || size() >= gather_limit_bytes ||
        (size() == 0 && f.size() >= gather_max_frame_bytes))
      return false;
    append(f);
    return true;
  }
  void append(bytes f) {
    if (!buf_) buf_ = std::make_unique<beast::flat_buffer>();
    append_to(*buf_, f);
  }
  std::size_t size() const { return buf_ ? buf_->size() : 0; }
  asio::const_buffer data() const { return buf_ ? buf_->data() : asio::const_buffer(); }
  void consume(std::size_t n) {
    if (!buf_) return;
    buf_->consume(n);
    if (buf_->size() == 0) buf_.reset();
  }
  void clear() { consume(size()); }

  bool corked = false;
  bool flushing = false;  // an asynchronous write of what gathered is under way

 private:
  // Made when something gathers, given back once it is all written: an idle side holds neither the buffer
  // nor its 48 bytes of bookkeeping.
  std::unique_ptr<beast::flat_buffer> buf_;
};

// ---- the two kinds of side ----------------------------------------------------------------------------

// The Kafka byte stream's frames, whatever carries the bytes: a read buffer in which frames are found by
// their size headers, and the budget each frame's length is taken from before its body is read.
class tcp_frames {
 public:
  // `o` is the relay's own options, which outlive its sides: a side keeps only a pointer to them (a copy of
  // their log function would be a heap block per idle connection).
  tcp_frames(const relay_options& o, std::shared_ptr<buffer_budget> budget)
      : max_frame_bytes_(o.max_frame_bytes), options_(&o), budget_(std::move(budget)) {}
  tcp_frames(const tcp_frames&) = delete;
  tcp_frames& operator=(const tcp_frames&) = delete;
  ~tcp_frames() {
    if (budget_ && charged_) budget_->release(charged_);
  }

  /// True when a whole frame (or a size that cannot be trusted, in ec) is at hand now, with no I/O.
  bool try_read_frame(error_code& ec) { return have_frame(ec) || ec; }

  bytes frame() const { return bytes_of().first(current_); }
  void pop() {
    buf_.consume(current_);
    current_ = 0;
    if (budget_ && charged_) budget_->release(charged_);
    charged_ = 0;
  }
  /// Bytes of a frame not yet complete.
  std::size_t partial_bytes() const { return buf_.size() - current_; }

  /// True when a whole frame is buffered: the next read completes at once.
  bool frame_buffered() const {
    if (current_ != 0) return true;
    error_code ec;
    const auto len = peek_frame(bytes_of(), max_frame_bytes_, ec);
    return !ec && len != 0 && len <= buf_.size();
  }

  std::uint16_t peer_close_code() const { return 0; }

  /// For a client: its first bytes are checked for TLS or HTTP (errc::tls_on_kafka_port,
  /// errc::http_on_kafka_port) before they are read as a Kafka size header.
  void check_first_bytes() { check_first_ = true; }

 protected:
  bytes bytes_of() const { return {static_cast<const unsigned char*>(buf_.data().data()), buf_.size()}; }

  // Before reading a frame's body, its whole length comes out of the budget (false: not now). A frame larger
  // than the whole budget could never be read: that is an error.
  bool reserve(error_code& ec) {
    if (!budget_) return true;
    const auto len = peek_frame(bytes_of(), max_frame_bytes_, ec);
    if (ec || len == 0 || charged_ >= len) return true;
    if (len > budget_->capacity()) {
      ec = errc::frame_too_large;
      return false;
    }
    if (!budget_->try_acquire(len - charged_, budget_seen_)) return false;
    charged_ = len;
    return true;
  }

  // True when a whole frame is buffered (its length in current_); sets ec on a size that cannot be trusted.
  bool have_frame(error_code& ec) {
    if (current_ != 0) return true;
    if (check_first_ && !first_bytes_are_kafka(ec)) return false;
    const auto len = peek_frame(bytes_of(), max_frame_bytes_, ec);
    if (ec || len == 0 || len > buf_.size()) return false;
    current_ = len;
    return true;
  }

  // False (ec set when they are another protocol's) until the first bytes are taken for Kafka.
  bool first_bytes_are_kafka(error_code& ec) {
    switch (kafka::recognise_foreign_protocol(bytes_of())) {
      case kafka::foreign_protocol::need_more:
        return false;
      case kafka::foreign_protocol::tls:
        ec = errc::tls_on_kafka_port;
        return false;
      case kafka::foreign_protocol::http:
        ec = errc::http_on_kafka_port;
        return false;
      case kafka::foreign_protocol::none:
        break;
    }
    check_first_ = false;
    return true;
  }

  // Room for the next read, up to the rest of the current frame (within the bounds above); `first` bytes
  // into an empty buffer. The caller commits what it reads.
  asio::mutable_buffer read_space(std::size_t first, error_code& ec) {
    std::size_t want = buf_.size() == 0 ? first : min_read_bytes;
    const auto len = peek_frame(bytes_of(), max_frame_bytes_, ec);
    if (ec) return {};
    if (len > buf_.size()) want = std::clamp(len - buf_.size(), min_read_bytes, max_read_bytes);
    if (const auto need = buf_.size() + want; buf_.capacity() < need) {
      // Doubled, as Beast would, but never past the frame being read: a 100 KiB frame after a 64 KiB read
      // takes 100 KiB, not the 128 KiB that malloc would map and unmap for every such frame. (With room
      // enough, prepare() below moves the bytes to the front instead.)
      const auto cap = std::max(need, std::min(2 * buf_.capacity(), std::max(len, need)));
      try {
        detail::read_flat_buffer bigger;
        bigger.reserve(cap);
        bigger.commit(asio::buffer_copy(bigger.prepare(buf_.size()), buf_.data()));
        buf_ = std::move(bigger);
      } catch (const std::bad_alloc&) {
        // This peer's frame cannot be held: its relay ends, others go on.
        ec = make_error_code(boost::system::errc::not_enough_memory);
        return {};
      }
    }
    return buf_.prepare(want);
  }

  std::size_t max_frame_bytes_;
  const relay_options* options_;
  std::shared_ptr<buffer_budget> budget_;
  std::size_t charged_ = 0;  // bytes of the budget held for the frame at the front
  detail::read_flat_buffer buf_;
  std::size_t current_ = 0;        // length of the whole frame at the front of buf_, 0 while there is none
  bool check_first_ = false;       // a client whose first bytes have not been looked at yet
  std::uint32_t budget_seen_ = 0;  // from the try_acquire that failed, for the wait that follows it
};

// The Kafka byte stream read from a TCP socket (tcp_side, and tls_side through OpenSSL): frames are found by
// their size headers in a read buffer that holds nothing while the peer is idle: once a read finds the socket
// empty, the side waits for readability without a buffer (src/io/read_wait.hpp) and then reads again.
// `Side` provides `tcp::socket& socket()` (the socket waited on), `get_executor()` and
// `std::size_t receive(asio::mutable_buffer, error_code&)`: what has arrived, without blocking, its bytes
// counted even when it ends with an error; would_block once the socket is drained (and then nothing else
// is held that a read would return), any other error only with no bytes.
template <class Side>
class socket_frames : public tcp_frames {
 public:
  socket_frames(const socket_frames&) = delete;
  socket_frames& operator=(const socket_frames&) = delete;

  /// Completes once a whole frame is buffered (at once when one is), or with the error that ended reading:
  /// eof, a bad size header, or the cancellation signal's operation_aborted.
  /// `continuation`: called from this side's own completion, where the handler may run at once (as an Asio
  /// composed operation's would); from an initiating call it is posted.
  template <class Handler>
  void async_read_frame(asio::cancellation_slot slot, Handler&& h, error_code ec = {},
                        bool continuation = false) {
    if (ec || have_frame(ec) || ec || !reserve(ec)) {
      if (ec || current_ != 0) {
        if (continuation) return h(ec);
        return asio::post(side().get_executor(), [h = std::forward<Handler>(h), ec]() mutable { h(ec); });
      }
      // The budget is spent: read nothing more from this peer until another frame's bytes come back.
      if (options_->log && log_level::debug >= options_->min_log_level)
        options_->log(log_level::debug, "reading paused: the frame buffer budget is spent");
      return budget_->async_wait(
          side().get_executor(), slot,
          [this, slot, h = std::forward<Handler>(h)](bool cancelled) mutable {
            if (cancelled) return h(error_code(asio::error::operation_aborted));
            async_read_frame(slot, std::move(h));
          },
          budget_seen_);
    }
    if (!drained_) {
      // Bytes may be there that no wake-up would announce (the last read filled its buffer): read first.
      ec = read_available();
      if (ec == asio::error::would_block || ec == asio::error::try_again) ec.clear();
      return async_read_frame(slot, std::forward<Handler>(h), ec, continuation);
    }
    // Nothing held: give the buffer back while waiting, so that an idle relay holds no read buffer.
    if (buf_.size() == 0) buf_.shrink_to_fit();
    if (wait_op_) {
      // The wait's operation is this side's own; the handler waits here (see read_wait_op).
      using handler_type = std::decay_t<Handler>;
      static_assert(sizeof(handler_type) <= sizeof(waiting_) &&
                    alignof(handler_type) <= alignof(std::max_align_t));
      new (waiting_) handler_type(std::forward<Handler>(h));
      resume_ = [](socket_frames* self, const error_code& ec, bool destroyed) {
        auto* stored = std::launder(reinterpret_cast<handler_type*>(self->waiting_));
        handler_type h(std::move(*stored));
        stored->~handler_type();
        self->resume_ = nullptr;
        if (destroyed) return;  // h, and what it holds, go with it
        if (!ec) self->drained_ = false;
        self->async_read_frame(self->waiting_slot_, std::move(h), ec, true);
      };
      waiting_slot_ = slot;
      return wait_op_->start(side().socket(), waiter_, slot);
    }
    detail::async_wait_readable(
        side().socket(), waiter_,
        asio::bind_cancellation_slot(slot, [this, slot, h = std::forward<Handler>(h)](error_code ec) mutable {
          // Woken (possibly spuriously): read, then complete or wait again.
          if (!ec) drained_ = false;
          async_read_frame(slot, std::move(h), ec, true);
        }));
  }

  /// Reads what the socket holds now, without waiting: true when bytes came (try_read_frame may now find a
  /// frame). An empty socket, a spent budget or a failure is left to async_read_frame, which meets it again.
  bool try_fill() {
    error_code ec;
    if (drained_ || have_frame(ec) || ec || !reserve(ec) || ec) return false;
    const auto before = buf_.size();
    read_available();
    return buf_.size() != before;
  }

 protected:
  socket_frames(const relay_options& o, std::shared_ptr<buffer_budget> budget)
      : tcp_frames(o, std::move(budget)) {}
  ~socket_frames() {
    // A queued wait's handler holds the relay, and so this side: nothing can be waiting here now.
    BOOST_ASSERT(!resume_);
  }

  // Once the side's socket exists: its reactor and, on an io_context's own executor, the wait's operation.
  void wait_on(tcp::socket& s) {
    waiter_ = detail::reactor_of(s);
    if (detail::on_io_context(s.get_executor())) {
      wait_op_.emplace(this, [](void* self, const error_code& ec, bool destroyed) {
        auto* side = static_cast<socket_frames*>(self);
        side->resume_(side, ec, destroyed);
      });
    }
  }

 private:
  Side& side() { return static_cast<Side&>(*this); }

  // Reads what the socket has, up to the rest of the current frame (within the bounds of read_space).
  error_code read_available() {
    error_code ec;
    // Into an empty buffer, a whole (cached) read buffer: a burst of small frames in one system call.
    const auto space = read_space(detail::read_buffer_bytes, ec);
    if (ec) return ec;
    const auto n = side().receive(space, ec);
    buf_.commit(n);
    // Only a read that would block proves the socket drained: a short read may have left a close (or an
    // error) behind it that no further wake-up would announce.
    drained_ = ec == asio::error::would_block || ec == asio::error::try_again;
    if (ec && !drained_ && buf_.size() == 0) {
      // The peer closed or the read failed: nothing more comes, so the empty buffer goes now rather than with
      // the relay (when thousands of clients leave at once, each would hold one until its relay winds up).
      buf_.shrink_to_fit();
    }
    return ec;
  }

  detail::read_waiter waiter_{};
  bool drained_ = false;  // the last read found the socket empty: wait before reading again
  // On an io_context's own executor, the read wait's operation, and the handler it completes (which keeps the
  // relay alive). Elsewhere (a strand, say) the wait is a handler's operation.
  std::optional<detail::read_wait_op> wait_op_;
  void (*resume_)(socket_frames*, const error_code&, bool destroyed) = nullptr;
  asio::cancellation_slot waiting_slot_;
  alignas(std::max_align_t) unsigned char waiting_[32];
};

// The plain Kafka byte stream over TCP.
class tcp_side : public socket_frames<tcp_side> {
 public:
  static constexpr bool can_half_close = true;

  tcp_side(tcp::socket s, const relay_options& o, std::shared_ptr<buffer_budget> budget)
      : socket_frames(o, std::move(budget)), socket_(std::move(s)) {
    wait_on(socket_);
  }

  error_code prepare() {
    // Reads after a readiness wait must never block the event loop, even on a spurious wake-up.
    error_code ec;
    socket_.non_blocking(true, ec);
    return ec;
  }
  bool is_open() const { return socket_.is_open(); }
  asio::any_io_executor get_executor() { return socket_.get_executor(); }

  /// Writes what the socket takes now (it is non-blocking, see prepare): true when that was all of `f` (or
  /// the write failed, in ec); otherwise async_write_frame of the same `f` writes the rest.
  /// While corked, `f` may gather instead (see write_gather), and is taken; what gathered goes out with the
  /// next frame that does not, in the same system call.
  bool try_write_frame(bytes f, error_code& ec) {
    if (gather_.take(f)) return true;
    const std::array<asio::const_buffer, 2> out{gather_.data(), asio::buffer(f.data(), f.size())};
    auto n = socket_.write_some(out, ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      ec.clear();
      n = 0;
    }
    if (ec) return true;
    const auto from_gather = std::min(n, gather_.size());
    gather_.consume(from_gather);
    written_ahead_ = n - from_gather;
    if (gather_.size() == 0 && written_ahead_ == f.size()) {
      written_ahead_ = 0;
      return true;
    }
    return false;
  }

  template <class Handler>
  void async_write_frame(bytes f, Handler&& h) {
    f = f.subspan(std::exchange(written_ahead_, 0));
    const std::array<asio::const_buffer, 2> out{gather_.data(), asio::buffer(f.data(), f.size())};
    asio::async_write(socket_, out, [this, h = std::forward<Handler>(h)](error_code ec, std::size_t) mutable {
      gather_.clear();
      h(ec);
    });
  }

  /// Uncorking writes what gathered if the socket takes it now; what it does not take is left for
  /// async_flush (gathered_bytes() says how much).
  void cork(bool on) {
    gather_.corked = on;
    if (on || gather_.size() == 0 || gather_.flushing) return;
    error_code ec;
    const auto n = socket_.write_some(gather_.data(), ec);
    if (!ec) gather_.consume(n);  // a failure shows up again in async_flush
  }
  std::size_t gathered_bytes() const { return gather_.size(); }
  template <class Handler>
  void async_flush(Handler&& h) {
    gather_.flushing = true;
    asio::async_write(socket_, gather_.data(),
                      [this, h = std::forward<Handler>(h)](error_code ec, std::size_t) mutable {
                        gather_.flushing = false;
                        gather_.clear();
                        h(ec);
                      });
  }

  /// Closes like a web server: FIN after everything written, then read and discard until the peer closes
  /// too (or `linger` is up). Closing a socket with unread input makes the kernel answer with a reset and
  /// drop whatever it had not sent yet, the tail of the last response among it. `keep_alive` holds the
  /// owner (and so this side) until the socket is closed; completion does not wait for the linger.
  template <class Handler>
  void async_finish(close_code, std::chrono::milliseconds linger, std::shared_ptr<void> keep_alive,
                    bool peer_done, Handler&& h) {
    asio::post(socket_.get_executor(), [h = std::forward<Handler>(h)]() mutable { h(error_code{}); });
    if (lingering_ || !socket_.is_open()) return;
    lingering_ = true;
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    if (peer_done || linger.count() <= 0) {
      socket_.close(ignored);
      return;
    }
    linger_timer_ = std::make_unique<asio::steady_timer>(socket_.get_executor());
    linger_timer_->expires_after(linger);
    linger_timer_->async_wait([this, keep_alive](error_code ec) {
      if (ec) return;
      error_code ignored;
      socket_.close(ignored);  // the pending discard read completes with operation_aborted
    });
    linger_read(std::move(keep_alive));
  }

  void abort() {
    error_code ignored;
    socket_.close(ignored);
  }

 private:
  friend socket_frames;
  tcp::socket& socket() { return socket_; }
  std::size_t receive(asio::mutable_buffer b, error_code& ec) { return socket_.read_some(b, ec); }

  void linger_read(std::shared_ptr<void> keep_alive) {
    socket_.async_wait(tcp::socket::wait_read, [this, keep_alive](error_code ec) {
      if (!ec) {
        std::array<char, 4096> sink;
        for (;;) {
          const auto n = socket_.read_some(asio::buffer(sink), ec);
          if (ec || n == 0) break;
        }
        if (ec == asio::error::would_block || ec == asio::error::try_again) return linger_read(keep_alive);
      }
      // EOF, an error, or closed by the linger timer: the peer has what it will get.
      error_code ignored;
      if (linger_timer_) linger_timer_->cancel();
      socket_.close(ignored);
    });
  }

  tcp::socket socket_;
  std::size_t written_ahead_ = 0;  // bytes of the next async_write_frame that try_write_frame wrote
  write_gather gather_;
  std::unique_ptr<asio::steady_timer> linger_timer_;  // only while lingering
  bool lingering_ = false;
};

// A WebSocket connection: one message is one frame, already checked by kws::connection.
class ws_side {
 public:
  // A WebSocket close is a full close: nothing can be written after it.
  static constexpr bool can_half_close = false;

  // Messages from the peer count against the budget as a TCP side's frames do.
  ws_side(connection c, const relay_options&, std::shared_ptr<buffer_budget> budget) : conn_(std::move(c)) {
    if (budget && conn_.is_open()) conn_.set_buffer_budget(std::move(budget));
  }

  error_code prepare() { return {}; }
  bool is_open() const { return conn_.is_open(); }
  asio::any_io_executor get_executor() { return conn_.get_executor(); }

  template <class Handler>
  void async_read_frame(asio::cancellation_slot, Handler&& h) {
    if (have_) {
      return asio::post(conn_.get_executor(), [h = std::forward<Handler>(h)]() mutable { h(error_code{}); });
    }
    // The handler waits inside the connection for as long as the broker is quiet: in this side's own slot.
    // The frame buffer is given back first: an idle relay keeps none, whatever size its last frame had (the
    // next frame's read makes one; frames already at hand are taken by try_read_frame without this).
    if (buf_.size() == 0 && buf_.capacity() != 0) buf_ = beast::flat_buffer();
    conn_.async_read_frame(
        buf_, asio::bind_allocator(detail::slot_allocator<void, read_slot_bytes>(read_slot_),
                                   [this, h = std::forward<Handler>(h)](error_code ec, std::size_t) mutable {
                                     have_ = !ec;
                                     h(ec);
                                   }));
  }

  /// True when a frame (or the error that ended reading, in ec) is at hand now, with no I/O: see
  /// kws::connection::try_read_frame.
  bool try_read_frame(error_code& ec) {
    if (have_) return true;
    const auto n = conn_.try_read_frame(buf_, ec);
    have_ = n != 0;
    return have_ || ec;
  }
  /// The connection reads its socket itself (see kws::connection::try_read_frame): nothing to fill here.
  bool try_fill() { return false; }
  /// True when the frame was taken at once: see kws::connection::try_write_frame.
  bool try_write_frame(bytes f, error_code& ec) {
    return conn_.try_write_frame(asio::buffer(f.data(), f.size()), ec);
  }

  bytes frame() const { return {static_cast<const unsigned char*>(buf_.data().data()), buf_.size()}; }
  void pop() {
    buf_.consume(buf_.size());
    have_ = false;
    // Nothing held between frames: idle relays keep no large buffer either.
    if (buf_.capacity() > min_read_bytes) buf_.shrink_to_fit();
  }
  /// Moves the frame at hand to the end of `batch` (its buffer itself when `batch` is empty, no copy) and
  /// pops it.
  void move_frame_to(beast::flat_buffer& batch) {
    if (batch.size() == 0) {
      std::swap(batch, buf_);
      buf_.clear();
      if (buf_.capacity() > min_read_bytes) buf_.shrink_to_fit();
    } else {
      append_to(batch, frame());
      buf_.clear();
    }
    have_ = false;
  }
  std::size_t partial_bytes() const { return 0; }

  template <class Handler>
  void async_write_frame(bytes f, Handler&& h) {
    conn_.async_write_frame(asio::buffer(f.data(), f.size()),
                            [h = std::forward<Handler>(h)](error_code ec, std::size_t) mutable { h(ec); });
  }

  bool frame_buffered() const { return have_; }
  /// See kws::connection::on_read_wait.
  bool on_read_wait(std::function<void()> f) { return conn_.on_read_wait(std::move(f)); }
  /// Small frames written while corked leave together once uncorked (see kws::connection::cork); the
  /// connection flushes them itself, so nothing is ever left for async_flush.
  void cork(bool on) {
    if (conn_.is_open()) conn_.cork(on);
  }
  std::size_t gathered_bytes() const { return 0; }
  template <class Handler>
  void async_flush(Handler&& h) {
    asio::post(conn_.get_executor(), [h = std::forward<Handler>(h)]() mutable { h(error_code{}); });
  }

  template <class Handler>
  void async_finish(close_code code, std::chrono::milliseconds, std::shared_ptr<void>, bool, Handler&& h) {
    cork(false);
    if (!conn_.is_open()) {
      return asio::post(conn_.get_executor(), [h = std::forward<Handler>(h)]() mutable { h(error_code{}); });
    }
    conn_.async_close(code, std::forward<Handler>(h));
  }

  void abort() { conn_.abort(); }
  std::uint16_t peer_close_code() const { return conn_.peer_close_code(); }

 private:
  connection conn_;
  beast::flat_buffer buf_;
  bool have_ = false;
  static constexpr std::size_t read_slot_bytes = 64;
  detail::handler_slot<read_slot_bytes> read_slot_;
};

template <class Connection>
struct side_of;
template <>
struct side_of<tcp::socket> {
  using type = tcp_side;
};
template <>
struct side_of<connection> {
  using type = ws_side;
};

// Used when the caller gives no hook: frames pass unchanged; the responses owed are counted.
class counting_hook final : public frame_hook {
 public:
  frame_action on_request(bytes frame, std::vector<unsigned char>&) override {
    if (kafka::expects_response(frame)) ++owed_;
    return frame_action::forward;
  }
  frame_action on_response(bytes, std::vector<unsigned char>&, std::string&) override {
    if (owed_ > 0) --owed_;
    return frame_action::forward;
  }
  std::optional<std::vector<unsigned char>> take_local_response() override { return std::nullopt; }
  bool can_take_request() const override { return true; }
  std::size_t in_flight() const override { return owed_; }

 private:
  std::size_t owed_ = 0;
};

}  // namespace kws::detail
