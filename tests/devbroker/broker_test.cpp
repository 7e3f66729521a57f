// The dev broker's codec and request handling, without sockets.
#include "broker.hpp"
#include "kafka_test_util.hpp"
#include "message_set.hpp"

#include <gtest/gtest.h>

using namespace kws::devbroker;
using namespace kws::devbroker::test;
using kws::kafka::error_code;

namespace {

std::int16_t code(error_code e) {
  return static_cast<std::int16_t>(e);
}

bytes hex(std::string_view s) {
  bytes out;
  for (std::size_t i = 0; i + 1 < s.size(); i += 2)
    out.push_back(static_cast<unsigned char>(std::stoi(std::string(s.substr(i, 2)), nullptr, 16)));
  return out;
}

struct DevbrokerRequests : ::testing::Test {
  broker make(broker_config c = {}) {
    broker b(std::move(c));
    b.set_advertised(listener_kind::ws, {{"ws.example", 9000}, {"ws.example", 9001}, {"ws.example", 9002}});
    b.set_advertised(listener_kind::tcp, {{"127.0.0.1", 19092}});
    return b;
  }
  static bytes respond(broker& b, const bytes& req, std::int32_t node = 0,
                       listener_kind k = listener_kind::ws) {
    auto o = b.handle(req, node, k);
    EXPECT_EQ(o.what, outcome::action::respond) << o.reason;
    if (!o.response.empty()) {
      EXPECT_EQ(static_cast<std::size_t>(kws::load_be32(o.response.data())) + 4, o.response.size());
    }
    return o.response;
  }
};

}  // namespace

TEST(DevbrokerMessageSet, KnownAnswerCrcFromTheProtocolGuideExample) {
  // Message "Hello!" with a null key, magic 0, as in the Kafka protocol guide's worked produce example:
  // crc 8dc795a2.
  const bytes entry = hex("0000000000000000000000148dc795a20000ffffffff0000000648656c6c6f21");
  std::vector<message_view> out;
  std::string why;
  ASSERT_EQ(parse_message_set(entry, out, why), error_code::none) << why;
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(out[0].key.has_value());
  EXPECT_EQ(to_string(*out[0].value), "Hello!");

  bytes encoded;
  kws::kafka::writer w(encoded);
  const bytes v = to_bytes("Hello!");
  encode_message(w, 0, std::nullopt, kws::kafka::bytes_view(v));
  EXPECT_EQ(encoded, entry);
}

TEST(DevbrokerMessageSet, BadCrcIsCorruptMessage) {
  bytes set = message_set({{"k", "value"}});
  set.back() ^= 0x01;
  std::vector<message_view> out;
  std::string why;
  EXPECT_EQ(parse_message_set(set, out, why), error_code::corrupt_message);
  EXPECT_NE(why.find("crc"), std::string::npos) << why;
}

TEST(DevbrokerMessageSet, TruncatedAndMalformedSets) {
  std::vector<message_view> out;
  std::string why;
  bytes set = message_set({{"k", "v"}, {"k2", "v2"}});
  bytes cut(set.begin(), set.end() - 3);
  EXPECT_EQ(parse_message_set(cut, out, why), error_code::corrupt_message);
  // As a fetched set, the partial last entry just ends the set.
  EXPECT_EQ(parse_fetched_message_set(cut, out, why), error_code::none);
  EXPECT_EQ(out.size(), 1u);
  // Unknown magic.
  bytes magic2 = message_set({{"k", "v"}});
  magic2[16] = 2;
  EXPECT_EQ(parse_message_set(magic2, out, why), error_code::corrupt_message);
}

TEST(DevbrokerMessageSet, CompressedMessagesAreRefused) {
  bytes set;
  kws::kafka::writer w(set);
  const bytes v = to_bytes("x");
  encode_message(w, 0, std::nullopt, kws::kafka::bytes_view(v), 0, 0, /*gzip*/ 1);
  std::vector<message_view> out;
  std::string why;
  EXPECT_EQ(parse_message_set(set, out, why), error_code::unsupported_compression_type);
}

TEST(DevbrokerMessageSet, MagicOneKeepsItsTimestamp) {
  const bytes set = message_set({{std::nullopt, ""}}, 1);
  std::vector<message_view> out;
  std::string why;
  ASSERT_EQ(parse_message_set(set, out, why), error_code::none) << why;
  EXPECT_EQ(out[0].magic, 1);
  EXPECT_EQ(out[0].timestamp, 1700000000000);
  EXPECT_TRUE(out[0].value->empty());
}

