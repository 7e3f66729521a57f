// The PROXY protocol header that a load balancer (HAProxy's send-proxy-v2 or send-proxy, a cloud load
// balancer) puts before the first byte of a connection, so that the server learns the client's address
// (https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt). A parser of the bytes alone, no I/O: the
// caller reads exactly as many bytes as parse() asks for, so that nothing past the header is consumed.
#pragma once

#include <boost/asio/ip/tcp.hpp>

#include <cstddef>
#include <optional>
#include <span>
#include <string>

namespace kws::proxy_protocol {

/// The largest address-and-TLV block of a version 2 header accepted (the length field allows 65535); TLVs
/// that load balancers send (unique id, TLS details, a cloud endpoint id) take far less.
constexpr std::size_t max_v2_block = 4096;
/// The longest version 1 line, CRLF included (the protocol's own bound).
constexpr std::size_t max_v1_line = 107;

struct header {
  int version = 2;
  /// LOCAL (v2) or UNKNOWN (v1): the load balancer's own connection (a health check), which carries no
  /// client: the socket's own peer stands.
  bool local = false;
  /// The client (PROXY over TCP, IPv4 or IPv6); std::nullopt for LOCAL, UNKNOWN and the unspecified family.
  std::optional<boost::asio::ip::tcp::endpoint> source;
  std::optional<boost::asio::ip::tcp::endpoint> destination;
  /// Bytes the header took from the start of the connection.
  std::size_t size = 0;
};

struct result {
  enum class status { need_more, done, invalid };
  status what = status::need_more;
  /// need_more: how many bytes from the start of the connection to have before calling again; never past
  /// the header's end.
  std::size_t needed = 0;
  /// done: the header.
  header parsed{};
  /// invalid: why, in one sentence for a log line.
  std::string error{};
};

/// Reads the header from `bytes`, the first bytes of the connection (all of them so far).
result parse(std::span<const unsigned char> bytes);

}  // namespace kws::proxy_protocol
