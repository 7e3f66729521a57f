// Kafka message sets in the v0 and v1 formats (magic 0 and 1), with no I/O. Layout, per the Kafka protocol
// guide ("Messages aka Records", pre-0.11 format):
//   entry   = offset:int64 message_size:int32 message
//   message = crc:int32 magic:int8 attributes:int8 [timestamp:int64 if magic 1] key:bytes value:bytes
// The CRC is CRC-32 (IEEE) over everything after the crc field.
#pragma once

#include <kws/kafka/api.hpp>
#include <kws/kafka/wire.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kws::devbroker {

using kafka::bytes_view;

/// Bytes of offset + message_size in front of each message.
inline constexpr std::size_t log_overhead = 12;

struct message_view {
  std::int64_t offset = 0;
  std::int8_t magic = 0;
  std::int8_t attributes = 0;
  std::int64_t timestamp = -1;  ///< magic 1 only
  std::optional<bytes_view> key;
  std::optional<bytes_view> value;
  bytes_view entry;  ///< the whole entry, offset field included
};

/// CRC-32 (IEEE 802.3) as Kafka's message format uses it.
std::uint32_t crc32_ieee(bytes_view bytes) noexcept;

/// Splits a produced message set into messages and checks each one: complete, a known magic (0 or 1), no
/// compression, CRC correct, key and value filling the message exactly. On failure returns the Kafka error
/// for the partition (CORRUPT_MESSAGE or UNSUPPORTED_COMPRESSION_TYPE) and says why in `why`.
kafka::error_code parse_message_set(bytes_view set, std::vector<message_view>& out, std::string& why);

/// Like parse_message_set, but a partial last entry (as brokers may return from Fetch) ends the set instead
/// of being an error. For tests and clients.
kafka::error_code parse_fetched_message_set(bytes_view set, std::vector<message_view>& out, std::string& why);

/// Appends one message entry with a correct CRC.
void encode_message(kafka::writer& w, std::int64_t offset, std::optional<bytes_view> key,
                    std::optional<bytes_view> value, std::int8_t magic = 0, std::int64_t timestamp = 0,
                    std::int8_t attributes = 0);

/// Appends `m` (a message that parsed) as a magic 0 entry with the same offset, key and value: no timestamp,
/// and the timestamp-type attribute bit, which magic 0 does not have, cleared. This is the down-conversion a
/// Kafka 0.10 broker applies for clients that fetch with Fetch v0 or v1.
void encode_as_magic_0(kafka::writer& w, const message_view& m);

}  // namespace kws::devbroker