TEST_F(DevbrokerRequests, ApiVersionsV0ListsKafka0100VersionsOfTheFiveApis) {
  auto b = make();
  const auto res = respond(b, api_versions_request(7, 0));
  auto r = open_response(res);
  EXPECT_EQ(r.correlation_id, 7);
  EXPECT_EQ(r.body.int16(), 0);
  ASSERT_EQ(r.body.array_count(), 5);
  std::vector<std::tuple<int, int, int>> got;
  for (int i = 0; i < 5; ++i) {
    const int k = r.body.int16(), lo = r.body.int16(), hi = r.body.int16();
    got.emplace_back(k, lo, hi);
  }
  r.body.expect_end();  // v0: no throttle time
  EXPECT_TRUE(r.body.ok());
  // Produce v0-v2, Fetch v0-v2, ListOffsets v0-v1, Metadata v0-v1, ApiVersions v0-v5.
  const std::vector<std::tuple<int, int, int>> want{{0, 0, 2}, {1, 0, 2}, {2, 0, 1}, {3, 0, 1}, {18, 0, 5}};
  EXPECT_EQ(got, want);
}

TEST_F(DevbrokerRequests, WithSaslOnTcpApiVersionsListsTheSaslApisOnTcpOnly) {
  broker_config c;
  c.sasl_on_tcp = true;
  auto b = make(c);
  auto keys_on = [&](listener_kind k) {
    const auto res = respond(b, api_versions_request(3, 0), 0, k);
    auto r = open_response(res);
    EXPECT_EQ(r.body.int16(), 0);
    std::vector<std::tuple<int, int, int>> got;
    for (auto n = r.body.array_count(); n > 0; --n) {
      const int key = r.body.int16(), lo = r.body.int16(), hi = r.body.int16();
      got.emplace_back(key, lo, hi);
    }
    EXPECT_TRUE(r.body.ok());
    return got;
  };
  const std::vector<std::tuple<int, int, int>> plain{{0, 0, 2}, {1, 0, 2}, {2, 0, 1}, {3, 0, 1}, {18, 0, 5}};
  auto with_sasl = plain;
  with_sasl.insert(with_sasl.end(), {{17, 0, 1}, {36, 0, 2}});
  EXPECT_EQ(keys_on(listener_kind::tcp), with_sasl);
  EXPECT_EQ(keys_on(listener_kind::ws), plain);
  // The SASL APIs themselves are the server's gate's: the broker never answers them.
  EXPECT_EQ(b.handle(request(api_key::sasl_handshake, 1, 4, [](kws::kafka::writer& w) { w.string("PLAIN"); }),
                     0, listener_kind::ws)
                .what,
            outcome::action::close);
}

TEST_F(DevbrokerRequests, ApiVersionsV3HasFlexibleBodyButResponseHeaderV0) {
  auto b = make();
  const auto res = respond(b, api_versions_request(9, 3));
  auto r = open_response(res);
  EXPECT_EQ(r.correlation_id, 9);
  // Right after the correlation id comes the error code: no tagged-field byte in the response header.
  EXPECT_EQ(r.body.int16(), 0);
  ASSERT_EQ(r.body.compact_array_count(), 5);
  std::vector<std::tuple<int, int, int>> got;
  for (int i = 0; i < 5; ++i) {
    const int k = r.body.int16(), lo = r.body.int16(), hi = r.body.int16();
    got.emplace_back(k, lo, hi);
    r.body.skip_tagged_fields();
  }
  const std::vector<std::tuple<int, int, int>> want{{0, 0, 2}, {1, 0, 2}, {2, 0, 1}, {3, 0, 1}, {18, 0, 5}};
  EXPECT_EQ(got, want);
  EXPECT_EQ(r.body.int32(), 0);  // throttle_time_ms
  r.body.skip_tagged_fields();
  r.body.expect_end();
  EXPECT_TRUE(r.body.ok());
}

TEST_F(DevbrokerRequests, ApiVersionsV1HasThrottleTime) {
  auto b = make();
  const auto res = respond(b, api_versions_request(1, 1));
  auto r = open_response(res);
  EXPECT_EQ(r.body.int16(), 0);
  ASSERT_EQ(r.body.array_count(), 5);
  r.body.skip(5 * 6);
  EXPECT_EQ(r.body.int32(), 0);
  r.body.expect_end();
  EXPECT_TRUE(r.body.ok());
}

