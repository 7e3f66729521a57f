// How a relay's end is put in words: the WebSocket close code a peer gets for what it did wrong, and the
// causes of the closed line ("broker closed (code 1001 going away)", "client reset the connection").
#pragma once

#include <kws/connection.hpp>
#include <kws/relay.hpp>

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace kws::detail {

/// An error that only says a side went away (or was closed by the relay): not worth reporting as the error.
bool is_teardown(const boost::system::error_code& ec);
/// The WebSocket close code that tells a peer what it did wrong (RFC 6455, section 7.4.1), if it did.
std::optional<close_code> close_code_for(const boost::system::error_code& ec);
/// "code 1001 going away": a WebSocket close code as operators read it.
std::string close_code_text(std::uint16_t code);
/// Why a side ended: `who` is "client" or "broker"; `peer_code` is the WebSocket close code that side sent
/// (0: none, or not a WebSocket).
std::string peer_failure(const std::string& who, const boost::system::error_code& ec,
                         std::uint16_t peer_code);
/// What peer_failure says, as data.
relay_end end_of(const boost::system::error_code& ec);
/// Errors that say a peer broke the protocol, as opposed to going away.
bool is_protocol_error(const boost::system::error_code& ec);

/// The cause of a relay that a drain ended in order.
inline constexpr const char* shut_down_cause = "shut down, every response delivered";

}  // namespace kws::detail
