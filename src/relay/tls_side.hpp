// The relay's TCP side over TLS: the Kafka byte stream inside an ssl::stream, frames found as tcp_side finds
// them (tcp_frames). Only tls_relay.cpp includes it, so Asio's SSL operations are compiled there alone.
//
// How TLS endings map onto the relay's: the peer's close_notify is an end of stream (eof), as a FIN is on
// plain TCP; a FIN without close_notify (Asio's stream_truncated: many Kafka clients close that way) is too,
// and the relay tells a close inside a frame from the bytes held (truncated), as for plain TCP; a reset is a
// reset; any other TLS error fails the side with OpenSSL's reason.
#pragma once

#include "relay/sides.hpp"

#include <kws/tls_socket.hpp>

#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>

namespace kws::detail {

class tls_side : public tcp_frames {
 public:
  // TLS 1.3 lets each direction close on its own; OpenSSL writes after the peer's close_notify.
  static constexpr bool can_half_close = true;

  tls_side(tls_socket s, const relay_options& o, std::shared_ptr<buffer_budget> budget)
      : tcp_frames(o, std::move(budget)), socket_(std::move(s)) {}

  error_code prepare() { return socket_.is_open() ? error_code() : error_code(asio::error::not_connected); }
  bool is_open() const { return socket_.is_open(); }
  asio::any_io_executor get_executor() { return stream().get_executor(); }

  /// Completes once a whole frame is buffered (at once when one is), or with the error that ended reading:
  /// eof (close_notify, or a FIN without it), a bad size header, or the cancellation signal's
  /// operation_aborted. `continuation`: called from this side's own completion, where the handler may run at
  /// once; from an initiating call it is posted.
  template <class Handler>
  void async_read_frame(asio::cancellation_slot slot, Handler&& h, bool continuation = false) {
    error_code ec;
    if (have_frame(ec) || ec || !reserve(ec)) {
      if (ec || current_ != 0) {
        if (continuation) return h(ec);
        return asio::post(get_executor(), [h = std::forward<Handler>(h), ec]() mutable { h(ec); });
      }
      // The budget is spent: read nothing more from this peer until another frame's bytes come back.
      if (on_budget_wait_) on_budget_wait_();
      return budget_->async_wait(get_executor(), slot,
                                 [this, slot, h = std::forward<Handler>(h)](bool cancelled) mutable {
                                   if (cancelled) return h(error_code(asio::error::operation_aborted));
                                   async_read_frame(slot, std::move(h));
                                 });
    }
    // OpenSSL hands out one record (16 KiB at most) per read.
    const auto space = read_space(min_read_bytes, ec);
    if (ec) return asio::post(get_executor(), [h = std::forward<Handler>(h), ec]() mutable { h(ec); });
    stream().async_read_some(
        space, asio::bind_cancellation_slot(
                   slot, [this, slot, h = std::forward<Handler>(h)](error_code ec, std::size_t n) mutable {
                     buf_.commit(n);
                     if (ec) {
                       if (ec == asio::ssl::error::stream_truncated) ec = asio::error::eof;
                       // Nothing more comes: the empty buffer goes now rather than with the relay.
                       if (buf_.size() == 0) buf_.shrink_to_fit();
                       return h(ec);
                     }
                     async_read_frame(slot, std::move(h), true);
                   }));
  }

  /// Nothing is read without a handler over TLS (a read may have to write, under TLS 1.3's key update).
  bool try_fill() { return false; }
  /// Every write goes through async_write_frame (OpenSSL's output is Asio's to flush), but while corked a
  /// frame may gather instead (see write_gather) and is taken.
  bool try_write_frame(bytes f, error_code& ec) {
    ec.clear();
    return gather_.take(f);
  }
  /// What gathered and `f` leave as one buffer: full TLS records rather than a record per frame.
  template <class Handler>
  void async_write_frame(bytes f, Handler&& h) {
    if (gather_.size() == 0) {
      return asio::async_write(stream(), asio::buffer(f.data(), f.size()),
                               [h = std::forward<Handler>(h)](error_code ec, std::size_t) mutable { h(ec); });
    }
    gather_.append(f);
    async_flush(std::forward<Handler>(h));
  }

  /// Uncorking writes nothing by itself: what gathered (gathered_bytes()) goes through async_flush.
  void cork(bool on) { gather_.corked = on; }
  std::size_t gathered_bytes() const { return gather_.size(); }
  template <class Handler>
  void async_flush(Handler&& h) {
    gather_.flushing = true;
    asio::async_write(stream(), gather_.data(),
                      [this, h = std::forward<Handler>(h)](error_code ec, std::size_t) mutable {
                        gather_.flushing = false;
                        gather_.clear();
                        h(ec);
                      });
  }

  /// Closes as tcp_side does, in TLS: close_notify after everything written, then (OpenSSL discards the
  /// records that arrive after it) read until the peer's close_notify or its end, or until `linger` is up,
  /// so that unread input does not turn into a reset that loses the tail. `keep_alive` holds the owner until
  /// the socket is closed; completion does not wait for the linger.
  template <class Handler>
  void async_finish(close_code, std::chrono::milliseconds linger, std::shared_ptr<void> keep_alive, bool,
                    Handler&& h) {
    asio::post(get_executor(), [h = std::forward<Handler>(h)]() mutable { h(error_code{}); });
    if (lingering_ || !socket_.is_open()) return;
    lingering_ = true;
    if (linger.count() <= 0) return socket_.close();
    linger_timer_ = std::make_unique<asio::steady_timer>(get_executor());
    linger_timer_->expires_after(linger);
    linger_timer_->async_wait([this, keep_alive](error_code ec) {
      if (!ec) socket_.close();  // the shutdown under way completes with operation_aborted
    });
    stream().async_shutdown([this, keep_alive](error_code) {
      if (linger_timer_) linger_timer_->cancel();
      socket_.close();
    });
  }

  void abort() { socket_.close(); }

 private:
  tls_socket::stream_type& stream() { return socket_.stream(); }

  tls_socket socket_;
  write_gather gather_;
  std::unique_ptr<asio::steady_timer> linger_timer_;  // only while lingering
  bool lingering_ = false;
};

template <>
struct side_of<tls_socket> {
  using type = tls_side;
};

}  // namespace kws::detail
