// HTTP forward proxies: which one, if any, carries the connection to a broker (set explicitly, or from the
// variables HTTP_PROXY, HTTPS_PROXY and NO_PROXY read the way Go reads them), and the CONNECT request that
// opens a tunnel through one. Pure functions, no I/O: the dialer (src/ws/dialer.cpp) does the exchange.
#pragma once

#include <kws/address.hpp>

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kws {

/// A forward proxy as its URL names it.
struct proxy_url {
  std::string host;         ///< without IPv6 brackets
  std::uint16_t port = 80;  ///< explicit, or 80 (as Go; curl would take 1080)
  std::string username;     ///< percent-decoded
  std::string password;     ///< percent-decoded
  bool has_password = false;

  /// `host:port` (IPv6 in brackets): what logs and errors show of a proxy. Never the credentials.
  std::string authority() const;
  /// The Proxy-Authorization value, `Basic base64(user:password)`, when the URL has a password (Go's
  /// WebSocket dialer sends it only then); empty otherwise.
  std::string authorization() const;
};

/// Parses `[http://][user[:password]@]host[:port][/path]`: without a scheme, http:// is assumed (as curl and
/// Go do); the user info is percent-decoded; a path is ignored. `https://` (TLS to the proxy), `socks5://`
/// and anything malformed set `ec` to errc::invalid_proxy_url.
proxy_url parse_proxy_url(std::string_view text, boost::system::error_code& ec);

/// `text` with its user info replaced by `***`, for messages about a value that may hold a password.
std::string redact_proxy_url(std::string_view text);

/// Base64 (RFC 4648, with padding).
std::string base64_encode(std::string_view bytes);

/// A NO_PROXY list: the brokers reached directly although a forward proxy is set.
///
/// Comma-separated entries, case-insensitive, blanks around them ignored:
/// - `*`: every host;
/// - `example.com`: that name and every name under it; `.example.com` and `*.example.com`: only the names
///   under it (Go's rule; curl matches example.com itself too);
/// - an IP address (`10.1.2.3`, `::1`) or a CIDR range (`10.0.0.0/8`, `fd00::/8`), matched only against
///   brokers given by address: names are never resolved to decide;
/// - any of these with `:port` (`[v6]:port` for an IPv6 address): only that port;
/// - `<-loopback>` (Chromium's syntax): send `localhost` and loopback addresses through the proxy too, which
///   settings from the environment otherwise never do.
/// Entries that fit none of these are kept in `ignored()` and match nothing.
class no_proxy_list {
 public:
  no_proxy_list() = default;
  static no_proxy_list parse(std::string_view text);

  /// True when the broker at `host` (a name, or an address without brackets) and `port` goes direct.
  bool matches(std::string_view host, std::uint16_t port) const;
  /// The list holds `<-loopback>`.
  bool proxies_loopback() const { return proxies_loopback_; }
  const std::vector<std::string>& ignored() const { return ignored_; }
  bool empty() const { return !all_ && entries_.empty(); }

 private:
  struct entry {
    enum class kind { name, address, range } what = kind::name;
    std::string name;                    ///< lower-case; leading '.' when only names under it match
    bool and_itself = false;             ///< `example.com` also matches example.com itself
    std::vector<unsigned char> address;  ///< 4 or 16 bytes (IPv4-mapped IPv6 taken as IPv4)
    unsigned prefix = 0;                 ///< bits of `address` that must match (ranges)
    std::uint16_t port = 0;              ///< 0: any port
  };
  bool all_ = false;
  bool proxies_loopback_ = false;
  std::vector<entry> entries_;
  std::vector<std::string> ignored_;
};

/// True for `localhost` and loopback addresses (127.0.0.0/8, ::1, IPv4-mapped 127.x): the brokers that
/// settings from the environment reach directly, as Go does.
bool is_loopback_host(std::string_view host);

/// Where the dialer's connections go: straight to the broker, or through an HTTP forward proxy that opens a
/// tunnel with CONNECT. The default goes direct. TLS (SNI, certificate and host-name checks) and the
/// WebSocket upgrade always concern the broker, inside the tunnel.
struct forward_proxy_settings {
  /// Proxy URL for `ws://` brokers (see parse_proxy_url); empty: direct.
  std::string http_proxy{};
  /// Proxy URL for `wss://` brokers; empty: direct. Neither falls back on the other (as in curl and Go).
  std::string https_proxy{};
  /// Brokers reached directly (see no_proxy_list).
  std::string no_proxy{};
  /// Reach `localhost` and loopback addresses directly whatever the rest says, unless `no_proxy` holds
  /// `<-loopback>`: Go's rule for the environment. Off for a proxy set explicitly (as Go's ProxyURL).
  bool direct_loopback = false;

  /// Every broker, ws:// and wss:// alike, through `url`.
  static forward_proxy_settings through(std::string url) {
    return {.http_proxy = url, .https_proxy = url, .no_proxy = {}, .direct_loopback = false};
  }
  bool empty() const { return http_proxy.empty() && https_proxy.empty(); }
};

/// Looks up an environment variable: its value, or nullopt when it is not set.
using env_lookup = std::function<std::optional<std::string>(const std::string& name)>;

/// The settings that Go's ProxyFromEnvironment (which the original shim's dialer used) reads: HTTP_PROXY,
/// else http_proxy, for ws://; HTTPS_PROXY, else https_proxy, for wss://; NO_PROXY, else no_proxy. An empty
/// value counts as unset. Loopback goes direct. The caller does the reading (only programs read the
/// environment).
forward_proxy_settings forward_proxy_from_environment(const env_lookup& lookup);

/// Settings checked and parsed once: the proxy, if any, for each broker.
class forward_proxy_rules {
 public:
  forward_proxy_rules() = default;
  /// Sets `ec` to errc::invalid_proxy_url when a URL does not parse; `what` then says which one, without
  /// its credentials.
  static forward_proxy_rules compile(const forward_proxy_settings& settings, boost::system::error_code& ec,
                                     std::string* what = nullptr);

  /// The forward proxy for the broker at `url`, or nullptr for a direct connection.
  const proxy_url* for_url(const ws_url& url) const;
  bool empty() const { return !http_ && !https_; }

 private:
  std::optional<proxy_url> http_;
  std::optional<proxy_url> https_;
  no_proxy_list no_proxy_;
  bool direct_loopback_ = false;
};

/// The request that asks `proxy` for a tunnel to `target` (host:port, IPv6 in brackets): the CONNECT line,
/// Host, User-Agent and, when the URL has a password, Proxy-Authorization.
std::string connect_request(const proxy_url& proxy, std::string_view target, std::string_view user_agent);

/// The error for a CONNECT answered with `status`: none for 2xx, errc::proxy_auth_required for 407 (and 401,
/// which tinyproxy sends for wrong credentials), errc::proxy_refused for anything else.
boost::system::error_code connect_status_error(unsigned status);

/// A reason phrase or other text from a peer, fit for a log line: printable ASCII only, at most `max` bytes.
std::string printable(std::string_view text, std::size_t max = 120);

}  // namespace kws
