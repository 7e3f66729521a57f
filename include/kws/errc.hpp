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
};

const boost::system::error_category& error_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

}  // namespace kws

template <>
struct boost::system::is_error_code_enum<kws::errc> : std::true_type {};
