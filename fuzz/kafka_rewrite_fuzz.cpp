// kws::kafka::rewrite_response and kws::kafka::clamp_api_versions over arbitrary frames. The first four bytes
// choose the API, its version, a broker mapper and the ApiVersions limits; the rest is the response frame.
//  - rewrite_response: parsing does not depend on the mapper (same error for every mapper, and a malformed
//    frame never reaches it); the mapper sees the same endpoints in the same order whatever it answers; on a
//    change the output's size prefix matches its length, it parses again, it advertises exactly what the
//    mapper answered, and rewriting it again with the same mapper changes nothing; on failure or no change
//    `out` is untouched.
//  - clamp_api_versions: an answer with an error code passes unparsed and unchanged; otherwise it fails
//    exactly when decode_api_versions_response does, with the same error; on a change the output decodes
//    with the same header fields and the surviving entries in order, all within their limits; clamping
//    again changes nothing.
// The frame is copied into a heap block of exactly its size, so AddressSanitizer reports any read past it.
#include "fuzz_check.hpp"

#include <kws/kafka/api_versions.hpp>
#include <kws/kafka/rewrite.hpp>

#include <boost/system/errc.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace {

namespace kafka = kws::kafka;
using boost::system::error_code;
using bytes = std::vector<unsigned char>;

const error_code mapper_failure = boost::system::errc::make_error_code(boost::system::errc::address_in_use);

using site = std::tuple<std::int32_t, std::string, std::int32_t>;

/// The mapper's answer for one broker, chosen by `kind`; `fail_on` picks the node ids that fail (kind 3).
std::optional<kafka::broker_endpoint> answer(int kind, unsigned fail_on, const kafka::advertised_broker& b,
                                             error_code& ec) {
  const auto id = static_cast<std::uint32_t>(b.node_id);
  switch (kind) {
    case 0:
      return std::nullopt;
    case 1:
      return kafka::broker_endpoint{"n" + std::to_string(b.node_id),
                                    static_cast<std::int32_t>(1000 + id % 1000)};
    case 2:  // long enough to cross varint boundaries
      return kafka::broker_endpoint{std::string(120 + id % 100, 'x'), b.port};
    case 3:
      if (id % 4 == fail_on % 4) {
        ec = mapper_failure;
        return std::nullopt;
      }
      return kafka::broker_endpoint{"n" + std::to_string(b.node_id), 9092};
    default:
      return kafka::broker_endpoint{std::string(b.host), b.port};
  }
}

std::uint32_t be32(const bytes& b) {
  return (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) | (std::uint32_t{b[2]} << 8) | b[3];
}

void check_size_prefix(const bytes& frame) {
  KWS_FUZZ_CHECK(frame.size() >= 4);
  KWS_FUZZ_CHECK(be32(frame) == frame.size() - 4);
}

void fuzz_rewrite(kafka::api_key key, std::int16_t version, int kind, unsigned fail_on, const bytes& frame) {
  const bytes sentinel{0xa5};
  std::vector<site> seen;
  const kafka::broker_mapper record = [&](const kafka::advertised_broker& b, error_code&) {
    KWS_FUZZ_CHECK(b.node_id != -1 && !b.host.empty());
    seen.emplace_back(b.node_id, std::string(b.host), b.port);
    return std::optional<kafka::broker_endpoint>{};
  };
  bytes out = sentinel;
  error_code ec0;
  KWS_FUZZ_CHECK(!kafka::rewrite_response(key, version, frame, record, out, ec0));
  KWS_FUZZ_CHECK(out == sentinel);
  if (ec0) {
    KWS_FUZZ_CHECK(&ec0.category() == &kafka::wire_category());
    KWS_FUZZ_CHECK(seen.empty());
  }
  if (!kafka::carries_broker_addresses(key, version)) KWS_FUZZ_CHECK(seen.empty());
  const std::vector<site> advertised = seen;

  std::vector<site> asked;
  bool failed = false;
  const kafka::broker_mapper map = [&](const kafka::advertised_broker& b, error_code& ec) {
    asked.emplace_back(b.node_id, std::string(b.host), b.port);
    auto to = answer(kind, fail_on, b, ec);
    if (ec) failed = true;
    return to;
  };
  error_code ec1;
  const bool changed = kafka::rewrite_response(key, version, frame, map, out, ec1);
  if (ec0) {
    // Parsing comes first and does not depend on the mapper.
    KWS_FUZZ_CHECK(!changed && ec1 == ec0 && asked.empty() && out == sentinel);
    return;
  }
  // The mapper saw the endpoints in the same order, up to its failure.
  KWS_FUZZ_CHECK(asked.size() <= advertised.size());
  KWS_FUZZ_CHECK(std::equal(asked.begin(), asked.end(), advertised.begin()));
  if (failed) {
    KWS_FUZZ_CHECK(!changed && ec1 == mapper_failure && out == sentinel);
    return;
  }
  KWS_FUZZ_CHECK(asked.size() == advertised.size());
  // What the rewritten frame must advertise, and whether that differs from the original.
  std::vector<site> expected;
  bool differs = false;
  for (const auto& [id, host, port] : advertised) {
    error_code unused;
    const auto to = answer(kind, fail_on, kafka::advertised_broker{id, host, port}, unused);
    expected.emplace_back(id, to ? to->host : host, to ? to->port : port);
    if (to && (to->host != host || to->port != port)) differs = true;
  }
  // Only a host that an int16 string cannot hold could fail here, and these mappers never answer one.
  KWS_FUZZ_CHECK(!ec1);
  KWS_FUZZ_CHECK(changed == differs);
  if (!changed) {
    KWS_FUZZ_CHECK(out == sentinel);
    return;
  }
  check_size_prefix(out);
  seen.clear();
  bytes again = sentinel;
  error_code ec2;
  KWS_FUZZ_CHECK(!kafka::rewrite_response(key, version, out, record, again, ec2));
  KWS_FUZZ_CHECK(!ec2 && again == sentinel);
  KWS_FUZZ_CHECK(seen == expected);
  // The same mapper on its own output changes nothing: its answers depend on the node id only.
  KWS_FUZZ_CHECK(!kafka::rewrite_response(key, version, out, map, again, ec2));
  KWS_FUZZ_CHECK(!ec2 && again == sentinel);
}

