#include "io/handler_slot.hpp"
#include "io/read_buffer.hpp"
#include "io/read_wait.hpp"

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
#include <boost/beast/websocket/error.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>
#include <type_traits>
#include <utility>

namespace kws {
namespace {

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

bool is_teardown(const error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::operation_aborted ||
         ec == beast::websocket::error::closed || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe;
}

// The WebSocket close code that tells a peer what it did wrong (RFC 6455, section 7.4.1), if it did.
std::optional<close_code> close_code_for(const error_code& ec) {
  if (ec == errc::invalid_message_type) return close_code::unsupported_data;
  if (ec == errc::frame_too_large) return close_code::too_big;
  if (ec == errc::negative_frame_size || ec == errc::frame_size_mismatch) return close_code::protocol_error;
  return std::nullopt;
}

// The cause of a relay that a drain ended in order.
constexpr const char* shut_down_cause = "shut down, every response delivered";

// "code 1001 going away": a WebSocket close code as operators read it (RFC 6455, section 7.4.1).
std::string close_code_text(std::uint16_t code) {
  const char* name = "";
  switch (code) {
    case 1000:
      name = " normal";
      break;
    case 1001:
      name = " going away";
      break;
    case 1002:
      name = " protocol error";
      break;
    case 1003:
      name = " unsupported data";
      break;
    case 1007:
      name = " invalid payload";
      break;
    case 1008:
      name = " policy violation";
      break;
    case 1009:
      name = " message too big";
      break;
    case 1011:
      name = " internal error";
      break;
    case 1012:
      name = " service restart";
      break;
    case 1013:
      name = " try again later";
      break;
    default:
      break;
  }
  return "code " + std::to_string(code) + name;
}

// Why a side ended, in words for the closed line: "broker did not answer pings", "client reset the
// connection", "broker closed (code 1001 going away)". `who` is "client" or "broker"; `peer_code` is the
// WebSocket close code that side sent (0: none, or not a WebSocket).
std::string peer_failure(const std::string& who, const error_code& ec, std::uint16_t peer_code) {
  if (ec == asio::error::eof || ec == beast::websocket::error::closed)
    return who + " closed" + (peer_code ? " (" + close_code_text(peer_code) + ")" : std::string());
  if (ec == asio::error::connection_reset) return who + " reset the connection";
  if (ec == asio::error::broken_pipe) return who + " closed while data was being sent to it";
  // The WebSocket's own timeout: the peer stopped answering pings (or sending anything).
  if (ec == beast::error::timeout) return who + " did not answer pings";
  // TCP keep-alive probes or TCP_USER_TIMEOUT.
  if (ec == asio::error::timed_out) return who + " stopped acknowledging data (TCP timeout)";
  if (ec == errc::invalid_message_type) return who + " sent a text message (Kafka frames must be binary)";
  if (ec == errc::negative_frame_size) return who + " sent a negative Kafka frame size";
  if (ec == errc::frame_too_large) return who + " sent a Kafka frame larger than the maximum frame size";
  if (ec == errc::frame_size_mismatch)
    return who + " sent a WebSocket message whose length does not match its Kafka size header";
  if (ec == errc::truncated_frame) return who + " closed in the middle of a Kafka frame";
  if (ec == boost::system::errc::not_enough_memory) return "out of memory for a frame from the " + who;
  return who + " connection failed: " + ec.message();
}

// Errors that say the broker broke the protocol, as opposed to going away.
bool is_protocol_error(const error_code& ec) {
  return ec.category() == error_category() && ec != errc::truncated_frame;
}

void append_to(beast::flat_buffer& b, bytes data) {
  const auto dst = b.prepare(data.size());
  std::memcpy(dst.data(), data.data(), data.size());
  b.commit(data.size());
}

// Responses for a TCP client are written in batches: while one write is in flight, the frames that arrive
// (and local answers) are appended to the next batch, which is written whole once the first is done. The
// broker is read only while the next batch is below this size, so each batch holds at most this plus one
// frame.
constexpr std::size_t down_batch_bytes = 64 * 1024;

// ---- the two kinds of side ----------------------------------------------------------------------------

// The plain Kafka byte stream over TCP: frames are found by their size headers in a read buffer that holds
// nothing while the peer is idle (once a read finds the socket empty, the relay waits for readability
// without a buffer).
class tcp_side {
 public:
  static constexpr bool can_half_close = true;

