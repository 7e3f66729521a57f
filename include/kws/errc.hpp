// Error codes of the shim's own domain, comparable like Go's typed errors.
#pragma once

#include <boost/system/error_code.hpp>

#include <type_traits>

namespace kws {

enum class errc {
  /// The peer sent a WebSocket text message; Kafka frames travel only as binary messages.
  invalid_message_type = 1,
  /// A Kafka size header below zero.
  negative_frame_size,
  /// A Kafka size header above the configured maximum (default 100 MiB).
  frame_too_large,
  /// A WebSocket message whose length does not equal its Kafka size header plus four.
  frame_size_mismatch,
  /// The stream ended inside a Kafka frame or inside a WebSocket message.
  truncated_frame,
  /// An address that is neither `host:port` nor a `ws://` / `wss://` URL.
  invalid_address,
  /// A response that a frame hook had to change (say, to rewrite broker addresses) but could not.
  unusable_response,
  /// A WebSocket server answered an HTTP request plainly instead of upgrading it.
  upgrade_declined,
  /// A forward proxy URL that does not parse, or asks for what the dialer cannot do (https://, socks5://).
  invalid_proxy_url,
  /// The forward proxy could not be resolved or connected to.
  proxy_unreachable,
  /// The forward proxy answered CONNECT with 407 (or 401): it wants credentials, or refused the ones given.
  proxy_auth_required,
  /// The forward proxy answered CONNECT with another status than 2xx (forbidden port, unreachable broker…).
  proxy_refused,
  /// The forward proxy closed the connection before it had answered CONNECT.
  proxy_closed,
  /// The forward proxy did not answer CONNECT within the handshake timeout.
  proxy_timeout,
  /// The forward proxy's answer to CONNECT was not HTTP, too large, or followed by unexpected bytes.
  proxy_bad_response,
  /// A client's first bytes at a plain Kafka port were a TLS ClientHello: it is configured for TLS.
  tls_on_kafka_port,
  /// A client's first bytes at a Kafka port were an HTTP request.
  http_on_kafka_port,
};

const boost::system::error_category& error_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

}  // namespace kws

template <>
struct boost::system::is_error_code_enum<kws::errc> : std::true_type {};
