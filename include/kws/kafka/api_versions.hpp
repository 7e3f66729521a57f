// ApiVersions (key 18) with no I/O: encoding a broker's answer, decoding one, and clamping the versions that
// a broker advertises. Layouts: https://kafka.apache.org/protocol#The_Messages_ApiVersions; v3+ is flexible
// (KIP-482, KIP-511). Two rules set ApiVersions apart from every other API (KIP-511):
//  - its response header is always v0 (the correlation id only), even for flexible versions, so that a client
//    can read it before it knows what the broker speaks;
//  - a broker that does not know the request's version answers UNSUPPORTED_VERSION (35) with a v0 body,
//  whatever
//    the request version, listing the ApiVersions range it does speak. Decoders read the error code first.
#pragma once

#include <kws/kafka/api.hpp>
#include <kws/kafka/wire.hpp>

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace kws::kafka {

/// One entry of an ApiVersions answer: the versions of `key` that the broker speaks, both ends inclusive.
struct api_version_range {
  api_key key{};
  std::int16_t min_version = 0;
  std::int16_t max_version = 0;

  friend bool operator==(const api_version_range&, const api_version_range&) = default;
};

/// Highest ApiVersions version whose layout this code knows (Apache Kafka 4.x: "validVersions": "0-5").
inline constexpr std::int16_t max_api_versions_version = 5;

/// Whole response frame (size, header v0, body) answering an ApiVersions request of `request_version` with
/// `ranges`, `error_code`, throttle time 0 and empty tagged fields (v3+). A request version outside
/// 0..max_api_versions_version gets the KIP-511 answer of encode_api_versions_unsupported instead.
std::vector<unsigned char> encode_api_versions_response(std::int16_t request_version,
                                                        std::int32_t correlation_id,
                                                        std::span<const api_version_range> ranges,
                                                        std::int16_t error_code = 0);

/// The KIP-511 answer to an ApiVersions request of a version this side does not know: a v0 body with
/// UNSUPPORTED_VERSION (35) that lists only ApiVersions itself, 0..max_api_versions_version.
std::vector<unsigned char> encode_api_versions_unsupported(std::int32_t correlation_id);

/// A decoded ApiVersions response frame.
struct api_versions_response {
  std::int32_t correlation_id = 0;
  std::int16_t error_code = 0;
  std::vector<api_version_range> ranges;
  std::int32_t throttle_time_ms = 0;  ///< 0 when the layout has none (v0)
  /// Version whose layout the body had: the request version, or 0 for the KIP-511 error answer.
  std::int16_t body_version = 0;
};

/// Decodes a whole ApiVersions response frame answering a request of `request_version`. Top-level tagged
/// fields (SupportedFeatures, FinalizedFeatures, ...) and per-entry tagged fields are checked and skipped.
/// An UNSUPPORTED_VERSION answer is read in the v0 layout first (KIP-511), then in the request's own. Sets
/// `ec` (wire_errc) on a frame that is neither; wire_errc::unsupported_version for a request version above
/// max_api_versions_version whose answer is not the KIP-511 one.
api_versions_response decode_api_versions_response(std::int16_t request_version, bytes_view frame,
                                                   boost::system::error_code& ec);

/// The highest version of an API that the caller lets clients use, or std::nullopt to leave that API alone.
using api_version_limit = std::function<std::optional<std::int16_t>(api_key)>;

/// Rewrites an ApiVersions response frame (answering a request of `request_version`) so that no API is
/// advertised above `limit(key)`: a larger max version is lowered to the limit, and an entry whose min
/// version is above its limit is removed. Everything else is kept byte for byte (per-entry and top-level
/// tagged fields such as SupportedFeatures/FinalizedFeatures, throttle time, error code); the array count and
/// the size prefix are re-encoded. Returns true and puts the whole new frame in `out` when something changed;
/// false, leaving `out` alone, when nothing did or on a malformed frame, which also sets `ec` (never partial
/// output).
bool clamp_api_versions(std::int16_t request_version, bytes_view frame, const api_version_limit& limit,
                        std::vector<unsigned char>& out, boost::system::error_code& ec);

/// The body of an ApiVersions request (v3+; earlier versions have no fields).
struct api_versions_request {
  std::string_view client_software_name;  ///< views into the parsed bytes; empty below v3
  std::string_view client_software_version;
};

/// Parses an ApiVersions request body (the bytes after the request header, see request_header::header_bytes)
/// of `version` and checks that nothing follows it. v3+: two compact strings, then tagged fields. Sets `ec`
/// on malformed input, and wire_errc::unsupported_version above max_api_versions_version.
api_versions_request parse_api_versions_request(std::int16_t version, bytes_view body,
                                                boost::system::error_code& ec);

}  // namespace kws::kafka
