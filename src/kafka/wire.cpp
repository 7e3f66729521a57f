#include <kws/kafka/wire.hpp>

#include <stdexcept>
#include <string>

namespace kws::kafka {

namespace {

class wire_category_impl final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "kws.kafka.wire"; }
  std::string message(int ev) const override {
    switch (static_cast<wire_errc>(ev)) {
      case wire_errc::truncated:
        return "Kafka field extends past the end of the message";
      case wire_errc::invalid_length:
        return "invalid Kafka length field";
      case wire_errc::invalid_varint:
        return "Kafka varint too long";
      case wire_errc::invalid_array_count:
        return "Kafka array count larger than the message";
      case wire_errc::trailing_bytes:
        return "trailing bytes after a Kafka message";
      case wire_errc::unsupported_version:
        return "Kafka message version whose layout is not known here";
    }
    return "unknown kws.kafka.wire error";
  }
};

}  // namespace

const boost::system::error_category& wire_category() noexcept {
  static const wire_category_impl category;
  return category;
}

// ---- reader ----

const unsigned char* reader::take(std::size_t n) noexcept {
  if (ec_) return nullptr;
  if (n > remaining()) {
    ec_ = wire_errc::truncated;
    return nullptr;
  }
  const unsigned char* p = bytes_.data() + pos_;
  pos_ += n;
  return p;
}

std::int8_t reader::int8() noexcept {
  const unsigned char* p = take(1);
  return p ? static_cast<std::int8_t>(p[0]) : 0;
}

std::int16_t reader::int16() noexcept {
  const unsigned char* p = take(2);
  return p ? static_cast<std::int16_t>((std::uint16_t{p[0]} << 8) | std::uint16_t{p[1]}) : 0;
}

std::int32_t reader::int32() noexcept {
  const unsigned char* p = take(4);
  if (!p) return 0;
  return static_cast<std::int32_t>((std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) |
                                   (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]});
}

std::int64_t reader::int64() noexcept {
  const unsigned char* p = take(8);
  if (!p) return 0;
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return static_cast<std::int64_t>(v);
}

std::uint64_t reader::read_uvarint(unsigned max_bytes) noexcept {
  std::uint64_t v = 0;
  for (unsigned i = 0; i < max_bytes; ++i) {
    const unsigned char* p = take(1);
    if (!p) return 0;
    v |= std::uint64_t{p[0] & 0x7fu} << (7 * i);
    if ((p[0] & 0x80u) == 0) return v;
  }
  if (!ec_) ec_ = wire_errc::invalid_varint;
  return 0;
}

std::uint32_t reader::uvarint() noexcept {
  const std::uint64_t v = read_uvarint(5);
  if (v > 0xffffffffu) {
    fail(wire_errc::invalid_varint);
    return 0;
  }
  return static_cast<std::uint32_t>(v);
}

std::uint64_t reader::uvarlong() noexcept {
  return read_uvarint(10);
}

std::int32_t reader::varint() noexcept {
  const std::uint32_t u = uvarint();
  return static_cast<std::int32_t>((u >> 1) ^ (~(u & 1) + 1));
}

std::int64_t reader::varlong() noexcept {
  const std::uint64_t u = uvarlong();
  return static_cast<std::int64_t>((u >> 1) ^ (~(u & 1) + 1));
}

bytes_view reader::raw(std::size_t n) noexcept {
  const unsigned char* p = take(n);
  return p ? bytes_view{p, n} : bytes_view{};
}

namespace {
std::string_view as_chars(bytes_view b) noexcept {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}
}  // namespace

std::optional<std::string_view> reader::nullable_string() noexcept {
  const std::int16_t n = int16();
  if (!ok()) return std::nullopt;
  if (n == -1) return std::nullopt;
  if (n < 0) {
    fail(wire_errc::invalid_length);
    return std::nullopt;
  }
  const bytes_view b = raw(static_cast<std::size_t>(n));
  if (!ok()) return std::nullopt;
  return as_chars(b);
}

std::string_view reader::string() noexcept {
  auto s = nullable_string();
  if (ok() && !s) fail(wire_errc::invalid_length);
  return s.value_or(std::string_view{});
}

std::optional<std::string_view> reader::compact_nullable_string() noexcept {
  const std::uint32_t n = uvarint();
  if (!ok() || n == 0) return std::nullopt;
  const bytes_view b = raw(n - 1);
  if (!ok()) return std::nullopt;
  return as_chars(b);
}

std::string_view reader::compact_string() noexcept {
  auto s = compact_nullable_string();
  if (ok() && !s) fail(wire_errc::invalid_length);
  return s.value_or(std::string_view{});
}

std::optional<bytes_view> reader::nullable_bytes() noexcept {
  const std::int32_t n = int32();
  if (!ok() || n == -1) return std::nullopt;
  if (n < 0) {
    fail(wire_errc::invalid_length);
    return std::nullopt;
  }
  const bytes_view b = raw(static_cast<std::size_t>(n));
  if (!ok()) return std::nullopt;
  return b;
}