TEST_F(DevbrokerRequests, UnsupportedApiVersionsVersionGetsV0ErrorWithTheRange) {
  auto b = make();
  const auto res = respond(b, api_versions_request(11, 6));
  auto r = open_response(res);
  EXPECT_EQ(r.correlation_id, 11);
  EXPECT_EQ(r.body.int16(), code(error_code::unsupported_version));
  ASSERT_EQ(r.body.array_count(), 1);
  EXPECT_EQ(r.body.int16(), 18);
  EXPECT_EQ(r.body.int16(), 0);
  EXPECT_EQ(r.body.int16(), 5);
  r.body.expect_end();
  EXPECT_TRUE(r.body.ok());
}

TEST_F(DevbrokerRequests, Kafka08ModeIgnoresApiVersions) {
  broker_config c;
  c.kafka_08_only = true;
  auto b = make(c);
  const auto o = b.handle(api_versions_request(1, 3), 0, listener_kind::ws);
  EXPECT_EQ(o.what, outcome::action::no_response);
  EXPECT_TRUE(o.response.empty());
  EXPECT_NE(o.reason.find("ApiVersions"), std::string::npos);
}

TEST_F(DevbrokerRequests, ProduceThenFetchReturnsTheMessagesWithAssignedOffsets) {
  auto b = make();
  const std::vector<kv> msgs{{"k1", "v1"}, {std::nullopt, "null key"}, {"k3", ""}, {"k4", std::nullopt}};
  auto p = parse_produce(respond(b, produce_request(1, 1, "test-topic", 0, message_set(msgs))));
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.correlation_id, 1);
  EXPECT_EQ(p.error, 0);
  EXPECT_EQ(p.base_offset, 0);
  auto p2 = parse_produce(respond(b, produce_request(2, -1, "test-topic", 0, message_set({{"k5", "v5"}}))));
  EXPECT_EQ(p2.base_offset, 4);

  const auto res = respond(b, fetch_req(3, 0, 0, "test-topic", 0, 1));
  auto f = parse_fetch(res);
  ASSERT_TRUE(f.ok);
  EXPECT_EQ(f.error, 0);
  EXPECT_EQ(f.high_watermark, 5);
  ASSERT_EQ(f.messages.size(), 4u);
  EXPECT_EQ(f.messages[0].offset, 1);
  EXPECT_FALSE(f.messages[0].key.has_value());
  EXPECT_EQ(to_string(*f.messages[0].value), "null key");
  EXPECT_EQ(to_string(*f.messages[1].key), "k3");
  EXPECT_TRUE(f.messages[1].value->empty());
  EXPECT_FALSE(f.messages[2].value.has_value());
  EXPECT_EQ(f.messages[3].offset, 4);
}

TEST_F(DevbrokerRequests, ProduceWithAcksZeroGetsNoResponseButIsStored) {
  auto b = make();
  const auto o =
      b.handle(produce_request(1, 0, "test-topic", 0, message_set({{"k", "v"}})), 0, listener_kind::ws);
  EXPECT_EQ(o.what, outcome::action::no_response);
  EXPECT_TRUE(o.response.empty());
  EXPECT_EQ(b.topic("test-topic")->at(0).high_watermark(), 1);
}

TEST_F(DevbrokerRequests, ProduceWithBadCrcGetsCorruptMessageAndStoresNothing) {
  auto b = make();
  bytes set = message_set({{"a", "1"}, {"b", "2"}});
  set.back() ^= 0xff;
  auto o = b.handle(produce_request(5, 1, "test-topic", 0, set), 0, listener_kind::ws);
  ASSERT_EQ(o.what, outcome::action::respond);
  EXPECT_NE(o.reason.find("crc"), std::string::npos);
  auto p = parse_produce(o.response);
  EXPECT_EQ(p.error, code(error_code::corrupt_message));
  EXPECT_EQ(b.topic("test-topic")->at(0).high_watermark(), 0);
}

TEST_F(DevbrokerRequests, NodesLeadPartitionsModuloN) {
  broker_config c;
  c.nodes = 3;
  c.topics = {{"multi", 4}};
  auto b = make(c);
  const auto set = message_set({{"k", "v"}});
  EXPECT_EQ(parse_produce(respond(b, produce_request(1, 1, "multi", 1, set), 0)).error,
            code(error_code::not_leader_for_partition));
  EXPECT_EQ(parse_produce(respond(b, produce_request(2, 1, "multi", 1, set), 1)).error, 0);
  EXPECT_EQ(parse_produce(respond(b, produce_request(3, 1, "multi", 3, set), 0)).error, 0);
  EXPECT_EQ(parse_fetch(respond(b, fetch_req(4, 0, 0, "multi", 1, 0), 2)).error,
            code(error_code::not_leader_for_partition));
  EXPECT_EQ(parse_produce(respond(b, produce_request(5, 1, "multi", 4, set), 1)).error,
            code(error_code::unknown_topic_or_partition));

  auto m = parse_metadata(respond(b, metadata_request(6, {"multi"}), 2));
  ASSERT_TRUE(m.ok);
  ASSERT_EQ(m.brokers.size(), 3u);
  EXPECT_EQ(m.brokers[2].node_id, 2);
  EXPECT_EQ(m.brokers[2].port, 9002);
  ASSERT_EQ(m.topics.size(), 1u);
  ASSERT_EQ(m.topics[0].partitions.size(), 4u);
  for (const auto& p : m.topics[0].partitions) EXPECT_EQ(p.leader, p.index % 3);
}

