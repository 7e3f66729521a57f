// The Beast side of kws::connection and kws::dialer. All Beast/Asio WebSocket templates are instantiated
// here, once for plain TCP and once for TLS.
#include "dialer_state.hpp"

#include <kws/accept.hpp>
#include <kws/connection.hpp>
#include <kws/dialer.hpp>
#include <kws/errc.hpp>
#include <kws/forward_proxy.hpp>
#include <kws/frame.hpp>

#include <boost/asio/append.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/coroutine.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

namespace kws::detail {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using boost::system::error_code;
using tcp = asio::ip::tcp;

// Beast's write buffer for masking, sized per message between these (see size_write_buffer).
constexpr std::size_t min_write_buffer_bytes = 512;
constexpr std::size_t max_write_buffer_bytes = 64 * 1024;

// Buffers above this size are released once their frame is done, so idle connections stay small.
constexpr std::size_t keep_buffer_bytes = 64 * 1024;

void trim(beast::flat_buffer& b) {
  if (b.size() == 0 && b.capacity() > keep_buffer_bytes) b.shrink_to_fit();
}

// Turns the errors of a WebSocket read into what a reader of a Kafka byte stream should see.
error_code translate_read_error(error_code ec, bool partial) {
  if (ec == websocket::error::message_too_big) return errc::frame_too_large;
  if (partial && ec != asio::error::operation_aborted) return errc::truncated_frame;
  if (ec == websocket::error::closed || ec == asio::ssl::error::stream_truncated) return asio::error::eof;
  return ec;
}

// A plain TCP stream under the WebSocket stream that, once the handshake is done, reads what the socket has
// (up to read_buffer_bytes) and serves Beast's reads from it. Beast's WebSocket reader takes frame headers
// and small payloads through a 1536-byte buffer of its own, so without this every ~1.5 KB of pipelined small
// messages cost a recv; with it a batch of messages costs one. Reads of at least direct_read_bytes (the
// payload of a large message) go straight to the socket, with no copy. The buffer is allocated once the
// socket is readable and freed once Beast has taken everything, so an idle connection holds none.
//
// Writes can be corked: while corked, small writes (each message Beast writes, control frames included) are
// copied to a buffer and reported done at once; uncorking sends the buffer in one write. Every write passes
// through here in order, so Beast's own frames (pongs, pings, the close) never interleave with a batch. The
// buffer holds at most cork_limit_bytes plus one write; beyond that a write waits for the flush in flight.
class buffered_tcp {
 public:
  using next_layer_type = beast::tcp_stream;
  using executor_type = next_layer_type::executor_type;

  static constexpr std::size_t read_buffer_bytes = 64 * 1024;
  static constexpr std::size_t direct_read_bytes = 16 * 1024;
  static constexpr std::size_t direct_write_bytes = 16 * 1024;
  static constexpr std::size_t cork_limit_bytes = 64 * 1024;

  template <class... Args>
  explicit buffered_tcp(Args&&... args) : next_(std::forward<Args>(args)...) {}

  executor_type get_executor() noexcept { return next_.get_executor(); }
  next_layer_type& next_layer() noexcept { return next_; }
  const next_layer_type& next_layer() const noexcept { return next_; }

  /// From here on reads are buffered. Until then (the HTTP exchange of the handshake) every read goes to the
  /// TCP stream, whose deadline bounds the handshake.
  void start_buffering(std::weak_ptr<void> owner) noexcept {
    buffering_ = true;
    owner_ = std::move(owner);
  }

  void on_read_wait(std::function<void()> f) { on_read_wait_ = std::move(f); }
  /// Whether bytes arrived since the last call.
  bool take_activity() noexcept { return std::exchange(active_, false); }

  void cork(bool on) {
    corked_ = on;
    if (!on) flush();
  }

