// A wait for a TCP socket to become readable that holds no buffer and costs no system call of its own, for
// readers that drain the socket themselves (src/ws/stream_io.cpp, src/relay/sides.hpp).
//
// Asio offers two ways to wait for a socket: a read (async_read_some), which holds its buffer for as long as
// it waits, so that every idle connection keeps one; and a readiness wait (socket::async_wait), which holds
// none but re-arms the descriptor with an epoll_ctl call on every wait. Asio registers every socket
// edge-triggered, so a reader that has just seen a read fail with EAGAIN can simply queue a wait and be woken
// by the next arrival. That is what async_wait_readable does, through Asio's reactor itself:
//
// - The operation is queued on the socket's descriptor like any read. When readiness arrived while no read
//   was queued (the reactor remembers that), it completes at once instead, and the caller's read finds the
//   bytes (or EAGAIN: a spurious wake-up, after which the next wait queues).
// - Precondition: since its last wait, the caller's last read of the socket failed with EAGAIN. A short read
//   is not enough: a FIN (or an error) that came with the data it returned raised no wake-up of its own.
// - Closing or cancelling the socket, or the handler's cancellation slot, completes it with
//   operation_aborted, as any Asio operation.
//
// It uses Asio's reactor interface (boost/asio/detail), which Boost does not promise to keep; it is built
// only where that reactor is epoll (Linux) and Boost is 1.81, and falls back to socket::async_wait elsewhere.
#pragma once

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/query.hpp>

#include <boost/version.hpp>

// Asio's reactor interface as Boost 1.81 has it (Debian 12's), the one this file was written and tested
// against; with another Boost the portable fallback below is built until this has been checked there.
#if defined(BOOST_ASIO_HAS_EPOLL) && !defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT) && \
    BOOST_VERSION / 100 == 1081
#include <boost/asio/detail/fenced_block.hpp>
#include <boost/asio/detail/handler_alloc_helpers.hpp>
#include <boost/asio/detail/handler_work.hpp>
#include <boost/asio/detail/reactor.hpp>
#include <boost/asio/detail/reactor_op.hpp>
#define KWS_HAS_READ_WAIT 1
#endif

#include <sys/socket.h>

#include <cerrno>
#include <memory>
#include <utility>

namespace kws::detail {

/// recv() that never blocks, whatever the socket's mode: bytes read; 0 with `ec` set to would_block when
/// there were none, to eof when the peer closed its side, or to the error.
inline std::size_t recv_now(boost::asio::ip::tcp::socket& s, void* data, std::size_t size,
                            boost::system::error_code& ec) {
  for (;;) {
    const auto n = ::recv(s.native_handle(), data, size, MSG_DONTWAIT);
    if (n > 0) {
      ec.clear();
      return static_cast<std::size_t>(n);
    }
    if (n == 0) {
      ec = size == 0 ? boost::system::error_code() : boost::asio::error::eof;
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      ec = boost::asio::error::would_block;
    } else {
      ec = boost::system::error_code(errno, boost::asio::error::get_system_category());
    }
    return 0;
  }
}

#ifdef KWS_HAS_READ_WAIT

namespace read_wait_impl {

namespace ad = boost::asio::detail;
using socket_type = boost::asio::ip::tcp::socket;

// The socket's descriptor state inside Asio's reactor: reached through the protected member that every Asio
// I/O object keeps its implementation in (a pointer to member formed in a derived class is usable on the
// base).
struct socket_access : socket_type {
  static auto member() { return &socket_access::impl_; }
};

template <class Handler, class IoExecutor>
class op : public ad::reactor_op {
 public:
  BOOST_ASIO_DEFINE_HANDLER_PTR(op);

  op(Handler& h, const IoExecutor& ex)
      : reactor_op(boost::system::error_code(), &op::perform_fn, &op::complete_fn),
        handler_(std::move(h)),
        work_(handler_, ex) {}

  // Reading is the caller's: whenever the reactor runs this (at once, when readiness came while nothing
  // waited, or on the next arrival), the wait is over. "Exhausted" tells the reactor to queue the next wait
  // instead of running it at once, until readiness comes again.
  static status perform_fn(reactor_op*) { return done_and_exhausted; }

  static void complete_fn(void* owner, ad::operation* base, const boost::system::error_code&, std::size_t) {
    auto* o = static_cast<op*>(base);
    ptr p = {std::addressof(o->handler_), o, o};
    ad::handler_work<Handler, IoExecutor> w(std::move(o->work_));
    // The handler leaves the operation's memory before the upcall, which may start the next wait in it.
    ad::binder1<Handler, boost::system::error_code> bound(0, std::move(o->handler_), o->ec_);
    p.h = std::addressof(bound.handler_);
    p.reset();
    if (owner) {
      ad::fenced_block b(ad::fenced_block::half);
      w.complete(bound, bound.handler_);
    }
  }