TEST_F(DevbrokerRequests, MetadataAdvertisesTheListenerTheRequestCameIn) {
  auto b = make();
  auto ws = parse_metadata(respond(b, metadata_request(1, {}), 0, listener_kind::ws));
  auto tcp = parse_metadata(respond(b, metadata_request(2, {}), 0, listener_kind::tcp));
  ASSERT_TRUE(ws.ok && tcp.ok);
  EXPECT_EQ(ws.brokers[0].host, "ws.example");
  EXPECT_EQ(tcp.brokers[0].port, 19092);
  // Empty topic list means all topics.
  ASSERT_EQ(ws.topics.size(), 1u);
  EXPECT_EQ(ws.topics[0].name, "test-topic");
}

TEST_F(DevbrokerRequests, MetadataAutoCreatesUnlessDisabled) {
  broker_config c;
  c.default_partitions = 3;
  auto b = make(c);
  auto m = parse_metadata(respond(b, metadata_request(1, {"fresh", "bad/name"})));
  ASSERT_TRUE(m.ok);
  ASSERT_EQ(m.topics.size(), 2u);
  EXPECT_EQ(m.topics[0].error, 0);
  EXPECT_EQ(m.topics[0].partitions.size(), 3u);
  EXPECT_EQ(m.topics[1].error, code(error_code::invalid_topic_exception));

  broker_config off;
  off.auto_create = false;
  auto b2 = make(off);
  auto m2 = parse_metadata(respond(b2, metadata_request(1, {"fresh"})));
  ASSERT_EQ(m2.topics.size(), 1u);
  EXPECT_EQ(m2.topics[0].error, code(error_code::unknown_topic_or_partition));
  EXPECT_EQ(b2.topic("fresh"), nullptr);
  EXPECT_EQ(parse_produce(respond(b2, produce_request(2, 1, "fresh", 0, message_set({{"k", "v"}})))).error,
            code(error_code::unknown_topic_or_partition));
}

TEST_F(DevbrokerRequests, ListOffsetsEarliestAndLatestFollowRetention) {
  broker_config c;
  c.retention_bytes = 200;
  auto b = make(c);
  const std::string v(50, 'x');
  for (int i = 0; i < 10; ++i) respond(b, produce_request(i, 1, "test-topic", 0, message_set({{"k", v}})));
  // Each entry is 12 + 14 + 1 + 50 = 77 bytes: two fit in 200 bytes.
  const auto earliest = parse_list_offsets(respond(b, list_offsets_request(20, "test-topic", 0, -2)));
  const auto latest = parse_list_offsets(respond(b, list_offsets_request(21, "test-topic", 0, -1)));
  ASSERT_TRUE(earliest.ok && latest.ok);
  ASSERT_EQ(earliest.offsets.size(), 1u);
  EXPECT_EQ(earliest.offsets[0], 8);
  EXPECT_EQ(latest.offsets[0], 10);
  EXPECT_LE(b.topic("test-topic")->at(0).bytes(), 200u);
  // Fetching below the earliest offset is out of range.
  EXPECT_EQ(parse_fetch(respond(b, fetch_req(22, 0, 0, "test-topic", 0, 3))).error,
            code(error_code::offset_out_of_range));
  EXPECT_EQ(parse_list_offsets(respond(b, list_offsets_request(23, "nope", 0, -1))).error,
            code(error_code::unknown_topic_or_partition));
}

TEST_F(DevbrokerRequests, FetchWithoutDataAsksToWaitAndBecomesReadyAfterAppend) {
  auto b = make();
  int appended = 0;
  b.on_append([&] { ++appended; });
  auto o = b.handle(fetch_req(1, 500, 1, "test-topic", 0, 0), 0, listener_kind::ws);
  ASSERT_EQ(o.what, outcome::action::wait_fetch);
  ASSERT_TRUE(o.fetch);
  EXPECT_FALSE(b.fetch_ready(*o.fetch, 0));
  respond(b, produce_request(2, 1, "test-topic", 0, message_set({{"k", "v"}})));
  EXPECT_EQ(appended, 1);
  EXPECT_TRUE(b.fetch_ready(*o.fetch, 0));
  auto f = parse_fetch(b.fetch_response(*o.fetch, 0));
  EXPECT_EQ(f.correlation_id, 1);
  ASSERT_EQ(f.messages.size(), 1u);
}

