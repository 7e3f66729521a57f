#include <kws/address.hpp>
#include <kws/errc.hpp>
#include <kws/host_port.hpp>

#include <boost/system/system_error.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>

#include <algorithm>

namespace kws {

std::string ws_url::authority() const {
  return join_host_port(host, port);
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

  if (address.find("://") == std::string_view::npos) {
    // The Go dialer's form: host:port, scheme chosen by the TLS flag.
    const auto hp = split_host_port(address);
    if (!hp || !is_dialable(*hp) || !hp->has_port) return fail();
    url.secure = tls;
    url.host = hp->host;
    url.port = hp->port;
    return url;
  }

  // Boost.URL checks the grammar (RFC 3986): scheme, authority, a path and query of valid characters and
  // percent-escapes. What a dialer can use is checked here: ws or wss, no user info, a usable host and port.
  // RFC 3986 keeps '[' and ']' for IPv6 hosts, but WHATWG URLs and servers take them in a path or query,
  // where a template's {host} puts an IPv6 broker (?h=[fd00::1]): Boost.URL sees them there escaped.
  const auto path_start = std::min(address.find_first_of("/?#", address.find("://") + 3), address.size());
  std::string checked(address.substr(0, path_start));
  for (char c : address.substr(path_start)) {
    if (c == '[' || c == ']')
      checked += c == '[' ? "%5B" : "%5D";
    else
      checked += c;
  }
  const auto parsed = boost::urls::parse_uri(checked);
  if (!parsed) return fail();
  const boost::urls::url_view& u = *parsed;
  if (u.scheme_id() == boost::urls::scheme::ws) {
    url.secure = false;
  } else if (u.scheme_id() == boost::urls::scheme::wss) {
    url.secure = true;
  } else {
    return fail();
  }
  if (!u.has_authority() || u.has_userinfo()) return fail();
  // The host a resolver takes: Boost.URL would also pass percent-escapes and sub-delimiters in a name.
  const auto hp = split_host_port(u.encoded_host_and_port());
  if (!hp || !is_dialable(*hp)) return fail();
  url.host = hp->host;
  url.port = hp->has_port ? hp->port : (url.secure ? 443 : 80);
  // Path and query as written (percent-escapes kept), without the fragment: the request line's target.
  const auto target = address.substr(path_start, address.find('#', path_start) - path_start);
  url.target = target.starts_with('/') ? "" : "/";
  url.target.append(target);
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
      const bool v6 = host.find(':') != std::string_view::npos && !host.starts_with('[');
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
