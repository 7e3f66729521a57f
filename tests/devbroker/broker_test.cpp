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

TEST_F(DevbrokerRequests, ApiVersionsV0ListsTheFiveSupportedApis) {
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
  const std::vector<std::tuple<int, int, int>> want{{0, 0, 0}, {1, 0, 0}, {2, 0, 0}, {3, 0, 0}, {18, 0, 3}};
  EXPECT_EQ(got, want);
}

TEST_F(DevbrokerRequests, ApiVersionsV3HasFlexibleBodyButResponseHeaderV0) {
  auto b = make();
  const auto res = respond(b, api_versions_request(9, 3));
  auto r = open_response(res);
  EXPECT_EQ(r.correlation_id, 9);
  // Right after the correlation id comes the error code: no tagged-field byte in the response header.
  EXPECT_EQ(r.body.int16(), 0);
  ASSERT_EQ(r.body.compact_array_count(), 5);
  for (int i = 0; i < 5; ++i) {
    (void)r.body.int16();
    (void)r.body.int16();
    (void)r.body.int16();
    r.body.skip_tagged_fields();
  }
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
  const auto res = respond(b, api_versions_request(11, 4));
  auto r = open_response(res);
  EXPECT_EQ(r.correlation_id, 11);
  EXPECT_EQ(r.body.int16(), code(error_code::unsupported_version));
  ASSERT_EQ(r.body.array_count(), 1);
  EXPECT_EQ(r.body.int16(), 18);
  EXPECT_EQ(r.body.int16(), 0);
  EXPECT_EQ(r.body.int16(), 3);
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
  // Metadata v1 is not spoken here.
  o = b.handle(request(api_key::metadata, 1, 3, [](kws::kafka::writer& w) { w.array_count(0); }), 0,
               listener_kind::ws);
  EXPECT_EQ(o.what, outcome::action::close);
  EXPECT_NE(o.reason.find("unsupported version 1"), std::string::npos) << o.reason;
  // Header too short.
  o = b.handle(bytes{0, 0, 0, 2, 0, 3}, 0, listener_kind::ws);
  EXPECT_EQ(o.what, outcome::action::close);
  // Trailing garbage after a metadata request.
  bytes m = metadata_request(4, {});
  m.push_back(0);
  kws::store_be32(m.data(), static_cast<std::int32_t>(m.size() - 4));
  EXPECT_EQ(b.handle(m, 0, listener_kind::ws).what, outcome::action::close);
}
