// Internal to the kafka layer: opening a response frame and rewriting it by patches. A rewrite parses the
// whole frame first, notes the few byte ranges it must replace, and then copies everything else as raw
// spans, so unknown tagged fields, record data and any field it does not touch stay byte for byte.
#pragma once

#include <kws/kafka/wire.hpp>

#include <boost/system/error_code.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace kws::kafka::detail {

/// Bytes of the size prefix of every Kafka frame.
inline constexpr std::size_t size_prefix_bytes = 4;

/// Checks the 4-byte size prefix against the frame's length and reads the response header (v0: correlation
/// id; v1: correlation id, then tagged fields, KIP-482). Returns a reader over the whole frame, so that
/// positions are frame offsets, placed at the first byte of the body; errors stick in the reader.
inline reader open_response_frame(bytes_view frame, int header_version) noexcept {
  reader r(frame);
  const std::int32_t size = r.int32();
  if (!r.ok()) return r;
  if (size < 0) {
    r.fail(wire_errc::invalid_length);
  } else if (static_cast<std::size_t>(size) > r.remaining()) {
    r.fail(wire_errc::truncated);
  } else if (static_cast<std::size_t>(size) < r.remaining()) {
    r.fail(wire_errc::trailing_bytes);
  }
  (void)r.int32();  // correlation id
  if (header_version >= 1) r.skip_tagged_fields();
  return r;
}

/// Replaces the input bytes [offset, offset + length) with `bytes`.
struct patch {
  std::size_t offset = 0;
  std::size_t length = 0;
  std::vector<unsigned char> bytes;

  std::ptrdiff_t delta() const noexcept {
    return static_cast<std::ptrdiff_t>(bytes.size()) - static_cast<std::ptrdiff_t>(length);
  }
};

/// Sum of the size changes of the patches that lie inside [begin, end).
inline std::ptrdiff_t delta_within(const std::vector<patch>& patches, std::size_t begin,
                                   std::size_t end) noexcept {
  std::ptrdiff_t d = 0;
  for (const auto& p : patches)
    if (p.offset >= begin && p.offset + p.length <= end) d += p.delta();
  return d;
}

/// The unsigned varint encoding of `v` as a replacement value.
inline std::vector<unsigned char> uvarint_bytes(std::uint64_t v) {
  std::vector<unsigned char> out;
  writer(out).uvarint(v);
  return out;
}

/// Writes `frame` with `patches` applied (non-overlapping; sorted here by offset) and its size prefix set to
/// the new length. Fails with invalid_length, leaving `out` alone, when the new frame would not fit a
/// Kafka size. `out` receives the whole frame only on success.
inline bool apply_patches(bytes_view frame, std::vector<patch>& patches, std::vector<unsigned char>& out,
                          boost::system::error_code& ec) {
  std::stable_sort(patches.begin(), patches.end(),
                   [](const patch& a, const patch& b) { return a.offset < b.offset; });
  std::ptrdiff_t delta = 0;
  for (const auto& p : patches) delta += p.delta();
  const auto body = static_cast<std::ptrdiff_t>(frame.size() - size_prefix_bytes) + delta;
  if (body < 0 || body > std::numeric_limits<std::int32_t>::max()) {
    ec = wire_errc::invalid_length;
    return false;
  }
  std::vector<unsigned char> result;
  result.reserve(static_cast<std::size_t>(body) + size_prefix_bytes);
  writer w(result);
  w.int32(static_cast<std::int32_t>(body));
  std::size_t at = size_prefix_bytes;
  for (const auto& p : patches) {
    w.raw(frame.subspan(at, p.offset - at));
    w.raw(p.bytes);
    at = p.offset + p.length;
  }
  w.raw(frame.subspan(at));
  out = std::move(result);
  return true;
}

}  // namespace kws::kafka::detail