TEST_F(DevbrokerRequests, FetchReturnsAtLeastOneWholeMessageLargerThanMaxBytes) {
  auto b = make();
  const std::string big(900 * 1024, 'b');
  respond(b, produce_request(1, 1, "test-topic", 0, message_set({{"k", big}, {"k2", "small"}})));
  auto f = parse_fetch(respond(b, fetch_req(2, 0, 0, "test-topic", 0, 0, 1024)));
  ASSERT_TRUE(f.ok);
  ASSERT_EQ(f.messages.size(), 1u);
  EXPECT_EQ(f.messages[0].value->size(), big.size());
}

TEST_F(DevbrokerRequests, MalformedUnknownAndUnsupportedRequestsClose) {
  auto b = make();
  // Truncated produce body.
  bytes p = produce_request(1, 1, "test-topic", 0, message_set({{"k", "v"}}));
  p.resize(p.size() - 5);
  kws::store_be32(p.data(), static_cast<std::int32_t>(p.size() - 4));
  auto o = b.handle(p, 0, listener_kind::ws);
  EXPECT_EQ(o.what, outcome::action::close);
  EXPECT_NE(o.reason.find("malformed produce"), std::string::npos) << o.reason;
  // Unknown API key.
  o = b.handle(request(static_cast<api_key>(10), 1, 2, [](kws::kafka::writer&) {}), 0, listener_kind::ws);
  EXPECT_EQ(o.what, outcome::action::close);
  EXPECT_NE(o.reason.find("unsupported API key 10"), std::string::npos) << o.reason;
  // Metadata v2 is not spoken here.
  o = b.handle(request(api_key::metadata, 2, 3, [](kws::kafka::writer& w) { w.array_count(0); }), 0,
               listener_kind::ws);
  EXPECT_EQ(o.what, outcome::action::close);
  EXPECT_NE(o.reason.find("unsupported version 2 of metadata"), std::string::npos) << o.reason;
  // Header too short.
  o = b.handle(bytes{0, 0, 0, 2, 0, 3}, 0, listener_kind::ws);
  EXPECT_EQ(o.what, outcome::action::close);
  // Trailing garbage after a metadata request.
  bytes m = metadata_request(4, {});
  m.push_back(0);
  kws::store_be32(m.data(), static_cast<std::int32_t>(m.size() - 4));
  EXPECT_EQ(b.handle(m, 0, listener_kind::ws).what, outcome::action::close);
}

TEST(DevbrokerMessageSet, MagicOneConvertsToMagicZeroWithTheSameOffsetKeyAndValue) {
  bytes set;
  kws::kafka::writer w(set);
  const bytes k = to_bytes("key"), v = to_bytes("value");
  // Attribute bit 3 (LogAppendTime) exists only in magic 1 and must not survive the conversion.
  encode_message(w, 42, kws::kafka::bytes_view(k), kws::kafka::bytes_view(v), 1, 1700000000123, 0x08);
  std::vector<message_view> in;
  std::string why;
  ASSERT_EQ(parse_message_set(set, in, why), error_code::none) << why;

  bytes converted;
  kws::kafka::writer cw(converted);
  encode_as_magic_0(cw, in[0]);
  std::vector<message_view> out;
  ASSERT_EQ(parse_message_set(converted, out, why), error_code::none) << why;  // CRC checked too
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].offset, 42);
  EXPECT_EQ(out[0].magic, 0);
  EXPECT_EQ(out[0].attributes, 0);
  EXPECT_EQ(out[0].timestamp, -1);
  EXPECT_EQ(to_string(*out[0].key), "key");
  EXPECT_EQ(to_string(*out[0].value), "value");
  EXPECT_EQ(converted.size(), set.size() - 8);  // the timestamp is gone
}

TEST_F(DevbrokerRequests, ProduceV1AnswersWithThrottleTimeAfterThePartitions) {
  auto b = make();
  const auto res = respond(b, produce_request(31, 1, "test-topic", 0, message_set({{"k", "v"}}), 1));
  const auto p = parse_produce(res, 1);
  ASSERT_TRUE(p.ok);  // every byte consumed: no log_append_time in v1
  EXPECT_EQ(p.correlation_id, 31);
  EXPECT_EQ(p.topic, "test-topic");
  EXPECT_EQ(p.partition, 0);
  EXPECT_EQ(p.error, 0);
  EXPECT_EQ(p.base_offset, 0);
  EXPECT_EQ(p.throttle_time_ms, 0);
}