  template <class MutableBufferSequence>
  std::size_t read_some(const MutableBufferSequence& buffers, error_code& ec) {
    ec.clear();
    if (buf_.size() != 0) return take(buffers);
    return next_.read_some(buffers, ec);
  }
  template <class MutableBufferSequence>
  std::size_t read_some(const MutableBufferSequence& buffers) {
    error_code ec;
    const auto n = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }
  template <class ConstBufferSequence>
  std::size_t write_some(const ConstBufferSequence& buffers, error_code& ec) {
    return next_.write_some(buffers, ec);
  }
  template <class ConstBufferSequence>
  std::size_t write_some(const ConstBufferSequence& buffers) {
    return next_.write_some(buffers);
  }
  template <class ConstBufferSequence, class WriteHandler>
  auto async_write_some(const ConstBufferSequence& buffers, WriteHandler&& handler) {
    enum class step { start, direct, done };
    return asio::async_compose<WriteHandler, void(error_code, std::size_t)>(
        [this, buffers, st = step::start](auto& self, error_code ec = {}, std::size_t n = 0) mutable {
          switch (st) {
            case step::start: {
              const auto size = asio::buffer_size(buffers);
              if (write_error_) {
                st = step::done;
                return asio::post(next_.get_executor(), asio::append(std::move(self), write_error_, 0));
              }
              if (!busy_ && out_.size() == 0 && (!corked_ || size >= direct_write_bytes)) {
                st = step::direct;
                busy_ = true;
                if (!buffering_) return next_.async_write_some(buffers, std::move(self));
                return next_.socket().async_write_some(buffers, std::move(self));
              }
              if (out_.size() >= cork_limit_bytes) {
                // Full: wait for the flush in flight (started here if the buffer is merely corked).
                flush(true);
                waiter_.emplace(std::move(self));
                return;
              }
              const auto dst = out_.prepare(size);
              asio::buffer_copy(dst, buffers);
              out_.commit(size);
              st = step::done;
              return asio::post(next_.get_executor(), asio::append(std::move(self), error_code{}, size));
            }
            case step::direct:
              busy_ = false;
              after_write();
              return self.complete(ec, n);
            case step::done:
              return self.complete(ec, n);
          }
        },
        handler, next_);
  }

  template <class MutableBufferSequence, class ReadHandler>
  auto async_read_some(const MutableBufferSequence& buffers, ReadHandler&& handler) {
    enum class step { start, done };
    return asio::async_compose<ReadHandler, void(error_code, std::size_t)>(
        [this, buffers, st = step::start](auto& self, error_code ec = {}, std::size_t n = 0) mutable {
          if (st == step::done) {
            // The caller's buffer filled up: more is probably waiting, take it in bulk next time.
            if (!ec && buffering_ && n == asio::buffer_size(buffers)) more_ = true;
            if (n != 0) active_ = true;
            return self.complete(ec, n);
          }
          st = step::done;
          const auto want = asio::buffer_size(buffers);
          // A large read (the payload of a big message) goes straight into the caller's buffer.
          if (buf_.size() == 0 && want != 0 && want < direct_read_bytes && more_) {
            more_ = false;
            ec = fill();
            if (ec == asio::error::would_block || ec == asio::error::try_again)
              ec.clear();
            else if (ec)
              return asio::post(next_.get_executor(), asio::append(std::move(self), ec, 0));
          }
          if (buf_.size() != 0 || want == 0) {
            // Bytes at hand: complete through the executor, never inside the initiating call.
            const auto taken = take(buffers);
            return asio::post(next_.get_executor(), asio::append(std::move(self), error_code{}, taken));
          }
          // Before the handshake is done the TCP stream's deadline applies; after it, its timeout machinery
          // is off and the socket is read directly (a speculative read: no re-arming of the readiness wait).
          if (!buffering_) return next_.async_read_some(buffers, std::move(self));
          next_.socket().async_read_some(buffers, std::move(self));
          if (on_read_wait_) on_read_wait_();
        },
        handler, next_);
  }

  friend void teardown(beast::role_type role, buffered_tcp& s, error_code& ec) {
    using beast::websocket::teardown;
    teardown(role, s.next_, ec);
  }
  template <class TeardownHandler>
  friend void async_teardown(beast::role_type role, buffered_tcp& s, TeardownHandler&& handler) {
    using beast::websocket::async_teardown;
    async_teardown(role, s.next_, std::forward<TeardownHandler>(handler));
  }

 private:
  // One non-blocking recv of what the socket has, through a per-thread scratch buffer so that nothing is
  // allocated when there is nothing; the socket itself stays in blocking mode for the synchronous API.
  error_code fill() {
    thread_local std::unique_ptr<unsigned char[]> scratch(new unsigned char[read_buffer_bytes]);
    const auto n = ::recv(next_.socket().native_handle(), scratch.get(), read_buffer_bytes, MSG_DONTWAIT);
    if (n < 0) return error_code(errno, boost::system::system_category());
    if (n == 0) return asio::error::eof;
    const auto got = static_cast<std::size_t>(n);
    if (got == read_buffer_bytes) more_ = true;
    active_ = true;
    const auto dst = buf_.prepare(got);
    std::memcpy(dst.data(), scratch.get(), got);
    buf_.commit(got);
    return {};
  }

