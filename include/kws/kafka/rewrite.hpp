// Rewriting the broker addresses that Kafka responses advertise, with no I/O, so that a proxy can point
// clients at its own listeners (see docs/architecture.md). Handled: Metadata (brokers), FindCoordinator (the
// single coordinator of v0-v3 and the batched Coordinators of v4+, KIP-699), DescribeCluster (brokers,
// KIP-700) and the NodeEndpoints tagged field of Produce v10+ and Fetch v16+ (KIP-951). Layouts follow the
// JSON schemas in apache/kafka clients/src/main/resources/common/message/ and
// https://kafka.apache.org/protocol#protocol_messages.
#pragma once

#include <kws/kafka/api.hpp>
#include <kws/kafka/wire.hpp>

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kws::kafka {

/// One broker as a response advertises it; host is a view into the response.
struct advertised_broker {
  std::int32_t node_id = -1;
  std::string_view host;
  std::int32_t port = 0;
};

/// Where clients should reach that broker instead.
struct broker_endpoint {
  std::string host;
  std::int32_t port = 0;
};

/// The replacement for one advertised broker; std::nullopt keeps the entry as it is. It is a decision, asked
/// for on the relay's thread while the response waits: it should not wait on I/O (the proxy's own binds a
/// listener on a broker's first sight only, a few non-blocking system calls; see docs/architecture.md). It
/// may fail (say no listener can be opened): then it sets `ec`, and the rewrite fails as a whole.
using broker_mapper =
    std::function<std::optional<broker_endpoint>(const advertised_broker&, boost::system::error_code& ec)>;

/// Highest version of `key` whose responses rewrite_response fully understands, for the APIs whose responses
/// carry broker addresses (Metadata, FindCoordinator, DescribeCluster, Produce, Fetch); nullopt for others.
/// A proxy clamps what it advertises in ApiVersions to these (see clamp_api_versions).
std::optional<std::int16_t> max_rewritable_version(api_key key) noexcept;

/// True when a response to `key` at `version` may carry broker addresses that rewrite_response handles
/// (Metadata 0..max, FindCoordinator 0..max, DescribeCluster 0..max, Produce from 10, Fetch from 16).
bool carries_broker_addresses(api_key key, std::int16_t version) noexcept;

/// Rewrites every broker address in one response frame (4-byte size header + response header + body) to a
/// request of `key` at `version`. Returns true and puts the whole new frame in `out` when something changed;
/// returns false and leaves `out` alone when nothing needed changing; on a frame that does not parse as that
/// response, or a mapper failure, sets `ec` and returns false (never partial output).
///
/// The whole frame is parsed and checked before `map` is first called, so a malformed frame never reaches the
/// mapper. Node ids stay as the broker gave them; entries with node id -1 or an empty host are left alone
/// (`map` is not called). A mapper answer equal to the advertised address is no change. Everything but the
/// rewritten host and port is copied byte for byte (unknown tagged fields at every level, record data); the
/// compact lengths, tagged-field sizes and the size prefix that change are re-encoded.
///
/// Produce below v10 and Fetch below v16 carry no addresses: false, and the frame is not examined. Any other
/// key or version that carries_broker_addresses rejects sets wire_errc::unsupported_version.
bool rewrite_response(api_key key, std::int16_t version, bytes_view frame, const broker_mapper& map,
                      std::vector<unsigned char>& out, boost::system::error_code& ec);

/// Every broker address in one response frame to `key` at `version`, in frame order, from the same parse and
/// checks as rewrite_response (entries with node id -1 or an empty host included); hosts are views into
/// `frame`. On a frame that does not parse as that response, sets `ec` and returns none. Produce below v10
/// and Fetch below v16 carry none; any other key or version that carries_broker_addresses rejects sets
/// wire_errc::unsupported_version.
std::vector<advertised_broker> advertised_brokers(api_key key, std::int16_t version, bytes_view frame,
                                                  boost::system::error_code& ec);

}  // namespace kws::kafka