 private:
  Handler handler_;
  ad::handler_work<Handler, IoExecutor> work_;
};

// Per-operation cancellation (a cancellation slot bound to the handler): the queued wait completes with
// operation_aborted.
struct cancel {
  cancel(ad::reactor* r, ad::reactor::per_descriptor_data* d, int f) noexcept : reactor(r), data(d), fd(f) {}
  ad::reactor* reactor;
  ad::reactor::per_descriptor_data* data;
  int fd;
  void operator()(boost::asio::cancellation_type_t type) {
    using boost::asio::cancellation_type;
    if (!!(type & (cancellation_type::terminal | cancellation_type::partial | cancellation_type::total)))
      reactor->cancel_ops_by_key(fd, *data, ad::reactor::read_op, this);
  }
};

}  // namespace read_wait_impl

using read_waiter = boost::asio::detail::reactor*;

/// Asio's reactor for the socket's execution context: looked up once per reader (it takes a lock).
inline read_waiter reactor_of(boost::asio::ip::tcp::socket& s) {
  return &boost::asio::use_service<boost::asio::detail::reactor>(
      boost::asio::query(s.get_executor(), boost::asio::execution::context));
}

namespace read_wait_impl {
// Queues `op` (its error clear) as the socket's read wait, with speculation allowed; on a closed socket it
// completes at once with bad_descriptor.
inline void start(socket_type& s, read_waiter w, ad::reactor_op* op, boost::asio::cancellation_slot slot) {
  auto& impl = (s.*socket_access::member()).get_implementation();
  op->cancellation_key_ = nullptr;
  if (!s.is_open()) {
    op->ec_ = boost::asio::error::bad_descriptor;
    return w->post_immediate_completion(op, false);
  }
  if (slot.is_connected())
    op->cancellation_key_ = &slot.template emplace<cancel>(w, &impl.reactor_data_, impl.socket_);
  w->start_op(ad::reactor::read_op, impl.socket_, impl.reactor_data_, op, false, true);
}
}  // namespace read_wait_impl

/// See the top of this file. `w` is reactor_of(s).
template <class Handler>
void async_wait_readable(boost::asio::ip::tcp::socket& s, read_waiter w, Handler&& handler) {
  using h_type = std::decay_t<Handler>;
  using op_type = read_wait_impl::op<h_type, boost::asio::ip::tcp::socket::executor_type>;
  h_type h(std::forward<Handler>(handler));
  const auto slot = boost::asio::get_associated_cancellation_slot(h);
  typename op_type::ptr p = {std::addressof(h), op_type::ptr::allocate(h), nullptr};
  p.p = new (p.v) op_type(h, s.get_executor());
  read_wait_impl::start(s, w, p.p, slot);
  p.v = p.p = nullptr;
}

/// True when `ex` is an io_context's own executor (no strand): a read_wait_op may then call its owner
/// directly from the reactor's completion, on a thread that runs that io_context, as Asio would call a
/// handler.
inline bool on_io_context(const boost::asio::any_io_executor& ex) {
  using ctx = boost::asio::io_context;
  return ex.target<ctx::basic_executor_type<std::allocator<void>, 0>>() != nullptr ||
         ex.target<ctx::basic_executor_type<std::allocator<void>, 4>>() != nullptr;
}

/// async_wait_readable with the operation inside its owner, for owners on an io_context's own executor
/// (on_io_context): nothing is allocated and no handler is kept, so an idle reader's wait costs this object's
/// size (88 bytes) where a handler's operation costs 200 to 250. The owner keeps itself alive while
/// the wait is queued, and, on completion, gets `callback(owner, ec, destroyed)`: `destroyed` when the
/// execution context is being destroyed with the wait still queued (the owner then only lets go of what it
/// holds for the wait). One wait at a time; the same preconditions as async_wait_readable.
class read_wait_op : boost::asio::detail::reactor_op {
 public:
  using callback = void (*)(void* owner, const boost::system::error_code& ec, bool destroyed);

  read_wait_op(void* owner, callback cb) noexcept
      : reactor_op(boost::system::error_code(), &read_wait_op::perform_fn, &read_wait_op::complete_fn),
        owner_(owner),
        cb_(cb) {}
  read_wait_op(const read_wait_op&) = delete;
  read_wait_op& operator=(const read_wait_op&) = delete;

  void start(read_wait_impl::socket_type& s, read_waiter w, boost::asio::cancellation_slot slot = {}) {
    ec_ = boost::system::error_code();
    read_wait_impl::start(s, w, this, slot);
  }

 private:
  static status perform_fn(reactor_op*) { return done_and_exhausted; }
  static void complete_fn(void* sched, boost::asio::detail::operation* base, const boost::system::error_code&,
                          std::size_t) {
    auto* o = static_cast<read_wait_op*>(base);
    const auto ec = o->ec_;
    // The owner may start the next wait, or be destroyed (and this with it): nothing here touches `o` after.
    if (!sched) return o->cb_(o->owner_, ec, true);
    boost::asio::detail::fenced_block b(boost::asio::detail::fenced_block::half);
    o->cb_(o->owner_, ec, false);
  }

  void* owner_;
  callback cb_;
};

#else

using read_waiter = void*;
inline read_waiter reactor_of(boost::asio::ip::tcp::socket&) {
  return nullptr;
}

template <class Handler>
void async_wait_readable(boost::asio::ip::tcp::socket& s, read_waiter, Handler&& handler) {
  s.async_wait(boost::asio::ip::tcp::socket::wait_read, std::forward<Handler>(handler));
}

inline bool on_io_context(const boost::asio::any_io_executor&) {
  return false;
}

// Never made where on_io_context is false; declared so that its users compile.
class read_wait_op {
 public:
  using callback = void (*)(void* owner, const boost::system::error_code& ec, bool destroyed);
  read_wait_op(void*, callback) noexcept {}
  void start(boost::asio::ip::tcp::socket&, read_waiter, boost::asio::cancellation_slot = {}) {}
};

#endif

}  // namespace kws::detail
