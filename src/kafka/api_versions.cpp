#include <kws/kafka/api_versions.hpp>

#include "frame_edit.hpp"

#include <stdexcept>

namespace kws::kafka {

namespace {

// ApiVersionsResponse.json: "flexibleVersions": "3+".
constexpr std::int16_t first_flexible = 3;
constexpr auto unsupported_version = static_cast<std::int16_t>(error_code::unsupported_version);

struct parsed_entry {
  api_version_range range;
  std::size_t begin = 0;   ///< frame offset of the entry
  std::size_t end = 0;     ///< one past its last byte (its tagged fields included)
  std::size_t max_at = 0;  ///< frame offset of its max version
};

struct parsed_frame {
  std::int32_t correlation_id = 0;
  std::int16_t error_code = 0;
  std::int16_t body_version = 0;
  std::size_t count_at = 0;  ///< frame offsets of the array count
  std::size_t count_end = 0;
  std::vector<parsed_entry> entries;
  std::int32_t throttle_time_ms = 0;
};

// ApiVersions Response (v0) => error_code [api_key min_version max_version]
// v1+ adds throttle_time_ms; v3+ is flexible: compact array, tagged fields per entry and at the end.
bool parse_body(bytes_view frame, std::size_t body_at, std::int16_t v, parsed_frame& p,
                boost::system::error_code& ec) {
  const bool flexible = v >= first_flexible;
  reader r(frame);
  r.skip(body_at);
  p.error_code = r.int16();
  p.count_at = r.position();
  // An entry is three int16, plus at least one byte of tagged fields when flexible.
  const std::size_t min_entry = flexible ? 7 : 6;
  const std::int32_t n = flexible ? r.compact_array_count(min_entry) : r.array_count(min_entry);
  p.count_end = r.position();
  if (r.ok() && n < 0) r.fail(wire_errc::invalid_length);  // ApiKeys is not nullable
  p.entries.clear();
  for (std::int32_t i = 0; i < n && r.ok(); ++i) {
    parsed_entry e;
    e.begin = r.position();
    e.range.key = static_cast<api_key>(r.int16());
    e.range.min_version = r.int16();
    e.max_at = r.position();
    e.range.max_version = r.int16();
    if (flexible) r.skip_tagged_fields();
    e.end = r.position();
    if (r.ok()) p.entries.push_back(e);
  }
  p.throttle_time_ms = v >= 1 ? r.int32() : 0;
  if (flexible) r.skip_tagged_fields();
  r.expect_end();
  if (!r.ok()) {
    ec = r.error();
    return false;
  }
  p.body_version = v;
  return true;
}

bool parse_frame(std::int16_t request_version, bytes_view frame, parsed_frame& p,
                 boost::system::error_code& ec) {
  ec.clear();
  if (request_version < 0) {
    ec = wire_errc::unsupported_version;
    return false;
  }
  // Response header v0 whatever the version (KIP-511).
  reader r = detail::open_response_frame(frame, 0);
  if (!r.ok()) {
    ec = r.error();
    return false;
  }
  const std::size_t body_at = r.position();
  p.correlation_id = reader(frame.subspan(detail::size_prefix_bytes)).int32();
  // The error code leads every layout, so it can choose one before anything else is read.
  reader peek(frame.subspan(body_at));
  const std::int16_t err = peek.int16();
  if (!peek.ok()) {
    ec = peek.error();
    return false;
  }
  if (err == unsupported_version) {
    // KIP-511 brokers answer in v0; older ones may use the request's layout, so try that second.
    if (parse_body(frame, body_at, 0, p, ec)) return true;
    if (request_version == 0 || request_version > max_api_versions_version) return false;
    boost::system::error_code second;
    if (!parse_body(frame, body_at, request_version, p, second)) return false;  // report the v0 error
    ec.clear();
    return true;
  }
  if (request_version > max_api_versions_version) {
    ec = wire_errc::unsupported_version;
    return false;
  }
  return parse_body(frame, body_at, request_version, p, ec);
}

std::vector<unsigned char> encode(std::int16_t version, std::int32_t correlation_id,
                                  std::span<const api_version_range> ranges, std::int16_t error_code) {
  if (ranges.size() > 0x7fff) throw std::length_error("too many ApiVersions entries");
  const bool flexible = version >= first_flexible;
  std::vector<unsigned char> out;
  writer w(out);
  const std::size_t size_at = w.placeholder_int32();
  w.int32(correlation_id);  // response header v0, also for flexible versions (KIP-511)
  w.int16(error_code);
  const auto n = static_cast<std::int32_t>(ranges.size());
  if (flexible)
    w.compact_array_count(n);
  else
    w.array_count(n);
  for (const auto& range : ranges) {
    w.int16(static_cast<std::int16_t>(range.key));
    w.int16(range.min_version);
    w.int16(range.max_version);
    if (flexible) w.empty_tagged_fields();
  }
  if (version >= 1) w.int32(0);  // throttle_time_ms
  if (flexible) w.empty_tagged_fields();
  w.patch_int32(size_at, static_cast<std::int32_t>(out.size() - detail::size_prefix_bytes));
  return out;
}

}  // namespace

std::vector<unsigned char> encode_api_versions_response(std::int16_t request_version,
                                                        std::int32_t correlation_id,
                                                        std::span<const api_version_range> ranges,
                                                        std::int16_t error_code) {
  if (request_version < 0 || request_version > max_api_versions_version)
    return encode_api_versions_unsupported(correlation_id);
  return encode(request_version, correlation_id, ranges, error_code);
}

std::vector<unsigned char> encode_api_versions_unsupported(std::int32_t correlation_id) {
  const api_version_range own{api_key::api_versions, 0, max_api_versions_version};
  return encode(0, correlation_id, std::span(&own, 1), unsupported_version);
}

api_versions_response decode_api_versions_response(std::int16_t request_version, bytes_view frame,
                                                   boost::system::error_code& ec) {
  parsed_frame p;
  if (!parse_frame(request_version, frame, p, ec)) return {};
  api_versions_response out;
  out.correlation_id = p.correlation_id;
  out.error_code = p.error_code;
  out.throttle_time_ms = p.throttle_time_ms;
  out.body_version = p.body_version;
  out.ranges.reserve(p.entries.size());
  for (const auto& e : p.entries) out.ranges.push_back(e.range);
  return out;
}

bool clamp_api_versions(std::int16_t request_version, bytes_view frame, const api_version_limit& limit,
                        std::vector<unsigned char>& out, boost::system::error_code& ec) {
  ec.clear();
  // An answer with an error (UNSUPPORTED_VERSION above all) only tells the client which ApiVersions versions
  // to retry with; it lists nothing a client would pick versions of other APIs from. So it is not parsed:
  // brokers differ in how they lay it out (librdkafka 2.0's mock broker sends a compact count in a v0 body).
  reader head(frame);
  (void)head.int32();  // size
  (void)head.int32();  // correlation id
  const auto error = head.int16();
  if (head.ok() && error != 0) return false;
  parsed_frame p;
  if (!parse_frame(request_version, frame, p, ec)) return false;
  std::vector<detail::patch> patches;
  std::size_t kept = 0;
  for (const auto& e : p.entries) {
    const std::optional<std::int16_t> max = limit ? limit(e.range.key) : std::nullopt;
    if (!max || e.range.max_version <= *max) {
      ++kept;
      continue;
    }
    if (e.range.min_version > *max) {
      // No version left that the caller allows: the entry goes, tagged fields and all.
      patches.push_back({e.begin, e.end - e.begin, {}});
      continue;
    }
    ++kept;
    std::vector<unsigned char> lowered;
    writer(lowered).int16(*max);
    patches.push_back({e.max_at, 2, std::move(lowered)});
  }
  if (patches.empty()) return false;
  if (kept != p.entries.size()) {
    std::vector<unsigned char> count;
    writer w(count);
    if (p.body_version >= first_flexible)
      w.compact_array_count(static_cast<std::int32_t>(kept));
    else
      w.array_count(static_cast<std::int32_t>(kept));
    patches.push_back({p.count_at, p.count_end - p.count_at, std::move(count)});
  }
  return detail::apply_patches(frame, patches, out, ec);
}

api_versions_request parse_api_versions_request(std::int16_t version, bytes_view body,
                                                boost::system::error_code& ec) {
  ec.clear();
  if (version < 0 || version > max_api_versions_version) {
    ec = wire_errc::unsupported_version;
    return {};
  }
  api_versions_request q;
  reader r(body);
  // ApiVersionsRequest.json: ClientSoftwareName and ClientSoftwareVersion from v3, the first flexible one.
  if (version >= first_flexible) {
    q.client_software_name = r.compact_string();
    q.client_software_version = r.compact_string();
    r.skip_tagged_fields();
  }
  r.expect_end();
  if (!r.ok()) {
    ec = r.error();
    return {};
  }
  return q;
}

}  // namespace kws::kafka
