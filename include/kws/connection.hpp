// kws::connection: a WebSocket connection to a Kafka broker that Kafka code can use like a TCP socket.
#pragma once

#include <kws/detail/connection_impl.hpp>

#include <boost/asio/async_result.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/system_error.hpp>

#include <memory>
#include <utility>

namespace kws {

/// WebSocket close codes the shim uses (RFC 6455, section 7.4.1).
enum class close_code : std::uint16_t {
  normal = 1000,
  going_away = 1001,
  protocol_error = 1002,
  unsupported_data = 1003,
  policy_violation = 1008,
  too_big = 1009,
  internal_error = 1011,
  try_again_later = 1013
};

/// A WebSocket connection carrying Kafka frames, one binary message per frame, size header included.
///
/// As a byte stream it models Asio's SyncReadStream, SyncWriteStream, AsyncReadStream and AsyncWriteStream:
/// - writes take any chunking; each complete frame leaves as one binary message, and the bytes of an
///   unfinished frame are held (and reported as written) until the rest arrives;
/// - reads return the bytes of received messages in order, a message larger than the buffer across reads.
/// It also offers whole-frame reads and writes (`read_frame`, `write_frame`), which the proxy uses. Do not
/// mix the two kinds of reads on one connection.
///
/// As with an Asio socket: at most one read and one write operation at a time, a close counts as a write,
/// and all calls happen on the connection's executor. The connection's own socket operations complete on
/// that executor too, so with a multi-threaded context it must be a strand: dial with a strand executor, or
/// accept a socket made on one.
class connection {
 public:
  using executor_type = boost::asio::any_io_executor;

  connection() = default;
  explicit connection(std::shared_ptr<detail::connection_impl> impl) noexcept : impl_(std::move(impl)) {}
  connection(connection&&) noexcept = default;
  connection& operator=(connection&& other) noexcept {
    if (this != &other) {
      abort();
      impl_ = std::move(other.impl_);
    }
    return *this;
  }
  /// Closes the socket; operations still pending complete with operation_aborted.
  ~connection() { abort(); }

  executor_type get_executor() const { return impl_->get_executor(); }
  bool is_open() const { return impl_ && impl_->is_open(); }
  /// The URL this connection was dialled at; for an accepted connection, the request target.
  const std::string& url() const { return impl_->url(); }
  std::size_t max_frame_bytes() const { return impl_->max_frame_bytes(); }
  /// Bytes of a partly written frame that wait for the rest of that frame.
  std::size_t pending_write_bytes() const { return impl_->pending_write_bytes(); }

  // ---- byte stream ------------------------------------------------------------------------------------

  template <class MutableBufferSequence>
  std::size_t read_some(const MutableBufferSequence& buffers, boost::system::error_code& ec) {
    ec.clear();
    if (boost::asio::buffer_size(buffers) == 0) return 0;
    if (impl_->readable().empty()) {
      impl_->fill(ec);
      if (ec) return 0;
    }
    return take_readable(*impl_, buffers);
  }

  template <class MutableBufferSequence>
  std::size_t read_some(const MutableBufferSequence& buffers) {
    boost::system::error_code ec;
    const auto n = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec, "kws::connection::read_some");
    return n;
  }

  template <class ConstBufferSequence>
  std::size_t write_some(const ConstBufferSequence& buffers, boost::system::error_code& ec) {
    ec.clear();
    std::size_t total = 0;
    for (auto it = boost::asio::buffer_sequence_begin(buffers);
         it != boost::asio::buffer_sequence_end(buffers); ++it) {
      const boost::asio::const_buffer piece(*it);
      total += impl_->write_some(piece, ec);
      if (ec) break;
    }
    return total;
  }

