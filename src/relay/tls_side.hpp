// The relay's TCP side over TLS: the Kafka byte stream inside the project's TLS stream (io/tls_stream.hpp),
// read as tcp_side reads it (socket_frames): what OpenSSL can decrypt of what has arrived, then a wait for
// readability with no buffer, so that an idle connection holds neither a read buffer nor ciphertext. Only
// tls_relay.cpp includes it, so the TLS stream's operations are compiled there alone.
//
// How TLS endings map onto the relay's: the peer's close_notify is an end of stream (eof), as a FIN is on
// plain TCP; a FIN without close_notify (ssl::error::stream_truncated: many Kafka clients close that way) is
// too, and the relay tells a close inside a frame from the bytes held (truncated), as for plain TCP; a reset
// is a reset; any other TLS error fails the side with OpenSSL's reason.
#pragma once

#include "io/tls_stream.hpp"
#include "relay/sides.hpp"

#include <kws/tls_socket.hpp>

#include <boost/asio/ssl/error.hpp>

namespace kws::detail {

class tls_side : public socket_frames<tls_side> {
 public:
  // TLS 1.3 lets each direction close on its own; OpenSSL writes after the peer's close_notify.
  static constexpr bool can_half_close = true;

  tls_side(tls_socket s, const relay_options& o, std::shared_ptr<buffer_budget> budget)
      : socket_frames(o, std::move(budget)), socket_(std::move(s)) {
    if (socket_.is_open()) wait_on(socket_.next_layer());
  }

  error_code prepare() { return socket_.is_open() ? error_code() : error_code(asio::error::not_connected); }
  bool is_open() const { return socket_.is_open(); }
  asio::any_io_executor get_executor() { return stream().get_executor(); }

  /// Every write goes through async_write_frame (OpenSSL's output is the stream's to flush), but while
  /// corked a frame may gather instead (see write_gather) and is taken.
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

  /// Closes as tcp_side does, in TLS: close_notify after everything written, then (unless the peer has
  /// ended already) read and discard until the peer's close_notify or its end, or until `linger` is up, so
  /// that unread input does not turn into a reset that loses the tail. `keep_alive` holds the owner until
  /// the socket is closed; completion does not wait for the linger.
  template <class Handler>
  void async_finish(close_code, std::chrono::milliseconds linger, std::shared_ptr<void> keep_alive,
                    bool peer_done, Handler&& h) {
    asio::post(get_executor(), [h = std::forward<Handler>(h)]() mutable { h(error_code{}); });
    if (lingering_ || !socket_.is_open()) return;
    lingering_ = true;
    if (linger.count() <= 0) return socket_.close();
    linger_timer_ = std::make_unique<asio::steady_timer>(get_executor());
    linger_timer_->expires_after(linger);
    linger_timer_->async_wait([this, keep_alive](error_code ec) {
      if (!ec) socket_.close();  // the close_notify or the discard under way completes with operation_aborted
    });
    stream().async_shutdown([this, keep_alive, peer_done](error_code ec) {
      if (ec || peer_done) return linger_done();
      linger_read(keep_alive);
    });
  }

  void abort() { socket_.close(); }

 private:
  friend socket_frames;
  tls_socket::stream_type& stream() { return socket_.stream(); }
  tcp::socket& socket() { return socket_.next_layer(); }

  // What OpenSSL can decrypt now, as much as `b` takes. An error after some bytes waits for the next call,
  // and an error is kept (OpenSSL's second answer after a failure need not be its first).
  std::size_t receive(asio::mutable_buffer b, error_code& ec) {
    ec = failed_;
    if (ec) return 0;
    std::size_t n = 0;
    while (n < b.size()) {
      n += stream().read_now(b + n, ec);
      if (ec) break;
    }
    if (!ec || ec == asio::error::would_block) return n;
    if (ec == asio::ssl::error::stream_truncated) ec = asio::error::eof;
    failed_ = ec;
    if (n != 0) ec.clear();
    return n;
  }

  void linger_read(std::shared_ptr<void> keep_alive) {
    socket().async_wait(tcp::socket::wait_read, [this, keep_alive](error_code ec) {
      if (!ec) {
        unsigned char sink[4096];
        while (!ec) stream().read_now(asio::buffer(sink), ec);
        if (ec == asio::error::would_block) return linger_read(keep_alive);
      }
      // The peer's close_notify or its end, an error, or closed by the linger timer.
      linger_done();
    });
  }

  void linger_done() {
    if (linger_timer_) linger_timer_->cancel();
    socket_.close();
  }

  tls_socket socket_;
  error_code failed_;  // the error reading ended with
  write_gather gather_;
  std::unique_ptr<asio::steady_timer> linger_timer_;  // only while lingering
  bool lingering_ = false;
};

template <>
struct side_of<tls_socket> {
  using type = tls_side;
};

}  // namespace kws::detail
