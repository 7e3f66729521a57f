#include <kws/kafka/wire.hpp>
#include <kws/proxy_protocol.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <string_view>

namespace kws::proxy_protocol {
namespace {

namespace ip = boost::asio::ip;
using status = result::status;

constexpr std::array<unsigned char, 12> v2_signature{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                     0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr std::string_view v1_prefix = "PROXY ";
// The signature, version and command, family and protocol, and the block's length.
constexpr std::size_t v2_fixed = 16;

result need(std::size_t n) {
  return {status::need_more, n};
}

result invalid(std::string why) {
  return {status::invalid, 0, {}, std::move(why)};
}

// The first bytes as a log line can show them: printable ASCII as it is, anything else as \xNN.
std::string shown(std::span<const unsigned char> bytes) {
  std::string out;
  for (const auto b : bytes.first(std::min<std::size_t>(bytes.size(), 16))) {
    if (b >= 0x20 && b < 0x7f && b != '\\') {
      out += static_cast<char>(b);
    } else {
      constexpr char hex[] = "0123456789abcdef";
      out += {'\\', 'x', hex[b >> 4], hex[b & 15]};
    }
  }
  return out;
}

// A prefix of the connection that neither signature starts with.
bool neither(std::span<const unsigned char> bytes) {
  const auto n = std::min(bytes.size(), v2_signature.size());
  const bool v2 =
      std::equal(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n), v2_signature.begin());
  const auto m = std::min(bytes.size(), v1_prefix.size());
  const bool v1 = std::equal(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(m), v1_prefix.begin(),
                             [](unsigned char b, char c) { return b == static_cast<unsigned char>(c); });
  return !v1 && !v2;
}

// Source and destination address, then source and destination port, of one family.
template <class Address>
bool read_addresses(kafka::reader& in, header& h) {
  typename Address::bytes_type src{}, dst{};
  const auto s = in.raw(src.size()), d = in.raw(dst.size());
  const auto sport = static_cast<std::uint16_t>(in.int16()), dport = static_cast<std::uint16_t>(in.int16());
  if (!in.ok()) return false;
  std::copy(s.begin(), s.end(), src.begin());
  std::copy(d.begin(), d.end(), dst.begin());
  h.source.emplace(Address(src), sport);
  h.destination.emplace(Address(dst), dport);
  return true;
}

result parse_v2(std::span<const unsigned char> bytes) {
  if (bytes.size() < v2_fixed) return need(v2_fixed);
  const unsigned version = bytes[12] >> 4, command = bytes[12] & 15;
  const unsigned family = bytes[13] >> 4, transport = bytes[13] & 15;
  const std::size_t length = (std::size_t{bytes[14]} << 8) | bytes[15];
  if (version != 2)
    return invalid("PROXY protocol header of version " + std::to_string(version) +
                   " (only 2 has this signature)");
  if (command > 1) return invalid("PROXY protocol v2 header with command " + std::to_string(command));
  if (length > max_v2_block) {
    return invalid("PROXY protocol v2 header of " + std::to_string(length) +
                   " bytes of addresses and TLVs (at most " + std::to_string(max_v2_block) + " accepted)");
  }
  if (bytes.size() < v2_fixed + length) return need(v2_fixed + length);
  header h;
  h.version = 2;
  h.size = v2_fixed + length;
  if (command == 0) {
    // LOCAL: the address block, if any, is to be ignored.
    h.local = true;
    return {status::done, 0, h};
  }
  if (family == 0) return {status::done, 0, h};  // PROXY with UNSPEC: the socket's own endpoints stand
  if ((family != 1 && family != 2) || transport != 1) {
    return invalid("PROXY protocol v2 header for " +
                   std::string(family == 3      ? "a UNIX socket"
                               : transport == 2 ? "UDP"
                                                : "an unknown family") +
                   ", not a TCP connection");
  }
  kafka::reader in(bytes.subspan(v2_fixed, length));
  const bool read =
      family == 1 ? read_addresses<ip::address_v4>(in, h) : read_addresses<ip::address_v6>(in, h);
  if (!read) {
    return invalid("PROXY protocol v2 header too short for " + std::string(family == 1 ? "IPv4" : "IPv6") +
                   " addresses (" + std::to_string(length) + " bytes)");
  }
  // What follows the addresses is TLVs, which nothing here needs.
  return {status::done, 0, h};
}

std::optional<std::uint16_t> port_of(std::string_view s) {
  unsigned v = 0;
  const auto [end, err] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || err != std::errc{} || end != s.data() + s.size() || v > 65535 ||
      (s.size() > 1 && s[0] == '0'))
    return std::nullopt;
  return static_cast<std::uint16_t>(v);
}

result parse_v1(std::span<const unsigned char> bytes) {
  // One byte at a time up to the CRLF: nothing past the line may be taken.
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  const auto cr = text.find('\r');
  if (cr + 1 == text.size()) {
    if (text.size() + 1 > max_v1_line)
      return invalid("PROXY protocol v1 line longer than " + std::to_string(max_v1_line) + " bytes");
    return need(text.size() + 1);
  }
  if (cr == std::string_view::npos) {
    // The line still needs its CRLF, and is at least as long as "PROXY UNKNOWN\r\n".
    if (text.size() + 2 > max_v1_line)
      return invalid("PROXY protocol v1 line without CRLF in its first " + std::to_string(max_v1_line) +
                     " bytes");
    return need(std::max<std::size_t>(15, text.size() + 2));
  }
  if (text[cr + 1] != '\n') return invalid("PROXY protocol v1 line with a CR not followed by LF");
  header h;
  h.version = 1;
  h.size = cr + 2;
  const auto line = text.substr(v1_prefix.size(), cr - v1_prefix.size());
  if (line.starts_with("UNKNOWN")) {
    h.local = true;
    return {status::done, 0, h};
  }
  // TCP4|TCP6 SRC DST SPORT DPORT, single spaces.
  std::array<std::string_view, 5> f;
  std::size_t at = 0;
  for (std::size_t i = 0; i < f.size(); ++i) {
    const auto space = line.find(' ', at);
    if ((space == std::string_view::npos) != (i + 1 == f.size()))
      return invalid("PROXY protocol v1 line '" + shown(bytes.first(cr)) +
                     "' is not PROXY TCP4|TCP6 SRC DST SPORT DPORT");
    f[i] = line.substr(at, space == std::string_view::npos ? std::string_view::npos : space - at);
    at = space + 1;
  }
  if (f[0] != "TCP4" && f[0] != "TCP6") {
    return invalid("PROXY protocol v1 line with protocol '" +
                   shown(bytes.subspan(v1_prefix.size(), f[0].size())) + "'");
  }
  boost::system::error_code sec, dec;
  const auto src = ip::make_address(std::string(f[1]), sec), dst = ip::make_address(std::string(f[2]), dec);
  const auto sport = port_of(f[3]), dport = port_of(f[4]);
  const bool v4 = f[0] == "TCP4";
  if (sec || dec || src.is_v4() != v4 || dst.is_v4() != v4 || !sport || !dport)
    return invalid("PROXY protocol v1 line with bad addresses or ports for " + std::string(f[0]));
  h.source.emplace(src, *sport);
  h.destination.emplace(dst, *dport);
  return {status::done, 0, h};
}

}  // namespace

result parse(std::span<const unsigned char> bytes) {
  if (neither(bytes)) {
    return invalid("no PROXY protocol header: the connection starts with '" + shown(bytes) + "'");
  }
  // Both signatures are told apart by their first byte; until there are enough of them to know, ask for
  // the shorter one's length, which is below either header's.
  if (bytes.size() < v1_prefix.size()) return need(v1_prefix.size());
  if (bytes[0] == 'P') return parse_v1(bytes);
  return parse_v2(bytes);
}

}  // namespace kws::proxy_protocol
