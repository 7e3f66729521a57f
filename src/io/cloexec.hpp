// Every descriptor the library opens is closed on exec, from the system call that makes it on. The library
// runs inside applications (the librdkafka plugin does), and an application that starts a child process
// would otherwise hand it the library's sockets: a socket a child holds stays open when the library closes
// it, so the peer sees no end (no FIN, no close) until that child exits. librdkafka opens its own sockets
// the same way. Setting the flag after the socket exists would leave a window in which a fork on another
// thread copies the socket anyway.
#pragma once

#include <boost/asio/error.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace kws::detail {

/// Opens `s` (a tcp::socket or tcp::acceptor, closed) for `protocol` with a close-on-exec descriptor.
template <class Socket>
void open_cloexec(Socket& s, const boost::asio::ip::tcp& protocol, boost::system::error_code& ec) {
  const int fd = ::socket(protocol.family(), protocol.type() | SOCK_CLOEXEC, protocol.protocol());
  if (fd < 0) {
    ec.assign(errno, boost::asio::error::get_system_category());
    return;
  }
  s.assign(protocol, fd, ec);
  if (ec) ::close(fd);
}

/// One accept on the listening descriptor `listener` (non-blocking): the new descriptor, close-on-exec (and
/// otherwise as accept makes it), or -1 with `ec` set (would_block when no connection is waiting).
inline int accept_cloexec(int listener, boost::system::error_code& ec) {
  for (;;) {
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      ec.clear();
      return fd;
    }
    // A connection that was reset while it waited in the backlog is not the listener's failure: take the
    // next one (as Asio's accept does).
    if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      ec = boost::asio::error::would_block;
    } else {
      ec.assign(errno, boost::asio::error::get_system_category());
    }
    return -1;
  }
}

}  // namespace kws::detail
