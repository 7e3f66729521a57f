#include <kws/errc.hpp>
#include <kws/forward_proxy.hpp>
#include <kws/host_port.hpp>

#include <boost/asio/ip/address.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>

#include <algorithm>
#include <charconv>

namespace kws {
namespace {

using boost::system::error_code;

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The bytes of an IP address, IPv4-mapped IPv6 taken as the IPv4 address it is (as Go compares them).
std::optional<std::vector<unsigned char>> address_bytes(std::string_view text) {
  error_code ec;
  auto a = boost::asio::ip::make_address(std::string(text), ec);
  if (ec) return std::nullopt;
  if (a.is_v6() && a.to_v6().is_v4_mapped())
    a = boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, a.to_v6());
  if (a.is_v4()) {
    const auto b = a.to_v4().to_bytes();
    return std::vector<unsigned char>(b.begin(), b.end());
  }
  const auto b = a.to_v6().to_bytes();
  return std::vector<unsigned char>(b.begin(), b.end());
}

bool prefix_equal(const std::vector<unsigned char>& a, const std::vector<unsigned char>& b, unsigned bits) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; bits > 0; ++i, bits = bits > 8 ? bits - 8 : 0) {
    const unsigned take = std::min(bits, 8u);
    const auto mask = static_cast<unsigned char>(0xff << (8 - take));
    if ((a[i] & mask) != (b[i] & mask)) return false;
  }
  return true;
}

}  // namespace

// ---- proxy URLs -------------------------------------------------------------------------------------------

std::string proxy_url::authority() const {
  return join_host_port(host, port);
}

std::string proxy_url::authorization() const {
  if (!has_password) return {};
  return "Basic " + base64_encode(username + ":" + password);
}

proxy_url parse_proxy_url(std::string_view text, error_code& ec) {
  ec.clear();
  const auto fail = [&] {
    ec = errc::invalid_proxy_url;
    return proxy_url{};
  };
  text = trim(text);
  if (text.empty() || text.size() > 2048) return fail();
  if (std::any_of(text.begin(), text.end(),
                  [](char c) { return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f; }))
    return fail();
  // Without a scheme, http:// is assumed (as curl and Go do).
  std::string full =
      text.find("://") == std::string_view::npos ? "http://" + std::string(text) : std::string(text);
  // Go ends the user info at the last '@' of the authority, so that an unencoded '@' in a password works;
  // RFC 3986, and so Boost.URL, end it at the first. The earlier ones are escaped before parsing.
  const auto start = full.find("://") + 3;
  const auto auth_end = std::min(full.find_first_of("/?#", start), full.size());
  if (const auto at = full.rfind('@', auth_end - 1); at != std::string::npos && at >= start) {
    std::string info;
    for (char c : std::string_view(full).substr(start, at - start))
      info += c == '@' ? "%40" : std::string(1, c);
    full.replace(start, at - start, info);
  }
  // Boost.URL checks the grammar and the percent-escapes; what the dialer can use is checked here.
  const auto parsed = boost::urls::parse_uri(full);
  if (!parsed || parsed->scheme_id() != boost::urls::scheme::http || !parsed->has_authority()) return fail();
  const boost::urls::url_view& u = *parsed;
  proxy_url out;
  if (u.has_userinfo()) {
    out.username = u.user();
    out.has_password = u.has_password();
    out.password = u.password();
  }
  const auto hp = split_host_port(u.encoded_host_and_port());
  if (!hp || !is_dialable(*hp)) return fail();
  out.host = hp->host;
  out.port = hp->has_port ? hp->port : 80;
  return out;
}

std::string redact_proxy_url(std::string_view text) {
  const auto scheme_end = text.find("://");
  const auto start = scheme_end == std::string_view::npos ? 0 : scheme_end + 3;
  const auto auth_end = text.find_first_of("/?#", start);
  const auto at = text.substr(0, auth_end).rfind('@');
  if (at == std::string_view::npos || at < start) return std::string(text);
  return std::string(text.substr(0, start)) + "***" + std::string(text.substr(at));
}

