// Kafka wire primitives and request header peek.
#include <kws/kafka/api.hpp>
#include <kws/kafka/wire.hpp>

#include <gtest/gtest.h>

#include <vector>

namespace kafka = kws::kafka;
using bytes = std::vector<unsigned char>;

TEST(KafkaWire, FixedWidthIntegersAreBigEndianAndRoundTrip) {
  bytes out;
  kafka::writer w(out);
  w.int8(-2);
  w.int16(0x1234);
  w.int32(-123456789);
  w.int64(0x0102030405060708);
  ASSERT_EQ(out.size(), 15u);
  EXPECT_EQ(out[1], 0x12);
  EXPECT_EQ(out[2], 0x34);
  EXPECT_EQ(out[7], 0x01);
  EXPECT_EQ(out[14], 0x08);
  kafka::reader r(out);
  EXPECT_EQ(r.int8(), -2);
  EXPECT_EQ(r.int16(), 0x1234);
  EXPECT_EQ(r.int32(), -123456789);
  EXPECT_EQ(r.int64(), 0x0102030405060708);
  r.expect_end();
  EXPECT_TRUE(r.ok());
}

TEST(KafkaWire, ReadingPastTheEndFailsAndSticks) {
  const bytes in{0x00, 0x01, 0x02};
  kafka::reader r(in);
  EXPECT_EQ(r.int32(), 0);
  EXPECT_EQ(r.error(), kafka::wire_errc::truncated);
  // Later reads return zero and consume nothing, even ones that would fit.
  EXPECT_EQ(r.int8(), 0);
  EXPECT_EQ(r.position(), 0u);
}

TEST(KafkaWire, StringsNullableAndNot) {
  bytes out;
  kafka::writer w(out);
  w.string("abc");
  w.nullable_string(std::nullopt);
  w.nullable_string("");
  kafka::reader r(out);
  EXPECT_EQ(r.string(), "abc");
  EXPECT_FALSE(r.nullable_string().has_value());
  auto empty = r.nullable_string();
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(*empty, "");
  EXPECT_TRUE(r.ok());

  // A null where a string is required is an error, not an empty string.
  const bytes null_string{0xff, 0xff};
  kafka::reader r2(null_string);
  (void)r2.string();
  EXPECT_EQ(r2.error(), kafka::wire_errc::invalid_length);
  // A length below -1 is an error.
  const bytes minus_two{0xff, 0xfe, 'a'};
  kafka::reader r3(minus_two);
  (void)r3.nullable_string();
  EXPECT_EQ(r3.error(), kafka::wire_errc::invalid_length);
  // A length past the end is truncation.
  const bytes short_string{0x00, 0x05, 'a', 'b'};
  kafka::reader r4(short_string);
  (void)r4.string();
  EXPECT_EQ(r4.error(), kafka::wire_errc::truncated);
}

TEST(KafkaWire, BytesNullEmptyAndTruncated) {
  bytes out;
  kafka::writer w(out);
  w.nullable_bytes(std::nullopt);
  w.bytes(kafka::bytes_view{});
  const bytes payload{1, 2, 3};
  w.bytes(payload);
  kafka::reader r(out);
  EXPECT_FALSE(r.nullable_bytes().has_value());
  auto e = r.nullable_bytes();
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(e->empty());
  auto p = r.bytes();
  EXPECT_EQ(bytes(p.begin(), p.end()), payload);
  EXPECT_TRUE(r.ok());

  const bytes huge{0x7f, 0xff, 0xff, 0xff, 0x00};
  kafka::reader bad(huge);
  (void)bad.bytes();
  EXPECT_EQ(bad.error(), kafka::wire_errc::truncated);
}

TEST(KafkaWire, UnsignedVarintsMatchTheProtocolGuideEncoding) {
  // 300 = 0b1_0010_1100 -> 0xac 0x02 (LEB128, as in protobuf and Kafka's flexible versions).
  bytes out;
  kafka::writer w(out);
  w.uvarint(300);
  w.uvarint(0);
  w.uvarint(0xffffffffu);
  EXPECT_EQ(out[0], 0xac);
  EXPECT_EQ(out[1], 0x02);
  EXPECT_EQ(out[2], 0x00);
  EXPECT_EQ(out.size(), 3u + 5u);
  EXPECT_EQ(kafka::uvarint_size(0xffffffffu), 5u);
  kafka::reader r(out);
  EXPECT_EQ(r.uvarint(), 300u);
  EXPECT_EQ(r.uvarint(), 0u);
  EXPECT_EQ(r.uvarint(), 0xffffffffu);
  EXPECT_TRUE(r.ok());
}