  template <class MutableBufferSequence>
  std::size_t take(const MutableBufferSequence& buffers) {
    const auto n = asio::buffer_copy(buffers, buf_.data());
    buf_.consume(n);
    if (buf_.size() == 0) buf_ = beast::flat_buffer();
    return n;
  }

  // Sends the corked bytes (also while corked when `force`), one write at a time.
  void flush(bool force = false) {
    if (busy_ || out_.size() == 0 || (corked_ && !force)) return;
    auto keep = owner_.lock();
    if (!keep) return;
    busy_ = true;
    std::swap(out_, sending_);
    asio::async_write(next_.socket(), sending_.data(),
                      [this, keep = std::move(keep)](error_code ec, std::size_t) {
                        busy_ = false;
                        // The bytes were reported written already; a failure shows on the next write (and on
                        // reads).
                        if (ec && !write_error_) write_error_ = ec;
                        sending_.clear();
                        if (out_.size() == 0) sending_ = beast::flat_buffer();
                        after_write();
                      });
  }

  void after_write() {
    flush(out_.size() >= cork_limit_bytes || waiter_.has_value());
    if (waiter_ && (out_.size() < cork_limit_bytes || write_error_)) {
      auto w = std::move(*waiter_);
      waiter_.reset();
      std::move(w)(error_code{});
    }
  }

  next_layer_type next_;
  beast::flat_buffer buf_;
  bool buffering_ = false;
  bool more_ = false;          // the last read filled its buffer: read in bulk next
  bool active_ = false;        // bytes arrived since take_activity()
  std::weak_ptr<void> owner_;  // the connection, kept alive by a flush in flight
  std::function<void()> on_read_wait_;
  bool corked_ = false;
  bool busy_ = false;  // a write to the socket is in flight
  beast::flat_buffer out_;
  beast::flat_buffer sending_;
  error_code write_error_;
  std::optional<asio::any_completion_handler<void(error_code)>> waiter_;
};

template <class NextLayer>
class ws_connection final : public connection_impl {
 public:
  using ws_type = websocket::stream<NextLayer>;

  template <class... Args>
  ws_connection(std::string url, std::size_t max_frame_bytes, Args&&... args)
      : ws_(std::forward<Args>(args)...), url_(std::move(url)), max_frame_bytes_(max_frame_bytes) {
    ws_.binary(true);
    // One Kafka frame is one WebSocket message in one WebSocket frame.
    ws_.auto_fragment(false);
    ws_.read_message_max(max_frame_bytes_ + frame_header_bytes);
    // A client masks every frame through this buffer and writes it a buffer at a time: Beast's 4 KiB default
    // meant ~24 sendmsg calls per 100 KiB frame. Measured with bench/proxy_bench: 100 KiB frames went from
    // ~700 to ~1000 MB/s. Only the part a frame actually used becomes resident.
    ws_.write_buffer_bytes(max_write_buffer_bytes);
  }

  ws_type& ws() { return ws_; }
  /// The WebSocket handshake is done: reads may be buffered from here on.
  void handshake_done() {
    if constexpr (std::is_same_v<NextLayer, buffered_tcp>) {
      ws_.next_layer().start_buffering(weak_from_this());
      take_over_idle_timeout();
    }
  }
  void cork(bool on) override {
    if constexpr (std::is_same_v<NextLayer, buffered_tcp>) ws_.next_layer().cork(on);
  }
  bool on_read_wait(std::function<void()> f) override {
    if constexpr (std::is_same_v<NextLayer, buffered_tcp>) {
      ws_.next_layer().on_read_wait(std::move(f));
      return true;
    } else {
      return false;
    }
  }
  /// For accepted connections: the request target, known once the request has been read.
  void set_url(std::string url) { url_ = std::move(url); }

  asio::any_io_executor get_executor() override { return ws_.get_executor(); }
  bool is_open() const override { return ws_.is_open(); }
  const std::string& url() const override { return url_; }
  std::size_t max_frame_bytes() const override { return max_frame_bytes_; }
  std::size_t pending_write_bytes() const override { return wbuf_.size(); }

