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

}  // namespace kws
