// An incremental Kafka frame splitter for a byte stream that arrives in arbitrary pieces and is not kept in
// one buffer. Nothing in the library uses it: the relay's TCP side reads into one contiguous buffer and finds
// frames there with kws::peek_frame (include/kws/frame.hpp), because every frame must be whole in memory
// anyway, for the Kafka hook and for the one WebSocket message it becomes. It was public API with no caller
// and is kept here, out of the installed headers, for its fuzz target (fuzz/frame_fuzz.cpp, which checks it
// against peek_frame), its benchmark (bench/frame_bench.cpp) and its tests (tests/library/frame_test.cpp),
// until a reader that streams frames without holding them needs it.
#pragma once

#include <kws/frame.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace kws::detail {

/// Keeps no bytes itself, only where the current frame stands, so the caller decides where bytes are stored
/// (or sent from in place).
class frame_splitter {
 public:
  struct step {
    std::size_t consumed = 0;  ///< bytes of the input that belong to the current frame
    bool complete = false;     ///< the current frame ended within those bytes
  };

  explicit frame_splitter(std::size_t max_frame_bytes = default_max_frame_bytes) noexcept
      : max_frame_bytes_(max_frame_bytes) {}

  /// Takes bytes of the current frame from the front of `in`, never past its end. After a complete step the
  /// next call starts a new frame. On an untrusted size, sets `ec` and consumes the header bytes it read.
  step feed(std::span<const unsigned char> in, boost::system::error_code& ec) noexcept {
    ec.clear();
    step s;
    if (header_have_ < frame_header_bytes) {
      const std::size_t take = std::min(frame_header_bytes - header_have_, in.size());
      if (take != 0)
        std::memcpy(header_ + header_have_, in.data(), take);  // in.data() may be null when empty
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

  /// Body size of the current frame, or -1 while its header is incomplete.
  std::int32_t body_size() const noexcept { return header_have_ == frame_header_bytes ? body_size_ : -1; }
  /// Bytes of the current frame seen so far (header included).
  std::size_t frame_bytes_seen() const noexcept { return header_have_ + body_have_; }
  /// True between frames.
  bool at_boundary() const noexcept { return header_have_ == 0; }
  std::size_t max_frame_bytes() const noexcept { return max_frame_bytes_; }
  void reset() noexcept { header_have_ = body_have_ = 0; }

 private:
  std::size_t max_frame_bytes_;
  unsigned char header_[frame_header_bytes] = {};
  std::size_t header_have_ = 0;
  std::int32_t body_size_ = 0;
  std::size_t body_have_ = 0;
};

}  // namespace kws::detail
