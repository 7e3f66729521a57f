#include "relay/causes.hpp"

#include <kws/errc.hpp>

#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/websocket/error.hpp>

namespace kws::detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
using boost::system::error_code;

bool is_teardown(const error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::operation_aborted ||
         ec == beast::websocket::error::closed || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe;
}

// The WebSocket close code that tells a peer what it did wrong (RFC 6455, section 7.4.1), if it did.
std::optional<close_code> close_code_for(const error_code& ec) {
  if (ec == errc::invalid_message_type) return close_code::unsupported_data;
  if (ec == errc::frame_too_large) return close_code::too_big;
  if (ec == errc::negative_frame_size || ec == errc::frame_size_mismatch) return close_code::protocol_error;
  return std::nullopt;
}

// "code 1001 going away": a WebSocket close code as operators read it (RFC 6455, section 7.4.1).
std::string close_code_text(std::uint16_t code) {
  const char* name = "";
  switch (code) {
    case 1000:
      name = " normal";
      break;
    case 1001:
      name = " going away";
      break;
    case 1002:
      name = " protocol error";
      break;
    case 1003:
      name = " unsupported data";
      break;
    case 1007:
      name = " invalid payload";
      break;
    case 1008:
      name = " policy violation";
      break;
    case 1009:
      name = " message too big";
      break;
    case 1011:
      name = " internal error";
      break;
    case 1012:
      name = " service restart";
      break;
    case 1013:
      name = " try again later";
      break;
    default:
      break;
  }
  return "code " + std::to_string(code) + name;
}

// Why a side ended, in words for the closed line: "broker did not answer pings", "client reset the
// connection", "broker closed (code 1001 going away)". `who` is "client" or "broker"; `peer_code` is the
// WebSocket close code that side sent (0: none, or not a WebSocket).
std::string peer_failure(const std::string& who, const error_code& ec, std::uint16_t peer_code) {
  if (ec == asio::error::eof || ec == beast::websocket::error::closed)
    return who + " closed" + (peer_code ? " (" + close_code_text(peer_code) + ")" : std::string());
  if (ec == asio::error::connection_reset) return who + " reset the connection";
  if (ec == asio::error::broken_pipe) return who + " closed while data was being sent to it";
  // The WebSocket's own timeout: the peer stopped answering pings (or sending anything).
  if (ec == beast::error::timeout) return who + " did not answer pings";
  // TCP keep-alive probes or TCP_USER_TIMEOUT.
  if (ec == asio::error::timed_out) return who + " stopped acknowledging data (TCP timeout)";
  if (ec == errc::invalid_message_type) return who + " sent a text message (Kafka frames must be binary)";
  if (ec == errc::negative_frame_size) return who + " sent a negative Kafka frame size";
  if (ec == errc::frame_too_large) return who + " sent a Kafka frame larger than the maximum frame size";
  if (ec == errc::frame_size_mismatch)
    return who + " sent a WebSocket message whose length does not match its Kafka size header";
  if (ec == errc::truncated_frame) return who + " closed in the middle of a Kafka frame";
  if (ec == errc::tls_on_kafka_port) return who + " spoke TLS on a plain Kafka port (a TLS record)";
  if (ec == errc::http_on_kafka_port) return who + " spoke HTTP on a Kafka port (an HTTP request)";
  if (ec == boost::system::errc::not_enough_memory) return "out of memory for a frame from the " + who;
  // TLS over TCP: a bad record, an alert from the peer; OpenSSL's reason.
  if (ec.category() == asio::error::get_ssl_category() ||
      ec.category() == asio::ssl::error::get_stream_category())
    return who + " TLS failed: " + ec.message();
  return who + " connection failed: " + ec.message();
}

relay_end end_of(const error_code& ec) {
  if (ec == asio::error::eof || ec == beast::websocket::error::closed) return relay_end::closed;
  if (ec == asio::error::connection_reset) return relay_end::reset;
  if (ec == asio::error::broken_pipe) return relay_end::closed_while_sending;
  if (ec == beast::error::timeout) return relay_end::ping_timeout;
  if (ec == asio::error::timed_out) return relay_end::tcp_timeout;
  if (ec == errc::truncated_frame) return relay_end::truncated;
  if (ec == errc::invalid_message_type || ec == errc::negative_frame_size || ec == errc::frame_too_large ||
      ec == errc::frame_size_mismatch || ec == errc::tls_on_kafka_port || ec == errc::http_on_kafka_port)
    return relay_end::protocol_error;
  if (ec == boost::system::errc::not_enough_memory) return relay_end::out_of_memory;
  return relay_end::failed;
}

// Errors that say the broker broke the protocol, as opposed to going away.
bool is_protocol_error(const error_code& ec) {
  return ec.category() == error_category() && ec != errc::truncated_frame;
}

}  // namespace kws::detail

namespace kws {

const char* to_string(relay_end end) noexcept {
  switch (end) {
    case relay_end::closed:
      return "closed";
    case relay_end::closed_owing:
      return "closed_owing";
    case relay_end::reset:
      return "reset";
    case relay_end::closed_while_sending:
      return "closed_while_sending";
    case relay_end::ping_timeout:
      return "ping_timeout";
    case relay_end::tcp_timeout:
      return "tcp_timeout";
    case relay_end::protocol_error:
      return "protocol_error";
    case relay_end::truncated:
      return "truncated";
    case relay_end::failed:
      return "failed";
    case relay_end::reconnect_failed:
      return "reconnect_failed";
    case relay_end::unusable_response:
      return "unusable_response";
    case relay_end::idle:
      return "idle";
    case relay_end::shut_down:
      return "shut_down";
    case relay_end::stopped:
      return "stopped";
    case relay_end::out_of_memory:
      return "out_of_memory";
  }
  return "unknown";
}

const char* to_string(relay_side side) noexcept {
  switch (side) {
    case relay_side::client:
      return "client";
    case relay_side::broker:
      return "broker";
    case relay_side::none:
      break;
  }
  return "none";
}

}  // namespace kws
