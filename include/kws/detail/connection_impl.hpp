// The type-erased core of kws::connection. The Beast stream (plain or TLS) lives behind this interface in
// src/ws/ (stream.hpp, instantiated in stream.cpp and stream_io.cpp only), so code that includes this never
// instantiates Beast's templates.
#pragma once

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

namespace kws {
class buffer_budget;
}

namespace kws::detail {

/// A type-erased completion handler together with the executor it must complete on. Boost 1.81's
/// any_completion_executor cannot be posted to with blocking.never (fixed in 1.82), so the handler's
/// associated executor is taken as an any_io_executor before its type is erased.
template <class Signature>
struct erased_handler {
  boost::asio::any_io_executor executor;
  boost::asio::any_completion_handler<Signature> handler;

  /// The handler, bound again to its executor, ready to pass to an Asio operation.
  auto bound() && { return boost::asio::bind_executor(std::move(executor), std::move(handler)); }
};

template <class Signature, class Handler>
erased_handler<Signature> erase_handler(Handler&& h, const boost::asio::any_io_executor& fallback) {
  boost::asio::any_io_executor ex = boost::asio::get_associated_executor(h, fallback);
  return {std::move(ex), boost::asio::any_completion_handler<Signature>(std::forward<Handler>(h))};
}

/// The bytes of an Asio buffer as a span, for the pure frame functions.
inline std::span<const unsigned char> bytes_of(boost::asio::const_buffer b) noexcept {
  return {static_cast<const unsigned char*>(b.data()), b.size()};
}

using io_handler = erased_handler<void(boost::system::error_code, std::size_t)>;
using done_handler = erased_handler<void(boost::system::error_code)>;

/// Shared by the kws::connection handle and every asynchronous operation in flight, so that destroying the
/// handle with operations pending (allowed, as for Asio's own I/O objects) aborts them without freeing what
/// their continuations still use.
class connection_impl : public std::enable_shared_from_this<connection_impl> {
 public:
  virtual ~connection_impl() = default;

  /// Something the connection's I/O objects depend on and that must outlive them: the private io_context of
  /// a blocking dial. A member of this base, it is destroyed after the derived stream.
  std::shared_ptr<void> owner;

  virtual boost::asio::any_io_executor get_executor() = 0;
  virtual bool is_open() const = 0;
  virtual const std::string& url() const = 0;
  virtual std::size_t max_frame_bytes() const = 0;
  virtual std::size_t pending_write_bytes() const = 0;

  // Byte-stream reads: the unread rest of the current message, and how to get the next one.
  virtual std::span<const unsigned char> readable() const = 0;
  virtual void consume(std::size_t n) = 0;
  virtual void fill(boost::system::error_code& ec) = 0;
  virtual void async_fill(done_handler handler) = 0;

  // Byte-stream writes of one contiguous piece.
  virtual std::size_t write_some(boost::asio::const_buffer in, boost::system::error_code& ec) = 0;
  virtual void async_write_some(boost::asio::const_buffer in, io_handler handler) = 0;

  // Whole frames.
  virtual std::size_t read_frame(boost::beast::flat_buffer& out, boost::system::error_code& ec) = 0;
  virtual void async_read_frame(boost::beast::flat_buffer& out, io_handler handler) = 0;
  virtual std::size_t try_read_frame(boost::beast::flat_buffer& out, boost::system::error_code& ec) = 0;
  virtual bool try_write_frame(boost::asio::const_buffer frame, boost::system::error_code& ec) = 0;
  virtual void write_frame(boost::asio::const_buffer frame, boost::system::error_code& ec) = 0;
  virtual void async_write_frame(boost::asio::const_buffer frame, io_handler handler) = 0;

  /// Gathers small writes until uncorked (see kws::connection::cork).
  virtual void cork(bool on) = 0;
  /// Calls `f` whenever a read has to wait for the peer (nothing buffered completes it); false: not
  /// supported.
  virtual bool on_read_wait(std::function<void()> f) = 0;
  /// See kws::connection::set_buffer_budget.
  virtual void set_buffer_budget(std::shared_ptr<buffer_budget> budget) = 0;

  virtual void close(std::uint16_t code, boost::system::error_code& ec) = 0;
  virtual void async_close(std::uint16_t code, done_handler handler) = 0;
  virtual void abort() noexcept = 0;
  /// The close code the peer sent, 0 while it has sent none.
  virtual std::uint16_t peer_close_code() const = 0;
};

}  // namespace kws::detail
