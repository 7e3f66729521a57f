// `host:port` as flags, broker lists and NO_PROXY entries write it: the one splitter behind the library's
// address and proxy parsers, the librdkafka hook's broker names and the apps' listen and advertise flags.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kws {

struct host_port {
  std::string host;        ///< without IPv6 brackets; may be empty (`:8787`), callers decide
  bool has_port = false;   ///< a port was written (`host` alone leaves it false)
  std::uint16_t port = 0;  ///< 0..65535 as written; 0 only where callers accept it (listeners)
  bool is_ipv6 = false;    ///< the host was an IPv6 address in brackets
};

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`. The brackets must hold an IPv6 address (checked with
/// Boost.URL's grammar), and an IPv6 address needs them: `::1:9092` is refused, since its port cannot be told
/// apart (Go's net.SplitHostPort says the same). A port is 1 to 5 digits, at most 65535. What a host outside
/// brackets may hold is left to the caller (a DNS name, an IPv4 address, a `{node_id}` template). nullopt
/// on anything else.
std::optional<host_port> split_host_port(std::string_view text);

/// The port of `host:port` text: 1 to 5 digits, at most 65535 (0 included).
std::optional<std::uint16_t> parse_port_number(std::string_view digits);

/// `host:port`, the host in brackets when it holds a colon (an IPv6 address) and is not bracketed yet.
std::string join_host_port(std::string_view host, std::uint32_t port);

/// True for names made of letters, digits, `-`, `.` and `_` only (what DNS names and IPv4 addresses use);
/// false for an empty one.
bool is_plain_host_name(std::string_view host);

/// A host and port a dialer can reach: a plain name or IPv4 address, or an IPv6 address, and a port, where
/// one is written, that is not 0.
bool is_dialable(const host_port& hp);

}  // namespace kws