  // ---- reads ------------------------------------------------------------------------------------------

  std::span<const unsigned char> readable() const override { return bytes_of(rbuf_.data()); }
  void consume(std::size_t n) override {
    rbuf_.consume(n);
    trim(rbuf_);
  }

  void fill(error_code& ec) override {
    rbuf_.clear();
    ws_.read(rbuf_, ec);
    ec = check_read(ec, rbuf_, 0);
    if (ec) rbuf_.clear();
  }

  void async_fill(done_handler handler) override {
    rbuf_.clear();
    auto h = std::move(handler).bound();
    asio::async_compose<decltype(h), void(error_code)>(
        [this, keep = shared_from_this(), started = false](auto& self, error_code ec = {},
                                                           std::size_t = 0) mutable {
          if (!started) {
            started = true;
            return ws_.async_read(rbuf_, std::move(self));
          }
          ec = after_abort(check_read(ec, rbuf_, 0));
          if (ec) rbuf_.clear();
          self.complete(ec);
        },
        h, ws_);
  }

  std::size_t read_frame(beast::flat_buffer& out, error_code& ec) override {
    const auto before = out.size();
    ws_.read(out, ec);
    ec = check_read(ec, out, before);
    return ec ? 0 : out.size() - before;
  }

  void async_read_frame(beast::flat_buffer& out, io_handler handler) override {
    auto h = std::move(handler).bound();
    asio::async_compose<decltype(h), void(error_code, std::size_t)>(
        [this, keep = shared_from_this(), &out, before = out.size(), started = false](
            auto& self, error_code ec = {}, std::size_t = 0) mutable {
          if (!started) {
            started = true;
            return ws_.async_read(out, std::move(self));
          }
          ec = after_abort(check_read(ec, out, before));
          self.complete(ec, ec ? 0 : out.size() - before);
        },
        h, ws_);
  }

  // ---- writes -----------------------------------------------------------------------------------------

  std::size_t write_some(asio::const_buffer in, error_code& ec) override {
    std::size_t consumed = 0;
    for (;;) {
      const auto st = next_write(in + consumed);
      consumed += st.consumed;
      if (st.ec) {
        ec = st.ec;
        return consumed;
      }
      if (!st.send) return consumed;
      size_write_buffer(st.send->size());
      ws_.write(*st.send, ec);
      sent(*st.send);
      if (ec) return consumed;
    }
  }

  void async_write_some(asio::const_buffer in, io_handler handler) override {
    auto h = std::move(handler).bound();
    asio::async_compose<decltype(h), void(error_code, std::size_t)>(
        [this, keep = shared_from_this(), in, consumed = std::size_t{0}, coro = asio::coroutine{},
         went_async = false, pending = std::optional<asio::const_buffer>{}](auto& self, error_code ec = {},
                                                                            std::size_t = 0) mutable {
          BOOST_ASIO_CORO_REENTER(coro) {
            for (;;) {
              {
                const auto st = next_write(in + consumed);
                consumed += st.consumed;
                if (st.ec || !st.send) {
                  ec = st.ec;
                  break;
                }
                pending = st.send;
              }
              went_async = true;
              size_write_buffer(pending->size());
              BOOST_ASIO_CORO_YIELD ws_.async_write(*pending, std::move(self));
              sent(*pending);
              if (ec) break;
            }
            if (!went_async) {
              // Only held bytes, nothing on the wire: complete through the executor, never inline.
              BOOST_ASIO_CORO_YIELD asio::post(ws_.get_executor(),
                                               asio::append(std::move(self), ec, consumed));
              // post's completion arrives with ec and n restored by append; nothing to do.
            }
            self.complete(after_abort(ec), consumed);
          }
        },
        h, ws_);
  }

  void write_frame(asio::const_buffer frame, error_code& ec) override {
    ec = write_error_ ? write_error_ : check_message(bytes_of(frame), max_frame_bytes_);
    if (!ec) {
      size_write_buffer(frame.size());
      ws_.write(frame, ec);
    }
  }

