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

/// Parses `host:port`, `[v6]:port`, or a `ws://`/`wss://` URL. `tls` picks the scheme of the `host:port` form
/// and must agree with nothing else. Anything else sets `ec` to `errc::invalid_address`.
ws_url parse_address(std::string_view address, bool tls, boost::system::error_code& ec);

/// As above; throws boost::system::system_error.
ws_url parse_address(std::string_view address, bool tls);

}  // namespace kws