  tcp_side(tcp::socket s, const relay_options& o, std::shared_ptr<buffer_budget> budget)
      : socket_(std::move(s)), max_frame_bytes_(o.max_frame_bytes), budget_(std::move(budget)) {
    if (detail::on_io_context(socket_.get_executor())) {
      wait_op_.emplace(this, [](void* self, const error_code& ec, bool destroyed) {
        auto* side = static_cast<tcp_side*>(self);
        side->resume_(side, ec, destroyed);
      });
    }
    if (budget_ && o.log) {
      on_budget_wait_ = [log = o.log, min = o.min_log_level] {
        if (log_level::debug >= min)
          log(log_level::debug, "reading paused: the frame buffer budget is spent");
      };
    }
  }
  tcp_side(const tcp_side&) = delete;
  tcp_side& operator=(const tcp_side&) = delete;
  ~tcp_side() {
    if (budget_ && charged_) budget_->release(charged_);
    // A queued wait's handler holds the relay, and so this side: nothing can be waiting here now.
    BOOST_ASSERT(!resume_);
  }

  error_code prepare() {
    // Reads after a readiness wait must never block the event loop, even on a spurious wake-up.
    error_code ec;
    socket_.non_blocking(true, ec);
    return ec;
  }
  bool is_open() const { return socket_.is_open(); }
  asio::any_io_executor get_executor() { return socket_.get_executor(); }

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
        return asio::post(socket_.get_executor(), [h = std::forward<Handler>(h), ec]() mutable { h(ec); });
      }
      // The budget is spent: read nothing more from this peer until another frame's bytes come back.
      if (on_budget_wait_) on_budget_wait_();
      return budget_->async_wait(socket_.get_executor(), slot,
                                 [this, slot, h = std::forward<Handler>(h)](bool cancelled) mutable {
                                   if (cancelled) return h(error_code(asio::error::operation_aborted));
                                   async_read_frame(slot, std::move(h));
                                 });
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
      resume_ = [](tcp_side* self, const error_code& ec, bool destroyed) {
        auto* stored = std::launder(reinterpret_cast<handler_type*>(self->waiting_));
        handler_type h(std::move(*stored));
        stored->~handler_type();
        self->resume_ = nullptr;
        if (destroyed) return;  // h, and what it holds, go with it
        if (!ec) self->drained_ = false;
        self->async_read_frame(self->waiting_slot_, std::move(h), ec, true);
      };
      waiting_slot_ = slot;
      return wait_op_->start(socket_, waiter_, slot);
    }
    detail::async_wait_readable(
        socket_, waiter_,
        asio::bind_cancellation_slot(slot, [this, slot, h = std::forward<Handler>(h)](error_code ec) mutable {
          // Woken (possibly spuriously): read, then complete or wait again.
          if (!ec) drained_ = false;
          async_read_frame(slot, std::move(h), ec, true);
        }));
  }

  /// True when a whole frame (or a size that cannot be trusted, in ec) is at hand now, with no I/O.
  bool try_read_frame(error_code& ec) { return have_frame(ec) || ec; }
  /// Reads what the socket holds now, without waiting: true when bytes came (try_read_frame may now find a
  /// frame). An empty socket, a spent budget or a failure is left to async_read_frame, which meets it again.
  bool try_fill() {
    error_code ec;
    if (drained_ || have_frame(ec) || ec || !reserve(ec) || ec) return false;
    return !read_available();
  }
  /// Writes what the socket takes now (it is non-blocking, see prepare): true when that was all of `f` (or
  /// the write failed, in ec); otherwise async_write_frame of the same `f` writes the rest.
  bool try_write_frame(bytes f, error_code& ec) {
    const auto n = socket_.write_some(asio::buffer(f.data(), f.size()), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      ec.clear();
      return false;
    }
    if (ec || n == f.size()) return true;
    written_ahead_ = n;
    return false;
  }

  bytes frame() const { return bytes_of().first(current_); }
  void pop() {
    buf_.consume(current_);
    current_ = 0;
    if (budget_ && charged_) budget_->release(charged_);
    charged_ = 0;
  }
  /// Bytes of a frame not yet complete.
  std::size_t partial_bytes() const { return buf_.size() - current_; }

  template <class Handler>
  void async_write_frame(bytes f, Handler&& h) {
    f = f.subspan(std::exchange(written_ahead_, 0));
    asio::async_write(socket_, asio::buffer(f.data(), f.size()),
                      [h = std::forward<Handler>(h)](error_code ec, std::size_t) mutable { h(ec); });
  }

  void cork(bool) {}
  /// True when a whole frame is buffered: the next read completes at once.
  bool frame_buffered() const {
    if (current_ != 0) return true;
    error_code ec;
    const auto len = peek_frame(bytes_of(), max_frame_bytes_, ec);
    return !ec && len != 0 && len <= buf_.size();
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
  std::uint16_t peer_close_code() const { return 0; }

 private:
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
    if (!budget_->try_acquire(len - charged_)) return false;
    charged_ = len;
    return true;
  }

  // True when a whole frame is buffered (its length in current_); sets ec on a size that cannot be trusted.
  bool have_frame(error_code& ec) {
    if (current_ != 0) return true;
    const auto len = peek_frame(bytes_of(), max_frame_bytes_, ec);
    if (ec || len == 0 || len > buf_.size()) return false;
    current_ = len;
    return true;
  }

  // Reads what the socket has, up to the rest of the current frame (within the bounds above).
  error_code read_available() {
    error_code ec;
    // Into an empty buffer, a whole (cached) read buffer: a burst of small frames in one system call.
    std::size_t want = buf_.size() == 0 ? detail::read_buffer_bytes : min_read_bytes;
    const auto len = peek_frame(bytes_of(), max_frame_bytes_, ec);
    if (ec) return ec;
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
        return make_error_code(boost::system::errc::not_enough_memory);
      }
    }
    const auto n = socket_.read_some(buf_.prepare(want), ec);
    // Only a read that would block proves the socket drained: a short read may have left a close (or an
    // error) behind it that no further wake-up would announce.
    drained_ = ec == asio::error::would_block || ec == asio::error::try_again;
    if (ec) {
      // The peer closed or the read failed: nothing more comes, so the empty buffer goes now rather than with
      // the relay (when thousands of clients leave at once, each would hold one until its relay winds up).
      if (!drained_ && buf_.size() == 0) buf_.shrink_to_fit();
      return ec;
    }
    buf_.commit(n);
    return {};
  }

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
  detail::read_waiter waiter_ = detail::reactor_of(socket_);
  bool drained_ = false;  // the last read found the socket empty: wait before reading again
  // On an io_context's own executor, the read wait's operation, and the handler it completes (which keeps the
  // relay alive). Elsewhere (a strand, say) the wait is a handler's operation.
  std::optional<detail::read_wait_op> wait_op_;
  void (*resume_)(tcp_side*, const error_code&, bool destroyed) = nullptr;
  asio::cancellation_slot waiting_slot_;
  alignas(std::max_align_t) unsigned char waiting_[32];
  std::size_t max_frame_bytes_;
  std::shared_ptr<buffer_budget> budget_;
  std::size_t charged_ = 0;  // bytes of the budget held for the frame at the front
  std::function<void()> on_budget_wait_;
  detail::read_flat_buffer buf_;
  std::size_t current_ = 0;        // length of the whole frame at the front of buf_, 0 while there is none
  std::size_t written_ahead_ = 0;  // bytes of the next async_write_frame that try_write_frame wrote
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
  /// Small frames written while corked leave together once uncorked (see kws::connection::cork).
  void cork(bool on) {
    if (conn_.is_open()) conn_.cork(on);
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

// ---- the pump -----------------------------------------------------------------------------------------

template <class ClientConn, class BrokerConn>
class relay_impl final : public relay {
  using client_side = typename side_of<ClientConn>::type;
  using broker_side = typename side_of<BrokerConn>::type;
  // Responses are batched only towards a TCP client: a WebSocket client gets one message per frame.
  static constexpr bool batch_down = std::is_same_v<client_side, tcp_side>;

 public:
  relay_impl(ClientConn client, BrokerConn broker, relay_options options, std::shared_ptr<frame_hook> hook,
             done_handler on_done, reconnect_function<BrokerConn> reconnect)
      : options_(std::move(options)),
        client_(std::move(client), options_, options_.buffer_budget),
        broker_(std::in_place, std::move(broker), options_, options_.response_budget),
        hook_(hook ? std::move(hook) : std::make_shared<counting_hook>()),
        on_done_(std::move(on_done)),
        reconnect_(std::move(reconnect)),
        started_at_(clock::now()),
        last_activity_(started_at_) {
    if (options_.log) hook_->set_log(options_.log, options_.min_log_level);
  }

  void start() override {
    try {
      if (auto ec = client_.prepare()) return fail(ec, "client");
      if (auto ec = broker_->prepare()) return fail(ec, "broker");
      watch_broker_reads();
      up_next();
      down_pump();
      if (options_.idle_timeout.count() > 0) arm_idle_timer();
    } catch (const std::bad_alloc&) {
      out_of_memory();
    }
  }

  void drain(std::chrono::milliseconds timeout) override {
    if (stopping_ || draining_) return;
    draining_ = true;
    stop_reading_client();
    if (quiet()) return close_broker(close_code::going_away, shut_down_cause);
    timer().expires_after(timeout);
    timer().async_wait(op([this](error_code ec) {
      if (!ec && !stopping_) {
        close_broker(close_code::going_away, "shut down with " + std::to_string(hook_->in_flight()) +
                                                 " response(s) not delivered (drain timeout)");
      }
    }));
  }

  std::size_t in_flight() const override { return hook_->in_flight(); }

  void stop_now(const std::string& why) override {
    if (done_) return;
    const auto owed = hook_->in_flight();
    set_cause(owed ? why + " with " + std::to_string(owed) + " response(s) not delivered" : why);
    stopping_ = true;
    close_pending_ = false;
    stop_reading_client();
    if (timer_) timer_->cancel();
    broker_->abort();
    client_.abort();
    // Handlers still pending complete with operation_aborted and find the relay done.
    report();
  }

 private:
  // ---- client -> broker ---------------------------------------------------------------------------------

  // Requests already buffered go to the broker corked, so that several leave in one write; the broker is
  // uncorked whenever the pump stops writing (to wait for the client, for the hook, or to end).
  void up_next() {
    up_pump();
    // A read that completes at once (a whole request is buffered) continues the batch.
    if (!up_writing_ && !(up_reading_ && client_.frame_buffered())) broker_->cork(false);
  }

  void up_pump() {
    while (!stopping_ && !draining_ && !up_writing_ && !connecting_) {
      if (!up_have_) {
        if (client_eof_ || up_reading_) return;
        // A request already buffered is taken here, without a round through the event loop.
        if (error_code ec; client_.try_read_frame(ec)) {
          if (ec) {
            client_fault_ = close_code_for(ec);
            return fail(ec, "client");
          }
          up_have_ = true;
          touch();
          continue;
        }
        // More of a burst may wait in the socket: read it here rather than through a round of the event loop.
        if (client_.try_fill()) continue;
        up_reading_ = true;
        return client_.async_read_frame(up_cancel_.slot(), op([this](error_code ec) {
                                          up_reading_ = false;
                                          if (stopping_) return;
                                          if (ec == asio::error::operation_aborted)
                                            return;  // stopped reading for a drain
                                          if (ec == asio::error::eof || ec == beast::websocket::error::closed)
                                            return client_closed();
                                          if (ec) {
                                            client_fault_ = close_code_for(ec);
                                            return fail(ec, "client");
                                          }
                                          up_have_ = true;
                                          touch();
                                          up_next();
                                        }));
      }
      if (!hook_->can_take_request()) {
        // Backpressure: the next response to go out resumes reading.
        up_paused_ = true;
        return;
      }
      if (!broker_up_) return reconnect();
      const auto frame = client_.frame();
      up_replacement_.clear();
      const auto action = hook_->on_request(frame, up_replacement_);
      if (action == frame_action::answer || action == frame_action::drop) {
        if (action == frame_action::answer) ++report_.local_answers;
        request_done(frame.size());
        down_pump();
        continue;
      }
      const bytes out = action == frame_action::replace ? bytes(up_replacement_) : frame;
      // More bytes behind this request: gather the writes (a lone request goes out at once).
      if (client_.partial_bytes() > 0) broker_->cork(true);
      // Taken at once while the broker's write buffer has room; otherwise written with a handler.
      if (error_code ec; broker_->try_write_frame(out, ec)) {
        if (ec) return fail(ec, "broker");
        request_done(frame.size());
        touch();
        continue;
      }
      up_writing_ = true;
      return broker_->async_write_frame(out, op([this, n = frame.size()](error_code ec) {
                                          up_writing_ = false;
                                          if (ec) return fail(ec, "broker");
                                          request_done(n);
                                          touch();
                                          if (close_pending_ || stopping_ || draining_ || client_eof_) {
                                            broker_->cork(false);
                                          }
                                          if (close_pending_) return close_broker(close_code_, report_.cause);
                                          if (stopping_) return;
                                          if (draining_ || client_eof_) return maybe_finish();
                                          up_next();
                                        }));
    }
  }

  void request_done(std::size_t n) {
    client_.pop();
    up_have_ = false;
    report_.up_bytes += n;
    ++report_.up_frames;
    if (counters_) {
      counters_->up_bytes.fetch_add(n, std::memory_order_relaxed);
      counters_->up_frames.fetch_add(1, std::memory_order_relaxed);
    }
  }

  void client_closed() {
    client_eof_ = true;
    if (const auto partial = client_.partial_bytes()) {
      // The client went away inside a request; what it sent before still gets its responses.
      partial_request_bytes_ = partial;
    }
    if (!client_side::can_half_close) return close_broker(close_code::normal, "client closed");
    maybe_finish();
    if (!stopping_ && !draining_) {
      // A client that closed entirely looks the same as one that only stopped sending; bound the wait.
      timer().expires_after(options_.half_close_timeout);
      timer().async_wait(op([this](error_code ec) {
        if (!ec && !stopping_ && !draining_) {
          close_broker(close_code::normal, "client closed with " + std::to_string(hook_->in_flight()) +
                                               " response(s) outstanding");
        }
      }));
    }
  }

  // Every request read has been answered (or needs none) and nothing is being written either way.
  bool quiet() const {
    return !up_writing_ && !down_writing_ && down_next_.size() == 0 && hook_->in_flight() == 0;
  }

  // After the client stopped sending (or a drain): close once every request has its response.
  void maybe_finish() {
    if (stopping_ || !quiet()) return;
    if (draining_) return close_broker(close_code::going_away, shut_down_cause);
    if (client_eof_) {
      close_broker(close_code::normal, partial_request_bytes_
                                           ? "client closed inside a request (" +
                                                 std::to_string(partial_request_bytes_) + " bytes dropped)"
                                           : "client closed");
    }
  }

  void stop_reading_client() { up_cancel_.emit(asio::cancellation_type::terminal); }

  // ---- broker (re)connection ----------------------------------------------------------------------------

  // The broker closed between requests earlier; the client has sent another one.
  void reconnect() {
    connecting_ = true;
    reconnect_(op([this](error_code ec, BrokerConn conn) {
      connecting_ = false;
      if (stopping_) return;
      if (ec == asio::error::operation_aborted && draining_) {
        set_cause("shut down while the broker was being dialled again");
        return shutdown_all();
      }
      if (ec) return fail_with(ec, "could not reconnect to the broker: " + ec.message());
      broker_.emplace(std::move(conn), options_, options_.response_budget);
      broker_up_ = true;
      if (auto e = broker_->prepare()) return fail(e, "broker");
      watch_broker_reads();
      ++report_.reconnects;
      if (counters_) counters_->reconnects.fetch_add(1, std::memory_order_relaxed);
      log(log_level::debug, [] { return std::string("broker connection open again"); });
      if (draining_) return close_broker(close_code::going_away, shut_down_cause);
      down_pump();
      up_next();
    }));
  }

  // ---- broker -> client ---------------------------------------------------------------------------------

  // Writes the client's next response: a local answer when it is next in request order, else the broker
  // frame at hand, else reads one. One client write at a time keeps responses in order.
  void down_pump() {
    if constexpr (batch_down) {
      return down_pump_batched();
    }
    if (stopping_ || down_writing_) return;
    if (auto local = hook_->take_local_response()) {
      down_local_ = std::move(*local);
      return down_write(down_local_, false);
    }
    if (down_have_) {
      const auto verdict = judge_response();
      if (!verdict) return;
      return down_write(verdict->out, true);
    }
    if (down_reading_ || !broker_up_ || connecting_) return;
    if (error_code ec; broker_->try_read_frame(ec)) {
      if (ec) return broker_read_failed(ec);
      down_have_ = true;
      touch();
      return down_pump();
    }
    down_reading_ = true;
    broker_->async_read_frame(asio::cancellation_slot(), op([this](error_code ec) {
                                down_reading_ = false;
                                if (ec) return broker_read_failed(ec);
                                down_have_ = true;
                                touch();
                                down_pump();
                              }));
  }

  struct response_verdict {
    bytes out;      // what the client gets: the broker's frame, or the hook's replacement
    bool replaced;  // out is the replacement
  };

  // The hook's verdict on the broker frame at hand, for both down paths; none when it failed the relay.
  std::optional<response_verdict> judge_response() {
    const auto frame = broker_->frame();
    std::string why;
    down_replacement_.clear();
    switch (hook_->on_response(frame, down_replacement_, why)) {
      case frame_action::fail:
        fail_with(errc::unusable_response, why);
        return std::nullopt;
      case frame_action::replace:
        return response_verdict{bytes(down_replacement_), true};
      default:
        return response_verdict{frame, false};
    }
  }

  // Towards a TCP client: every response at hand (local answers in their place) goes to the next batch; the
  // broker is read on while a batch is written, up to down_batch_bytes ahead. One client write at a time
  // keeps responses in order; a batch is one write, so many small responses cost one system call.
  void down_pump_batched() {
    if (stopping_) return;
    for (;;) {
      while (auto local = hook_->take_local_response()) {
        append_to(down_next_, bytes(*local));
        ++down_next_frames_;
      }
      if (!down_have_) {
        // Responses already received join the batch here, without a round through the event loop.
        if (down_reading_ || !broker_up_ || connecting_ || broker_error_ ||
            down_next_.size() >= down_batch_bytes)
          break;
        error_code ec;
        if (!broker_->try_read_frame(ec)) break;
        if (ec) {
          if ((down_writing_ || down_next_.size() > 0) && !stopping_) {
            broker_error_ = ec;  // written after what arrived before it, below
            break;
          }
          return broker_read_failed(ec);
        }
        down_have_ = true;
        touch();
        continue;
      }
      const auto verdict = judge_response();
      if (!verdict) return;
      if (verdict->replaced) {
        append_to(down_next_, verdict->out);
        broker_->pop();
      } else {
        broker_->move_frame_to(down_next_);
      }
      down_have_ = false;
      ++down_next_frames_;
    }
    if (!down_reading_ && broker_up_ && !connecting_ && !broker_error_ &&
        down_next_.size() < down_batch_bytes) {
      down_reading_ = true;
      broker_read_waits_ = false;
      in_down_read_start_ = true;
      broker_->async_read_frame(asio::cancellation_slot(), op([this](error_code ec) {
                                  down_reading_ = false;
                                  broker_read_waits_ = false;
                                  if (ec) {
                                    if ((down_writing_ || down_next_.size() > 0) && !stopping_) {
                                      // Whatever arrived before the broker's side ended reaches the client
                                      // first.
                                      broker_error_ = ec;
                                      return maybe_write_batch();
                                    }
                                    return broker_read_failed(ec);
                                  }
                                  down_have_ = true;
                                  touch();
                                  down_pump();
                                }));
      in_down_read_start_ = false;
    }
    maybe_write_batch();
  }

  // The batch goes out now unless the broker read in flight will complete from bytes already received, in
  // which case that response joins it. Without that knowledge (TLS) every read counts as waiting.
  void maybe_write_batch() {
    if (stopping_ || down_writing_ || down_next_.size() == 0) return;
    if (down_reading_ && broker_reads_watched_ && !broker_read_waits_) return;
    write_batch();
  }

  void watch_broker_reads() {
    if constexpr (batch_down) {
      broker_reads_watched_ = broker_->on_read_wait([w = std::weak_ptr<relay>(shared_from_this())] {
        if (auto s = w.lock()) static_cast<relay_impl*>(s.get())->broker_read_waiting();
      });
    }
  }

  void broker_read_waiting() {
    if (!down_reading_) return;
    broker_read_waits_ = true;
    if (!in_down_read_start_) maybe_write_batch();
  }

  void write_batch() {
    std::swap(down_out_, down_next_);
    down_out_frames_ = std::exchange(down_next_frames_, 0);
    down_writing_ = true;
    const bytes out(static_cast<const unsigned char*>(down_out_.data().data()), down_out_.size());
    auto done = op([this](error_code ec) {
      down_writing_ = false;
      if (ec) return fail(ec, "client");
      report_.down_bytes += down_out_.size();
      report_.down_frames += down_out_frames_;
      if (counters_) {
        counters_->down_bytes.fetch_add(down_out_.size(), std::memory_order_relaxed);
        counters_->down_frames.fetch_add(down_out_frames_, std::memory_order_relaxed);
      }
      down_out_.clear();
      // Nothing more to send: an idle relay keeps no buffer.
      if (down_next_.size() == 0) down_out_ = beast::flat_buffer();
      touch();
      if (stopping_) return;
      if (up_paused_) {
        up_paused_ = false;
        up_next();
      }
      down_pump();
      if (broker_error_ && !down_writing_ && down_next_.size() == 0) {
        const auto e = *std::exchange(broker_error_, std::nullopt);
        return broker_read_failed(e);
      }
      if (draining_ || client_eof_) maybe_finish();
    });
    // Written at once when the socket takes it all: no round through the event loop.
    if (error_code ec; client_.try_write_frame(out, ec)) return done(ec);
    client_.async_write_frame(out, std::move(done));
  }

  void down_write(bytes out, bool from_broker) {
    down_writing_ = true;
    client_.async_write_frame(out, op([this, n = out.size(), from_broker](error_code ec) {
                                down_writing_ = false;
                                if (ec) return fail(ec, "client");
                                if (from_broker) {
                                  broker_->pop();
                                  down_have_ = false;
                                } else {
                                  std::vector<unsigned char>().swap(down_local_);
                                }
                                report_.down_bytes += n;
                                ++report_.down_frames;
                                if (counters_) {
                                  counters_->down_bytes.fetch_add(n, std::memory_order_relaxed);
                                  counters_->down_frames.fetch_add(1, std::memory_order_relaxed);
                                }
                                touch();
                                if (stopping_) return;
                                if (up_paused_) {
                                  up_paused_ = false;
                                  up_next();
                                }
                                if (draining_ || client_eof_) maybe_finish();
                                down_pump();
                              }));
  }

  void broker_read_failed(const error_code& ec) {
    if (stopping_) return maybe_done();
    if (is_protocol_error(ec)) {
      broker_fault_ = close_code_for(ec);
      return fail(ec, "broker");
    }
    const bool orderly = ec == asio::error::eof || ec == beast::websocket::error::closed;
    const auto owed = hook_->in_flight();
    if (owed == 0 && !up_writing_ && reconnect_ && !draining_ && !client_eof_) {
      // Edge platforms recycle connections; the client should not notice. Dial again on its next request.
      log(log_level::debug, [&] {
        return "broker connection ended between requests (" + ec.message() +
               "); reconnecting on the next request";
      });
      broker_->abort();
      broker_up_ = false;
      return;
    }
    if (orderly) {
      if (owed == 0) {
        set_cause(peer_failure("broker", ec, broker_->peer_close_code()));
        return shutdown_all();
      }
      // The client will retry what was lost; it gets everything that did arrive first.
      const auto code = broker_->peer_close_code();
      return fail_with(asio::error::connection_aborted,
                       "broker closed with " + std::to_string(owed) + " request(s) in flight" +
                           (code ? " (" + close_code_text(code) + ")" : std::string()));
    }
    fail(ec, "broker", owed > 0 ? " with " + std::to_string(owed) + " request(s) in flight" : "");
  }

  // ---- ending -------------------------------------------------------------------------------------------

  void close_broker(close_code code, const std::string& cause) {
    if (stopping_ && !close_pending_) return;
    if (up_writing_) {
      // One write at a time on the broker side: the close waits for the frame in flight.
      close_pending_ = true;
      close_code_ = code;
      set_cause(cause);
      return;
    }
    close_pending_ = false;
    set_cause(cause);
    stopping_ = true;
    stop_reading_client();
    if (timer_) timer_->cancel();
    if (!broker_up_) {
      finish_client(code);
      return maybe_done();
    }
    broker_->async_finish(code, options_.linger_timeout, shared_from_this(), false,
                          op([this, code](error_code) { finish_client(code); }));
  }

  // `who`: "client" or "broker", the side `ec` came from.
  void fail(const error_code& ec, const std::string& who, const std::string& detail = {}) {
    if (stopping_) return maybe_done();
    if (!report_.error && !is_teardown(ec)) report_.error = ec;
    const auto code = who == "client" ? client_.peer_close_code() : broker_->peer_close_code();
    set_cause(peer_failure(who, ec, code) + detail);
    shutdown_all();
  }

  void fail_with(error_code ec, const std::string& cause) {
    if (stopping_) return maybe_done();
    if (!report_.error) report_.error = ec;
    set_cause(cause);
    shutdown_all();
  }

  // Ends at once: the broker side is dropped (or, when it broke the protocol, told so with a close code),
  // the client gets what was already written to it.
  void shutdown_all() {
    stopping_ = true;
    close_pending_ = false;
    stop_reading_client();
    if (timer_) timer_->cancel();
    if (broker_fault_ && broker_up_) {
      broker_->async_finish(*broker_fault_, options_.linger_timeout, shared_from_this(), false,
                            op([](error_code) {}));
    } else {
      broker_->abort();
    }
    finish_client(close_code::normal);
    maybe_done();
  }

  // A client that broke the protocol is told so with a fitting close code (WebSocket clients only).
  void finish_client(close_code code) {
    if (client_finished_) return;
    client_finished_ = true;
    client_.async_finish(client_fault_.value_or(code), options_.linger_timeout, shared_from_this(),
                         client_eof_, op([](error_code) {}));
  }

  // Every operation the relay starts (a read, a write, a close, a timer, a dial) completes through the
  // handler this makes, which counts it and, after `f` has run, checks whether the relay is over. So a relay
  // that is stopping ends when its last operation completes, whichever that is and whatever `f` did.
  // An allocation that fails in a handler ends this relay (and only this one), with its sides.
  template <class F>
  auto op(F&& f) {
    ++ops_;
    return [self = shared_from_this(), this, f = std::forward<F>(f)](auto&&... args) mutable {
      --ops_;
      try {
        f(std::forward<decltype(args)>(args)...);
      } catch (const std::bad_alloc&) {
        out_of_memory();
      }
      maybe_done();
    };
  }

  void out_of_memory() noexcept {
    try {
      if (!report_.error) report_.error = make_error_code(boost::system::errc::not_enough_memory);
      stop_now("out of memory");
    } catch (...) {
      // Nothing is left to end it with; the process's own handler logs what escapes a handler.
    }
  }

  // The one place a relay ends (besides stop_now): stopping, and no operation of its own is pending.
  void maybe_done() {
    if (!stopping_ || ops_ > 0 || done_) return;
    // A close handshake may still be running on the broker side after an orderly close; stop it.
    broker_->abort();
    report();
  }

  void report() {
    done_ = true;
    report_.duration = clock::now() - started_at_;
    if (report_.cause.empty()) report_.cause = "closed";
    if (on_done_) on_done_(report_);
  }

  void set_cause(const std::string& c) {
    if (report_.cause.empty()) report_.cause = c;
  }

  template <class MakeText>
  void log(log_level level, MakeText&& make_text) const {
    if (options_.log && level >= options_.min_log_level) options_.log(level, make_text());
  }

  void touch() { last_activity_ = clock::now(); }

  void arm_idle_timer() {
    if (stopping_ || draining_) return;
    timer().expires_after(options_.idle_timeout / 2 + std::chrono::milliseconds(1));
    timer().async_wait(op([this](error_code ec) {
      if (ec || stopping_ || draining_) return;
      if (clock::now() - last_activity_ >= options_.idle_timeout) {
        set_cause("idle: no traffic either way for " + std::to_string(options_.idle_timeout.count()) + "ms");
        return shutdown_all();
      }
      arm_idle_timer();
    }));
  }

  relay_options options_;
  relay_counters* counters_ = options_.counters.get();  // options_ keeps it alive
  client_side client_;
  std::optional<broker_side> broker_;  // always engaged; replaced on a reconnect
  std::shared_ptr<frame_hook> hook_;
  done_handler on_done_;
  reconnect_function<BrokerConn> reconnect_;
  // Drain, half-close and idle deadlines: made when first needed (most relays never need it).
  std::unique_ptr<asio::steady_timer> timer_;
  asio::steady_timer& timer() {
    if (!timer_) timer_ = std::make_unique<asio::steady_timer>(client_.get_executor());
    return *timer_;
  }
  asio::cancellation_signal up_cancel_;
  std::vector<unsigned char> up_replacement_;
  std::vector<unsigned char> down_replacement_;
  std::vector<unsigned char> down_local_;
  beast::flat_buffer down_out_;   // the batch being written to the client (batch_down)
  beast::flat_buffer down_next_;  // the batch after it
  std::size_t down_out_frames_ = 0;
  std::size_t down_next_frames_ = 0;
  std::optional<error_code> broker_error_;  // a broker read failure waiting for the batch in flight
  bool broker_reads_watched_ = false;       // the broker connection says when a read waits for the peer
  bool broker_read_waits_ = false;          // the broker read in flight waits for the peer
  bool in_down_read_start_ = false;
  std::size_t partial_request_bytes_ = 0;
  int ops_ = 0;
  bool up_reading_ = false;
  bool up_have_ = false;  // a whole request waits at the front of the client side
  bool up_writing_ = false;
  bool up_paused_ = false;
  bool down_reading_ = false;
  bool down_have_ = false;  // a whole response waits at the front of the broker side
  bool down_writing_ = false;
  std::optional<close_code> client_fault_;  // the close code for a client that broke the protocol
  std::optional<close_code> broker_fault_;  // the same for the broker
  bool connecting_ = false;
  bool broker_up_ = true;  // false after the broker closed between requests, until the next request
  bool client_eof_ = false;
  bool client_finished_ = false;
  bool draining_ = false;
  bool stopping_ = false;
  bool close_pending_ = false;
  bool done_ = false;
  close_code close_code_ = close_code::normal;
  relay_report report_;
  clock::time_point started_at_;
  clock::time_point last_activity_;
};

}  // namespace

std::shared_ptr<relay> relay::create(tcp::socket client, connection broker, relay_options options,
                                     std::shared_ptr<frame_hook> hook, done_handler on_done,
                                     reconnect_function<connection> reconnect) {
  return std::make_shared<relay_impl<tcp::socket, connection>>(std::move(client), std::move(broker),
                                                               std::move(options), std::move(hook),
                                                               std::move(on_done), std::move(reconnect));
}

std::shared_ptr<relay> relay::create(connection client, tcp::socket broker, relay_options options,
                                     std::shared_ptr<frame_hook> hook, done_handler on_done,
                                     reconnect_function<tcp::socket> reconnect) {
  return std::make_shared<relay_impl<connection, tcp::socket>>(std::move(client), std::move(broker),
                                                               std::move(options), std::move(hook),
                                                               std::move(on_done), std::move(reconnect));
}

}  // namespace kws
