#include <kws/frame.hpp>

namespace kws {

std::size_t peek_frame(std::span<const unsigned char> bytes, std::size_t max_frame_bytes,
                       boost::system::error_code& ec) noexcept {
  ec.clear();
  if (bytes.size() < frame_header_bytes) return 0;
  const std::int32_t size = load_be32(bytes.data());
  ec = check_frame_size(size, max_frame_bytes);
  if (ec) return 0;
  return frame_header_bytes + static_cast<std::size_t>(size);
}

boost::system::error_code check_message(std::span<const unsigned char> message,
                                        std::size_t max_frame_bytes) noexcept {
  if (message.size() < frame_header_bytes) return errc::frame_size_mismatch;
  const std::int32_t size = load_be32(message.data());
  if (auto ec = check_frame_size(size, max_frame_bytes)) return ec;
  if (static_cast<std::size_t>(size) + frame_header_bytes != message.size()) return errc::frame_size_mismatch;
  return {};
}

}  // namespace kws
