#include <kws/frame.hpp>

#include <algorithm>
#include <cstring>

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

frame_splitter::step frame_splitter::feed(std::span<const unsigned char> in,
                                          boost::system::error_code& ec) noexcept {
  ec.clear();
  step s;
  if (header_have_ < frame_header_bytes) {
    const std::size_t take = std::min(frame_header_bytes - header_have_, in.size());
    if (take != 0) std::memcpy(header_ + header_have_, in.data(), take);  // in.data() may be null when empty
    header_have_ += take;
    s.consumed = take;
    if (header_have_ < frame_header_bytes) return s;
    body_size_ = load_be32(header_);
    ec = check_frame_size(body_size_, max_frame_bytes_);
    if (ec) return s;
    body_have_ = 0;
    in = in.subspan(take);
  }
  const std::size_t want = static_cast<std::size_t>(body_size_) - body_have_;
  const std::size_t take = std::min(want, in.size());
  body_have_ += take;
  s.consumed += take;
  if (body_have_ == static_cast<std::size_t>(body_size_)) {
    s.complete = true;
    reset();
  }
  return s;
}

}  // namespace kws
