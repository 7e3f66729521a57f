// The WebSocket connection after its handshake: kws::connection's only implementation. Its member
// functions live in stream.cpp (the API, parsing frames) and stream_io.cpp (the socket: reading, writing,
// ending, timeouts, the buffer budget); both are instantiated there for plain TCP and for TLS, and nowhere
// else (the dial and the accept, dialer.cpp and accept.cpp, only construct it and hand it over).
#pragma once

#include "io/lazy_optional.hpp"
#include "io/read_buffer.hpp"
#include "io/read_wait.hpp"
#include "io/tick_list.hpp"
#include "io/tls_stream.hpp"
#include "ws/frame.hpp"

#include <kws/buffer_budget.hpp>
#include <kws/connection.hpp>
#include <kws/errc.hpp>
#include <kws/frame.hpp>

#include <boost/asio/append.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/websocket/error.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

namespace kws::detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using boost::system::error_code;
using tcp = asio::ip::tcp;

using plain_next = beast::tcp_stream;
using tls_next = tls_stream<beast::tcp_stream>;

// Reads take what the socket has (over TLS, what OpenSSL has decrypted of it), up to read_buffer_bytes: the
// buffer exists only while there are bytes (see start_read).
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
// Read buffers larger than this are given back once empty, so that idle connections stay small. The write
// buffers are given back whenever they empty: an idle connection then holds none, whatever it last sent (as
// the relay's response batches).
constexpr std::size_t keep_buffer_bytes = 64 * 1024;

template <class Buffer>
void trim(Buffer& b, std::size_t keep = keep_buffer_bytes) {
  if (b.size() == 0 && b.capacity() > keep) b = Buffer();
}

using input_buffer = read_flat_buffer;