  template <class ConstBufferSequence>
  std::size_t write_some(const ConstBufferSequence& buffers) {
    boost::system::error_code ec;
    const auto n = write_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec, "kws::connection::write_some");
    return n;
  }

  template <class MutableBufferSequence, class CompletionToken>
  auto async_read_some(const MutableBufferSequence& buffers, CompletionToken&& token) {
    enum class state { start, filled };
    return boost::asio::async_compose<CompletionToken, void(boost::system::error_code, std::size_t)>(
        [impl = impl_, buffers, st = state::start](auto& self, boost::system::error_code ec = {}) mutable {
          if (st == state::start) {
            st = state::filled;
            if (boost::asio::buffer_size(buffers) == 0 || !impl->readable().empty()) {
              // Data is at hand: complete through the executor, never inside the initiating call.
              return boost::asio::post(impl->get_executor(), std::move(self));
            }
            return impl->async_fill(detail::erase_handler<void(boost::system::error_code)>(
                std::move(self), impl->get_executor()));
          }
          if (ec) return self.complete(ec, 0);
          self.complete(ec, take_readable(*impl, buffers));
        },
        token, impl_->get_executor());
  }

  template <class ConstBufferSequence, class CompletionToken>
  auto async_write_some(const ConstBufferSequence& buffers, CompletionToken&& token) {
    // Only the first non-empty buffer is taken; async_write loops over the rest, as with sockets.
    boost::asio::const_buffer first;
    for (auto it = boost::asio::buffer_sequence_begin(buffers);
         it != boost::asio::buffer_sequence_end(buffers); ++it) {
      first = boost::asio::const_buffer(*it);
      if (first.size() != 0) break;
    }
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, std::size_t)>(
        [](auto handler, detail::connection_impl* impl, boost::asio::const_buffer piece) {
          impl->async_write_some(piece, detail::erase_handler<void(boost::system::error_code, std::size_t)>(
                                            std::move(handler), impl->get_executor()));
        },
        token, impl_.get(), first);
  }

  // ---- whole frames -----------------------------------------------------------------------------------

  /// Reads the next message, appends it to `out` after checking it is one well-formed Kafka frame, and
  /// returns its length (size header included).
  std::size_t read_frame(boost::beast::flat_buffer& out, boost::system::error_code& ec) {
    return impl_->read_frame(out, ec);
  }

  template <class CompletionToken>
  auto async_read_frame(boost::beast::flat_buffer& out, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, std::size_t)>(
        [](auto handler, detail::connection_impl* impl, boost::beast::flat_buffer* buf) {
          impl->async_read_frame(*buf, detail::erase_handler<void(boost::system::error_code, std::size_t)>(
                                           std::move(handler), impl->get_executor()));
        },
        token, impl_.get(), &out);
  }

  /// A whole-frame read from what has already been received, with no I/O and no handler: returns the
  /// frame's length after appending it to `out`, or 0 with `ec` set when reading has ended (or the message
  /// is bad), or 0 with no error when the next message needs more bytes from the peer (then use
  /// async_read_frame). For a reader that takes several messages per wake-up. Not while a read is pending.
  std::size_t try_read_frame(boost::beast::flat_buffer& out, boost::system::error_code& ec) {
    return impl_->try_read_frame(out, ec);
  }

  /// A whole-frame write that completes at once when there is room: the frame is checked and encoded into
  /// the connection's write buffer (taken while less than 64 KiB wait there), the write to the socket starts
  /// unless corked, and true is returned. False when the buffer is full: then use async_write_frame, which
  /// waits for room. As with corked writes, the failure of a write that completed this way shows up in the
  /// next operation (a later write, or the close). Not while a write is pending.
  bool try_write_frame(boost::asio::const_buffer frame, boost::system::error_code& ec) {
    return impl_->try_write_frame(frame, ec);
  }

  /// Sends one whole frame (size header included) as one binary message; the frame is checked first.
  void write_frame(boost::asio::const_buffer frame, boost::system::error_code& ec) {
    impl_->write_frame(frame, ec);
  }

  template <class CompletionToken>
  auto async_write_frame(boost::asio::const_buffer frame, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, std::size_t)>(
        [](auto handler, detail::connection_impl* impl, boost::asio::const_buffer f) {
          impl->async_write_frame(f, detail::erase_handler<void(boost::system::error_code, std::size_t)>(
                                         std::move(handler), impl->get_executor()));
        },
        token, impl_.get(), frame);
  }

  /// While corked, written messages gather in the connection's write buffer and are reported done at once
  /// while less than 64 KiB wait there; they are sent together, in one write, when the connection is
  /// uncorked or 64 KiB have gathered. For a writer with several frames at hand. A write that fails after
  /// it was reported done shows up in the next operation. Uncork before waiting for anything.
  void cork(bool on) { impl_->cork(on); }

  /// Calls `f` (on the connection's executor, inside the read that waits) whenever a read has to wait for
  /// the peer because nothing already received completes it: for a reader that holds work back while more
  /// messages are at hand. Returns true: this connection always knows. (False would mean that it cannot
  /// tell, and that every read may wait.)
  bool on_read_wait(std::function<void()> f) { return impl_->on_read_wait(std::move(f)); }

  /// Bounds what this connection's asynchronous reads hold of the peer's messages by `budget`, shared with
  /// other readers (kws::buffer_budget; null: no bound). Each WebSocket frame of a message reserves its
  /// length there when its header arrives, before its payload is read; while the budget cannot cover it,
  /// the peer is not read (TCP holds it back). A message's bytes stay reserved until the next read starts,
  /// or the connection ends. A frame larger than the whole budget fails the read with frame_too_large.
  /// Blocking reads are not bounded.
  void set_buffer_budget(std::shared_ptr<buffer_budget> budget) {
    impl_->set_buffer_budget(std::move(budget));
  }

  // ---- closing ----------------------------------------------------------------------------------------

  /// Sends a WebSocket close and waits for the peer's. A partly written frame is dropped.
  void close(boost::system::error_code& ec, close_code code = close_code::normal) {
    impl_->close(static_cast<std::uint16_t>(code), ec);
  }
  void close(close_code code = close_code::normal) {
    boost::system::error_code ec;
    close(ec, code);
    if (ec) throw boost::system::system_error(ec, "kws::connection::close");
  }

  template <class CompletionToken>
  auto async_close(close_code code, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
        [](auto handler, detail::connection_impl* impl, std::uint16_t c) {
          impl->async_close(c, detail::erase_handler<void(boost::system::error_code)>(std::move(handler),
                                                                                      impl->get_executor()));
        },
        token, impl_.get(), static_cast<std::uint16_t>(code));
  }

  /// Closes the underlying socket at once; pending operations complete with operation_aborted.
  void abort() noexcept {
    if (impl_) impl_->abort();
  }

  /// The WebSocket close code the peer sent (1000, 1001, ...), or 0 while it has sent none.
  std::uint16_t peer_close_code() const { return impl_ ? impl_->peer_close_code() : 0; }

 private:
  friend class dialer;

  template <class MutableBufferSequence>
  static std::size_t take_readable(detail::connection_impl& impl, const MutableBufferSequence& buffers) {
    const auto avail = impl.readable();
    const auto n = boost::asio::buffer_copy(buffers, boost::asio::buffer(avail.data(), avail.size()));
    impl.consume(n);
    return n;
  }

  std::shared_ptr<detail::connection_impl> impl_;
};

}  // namespace kws
