#include <kws/host_port.hpp>

#include <boost/url/grammar/parse.hpp>
#include <boost/url/ipv6_address.hpp>

#include <algorithm>
#include <charconv>

namespace kws {

std::optional<std::uint16_t> parse_port_number(std::string_view digits) {
  if (digits.empty() || digits.size() > 5) return std::nullopt;
  unsigned value = 0;
  const auto [end, err] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (err != std::errc{} || end != digits.data() + digits.size() || value > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(value);
}

std::optional<host_port> split_host_port(std::string_view text) {
  host_port out;
  std::string_view port_text;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    const auto inside = text.substr(1, close - 1);
    if (!boost::urls::parse_ipv6_address(inside)) return std::nullopt;
    out.host.assign(inside);
    out.is_ipv6 = true;
    const auto rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return std::nullopt;
      out.has_port = true;
      port_text = rest.substr(1);
    }
  } else {
    const auto colon = text.find(':');
    if (colon != std::string_view::npos) {
      if (text.find(':', colon + 1) != std::string_view::npos) return std::nullopt;
      out.has_port = true;
      port_text = text.substr(colon + 1);
    }
    out.host.assign(text.substr(0, colon));
  }
  if (out.has_port) {
    const auto port = parse_port_number(port_text);
    if (!port) return std::nullopt;
    out.port = *port;
  }
  return out;
}

std::string join_host_port(std::string_view host, std::uint32_t port) {
  const bool brackets = host.find(':') != std::string_view::npos && !host.starts_with('[');
  std::string out;
  out.reserve(host.size() + 8);
  if (brackets) out += '[';
  out += host;
  if (brackets) out += ']';
  out += ':';
  out += std::to_string(port);
  return out;
}

bool is_plain_host_name(std::string_view host) {
  return !host.empty() && std::all_of(host.begin(), host.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
  });
}

bool is_dialable(const host_port& hp) {
  return (hp.is_ipv6 || is_plain_host_name(hp.host)) && !(hp.has_port && hp.port == 0);
}

}  // namespace kws
