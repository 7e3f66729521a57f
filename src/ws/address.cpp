#include <kws/address.hpp>
#include <kws/errc.hpp>

#include <boost/system/system_error.hpp>

#include <algorithm>
#include <charconv>

namespace kws {
namespace {

bool valid_host_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_';
}

bool parse_port(std::string_view s, std::uint16_t& port) {
  if (s.empty() || s.size() > 5) return false;
  unsigned value = 0;
  auto [end, err] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (err != std::errc{} || end != s.data() + s.size() || value == 0 || value > 65535) return false;
  port = static_cast<std::uint16_t>(value);
  return true;
}

// Splits "host:port" / "[v6]:port" / "host" (when the port may default). Returns false on anything odd.
bool parse_authority(std::string_view auth, bool port_required, std::string& host, std::uint16_t& port) {
  std::string_view h, p;
  bool has_port = false;
  if (!auth.empty() && auth.front() == '[') {
    const auto close = auth.find(']');
    if (close == std::string_view::npos) return false;
    h = auth.substr(1, close - 1);
    auto rest = auth.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      p = rest.substr(1);
      has_port = true;
    }
    if (h.empty() || !std::all_of(h.begin(), h.end(), [](char c) {
          return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' ||
                 c == '.';
        }))
      return false;
  } else {
    const auto colon = auth.rfind(':');
    if (colon != std::string_view::npos) {
      h = auth.substr(0, colon);
      p = auth.substr(colon + 1);
      has_port = true;
    } else {
      h = auth;
    }
    if (h.empty() || !std::all_of(h.begin(), h.end(), valid_host_char)) return false;
  }
  if (has_port) {
    if (!parse_port(p, port)) return false;
  } else if (port_required) {
    return false;
  }
  host.assign(h);
  return true;
}

}  // namespace

std::string ws_url::authority() const {
  std::string out;
  const bool v6 = host.find(':') != std::string::npos;
  if (v6) out += '[';
  out += host;
  if (v6) out += ']';
  out += ':';
  out += std::to_string(port);
  return out;
}

std::string ws_url::str() const {
  return (secure ? "wss://" : "ws://") + authority() + target;
}

ws_url parse_address(std::string_view address, bool tls, boost::system::error_code& ec) {
  ec.clear();
  ws_url url;
  const auto fail = [&] {
    ec = errc::invalid_address;
    return ws_url{};
  };
  if (address.empty() || address.size() > 2048) return fail();
  if (std::any_of(address.begin(), address.end(),
                  [](char c) { return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f; }))
    return fail();

  const auto scheme_end = address.find("://");
  if (scheme_end == std::string_view::npos) {
    // The Go dialer's form: host:port, scheme chosen by the TLS flag.
    if (address.find('/') != std::string_view::npos) return fail();
    url.secure = tls;
    if (!parse_authority(address, true, url.host, url.port)) return fail();
    return url;
  }

  std::string scheme(address.substr(0, scheme_end));
  std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  if (scheme == "ws") {
    url.secure = false;
  } else if (scheme == "wss") {
    url.secure = true;
  } else {
    return fail();
  }
  auto rest = address.substr(scheme_end + 3);
  const auto path_start = rest.find_first_of("/?");
  auto auth = rest.substr(0, path_start);
  if (auth.find('@') != std::string_view::npos || auth.find('#') != std::string_view::npos) return fail();
  if (!parse_authority(auth, false, url.host, url.port)) return fail();
  if (url.port == 0) url.port = url.secure ? 443 : 80;
  if (path_start != std::string_view::npos) {
    auto target = rest.substr(path_start);
    if (const auto hash = target.find('#'); hash != std::string_view::npos) target = target.substr(0, hash);
    url.target.clear();
    if (target.front() != '/') url.target += '/';
    url.target.append(target);
  }
  return url;
}

ws_url parse_address(std::string_view address, bool tls) {
  boost::system::error_code ec;
  auto url = parse_address(address, tls, ec);
  if (ec) throw boost::system::system_error(ec, std::string(address));
  return url;
}

url_template url_template::default_for(bool tls) {
  return url_template(tls ? "wss://{host}:{port}/" : "ws://{host}:{port}/");
}

url_template url_template::parse(std::string_view text, boost::system::error_code& ec) {
  ec.clear();
  // Every brace must open one of the three placeholders.
  for (std::size_t at = text.find_first_of("{}"); at != std::string_view::npos;
       at = text.find_first_of("{}", at)) {
    const auto rest = text.substr(at);
    std::size_t len = 0;
    for (std::string_view name : {"{host}", "{port}", "{node_id}"}) {
      if (rest.starts_with(name)) len = name.size();
    }
    if (len == 0) {
      ec = errc::invalid_address;
      return url_template(std::string());
    }
    at += len;
  }
  url_template t{std::string(text)};
  // Expanding must give a WebSocket URL whatever the broker advertises (a name, an IPv6 address).
  for (std::string_view host : {"broker.example.com", "::1"}) {
    const auto url = t.expand(host, 9092, 1);
    if (!url.starts_with("ws://") && !url.starts_with("wss://")) ec = errc::invalid_address;
    if (!ec) parse_address(url, false, ec);
    if (ec) return url_template(std::string());
  }
  return t;
}

url_template url_template::parse(std::string_view text) {
  boost::system::error_code ec;
  auto t = parse(text, ec);
  if (ec) throw boost::system::system_error(ec, "broker URL template '" + std::string(text) + "'");
  return t;
}

std::string url_template::expand(std::string_view host, std::int32_t port, std::int32_t node_id) const {
  std::string out;
  out.reserve(text_.size() + host.size() + 16);
  std::string_view rest = text_;
  while (!rest.empty()) {
    if (rest.starts_with("{host}")) {
      const bool v6 = host.find(':') != std::string_view::npos && !host.starts_with("[");
      if (v6) out += '[';
      out += host;
      if (v6) out += ']';
      rest.remove_prefix(6);
    } else if (rest.starts_with("{port}")) {
      out += std::to_string(port);
      rest.remove_prefix(6);
    } else if (rest.starts_with("{node_id}")) {
      out += std::to_string(node_id);
      rest.remove_prefix(9);
    } else {
      out += rest.front();
      rest.remove_prefix(1);
    }
  }
  return out;
}

}  // namespace kws
