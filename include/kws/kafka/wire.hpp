// Kafka wire primitives with no I/O: a bounds-checked reader over a byte span and a writer that appends to a
// byte vector. Layouts follow the Kafka protocol guide (https://kafka.apache.org/protocol#protocol_types),
// including the compact and tagged-field forms of flexible versions (KIP-482).
#pragma once

#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

namespace kws::kafka {

enum class wire_errc {
  /// A field would extend past the end of the input.
  truncated = 1,
  /// A length below -1, or -1 where null is not allowed.
  invalid_length,
  /// A varint longer than its type allows.
  invalid_varint,
  /// An array count larger than the bytes that remain could hold.
  invalid_array_count,
  /// Bytes left over after a message that should have ended.
  trailing_bytes,
  /// A message version (or API) that the decoder does not know the layout of.
  unsupported_version,
};

const boost::system::error_category& wire_category() noexcept;

inline boost::system::error_code make_error_code(wire_errc e) noexcept {
  return {static_cast<int>(e), wire_category()};
}

}  // namespace kws::kafka

template <>
struct boost::system::is_error_code_enum<kws::kafka::wire_errc> : std::true_type {};

namespace kws::kafka {

using bytes_view = std::span<const unsigned char>;

/// Reads big-endian fields from the front of a span. The first failure sticks: it sets `error()`, every later
/// read returns a zero value and consumes nothing, so a decoder can read a whole structure and check once.
/// Strings and byte fields are views into the input; they live as long as the input does.
class reader {
 public:
  explicit reader(bytes_view bytes) noexcept : bytes_(bytes) {}

  std::int8_t int8() noexcept;
  std::int16_t int16() noexcept;
  std::int32_t int32() noexcept;
  std::int64_t int64() noexcept;
  std::uint32_t uint32() noexcept { return static_cast<std::uint32_t>(int32()); }

  /// Unsigned LEB128 varint of at most 5 bytes.
  std::uint32_t uvarint() noexcept;
  /// Unsigned LEB128 varint of at most 10 bytes.
  std::uint64_t uvarlong() noexcept;
  /// Zig-zag signed varint (record batches, v2 message format).
  std::int32_t varint() noexcept;
  std::int64_t varlong() noexcept;

  /// int16 length + bytes; a null (-1) is an error.
  std::string_view string() noexcept;
  /// int16 length + bytes; -1 is null.
  std::optional<std::string_view> nullable_string() noexcept;
  /// uvarint length+1 + bytes; 0 (null) is an error.
  std::string_view compact_string() noexcept;
  std::optional<std::string_view> compact_nullable_string() noexcept;

  /// int32 length + bytes; -1 is null.
  std::optional<bytes_view> nullable_bytes() noexcept;
  /// int32 length + bytes; a null is an error.
  bytes_view bytes() noexcept;
  /// uvarint length+1 + bytes; 0 is null.
  std::optional<bytes_view> compact_nullable_bytes() noexcept;

  /// int32 element count of an array; -1 (null) is returned as -1. A count that the remaining bytes could not
  /// hold at `min_element_bytes` each is an error, so a hostile count never drives a large allocation.
  std::int32_t array_count(std::size_t min_element_bytes = 1) noexcept;
  /// uvarint count+1 of a compact array; null (0) is returned as -1.
  std::int32_t compact_array_count(std::size_t min_element_bytes = 1) noexcept;

  /// Skips a tagged-field section: uvarint count, then per field uvarint tag, uvarint size and size bytes.
  void skip_tagged_fields() noexcept;

  /// Takes the next `n` bytes as a view.
  bytes_view raw(std::size_t n) noexcept;
  void skip(std::size_t n) noexcept { (void)raw(n); }

  /// Sets `trailing_bytes` when input remains; for decoders that must consume a message exactly.
  void expect_end() noexcept;

  std::size_t remaining() const noexcept { return bytes_.size() - pos_; }
  std::size_t position() const noexcept { return pos_; }
  bool ok() const noexcept { return !ec_; }
  const boost::system::error_code& error() const noexcept { return ec_; }
  /// Records a decoder's own error (first one wins) so that it sticks like a read error.
  void fail(boost::system::error_code ec) noexcept {
    if (!ec_) ec_ = ec;
  }

 private:
  const unsigned char* take(std::size_t n) noexcept;
  std::uint64_t read_uvarint(unsigned max_bytes) noexcept;

  bytes_view bytes_;
  std::size_t pos_ = 0;
  boost::system::error_code ec_;
};

/// Appends big-endian fields to a byte vector it does not own.
class writer {
 public:
  explicit writer(std::vector<unsigned char>& out) noexcept : out_(out) {}

  void int8(std::int8_t v) { out_.push_back(static_cast<unsigned char>(v)); }
  void int16(std::int16_t v);
  void int32(std::int32_t v);
  void int64(std::int64_t v);
  void uvarint(std::uint64_t v);
  void varint(std::int64_t v);  ///< zig-zag

  void string(std::string_view s);  ///< int16 length; throws std::length_error above 32767 bytes
  void nullable_string(std::optional<std::string_view> s);
  void compact_string(std::string_view s);
  void compact_nullable_string(std::optional<std::string_view> s);
  void bytes(bytes_view b);  ///< int32 length
  void nullable_bytes(std::optional<bytes_view> b);
  void compact_nullable_bytes(std::optional<bytes_view> b);
  void array_count(std::int32_t n) { int32(n); }
  void compact_array_count(std::int32_t n) {
    uvarint(static_cast<std::uint64_t>(std::int64_t{n} + 1));
  }  ///< -1 is null
  /// An empty tagged-field section.
  void empty_tagged_fields() { uvarint(0); }
  void raw(bytes_view b) { out_.insert(out_.end(), b.begin(), b.end()); }

  /// Reserves an int32 to fill in later (sizes and CRCs written after their content); returns its position.
  std::size_t placeholder_int32();
  void patch_int32(std::size_t position, std::int32_t v) noexcept;

  std::size_t size() const noexcept { return out_.size(); }
  std::vector<unsigned char>& buffer() noexcept { return out_; }

 private:
  std::vector<unsigned char>& out_;
};

/// Bytes of an unsigned varint holding `v`.
std::size_t uvarint_size(std::uint64_t v) noexcept;

}  // namespace kws::kafka
