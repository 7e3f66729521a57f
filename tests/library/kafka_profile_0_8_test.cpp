// The tracker's Kafka 0.8 profile, byte for byte: a Fetch that repeats a topic goes to the broker merged and
// its answer comes back in the client's shape; requests outside the profile are answered by the tracker.
#include "kafka_encoder.hpp"

#include <kws/frame.hpp>
#include <kws/kafka/tracker.hpp>

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace {

namespace kt = kws::test::kafka;
using kws::frame_action;
using kws::kafka::broker_api;
using kws::kafka::tracker;
using kws::kafka::tracker_config;
using bytes = std::vector<unsigned char>;

// Prepends the 4-byte size.
bytes sized(const bytes& body) {
  kt::out_buf f(false);
  f.i32(static_cast<std::int32_t>(body.size()));
  f.raw(body);
  return f.data();
}

// A request with header v1 (client id "c").
bytes make_request(std::int16_t key, std::int16_t version, std::int32_t correlation_id, const bytes& body) {
  kt::out_buf o(false);
  o.i16(key);
  o.i16(version);
  o.i32(correlation_id);
  o.str("c");
  o.raw(body);
  return sized(o.data());
}

using topic_partitions = std::vector<std::pair<std::string, std::vector<std::int32_t>>>;

// Fetch v0: partition p of each topic asks from offset 100 + p.
bytes fetch_v0(std::int32_t correlation_id, const topic_partitions& topics) {
  kt::out_buf o(false);
  o.i32(-1);   // replica_id
  o.i32(500);  // max_wait_ms
  o.i32(1);    // min_bytes
  o.i32(static_cast<std::int32_t>(topics.size()));
  for (const auto& [name, partitions] : topics) {
    o.str(name);
    o.i32(static_cast<std::int32_t>(partitions.size()));
    for (const auto p : partitions) {
      o.i32(p);
      o.i64(100 + p);
      o.i32(1 << 20);
    }
  }
  return make_request(1, 0, correlation_id, o.data());
}

// A Fetch v0 response: partition p of topic t carries records "t/p", high watermark 1000 + p.
bytes fetch_response_v0(std::int32_t correlation_id, const topic_partitions& topics) {
  kt::out_buf o(false);
  o.i32(correlation_id);
  o.i32(static_cast<std::int32_t>(topics.size()));
  for (const auto& [name, partitions] : topics) {
    o.str(name);
    o.i32(static_cast<std::int32_t>(partitions.size()));
    for (const auto p : partitions) {
      o.i32(p);
      o.i16(0);
      o.i64(1000 + p);
      const std::string records = name + "/" + std::to_string(p);
      o.i32(static_cast<std::int32_t>(records.size()));
      o.raw(bytes(records.begin(), records.end()));
    }
  }
  return sized(o.data());
}

std::shared_ptr<const tracker_config> config_0_8() {
  auto c = std::make_shared<tracker_config>();
  c->rewrite = false;
  c->api = broker_api::kafka_0_8;
  c->broker_max_in_flight = 0;
  return c;
}

TEST(KafkaProfile08, AFetchThatRepeatsATopicIsMergedAndItsAnswerComesBackInTheClientsShape) {
  tracker t(config_0_8());
  std::vector<std::string> notes;
  t.set_log([&](kws::log_level, std::string_view text) { notes.emplace_back(text); }, kws::log_level::debug);
  // librdkafka's shape: partitions of two topics interleaved.
  const topic_partitions asked{{"a", {0}}, {"b", {0}}, {"a", {1}}, {"b", {1, 2}}};
  bytes merged;
  ASSERT_EQ(t.on_request(fetch_v0(7, asked), merged), frame_action::replace);
  EXPECT_EQ(merged, fetch_v0(7, {{"a", {0, 1}}, {"b", {0, 1, 2}}}));
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("names a topic more than once"), std::string::npos) << notes[0];

  // The broker answers per topic, topics in another order than asked: the client still gets its own shape.
  bytes back;
  std::string error;
  ASSERT_EQ(t.on_response(fetch_response_v0(7, {{"b", {2, 0, 1}}, {"a", {1, 0}}}), back, error),
            frame_action::replace)
      << error;
  EXPECT_EQ(back, fetch_response_v0(7, asked));
  EXPECT_EQ(t.in_flight(), 0u);
}

TEST(KafkaProfile08, AFetchWithoutRepeatsAndOtherRequestsOfTheProfileGoAsTheyAre) {
  tracker t(config_0_8());
  bytes out;
  EXPECT_EQ(t.on_request(fetch_v0(1, {{"a", {0, 1}}, {"b", {0}}}), out), frame_action::forward);
  EXPECT_EQ(t.on_request(make_request(3, 0, 2, {0, 0, 0, 0}), out), frame_action::forward);  // Metadata v0
  std::string error;
  EXPECT_EQ(t.on_response(fetch_response_v0(1, {{"a", {0, 1}}, {"b", {0}}}), out, error),
            frame_action::forward);
}

TEST(KafkaProfile08, AnAnswerToAMergedFetchThatLacksAPartitionFailsTheConnection) {
  tracker t(config_0_8());
  bytes out;
  ASSERT_EQ(t.on_request(fetch_v0(4, {{"a", {0}}, {"a", {1}}}), out), frame_action::replace);
  std::string error;
  EXPECT_EQ(t.on_response(fetch_response_v0(4, {{"a", {0}}}), out, error), frame_action::fail);
  EXPECT_NE(error.find("no partition a-1"), std::string::npos) << error;
}

// ApiVersions v3 (librdkafka's), answered by the tracker from the profile.
void negotiate(tracker& t) {
  bytes out;
  ASSERT_EQ(t.on_request(make_request(18, 3, 99, {0, 0}), out), frame_action::answer);
  ASSERT_TRUE(t.take_local_response().has_value());
}