TEST_F(DevbrokerRequests, ProduceV2AnswersLogAppendTimeMinusOneAndKeepsMagicOneTimestamps) {
  auto b = make();
  respond(b, produce_request(1, 1, "test-topic", 0, message_set({{"a", "0"}})));
  const auto set = message_set({{"k1", "v1"}, {std::nullopt, "v2"}}, 1, 1700000000777);
  const auto p = parse_produce(respond(b, produce_request(32, -1, "test-topic", 0, set, 2)), 2);
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.correlation_id, 32);
  EXPECT_EQ(p.topic, "test-topic");
  EXPECT_EQ(p.partition, 0);
  EXPECT_EQ(p.error, 0);
  EXPECT_EQ(p.base_offset, 1);
  EXPECT_EQ(p.log_append_time, -1);  // CreateTime topics
  EXPECT_EQ(p.throttle_time_ms, 0);

  // Errors carry the same fields.
  const auto bad = parse_produce(respond(b, produce_request(33, 1, "test-topic", 7, set, 2)), 2);
  ASSERT_TRUE(bad.ok);
  EXPECT_EQ(bad.partition, 7);
  EXPECT_EQ(bad.error, code(error_code::unknown_topic_or_partition));
  EXPECT_EQ(bad.base_offset, -1);
  EXPECT_EQ(bad.log_append_time, -1);
  EXPECT_EQ(bad.throttle_time_ms, 0);

  // acks=0 still gets no response in v2.
  EXPECT_EQ(b.handle(produce_request(34, 0, "test-topic", 0, set, 2), 0, listener_kind::ws).what,
            outcome::action::no_response);
  EXPECT_EQ(b.topic("test-topic")->at(0).high_watermark(), 5);
}

TEST_F(DevbrokerRequests, FetchV2StartsWithThrottleTimeAndReturnsMagicOneAsStored) {
  auto b = make();
  respond(b, produce_request(1, 1, "test-topic", 0, message_set({{"old", "zero"}})));
  respond(b, produce_request(2, 1, "test-topic", 0, message_set({{"new", "one"}}, 1, 1700000000555), 2));
  const auto res = respond(b, fetch_req(40, 0, 0, "test-topic", 0, 0, 1 << 20, 2));
  const auto f = parse_fetch(res, 2);  // its messages are views into `res`
  ASSERT_TRUE(f.ok);
  EXPECT_EQ(f.correlation_id, 40);
  EXPECT_EQ(f.throttle_time_ms, 0);
  EXPECT_EQ(f.topic, "test-topic");
  EXPECT_EQ(f.partition, 0);
  EXPECT_EQ(f.error, 0);
  EXPECT_EQ(f.high_watermark, 2);
  ASSERT_EQ(f.messages.size(), 2u);
  EXPECT_EQ(f.messages[0].magic, 0);
  EXPECT_EQ(f.messages[0].offset, 0);
  EXPECT_EQ(f.messages[1].magic, 1);
  EXPECT_EQ(f.messages[1].offset, 1);
  EXPECT_EQ(f.messages[1].timestamp, 1700000000555);
  EXPECT_EQ(to_string(*f.messages[1].key), "new");
  EXPECT_EQ(to_string(*f.messages[1].value), "one");
}

TEST_F(DevbrokerRequests, FetchV0AndV1GetMagicOneMessagesConvertedToMagicZero) {
  auto b = make();
  const std::vector<kv> msgs{{"k1", "v1"}, {std::nullopt, "null key"}, {"k3", std::nullopt}};
  respond(b, produce_request(1, 1, "test-topic", 0, message_set(msgs, 1), 2));
  for (std::int16_t version : {0, 1}) {
    SCOPED_TRACE(version);
    const auto res = respond(b, fetch_req(50 + version, 0, 0, "test-topic", 0, 0, 1 << 20, version));
    const auto f = parse_fetch(res, version);
    ASSERT_TRUE(f.ok);  // every CRC checked
    EXPECT_EQ(f.correlation_id, 50 + version);
    EXPECT_EQ(f.throttle_time_ms, version == 0 ? -100 : 0);
    EXPECT_EQ(f.topic, "test-topic");
    EXPECT_EQ(f.partition, 0);
    EXPECT_EQ(f.error, 0);
    EXPECT_EQ(f.high_watermark, 3);
    ASSERT_EQ(f.messages.size(), 3u);
    for (std::size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(f.messages[i].magic, 0);
      EXPECT_EQ(f.messages[i].offset, static_cast<std::int64_t>(i));
      EXPECT_EQ(f.messages[i].key.has_value(), msgs[i].key.has_value());
      EXPECT_EQ(f.messages[i].value.has_value(), msgs[i].value.has_value());
    }
    EXPECT_EQ(to_string(*f.messages[0].key), "k1");
    EXPECT_EQ(to_string(*f.messages[1].value), "null key");
  }
}