void fuzz_clamp(std::int16_t request_version, unsigned seed, const bytes& frame) {
  const kafka::api_version_limit limit = [seed](kafka::api_key k) -> std::optional<std::int16_t> {
    const auto n = static_cast<std::uint16_t>(k);
    if ((n + seed) % 3 == 0) return std::nullopt;
    return static_cast<std::int16_t>(static_cast<int>((n * 7u + seed) % 9u) - 1);
  };
  error_code ec0;
  const auto before = kafka::decode_api_versions_response(request_version, frame, ec0);
  const bytes sentinel{0x5a};
  bytes out = sentinel;
  error_code ec1;
  const bool changed = kafka::clamp_api_versions(request_version, frame, limit, out, ec1);
  // An answer with an error code (read after the size and the correlation id) passes unparsed: it lists no
  // versions a client would choose by.
  if (frame.size() >= 10 && (frame[8] != 0 || frame[9] != 0)) {
    KWS_FUZZ_CHECK(!changed && !ec1 && out == sentinel);
    return;
  }
  if (ec0) {
    KWS_FUZZ_CHECK(!changed && ec1 == ec0 && out == sentinel);
    KWS_FUZZ_CHECK(&ec0.category() == &kafka::wire_category());
    return;
  }
  KWS_FUZZ_CHECK(!ec1);
  std::vector<kafka::api_version_range> expected;
  bool differs = false;
  for (auto r : before.ranges) {
    const auto max = limit(r.key);
    if (max && r.max_version > *max) {
      differs = true;
      if (r.min_version > *max) continue;
      r.max_version = *max;
    }
    expected.push_back(r);
  }
  KWS_FUZZ_CHECK(changed == differs);
  if (!changed) {
    KWS_FUZZ_CHECK(out == sentinel);
    return;
  }
  check_size_prefix(out);
  error_code ec2;
  const auto after = kafka::decode_api_versions_response(request_version, out, ec2);
  KWS_FUZZ_CHECK(!ec2);
  KWS_FUZZ_CHECK(after.correlation_id == before.correlation_id && after.error_code == before.error_code &&
                 after.throttle_time_ms == before.throttle_time_ms &&
                 after.body_version == before.body_version);
  KWS_FUZZ_CHECK(after.ranges == expected);
  bytes again = sentinel;
  KWS_FUZZ_CHECK(!kafka::clamp_api_versions(request_version, out, limit, again, ec2));
  KWS_FUZZ_CHECK(!ec2 && again == sentinel);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  static constexpr kafka::api_key keys[] = {kafka::api_key::metadata,
                                            kafka::api_key::find_coordinator,
                                            kafka::api_key::describe_cluster,
                                            kafka::api_key::produce,
                                            kafka::api_key::fetch,
                                            kafka::api_key::api_versions};
  const kafka::api_key key = keys[data[0] % std::size(keys)];
  // -1 up to one above the highest version rewritten, so that refusals are exercised too.
  const int max = kafka::max_rewritable_version(key).value_or(0);
  const auto version = static_cast<std::int16_t>(data[1] % (max + 3) - 1);
  const int kind = data[2] % 5;
  const unsigned fail_on = data[2] / 5u;
  const bytes frame(data + 4, data + size);

  fuzz_rewrite(key, version, kind, fail_on, frame);
  // ApiVersions request versions -1..6: the known ones and one on either side.
  fuzz_clamp(static_cast<std::int16_t>(data[3] % 8 - 1), data[3] / 8u, frame);
  return 0;
}
