// What a client that is not speaking Kafka sent first: a TLS ClientHello or an HTTP request at a plain Kafka
// port would otherwise read as an enormous Kafka size header ("frame larger than the maximum"), which tells
// the operator nothing. Pure: the relay's TCP side asks it about a client connection's first bytes.
#pragma once

#include <array>
#include <cstring>
#include <span>

namespace kws::kafka {

enum class foreign_protocol : unsigned char {
  need_more,  ///< fewer than four bytes so far
  none,       ///< nothing recognised: taken for Kafka
  tls,        ///< a TLS record header (type 20-23, version 3.0-3.4): a client configured for TLS
  http,       ///< an HTTP request line ("GET ", "POST", ...): a web client, or an HTTP proxy's
};

/// Looks at the first bytes of a connection. Four bytes decide; a Kafka size header can never look like
/// these, since each of them would be a frame of more than 335 MB.
inline foreign_protocol recognise_foreign_protocol(std::span<const unsigned char> first) noexcept {
  if (first.size() < 4) return foreign_protocol::need_more;
  // A TLS record: its content type, then its version, 3.0 (SSL 3) to 3.4. Usually a ClientHello (handshake,
  // 22), but not always: librdkafka that gives up on a connection before its ClientHello went out sends a
  // fatal alert (21) as its first and only record.
  if (first[0] >= 0x14 && first[0] <= 0x17 && first[1] == 0x03 && first[2] <= 0x04)
    return foreign_protocol::tls;
  static constexpr std::array<const char*, 10> methods{"GET ", "POST", "PUT ", "HEAD", "DELE",
                                                       "OPTI", "PATC", "CONN", "TRAC", "PRI "};
  for (const char* m : methods)
    if (std::memcmp(first.data(), m, 4) == 0) return foreign_protocol::http;
  return foreign_protocol::none;
}

}  // namespace kws::kafka