TEST_F(DevbrokerRequests, ParkedFetchV2IsAnsweredInItsOwnVersion) {
  auto b = make();
  auto o = b.handle(fetch_req(60, 500, 1, "test-topic", 0, 0, 1 << 20, 2), 0, listener_kind::ws);
  ASSERT_EQ(o.what, outcome::action::wait_fetch);
  respond(b, produce_request(61, 1, "test-topic", 0, message_set({{"k", "v"}}, 1), 2));
  ASSERT_TRUE(b.fetch_ready(*o.fetch, 0));
  const auto res = b.fetch_response(*o.fetch, 0);
  const auto f = parse_fetch(res, 2);
  ASSERT_TRUE(f.ok);
  EXPECT_EQ(f.correlation_id, 60);
  EXPECT_EQ(f.throttle_time_ms, 0);
  ASSERT_EQ(f.messages.size(), 1u);
  EXPECT_EQ(f.messages[0].magic, 1);
}

TEST_F(DevbrokerRequests, ListOffsetsV1AnswersOneOffsetWithItsTimestamp) {
  auto b = make();
  // Offsets 0 (magic 0, no timestamp), 1 and 2 (time 1000), 3 (time 3000).
  respond(b, produce_request(1, 1, "test-topic", 0, message_set({{"a", "0"}})));
  respond(b, produce_request(2, 1, "test-topic", 0, message_set({{"b", "1"}, {"c", "2"}}, 1, 1000), 2));
  respond(b, produce_request(3, 1, "test-topic", 0, message_set({{"d", "3"}}, 1, 3000), 2));

  struct query {
    std::int64_t timestamp;
    std::int64_t want_timestamp;
    std::int64_t want_offset;
  };
  const query queries[] = {
      {-1, -1, 4},                                       // latest: the high watermark, no timestamp
      {-2, -1, 0},                                       // earliest
      {0, 1000, 1},                                      // the first message at or after time 0
      {1000, 1000, 1}, {1001, 3000, 3}, {3001, -1, -1},  // none that late
  };
  std::int32_t corr = 70;
  for (const auto& q : queries) {
    SCOPED_TRACE(q.timestamp);
    const auto l =
        parse_list_offsets(respond(b, list_offsets_request(corr, "test-topic", 0, q.timestamp, 1)), 1);
    ASSERT_TRUE(l.ok);
    EXPECT_EQ(l.correlation_id, corr++);
    EXPECT_EQ(l.topic, "test-topic");
    EXPECT_EQ(l.partition, 0);
    EXPECT_EQ(l.error, 0);
    EXPECT_EQ(l.timestamp, q.want_timestamp);
    EXPECT_EQ(l.offset, q.want_offset);
  }

  const auto unknown = parse_list_offsets(respond(b, list_offsets_request(80, "test-topic", 3, -1, 1)), 1);
  ASSERT_TRUE(unknown.ok);
  EXPECT_EQ(unknown.partition, 3);
  EXPECT_EQ(unknown.error, code(error_code::unknown_topic_or_partition));
  EXPECT_EQ(unknown.timestamp, -1);
  EXPECT_EQ(unknown.offset, -1);
}

TEST_F(DevbrokerRequests, MetadataV1NullMeansAllTopicsAndAddsRackControllerAndIsInternal) {
  broker_config c;
  c.nodes = 2;
  c.topics = {{"one", 1}, {"two", 3}};
  auto b = make(c);
  const auto m = parse_metadata(respond(b, metadata_request_v1(90, std::nullopt), 1), 1);
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.correlation_id, 90);
  ASSERT_EQ(m.brokers.size(), 3u);  // as advertised on the listener
  EXPECT_EQ(m.brokers[1].node_id, 1);
  EXPECT_EQ(m.brokers[1].host, "ws.example");
  EXPECT_EQ(m.brokers[1].port, 9001);
  for (const auto& br : m.brokers) EXPECT_FALSE(br.rack.has_value());
  EXPECT_EQ(m.controller_id, 0);
  ASSERT_EQ(m.topics.size(), 2u);
  EXPECT_EQ(m.topics[0].name, "one");
  EXPECT_EQ(m.topics[1].name, "two");
  for (const auto& t : m.topics) {
    EXPECT_EQ(t.error, 0);
    EXPECT_FALSE(t.is_internal);
  }
  ASSERT_EQ(m.topics[1].partitions.size(), 3u);
  for (const auto& p : m.topics[1].partitions) {
    EXPECT_EQ(p.error, 0);
    EXPECT_EQ(p.leader, p.index % 2);
    EXPECT_EQ(p.replicas, std::vector<std::int32_t>{p.leader});
    EXPECT_EQ(p.isr, std::vector<std::int32_t>{p.leader});
  }
}

