// The gateway's decisions about one upgrade request, with no I/O: who may connect (bearer tokens, browser
// origins) and where the path leads (a bootstrap server, or one broker by node id); and the files behind
// them, read at start.
#pragma once

#include <kws/kafka/sasl.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kws::gateway {

/// Accepted bearer tokens, kept only as SHA-256 digests and compared in constant time.
class token_set {
 public:
  token_set() = default;
  /// One token per non-empty line (surrounding blanks ignored). Throws std::runtime_error when the file
  /// cannot be read or holds no token.
  static token_set from_file(const std::string& path);
  explicit token_set(const std::vector<std::string>& tokens);

  bool empty() const { return digests_.empty(); }
  /// True when `authorization` is `Bearer <one of the tokens>`. The time taken does not depend on which
  /// byte of a token differs, nor on which token matched.
  bool allows(std::string_view authorization) const;
  /// The same check for the token alone (as sent in a bearer subprotocol).
  bool allows_token(std::string_view token) const;

 private:
  std::vector<std::string> digests_;
};

/// What an upgrade request offers in its Sec-WebSocket-Protocol headers (all of them, comma-separated
/// values). Browsers cannot set an Authorization header on a WebSocket, so a token may come as the
/// subprotocol `bearer.<token in base64url>`, offered together with `kafka`, which the gateway answers with.
struct subprotocol_offer {
  bool kafka = false;
  /// The token of a `bearer.` subprotocol, decoded.
  std::optional<std::string> bearer;
  /// Why the offer is refused, empty when it is not: more than one bearer subprotocol, one that is not
  /// base64url, or one without `kafka`. Never quotes the token.
  std::string error;
};
subprotocol_offer parse_subprotocols(const std::vector<std::pair<std::string, std::string>>& headers);

/// True when a request may come from `origin` (the Origin header, absent for non-browser clients): no list
/// means any; a request without Origin is not a browser's and is let through.
bool origin_allowed(const std::vector<std::string>& allowed, const std::string* origin);

/// Where an upgrade request's path leads: `/` and `/kafka` to a bootstrap server, `/kafka/{node_id}` to that
/// broker. A query string is ignored. nullopt for any other path.
struct route {
  bool bootstrap = true;
  std::int32_t node_id = -1;
};
std::optional<route> parse_route(std::string_view target);

/// Brokers told apart by host name: `--advertise`'s host with `{node_id}` in it
/// (kafka-{node_id}.gw.example.com). A name matches when it is the pattern with one node id in place of every
/// `{node_id}`, whatever its case.
class host_pattern {
 public:
  host_pattern() = default;
  /// Without `{node_id}` the pattern names no broker.
  explicit host_pattern(std::string pattern);
  bool empty() const { return pattern_.empty(); }
  /// The node id `host` names (a plain decimal number, no sign, no leading zero), if it matches.
  std::optional<std::int32_t> node_of(std::string_view host) const;

 private:
  std::string pattern_;
};

/// The host of a Host header's value: its port removed (an IPv6 address keeps its brackets).
std::string_view host_without_port(std::string_view host_header);

/// Where an upgrade leads, from its path, its Host header and (wss) the TLS server name (SNI); or the status
/// and the reason it is refused with. A name that matches `names` picks the broker of that node id: at `/`
/// and
/// `/kafka` it replaces the bootstrap server, at `/kafka/{node_id}` it must be that node. With an SNI name
/// the Host header must name the same node (or, like it, none): a mismatch is refused with 421.
struct routing {
  std::optional<route> to{};
  int status = 0;
  std::string why{};
};
routing route_request(const host_pattern& names, std::string_view target, const std::string* host,
                      std::string_view server_name);

/// The credentials of --upstream-sasl-file (kws::kafka::sasl::parse_credentials). Throws
/// std::runtime_error naming the file and the problem (the system's reason when it cannot be read, the line
/// when it is malformed); never a password.
kafka::sasl::credentials load_upstream_credentials(const std::string& path);

}  // namespace kws::gateway
