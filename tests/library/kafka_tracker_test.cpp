// kws::kafka::tracker, the frame hook of the Kafka-aware proxy, with no I/O: requests in, responses in,
// verdicts and replacement frames out, read back with the tests' own Kafka encoder and decoder.
#include "kafka_encoder.hpp"

#include <kws/frame.hpp>
#include <kws/kafka/tracker.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <string>

namespace {

namespace kt = kws::test::kafka;
using kws::frame_action;
using kws::kafka::broker_api;
using kws::kafka::tracker;
using kws::kafka::tracker_config;
using bytes = std::vector<unsigned char>;

// A request frame: api key, version, correlation id, client id "t" (header v1; v2 adds empty tagged fields
// for flexible versions), then `body`.
bytes request(std::int16_t key, std::int16_t version, std::int32_t correlation_id, bool flexible = false,
              const bytes& body = {}) {
  kt::out_buf o(false);
  o.i16(key);
  o.i16(version);
  o.i32(correlation_id);
  o.i16(1);
  o.raw(bytes{'t'});
  if (flexible) o.raw(bytes{0});
  o.raw(body);
  kt::out_buf f(false);
  f.i32(static_cast<std::int32_t>(o.data().size()));
  f.raw(o.data());
  return f.data();
}

bytes produce_v0(std::int16_t acks, std::int32_t correlation_id) {
  return request(
      0, 0, correlation_id, false,
      {static_cast<unsigned char>(acks >> 8), static_cast<unsigned char>(acks), 0, 0, 0, 10, 0, 0, 0, 0});
}

// A response frame that is not Kafka-shaped beyond its correlation id.
bytes opaque_response(std::int32_t correlation_id, const std::string& body = "body") {
  return kt::frame({correlation_id, {}}, false, bytes(body.begin(), body.end()));
}

kt::metadata_response metadata(std::int32_t port1) {
  kt::metadata_response m;
  m.brokers = {{0, "edge.example.com", 443, std::nullopt, {}}, {1, "b1.internal", port1, std::nullopt, {}}};
  m.controller_id = 0;
  return m;
}

// Maps broker n to proxy:(7000 + n), and counts its calls.
struct test_map {
  int calls = 0;
  std::optional<kws::kafka::broker_endpoint> operator()(const kws::kafka::advertised_broker& b,
                                                        boost::system::error_code&) {
    ++calls;
    return kws::kafka::broker_endpoint{"proxy", 7000 + b.node_id};
  }
};

std::shared_ptr<const tracker_config> config(bool rewrite = true, broker_api api = broker_api::negotiate,
                                             std::size_t max_in_flight = 1024, test_map* map = nullptr) {
  auto c = std::make_shared<tracker_config>();
  c->rewrite = rewrite;
  c->api = api;
  c->max_in_flight = max_in_flight;
  if (rewrite) {
    c->map = [map](const kws::kafka::advertised_broker& b, boost::system::error_code& ec) {
      if (map) return (*map)(b, ec);
      return std::optional<kws::kafka::broker_endpoint>(
          kws::kafka::broker_endpoint{"proxy", 7000 + b.node_id});
    };
  }
  return c;
}

struct verdict {
  frame_action action;
  bytes out;
  std::string error;
};

verdict respond(tracker& t, const bytes& frame) {
  verdict v;
  v.action = t.on_response(frame, v.out, v.error);
  return v;
}

frame_action ask(tracker& t, const bytes& frame) {
  bytes ignored;
  return t.on_request(frame, ignored);
}

TEST(KafkaTracker, RewritesMetadataAndPassesOtherResponsesInRequestOrder) {
  test_map map;
  tracker t(config(true, broker_api::negotiate, 1024, &map));
  EXPECT_EQ(ask(t, request(1, 0, 1)), frame_action::forward);  // Fetch v0: nothing to rewrite
  EXPECT_EQ(ask(t, request(3, 1, 2)), frame_action::forward);  // Metadata v1
  EXPECT_EQ(t.in_flight(), 2u);

  const auto fetch_answer = opaque_response(1);
  auto v = respond(t, fetch_answer);
  EXPECT_EQ(v.action, frame_action::forward);
  EXPECT_EQ(map.calls, 0);

  v = respond(t, kt::encode_metadata(metadata(9092), 1, {2, {}}));
  ASSERT_EQ(v.action, frame_action::replace) << v.error;
  kt::response_header h;
  const auto got = kt::decode_metadata(v.out, 1, &h);
  EXPECT_EQ(h.correlation_id, 2);
  ASSERT_EQ(got.brokers.size(), 2u);
  EXPECT_EQ(got.brokers[0], (kt::metadata_broker{0, "proxy", 7000, std::nullopt, {}}));
  EXPECT_EQ(got.brokers[1], (kt::metadata_broker{1, "proxy", 7001, std::nullopt, {}}));
  EXPECT_EQ(t.in_flight(), 0u);
}

TEST(KafkaTracker, ProduceWithAcksZeroOwesNothing) {
  tracker t(config());
  EXPECT_EQ(ask(t, produce_v0(0, 1)), frame_action::forward);
  EXPECT_EQ(t.in_flight(), 0u);
  EXPECT_EQ(ask(t, produce_v0(1, 2)), frame_action::forward);
  EXPECT_EQ(t.in_flight(), 1u);
}

TEST(KafkaTracker, FramesItCannotReadPassThroughAndSettleTheOldestRequest) {
  tracker t(config());
  const bytes hello{0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'};
  EXPECT_EQ(ask(t, hello), frame_action::forward);
  EXPECT_EQ(t.in_flight(), 1u);
  // An echo peer sends the same bytes back: no correlation id matches, the oldest request is settled.
  EXPECT_EQ(respond(t, hello).action, frame_action::forward);
  EXPECT_EQ(t.in_flight(), 0u);
  // A response with nothing in flight passes too.
  EXPECT_EQ(respond(t, opaque_response(9)).action, frame_action::forward);
}

TEST(KafkaTracker, AResponseToALaterRequestSettlesTheUnansweredOnesBeforeIt) {
  tracker t(config());
  ask(t, request(1, 0, 1));  // never answered
  ask(t, request(3, 0, 2));
  ask(t, request(1, 0, 3));
  const auto v = respond(t, kt::encode_metadata(metadata(9092), 0, {2, {}}));
  EXPECT_EQ(v.action, frame_action::replace) << "decoded as the Metadata v0 answer it is";
  EXPECT_EQ(t.in_flight(), 1u);
}

TEST(KafkaTracker, StopsTakingRequestsAtItsBound) {
  tracker t(config(true, broker_api::negotiate, 2));
  ask(t, request(1, 0, 1));
  EXPECT_TRUE(t.can_take_request());
  ask(t, request(1, 0, 2));
  EXPECT_FALSE(t.can_take_request());
  respond(t, opaque_response(1));
  EXPECT_TRUE(t.can_take_request());
}

TEST(KafkaTracker, BrokerMaxInFlightIsOneForKafka08AndNoLimitOtherwiseUnlessSet) {
  using kws::kafka::request_limit;
  tracker_config c;
  EXPECT_EQ(request_limit(c), 1024u) << "no limit beyond max_in_flight";
  c.api = broker_api::kafka_0_8;
  EXPECT_EQ(request_limit(c), 1u);
  c.broker_max_in_flight = 0;
  EXPECT_EQ(request_limit(c), 1024u) << "0: no limit, whatever the broker api";
  c.broker_max_in_flight = 3;
  EXPECT_EQ(request_limit(c), 3u);
  c.api = broker_api::negotiate;
  EXPECT_EQ(request_limit(c), 3u);
  c.broker_max_in_flight = 5000;
  EXPECT_EQ(request_limit(c), 1024u) << "max_in_flight stays the bound on memory";
}

TEST(KafkaTracker, UnderKafka08OneRequestAtATimeAndAcksZeroProduceTakesNoPlace) {
  tracker t(config(true, broker_api::kafka_0_8));
  EXPECT_TRUE(t.can_take_request());
  ask(t, request(3, 0, 1));
  EXPECT_FALSE(t.can_take_request()) << "the next request waits for the Metadata answer";
  respond(t, kt::encode_metadata(metadata(9092), 0, {1, {}}));
  EXPECT_TRUE(t.can_take_request());
  // acks=0: no response will ever free a place, so it takes none, and the request after it goes on.
  EXPECT_EQ(ask(t, produce_v0(0, 2)), frame_action::forward);
  EXPECT_TRUE(t.can_take_request());
  EXPECT_EQ(ask(t, produce_v0(1, 3)), frame_action::forward);
  EXPECT_FALSE(t.can_take_request());
  respond(t, opaque_response(3));
  EXPECT_TRUE(t.can_take_request());
  // ApiVersions v0, dropped unanswered as the broker would, takes no place either.
  EXPECT_EQ(ask(t, request(18, 0, 4)), frame_action::drop);
  EXPECT_TRUE(t.can_take_request());
  // A local answer holds its place until the relay has taken it for the client.
  EXPECT_EQ(ask(t, request(18, 3, 5, true, {2, 'x', 2, 'y', 0})), frame_action::answer);
  EXPECT_FALSE(t.can_take_request());
  ASSERT_TRUE(t.take_local_response());
  EXPECT_TRUE(t.can_take_request());
}

TEST(KafkaTracker, BrokerMaxInFlightZeroUnderKafka08MeansNoLimit) {
  auto c = std::make_shared<tracker_config>(*config(true, broker_api::kafka_0_8));
  c->broker_max_in_flight = 0;
  tracker t(c);
  for (std::int32_t id = 1; id <= 20; ++id) ask(t, request(3, 0, id));
  EXPECT_TRUE(t.can_take_request());
  EXPECT_EQ(t.in_flight(), 20u);
}

TEST(KafkaTracker, ClampsTheBrokersApiVersionsToWhatItCanRewrite) {
  tracker t(config());
  ask(t, request(18, 3, 5, true, {2, 'x', 2, 'y', 0}));
  kt::api_versions_response broker;
  broker.api_keys = {{0, 0, 99, {}},  {1, 0, 99, {}}, {3, 0, 99, {}}, {10, 0, 99, {}},
                     {18, 0, 99, {}}, {19, 0, 7, {}}, {60, 0, 99, {}}};
  broker.tags = {{0, {1, 0}}};  // SupportedFeatures, kept as it is
  const auto v = respond(t, kt::encode_api_versions(broker, 3, 5));
  ASSERT_EQ(v.action, frame_action::replace) << v.error;
  const auto got = kt::decode_api_versions(v.out, 3);
  std::map<std::int16_t, std::int16_t> max;
  for (const auto& e : got.api_keys) max[e.api_key] = e.max_version;
  EXPECT_EQ(max[0], *kws::kafka::max_rewritable_version(kws::kafka::api_key::produce));
  EXPECT_EQ(max[1], *kws::kafka::max_rewritable_version(kws::kafka::api_key::fetch));
  EXPECT_EQ(max[3], *kws::kafka::max_rewritable_version(kws::kafka::api_key::metadata));
  EXPECT_EQ(max[10], *kws::kafka::max_rewritable_version(kws::kafka::api_key::find_coordinator));
  EXPECT_EQ(max[60], *kws::kafka::max_rewritable_version(kws::kafka::api_key::describe_cluster));
  EXPECT_EQ(max[18], kws::kafka::max_api_versions_version);
  EXPECT_EQ(max[19], 7) << "CreateTopics carries no addresses: left alone";
  EXPECT_EQ(got.tags, broker.tags);
}

TEST(KafkaTracker, AnswersAnApiVersionsVersionItCannotReadWithTheKip511Error) {
  tracker t(config());
  EXPECT_EQ(ask(t, request(18, 9, 6, true)), frame_action::answer);
  auto local = t.take_local_response();
  ASSERT_TRUE(local);
  std::int32_t id = 0;
  const auto got = kt::decode_api_versions(*local, 0, &id);
  EXPECT_EQ(id, 6);
  EXPECT_EQ(got.error_code, 35);
  EXPECT_EQ(got.api_keys, (std::vector<kt::api_versions_entry>{{18, 0, 5, {}}}));
  EXPECT_EQ(t.in_flight(), 0u);
}

TEST(KafkaTracker, Kafka08AnswersApiVersionsV1UpInRequestOrderAndDropsV0) {
  tracker t(config(true, broker_api::kafka_0_8));
  EXPECT_EQ(ask(t, request(3, 0, 1)), frame_action::forward);
  EXPECT_EQ(ask(t, request(18, 3, 2, true, {2, 'x', 2, 'y', 0})), frame_action::answer);
  // The local answer waits for the Metadata response ahead of it.
  EXPECT_FALSE(t.take_local_response());
  EXPECT_EQ(t.in_flight(), 2u);
  EXPECT_EQ(respond(t, kt::encode_metadata(metadata(9092), 0, {1, {}})).action, frame_action::replace);
  auto local = t.take_local_response();
  ASSERT_TRUE(local);
  std::int32_t id = 0;
  const auto got = kt::decode_api_versions(*local, 3, &id);
  EXPECT_EQ(id, 2);
  EXPECT_EQ(got.error_code, 0);
  EXPECT_EQ(got.api_keys,
            (std::vector<kt::api_versions_entry>{
                {0, 0, 0, {}}, {1, 0, 0, {}}, {2, 0, 0, {}}, {3, 0, 0, {}}, {18, 0, 5, {}}, {10, 0, 0, {}}}));
  EXPECT_EQ(t.in_flight(), 0u);

  EXPECT_EQ(ask(t, request(18, 0, 3)), frame_action::drop);
  EXPECT_EQ(t.in_flight(), 0u);
  EXPECT_EQ(ask(t, request(18, 1, 4)), frame_action::answer);
  EXPECT_EQ(kt::decode_api_versions(*t.take_local_response(), 1).api_keys.size(), 6u);
}

// ---- telling a Kafka 0.8 broker by its silence (tracker_config::api_versions_timeout) -------------------

std::shared_ptr<const tracker_config> detecting(
    bool rewrite = true, std::shared_ptr<kws::kafka::api_verdicts> verdicts = nullptr) {
  auto c = std::make_shared<tracker_config>(*config(rewrite));
  c->api_versions_timeout = std::chrono::milliseconds(700);
  c->verdicts = std::move(verdicts);
  return c;
}

// A tracker for `broker` whose verdicts land in `heard`.
struct detecting_tracker {
  std::vector<kws::kafka::api_verdict> heard;
  tracker t;
  detecting_tracker(std::shared_ptr<const tracker_config> c, std::string broker = "ws://edge/")
      : t(std::move(c), std::move(broker), [this](kws::kafka::api_verdict v) { heard.push_back(v); }) {}
};

const bytes api_versions_v3 = request(18, 3, 1, true, {2, 'x', 2, 'y', 0});

TEST(KafkaTracker, ApiVersionsUnansweredInTimeTurnsTheConnectionToTheKafka08Profile) {
  detecting_tracker d(detecting());
  auto& t = d.t;
  EXPECT_EQ(t.response_timeout(), std::chrono::milliseconds::zero()) << "nothing timed before the request";
  EXPECT_EQ(ask(t, api_versions_v3), frame_action::forward);
  EXPECT_EQ(t.response_timeout(), std::chrono::milliseconds(700));
  EXPECT_FALSE(t.can_take_request()) << "requests behind it wait for the verdict";

  t.on_response_timeout();
  EXPECT_EQ(d.heard, std::vector{kws::kafka::api_verdict::detected});
  EXPECT_EQ(t.api(), broker_api::kafka_0_8);
  EXPECT_EQ(t.response_timeout(), std::chrono::milliseconds::zero());
  const auto local = t.take_local_response();
  ASSERT_TRUE(local);
  std::int32_t id = 0;
  EXPECT_EQ(kt::decode_api_versions(*local, 3, &id).api_keys.size(),
            kws::kafka::kafka_0_8_api_versions().size())
      << "the 0.8 profile's answer";
  EXPECT_EQ(id, 1);

  // From here on, one request in flight, as under broker_api::kafka_0_8.
  EXPECT_TRUE(t.can_take_request());
  EXPECT_EQ(ask(t, request(3, 0, 2)), frame_action::forward);
  EXPECT_FALSE(t.can_take_request());
  // The broker answers the ApiVersions after all: the client, answered already, never sees it.
  EXPECT_EQ(respond(t, opaque_response(1)).action, frame_action::drop);
  EXPECT_EQ(t.in_flight(), 1u);
  EXPECT_EQ(respond(t, kt::encode_metadata(metadata(9092), 0, {2, {}})).action, frame_action::replace);
  EXPECT_EQ(t.in_flight(), 0u);
  EXPECT_EQ(d.heard.size(), 1u);
}

TEST(KafkaTracker, ABrokerThatAnswersApiVersionsKeepsPipeliningAndIsNotTimedAgain) {
  detecting_tracker d(detecting());
  auto& t = d.t;
  ask(t, api_versions_v3);
  kt::api_versions_response broker;
  broker.api_keys = {{3, 0, 12, {}}, {18, 0, 3, {}}};
  const auto v = respond(t, kt::encode_api_versions(broker, 3, 1));
  EXPECT_NE(v.action, frame_action::drop);
  EXPECT_EQ(t.response_timeout(), std::chrono::milliseconds::zero());
  for (std::int32_t id = 2; id < 12; ++id) ask(t, request(1, 0, id));
  EXPECT_TRUE(t.can_take_request());
  // A timeout that fires late changes nothing; nor is a second ApiVersions timed.
  t.on_response_timeout();
  EXPECT_EQ(ask(t, request(18, 3, 12, true, {2, 'x', 2, 'y', 0})), frame_action::forward);
  EXPECT_EQ(t.response_timeout(), std::chrono::milliseconds::zero());
  EXPECT_EQ(t.api(), broker_api::negotiate);
  EXPECT_TRUE(d.heard.empty());
}

TEST(KafkaTracker, LaterConnectionsToABrokerFoundToBeKafka08StartInTheProfile) {
  auto verdicts = std::make_shared<kws::kafka::api_verdicts>();
  detecting_tracker waiting_too(detecting(true, verdicts));
  detecting_tracker first(detecting(true, verdicts));
  ask(first.t, api_versions_v3);
  ask(waiting_too.t, api_versions_v3);
  first.t.on_response_timeout();
  waiting_too.t.on_response_timeout();
  EXPECT_EQ(first.heard, std::vector{kws::kafka::api_verdict::detected});
  EXPECT_EQ(waiting_too.heard, std::vector{kws::kafka::api_verdict::detected_again}) << "one line per broker";
  EXPECT_TRUE(verdicts->is_kafka_0_8("ws://edge/"));

  detecting_tracker later(detecting(true, verdicts));
  EXPECT_EQ(later.heard, std::vector{kws::kafka::api_verdict::remembered});
  EXPECT_EQ(later.t.api(), broker_api::kafka_0_8);
  EXPECT_EQ(ask(later.t, api_versions_v3), frame_action::answer) << "no wait";
  EXPECT_EQ(later.t.response_timeout(), std::chrono::milliseconds::zero());

  detecting_tracker elsewhere(detecting(true, verdicts), "ws://other/");
  EXPECT_EQ(ask(elsewhere.t, api_versions_v3), frame_action::forward);
  EXPECT_EQ(elsewhere.t.response_timeout(), std::chrono::milliseconds(700));
  EXPECT_TRUE(elsewhere.heard.empty());
}

TEST(KafkaTracker, ApiVersionsV0UnansweredInTimeGetsNoAnswerAsFromAKafka08Broker) {
  // Without rewriting too (the librdkafka plugin's tracker).
  for (const bool rewrite : {true, false}) {
    SCOPED_TRACE(rewrite);
    detecting_tracker d(detecting(rewrite));
    auto& t = d.t;
    ask(t, request(18, 0, 1));
    EXPECT_EQ(t.response_timeout(), std::chrono::milliseconds(700));
    t.on_response_timeout();
    EXPECT_FALSE(t.take_local_response());
    EXPECT_EQ(t.in_flight(), 0u);
    EXPECT_EQ(t.api(), broker_api::kafka_0_8);
    ask(t, request(1, 0, 2));
    EXPECT_EQ(respond(t, opaque_response(1)).action, frame_action::drop);
    EXPECT_EQ(respond(t, opaque_response(2)).action, frame_action::forward);
  }
}

TEST(KafkaTracker, TheLateAnswerIsLookedForOnlyUntilTheBrokerAnswersSomethingAfterIt) {
  detecting_tracker d(detecting());
  auto& t = d.t;
  ask(t, request(1, 0, 7));  // sent before the ApiVersions: its answer may come first
  ask(t, api_versions_v3);
  t.on_response_timeout();
  EXPECT_FALSE(t.take_local_response()) << "the answer waits for the Fetch's, in request order";
  EXPECT_EQ(respond(t, opaque_response(7)).action, frame_action::forward);
  EXPECT_TRUE(t.take_local_response());
  ask(t, request(1, 0, 8));
  EXPECT_EQ(respond(t, opaque_response(8)).action, frame_action::forward);
  // The broker answered a later request: it skipped the ApiVersions, and id 1 is nothing special now.
  EXPECT_EQ(respond(t, opaque_response(1)).action, frame_action::forward);
}

TEST(KafkaTracker, NoTimeoutNoDetection) {
  detecting_tracker d(config());
  ask(d.t, api_versions_v3);
  EXPECT_EQ(d.t.response_timeout(), std::chrono::milliseconds::zero());
  EXPECT_TRUE(d.t.can_take_request());
}

TEST(KafkaTracker, WithoutRewritingEveryFramePassesUnchanged) {
  tracker t(config(false));
  EXPECT_EQ(ask(t, request(18, 9, 1, true)), frame_action::forward) << "not even KIP-511 answers";
  EXPECT_EQ(ask(t, request(3, 1, 2)), frame_action::forward);
  EXPECT_EQ(respond(t, opaque_response(1)).action, frame_action::forward);
  EXPECT_EQ(respond(t, kt::encode_metadata(metadata(9092), 1, {2, {}})).action, frame_action::forward);
  EXPECT_EQ(t.in_flight(), 0u);
}

TEST(KafkaTracker, WithoutRewritingAWatcherIsToldTheBrokersOfEachMetadataAnswerThatParses) {
  auto c = std::make_shared<tracker_config>(*config(false));
  std::vector<std::vector<std::pair<std::int32_t, std::string>>> told;
  c->on_metadata_brokers = [&](const std::vector<kws::kafka::advertised_broker>& brokers) {
    auto& seen = told.emplace_back();
    for (const auto& b : brokers)
      seen.emplace_back(b.node_id, std::string(b.host) + ":" + std::to_string(b.port));
  };
  tracker t(c);
  // A Metadata answer: its brokers are told, the frame goes on unchanged.
  ASSERT_EQ(ask(t, request(3, 1, 1)), frame_action::forward);
  const auto answer = kt::encode_metadata(metadata(9092), 1, {1, {}});
  auto v = respond(t, answer);
  EXPECT_EQ(v.action, frame_action::forward);
  EXPECT_TRUE(v.out.empty());
  ASSERT_EQ(told.size(), 1u);
  EXPECT_EQ(told[0], (std::vector<std::pair<std::int32_t, std::string>>{{0, "edge.example.com:443"},
                                                                        {1, "b1.internal:9092"}}));
  // Other answers, an answer that does not parse, and a version above what can be read: passed on, untold.
  ASSERT_EQ(ask(t, request(1, 0, 2)), frame_action::forward);
  EXPECT_EQ(respond(t, opaque_response(2)).action, frame_action::forward);
  ASSERT_EQ(ask(t, request(3, 1, 3)), frame_action::forward);
  auto cut = kt::encode_metadata(metadata(9092), 1, {3, {}});
  cut.resize(cut.size() - 3);
  kws::store_be32(cut.data(), static_cast<std::int32_t>(cut.size() - 4));
  EXPECT_EQ(respond(t, cut).action, frame_action::forward);
  const auto above =
      static_cast<std::int16_t>(*kws::kafka::max_rewritable_version(kws::kafka::api_key::metadata) + 1);
  ASSERT_EQ(ask(t, request(3, above, 4, true)), frame_action::forward);
  EXPECT_EQ(respond(t, opaque_response(4)).action, frame_action::forward);
  EXPECT_EQ(told.size(), 1u);
  EXPECT_EQ(t.in_flight(), 0u);
}

TEST(KafkaTracker, FailsClosedOnAVersionItCannotRewriteAndOnAMalformedResponse) {
  tracker t(config());
  const auto above =
      static_cast<std::int16_t>(*kws::kafka::max_rewritable_version(kws::kafka::api_key::metadata) + 1);
  ask(t, request(3, above, 1, true));
  auto v = respond(t, opaque_response(1));
  EXPECT_EQ(v.action, frame_action::fail);
  EXPECT_NE(v.error.find("rewrites broker addresses up to v"), std::string::npos) << v.error;

  ask(t, request(3, 1, 2));
  auto cut = kt::encode_metadata(metadata(9092), 1, {2, {}});
  cut.resize(cut.size() - 3);
  kws::store_be32(cut.data(), static_cast<std::int32_t>(cut.size() - 4));
  v = respond(t, cut);
  EXPECT_EQ(v.action, frame_action::fail);
  EXPECT_NE(v.error.find("cannot rewrite the response to metadata v1 (correlation id 2)"), std::string::npos)
      << v.error;
  EXPECT_TRUE(v.out.empty()) << "never half-rewritten";
}

TEST(KafkaTracker, AMapperFailureFailsTheResponse) {
  auto c = std::make_shared<tracker_config>();
  c->map = [](const kws::kafka::advertised_broker&, boost::system::error_code& ec) {
    ec = boost::system::errc::make_error_code(boost::system::errc::address_in_use);
    return std::optional<kws::kafka::broker_endpoint>();
  };
  tracker t(c);
  ask(t, request(3, 0, 1));
  const auto v = respond(t, kt::encode_metadata(metadata(9092), 0, {1, {}}));
  EXPECT_EQ(v.action, frame_action::fail);
  EXPECT_TRUE(v.out.empty());
}

}  // namespace

// Records what the tracker reports, as the apps' metrics would count it.
struct recording_observer final : kws::kafka::request_observer {
  std::vector<int> requests;
  std::vector<std::pair<int, std::chrono::steady_clock::duration>> responses;
  void on_request(kws::kafka::api_key key) noexcept override { requests.push_back(static_cast<int>(key)); }
  void on_response(kws::kafka::api_key key, std::chrono::steady_clock::duration latency) noexcept override {
    responses.emplace_back(static_cast<int>(key), latency);
  }
};

TEST(KafkaTracker, TellsItsObserverEveryRequestAndEachMatchedResponseWithItsLatency) {
  auto c = std::make_shared<tracker_config>(*config(true, broker_api::kafka_0_8));
  auto seen = std::make_shared<recording_observer>();
  c->observer = seen;
  tracker t(c);
  const auto start = std::chrono::steady_clock::now();
  ask(t, request(1, 0, 1));                  // Fetch: answered by the broker
  ask(t, produce_v0(0, 2));                  // acks=0: no response, still a request
  ask(t, request(18, 1, 3));                 // ApiVersions v1: answered locally
  ask(t, bytes{0, 0, 0, 3, 'a', 'b', 'c'});  // too short to name an API
  ask(t, request(3, 0, 4));                  // Metadata
  EXPECT_EQ(seen->requests, (std::vector<int>{1, 0, 18, -1, 3}));
  respond(t, opaque_response(1));
  ASSERT_TRUE(t.take_local_response());
  respond(t, opaque_response(99));  // matches nothing: settles the short request, no latency reported
  respond(t, kt::encode_metadata(metadata(9092), 0, {4, {}}));
  ASSERT_EQ(seen->responses.size(), 2u);
  EXPECT_EQ(seen->responses[0].first, 1);
  EXPECT_EQ(seen->responses[1].first, 3);
  for (const auto& [key, latency] : seen->responses) {
    EXPECT_GE(latency.count(), 0) << key;
    EXPECT_LE(latency, std::chrono::steady_clock::now() - start) << key;
  }
}

// ---- SASL: SaslHandshake v0 and the bare tokens after it; SaslHandshake v1 and SaslAuthenticate ----

namespace {

bytes text(const std::string& s) {
  return bytes(s.begin(), s.end());
}

// A bare SASL token as the v0 framing sends it both ways: a size, then the token (no header).
bytes token(const bytes& t) {
  kt::out_buf f(false);
  f.i32(static_cast<std::int32_t>(t.size()));
  f.raw(t);
  return f.data();
}

// SaslHandshake request (v0 or v1): the mechanism's name as a STRING.
bytes sasl_handshake(std::int16_t version, std::int32_t correlation_id, const std::string& mechanism) {
  kt::out_buf b(false);
  b.str(mechanism);
  return request(17, version, correlation_id, false, b.data());
}

// SaslHandshake response: error_code, then the broker's mechanisms.
bytes sasl_handshake_answer(std::int32_t correlation_id, std::int16_t error_code,
                            const std::vector<std::string>& mechanisms = {"PLAIN", "SCRAM-SHA-256"}) {
  kt::out_buf b(false);
  b.i16(error_code);
  b.count(mechanisms.size());
  for (const auto& m : mechanisms) b.str(m);
  return kt::frame({correlation_id, {}}, false, b.data());
}

// SaslAuthenticate request, v0-v1 (BYTES) or v2 (flexible: COMPACT_BYTES, header v2).
bytes sasl_authenticate(std::int16_t version, std::int32_t correlation_id, const bytes& auth) {
  const bool flexible = version >= 2;
  kt::out_buf b(flexible);
  if (flexible) {
    b.uvar(auth.size() + 1);
  } else {
    b.i32(static_cast<std::int32_t>(auth.size()));
  }
  b.raw(auth);
  if (flexible) b.uvar(0);
  return request(36, version, correlation_id, flexible, b.data());
}

// SaslAuthenticate response v1 (error_code, error_message, auth_bytes, session_lifetime_ms).
bytes sasl_authenticate_answer(std::int32_t correlation_id, const bytes& auth) {
  kt::out_buf b(false);
  b.i16(0);
  b.nstr(std::nullopt);
  b.i32(static_cast<std::int32_t>(auth.size()));
  b.raw(auth);
  b.i64(3'600'000);
  return kt::frame({correlation_id, {}}, false, b.data());
}

// The tracker's verdict on a response that must pass byte for byte.
void expect_untouched(tracker& t, const bytes& frame, const char* what) {
  const auto v = respond(t, frame);
  EXPECT_EQ(v.action, frame_action::forward) << what << ": " << v.error;
  EXPECT_TRUE(v.out.empty()) << what;
}

// After the exchange, requests are read as requests again: a Metadata answer is rewritten.
void expect_requests_again(tracker& t, std::int32_t correlation_id) {
  ASSERT_EQ(ask(t, request(3, 1, correlation_id)), frame_action::forward);
  const auto v = respond(t, kt::encode_metadata(metadata(9092), 1, {correlation_id, {}}));
  ASSERT_EQ(v.action, frame_action::replace) << v.error;
  EXPECT_EQ(kt::decode_metadata(v.out, 1).brokers[1].host, "proxy");
  EXPECT_EQ(t.in_flight(), 0u);
}

// A config whose observer is `seen`.
std::shared_ptr<const tracker_config> observed(const std::shared_ptr<recording_observer>& seen,
                                               bool rewrite = true) {
  auto c = std::make_shared<tracker_config>(*config(rewrite));
  c->observer = seen;
  return c;
}

}  // namespace

TEST(KafkaTrackerSasl, PlainTokenAfterAHandshakeV0PassesWithItsEmptyAnswer) {
  for (const bool rewrite : {true, false}) {
    SCOPED_TRACE(rewrite ? "rewriting" : "counting only (the plugin)");
    auto seen = std::make_shared<recording_observer>();
    tracker t(observed(seen, rewrite));
    EXPECT_EQ(ask(t, sasl_handshake(0, 1, "PLAIN")), frame_action::forward);
    expect_untouched(t, sasl_handshake_answer(1, 0), "handshake answer");
    // "\0user\0pass": its first bytes, read as a header, would be api key 0 (Produce) version 0x7573.
    EXPECT_EQ(ask(t, token(text(std::string("\0user\0pass", 10)))), frame_action::forward);
    EXPECT_EQ(t.in_flight(), 1u) << "the token is owed its answer";
    expect_untouched(t, token({}), "PLAIN's empty answer");
    EXPECT_EQ(t.in_flight(), 0u);
    EXPECT_EQ(seen->requests, (std::vector<int>{17})) << "the token is no request";
    EXPECT_EQ(seen->responses.size(), 1u);
    if (rewrite) expect_requests_again(t, 2);
  }
}

TEST(KafkaTrackerSasl, ScramTakesTwoRoundTripsOfBareTokens) {
  for (const std::string mechanism : {"SCRAM-SHA-256", "SCRAM-SHA-512"}) {
    SCOPED_TRACE(mechanism);
    auto seen = std::make_shared<recording_observer>();
    tracker t(observed(seen));
    ask(t, sasl_handshake(0, 7, mechanism));
    expect_untouched(t, sasl_handshake_answer(7, 0, {mechanism}), "handshake answer");
    EXPECT_EQ(ask(t, token(text("n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"))), frame_action::forward);
    expect_untouched(t, token(text("r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")),
                     "server-first");
    EXPECT_EQ(t.in_flight(), 0u);
    // The second token is a token too, not a request, though nothing is in flight when it comes.
    EXPECT_EQ(
        ask(t, token(text(
                   "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="))),
        frame_action::forward);
    EXPECT_EQ(t.in_flight(), 1u);
    expect_untouched(t, token(text("v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")), "server-final");
    EXPECT_EQ(seen->requests, (std::vector<int>{17})) << "tokens are no requests";
    expect_requests_again(t, 8);
    EXPECT_EQ(seen->requests, (std::vector<int>{17, 3}));
  }
}

TEST(KafkaTrackerSasl, GssapiLikeExchangeEndsWithTheTokenThatGetsNoAnswer) {
  tracker t(config());
  ask(t, sasl_handshake(0, 1, "GSSAPI"));
  expect_untouched(t, sasl_handshake_answer(1, 0, {"GSSAPI"}), "handshake answer");
  // AP-REQ -> AP-REP; an empty token -> the wrapped security layer offer; the wrapped choice gets no answer
  // (Kafka's broker answers only what SaslServer.evaluateResponse returns, and GSSAPI's last step returns
  // nothing). Three tokens here; a context may take more, which the tracker cannot count in advance.
  for (const bytes& tok : {bytes{0x60, 0x82, 0x02, 0x10, 0x06, 0x09}, bytes{}}) {
    EXPECT_EQ(ask(t, token(tok)), frame_action::forward);
    EXPECT_EQ(t.in_flight(), 1u);
    expect_untouched(t, token({0x60, 0x70, 0x06, 0x09, 0x2a}), "a context token");
  }
  EXPECT_EQ(ask(t, token({0x05, 0x04, 0x00, 0xff})), frame_action::forward);
  EXPECT_EQ(t.in_flight(), 1u);
  // The client goes on without an answer: its next frame is a request, and the last token is owed nothing.
  EXPECT_EQ(ask(t, request(18, 3, 2, true, {2, 'x', 2, 'y', 0})), frame_action::forward);
  EXPECT_EQ(t.in_flight(), 1u);
  kt::api_versions_response broker;
  broker.api_keys = {{3, 0, 99, {}}, {17, 0, 1, {}}, {18, 0, 99, {}}};
  const auto v = respond(t, kt::encode_api_versions(broker, 3, 2));
  EXPECT_EQ(v.action, frame_action::replace) << "read as the ApiVersions answer it is: " << v.error;
  EXPECT_EQ(t.in_flight(), 0u);
  expect_requests_again(t, 3);
}

TEST(KafkaTrackerSasl, TheUnansweredLastTokenHoldsNoPlaceUnderABoundOfOne) {
  auto c = std::make_shared<tracker_config>(*config());
  c->broker_max_in_flight = 1;
  tracker t(c);
  ask(t, sasl_handshake(0, 1, "GSSAPI"));
  EXPECT_FALSE(t.can_take_request());
  expect_untouched(t, sasl_handshake_answer(1, 0, {"GSSAPI"}), "handshake answer");
  EXPECT_EQ(ask(t, token({0x60, 0x82, 0x02, 0x10})), frame_action::forward);
  // GSSAPI's last token is never answered: the client's next frame settles it, so it must be let in.
  EXPECT_EQ(t.in_flight(), 1u);
  EXPECT_TRUE(t.can_take_request());
  EXPECT_EQ(ask(t, request(1, 0, 2)), frame_action::forward);
  EXPECT_EQ(t.in_flight(), 1u);
  EXPECT_FALSE(t.can_take_request()) << "a request waits for its answer as before";
  expect_untouched(t, opaque_response(2), "an answer after the exchange");
  EXPECT_TRUE(t.can_take_request());
}

TEST(KafkaTrackerSasl, HandshakeV1AndSaslAuthenticateAreOrdinaryRequests) {
  tracker t(config());
  EXPECT_EQ(ask(t, sasl_handshake(1, 1, "SCRAM-SHA-512")), frame_action::forward);
  expect_untouched(t, sasl_handshake_answer(1, 0), "handshake v1 answer");
  // The next frame has a header: SaslAuthenticate, whose bytes and answer pass untouched.
  const auto auth = text("n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
  for (const std::int16_t version : {std::int16_t{0}, std::int16_t{1}, std::int16_t{2}}) {
    SCOPED_TRACE(version);
    EXPECT_EQ(ask(t, sasl_authenticate(version, 10 + version, auth)), frame_action::forward);
    EXPECT_EQ(t.in_flight(), 1u);
    if (version < 2) {
      expect_untouched(t, sasl_authenticate_answer(10 + version, text("r=rOprNG,s=W22Z,i=4096")), "answer");
    } else {
      expect_untouched(t, kt::frame({12, {}}, true, {0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}),
                       "flexible answer");
    }
  }
  expect_requests_again(t, 20);
}

TEST(KafkaTrackerSasl, AFailedHandshakeV0StartsNoTokens) {
  tracker t(config());
  ask(t, sasl_handshake(0, 1, "SCRAM-SHA-512"));
  expect_untouched(t, sasl_handshake_answer(1, 33, {"PLAIN"}), "UNSUPPORTED_SASL_MECHANISM");
  // A client may retry with another mechanism, or send requests: either way, a header follows.
  expect_requests_again(t, 2);
  // A handshake answer cut short starts none either.
  ask(t, sasl_handshake(0, 3, "PLAIN"));
  expect_untouched(t, kt::frame({3, {}}, false, {0}), "an answer too short to hold an error code");
  expect_requests_again(t, 4);
}

TEST(KafkaTrackerSasl, ReauthenticationMidStreamKeepsEveryResponseWithItsRequest) {
  auto seen = std::make_shared<recording_observer>();
  tracker t(observed(seen));
  // KIP-368: requests already in flight, then SaslHandshake v1 + SaslAuthenticate on the same connection,
  // then more requests, all pipelined.
  ask(t, produce_v0(1, 10));
  ask(t, request(3, 1, 11));
  ask(t, sasl_handshake(1, 12, "PLAIN"));
  ask(t, sasl_authenticate(2, 13, text(std::string("\0user\0pass", 10))));
  ask(t, produce_v0(0, 14));  // acks=0: no answer
  ask(t, request(3, 1, 15));
  EXPECT_EQ(t.in_flight(), 5u);
  expect_untouched(t, opaque_response(10), "produce");
  EXPECT_EQ(respond(t, kt::encode_metadata(metadata(9092), 1, {11, {}})).action, frame_action::replace);
  expect_untouched(t, sasl_handshake_answer(12, 0), "handshake");
  expect_untouched(t, kt::frame({13, {}}, true, {0, 0, 0, 1, 0, 0, 0, 0, 0, 0x36, 0xee, 0x80, 0}),
                   "authenticate");
  EXPECT_EQ(respond(t, kt::encode_metadata(metadata(9092), 1, {15, {}})).action, frame_action::replace);
  EXPECT_EQ(t.in_flight(), 0u);
  EXPECT_EQ(seen->requests, (std::vector<int>{0, 3, 17, 36, 0, 3}));
  ASSERT_EQ(seen->responses.size(), 5u);
  EXPECT_EQ(seen->responses[3].first, 36);
}

TEST(KafkaTrackerSasl, ATokenThatLooksLikeAMetadataRequestIsNeitherReadNorRewritten) {
  auto seen = std::make_shared<recording_observer>();
  auto c = std::make_shared<tracker_config>(*observed(seen));
  test_map map;
  c->map = [&map](const kws::kafka::advertised_broker& b, boost::system::error_code& ec) {
    return map(b, ec);
  };
  tracker t(c);
  ask(t, sasl_handshake(0, 1, "SCRAM-SHA-256"));
  expect_untouched(t, sasl_handshake_answer(1, 0), "handshake answer");
  // A token whose bytes are a whole Metadata v1 request (correlation id 42), and an answer whose bytes are
  // a whole Metadata v1 response to it: had the tracker read a header, it would rewrite the answer.
  const auto metadata_lookalike = request(3, 1, 42);
  const auto token_frame = token(bytes(metadata_lookalike.begin() + 4, metadata_lookalike.end()));
  ASSERT_EQ(token_frame, metadata_lookalike);
  EXPECT_EQ(ask(t, token_frame), frame_action::forward);
  expect_untouched(t, kt::encode_metadata(metadata(9092), 1, {42, {}}), "an answer that looks like Metadata");
  // The second SCRAM token looks like ApiVersions v3 (which would be clamped); its answer like one too.
  EXPECT_EQ(ask(t, request(18, 3, 43, true, {2, 'x', 2, 'y', 0})), frame_action::forward);
  kt::api_versions_response broker;
  broker.api_keys = {{3, 0, 99, {}}};
  expect_untouched(t, kt::encode_api_versions(broker, 3, 43), "an answer that looks like ApiVersions");
  EXPECT_EQ(map.calls, 0);
  EXPECT_EQ(seen->requests, (std::vector<int>{17})) << "tokens are no requests";
  EXPECT_EQ(seen->responses.size(), 1u);
  expect_requests_again(t, 44);
  EXPECT_EQ(map.calls, 2);
}

TEST(KafkaTrackerSasl, OauthbearerEndsOnAnEmptyAnswerAndTakesTheKvsepAfterAnError) {
  tracker t(config());
  ask(t, sasl_handshake(0, 1, "OAUTHBEARER"));
  expect_untouched(t, sasl_handshake_answer(1, 0, {"OAUTHBEARER"}), "handshake answer");
  ask(t, token(text("n,,\x01"
                    "auth=Bearer bad\x01\x01")));
  expect_untouched(t, token(text(R"({"status":"invalid_token"})")), "the error challenge");
  // RFC 7628 3.2.3: the client answers an error with a single %x01, still a token.
  EXPECT_EQ(ask(t, token({0x01})), frame_action::forward);
  EXPECT_EQ(t.in_flight(), 1u);

  tracker ok(config());
  ask(ok, sasl_handshake(0, 1, "OAUTHBEARER"));
  expect_untouched(ok, sasl_handshake_answer(1, 0, {"OAUTHBEARER"}), "handshake answer");
  ask(ok, token(text("n,,\x01"
                     "auth=Bearer good\x01\x01")));
  expect_untouched(ok, token({}), "success");
  expect_requests_again(ok, 2);
}