  void async_write_frame(asio::const_buffer frame, io_handler handler) override {
    auto h = std::move(handler).bound();
    asio::async_compose<decltype(h), void(error_code, std::size_t)>(
        [this, keep = shared_from_this(), frame, started = false](auto& self, error_code ec = {},
                                                                  std::size_t n = 0) mutable {
          if (!started) {
            started = true;
            if (auto bad = write_error_ ? write_error_ : check_message(bytes_of(frame), max_frame_bytes_)) {
              return asio::post(ws_.get_executor(), asio::append(std::move(self), bad, std::size_t{0}));
            }
            size_write_buffer(frame.size());
            return ws_.async_write(frame, std::move(self));
          }
          self.complete(after_abort(ec), n);
        },
        h, ws_);
  }

  // ---- closing ----------------------------------------------------------------------------------------

  void close(std::uint16_t code, error_code& ec) override {
    wbuf_.clear();
    if (idle_timer_) idle_timer_->cancel();
    ws_.close(websocket::close_reason(code), ec);
  }

  void async_close(std::uint16_t code, done_handler handler) override {
    wbuf_.clear();
    // The closing handshake has its own (handshake) timeout.
    if (idle_timer_) idle_timer_->cancel();
    auto h = std::move(handler).bound();
    asio::async_compose<decltype(h), void(error_code)>(
        [this, keep = shared_from_this(), code, started = false](auto& self, error_code ec = {}) mutable {
          if (!started) {
            started = true;
            return ws_.async_close(websocket::close_reason(code), std::move(self));
          }
          self.complete(after_abort(ec));
        },
        h, ws_);
  }

  void abort() noexcept override {
    aborted_ = true;
    if (idle_timer_) idle_timer_->cancel();
    error_code ignored;
    beast::get_lowest_layer(ws_).socket().close(ignored);
  }

  std::uint16_t peer_close_code() const override { return static_cast<std::uint16_t>(ws_.reason().code); }

 private:
  struct write_step {
    std::size_t consumed = 0;
    std::optional<asio::const_buffer> send;  // a whole frame to send now
    error_code ec;
  };

  // Decides what to do with the next bytes of a byte-stream write: send a whole frame straight from the
  // caller's buffer, or add to the held partial frame (and send it once it is whole).
  write_step next_write(asio::const_buffer rest) {
    write_step st;
    if (write_error_) {
      st.ec = write_error_;
      return st;
    }
    const auto in = bytes_of(rest);
    if (in.empty()) return st;
    if (wbuf_.size() == 0) {
      const auto len = peek_frame(in, max_frame_bytes_, st.ec);
      if (st.ec) return fail_write(st);
      if (len != 0 && len <= in.size()) {
        st.consumed = len;
        st.send = asio::const_buffer(in.data(), len);
        return st;
      }
      if (len != 0) wbuf_.reserve(len);
      append(in);
      st.consumed = in.size();
      return st;
    }
    const auto held = bytes_of(wbuf_.data());
    if (held.size() < frame_header_bytes) {
      st.consumed = std::min(frame_header_bytes - held.size(), in.size());
      append(in.first(st.consumed));
      if (wbuf_.size() < frame_header_bytes) return st;
      const auto len = peek_frame(bytes_of(wbuf_.data()), max_frame_bytes_, st.ec);
      if (st.ec) return fail_write(st);
      wbuf_.reserve(len);
      if (len == frame_header_bytes) st.send = wbuf_.data();
      return st;
    }
    const auto len = frame_header_bytes + static_cast<std::size_t>(load_be32(held.data()));
    st.consumed = std::min(len - held.size(), in.size());
    append(in.first(st.consumed));
    if (wbuf_.size() == len) st.send = wbuf_.data();
    return st;
  }

  // A client masks every message through Beast's write buffer, which Beast keeps for the connection's life:
  // sized to the message (in powers of two, so steady traffic reallocates nothing), an idle connection whose
  // last message was small keeps a small one.
  void size_write_buffer(std::size_t message_bytes) {
    const auto want =
        std::bit_ceil(std::clamp(message_bytes + 16, min_write_buffer_bytes, max_write_buffer_bytes));
    ws_.write_buffer_bytes(want);
  }

  write_step& fail_write(write_step& st) {
    // The stream has lost its frame boundaries; every later write fails the same way.
    write_error_ = st.ec;
    wbuf_.clear();
    return st;
  }

  void append(std::span<const unsigned char> bytes) {
    auto dst = wbuf_.prepare(bytes.size());
    std::memcpy(dst.data(), bytes.data(), bytes.size());
    wbuf_.commit(bytes.size());
  }

