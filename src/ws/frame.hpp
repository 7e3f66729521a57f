// RFC 6455 framing with no I/O: frame headers, masking, close payloads and the handshake keys. The
// connection (src/ws/stream*.cpp) does its own framing for speed; these are its pure parts.
#pragma once

#include <boost/system/error_code.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace kws::detail::ws {

enum opcode : std::uint8_t {
  op_continuation = 0x0,
  op_text = 0x1,
  op_binary = 0x2,
  op_close = 0x8,
  op_ping = 0x9,
  op_pong = 0xA,
};

inline constexpr bool is_control(std::uint8_t op) noexcept {
  return (op & 0x8) != 0;
}

/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask key.
inline constexpr std::size_t max_header_bytes = 14;
/// Largest payload of a control frame.
inline constexpr std::size_t max_control_payload = 125;

using mask_key = std::array<unsigned char, 4>;

struct frame_header {
  bool fin = false;
  std::uint8_t op = 0;
  bool masked = false;
  std::uint64_t length = 0;
  mask_key key{};
};

/// Parses the frame header at the start of `in`. Returns its size, or 0 when `in` does not hold all of it
/// yet. Fails (Beast's websocket error codes) on what no header may have: reserved bits (no extension is
/// ever negotiated), reserved opcodes, a fragmented or long control frame, a 64-bit length with the top bit
/// set, a length not in its shortest form.
std::size_t parse_header(std::span<const unsigned char> in, frame_header& h, boost::system::error_code& ec);

/// Writes a header for a frame of `length` bytes to `out` (room for max_header_bytes); masked when `key`
/// is given. Returns its size.
std::size_t write_header(unsigned char* out, std::uint8_t op, bool fin, std::uint64_t length,
                         const mask_key* key) noexcept;

/// XORs `n` bytes with the key, starting `offset` bytes into the payload (in place when dst == src).
void apply_mask(unsigned char* dst, const unsigned char* src, std::size_t n, const mask_key& key,
                std::size_t offset) noexcept;

/// A fresh, unpredictable mask key (OpenSSL's generator, drawn in batches).
mask_key next_mask_key();

/// Checks a received close payload: empty, or a code valid on the wire and a UTF-8 reason. Sets `code`
/// (0 when the payload is empty).
boost::system::error_code check_close_payload(std::span<const unsigned char> payload, std::uint16_t& code);

bool valid_utf8(std::span<const unsigned char> s) noexcept;

/// A Sec-WebSocket-Key: 16 random bytes in base64.
std::string make_key();
/// The Sec-WebSocket-Accept answering `key`.
std::string accept_for(std::string_view key);

}  // namespace kws::detail::ws
