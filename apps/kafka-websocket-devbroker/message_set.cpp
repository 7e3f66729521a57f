#include "message_set.hpp"

#include <boost/crc.hpp>

#include <fmt/format.h>

namespace kws::devbroker {

std::uint32_t crc32_ieee(bytes_view bytes) noexcept {
  boost::crc_32_type crc;
  crc.process_bytes(bytes.data(), bytes.size());
  return crc.checksum();
}

namespace {

kafka::error_code parse(bytes_view set, std::vector<message_view>& out, std::string& why,
                        bool allow_partial) {
  out.clear();
  kafka::reader r(set);
  while (r.remaining() > 0) {
    if (r.remaining() < log_overhead) {
      if (allow_partial) break;
      why = fmt::format("partial message header at byte {}", r.position());
      return kafka::error_code::corrupt_message;
    }
    const std::size_t start = r.position();
    message_view m;
    m.offset = r.int64();
    const std::int32_t size = r.int32();
    if (size < 0) {
      why = fmt::format("negative message size {}", size);
      return kafka::error_code::corrupt_message;
    }
    if (static_cast<std::size_t>(size) > r.remaining()) {
      if (allow_partial) break;
      why = fmt::format("message size {} past the end of the set", size);
      return kafka::error_code::corrupt_message;
    }
    const bytes_view message = r.raw(static_cast<std::size_t>(size));
    m.entry = set.subspan(start, log_overhead + message.size());

    kafka::reader mr(message);
    const std::uint32_t crc = mr.uint32();
    m.magic = mr.int8();
    m.attributes = mr.int8();
    if (!mr.ok()) {
      why = fmt::format("message of {} bytes too short", size);
      return kafka::error_code::corrupt_message;
    }
    if (m.magic != 0 && m.magic != 1) {
      why = fmt::format("unsupported magic {}", m.magic);
      return kafka::error_code::corrupt_message;
    }
    if (m.magic == 1) m.timestamp = mr.int64();
    m.key = mr.nullable_bytes();
    m.value = mr.nullable_bytes();
    mr.expect_end();
    if (!mr.ok()) {
      why = fmt::format("malformed message at offset field {}: {}", m.offset, mr.error().message());
      return kafka::error_code::corrupt_message;
    }
    const std::uint32_t actual = crc32_ieee(message.subspan(4));
    if (actual != crc) {
      why = fmt::format("crc mismatch: message says {:08x}, computed {:08x}", crc, actual);
      return kafka::error_code::corrupt_message;
    }
    if ((m.attributes & 0x07) != 0) {
      why = fmt::format("compression codec {} not supported", m.attributes & 0x07);
      return kafka::error_code::unsupported_compression_type;
    }
    out.push_back(m);
  }
  return kafka::error_code::none;
}

}  // namespace

kafka::error_code parse_message_set(bytes_view set, std::vector<message_view>& out, std::string& why) {
  return parse(set, out, why, false);
}

kafka::error_code parse_fetched_message_set(bytes_view set, std::vector<message_view>& out,
                                            std::string& why) {
  return parse(set, out, why, true);
}

void encode_message(kafka::writer& w, std::int64_t offset, std::optional<bytes_view> key,
                    std::optional<bytes_view> value, std::int8_t magic, std::int64_t timestamp,
                    std::int8_t attributes) {
  w.int64(offset);
  const std::size_t size_at = w.placeholder_int32();
  const std::size_t crc_at = w.placeholder_int32();
  w.int8(magic);
  w.int8(attributes);
  if (magic >= 1) w.int64(timestamp);
  w.nullable_bytes(key);
  w.nullable_bytes(value);
  auto& buf = w.buffer();
  w.patch_int32(size_at, static_cast<std::int32_t>(buf.size() - crc_at));
  const bytes_view covered{buf.data() + crc_at + 4, buf.size() - crc_at - 4};
  w.patch_int32(crc_at, static_cast<std::int32_t>(crc32_ieee(covered)));
}

void encode_as_magic_0(kafka::writer& w, const message_view& m) {
  // Bits 0-2 are the compression codec; bit 3 (timestamp type) only exists from magic 1 on.
  encode_message(w, m.offset, m.key, m.value, 0, 0, static_cast<std::int8_t>(m.attributes & 0x07));
}

}  // namespace kws::devbroker