  void sent(asio::const_buffer b) {
    if (wbuf_.size() != 0 && b.data() == wbuf_.data().data()) {
      wbuf_.clear();
      trim(wbuf_);
    }
  }

  // An operation that was pending when the socket was closed may fail on its next step with whatever the
  // closed socket says (EBADF, say); callers are promised operation_aborted.
  error_code after_abort(error_code ec) const {
    if (ec && timed_out_) return beast::error::timeout;
    return ec && aborted_ ? error_code(asio::error::operation_aborted) : ec;
  }

  // Beast re-arms its idle timer at every read: a timer cancelled (one more completion), a new wait and a
  // timerfd update per message, a large share of the CPU with many small messages. On plain connections the
  // same timeout runs here instead, as a check every half timeout of whether any byte arrived: no answer
  // to the ping sent after half the timeout in silence, and the connection ends (beast::error::timeout),
  // as Beast would have done.
  void take_over_idle_timeout() {
    websocket::stream_base::timeout t{};
    ws_.get_option(t);
    if (t.idle_timeout == websocket::stream_base::none()) return;
    idle_timeout_ = t.idle_timeout;
    keepalive_pings_ = t.keep_alive_pings;
    t.idle_timeout = websocket::stream_base::none();
    t.keep_alive_pings = false;
    ws_.set_option(t);
    idle_timer_.emplace(ws_.get_executor());
    arm_idle_timer();
  }

  void arm_idle_timer() {
    if (keepalive_pings_) {
      idle_timer_->expires_after(idle_timeout_ / 2);
    } else {
      idle_timer_->expires_after(idle_timeout_);
    }
    idle_timer_->async_wait([w = weak_from_this(), this](error_code ec) {
      const auto keep = w.lock();
      if (ec || !keep || aborted_ || !ws_.is_open()) return;
      if constexpr (std::is_same_v<NextLayer, buffered_tcp>) {
        if (ws_.next_layer().take_activity()) {
          idle_pinged_ = false;
          return arm_idle_timer();
        }
      }
      if (keepalive_pings_ && !idle_pinged_) {
        idle_pinged_ = true;
        ws_.async_ping({}, [keep](error_code) {});
        return arm_idle_timer();
      }
      timed_out_ = true;
      error_code ignored;
      beast::get_lowest_layer(ws_).socket().close(ignored);
    });
  }

  error_code check_read(error_code ec, beast::flat_buffer& buf, std::size_t before) {
    if (ec) {
      const bool partial = buf.size() > before;
      return translate_read_error(ec, partial);
    }
    if (!ws_.got_binary()) return errc::invalid_message_type;
    auto msg = bytes_of(buf.data()).subspan(before);
    return check_message(msg, max_frame_bytes_);
  }

