// Broker addresses: `host:port` (the scheme comes from the TLS setting, as in the original Go dialer) or a
// full `ws://` / `wss://` URL with an optional path.
#pragma once

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace kws {

struct ws_url {
  bool secure = false;       ///< wss
  std::string host;          ///< without IPv6 brackets
  std::uint16_t port = 0;    ///< explicit, or 80/443 from the scheme of a URL
  std::string target = "/";  ///< path and query, always starting with '/'

  /// `host:port` as the HTTP Host header and logs want it (IPv6 in brackets).
  std::string authority() const;
  /// `ws://host:port/target`.
  std::string str() const;
};

/// Parses `host:port`, `[v6]:port`, or a `ws://`/`wss://` URL (with Boost.URL: path and query must be valid
/// RFC 3986, percent-escapes included; they are kept encoded). `tls` picks the scheme of the `host:port` form
/// and must agree with nothing else. A host is a name of letters, digits, `-`, `.` and `_`, an IPv4 address,
/// or an IPv6 address in brackets; a port is 1 to 65535; a URL has no user info. Anything else sets `ec` to
/// `errc::invalid_address`.
ws_url parse_address(std::string_view address, bool tls, boost::system::error_code& ec);

/// As above; throws boost::system::system_error.
ws_url parse_address(std::string_view address, bool tls);

/// A broker URL template: the WebSocket URL that reaches a broker which Kafka advertises as host:port with a
/// node id. Placeholders `{host}` (IPv6 addresses in brackets), `{port}` and `{node_id}`; the default,
/// `ws://{host}:{port}/` (or `wss://` with TLS), is what the original dialer made of `host:port`.
class url_template {
 public:
  /// Checks the template: only the three placeholders, and expanding it yields a ws:// or wss:// URL.
  /// Sets `ec` to errc::invalid_address otherwise.
  static url_template parse(std::string_view text, boost::system::error_code& ec);
  /// As above; throws boost::system::system_error.
  static url_template parse(std::string_view text);
  /// `ws://{host}:{port}/`, or `wss://{host}:{port}/` when `tls`.
  static url_template default_for(bool tls);

  std::string expand(std::string_view host, std::int32_t port, std::int32_t node_id) const;
  /// True when brokers with the same host and port can still reach different URLs (by node id).
  bool uses_node_id() const { return text_.find("{node_id}") != std::string::npos; }
  const std::string& str() const { return text_; }

 private:
  explicit url_template(std::string text) : text_(std::move(text)) {}
  std::string text_;
};

}  // namespace kws
