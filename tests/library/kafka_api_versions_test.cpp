// ApiVersions: the library's encoder and decoder against the schema-based test codec
// (tests/support/kafka_encoder.hpp), the KIP-511 error answer, and clamp_api_versions.
#include "kafka_encoder.hpp"

#include <kws/kafka/api_versions.hpp>

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace {

namespace kafka = kws::kafka;
namespace tk = kws::test::kafka;
using bytes = std::vector<unsigned char>;
using boost::system::error_code;
using kafka::api_key;

std::int16_t key_of(api_key k) {
  return static_cast<std::int16_t>(k);
}

const std::vector<kafka::api_version_range> ranges{
    {api_key::produce, 0, 11},     {api_key::fetch, 4, 17},           {api_key::metadata, 0, 13},
    {api_key::api_versions, 0, 4}, {api_key::find_coordinator, 0, 6},
};

/// A broker's answer as the test codec writes it, with tagged fields wherever v3+ allows them.
tk::api_versions_response broker_answer() {
  tk::api_versions_response m;
  m.error_code = 0;
  m.api_keys = {
      {key_of(api_key::produce), 0, 11, {}},
      {key_of(api_key::fetch), 4, 17, {{3, {1, 2}}}},
      {key_of(api_key::metadata), 0, 13, {{0, {}}, {9, {7}}}},
      {key_of(api_key::api_versions), 0, 4, {}},
      {key_of(api_key::find_coordinator), 0, 6, {}},
      {key_of(api_key::describe_cluster), 0, 2, {{1, {0}}}},
  };
  m.throttle_time_ms = 250;
  // SupportedFeatures (tag 0: compact array of name, min, max, tags) and FinalizedFeaturesEpoch (tag 1).
  tk::out_buf features(true);
  features.count(1);
  features.str("metadata.version");
  features.i16(1);
  features.i16(25);
  features.tags({});
  tk::out_buf epoch(true);
  epoch.i64(42);
  m.tags = {{0, features.data()}, {1, epoch.data()}, {3, {1}}};
  return m;
}

/// What the test codec reads at version v from a model: tagged fields vanish below v3, throttle below v1.
tk::api_versions_response as_seen(const tk::api_versions_response& m, std::int16_t v) {
  return tk::decode_api_versions(tk::encode_api_versions(m, v, 1), v);
}

const kafka::api_version_limit limits = [](api_key k) -> std::optional<std::int16_t> {
  switch (k) {
    case api_key::produce:
      return 13;  // above the broker's 11: unchanged
    case api_key::fetch:
      return 3;  // below its min 4: removed
    case api_key::metadata:
      return 12;  // lowered from 13
    case api_key::describe_cluster:
      return 2;  // equal: unchanged
    default:
      return std::nullopt;  // left alone
  }
};

tk::api_versions_response clamped_by_limits(tk::api_versions_response m) {
  std::vector<tk::api_versions_entry> kept;
  for (auto e : m.api_keys) {
    if (e.api_key == key_of(api_key::fetch)) continue;
    if (e.api_key == key_of(api_key::metadata)) e.max_version = 12;
    kept.push_back(e);
  }
  m.api_keys = kept;
  return m;
}

TEST(KafkaApiVersions, EncoderWritesEveryVersionAsTheSchemaSays) {
  for (std::int16_t v = 0; v <= kafka::max_api_versions_version; ++v) {
    SCOPED_TRACE("v" + std::to_string(v));
    const bytes f = kafka::encode_api_versions_response(v, 99, ranges);
    std::int32_t correlation_id = 0;
    tk::api_versions_response m;
    ASSERT_NO_THROW(m = tk::decode_api_versions(f, v, &correlation_id));  // checks the size prefix too
    EXPECT_EQ(correlation_id, 99);
    EXPECT_EQ(m.error_code, 0);
    EXPECT_EQ(m.throttle_time_ms, 0);
    EXPECT_TRUE(m.tags.empty());
    ASSERT_EQ(m.api_keys.size(), ranges.size());
    for (std::size_t i = 0; i < ranges.size(); ++i) {
      EXPECT_EQ(m.api_keys[i].api_key, key_of(ranges[i].key));
      EXPECT_EQ(m.api_keys[i].min_version, ranges[i].min_version);
      EXPECT_EQ(m.api_keys[i].max_version, ranges[i].max_version);
      EXPECT_TRUE(m.api_keys[i].tags.empty());
    }
  }
}

TEST(KafkaApiVersions, V0AndV3ByteForByte) {
  const std::vector<kafka::api_version_range> two{{api_key::produce, 0, 9}, {api_key::api_versions, 0, 3}};
  // clang-format off
  // v0: size, correlation id, error_code, int32 count, [api_key min max]
  const bytes v0{0, 0, 0, 22,  0, 0, 0, 5,  0, 0,  0, 0, 0, 2,
                 0, 0,  0, 0,  0, 9,
                 0, 18,  0, 0,  0, 3};
  // v3: header v0 still (KIP-511); compact count, a tagged-field byte per entry, throttle, tagged fields
  const bytes v3{0, 0, 0, 26,  0, 0, 0, 5,  0, 0,  3,
                 0, 0,  0, 0,  0, 9,  0,
                 0, 18,  0, 0,  0, 3,  0,
                 0, 0, 0, 0,  0};
  // clang-format on
  EXPECT_EQ(kafka::encode_api_versions_response(0, 5, two), v0);
  EXPECT_EQ(kafka::encode_api_versions_response(3, 5, two), v3);
}

TEST(KafkaApiVersions, UnknownRequestVersionGetsTheKip511Answer) {
  for (std::int16_t v : {6, 7, 100, -1}) {
    SCOPED_TRACE("v" + std::to_string(v));
    const bytes f = kafka::encode_api_versions_response(v, 12, ranges);
    EXPECT_EQ(f, kafka::encode_api_versions_unsupported(12));
    std::int32_t correlation_id = 0;
    const auto m = tk::decode_api_versions(f, 0, &correlation_id);  // a v0 body
    EXPECT_EQ(correlation_id, 12);
    EXPECT_EQ(m.error_code, 35);
    ASSERT_EQ(m.api_keys.size(), 1u);
    EXPECT_EQ(m.api_keys[0].api_key, 18);
    EXPECT_EQ(m.api_keys[0].min_version, 0);
    EXPECT_EQ(m.api_keys[0].max_version, 5);
  }
}

TEST(KafkaApiVersions, DecoderReadsEveryVersionWithTaggedFields) {
  for (std::int16_t v = 0; v <= kafka::max_api_versions_version; ++v) {
    SCOPED_TRACE("v" + std::to_string(v));
    const auto seen = as_seen(broker_answer(), v);
    error_code ec;
    const auto d =
        kafka::decode_api_versions_response(v, tk::encode_api_versions(broker_answer(), v, 31), ec);
    ASSERT_FALSE(ec) << ec.message();
    EXPECT_EQ(d.correlation_id, 31);
    EXPECT_EQ(d.error_code, 0);
    EXPECT_EQ(d.throttle_time_ms, seen.throttle_time_ms);
    EXPECT_EQ(d.body_version, v);
    ASSERT_EQ(d.ranges.size(), seen.api_keys.size());
    for (std::size_t i = 0; i < d.ranges.size(); ++i) {
      EXPECT_EQ(key_of(d.ranges[i].key), seen.api_keys[i].api_key);
      EXPECT_EQ(d.ranges[i].min_version, seen.api_keys[i].min_version);
      EXPECT_EQ(d.ranges[i].max_version, seen.api_keys[i].max_version);
    }
    // And the library's own encoder round-trips through its decoder.
    const auto own =
        kafka::decode_api_versions_response(v, kafka::encode_api_versions_response(v, 8, ranges, 42), ec);
    ASSERT_FALSE(ec);
    EXPECT_EQ(own.ranges, ranges);
    EXPECT_EQ(own.error_code, 42);
  }
}

TEST(KafkaApiVersions, UnsupportedVersionAnswerIsReadInV0WhateverTheRequestVersion) {
  for (std::int16_t v : {0, 1, 2, 3, 4, 5, 6, 9}) {
    SCOPED_TRACE("request v" + std::to_string(v));
    error_code ec;
    const auto d = kafka::decode_api_versions_response(v, kafka::encode_api_versions_unsupported(4), ec);
    ASSERT_FALSE(ec) << ec.message();
    EXPECT_EQ(d.error_code, 35);
    EXPECT_EQ(d.body_version, 0);
    EXPECT_EQ(d.ranges, (std::vector<kafka::api_version_range>{{api_key::api_versions, 0, 5}}));
  }
  // A broker that answered UNSUPPORTED_VERSION in the request's own layout is read too.
  tk::api_versions_response old;
  old.error_code = 35;
  old.api_keys = {{18, 0, 2, {}}};
  old.throttle_time_ms = 7;
  for (std::int16_t v : {1, 2, 3}) {
    error_code ec;
    const auto d = kafka::decode_api_versions_response(v, tk::encode_api_versions(old, v, 1), ec);
    ASSERT_FALSE(ec) << ec.message();
    EXPECT_EQ(d.body_version, v);
    EXPECT_EQ(d.throttle_time_ms, 7);
  }
}

TEST(KafkaApiVersions, DecoderRejectsWhatIsNotAnAnswer) {
  error_code ec;
  // A request version above 5 that did not get the KIP-511 answer: layout unknown.
  (void)kafka::decode_api_versions_response(6, kafka::encode_api_versions_response(5, 1, ranges), ec);
  EXPECT_EQ(ec, kafka::wire_errc::unsupported_version);
  // Wrong layout for the version.
  (void)kafka::decode_api_versions_response(2, kafka::encode_api_versions_response(3, 1, ranges), ec);
  EXPECT_TRUE(ec);
  // Every prefix.
  const bytes f = tk::encode_api_versions(broker_answer(), 3, 1);
  for (std::size_t n = 0; n < f.size(); ++n) {
    (void)kafka::decode_api_versions_response(3, bytes(f.begin(), f.begin() + static_cast<std::ptrdiff_t>(n)),
                                              ec);
    EXPECT_TRUE(ec) << n;
  }
}

TEST(KafkaApiVersions, ClampEveryVersionKeepsEverythingElseByteForByte) {
  for (std::int16_t v = 0; v <= kafka::max_api_versions_version; ++v) {
    SCOPED_TRACE("v" + std::to_string(v));
    const bytes in = tk::encode_api_versions(broker_answer(), v, 77);
    const auto expected = clamped_by_limits(as_seen(broker_answer(), v));
    bytes out;
    error_code ec;
    ASSERT_TRUE(kafka::clamp_api_versions(v, in, limits, out, ec)) << ec.message();
    std::int32_t correlation_id = 0;
    tk::api_versions_response got;
    ASSERT_NO_THROW(got = tk::decode_api_versions(out, v, &correlation_id));  // size prefix included
    EXPECT_EQ(correlation_id, 77);
    EXPECT_TRUE(got == expected);
    EXPECT_EQ(got.api_keys.size(), expected.api_keys.size());
    EXPECT_EQ(got.tags.size(), expected.tags.size());
    // Clamping again changes nothing.
    bytes again{1};
    EXPECT_FALSE(kafka::clamp_api_versions(v, out, limits, again, ec));
    EXPECT_FALSE(ec);
    EXPECT_EQ(again, bytes{1});
  }
}

TEST(KafkaApiVersions, ClampWithNothingAboveTheLimitsChangesNothing) {
  const kafka::api_version_limit generous = [](api_key) { return std::optional<std::int16_t>(100); };
  const kafka::api_version_limit none = [](api_key) { return std::optional<std::int16_t>(); };
  for (std::int16_t v = 0; v <= kafka::max_api_versions_version; ++v) {
    bytes out{2};
    error_code ec;
    EXPECT_FALSE(
        kafka::clamp_api_versions(v, tk::encode_api_versions(broker_answer(), v, 1), generous, out, ec));
    EXPECT_FALSE(ec);
    EXPECT_FALSE(kafka::clamp_api_versions(v, tk::encode_api_versions(broker_answer(), v, 1), none, out, ec));
    EXPECT_FALSE(kafka::clamp_api_versions(v, tk::encode_api_versions(broker_answer(), v, 1), {}, out, ec));
    EXPECT_FALSE(ec);
    EXPECT_EQ(out, bytes{2});
  }
}

TEST(KafkaApiVersions, ClampPassesAnErrorAnswerUnparsed) {
  const kafka::api_version_limit three = [](api_key k) {
    return k == api_key::api_versions ? std::optional<std::int16_t>(3) : std::nullopt;
  };
  // The KIP-511 answer, and the one librdkafka 2.0.2's mock broker really sends to ApiVersions v3 (error 35,
  // a compact count in a v0 body): both only say which ApiVersions versions to retry with.
  const bytes mock{0, 0, 0, 17, 0, 0, 0, 1, 0, 0x23, 0x01, 0, 0x12, 0, 0, 0, 2, 0, 0, 0, 0};
  for (const auto& answer : {kafka::encode_api_versions_unsupported(6), mock}) {
    for (std::int16_t v : {3, 5, 7}) {
      bytes out;
      error_code ec;
      EXPECT_FALSE(kafka::clamp_api_versions(v, answer, three, out, ec));
      EXPECT_FALSE(ec) << ec.message();
      EXPECT_TRUE(out.empty());
    }
  }
}

TEST(KafkaApiVersions, ClampReencodesACompactCountThatShrinksAVarintByte) {
  // 130 entries need a two-byte compact count (131); removing four leaves 126 (count 127, one byte).
  tk::api_versions_response m;
  for (std::int16_t k = 0; k < 130; ++k)
    m.api_keys.push_back({static_cast<std::int16_t>(1000 + k), 2, 5, {}});
  const kafka::api_version_limit limit = [](api_key k) -> std::optional<std::int16_t> {
    const auto n = static_cast<std::int16_t>(k);
    if (n < 1004) return 1;  // below min 2: removed
    if (n == 1100) return 4;
    return std::nullopt;
  };
  const bytes in = tk::encode_api_versions(m, 4, 3);
  bytes out;
  error_code ec;
  ASSERT_TRUE(kafka::clamp_api_versions(4, in, limit, out, ec));
  EXPECT_EQ(out.size(), in.size() - 4 * 7 - 1);
  const auto got = tk::decode_api_versions(out, 4);
  ASSERT_EQ(got.api_keys.size(), 126u);
  EXPECT_EQ(got.api_keys.front().api_key, 1004);
  EXPECT_EQ(got.api_keys[96].api_key, 1100);
  EXPECT_EQ(got.api_keys[96].max_version, 4);
  // Removing everything leaves an empty array.
  const kafka::api_version_limit nothing = [](api_key) { return std::optional<std::int16_t>(-1); };
  ASSERT_TRUE(kafka::clamp_api_versions(0, tk::encode_api_versions(m, 0, 3), nothing, out, ec));
  EXPECT_TRUE(tk::decode_api_versions(out, 0).api_keys.empty());
}

TEST(KafkaApiVersions, ClampRejectsMalformedFramesWithoutOutput) {
  const bytes sentinel{6, 6};
  auto clamp_error = [&](std::int16_t v, const bytes& f) {
    bytes out = sentinel;
    error_code ec;
    EXPECT_FALSE(kafka::clamp_api_versions(v, f, limits, out, ec));
    EXPECT_EQ(out, sentinel);
    return ec;
  };
  for (std::int16_t v : {0, 1, 3, 5}) {
    const bytes f = tk::encode_api_versions(broker_answer(), v, 1);
    for (std::size_t n = 0; n < f.size(); ++n) {
      bytes prefix(f.begin(), f.begin() + static_cast<std::ptrdiff_t>(n));
      EXPECT_TRUE(clamp_error(v, prefix)) << n;
      if (n >= 4) {
        const auto size = static_cast<std::uint32_t>(n - 4);
        for (int i = 0; i < 4; ++i)
          prefix[static_cast<std::size_t>(i)] = static_cast<unsigned char>(size >> (24 - 8 * i));
        EXPECT_TRUE(clamp_error(v, prefix)) << n << " (size patched)";
      }
    }
    bytes trailing = f;
    trailing.push_back(0);
    trailing[3] = static_cast<unsigned char>(trailing[3] + 1);
    EXPECT_EQ(clamp_error(v, trailing), kafka::wire_errc::trailing_bytes);
  }
  // Array counts: huge, negative, null.
  bytes f = tk::encode_api_versions(broker_answer(), 1, 1);
  f[10] = 0x7f;
  EXPECT_EQ(clamp_error(1, f), kafka::wire_errc::invalid_array_count);
  f[10] = 0xff;
  f[11] = f[12] = f[13] = 0xff;
  EXPECT_EQ(clamp_error(1, f), kafka::wire_errc::invalid_length);
  f = tk::encode_api_versions(broker_answer(), 3, 1);
  f[10] = 0;  // compact null
  EXPECT_EQ(clamp_error(3, f), kafka::wire_errc::invalid_length);
}

TEST(KafkaApiVersions, RequestBodyParsing) {
  error_code ec;
  for (std::int16_t v = 0; v < 3; ++v) {
    const auto q = kafka::parse_api_versions_request(v, {}, ec);
    EXPECT_FALSE(ec);
    EXPECT_TRUE(q.client_software_name.empty());
    (void)kafka::parse_api_versions_request(v, bytes{0}, ec);
    EXPECT_EQ(ec, kafka::wire_errc::trailing_bytes);
  }
  tk::out_buf body(true);
  body.str("librdkafka");
  body.str("2.3.0");
  body.tags({{5, {1}}});
  for (std::int16_t v = 3; v <= 5; ++v) {
    const auto q = kafka::parse_api_versions_request(v, body.data(), ec);
    ASSERT_FALSE(ec) << ec.message();
    EXPECT_EQ(q.client_software_name, "librdkafka");
    EXPECT_EQ(q.client_software_version, "2.3.0");
    for (std::size_t n = 0; n < body.data().size(); ++n) {
      (void)kafka::parse_api_versions_request(
          v, bytes(body.data().begin(), body.data().begin() + static_cast<std::ptrdiff_t>(n)), ec);
      EXPECT_EQ(ec, kafka::wire_errc::truncated) << n;
    }
  }
  (void)kafka::parse_api_versions_request(6, body.data(), ec);
  EXPECT_EQ(ec, kafka::wire_errc::unsupported_version);
}

}  // namespace
