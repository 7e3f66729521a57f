// --proxy-protocol on a listener: the PROXY protocol header (v2, as HAProxy's send-proxy-v2 sends it, or v1)
// read from an accepted socket before anything else, only its own bytes and within a deadline. The parser is
// the library's (kws/proxy_protocol.hpp).
#pragma once

#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <functional>
#include <string>

namespace kws::app {

struct proxy_header_read {
  /// Empty once a header was read; otherwise why the connection is refused, one sentence.
  std::string error;
  /// The connection closed before sending any byte (a load balancer's TCP check): not worth a warning.
  bool silent = false;
  /// The client: the header's source address, or the socket's own peer for LOCAL (a health check) and for
  /// headers that carry no address.
  boost::asio::ip::tcp::endpoint client{};
  bool local = false;
};

/// Reads the header from `socket`, which must stay alive and unused until `done` runs (on the socket's
/// executor). After `timeout` the read is cancelled and the error says so.
void async_read_proxy_header(boost::asio::ip::tcp::socket& socket, std::chrono::milliseconds timeout,
                             std::function<void(proxy_header_read)> done);

}  // namespace kws::app