TEST(KafkaProfile08, FindCoordinatorIsAnsweredUnsupportedVersionAndGroupsAreNamedOncePerConnection) {
  tracker t(config_0_8());
  std::vector<std::pair<kws::log_level, std::string>> notes;
  t.set_log([&](kws::log_level l, std::string_view text) { notes.emplace_back(l, text); },
            kws::log_level::info);
  ASSERT_NO_FATAL_FAILURE(negotiate(t));
  kt::out_buf body(false);
  body.str("group-1");
  bytes out;
  ASSERT_EQ(t.on_request(make_request(10, 0, 5, body.data()), out), frame_action::answer);
  ASSERT_EQ(t.on_request(make_request(10, 0, 6, body.data()), out), frame_action::answer);
  // FindCoordinator v0: error_code, node_id, host, port.
  kt::out_buf want(false);
  want.i32(5);
  want.i16(35);
  want.i32(-1);
  want.str("");
  want.i32(-1);
  EXPECT_EQ(t.take_local_response(), sized(want.data()));
  ASSERT_TRUE(t.take_local_response().has_value());
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_EQ(notes[0].first, kws::log_level::info);
  EXPECT_NE(notes[0].second.find("need a broker that has them"), std::string::npos) << notes[0].second;
}

TEST(KafkaProfile08, GroupAnswersCarryTheErrorInTheirOwnShape) {
  tracker t(config_0_8());
  bytes out;
  // OffsetFetch v1 for group "g", topic "a" partitions 0 and 3: each partition gets offset -1 and the error.
  kt::out_buf body(false);
  body.str("g");
  body.i32(1);
  body.str("a");
  body.i32(2);
  body.i32(0);
  body.i32(3);
  ASSERT_EQ(t.on_request(make_request(9, 1, 8, body.data()), out), frame_action::answer);
  kt::out_buf want(false);
  want.i32(8);
  want.i32(1);
  want.str("a");
  want.i32(2);
  for (std::int32_t p : {0, 3}) {
    want.i32(p);
    want.i64(-1);
    want.str("");
    want.i16(35);
  }
  EXPECT_EQ(t.take_local_response(), sized(want.data()));

  // Heartbeat v1: throttle_time_ms, error_code.
  ASSERT_EQ(t.on_request(make_request(12, 1, 9, {}), out), frame_action::answer);
  EXPECT_EQ(t.take_local_response(), sized({0, 0, 0, 9, 0, 0, 0, 0, 0, 35}));
}

TEST(KafkaProfile08, VersionsAndApisOutsideTheProfileAreAnsweredInRequestOrderAndNeverSent) {
  tracker t(config_0_8());
  bytes out;
  EXPECT_EQ(t.on_request(fetch_v0(1, {{"a", {0}}}), out), frame_action::forward);
  // Metadata v1, then an API the proxy has no shape for (CreateTopics v0): the error code follows the
  // correlation id.
  EXPECT_EQ(t.on_request(make_request(3, 1, 2, {0, 0, 0, 0}), out), frame_action::answer);
  EXPECT_EQ(t.on_request(make_request(19, 0, 3, {}), out), frame_action::answer);
  EXPECT_FALSE(t.take_local_response().has_value());  // the Fetch is answered first
  std::string error;
  EXPECT_EQ(t.on_response(fetch_response_v0(1, {{"a", {0}}}), out, error), frame_action::forward);
  EXPECT_EQ(t.take_local_response(), sized({0, 0, 0, 2, 0, 35}));
  EXPECT_EQ(t.take_local_response(), sized({0, 0, 0, 3, 0, 35}));
  // Produce v2 with acks=0 expects nothing: dropped.
  EXPECT_EQ(t.on_request(make_request(0, 2, 4, {0, 0, 0, 0, 0, 10, 0, 0, 0, 0}), out), frame_action::drop);
  EXPECT_EQ(t.in_flight(), 0u);
}

TEST(KafkaProfile08, KafkaPythonsVersionProbesGetSilenceUnlessTheClientNegotiatedWithApiVersions) {
  tracker t(config_0_8());
  bytes out;
  kt::out_buf group(false);
  group.str("kafka-python-default-group");
  EXPECT_EQ(t.on_request(make_request(16, 0, 1, {}), out), frame_action::drop);            // ListGroups v0
  EXPECT_EQ(t.on_request(make_request(10, 0, 2, group.data()), out), frame_action::drop);  // FindCoordinator
  group.i32(0);
  EXPECT_EQ(t.on_request(make_request(9, 0, 3, group.data()), out), frame_action::drop);  // OffsetFetch v0
  EXPECT_EQ(t.in_flight(), 0u);
  // Anything else outside the profile is answered all the same.
  EXPECT_EQ(t.on_request(make_request(16, 1, 4, {}), out), frame_action::answer);
  ASSERT_NO_FATAL_FAILURE(negotiate(t));  // the ListGroups v1 answer goes first
  EXPECT_EQ(t.on_request(make_request(16, 0, 5, {}), out), frame_action::answer);
}

TEST(KafkaProfile08, WithANegotiatingBrokerNothingIsAnsweredOrMerged) {
  auto c = std::make_shared<tracker_config>(*config_0_8());
  c->api = broker_api::negotiate;
  tracker t(c);
  bytes out;
  EXPECT_EQ(t.on_request(fetch_v0(1, {{"a", {0}}, {"a", {1}}}), out), frame_action::forward);
  EXPECT_EQ(t.on_request(make_request(10, 0, 2, {0, 1, 'g'}), out), frame_action::forward);
}

}  // namespace
