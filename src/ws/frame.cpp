#include "ws/frame.hpp"

#include <boost/beast/websocket/error.hpp>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstring>
#include <stdexcept>

namespace kws::detail::ws {

using boost::system::error_code;
namespace wserr = boost::beast::websocket;

std::size_t parse_header(std::span<const unsigned char> in, frame_header& h, error_code& ec) {
  ec.clear();
  if (in.size() < 2) return 0;
  const unsigned b0 = in[0];
  const unsigned b1 = in[1];
  if ((b0 & 0x70) != 0) {
    ec = wserr::error::bad_reserved_bits;
    return 0;
  }
  h.fin = (b0 & 0x80) != 0;
  h.op = static_cast<std::uint8_t>(b0 & 0x0F);
  switch (h.op) {
    case op_continuation:
    case op_text:
    case op_binary:
    case op_close:
    case op_ping:
    case op_pong:
      break;
    default:
      ec = wserr::error::bad_opcode;
      return 0;
  }
  h.masked = (b1 & 0x80) != 0;
  const unsigned len7 = b1 & 0x7F;
  if (is_control(h.op)) {
    if (!h.fin) {
      ec = wserr::error::bad_control_fragment;
      return 0;
    }
    if (len7 > max_control_payload) {
      ec = wserr::error::bad_control_size;
      return 0;
    }
  }
  std::size_t need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (h.masked ? 4 : 0);
  if (in.size() < need) return 0;
  std::size_t pos = 2;
  if (len7 == 126) {
    h.length = (std::uint64_t{in[2]} << 8) | in[3];
    pos = 4;
    if (h.length < 126) {
      ec = wserr::error::bad_size;
      return 0;
    }
  } else if (len7 == 127) {
    h.length = 0;
    for (std::size_t i = 0; i < 8; ++i) h.length = (h.length << 8) | in[2 + i];
    pos = 10;
    if ((h.length >> 63) != 0 || h.length <= 0xFFFF) {
      ec = wserr::error::bad_size;
      return 0;
    }
  } else {
    h.length = len7;
  }
  if (h.masked) {
    std::memcpy(h.key.data(), in.data() + pos, 4);
    pos += 4;
  }
  return pos;
}

std::size_t write_header(unsigned char* out, std::uint8_t op, bool fin, std::uint64_t length,
                         const mask_key* key) noexcept {
  out[0] = static_cast<unsigned char>((fin ? 0x80 : 0) | (op & 0x0F));
  const unsigned char mask_bit = key ? 0x80 : 0;
  std::size_t pos;
  if (length < 126) {
    out[1] = static_cast<unsigned char>(mask_bit | length);
    pos = 2;
  } else if (length <= 0xFFFF) {
    out[1] = static_cast<unsigned char>(mask_bit | 126);
    out[2] = static_cast<unsigned char>(length >> 8);
    out[3] = static_cast<unsigned char>(length);
    pos = 4;
  } else {
    out[1] = static_cast<unsigned char>(mask_bit | 127);
    for (std::size_t i = 0; i < 8; ++i) out[2 + i] = static_cast<unsigned char>(length >> (56 - 8 * i));
    pos = 10;
  }
  if (key) {
    std::memcpy(out + pos, key->data(), 4);
    pos += 4;
  }
  return pos;
}

void apply_mask(unsigned char* dst, const unsigned char* src, std::size_t n, const mask_key& key,
                std::size_t offset) noexcept {
  // The key rotated to the payload offset, repeated to 8 bytes: the bulk goes a word at a time.
  unsigned char k[8];
  for (std::size_t i = 0; i < 8; ++i) k[i] = key[(offset + i) & 3];
  std::uint64_t word;
  std::memcpy(&word, k, 8);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t v;
    std::memcpy(&v, src + i, 8);
    v ^= word;
    std::memcpy(dst + i, &v, 8);
  }
  for (; i < n; ++i) dst[i] = static_cast<unsigned char>(src[i] ^ k[i & 7]);
}

mask_key next_mask_key() {
  // RAND_bytes per frame would cost more than the masking; a batch of keys per call costs little.
  constexpr std::size_t batch = 256;
  thread_local std::array<unsigned char, batch * 4> pool;
  thread_local std::size_t used = batch;
  if (used == batch) {
    if (RAND_bytes(pool.data(), static_cast<int>(pool.size())) != 1)
      throw std::runtime_error("OpenSSL's random generator failed");
    used = 0;
  }
  mask_key k;
  std::memcpy(k.data(), pool.data() + 4 * used, 4);
  ++used;
  return k;
}

bool valid_utf8(std::span<const unsigned char> s) noexcept {
  std::size_t i = 0;
  while (i < s.size()) {
    const unsigned c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t extra;
    std::uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      extra = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;
    for (std::size_t j = 1; j <= extra; ++j) {
      const unsigned cc = s[i + j];
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8.
    if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
      return false;
    i += extra + 1;
  }
  return true;
}

error_code check_close_payload(std::span<const unsigned char> payload, std::uint16_t& code) {
  code = 0;
  if (payload.empty()) return {};
  if (payload.size() == 1) return wserr::error::bad_close_size;
  code = static_cast<std::uint16_t>((payload[0] << 8) | payload[1]);
  // Codes that may appear on the wire (RFC 6455 7.4): 1000-1003, 1007-1014 defined, 3000-4999 registered
  // or private; 1004-1006 and 1015 are reserved for local use.
  const bool valid =
      (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
  if (!valid) return wserr::error::bad_close_code;
  if (!valid_utf8(payload.subspan(2))) return wserr::error::bad_close_payload;
  return {};
}

namespace {

std::string base64(const unsigned char* p, std::size_t n) {
  std::string out(4 * ((n + 2) / 3), '\0');
  const int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), p, static_cast<int>(n));
  out.resize(static_cast<std::size_t>(len));
  return out;
}

}  // namespace

std::string make_key() {
  unsigned char raw[16];
  if (RAND_bytes(raw, sizeof raw) != 1) throw std::runtime_error("OpenSSL's random generator failed");
  return base64(raw, sizeof raw);
}

std::string accept_for(std::string_view key) {
  static constexpr std::string_view guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  std::string in;
  in.reserve(key.size() + guid.size());
  in.append(key).append(guid);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(in.data(), in.size(), digest, &len, EVP_sha1(), nullptr) != 1)
    throw std::runtime_error("OpenSSL's SHA-1 failed");
  return base64(digest, len);
}

}  // namespace kws::detail::ws
