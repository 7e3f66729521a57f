// ws_connection's socket side: reading (a wait for readability without a buffer, then reads of what is
// there, over plain TCP and over TLS alike), writing (encoding, corking, the byte stream's partial
// frames), ending (the closing handshake, teardown), the buffer budget and the idle check.
#include "ws/stream.hpp"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/write.hpp>

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cstring>
#include <new>

namespace kws::detail {

namespace {

// A large unmasked payload goes out without being copied first: from this size on (a 1 KiB frame is cheaper
// to copy, and gathers with its neighbours while the relay corks).
constexpr std::size_t gather_write_bytes = 32 * 1024;

// What is already encoded (the frame's header last), then the frame's payload, in one system call that does
// not wait: what the socket took (nothing when it is full or failed; the asynchronous write that follows
// meets the failure again).
std::size_t send_gathered(int fd, asio::const_buffer held, std::span<const unsigned char> payload) {
  iovec iov[2] = {{const_cast<void*>(held.data()), held.size()},
                  {const_cast<unsigned char*>(payload.data()), payload.size()}};
  msghdr m{};
  m.msg_iov = iov;
  m.msg_iovlen = 2;
  const auto n = ::sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
  return n > 0 ? static_cast<std::size_t>(n) : 0;
}

}  // namespace

template <class Stream>
auto ws_connection<Stream>::read_buffer(beast::flat_buffer* out) -> read_target {
  if (out && in_frame() && in_.size() == 0 && frame_left_ >= direct_read_bytes) {
    const auto n = std::min(frame_left_, max_direct_read_bytes);
    // Without room for more, take what in_ holds; advance() then meets the failure again and ends.
    if (make_room(*out, n)) return {out->prepare(n), true};
  }
  return {in_.prepare(read_buffer_bytes), false};
}

template <class Stream>
void ws_connection<Stream>::took(const read_target& t, std::size_t n) {
  if (n == 0) return;
  drained_ = false;
  active_ = true;
  if (!t.direct) {
    in_.commit(n);
    return;
  }
  auto* p = static_cast<unsigned char*>(t.buffer.data());
  if (frame_masked_) ws::apply_mask(p, p, n, frame_key_, frame_pos_);
  rd_out()->commit(n);
  payload_taken(n);
}

template <class Stream>
std::size_t ws_connection<Stream>::sync_read_some(asio::mutable_buffer b, error_code& ec) {
  if constexpr (tls) {
    return stream_->read_some(b, ec);
  } else {
    return sock().read_some(b, ec);
  }
}

template <class Stream>
error_code ws_connection<Stream>::read_failed(error_code ec) {
  ec = after_abort(ec);
  if (ec != asio::error::operation_aborted && ec != beast::error::timeout) {
    const bool partial = in_message() || in_.size() != 0;
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

template <class Stream>
void ws_connection<Stream>::pump(bool initiating) {
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
      if (cl_) read_on_for_close();
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
    // Bytes may be there that no wake-up would announce (the last read filled its buffer): read them now,
    // without a round through the event loop.
    if (!drained_ && read_now()) continue;
    return start_read();
  }
}

template <class Stream>
bool ws_connection<Stream>::read_now() {
  const auto t = read_buffer(rd_ ? rd_->out : nullptr);
  error_code ec;
  std::size_t n = 0;
  if constexpr (tls) {
    n = stream_->read_now(t.buffer, ec);
  } else {
    n = recv_now(sock(), t.buffer.data(), t.buffer.size(), ec);
  }
  if (ec == asio::error::would_block) {
    drained_ = true;
    return false;
  }
  took(t, n);
  if (ec) read_failed(ec);
  return true;
}

template <class Stream>
void ws_connection<Stream>::start_read() {
  reading_ = true;
  if (on_read_wait_) on_read_wait_();
  if (in_.size() == 0) in_ = input_buffer();
  if (wait_op_) {
    wait_keep_ = shared_from_this();
    return wait_op_->start(sock(), waiter_);
  }
  async_wait_readable(sock(), waiter_, [this, g = op_guard(shared_from_this())](error_code ec) mutable {
    g.ran();
    readable(ec);
  });
}

template <class Stream>
void ws_connection<Stream>::readable(error_code ec) {
  reading_ = false;
  if (ec) {
    read_failed(ec);
  } else {
    drained_ = false;
  }
  pump(false);
}

template <class Stream>
void ws_connection<Stream>::readable_cb(void* self, const error_code& ec, bool destroyed) {
  auto* c = static_cast<ws_connection*>(self);
  const auto keep = std::move(c->wait_keep_);  // lets go of the connection after this, not before
  if (destroyed) return c->drop_waiting();     // as op_guard does for a handler's operation
  c->readable(ec);
}

template <class Stream>
void ws_connection<Stream>::encode(std::uint8_t op, std::span<const unsigned char> payload) {
  unsigned char header[ws::max_header_bytes];
  ws::mask_key key;
  if (client_) key = ws::next_mask_key();
  const auto hn = ws::write_header(header, op, true, payload.size(), client_ ? &key : nullptr);
  if constexpr (!tls) {
    // Unmasked (the server's side) and large: sent at once from where it is, after what is already
    // encoded, in one system call; only what the socket does not take is copied into out_. Not while a
    // write is in flight (it would overtake it), nor in a blocking call (sync_flush writes out_ itself).
    if (!client_ && payload.size() >= gather_write_bytes && !sync_ && !writing_ && !aborted_) {
      out_.commit(asio::buffer_copy(out_.prepare(hn), asio::buffer(header, hn)));
      enqueued_ += hn + payload.size();
      auto n = send_gathered(sock().native_handle(), out_.data(), payload);
      sent_ += n;
      const auto from_out = std::min(n, out_.size());
      out_.consume(from_out);
      n -= from_out;  // of the payload
      if (n < payload.size()) {
        out_.commit(asio::buffer_copy(out_.prepare(payload.size() - n),
                                      asio::buffer(payload.data() + n, payload.size() - n)));
      }
      if (out_.size() == 0) trim(out_, 0);
      return;
    }
  }
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

template <class Stream>
void ws_connection<Stream>::send_close(std::uint16_t code) {
  enter(life::close_sent);
  unsigned char p[2] = {static_cast<unsigned char>(code >> 8), static_cast<unsigned char>(code)};
  encode(ws::op_close, std::span<const unsigned char>(p, 2));
}

template <class Stream>
std::size_t ws_connection<Stream>::encode_stream(asio::const_buffer in, error_code& ec) {
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

template <class Stream>
void ws_connection<Stream>::finish_write_call(io_handler handler, error_code ec, std::size_t n) {
  if (ec) return post(std::move(handler), ec, n);
  if (out_.size() == 0 || (corked_ && out_.size() < cork_limit_bytes)) return post(std::move(handler), ec, n);
  wr_.emplace(write_op{std::move(handler), n, enqueued_});
  start_flush();
}

template <class Stream>
void ws_connection<Stream>::start_flush() {
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
      trim(out_, 0);
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

template <class Stream>
void ws_connection<Stream>::flushed(error_code ec, std::size_t n) {
  writing_ = false;
  sent_ += n;
  sending_.clear();
  trim(sending_, 0);
  // After abort() nothing more is written, even when this write completed before the socket was closed.
  if ((ec || aborted_) && !write_error_) write_error_ = after_abort(ec ? ec : asio::error::operation_aborted);
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
  if (out_.size() != 0 && (!corked_ || wr_ || out_.size() >= cork_limit_bytes || close_sent())) start_flush();
  if (teardown_after_flush_ && !cl_ && !writing_ && out_.size() == 0) teardown();
  maybe_finish_close();
}

template <class Stream>
void ws_connection<Stream>::sync_flush(error_code& ec) {
  if (out_.size() == 0) return;
  asio::write(stream_for_io(), out_.data(), ec);
  sent_ += out_.size();
  out_.clear();
  trim(out_, 0);
  if (ec) write_error_ = ec;
}

template <class Stream>
void ws_connection<Stream>::maybe_finish_close(bool initiating) {
  if (!cl_) return;
  const bool sent = write_error_ || (!writing_ && out_.size() == 0);
  if (!sent || !stream_broken_) return;
  auto h = std::move(*cl_);
  cl_.reset();
  cancel_timers();
  error_code ec;
  if (ended_by_ == timeout::close || aborted_) {
    ec = after_abort(asio::error::operation_aborted);
  } else if (write_error_) {
    ec = write_error_;  // our close frame did not go out
  } else if (life_ != life::closes_exchanged && read_error_ != asio::error::eof) {
    ec = read_error_;
  }
  teardown();
  initiating ? post(std::move(h), ec) : complete(std::move(h), ec);
}

template <class Stream>
void ws_connection<Stream>::teardown() {
  enter(life::torn_down);
  cancel_timers();
  error_code ignored;
  // The socket itself closes with the connection (or abort()); until then the peer can still read what
  // was sent.
  sock().shutdown(tcp::socket::shutdown_send, ignored);
}

template <class Stream>
void ws_connection<Stream>::kill_socket() noexcept {
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

template <class Stream>
void ws_connection<Stream>::settle_aborted() noexcept {
  // Bytes queued with no write in flight (corked, say) will never go: the close need not wait for them. A
  // waiting write (wr_) always has its write in flight, whose completion ends it (see flushed).
  if (!writing_) {
    out_.clear();
    if (!write_error_) write_error_ = asio::error::operation_aborted;
  }
  if (reading_ || budget_waiting_ || (!rd_ && !cl_)) return;  // an operation in flight completes them
  if (!stream_broken_) read_failed(asio::error::operation_aborted);
  pump(true);
}

template <class Stream>
void ws_connection<Stream>::read_on_for_close() {
  // Queued behind the reader's completion: a reader that reads again from its handler is served first, and
  // without one, what comes before the peer's close is dropped on the way to it.
  asio::post(sock().get_executor(), [this, keep = shared_from_this()] {
    if (cl_ && !rd_ && !reading_) pump(false);
  });
}

template <class Stream>
void ws_connection<Stream>::wait_for_budget() {
  if (budget_waiting_) return;
  budget_waiting_ = true;
  budget_->async_wait(
      sock().get_executor(), asio::cancellation_slot(),
      [w = weak_from_this()](bool) {
        const auto keep = w.lock();
        if (!keep) return;
        auto* c = static_cast<ws_connection*>(keep.get());
        if (!std::exchange(c->budget_waiting_, false)) return;
        c->pump(false);
      },
      budget_seen_);
}

template <class Stream>
bool ws_connection<Stream>::make_room(beast::flat_buffer& out, std::size_t n) {
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

template <class Stream>
void ws_connection<Stream>::idle_check() {
  // A closing handshake (cl_) is bounded by its own deadline.
  if (aborted_ || life_ == life::torn_down || cl_) return;
  // A peer held back by the buffer budget is not idle: it is not being read.
  if (std::exchange(active_, false) || budget_waiting_) {
    idle_pinged_ = false;
    return arm_idle_timer();
  }
  if (keepalive_pings_ && !idle_pinged_ && !close_sent()) {
    idle_pinged_ = true;
    encode(ws::op_ping, {});
    start_flush();
    return arm_idle_timer();
  }
  ended_by(timeout::idle);
  kill_socket();
}

template <class Stream>
auto ws_connection<Stream>::next_write(asio::const_buffer rest) -> write_step {
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

template <class Stream>
auto ws_connection<Stream>::fail_write(write_step& st) -> write_step& {
  // The stream has lost its frame boundaries; every later write fails the same way.
  write_error_ = st.ec;
  wbuf().clear();
  return st;
}

template <class Stream>
void ws_connection<Stream>::append(std::span<const unsigned char> bytes) {
  auto dst = wbuf().prepare(bytes.size());
  std::memcpy(dst.data(), bytes.data(), bytes.size());
  wbuf().commit(bytes.size());
}

// The members defined here, for both streams (stream.cpp instantiates the class with the others).
#define KWS_STREAM_IO_MEMBERS(S)                                                             \
  template ws_connection<S>::read_target ws_connection<S>::read_buffer(beast::flat_buffer*); \
  template void ws_connection<S>::took(const read_target&, std::size_t);                     \
  template std::size_t ws_connection<S>::sync_read_some(asio::mutable_buffer, error_code&);  \
  template error_code ws_connection<S>::read_failed(error_code);                             \
  template void ws_connection<S>::pump(bool);                                                \
  template bool ws_connection<S>::read_now();                                                \
  template void ws_connection<S>::start_read();                                              \
  template void ws_connection<S>::readable(error_code);                                      \
  template void ws_connection<S>::readable_cb(void*, const error_code&, bool);               \
  template void ws_connection<S>::encode(std::uint8_t, std::span<const unsigned char>);      \
  template void ws_connection<S>::send_close(std::uint16_t);                                 \
  template std::size_t ws_connection<S>::encode_stream(asio::const_buffer, error_code&);     \
  template void ws_connection<S>::finish_write_call(io_handler, error_code, std::size_t);    \
  template void ws_connection<S>::start_flush();                                             \
  template void ws_connection<S>::flushed(error_code, std::size_t);                          \
  template void ws_connection<S>::sync_flush(error_code&);                                   \
  template void ws_connection<S>::maybe_finish_close(bool);                                  \
  template void ws_connection<S>::teardown();                                                \
  template void ws_connection<S>::kill_socket() noexcept;                                    \
  template void ws_connection<S>::settle_aborted() noexcept;                                 \
  template void ws_connection<S>::read_on_for_close();                                       \
  template void ws_connection<S>::wait_for_budget();                                         \
  template bool ws_connection<S>::make_room(beast::flat_buffer&, std::size_t);               \
  template void ws_connection<S>::idle_check();                                              \
  template ws_connection<S>::write_step ws_connection<S>::next_write(asio::const_buffer);    \
  template ws_connection<S>::write_step& ws_connection<S>::fail_write(write_step&);          \
  template void ws_connection<S>::append(std::span<const unsigned char>);

KWS_STREAM_IO_MEMBERS(plain_next)
KWS_STREAM_IO_MEMBERS(tls_next)
#undef KWS_STREAM_IO_MEMBERS

}  // namespace kws::detail