bytes_view reader::bytes() noexcept {
  auto b = nullable_bytes();
  if (ok() && !b) fail(wire_errc::invalid_length);
  return b.value_or(bytes_view{});
}

std::optional<bytes_view> reader::compact_nullable_bytes() noexcept {
  const std::uint32_t n = uvarint();
  if (!ok() || n == 0) return std::nullopt;
  const bytes_view b = raw(n - 1);
  if (!ok()) return std::nullopt;
  return b;
}

std::int32_t reader::array_count(std::size_t min_element_bytes) noexcept {
  const std::int32_t n = int32();
  if (!ok()) return 0;
  if (n == -1) return -1;
  if (n < 0) {
    fail(wire_errc::invalid_length);
    return 0;
  }
  if (min_element_bytes > 0 && static_cast<std::size_t>(n) > remaining() / min_element_bytes) {
    fail(wire_errc::invalid_array_count);
    return 0;
  }
  return n;
}

std::int32_t reader::compact_array_count(std::size_t min_element_bytes) noexcept {
  const std::uint32_t n = uvarint();
  if (!ok()) return 0;
  if (n == 0) return -1;
  const std::uint32_t count = n - 1;
  if (count > 0x7fffffffu ||
      (min_element_bytes > 0 && static_cast<std::size_t>(count) > remaining() / min_element_bytes)) {
    fail(wire_errc::invalid_array_count);
    return 0;
  }
  return static_cast<std::int32_t>(count);
}

void reader::skip_tagged_fields() noexcept {
  const std::uint32_t count = uvarint();
  for (std::uint32_t i = 0; i < count && ok(); ++i) {
    (void)uvarint();  // tag
    const std::uint32_t size = uvarint();
    skip(size);
  }
}

void reader::expect_end() noexcept {
  if (ok() && remaining() != 0) fail(wire_errc::trailing_bytes);
}

// ---- writer ----

void writer::int16(std::int16_t v) {
  const auto u = static_cast<std::uint16_t>(v);
  out_.push_back(static_cast<unsigned char>(u >> 8));
  out_.push_back(static_cast<unsigned char>(u));
}

void writer::int32(std::int32_t v) {
  const auto u = static_cast<std::uint32_t>(v);
  for (int shift = 24; shift >= 0; shift -= 8) out_.push_back(static_cast<unsigned char>(u >> shift));
}

void writer::int64(std::int64_t v) {
  const auto u = static_cast<std::uint64_t>(v);
  for (int shift = 56; shift >= 0; shift -= 8) out_.push_back(static_cast<unsigned char>(u >> shift));
}

void writer::uvarint(std::uint64_t v) {
  while (v >= 0x80) {
    out_.push_back(static_cast<unsigned char>(v | 0x80));
    v >>= 7;
  }
  out_.push_back(static_cast<unsigned char>(v));
}

void writer::varint(std::int64_t v) {
  const auto u = static_cast<std::uint64_t>(v);
  uvarint((u << 1) ^ static_cast<std::uint64_t>(v >> 63));
}

void writer::string(std::string_view s) {
  if (s.size() > 0x7fff) throw std::length_error("Kafka string longer than 32767 bytes");
  int16(static_cast<std::int16_t>(s.size()));
  out_.insert(out_.end(), s.begin(), s.end());
}

void writer::nullable_string(std::optional<std::string_view> s) {
  if (!s) return int16(-1);
  string(*s);
}

void writer::compact_string(std::string_view s) {
  uvarint(s.size() + 1);
  out_.insert(out_.end(), s.begin(), s.end());
}

void writer::compact_nullable_string(std::optional<std::string_view> s) {
  if (!s) return uvarint(0);
  compact_string(*s);
}

void writer::bytes(bytes_view b) {
  if (b.size() > 0x7fffffff) throw std::length_error("Kafka bytes longer than 2 GiB");
  int32(static_cast<std::int32_t>(b.size()));
  raw(b);
}

void writer::nullable_bytes(std::optional<bytes_view> b) {
  if (!b) return int32(-1);
  bytes(*b);
}

void writer::compact_nullable_bytes(std::optional<bytes_view> b) {
  if (!b) return uvarint(0);
  uvarint(b->size() + 1);
  raw(*b);
}

std::size_t writer::placeholder_int32() {
  const std::size_t at = out_.size();
  out_.insert(out_.end(), 4, 0);
  return at;
}

void writer::patch_int32(std::size_t position, std::int32_t v) noexcept {
  const auto u = static_cast<std::uint32_t>(v);
  out_[position] = static_cast<unsigned char>(u >> 24);
  out_[position + 1] = static_cast<unsigned char>(u >> 16);
  out_[position + 2] = static_cast<unsigned char>(u >> 8);
  out_[position + 3] = static_cast<unsigned char>(u);
}

std::size_t uvarint_size(std::uint64_t v) noexcept {
  std::size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

}  // namespace kws::kafka
