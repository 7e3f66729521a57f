// ws_connection's API (kws::connection's reads, writes and closes) and its parsing of what arrives: control
// frames answered or taken, data frames unmasked into the reader's buffer. The socket side is stream_io.cpp.
#include "ws/stream.hpp"

#include <boost/asio/buffer.hpp>

#include <algorithm>
#include <cstring>

namespace kws::detail {

template <class Stream>
void ws_connection<Stream>::handshake_done(std::chrono::milliseconds idle_timeout, bool keepalive_pings,
                                           std::chrono::milliseconds close_timeout) {
  tcp().expires_never();
  if constexpr (!tls) {
    // From here on only the socket is used: Beast's stream (and the timers it keeps for the handshake's
    // deadline) goes.
    sock_.emplace(stream_->release_socket());
    stream_.reset();
  }
  waiter_ = reactor_of(sock());
  if (on_io_context(sock().get_executor())) wait_op_.emplace(this, &ws_connection::readable_cb);
  enter(life::open);
  close_timeout_ = close_timeout;
  if (idle_timeout.count() > 0) {
    idle_timeout_ = idle_timeout;
    keepalive_pings_ = keepalive_pings;
    arm_idle_timer();
  }
}

template <class Stream>
void ws_connection<Stream>::fill(error_code& ec) {
  rbuf().clear();
  read_frame(rbuf(), ec);
  if (ec) rbuf().clear();
}

template <class Stream>
void ws_connection<Stream>::async_fill(done_handler handler) {
  rbuf().clear();
  io_handler h{handler.executor, asio::any_completion_handler<void(error_code, std::size_t)>(
                                     [this, keep = shared_from_this(), h = std::move(handler.handler)](
                                         error_code ec, std::size_t) mutable {
                                       if (ec) rbuf().clear();
                                       std::move(h)(ec);
                                     })};
  async_read_frame(rbuf(), std::move(h));
}

template <class Stream>
std::size_t ws_connection<Stream>::read_frame(beast::flat_buffer& out, error_code& ec) {
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

template <class Stream>
std::size_t ws_connection<Stream>::try_read_frame(beast::flat_buffer& out, error_code& ec) {
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

template <class Stream>
bool ws_connection<Stream>::try_write_frame(asio::const_buffer frame, error_code& ec) {
  if (!(ec = write_gate())) ec = check_message(bytes_of(frame), max_frame_bytes_);
  if (ec) return true;
  if (out_.size() >= cork_limit_bytes) return false;
  encode(ws::op_binary, bytes_of(frame));
  if (!corked_) start_flush();
  return true;
}

template <class Stream>
void ws_connection<Stream>::async_read_frame(beast::flat_buffer& out, io_handler handler) {
  release_held();
  if (auto ec = read_gate()) return post(std::move(handler), ec, 0);
  rd_.emplace(read_op{std::move(handler), &out, out.size()});
  pump(true);
}

template <class Stream>
std::size_t ws_connection<Stream>::write_some(asio::const_buffer in, error_code& ec) {
  const sync_scope scope(*this);
  const auto consumed = encode_stream(in, ec);
  if (!ec) sync_flush(ec);
  return consumed;
}

template <class Stream>
void ws_connection<Stream>::async_write_some(asio::const_buffer in, io_handler handler) {
  error_code ec;
  const auto consumed = encode_stream(in, ec);
  finish_write_call(std::move(handler), ec, consumed);
}

template <class Stream>
void ws_connection<Stream>::write_frame(asio::const_buffer frame, error_code& ec) {
  const sync_scope scope(*this);
  if ((ec = write_gate())) return;
  if ((ec = check_message(bytes_of(frame), max_frame_bytes_))) return;
  encode(ws::op_binary, bytes_of(frame));
  sync_flush(ec);
}

template <class Stream>
void ws_connection<Stream>::async_write_frame(asio::const_buffer frame, io_handler handler) {
  error_code ec = write_gate();
  if (!ec) ec = check_message(bytes_of(frame), max_frame_bytes_);
  if (!ec) encode(ws::op_binary, bytes_of(frame));
  finish_write_call(std::move(handler), ec, ec ? 0 : frame.size());
}

template <class Stream>
void ws_connection<Stream>::close(std::uint16_t code, error_code& ec) {
  ec.clear();
  if (aborted_) {
    ec = asio::error::operation_aborted;
    return;
  }
  const sync_scope scope(*this);
  if (bs_) bs_->write.clear();
  cancel_timers();
  if (!close_sent()) send_close(code);
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
  if (!ec && read_error_ && read_error_ != asio::error::eof && life_ != life::closes_exchanged)
    ec = read_error_;
  teardown();
}

template <class Stream>
void ws_connection<Stream>::async_close(std::uint16_t code, done_handler handler) {
  if (aborted_) return post(std::move(handler), error_code(asio::error::operation_aborted));
  if (cl_) return post(std::move(handler), error_code(asio::error::in_progress));
  if (bs_) bs_->write.clear();
  cl_.emplace(std::move(handler));
  corked_ = false;
  if (!close_sent()) send_close(code);
  start_flush();
  // The closing handshake is bounded by a timeout of its own, not by the idle timeout.
  idle_tick_.cancel();
  if (!close_timer_) close_timer_ = std::make_unique<asio::steady_timer>(sock().get_executor());
  close_timer_->expires_after(close_timeout_);
  close_timer_->async_wait([w = weak_from_this(), this](error_code ec) {
    const auto keep = w.lock();
    if (ec || !keep || !cl_) return;
    ended_by(timeout::close);
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

template <class Stream>
void ws_connection<Stream>::drop_waiting() noexcept {
  rd_.reset();
  wr_.reset();
  cl_.reset();
}

template <class Stream>
error_code ws_connection<Stream>::after_abort(error_code ec) const {
  if (ended_by_ != timeout::none) return beast::error::timeout;
  if (aborted_) return asio::error::operation_aborted;
  return ec;
}

template <class Stream>
error_code ws_connection<Stream>::write_gate() const {
  if (aborted_ || ended_by_ == timeout::idle) return after_abort(asio::error::operation_aborted);
  if (write_error_) return write_error_;
  if (close_sent()) return websocket::error::closed;
  return {};
}

template <class Stream>
auto ws_connection<Stream>::advance(beast::flat_buffer* out, error_code& ec) -> step {
  for (;;) {
    if (!in_frame()) {
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
      if (h.op == ws::op_continuation && !in_message()) {
        ec = websocket::error::bad_continuation;
        return protocol_failure(ec);
      }
      if ((h.op == ws::op_binary || h.op == ws::op_text) && in_message()) {
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
        if (!budget_->try_acquire(len, budget_seen_)) return step::blocked;
        charged_ += len;
      }
      in_.consume(header);
      enter(parse_at::frame_payload);
      frame_fin_ = h.fin;
      frame_masked_ = h.masked;
      frame_key_ = h.key;
      frame_left_ = static_cast<std::size_t>(h.length);
      frame_pos_ = 0;
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
    if (!frame_fin_) {
      enter(parse_at::next_fragment);
      continue;
    }
    enter(parse_at::message_start);
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

template <class Stream>
bool ws_connection<Stream>::whole_message_buffered() const {
  if (in_message()) return false;
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

template <class Stream>
void ws_connection<Stream>::payload_taken(std::size_t n) {
  frame_left_ -= n;
  frame_pos_ += n;
  msg_bytes_ += n;
}

template <class Stream>
std::size_t ws_connection<Stream>::finish_message(beast::flat_buffer& out, std::size_t before,
                                                  error_code& ec) {
  if (ec) return 0;
  const auto msg = bytes_of(out.data()).subspan(before);
  ec = check_message(msg, max_frame_bytes_);
  return ec ? 0 : msg.size();
}

template <class Stream>
void ws_connection<Stream>::drop_partial(beast::flat_buffer& out, std::size_t keep) {
  if (out.size() <= keep) return;
  if (keep == 0) {
    out.clear();
    out.shrink_to_fit();
    return;
  }
  // The bytes before the message are the reader's: keep them, in a buffer of their size.
  beast::flat_buffer kept;
  try {
    kept.reserve(keep);
  } catch (const std::bad_alloc&) {
    // No memory for the copy: keep the buffer as it is (the reader is told reading has ended).
    return;
  }
  kept.commit(asio::buffer_copy(kept.prepare(keep), out.data(), keep));
  out = std::move(kept);
}

template <class Stream>
auto ws_connection<Stream>::fail_connection(const error_code& ec, std::uint16_t code) -> step {
  read_error_ = ec;
  stream_broken_ = true;
  release_partial();
  if (!close_sent()) send_close(code);
  teardown_when_flushed();
  return step::ended;
}

template <class Stream>
void ws_connection<Stream>::teardown_when_flushed() {
  teardown_after_flush_ = true;
  corked_ = false;
  start_flush();
  if (!writing_ && out_.size() == 0 && !cl_) teardown();
}

template <class Stream>
void ws_connection<Stream>::pong(std::span<const unsigned char> payload) {
  // A peer that pings without reading gets no more than a buffer's worth of pongs: past that, the pong of
  // a later ping answers for this one (RFC 6455 5.5.3 allows answering the latest only).
  if (close_sent() || out_.size() > cork_limit_bytes) return;
  encode(ws::op_pong, payload);
  if (!corked_) start_flush();
}

template <class Stream>
auto ws_connection<Stream>::peer_close(std::span<const unsigned char> payload, error_code& ec) -> step {
  std::uint16_t code = 0;
  if ((ec = ws::check_close_payload(payload, code))) return protocol_failure(ec);
  stream_broken_ = true;  // nothing may follow a close
  release_partial();
  peer_close_code_ = code;
  ec = asio::error::eof;
  read_error_ = ec;
  if (!close_sent()) {
    // Echo the code; with none received, send none.
    unsigned char echo[2] = {static_cast<unsigned char>(code >> 8), static_cast<unsigned char>(code)};
    encode(ws::op_close, std::span<const unsigned char>(echo, code ? 2 : 0));
  }
  enter(life::closes_exchanged);
  teardown_when_flushed();
  return step::ended;
}

// Every member defined above, and the class's inline ones, for both streams; stream_io.cpp instantiates the
// rest.
template class ws_connection<plain_next>;
template class ws_connection<tls_next>;

}  // namespace kws::detail