TEST_F(DevbrokerRequests, MetadataV1EmptyListMeansNoTopicsAndNamedTopicsAreAutoCreated) {
  auto b = make();
  const auto none = parse_metadata(
      respond(b, metadata_request_v1(91, std::vector<std::string>{}), 0, listener_kind::tcp), 1);
  ASSERT_TRUE(none.ok);
  EXPECT_EQ(none.correlation_id, 91);
  ASSERT_EQ(none.brokers.size(), 1u);
  EXPECT_EQ(none.brokers[0].host, "127.0.0.1");
  EXPECT_EQ(none.brokers[0].port, 19092);
  EXPECT_FALSE(none.brokers[0].rack.has_value());
  EXPECT_EQ(none.controller_id, 0);
  EXPECT_TRUE(none.topics.empty());

  const auto named =
      parse_metadata(respond(b, metadata_request_v1(92, std::vector<std::string>{"fresh", "a/b"})), 1);
  ASSERT_TRUE(named.ok);
  ASSERT_EQ(named.topics.size(), 2u);
  EXPECT_EQ(named.topics[0].name, "fresh");
  EXPECT_EQ(named.topics[0].error, 0);
  EXPECT_FALSE(named.topics[0].is_internal);
  ASSERT_EQ(named.topics[0].partitions.size(), 1u);
  EXPECT_EQ(named.topics[1].name, "a/b");
  EXPECT_EQ(named.topics[1].error, code(error_code::invalid_topic_exception));
  EXPECT_TRUE(named.topics[1].partitions.empty());
  EXPECT_NE(b.topic("fresh"), nullptr);
}

TEST_F(DevbrokerRequests, VersionsAboveKafka0100CloseTheConnection) {
  auto b = make();
  const auto empty = [](kws::kafka::writer&) {};
  const std::pair<api_key, std::int16_t> too_new[] = {
      {api_key::produce, 3}, {api_key::fetch, 3}, {api_key::list_offsets, 2}, {api_key::metadata, 2}};
  for (const auto& [key, version] : too_new) {
    const auto o = b.handle(request(key, version, 5, empty), 0, listener_kind::ws);
    EXPECT_EQ(o.what, outcome::action::close);
    EXPECT_NE(o.reason.find("unsupported version " + std::to_string(version)), std::string::npos) << o.reason;
  }
}

TEST_F(DevbrokerRequests, Kafka08ModeClosesOnAnythingButVersionZero) {
  broker_config c;
  c.kafka_08_only = true;
  auto b = make(c);
  const auto set = message_set({{"k", "v"}});
  const bytes v1_requests[] = {
      produce_request(1, 1, "test-topic", 0, set, 1), fetch_req(2, 0, 0, "test-topic", 0, 0, 1 << 20, 1),
      list_offsets_request(3, "test-topic", 0, -1, 1), metadata_request_v1(4, std::nullopt)};
  for (const auto& req : v1_requests) {
    const auto o = b.handle(req, 0, listener_kind::ws);
    EXPECT_EQ(o.what, outcome::action::close);
    EXPECT_NE(o.reason.find("unsupported version 1"), std::string::npos) << o.reason;
  }
  // The v0 paths answer as before.
  EXPECT_EQ(parse_produce(respond(b, produce_request(5, 1, "test-topic", 0, set))).error, 0);
  const auto f = parse_fetch(respond(b, fetch_req(6, 0, 0, "test-topic", 0, 0)));
  ASSERT_TRUE(f.ok);
  EXPECT_EQ(f.messages.size(), 1u);
  EXPECT_EQ(parse_list_offsets(respond(b, list_offsets_request(7, "test-topic", 0, -1))).offsets,
            std::vector<std::int64_t>{1});
  EXPECT_TRUE(parse_metadata(respond(b, metadata_request(8, {}))).ok);
}
