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
  EXPECT_EQ(got.api_keys, (std::vector<kt::api_versions_entry>{
                              {0, 0, 0, {}}, {1, 0, 0, {}}, {2, 0, 0, {}}, {3, 0, 0, {}}, {18, 0, 5, {}}}));
  EXPECT_EQ(t.in_flight(), 0u);

  EXPECT_EQ(ask(t, request(18, 0, 3)), frame_action::drop);
  EXPECT_EQ(t.in_flight(), 0u);
  EXPECT_EQ(ask(t, request(18, 1, 4)), frame_action::answer);
  EXPECT_EQ(kt::decode_api_versions(*t.take_local_response(), 1).api_keys.size(), 5u);
}

TEST(KafkaTracker, WithoutRewritingEveryFramePassesUnchanged) {
  tracker t(config(false));
  EXPECT_EQ(ask(t, request(18, 9, 1, true)), frame_action::forward) << "not even KIP-511 answers";
  EXPECT_EQ(ask(t, request(3, 1, 2)), frame_action::forward);
  EXPECT_EQ(respond(t, opaque_response(1)).action, frame_action::forward);
  EXPECT_EQ(respond(t, kt::encode_metadata(metadata(9092), 1, {2, {}})).action, frame_action::forward);
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