std::string base64_encode(std::string_view bytes) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const unsigned v = static_cast<unsigned char>(bytes[i]) << 16 |
                       static_cast<unsigned char>(bytes[i + 1]) << 8 |
                       static_cast<unsigned char>(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += alphabet[(v >> s) & 63];
  }
  if (const auto rest = bytes.size() - i; rest > 0) {
    unsigned v = static_cast<unsigned char>(bytes[i]) << 16;
    if (rest == 2) v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += rest == 2 ? alphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

// ---- NO_PROXY ---------------------------------------------------------------------------------------------

no_proxy_list no_proxy_list::parse(std::string_view text) {
  no_proxy_list out;
  while (!text.empty()) {
    const auto comma = text.find(',');
    const auto raw = trim(text.substr(0, comma));
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    if (raw.empty()) continue;
    const auto item = lower(raw);
    if (item == "*") {
      out.all_ = true;
      continue;
    }
    if (item == "<-loopback>") {
      out.proxies_loopback_ = true;
      continue;
    }
    entry e;
    std::string_view rest = item;
    // A CIDR range: address/bits, with no port (as in Go).
    if (const auto slash = rest.find('/'); slash != std::string_view::npos) {
      auto bytes = address_bytes(rest.substr(0, slash));
      unsigned bits = 0;
      const auto b = rest.substr(slash + 1);
      auto [end, err] = std::from_chars(b.data(), b.data() + b.size(), bits);
      // An IPv4-mapped range (::ffff:10.0.0.0/104) is taken as the IPv4 range it is.
      if (bytes && bytes->size() == 4 && rest.find(':') != std::string_view::npos && bits >= 96) bits -= 96;
      if (!bytes || b.empty() || err != std::errc{} || end != b.data() + b.size() ||
          bits > bytes->size() * 8) {
        out.ignored_.emplace_back(raw);
        continue;
      }
      e.what = entry::kind::range;
      e.address = std::move(*bytes);
      e.prefix = bits;
      out.entries_.push_back(std::move(e));
      continue;
    }
    std::string host;
    if (const auto hp = split_host_port(rest); hp && !hp->host.empty() && !(hp->has_port && hp->port == 0)) {
      host = hp->host;
      e.port = hp->port;
    } else if (rest.find(':') != std::string_view::npos && address_bytes(rest)) {
      host = rest;  // a bare IPv6 address: no port can follow it without brackets
    } else {
      out.ignored_.emplace_back(raw);
      continue;
    }
    if (auto bytes = address_bytes(host)) {
      e.what = entry::kind::address;
      e.address = std::move(*bytes);
      e.prefix = static_cast<unsigned>(e.address.size() * 8);
      out.entries_.push_back(std::move(e));
      continue;
    }
    if (host.starts_with("*.")) host.erase(0, 1);
    e.and_itself = host.front() != '.';
    if (e.and_itself) host.insert(0, ".");
    if (host.size() < 2 || !is_plain_host_name(host) || host.find("..") != std::string::npos) {
      out.ignored_.emplace_back(raw);
      continue;
    }
    e.what = entry::kind::name;
    e.name = std::move(host);
    out.entries_.push_back(std::move(e));
  }
  return out;
}

bool no_proxy_list::matches(std::string_view host_in, std::uint16_t port) const {
  if (all_) return true;
  const auto host = lower(host_in);
  const auto bytes = address_bytes(host);
  for (const auto& e : entries_) {
    if (e.port != 0 && e.port != port) continue;
    switch (e.what) {
      case entry::kind::address:
      case entry::kind::range:
        if (bytes && prefix_equal(*bytes, e.address, e.prefix)) return true;
        break;
      case entry::kind::name:
        // Names match names only: a broker given by address is never taken for a domain.
        if (bytes) break;
        if (host.ends_with(e.name) || (e.and_itself && host == std::string_view(e.name).substr(1)))
          return true;
        break;
    }
  }
  return false;
}

bool is_loopback_host(std::string_view host) {
  if (lower(host) == "localhost") return true;
  const auto bytes = address_bytes(host);
  if (!bytes) return false;
  if (bytes->size() == 4) return (*bytes)[0] == 127;
  return std::all_of(bytes->begin(), bytes->end() - 1, [](unsigned char b) { return b == 0; }) &&
         bytes->back() == 1;
}

// ---- settings ---------------------------------------------------------------------------------------------

forward_proxy_settings forward_proxy_from_environment(const env_lookup& lookup) {
  // Go's getEnvAny: the upper-case name first, and an empty value counts as unset.
  const auto any = [&](const char* upper, const char* lower_name) {
    for (const char* name : {upper, lower_name}) {
      if (auto v = lookup(name); v && !v->empty()) return *v;
    }
    return std::string();
  };
  forward_proxy_settings s;
  s.http_proxy = any("HTTP_PROXY", "http_proxy");
  s.https_proxy = any("HTTPS_PROXY", "https_proxy");
  s.no_proxy = any("NO_PROXY", "no_proxy");
  s.direct_loopback = true;
  return s;
}

forward_proxy_rules forward_proxy_rules::compile(const forward_proxy_settings& settings, error_code& ec,
                                                 std::string* what) {
  ec.clear();
  forward_proxy_rules r;
  const auto one = [&](const std::string& url, const char* name, std::optional<proxy_url>& into) {
    if (url.empty() || ec) return;
    auto p = parse_proxy_url(url, ec);
    if (ec) {
      if (what) *what = std::string("forward proxy for ") + name + " '" + redact_proxy_url(url) + "'";
      return;
    }
    into = std::move(p);
  };
  one(settings.http_proxy, "ws://", r.http_);
  one(settings.https_proxy, "wss://", r.https_);
  if (ec) return {};
  r.no_proxy_ = no_proxy_list::parse(settings.no_proxy);
  r.direct_loopback_ = settings.direct_loopback && !r.no_proxy_.proxies_loopback();
  return r;
}

const proxy_url* forward_proxy_rules::for_url(const ws_url& url) const {
  const auto& p = url.secure ? https_ : http_;
  if (!p) return nullptr;
  if (direct_loopback_ && is_loopback_host(url.host)) return nullptr;
  if (no_proxy_.matches(url.host, url.port)) return nullptr;
  return &*p;
}

// ---- the CONNECT exchange ---------------------------------------------------------------------------------

std::string connect_request(const proxy_url& proxy, std::string_view target, std::string_view user_agent) {
  std::string r;
  r.reserve(256);
  r.append("CONNECT ").append(target).append(" HTTP/1.1\r\n");
  r.append("Host: ").append(target).append("\r\n");
  if (!user_agent.empty()) r.append("User-Agent: ").append(printable(user_agent, 256)).append("\r\n");
  if (const auto auth = proxy.authorization(); !auth.empty())
    r.append("Proxy-Authorization: ").append(auth).append("\r\n");
  r.append("\r\n");
  return r;
}

error_code connect_status_error(unsigned status) {
  if (status >= 200 && status <= 299) return {};
  // 407 is the standard answer; tinyproxy answers wrong credentials with 401, and no tunnel exists yet that
  // an origin server's 401 could come through.
  if (status == 407 || status == 401) return errc::proxy_auth_required;
  return errc::proxy_refused;
}

std::string printable(std::string_view text, std::size_t max) {
  std::string out;
  for (char c : text) {
    if (out.size() >= max) break;
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  return out;
}

}  // namespace kws