TEST(KafkaWire, OverlongVarintIsAnError) {
  const bytes in{0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
  kafka::reader r(in);
  (void)r.uvarint();
  EXPECT_EQ(r.error(), kafka::wire_errc::invalid_varint);
  // Five bytes whose value needs more than 32 bits.
  const bytes too_big{0xff, 0xff, 0xff, 0xff, 0x7f};
  kafka::reader r2(too_big);
  (void)r2.uvarint();
  EXPECT_EQ(r2.error(), kafka::wire_errc::invalid_varint);
}

TEST(KafkaWire, ZigZagVarints) {
  bytes out;
  kafka::writer w(out);
  for (std::int64_t v : {0, -1, 1, -2, 63, -64, 1000000, -1000000}) w.varint(v);
  EXPECT_EQ(out[0], 0x00);
  EXPECT_EQ(out[1], 0x01);  // -1
  EXPECT_EQ(out[2], 0x02);  // 1
  EXPECT_EQ(out[3], 0x03);  // -2
  kafka::reader r(out);
  for (std::int32_t v : {0, -1, 1, -2, 63, -64, 1000000, -1000000}) EXPECT_EQ(r.varint(), v);
  EXPECT_TRUE(r.ok());
}

TEST(KafkaWire, CompactFormsUseLengthPlusOne) {
  bytes out;
  kafka::writer w(out);
  w.compact_string("kws");
  w.compact_nullable_string(std::nullopt);
  w.compact_array_count(2);
  w.compact_array_count(-1);
  EXPECT_EQ(out[0], 4);  // 3 + 1
  kafka::reader r(out);
  EXPECT_EQ(r.compact_string(), "kws");
  EXPECT_FALSE(r.compact_nullable_string().has_value());
  EXPECT_EQ(r.compact_array_count(0), 2);
  EXPECT_EQ(r.compact_array_count(0), -1);
  EXPECT_TRUE(r.ok());
}

TEST(KafkaWire, TaggedFieldsAreSkipped) {
  bytes out;
  kafka::writer w(out);
  w.uvarint(2);  // two tagged fields
  w.uvarint(0);
  w.uvarint(3);
  w.raw(bytes{9, 9, 9});
  w.uvarint(7);
  w.uvarint(0);
  w.int16(42);
  kafka::reader r(out);
  r.skip_tagged_fields();
  EXPECT_EQ(r.int16(), 42);
  EXPECT_TRUE(r.ok());

  // A tagged field whose size runs past the end.
  const bytes cut{0x01, 0x00, 0x05, 0x01};
  kafka::reader bad(cut);
  bad.skip_tagged_fields();
  EXPECT_EQ(bad.error(), kafka::wire_errc::truncated);
}

TEST(KafkaWire, HostileArrayCountIsRejectedBeforeAnyAllocation) {
  const bytes in{0x7f, 0xff, 0xff, 0xff, 0x00, 0x00};
  kafka::reader r(in);
  EXPECT_EQ(r.array_count(4), 0);
  EXPECT_EQ(r.error(), kafka::wire_errc::invalid_array_count);
  const bytes null_array{0xff, 0xff, 0xff, 0xff};
  kafka::reader n(null_array);
  EXPECT_EQ(n.array_count(), -1);  // null array
  EXPECT_TRUE(n.ok());
}

TEST(KafkaWire, PlaceholderIsPatchedLater) {
  bytes out;
  kafka::writer w(out);
  const auto at = w.placeholder_int32();
  w.string("xy");
  w.patch_int32(at, static_cast<std::int32_t>(w.size() - 4));
  kafka::reader r(out);
  EXPECT_EQ(r.int32(), 4);
}

namespace {
bytes header_v1(kafka::api_key key, std::int16_t version, std::int32_t corr,
                std::optional<std::string_view> id) {
  bytes out;
  kafka::writer w(out);
  w.int16(static_cast<std::int16_t>(key));
  w.int16(version);
  w.int32(corr);
  w.nullable_string(id);
  return out;
}
}  // namespace

TEST(KafkaRequestHeader, PeeksApiKeyVersionCorrelationAndClientId) {
  bytes b = header_v1(kafka::api_key::metadata, 0, 77, "kcat");
  b.push_back(0xAA);  // body
  boost::system::error_code ec;
  const auto h = kafka::peek_request_header(b, ec);
  ASSERT_FALSE(ec);
  EXPECT_EQ(h.key, kafka::api_key::metadata);
  EXPECT_EQ(h.version, 0);
  EXPECT_EQ(h.correlation_id, 77);
  ASSERT_TRUE(h.client_id.has_value());
  EXPECT_EQ(*h.client_id, "kcat");
  EXPECT_EQ(h.header_bytes, b.size() - 1);
}

TEST(KafkaRequestHeader, FlexibleHeaderV2SkipsTaggedFields) {
  // ApiVersions v3 uses request header v2: the client id stays an int16 string, then tagged fields (KIP-511).
  bytes b = header_v1(kafka::api_key::api_versions, 3, 5, std::nullopt);
  const std::size_t header_end = b.size() + 1;
  b.push_back(0x00);  // no tagged fields
  b.push_back(0x04);  // body: compact string "abc"
  b.insert(b.end(), {'a', 'b', 'c'});
  boost::system::error_code ec;
  const auto h = kafka::peek_request_header(b, ec);
  ASSERT_FALSE(ec);
  EXPECT_FALSE(h.client_id.has_value());
  EXPECT_EQ(h.header_bytes, header_end);
  EXPECT_EQ(kafka::response_header_version(kafka::api_key::api_versions, 3), 0);
  EXPECT_EQ(kafka::response_header_version(kafka::api_key::metadata, 9), 1);
  EXPECT_EQ(kafka::response_header_version(kafka::api_key::metadata, 8), 0);
}

TEST(KafkaRequestHeader, TruncatedHeaderIsAnError) {
  const bytes b{0x00, 0x03, 0x00};
  boost::system::error_code ec;
  (void)kafka::peek_request_header(b, ec);
  EXPECT_EQ(ec, kafka::wire_errc::truncated);
  // Client id length past the end.
  bytes c = header_v1(kafka::api_key::produce, 0, 1, "abcdef");
  c.resize(c.size() - 2);
  (void)kafka::peek_request_header(c, ec);
  EXPECT_EQ(ec, kafka::wire_errc::truncated);
}

TEST(KafkaRequestHeader, UnknownApiKeyStillYieldsCorrelationId) {
  bytes b = header_v1(static_cast<kafka::api_key>(9999), 4, 123, "x");
  boost::system::error_code ec;
  const auto h = kafka::peek_request_header(b, ec);
  ASSERT_FALSE(ec);
  EXPECT_EQ(h.correlation_id, 123);
  EXPECT_EQ(h.header_bytes, 0u);  // cannot know whether tagged fields follow
  EXPECT_EQ(kafka::api_name(h.key), "unknown");
}