inline bool is_truncation(const error_code& ec) {
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
// whole; while it is on the way, further messages gather behind it. A large unmasked message over plain TCP
// with no write on the way is sent from the caller's buffer instead, after `out_` in the same system call;
// only what the socket does not take is copied into `out_` (encode). A write completes when its bytes have
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
                      std::chrono::milliseconds close_timeout);

  asio::any_io_executor get_executor() override { return sock().get_executor(); }
  bool is_open() const override {
    return life_ != life::handshaking && life_ != life::torn_down && !aborted_ && ended_by_ != timeout::idle;
  }
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

  void fill(error_code& ec) override;

  void async_fill(done_handler handler) override;

  std::size_t read_frame(beast::flat_buffer& out, error_code& ec) override;

  std::size_t try_read_frame(beast::flat_buffer& out, error_code& ec) override;

  bool try_write_frame(asio::const_buffer frame, error_code& ec) override;

  void async_read_frame(beast::flat_buffer& out, io_handler handler) override;

  // ---- writes -----------------------------------------------------------------------------------------

  std::size_t write_some(asio::const_buffer in, error_code& ec) override;

  void async_write_some(asio::const_buffer in, io_handler handler) override;

  void write_frame(asio::const_buffer frame, error_code& ec) override;

  void async_write_frame(asio::const_buffer frame, io_handler handler) override;

  // ---- closing ----------------------------------------------------------------------------------------

  void close(std::uint16_t code, error_code& ec) override;

  void async_close(std::uint16_t code, done_handler handler) override;

  void abort() noexcept override {
    aborted_ = true;
    kill_socket();
    settle_aborted();
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

  void drop_waiting() noexcept;

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
  error_code after_abort(error_code ec) const;
  error_code read_gate() const {
    if (aborted_ || ended_by_ == timeout::idle) return after_abort(asio::error::operation_aborted);
    return read_error_;
  }
  error_code write_gate() const;

  // ---- state ----------------------------------------------------------------------------------------
  //
  // The connection's life and where its parser is in the peer's frames are one enum each, changed only in
  // enter(), which checks (in debug builds) that the step is one the protocol allows. Beside them stay
  // facts that can hold in any state: aborted_ (the owner's call), stream_broken_ (no more frames will be
  // read), teardown_after_flush_ (a pending action), reading_/writing_ (operations in flight).

  // The closing handshake (RFC 6455 7.1): each side sends one close frame; the connection is torn down
  // (our sending half shut) once ours is sent and the peer's is in, or the handshake has failed.
  enum class life : std::uint8_t {
    handshaking,       // the HTTP upgrade is not done: no frames yet
    open,              // frames both ways
    close_sent,        // our close frame is queued; the peer's is awaited
    closes_exchanged,  // the peer's close is in, and ours (or our echo of its) is queued
    torn_down,         // nothing more is sent or read
  };
  // What ended the connection when a deadline did; the first one wins.
  enum class timeout : std::uint8_t { none, idle, close };
  // Where the parser is: data frames of a message, between them the message's fragments.
  enum class parse_at : std::uint8_t {
    message_start,  // the next data frame starts a message
    frame_payload,  // a data frame's header is taken; frame_left_ bytes of its payload are not
    next_fragment,  // a message is under way; its next frame's header is awaited
  };

  void enter(life to) noexcept {
    [[maybe_unused]] const auto from = life_;
    assert(from == to
               ? to == life::torn_down
               : (to == life::open && from == life::handshaking) ||
                     (to == life::close_sent && from == life::open) ||
                     (to == life::closes_exchanged && (from == life::open || from == life::close_sent)) ||
                     (to == life::torn_down && from != life::handshaking));
    life_ = to;
  }
  void enter(parse_at to) noexcept {
    [[maybe_unused]] const auto from = parse_;
    assert((to == parse_at::frame_payload && from != parse_at::frame_payload) ||
           (to != parse_at::frame_payload && from == parse_at::frame_payload));
    parse_ = to;
  }
  void ended_by(timeout t) noexcept {
    if (ended_by_ == timeout::none) ended_by_ = t;
  }
  bool close_sent() const noexcept { return life_ >= life::close_sent; }
  bool in_frame() const noexcept { return parse_ == parse_at::frame_payload; }
  bool in_message() const noexcept { return parse_ != parse_at::message_start; }

  // ---- parsing ------------------------------------------------------------------------------------------

  // Takes what `in_` holds: answers control frames, unmasks data into `out` (dropped when null, while the
  // close waits), until a whole message, or the end (read_error_ set, `ec` too), or the bytes run out.
  step advance(beast::flat_buffer* out, error_code& ec);

  // Whether `in_` holds a whole message (or something advance() fails on), so that advance() completes
  // without leaving part of a message in the reader's buffer. Only between messages.
  bool whole_message_buffered() const;

  void payload_taken(std::size_t n);

  std::size_t finish_message(beast::flat_buffer& out, std::size_t before, error_code& ec);

  // The peer broke RFC 6455: tell it so (close 1002) and end.
  step protocol_failure(const error_code& ec) { return fail_connection(ec, 1002); }

  // RFC 6455 7.1.7, failing the connection: our close with `code`, then the end of TCP, without waiting for
  // the peer's answer.
  step fail_connection(const error_code& ec, std::uint16_t code);

  void teardown_when_flushed();

  void pong(std::span<const unsigned char> payload);

  step peer_close(std::span<const unsigned char> payload, error_code& ec);

  // ---- reading from the socket ------------------------------------------------------------------------

  read_target read_buffer(beast::flat_buffer* out);

  void took(const read_target& t, std::size_t n);

  beast::flat_buffer* rd_out() { return rd_ ? rd_->out : sync_out_; }

  std::size_t sync_read_some(asio::mutable_buffer b, error_code& ec);

  // A read of the socket failed: the error every later read gets.
  error_code read_failed(error_code ec);

  // Runs the read side: what is buffered first, the socket when that is not enough. `initiating`: called
  // from an operation's initiating function, which must not complete it inline.
  void pump(bool initiating);

  // A read of what the socket holds now: true when it took bytes (or failed), false when there were none.
  bool read_now();

  // Waits for the peer: the socket is drained now (and, over TLS, OpenSSL holds nothing to read), so a wait
  // for readability without a buffer (src/io/read_wait.hpp), so that an idle connection holds no read
  // buffer, and then read_now().
  void start_read();

  // The end of a wait for readability.
  void readable(error_code ec);
  static void readable_cb(void* self, const error_code& ec, bool destroyed);

  // ---- writing ------------------------------------------------------------------------------------------

  void encode(std::uint8_t op, std::span<const unsigned char> payload);

  void send_close(std::uint16_t code);

  // The byte stream's writes: whole frames are encoded, the bytes of an unfinished one held in wbuf(). Stops
  // after cork_limit_bytes of encoded messages (the caller writes the rest again), but always takes one.
  std::size_t encode_stream(asio::const_buffer in, error_code& ec);

  // After a write's bytes are encoded: complete it now (corked, or nothing was encoded) or once they are
  // sent.
  void finish_write_call(io_handler handler, error_code ec, std::size_t n);

  void start_flush();

  auto& stream_for_io() {
    if constexpr (tls) {
      return *stream_;
    } else {
      return sock();
    }
  }

  void flushed(error_code ec, std::size_t n);

  void sync_flush(error_code& ec);
  void sync_flush() {
    error_code ignored;
    sync_flush(ignored);
  }

  // ---- ending -------------------------------------------------------------------------------------------

  // The close completes once our close frame is sent and the peer's has come (or reads have ended).
  void maybe_finish_close(bool initiating = false);

  // The closing handshake is over (or failed): no more bytes either way.
  void teardown();

  void kill_socket() noexcept;
  // After abort(): a handler that waits with no socket operation in flight to complete it completes now, with
  // operation_aborted, so that no handler (nor the owner it may hold) is left waiting on a dead connection.
  void settle_aborted() noexcept;
  // A close waits while the reader it handed a message to has not read again: read on for the close.
  void read_on_for_close();

  // ---- the buffer budget --------------------------------------------------------------------------------

  void wait_for_budget();
  // The reader is done with the last message it was given.
  void release_held() {
    if (held_ != 0) budget_->release(std::exchange(held_, 0));
  }
  // Reading is over: the part of a message received so far will never be whole. Its bytes leave the
  // reader's buffer together with their reservation, so that the budget never counts less than is held (a
  // relay keeps its buffer until it ends, which may be long after its client has gone).
  void release_partial() {
    if (rd_ && rd_->out) drop_partial(*rd_->out, rd_->before);
    if (charged_ != 0) budget_->release(std::exchange(charged_, 0));
  }
  // Cuts `out` back to its first `keep` bytes, giving back the memory of a large cut.
  static void drop_partial(beast::flat_buffer& out, std::size_t keep);
  void release_budget() {
    if (!budget_) return;
    if (const auto n = std::exchange(held_, 0) + std::exchange(charged_, 0)) budget_->release(n);
  }

  // Room in `out` for `n` more bytes of the message being read: doubled as bytes arrive, never past the end
  // of what is being read, which is the message's once its Kafka size header is in (a peer may send a message
  // in many small fragments), else the WebSocket frame's. False when the memory for it cannot be had.
  bool make_room(beast::flat_buffer& out, std::size_t n);

  // The message being received cannot be held: this connection fails (1011, an internal error), others go
  // on.
  step out_of_memory(error_code& ec) {
    ec = make_error_code(boost::system::errc::not_enough_memory);
    return fail_connection(ec, 1011);
  }

  // ---- idle timeout -------------------------------------------------------------------------------------

  // Checked every half timeout (with pings) or every timeout: any byte received since the last check counts;
  // in silence a ping is sent, and a second silent period ends the connection with a timeout. The check is an
  // entry in the context's tick lists (src/io/tick_list.hpp), not a timer of the connection's own.
  void arm_idle_timer() {
    idle_tick_.schedule(sock().get_executor(), keepalive_pings_ ? idle_timeout_ / 2 : idle_timeout_);
  }
  void idle_check();
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
  write_step next_write(asio::const_buffer rest);

  write_step& fail_write(write_step& st);

  void append(std::span<const unsigned char> bytes);

  // The stream: over TLS for the connection's life; over plain TCP only until the handshake is done, after
  // which sock_ holds its socket.
  std::optional<Stream> stream_;
  std::optional<asio::ip::tcp::socket> sock_;
  std::string url_;
  std::size_t max_frame_bytes_;

  // Reading.
  input_buffer in_;
  std::optional<read_op> rd_;
  beast::flat_buffer* sync_out_ = nullptr;
  bool reading_ = false;  // a wait for readability is in flight
  bool drained_ = false;  // the last read found the socket empty: wait before reading again
  read_waiter waiter_{};  // the reactor that async_wait_readable queues on
  // On an io_context's own executor: the read wait's operation, and the connection it keeps alive while
  // queued. Elsewhere (a strand, say) the wait is a handler's operation.
  std::optional<read_wait_op> wait_op_;
  std::shared_ptr<ws_connection> wait_keep_;
  parse_at parse_ = parse_at::message_start;
  bool frame_fin_ = false;
  bool frame_masked_ = false;
  ws::mask_key frame_key_{};
  std::size_t frame_left_ = 0;
  std::size_t frame_pos_ = 0;
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
  life life_ = life::handshaking;
  timeout ended_by_ = timeout::none;
  bool aborted_ = false;               // abort() was called
  bool teardown_after_flush_ = false;  // tear down once what is queued is sent (and no close is waited on)
  std::uint16_t peer_close_code_ = 0;
  std::unique_ptr<asio::steady_timer> close_timer_;  // the closing handshake's deadline, made when needed
  tick_lists::entry idle_tick_{this, &idle_ops};     // the idle check
  std::chrono::milliseconds idle_timeout_{0};
  std::chrono::milliseconds close_timeout_{std::chrono::seconds(10)};
  bool keepalive_pings_ = false;
  bool idle_pinged_ = false;
  bool active_ = false;  // bytes arrived since the idle timer last looked
  bool sync_ = false;    // a blocking call is running
  // Among the flags rather than after max_frame_bytes_: its padding there put the connection 8 bytes past
  // 896, into jemalloc's 1024-byte class (128 more bytes for every connection).
  bool client_;

  // The buffer budget (see set_buffer_budget): bytes reserved for the message being received, and for the
  // last one handed to the reader.
  std::shared_ptr<buffer_budget> budget_;
  std::size_t charged_ = 0;
  std::size_t held_ = 0;
  bool budget_waiting_ = false;
  std::uint32_t budget_seen_ = 0;  // from the try_acquire that failed, for wait_for_budget
};

extern template class ws_connection<plain_next>;
extern template class ws_connection<tls_next>;

}  // namespace kws::detail
