// Feeds arbitrary bytes in arbitrary chunk sizes to kws::detail::frame_splitter and checks it against
// kws::peek_frame walking the whole buffer: the same frame boundaries, the same error at the same frame, the
// same partial tail. Every chunk is copied into its own heap block of exactly its size, so AddressSanitizer
// reports any read past a chunk.
//
// Input layout (FuzzedDataProvider): from the end, the maximum frame size and the chunk plan; from the front,
// the byte stream.
#include "fuzz_check.hpp"

#include "kafka/frame_splitter.hpp"

#include <kws/frame.hpp>

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <utility>
#include <vector>

namespace {

using bytes = std::span<const unsigned char>;

struct frame_walk {
  std::vector<std::pair<std::size_t, std::size_t>> frames;  ///< (start, length) of each complete frame
  bool failed = false;
  std::size_t error_at = 0;  ///< start of the frame whose header was rejected
  boost::system::error_code ec;
  std::size_t tail = 0;  ///< bytes of an incomplete last frame (when not failed)
};

// The reference: peek_frame over the whole contiguous buffer.
frame_walk walk_with_peek(bytes stream, std::size_t max_frame) {
  frame_walk w;
  std::size_t pos = 0;
  while (pos < stream.size()) {
    boost::system::error_code ec;
    const std::size_t length = kws::peek_frame(stream.subspan(pos), max_frame, ec);
    if (ec) {
      KWS_FUZZ_CHECK(length == 0);
      w.failed = true;
      w.error_at = pos;
      w.ec = ec;
      return w;
    }
    if (length == 0) {
      KWS_FUZZ_CHECK(stream.size() - pos < kws::frame_header_bytes);
      break;
    }
    KWS_FUZZ_CHECK(length >= kws::frame_header_bytes && length - kws::frame_header_bytes <= max_frame);
    if (length > stream.size() - pos) break;
    w.frames.emplace_back(pos, length);
    pos += length;
  }
  w.tail = stream.size() - pos;
  return w;
}

frame_walk walk_with_splitter(bytes stream, std::size_t max_frame, const std::vector<std::size_t>& plan,
                              bool feed_empty) {
  frame_walk w;
  kws::detail::frame_splitter splitter(max_frame);
  KWS_FUZZ_CHECK(splitter.max_frame_bytes() == max_frame);
  std::size_t pos = 0;          // absolute bytes consumed
  std::size_t frame_start = 0;  // absolute start of the current frame
  std::size_t next_chunk = 0;
  while (pos < stream.size()) {
    std::size_t n = stream.size() - pos;
    if (!plan.empty()) n = std::min(n, plan[next_chunk++ % plan.size()]);
    const std::vector<unsigned char> chunk(stream.begin() + static_cast<std::ptrdiff_t>(pos),
                                           stream.begin() + static_cast<std::ptrdiff_t>(pos + n));
    bytes in(chunk);
    if (feed_empty) {
      // An empty read is a no-op wherever the splitter stands. It is an empty view into the chunk, as a
      // reader's buffer gives, not bytes{}: feed(bytes{}) at a frame boundary passes a null pointer to
      // memcpy in the splitter, which UBSan reports (see README.md, "Findings").
      boost::system::error_code ec;
      const std::size_t seen = splitter.frame_bytes_seen();
      const auto s = splitter.feed(in.first(0), ec);
      KWS_FUZZ_CHECK(!ec && s.consumed == 0 && !s.complete && splitter.frame_bytes_seen() == seen);
    }
    while (!in.empty()) {
      if (splitter.at_boundary()) frame_start = pos;
      boost::system::error_code ec;
      const auto s = splitter.feed(in, ec);
      KWS_FUZZ_CHECK(s.consumed <= in.size());
      KWS_FUZZ_CHECK(s.consumed > 0);  // progress on every non-empty input
      pos += s.consumed;
      if (ec) {
        // The whole header was read and rejected; nothing of the body was taken.
        KWS_FUZZ_CHECK(!s.complete);
        KWS_FUZZ_CHECK(pos - frame_start == kws::frame_header_bytes);
        w.failed = true;
        w.error_at = frame_start;
        w.ec = ec;
        return w;
      }
      if (s.complete) {
        w.frames.emplace_back(frame_start, pos - frame_start);
        KWS_FUZZ_CHECK(splitter.at_boundary() && splitter.frame_bytes_seen() == 0);
        KWS_FUZZ_CHECK(splitter.body_size() == -1);
        // A complete frame is exactly what one WebSocket message must hold.
        KWS_FUZZ_CHECK(!kws::check_message(stream.subspan(frame_start, pos - frame_start), max_frame));
      } else {
        // An incomplete frame takes all of the input it was given, never less.
        KWS_FUZZ_CHECK(s.consumed == in.size());
        const std::size_t seen = pos - frame_start;
        KWS_FUZZ_CHECK(splitter.frame_bytes_seen() == seen);
        KWS_FUZZ_CHECK(!splitter.at_boundary());
        if (seen < kws::frame_header_bytes) {
          KWS_FUZZ_CHECK(splitter.body_size() == -1);
        } else {
          const std::int32_t size = kws::load_be32(stream.data() + frame_start);
          KWS_FUZZ_CHECK(splitter.body_size() == size);
          KWS_FUZZ_CHECK(size >= 0 && static_cast<std::size_t>(size) <= max_frame);
          KWS_FUZZ_CHECK(seen < kws::frame_header_bytes + static_cast<std::size_t>(size));
        }
      }
      in = in.subspan(s.consumed);
    }
  }
  w.tail = pos - (w.frames.empty() ? 0 : w.frames.back().first + w.frames.back().second);
  KWS_FUZZ_CHECK(splitter.frame_bytes_seen() == w.tail);
  KWS_FUZZ_CHECK(splitter.at_boundary() == (w.tail == 0));
  return w;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  // Small maxima make frame_too_large reachable; the default keeps the production bound covered.
  const std::size_t max_frame =
      in.ConsumeBool() ? kws::default_max_frame_bytes : in.ConsumeIntegralInRange<std::size_t>(0, 1u << 16);
  const bool feed_empty = in.ConsumeBool();
  std::vector<std::size_t> plan(in.ConsumeIntegralInRange<std::size_t>(0, 8));
  for (auto& n : plan) n = in.ConsumeIntegralInRange<std::size_t>(1, 300);
  const std::vector<unsigned char> stream = in.ConsumeRemainingBytes<unsigned char>();

  const frame_walk expected = walk_with_peek(stream, max_frame);
  const frame_walk got = walk_with_splitter(stream, max_frame, plan, feed_empty);

  KWS_FUZZ_CHECK(got.frames == expected.frames);
  KWS_FUZZ_CHECK(got.failed == expected.failed);
  if (expected.failed) {
    KWS_FUZZ_CHECK(got.error_at == expected.error_at);
    KWS_FUZZ_CHECK(got.ec == expected.ec);
    KWS_FUZZ_CHECK(expected.ec == kws::errc::negative_frame_size ||
                   expected.ec == kws::errc::frame_too_large);
  } else {
    KWS_FUZZ_CHECK(got.tail == expected.tail);
  }

  // check_message on the whole buffer accepts exactly a buffer that is one complete frame.
  const auto whole = kws::check_message(stream, max_frame);
  const bool one_frame =
      !expected.failed && expected.frames.size() == 1 && expected.frames[0].second == stream.size();
  KWS_FUZZ_CHECK(!whole == one_frame);
  if (expected.failed && expected.error_at == 0) KWS_FUZZ_CHECK(whole == expected.ec);
  return 0;
}