  ws_type ws_;
  std::string url_;
  std::size_t max_frame_bytes_;
  beast::flat_buffer rbuf_;
  beast::flat_buffer wbuf_;
  error_code write_error_;
  bool aborted_ = false;
  std::optional<asio::steady_timer>
      idle_timer_;  // plain connections: the idle timeout, see take_over_idle_timeout
  std::chrono::steady_clock::duration idle_timeout_{};
  bool keepalive_pings_ = false;
  bool idle_pinged_ = false;
  bool timed_out_ = false;
};

using plain_next = buffered_tcp;
using tls_next = beast::ssl_stream<beast::tcp_stream>;

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
    auto& tcp_layer = beast::get_lowest_layer(conn_->ws());
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
    beast::get_lowest_layer(conn_->ws()).socket().set_option(tcp::no_delay(true), ignored);
    if (proxy_) return send_connect(self);
    secure(self);
  }

  // The CONNECT request written, or the proxy's answer read.
  template <class Self>
  void operator()(Self& self, error_code ec, std::size_t) {
    auto& tcp_layer = beast::get_lowest_layer(conn_->ws());
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

  // After the TLS handshake, or the WebSocket upgrade.
  template <class Self>
  void operator()(Self& self, error_code ec) {
    if (ec && stage_ == stage::tls) note_tls_problem(ec);
    if (ec && stage_ == stage::upgrade) note_upgrade_problem(ec);
    if (ec) return self.complete(ec, connection{});
    upgrade_answer_.reset();
    if (stage_ == stage::tls) return upgrade(self);
    // The closing handshake gets a whole handshake timeout of its own, not what the dial left of it.
    auto& ws = conn_->ws();
    websocket::stream_base::timeout t{};
    ws.get_option(t);
    t.handshake_timeout = std::chrono::steady_clock::duration(state_->config.handshake_timeout);
    ws.set_option(t);
    conn_->handshake_done();
    self.complete(ec, connection(std::move(conn_)));
  }

 private:
  enum class stage { tcp, proxy_write, proxy_read, tls, upgrade };

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
    auto r = std::make_shared<race>(ex);
    r->timer.expires_at(deadline_);
    const auto service = std::to_string(port);
    // `this` lives inside `self`: nothing of it may be used once `self` has moved.
    r->op.emplace(std::move(self));
    r->timer.async_wait(asio::bind_executor(handler_ex, [r](error_code ec) {
      if (ec || !r->op) return;
      r->resolver.cancel();
      auto op = std::move(*r->op);
      r->op.reset();
      op(error_code(asio::error::timed_out), tcp::resolver::results_type{});
    }));
    r->resolver.async_resolve(
        host, service, asio::bind_executor(handler_ex, [r](error_code ec, tcp::resolver::results_type res) {
          r->timer.cancel();
          if (!r->op) return;
          auto op = std::move(*r->op);
          r->op.reset();
          op(ec, res);
        }));
  }

  template <class Self>
  void send_connect(Self& self) {
    stage_ = stage::proxy_write;
    tunnel_ = std::make_unique<tunnel_state>();
    tunnel_->request = connect_request(*proxy_, url_.authority(), state_->config.user_agent);
    tunnel_->parser.header_limit(max_proxy_header_bytes);
    // The answer to CONNECT has no body that matters here; only its header is read.
    tunnel_->parser.skip(true);
    asio::async_write(beast::get_lowest_layer(conn_->ws()), asio::buffer(tunnel_->request), std::move(self));
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
      const auto result = SSL_get_verify_result(conn_->ws().next_layer().native_handle());
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
      auto& tls = conn_->ws().next_layer();
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

  template <class Self>
  void upgrade(Self& self) {
    stage_ = stage::upgrade;
    const auto& cfg = state_->config;
    auto& ws = conn_->ws();
    // The WebSocket stream keeps its own timers from here on; the TCP deadline must be off.
    beast::get_lowest_layer(ws).expires_never();
    websocket::stream_base::timeout t{};
    const auto left = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::max(deadline_ - std::chrono::steady_clock::now(), std::chrono::steady_clock::duration(1)));
    t.handshake_timeout = left;
    t.idle_timeout = cfg.idle_timeout.count() > 0 ? std::chrono::steady_clock::duration(cfg.idle_timeout)
                                                  : websocket::stream_base::none();
    t.keep_alive_pings = cfg.idle_timeout.count() > 0 && cfg.keepalive_pings;
    ws.set_option(t);
    ws.set_option(websocket::stream_base::decorator([state = state_](websocket::request_type& req) {
      req.set(beast::http::field::user_agent, state->config.user_agent);
      for (const auto& [name, value] : state->config.headers) req.set(name, value);
    }));
    const bool default_port = url_.port == (url_.secure ? 443 : 80);
    std::string host_header =
        default_port ? url_.authority().substr(0, url_.authority().rfind(':')) : url_.authority();
    upgrade_answer_ = std::make_unique<websocket::response_type>();
    upgrade_answer_->result(0u);  // stays 0 unless a status line is parsed (the default would be 200)
    ws.async_handshake(*upgrade_answer_, host_header, url_.target, std::move(self));
  }

  // Beast says only that the upgrade was declined or that the answer was not HTTP; the status line the
  // broker sent (a 404 for a wrong path, a 200 from a plain web server, a 401 without a token) is what an
  // operator needs.
  void note_upgrade_problem(error_code ec) {
    if (!info_ || !upgrade_answer_) return;
    const auto& res = *upgrade_answer_;
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
  std::unique_ptr<websocket::response_type> upgrade_answer_;  // at a stable address while the op moves
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
    beast::get_lowest_layer(conn_->ws()).expires_at(st_->deadline);
    if constexpr (std::is_same_v<NextLayer, tls_next>) {
      stage_ = stage::tls;
      return conn_->ws().next_layer().async_handshake(asio::ssl::stream_base::server, std::move(self));
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
        idle_timeouts();
        conn_->handshake_done();
        return self.complete(ec, connection(std::move(conn_)), std::move(st_->info));
      case stage::respond: {
        error_code ignored;
        beast::get_lowest_layer(conn_->ws()).socket().shutdown(tcp::socket::shutdown_send, ignored);
        return finish(self, ec ? ec : error_code(errc::upgrade_declined));
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
    std::chrono::steady_clock::time_point deadline;
  };

  template <class Self>
  void read_request(Self& self) {
    stage_ = stage::read;
    st_->parser.emplace();
    st_->parser->header_limit(static_cast<std::uint32_t>(config_.max_request_bytes));
    st_->parser->body_limit(config_.max_request_bytes);
    beast::http::async_read(conn_->ws().next_layer(), st_->buffer, *st_->parser, std::move(self));
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

  template <class Self>
  void act(Self& self) {
    auto& d = st_->decision;
    if (d.status == 101 && st_->info.websocket_upgrade) {
      stage_ = stage::upgrade;
      auto& ws = conn_->ws();
      // The WebSocket stream keeps its own timers from here on; the TCP deadline must be off.
      beast::get_lowest_layer(ws).expires_never();
      websocket::stream_base::timeout t{};
      t.handshake_timeout = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::max(st_->deadline - std::chrono::steady_clock::now(), std::chrono::steady_clock::duration(1)));
      t.idle_timeout = websocket::stream_base::none();
      t.keep_alive_pings = false;
      ws.set_option(t);
      ws.set_option(
          websocket::stream_base::decorator([name = config_.server_name](websocket::response_type& res) {
            res.set(beast::http::field::server, name);
          }));
      return ws.async_accept(st_->parser->release(), std::move(self));
    }
    // A plain answer (the decider's, or 426 for a non-upgrade that the decider let through), then close.
    stage_ = stage::respond;
    if (d.status == 101)
      d = accept_decision::respond(426, "Kafka over WebSocket only: send a WebSocket upgrade\n");
    auto& res = st_->response;
    res.version(st_->parser->get().version());
    res.result(static_cast<unsigned>(d.status));
    res.set(beast::http::field::server, config_.server_name);
    res.set(beast::http::field::content_type, "text/plain");
    if (d.status == 426) {
      res.set(beast::http::field::upgrade, "websocket");
      res.set(beast::http::field::connection, "Upgrade");
    }
    for (const auto& [name, value] : d.headers) res.set(name, value);
    res.body() = d.body;
    res.keep_alive(false);
    res.prepare_payload();
    beast::http::async_write(conn_->ws().next_layer(), res, std::move(self));
  }

  void idle_timeouts() {
    websocket::stream_base::timeout t{};
    t.handshake_timeout =
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(config_.handshake_timeout);
    t.idle_timeout = config_.idle_timeout.count() > 0
                         ? std::chrono::steady_clock::duration(config_.idle_timeout)
                         : websocket::stream_base::none();
    t.keep_alive_pings = config_.idle_timeout.count() > 0 && config_.keepalive_pings;
    conn_->ws().set_option(t);
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
    auto conn = std::make_shared<ws_connection<tls_next>>(std::string(), config.max_frame_bytes,
                                                          std::move(socket), *config.tls);
    asio::async_compose<decltype(h), void(error_code, connection, http_request_info)>(
        accept_op<tls_next>(config, std::move(decide), std::move(conn), std::move(peer)), h, ex);
  } else {
    auto conn =
        std::make_shared<ws_connection<plain_next>>(std::string(), config.max_frame_bytes, std::move(socket));
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
  if (url.secure) {
    auto conn = std::make_shared<ws_connection<tls_next>>(url.str(), max_frame, ex, state->ssl);
    auto h = std::move(handler).bound();
    asio::async_compose<decltype(h), void(error_code, connection)>(
        dial_op<tls_next>(state, std::move(url), std::move(conn), info), h, ex);
  } else {
    auto conn = std::make_shared<ws_connection<plain_next>>(url.str(), max_frame, ex);
    auto h = std::move(handler).bound();
    asio::async_compose<decltype(h), void(error_code, connection)>(
        dial_op<plain_next>(state, std::move(url), std::move(conn), info), h, ex);
  }
}

}  // namespace kws::detail
