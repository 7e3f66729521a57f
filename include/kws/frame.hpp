// The Kafka size-prefix framing, with no I/O: every Kafka message is a big-endian int32 size followed by
// that many bytes. These functions decide where frames end and whether a size can be trusted.
#pragma once

#include <kws/errc.hpp>

#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <span>

namespace kws {

/// Bytes in the Kafka size header.
inline constexpr std::size_t frame_header_bytes = 4;

/// Default upper bound of a frame's body, Kafka's `socket.request.max.bytes` (100 MiB).
inline constexpr std::size_t default_max_frame_bytes = 100u * 1024u * 1024u;

/// Reads a big-endian int32 from four bytes.
inline std::int32_t load_be32(const unsigned char* p) noexcept {
  return static_cast<std::int32_t>((std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) |
                                   (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]});
}

/// Writes a big-endian int32 to four bytes.
inline void store_be32(unsigned char* p, std::int32_t v) noexcept {
  const auto u = static_cast<std::uint32_t>(v);
  p[0] = static_cast<unsigned char>(u >> 24);
  p[1] = static_cast<unsigned char>(u >> 16);
  p[2] = static_cast<unsigned char>(u >> 8);
  p[3] = static_cast<unsigned char>(u);
}

/// Checks a size header against `0 <= size <= max_frame_bytes`.
inline boost::system::error_code check_frame_size(std::int32_t size, std::size_t max_frame_bytes) noexcept {
  if (size < 0) return errc::negative_frame_size;
  if (static_cast<std::size_t>(size) > max_frame_bytes) return errc::frame_too_large;
  return {};
}

/// Looks at the start of a contiguous buffer. Returns the total length (header included) of the first frame
/// once its header is there, 0 while fewer than four bytes are present; sets `ec` for an untrusted size.
/// The frame is complete when the returned length is not above `bytes.size()`.
std::size_t peek_frame(std::span<const unsigned char> bytes, std::size_t max_frame_bytes,
                       boost::system::error_code& ec) noexcept;

/// Checks that one WebSocket message holds exactly one Kafka frame: header present, size trusted, and
/// `size + 4 == message length`.
boost::system::error_code check_message(std::span<const unsigned char> message,
                                        std::size_t max_frame_bytes) noexcept;

}  // namespace kws
