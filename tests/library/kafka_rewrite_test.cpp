// Broker address rewriting (kws::kafka::rewrite_response). Responses are built by the schema-based test
// encoder (tests/support/kafka_encoder.hpp), rewritten by the library, and read back by the test decoder,
// which compares every field, every tagged field (unknown ones included) and the size prefix.
#include "kafka_encoder.hpp"

#include <kws/kafka/rewrite.hpp>

#include <gtest/gtest.h>

#include <boost/system/errc.hpp>

#include <algorithm>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

namespace {

namespace kafka = kws::kafka;
namespace tk = kws::test::kafka;
using bytes = std::vector<unsigned char>;
using boost::system::error_code;
using kafka::api_key;

// ---- mappings ----

/// Where a test sends each node id; the library only sees it through a broker_mapper.
struct mapping {
  std::function<std::string(std::int32_t)> host;
  std::function<std::int32_t(std::int32_t)> port;
};

// Longer than the advertised hosts.
const mapping grow{[](std::int32_t id) { return "broker-" + std::to_string(id) + ".proxy.kws.test"; },
                   [](std::int32_t id) { return 40000 + id; }};
// Long enough that compact lengths and tagged-field sizes need one more varint byte.
const mapping long_host{
    [](std::int32_t id) { return std::string(300, static_cast<char>('a' + id % 26)) + ".kws"; },
    [](std::int32_t id) { return 1000 + id; }};
// Shorter than the advertised hosts.
const mapping shrink{[](std::int32_t id) { return "h" + std::to_string(id); },
                     [](std::int32_t) { return 9092; }};

kafka::broker_mapper mapper_of(const mapping& m, std::vector<std::int32_t>* calls = nullptr) {
  return [m, calls](const kafka::advertised_broker& b, error_code&) -> std::optional<kafka::broker_endpoint> {
    if (calls) calls->push_back(b.node_id);
    return kafka::broker_endpoint{m.host(b.node_id), m.port(b.node_id)};
  };
}

kafka::broker_mapper keep_all(std::vector<std::int32_t>* calls = nullptr) {
  return [calls](const kafka::advertised_broker& b, error_code&) -> std::optional<kafka::broker_endpoint> {
    if (calls) calls->push_back(b.node_id);
    return std::nullopt;
  };
}

template <class Model>
Model remapped(Model m, const mapping& map) {
  tk::for_each_endpoint(m, [&](std::int32_t id, std::string& host, std::int32_t& port) {
    if (id == -1 || host.empty()) return;
    host = map.host(id);
    port = map.port(id);
  });
  return m;
}

using endpoint_list = std::vector<std::tuple<std::int32_t, std::string, std::int32_t>>;
template <class Model>
endpoint_list endpoints_of(Model m) {
  endpoint_list out;
  tk::for_each_endpoint(
      m, [&](std::int32_t id, std::string& host, std::int32_t& port) { out.emplace_back(id, host, port); });
  return out;
}

// ---- one codec per API, so that the checks below run the same way for all of them ----

template <class Model>
struct codec {
  api_key key;
  bytes (*encode)(const Model&, std::int16_t, const tk::response_header&);
  Model (*decode)(const bytes&, std::int16_t, tk::response_header*);
};

const codec<tk::metadata_response> metadata_codec{api_key::metadata, tk::encode_metadata,
                                                  tk::decode_metadata};
const codec<tk::find_coordinator_response> find_coordinator_codec{
    api_key::find_coordinator, tk::encode_find_coordinator, tk::decode_find_coordinator};
const codec<tk::describe_cluster_response> describe_cluster_codec{
    api_key::describe_cluster, tk::encode_describe_cluster, tk::decode_describe_cluster};
const codec<tk::produce_response> produce_codec{api_key::produce, tk::encode_produce, tk::decode_produce};
const codec<tk::fetch_response> fetch_codec{api_key::fetch, tk::encode_fetch, tk::decode_fetch};

const tk::response_header header{0x01020304, {{5, {1, 2}}, {130, {}}}};

bytes pattern(std::size_t n, unsigned seed) {
  bytes b(n);
  unsigned x = seed * 2654435761u;
  for (auto& c : b) {
    x = x * 1103515245u + 12345u;
    c = static_cast<unsigned char>(x >> 16);
  }
  return b;
}

/// CurrentLeader (LeaderIdAndEpoch) as the raw value of a tagged field.
bytes leader_and_epoch(std::int32_t leader, std::int32_t epoch) {
  tk::out_buf o(true);
  o.i32(leader);
  o.i32(epoch);
  o.tags({});
  return o.data();
}

// ---- models: every field set, unknown tagged fields at every level ----

tk::metadata_response metadata_model() {
  tk::metadata_response m;
  m.throttle_time_ms = 17;
  m.brokers = {
      {1, "kafka-1.internal", 9092, "rack-a", {{7, {1, 2, 3}}}},
      {2, "kafka-2.internal.example.com", 9093, std::nullopt, {}},
      {3, "10.0.0.3", 19092, "rack-c", {{0, {}}, {200, bytes(130, 0x5a)}}},
  };
  m.cluster_id = "cluster-Zx";
  m.controller_id = 2;
  tk::metadata_topic orders;
  orders.error_code = 0;
  orders.name = "orders";
  orders.topic_id = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  orders.is_internal = true;
  orders.partitions = {{0, 0, 1, 5, {1, 2, 3}, {1, 2}, {3}, {{9, {0xab}}}}, {6, 1, -1, -1, {2}, {}, {}, {}}};
  orders.topic_authorized_operations = 0x0ff8;
  orders.tags = {{1, {}}};
  tk::metadata_topic unknown;
  unknown.error_code = 100;  // UNKNOWN_TOPIC_ID; its name is null from v12
  unknown.topic_id = {9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9};
  m.topics = {orders, unknown};
  m.cluster_authorized_operations = 123;
  m.error_code = 0;
  m.tags = {{42, {9, 9}}};
  return m;
}

tk::find_coordinator_response find_coordinator_model() {
  tk::find_coordinator_response m;
  m.throttle_time_ms = 5;
  m.error_message = "fine";
  m.node_id = 4;
  m.host = "coordinator.internal";
  m.port = 9094;
  m.coordinators = {
      {"group-a", 1, "kafka-1.internal", 9092, 0, std::nullopt, {{5, {1}}}},
      {"txn-b", -1, "", -1, 15, "coordinator not available", {}},  // COORDINATOR_NOT_AVAILABLE
      {"share:g:t:0", 3, "kafka-3.internal", 9092, 0, std::nullopt, {}},
  };
  m.tags = {{11, {}}};
  return m;
}

tk::describe_cluster_response describe_cluster_model() {
  tk::describe_cluster_response m;
  m.throttle_time_ms = 1;
  m.error_message = std::nullopt;
  m.endpoint_type = 1;
  m.cluster_id = "Q2x1c3Rlcg";
  m.controller_id = 1;
  m.brokers = {{1, "kafka-1.internal", 9092, "r1", false, {{10000, {0x01, 0x41}}}},
               {2, "kafka-2.internal", 9092, std::nullopt, true, {}}};
  m.cluster_authorized_operations = 0;
  m.tags = {{3, {0}}};
  return m;
}

tk::produce_response produce_model() {
  tk::produce_response m;
  tk::produce_topic t;
  t.name = "orders";
  t.topic_id = {8, 7, 6, 5, 4, 3, 2, 1, 8, 7, 6, 5, 4, 3, 2, 1};
  t.partitions = {
      {0, 0, 100, -1, 0, {}, std::nullopt, {}},
      // NOT_LEADER_OR_FOLLOWER, with the new leader in CurrentLeader (partition tag 0)
      {1,
       6,
       -1,
       -1,
       -1,
       {{0, "bad record", {}}, {3, std::nullopt, {{1, {2}}}}},
       "boom",
       {{0, leader_and_epoch(2, 7)}}},
  };
  t.tags = {{2, {}}};
  m.responses = {t};
  m.throttle_time_ms = 3;
  m.node_endpoints = {{{2, "kafka-2.internal", 9092, "rack-b", {{10000, {0x00}}}},
                       {3, "kafka-3.internal", 9093, std::nullopt, {}}}};
  m.tags = {{1, {0xff}}, {300, {1, 2, 3}}};
  return m;
}

tk::fetch_response fetch_model() {
  tk::fetch_response m;
  m.throttle_time_ms = 0;
  m.error_code = 0;
  m.session_id = 77;
  tk::fetch_topic t;
  t.topic = "events";
  t.topic_id = {4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4};
  t.partitions = {
      {0,
       0,
       1000,
       990,
       0,
       std::vector<tk::aborted_transaction>{{5, 100, {}}, {6, 200, {{2, {1}}}}},
       -1,
       pattern(500, 1),
       {{1, leader_and_epoch(1, 3)}}},
      {1, 6, -1, -1, -1, std::nullopt, -1, std::nullopt, {}},
  };
  t.tags = {{4, {}}};
  m.responses = {t};
  m.node_endpoints = {
      {{1, "kafka-1.internal", 9092, std::nullopt, {}}, {3, "kafka-3.internal", 9093, "rack-c", {{7, {7}}}}}};
  m.tags = {{2, {7}}};
  return m;
}

// ---- the checks ----

/// Encodes `model` at `v`, rewrites it with `map` and decodes the result: it must be the model as version v
/// carries it with exactly the advertised endpoints replaced, and a second rewrite must change nothing.
template <class Model>
void expect_rewritten(const codec<Model>& c, std::int16_t v, const Model& model, const mapping& map) {
  SCOPED_TRACE("api " + std::string(kafka::api_name(c.key)) + " v" + std::to_string(v));
  const bytes in = c.encode(model, v, header);
  tk::response_header header_in;
  const Model seen = c.decode(in, v, &header_in);
  const Model expected = remapped(seen, map);

  const bytes sentinel{0xde, 0xad};
  bytes out = sentinel;
  error_code ec;
  const bool changed = kafka::rewrite_response(c.key, v, in, mapper_of(map), out, ec);
  ASSERT_FALSE(ec) << ec.message();
  ASSERT_EQ(changed, !(expected == seen));
  if (!changed) {
    EXPECT_EQ(out, sentinel);
    return;
  }
  tk::response_header header_out;
  Model actual;
  ASSERT_NO_THROW(actual = c.decode(out, v, &header_out));  // also checks the size prefix
  EXPECT_EQ(endpoints_of(actual), endpoints_of(expected));
  EXPECT_TRUE(actual == expected) << "a field other than host/port changed";
  EXPECT_TRUE(header_out == header_in);

  bytes again = sentinel;
  EXPECT_FALSE(kafka::rewrite_response(c.key, v, out, mapper_of(map), again, ec));
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(again, sentinel);
}

template <class Model>
void expect_untouched_by_nullopt(const codec<Model>& c, std::int16_t v, const Model& model) {
  SCOPED_TRACE("api " + std::string(kafka::api_name(c.key)) + " v" + std::to_string(v));
  const bytes in = c.encode(model, v, header);
  const bytes sentinel{1, 2, 3};
  bytes out = sentinel;
  error_code ec;
  std::vector<std::int32_t> calls;
  EXPECT_FALSE(kafka::rewrite_response(c.key, v, in, keep_all(&calls), out, ec));
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(out, sentinel);
  // The mapper saw every advertised endpoint but those with node id -1 or no host.
  std::vector<std::int32_t> expected;
  for (const auto& [id, host, port] : endpoints_of(c.decode(in, v, nullptr)))
    if (id != -1 && !host.empty()) expected.push_back(id);
  EXPECT_EQ(calls, expected);
  // Same answer as a mapper that returns the address it was given.
  const kafka::broker_mapper identity = [](const kafka::advertised_broker& b, error_code&) {
    return std::optional<kafka::broker_endpoint>(kafka::broker_endpoint{std::string(b.host), b.port});
  };
  EXPECT_FALSE(kafka::rewrite_response(c.key, v, in, identity, out, ec));
  EXPECT_FALSE(ec);
  EXPECT_EQ(out, sentinel);
}

/// Every prefix of a valid frame fails, both as it is and with its size prefix claiming exactly its length;
/// the mapper is never called and `out` is never touched.
void expect_prefixes_rejected(api_key key, std::int16_t v, const bytes& frame) {
  SCOPED_TRACE("api " + std::string(kafka::api_name(key)) + " v" + std::to_string(v));
  const bytes sentinel{7};
  std::vector<std::int32_t> calls;
  const auto map = mapper_of(grow, &calls);
  for (std::size_t n = 0; n < frame.size(); ++n) {
    bytes prefix(frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(n));
    for (int patched = 0; patched < 2; ++patched) {
      if (patched) {
        if (n < 4) continue;
        const auto size = static_cast<std::uint32_t>(n - 4);
        for (int i = 0; i < 4; ++i)
          prefix[static_cast<std::size_t>(i)] = static_cast<unsigned char>(size >> (24 - 8 * i));
      }
      bytes out = sentinel;
      error_code ec;
      EXPECT_FALSE(kafka::rewrite_response(key, v, prefix, map, out, ec)) << "prefix " << n;
      EXPECT_TRUE(ec) << "prefix " << n << (patched ? " (size patched)" : "");
      EXPECT_EQ(&ec.category(), &kafka::wire_category()) << ec.message();
      EXPECT_EQ(out, sentinel);
    }
  }
  EXPECT_TRUE(calls.empty());
}

void set_size(bytes& frame) {
  const auto size = static_cast<std::uint32_t>(frame.size() - 4);
  for (int i = 0; i < 4; ++i)
    frame[static_cast<std::size_t>(i)] = static_cast<unsigned char>(size >> (24 - 8 * i));
}

std::size_t find(const bytes& haystack, std::string_view needle) {
  const auto it = std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end());
  EXPECT_NE(it, haystack.end()) << needle;
  return static_cast<std::size_t>(it - haystack.begin());
}

error_code rewrite_error(api_key key, std::int16_t v, const bytes& frame,
                         std::vector<std::int32_t>* calls = nullptr) {
  const bytes sentinel{9, 9};
  bytes out = sentinel;
  error_code ec;
  EXPECT_FALSE(kafka::rewrite_response(key, v, frame, mapper_of(grow, calls), out, ec));
  EXPECT_EQ(out, sentinel);
  return ec;
}

// ---- tests ----

TEST(KafkaRewrite, VersionTables) {
  EXPECT_EQ(kafka::max_rewritable_version(api_key::metadata), 13);
  EXPECT_EQ(kafka::max_rewritable_version(api_key::find_coordinator), 6);
  EXPECT_EQ(kafka::max_rewritable_version(api_key::describe_cluster), 2);
  EXPECT_EQ(kafka::max_rewritable_version(api_key::produce), 13);
  EXPECT_EQ(kafka::max_rewritable_version(api_key::fetch), 18);
  EXPECT_EQ(kafka::max_rewritable_version(api_key::api_versions), std::nullopt);
  EXPECT_EQ(kafka::max_rewritable_version(api_key::list_offsets), std::nullopt);

  EXPECT_TRUE(kafka::carries_broker_addresses(api_key::metadata, 0));
  EXPECT_TRUE(kafka::carries_broker_addresses(api_key::metadata, 13));
  EXPECT_FALSE(kafka::carries_broker_addresses(api_key::metadata, 14));
  EXPECT_FALSE(kafka::carries_broker_addresses(api_key::metadata, -1));
  EXPECT_TRUE(kafka::carries_broker_addresses(api_key::find_coordinator, 0));
  EXPECT_TRUE(kafka::carries_broker_addresses(api_key::find_coordinator, 6));
  EXPECT_FALSE(kafka::carries_broker_addresses(api_key::find_coordinator, 7));
  EXPECT_TRUE(kafka::carries_broker_addresses(api_key::describe_cluster, 2));
  EXPECT_FALSE(kafka::carries_broker_addresses(api_key::describe_cluster, 3));
  EXPECT_FALSE(kafka::carries_broker_addresses(api_key::produce, 9));
  EXPECT_TRUE(kafka::carries_broker_addresses(api_key::produce, 10));
  EXPECT_TRUE(kafka::carries_broker_addresses(api_key::produce, 13));
  EXPECT_FALSE(kafka::carries_broker_addresses(api_key::produce, 14));
  EXPECT_FALSE(kafka::carries_broker_addresses(api_key::fetch, 15));
  EXPECT_TRUE(kafka::carries_broker_addresses(api_key::fetch, 16));
  EXPECT_TRUE(kafka::carries_broker_addresses(api_key::fetch, 18));
  EXPECT_FALSE(kafka::carries_broker_addresses(api_key::fetch, 19));
  EXPECT_FALSE(kafka::carries_broker_addresses(api_key::api_versions, 3));
}

TEST(KafkaRewrite, MetadataV0ByteForByte) {
  // Metadata Response v0 => [brokers: node_id host port] [topics]; one broker 1 at "ab":9092, no topics.
  // clang-format off
  const bytes in{0, 0, 0, 24,  0, 0, 0, 7,  0, 0, 0, 1,  0, 0, 0, 1,  0, 2, 'a', 'b',
                 0, 0, 0x23, 0x84,  0, 0, 0, 0};
  const bytes expected{0, 0, 0, 25,  0, 0, 0, 7,  0, 0, 0, 1,  0, 0, 0, 1,  0, 3, 'x', 'y', 'z',
                       0, 0, 0x04, 0xd2,  0, 0, 0, 0};
  // clang-format on
  const kafka::broker_mapper map = [](const kafka::advertised_broker& b, error_code&) {
    EXPECT_EQ(b.node_id, 1);
    EXPECT_EQ(b.host, "ab");
    EXPECT_EQ(b.port, 9092);
    return std::optional<kafka::broker_endpoint>(kafka::broker_endpoint{"xyz", 1234});
  };
  bytes out;
  error_code ec;
  ASSERT_TRUE(kafka::rewrite_response(api_key::metadata, 0, in, map, out, ec)) << ec.message();
  EXPECT_EQ(out, expected);
}

TEST(KafkaRewrite, ProduceV10NodeEndpointsByteForByte) {
  // Header v1 (correlation id, no tagged fields); no topics; throttle 0; one tagged field: tag 0
  // NodeEndpoints with one node 2 at "ab":9092, null rack. Its size (14) grows by 2 with the longer host.
  // clang-format off
  const bytes in{0, 0, 0, 27,  0, 0, 0, 9,  0,  1,  0, 0, 0, 0,  1,  0, 14,
                 2,  0, 0, 0, 2,  3, 'a', 'b',  0, 0, 0x23, 0x84,  0,  0};
  const bytes expected{0, 0, 0, 29,  0, 0, 0, 9,  0,  1,  0, 0, 0, 0,  1,  0, 16,
                       2,  0, 0, 0, 2,  5, 'w', 'x', 'y', 'z',  0, 0, 0, 1,  0,  0};
  // clang-format on
  const kafka::broker_mapper map = [](const kafka::advertised_broker&, error_code&) {
    return std::optional<kafka::broker_endpoint>(kafka::broker_endpoint{"wxyz", 1});
  };
  bytes out;
  error_code ec;
  ASSERT_TRUE(kafka::rewrite_response(api_key::produce, 10, in, map, out, ec)) << ec.message();
  EXPECT_EQ(out, expected);
}

TEST(KafkaRewrite, MetadataEveryVersion) {
  for (std::int16_t v = 0; v <= 13; ++v)
    for (const auto* map : {&grow, &long_host, &shrink})
      expect_rewritten(metadata_codec, v, metadata_model(), *map);
}

TEST(KafkaRewrite, FindCoordinatorEveryVersionSingleAndBatched) {
  for (std::int16_t v = 0; v <= 6; ++v)
    for (const auto* map : {&grow, &long_host, &shrink})
      expect_rewritten(find_coordinator_codec, v, find_coordinator_model(), *map);
}

TEST(KafkaRewrite, DescribeClusterEveryVersion) {
  for (std::int16_t v = 0; v <= 2; ++v)
    for (const auto* map : {&grow, &long_host, &shrink})
      expect_rewritten(describe_cluster_codec, v, describe_cluster_model(), *map);
}

TEST(KafkaRewrite, ProduceNodeEndpointsEveryVersion) {
  for (std::int16_t v = 10; v <= 13; ++v)
    for (const auto* map : {&grow, &long_host, &shrink})
      expect_rewritten(produce_codec, v, produce_model(), *map);
}

TEST(KafkaRewrite, FetchNodeEndpointsEveryVersion) {
  for (std::int16_t v = 16; v <= 18; ++v)
    for (const auto* map : {&grow, &long_host, &shrink})
      expect_rewritten(fetch_codec, v, fetch_model(), *map);
}

TEST(KafkaRewrite, TaggedFieldSizeGrowsPastOneVarintByte) {
  // One endpoint of 11 bytes becomes one of more than 300: the size of tag 0 needs two varint bytes.
  auto m = produce_model();
  m.node_endpoints = {{{2, "k2", 9092, std::nullopt, {}}}};
  const bytes in = tk::encode_produce(m, 10, header);
  bytes out;
  error_code ec;
  ASSERT_TRUE(kafka::rewrite_response(api_key::produce, 10, in, mapper_of(long_host), out, ec));
  const std::size_t host = long_host.host(2).size();
  // Host grows by host - 2, its compact length by 1 byte (301+1 > 127), the tagged size by 1 byte.
  EXPECT_EQ(out.size(), in.size() + (host - 2) + 1 + 1);
  EXPECT_EQ(endpoints_of(tk::decode_produce(out, 10)),
            endpoints_of(remapped(tk::decode_produce(in, 10), long_host)));
}

TEST(KafkaRewrite, ProduceAndFetchWithoutNodeEndpointsChangeNothing) {
  auto p = produce_model();
  p.node_endpoints.reset();
  auto f = fetch_model();
  f.node_endpoints = std::vector<tk::node_endpoint>{};  // present but empty
  for (std::int16_t v = 10; v <= 13; ++v) expect_rewritten(produce_codec, v, p, grow);
  for (std::int16_t v = 16; v <= 18; ++v) expect_rewritten(fetch_codec, v, f, grow);
}

TEST(KafkaRewrite, OlderProduceAndFetchCarryNoAddresses) {
  for (std::int16_t v = 0; v <= 9; ++v) {
    const bytes in = tk::encode_produce(produce_model(), v, header);
    std::vector<std::int32_t> calls;
    bytes out{1};
    error_code ec;
    EXPECT_FALSE(kafka::rewrite_response(api_key::produce, v, in, mapper_of(grow, &calls), out, ec));
    EXPECT_FALSE(ec);
    EXPECT_TRUE(calls.empty());
    EXPECT_EQ(out, bytes{1});
  }
  for (std::int16_t v = 12; v <= 15; ++v) {
    const bytes in = tk::encode_fetch(fetch_model(), v, header);
    bytes out{1};
    error_code ec;
    EXPECT_FALSE(kafka::rewrite_response(api_key::fetch, v, in, mapper_of(grow), out, ec));
    EXPECT_FALSE(ec);
    EXPECT_EQ(out, bytes{1});
  }
}

TEST(KafkaRewrite, NulloptAndIdentityMappersChangeNothing) {
  for (std::int16_t v = 0; v <= 13; ++v) expect_untouched_by_nullopt(metadata_codec, v, metadata_model());
  for (std::int16_t v = 0; v <= 6; ++v)
    expect_untouched_by_nullopt(find_coordinator_codec, v, find_coordinator_model());
  for (std::int16_t v = 0; v <= 2; ++v)
    expect_untouched_by_nullopt(describe_cluster_codec, v, describe_cluster_model());
  for (std::int16_t v = 10; v <= 13; ++v) expect_untouched_by_nullopt(produce_codec, v, produce_model());
  for (std::int16_t v = 16; v <= 18; ++v) expect_untouched_by_nullopt(fetch_codec, v, fetch_model());
}

TEST(KafkaRewrite, NoNodeIdOrNoHostIsLeftAloneAndNotMapped) {
  auto m = metadata_model();
  m.brokers.push_back({-1, "ghost.internal", 1, std::nullopt, {}});
  m.brokers.push_back({9, "", 2, std::nullopt, {}});
  for (std::int16_t v : {0, 8, 9, 13}) {
    expect_rewritten(metadata_codec, v, m, grow);
    std::vector<std::int32_t> calls;
    bytes out;
    error_code ec;
    ASSERT_TRUE(kafka::rewrite_response(api_key::metadata, v, tk::encode_metadata(m, v, header),
                                        mapper_of(grow, &calls), out, ec));
    EXPECT_EQ(calls, (std::vector<std::int32_t>{1, 2, 3}));
    const auto back = tk::decode_metadata(out, v);
    EXPECT_EQ(back.brokers[3].host, "ghost.internal");
    EXPECT_EQ(back.brokers[3].port, 1);
    EXPECT_EQ(back.brokers[4].host, "");
  }
  // FindCoordinator v0-v3 answering an error: node -1, empty host. Nothing to map, nothing changes.
  auto err = find_coordinator_model();
  err.error_code = 15;
  err.node_id = -1;
  err.host = "";
  err.port = -1;
  for (std::int16_t v = 0; v <= 3; ++v) {
    std::vector<std::int32_t> calls;
    bytes out{5};
    error_code ec;
    EXPECT_FALSE(kafka::rewrite_response(api_key::find_coordinator, v,
                                         tk::encode_find_coordinator(err, v, header), mapper_of(grow, &calls),
                                         out, ec));
    EXPECT_FALSE(ec);
    EXPECT_TRUE(calls.empty());
    EXPECT_EQ(out, bytes{5});
  }
  // A NodeEndpoints entry without a node id.
  auto p = produce_model();
  p.node_endpoints->push_back({-1, "nobody", 1, std::nullopt, {}});
  expect_rewritten(produce_codec, 13, p, grow);
}

TEST(KafkaRewrite, MapperFailureFailsTheWholeRewrite) {
  const auto failing = boost::system::errc::make_error_code(boost::system::errc::address_in_use);
  std::vector<std::int32_t> calls;
  const kafka::broker_mapper map = [&](const kafka::advertised_broker& b,
                                       error_code& ec) -> std::optional<kafka::broker_endpoint> {
    calls.push_back(b.node_id);
    if (b.node_id == 3) {
      ec = failing;
      return std::nullopt;
    }
    return kafka::broker_endpoint{"mapped", 1};
  };
  const std::vector<std::pair<api_key, bytes>> frames{
      {api_key::metadata, tk::encode_metadata(metadata_model(), 1, header)},
      {api_key::metadata, tk::encode_metadata(metadata_model(), 13, header)},
      {api_key::find_coordinator, tk::encode_find_coordinator(find_coordinator_model(), 6, header)},
      {api_key::produce, tk::encode_produce(produce_model(), 13, header)},
      {api_key::fetch, tk::encode_fetch(fetch_model(), 18, header)},
  };
  const std::vector<std::int16_t> versions{1, 13, 6, 13, 18};
  for (std::size_t i = 0; i < frames.size(); ++i) {
    calls.clear();
    bytes out{4, 2};
    error_code ec;
    EXPECT_FALSE(kafka::rewrite_response(frames[i].first, versions[i], frames[i].second, map, out, ec));
    EXPECT_EQ(ec, failing);
    EXPECT_EQ(out, (bytes{4, 2}));
    EXPECT_FALSE(calls.empty());
  }
}

TEST(KafkaRewrite, HostTooLongForAnInt16StringFails) {
  const kafka::broker_mapper map = [](const kafka::advertised_broker&, error_code&) {
    return std::optional<kafka::broker_endpoint>(kafka::broker_endpoint{std::string(40000, 'h'), 1});
  };
  bytes out{3};
  error_code ec;
  EXPECT_FALSE(kafka::rewrite_response(api_key::metadata, 8, tk::encode_metadata(metadata_model(), 8, header),
                                       map, out, ec));
  EXPECT_EQ(ec, kafka::wire_errc::invalid_length);
  EXPECT_EQ(out, bytes{3});
  // A compact string has room for it.
  EXPECT_TRUE(kafka::rewrite_response(api_key::metadata, 9, tk::encode_metadata(metadata_model(), 9, header),
                                      map, out, ec));
  EXPECT_EQ(tk::decode_metadata(out, 9).brokers[0].host.size(), 40000u);
}

TEST(KafkaRewrite, EveryPrefixOfEveryResponseIsRejected) {
  for (std::int16_t v : {0, 1, 3, 8, 9, 12, 13})
    expect_prefixes_rejected(api_key::metadata, v, tk::encode_metadata(metadata_model(), v, header));
  for (std::int16_t v : {0, 1, 3, 4, 6})
    expect_prefixes_rejected(api_key::find_coordinator, v,
                             tk::encode_find_coordinator(find_coordinator_model(), v, header));
  for (std::int16_t v : {0, 1, 2})
    expect_prefixes_rejected(api_key::describe_cluster, v,
                             tk::encode_describe_cluster(describe_cluster_model(), v, header));
  for (std::int16_t v : {10, 12, 13})
    expect_prefixes_rejected(api_key::produce, v, tk::encode_produce(produce_model(), v, header));
  for (std::int16_t v : {16, 18})
    expect_prefixes_rejected(api_key::fetch, v, tk::encode_fetch(fetch_model(), v, header));
}

TEST(KafkaRewrite, SizePrefixMustMatchTheFrame) {
  const bytes good = tk::encode_metadata(metadata_model(), 9, header);
  bytes longer = good;
  longer.push_back(0);  // one byte more than the size says
  EXPECT_EQ(rewrite_error(api_key::metadata, 9, longer), kafka::wire_errc::trailing_bytes);
  bytes claims_more = good;
  claims_more[3] = static_cast<unsigned char>(claims_more[3] + 1);
  EXPECT_EQ(rewrite_error(api_key::metadata, 9, claims_more), kafka::wire_errc::truncated);
  bytes negative = good;
  negative[0] = 0x80;
  EXPECT_EQ(rewrite_error(api_key::metadata, 9, negative), kafka::wire_errc::invalid_length);
}

TEST(KafkaRewrite, TrailingBytesInsideTheBodyAreRejected) {
  std::vector<std::int32_t> calls;
  for (std::int16_t v : {0, 9, 13}) {
    bytes f = tk::encode_metadata(metadata_model(), v, header);
    f.push_back(0);
    set_size(f);
    EXPECT_EQ(rewrite_error(api_key::metadata, v, f, &calls), kafka::wire_errc::trailing_bytes);
  }
  auto with_extra_byte = [](bytes f) {
    f.push_back(0);
    set_size(f);
    return f;
  };
  for (std::int16_t v : {0, 3, 4, 6})
    EXPECT_EQ(rewrite_error(api_key::find_coordinator, v,
                            with_extra_byte(tk::encode_find_coordinator(find_coordinator_model(), v, header)),
                            &calls),
              kafka::wire_errc::trailing_bytes);
  for (std::int16_t v : {0, 2})
    EXPECT_EQ(rewrite_error(api_key::describe_cluster, v,
                            with_extra_byte(tk::encode_describe_cluster(describe_cluster_model(), v, header)),
                            &calls),
              kafka::wire_errc::trailing_bytes);
  for (std::int16_t v : {10, 13})
    EXPECT_EQ(rewrite_error(api_key::produce, v,
                            with_extra_byte(tk::encode_produce(produce_model(), v, header)), &calls),
              kafka::wire_errc::trailing_bytes);
  for (std::int16_t v : {16, 18})
    EXPECT_EQ(
        rewrite_error(api_key::fetch, v, with_extra_byte(tk::encode_fetch(fetch_model(), v, header)), &calls),
        kafka::wire_errc::trailing_bytes);
  // NodeEndpoints must fill its tagged field exactly: one byte more inside its size is an error too.
  auto p = produce_model();
  bytes value = tk::node_endpoints_tag(p.node_endpoints)[0].data;
  value.push_back(0);
  p.node_endpoints.reset();
  p.tags.push_back({0, value});
  EXPECT_EQ(rewrite_error(api_key::produce, 12, tk::encode_produce(p, 12, header), &calls),
            kafka::wire_errc::trailing_bytes);
  EXPECT_TRUE(calls.empty());
}

TEST(KafkaRewrite, BadLengthsAreRejectedBeforeTheMapperRuns) {
  std::vector<std::int32_t> calls;
  tk::metadata_response small;
  small.brokers = {{1, "h1", 9092, std::nullopt, {}}};
  // Compact string length past the end.
  bytes f = tk::encode_metadata(small, 9, header);
  std::size_t at = find(f, "h1") - 1;
  f[at] = 0x7f;
  EXPECT_EQ(rewrite_error(api_key::metadata, 9, f, &calls), kafka::wire_errc::truncated);
  // Compact null where the host may not be null.
  f[at] = 0x00;
  EXPECT_EQ(rewrite_error(api_key::metadata, 9, f, &calls), kafka::wire_errc::invalid_length);
  // A length varint longer than five bytes.
  f[at] = 0x80;
  f.insert(f.begin() + static_cast<std::ptrdiff_t>(at) + 1, {0x80, 0x80, 0x80, 0x80, 0x80});
  set_size(f);
  EXPECT_EQ(rewrite_error(api_key::metadata, 9, f, &calls), kafka::wire_errc::invalid_varint);
  // int16 string length past the end, and below -1.
  f = tk::encode_metadata(small, 0, header);
  at = find(f, "h1") - 2;
  f[at] = 0x40;
  EXPECT_EQ(rewrite_error(api_key::metadata, 0, f, &calls), kafka::wire_errc::truncated);
  f[at] = 0xff;
  f[at + 1] = 0xfe;
  EXPECT_EQ(rewrite_error(api_key::metadata, 0, f, &calls), kafka::wire_errc::invalid_length);
  EXPECT_TRUE(calls.empty());
}

TEST(KafkaRewrite, BadArrayCountsAreRejected) {
  std::vector<std::int32_t> calls;
  // Metadata v0: the brokers count follows the correlation id.
  const bytes v0 = tk::encode_metadata(metadata_model(), 0, header);
  auto with_count = [&](std::initializer_list<unsigned char> count) {
    bytes f = v0;
    std::copy(count.begin(), count.end(), f.begin() + 8);
    return f;
  };
  EXPECT_EQ(rewrite_error(api_key::metadata, 0, with_count({0x7f, 0xff, 0xff, 0xff}), &calls),
            kafka::wire_errc::invalid_array_count);
  EXPECT_EQ(rewrite_error(api_key::metadata, 0, with_count({0xff, 0xff, 0xff, 0xfe}), &calls),
            kafka::wire_errc::invalid_length);
  // Brokers is not nullable.
  EXPECT_EQ(rewrite_error(api_key::metadata, 0, with_count({0xff, 0xff, 0xff, 0xff}), &calls),
            kafka::wire_errc::invalid_length);
  // One broker more than the frame holds.
  EXPECT_TRUE(rewrite_error(api_key::metadata, 0, with_count({0, 0, 0, 4}), &calls));

  // DescribeCluster v0: compact brokers count, null (0) and huge.
  tk::describe_cluster_response d;
  d.cluster_id = "c";
  d.brokers = {{1, "h1", 1, std::nullopt, false, {}}};
  bytes f = tk::encode_describe_cluster(d, 0, {});
  const std::size_t count_at = find(f, "h1") - 1 - 4 - 1;  // count, broker_id, host length
  ASSERT_EQ(f[count_at], 2);
  f[count_at] = 0;
  EXPECT_EQ(rewrite_error(api_key::describe_cluster, 0, f, &calls), kafka::wire_errc::invalid_length);
  f[count_at] = 0xff;
  f.insert(f.begin() + static_cast<std::ptrdiff_t>(count_at) + 1, {0xff, 0xff, 0x07});
  set_size(f);
  EXPECT_EQ(rewrite_error(api_key::describe_cluster, 0, f, &calls), kafka::wire_errc::invalid_array_count);

  // A null NodeEndpoints array.
  auto p = produce_model();
  p.node_endpoints.reset();
  p.tags.push_back({0, {0x00}});
  EXPECT_EQ(rewrite_error(api_key::produce, 10, tk::encode_produce(p, 10, header), &calls),
            kafka::wire_errc::invalid_length);
  EXPECT_TRUE(calls.empty());
}

TEST(KafkaRewrite, VersionsAndApisItDoesNotKnowAreRefused) {
  const bytes f = tk::encode_metadata(metadata_model(), 13, header);
  EXPECT_EQ(rewrite_error(api_key::metadata, 14, f), kafka::wire_errc::unsupported_version);
  EXPECT_EQ(rewrite_error(api_key::metadata, -1, f), kafka::wire_errc::unsupported_version);
  EXPECT_EQ(rewrite_error(api_key::find_coordinator, 7, f), kafka::wire_errc::unsupported_version);
  EXPECT_EQ(rewrite_error(api_key::describe_cluster, 3, f), kafka::wire_errc::unsupported_version);
  EXPECT_EQ(rewrite_error(api_key::produce, 14, f), kafka::wire_errc::unsupported_version);
  EXPECT_EQ(rewrite_error(api_key::fetch, 19, f), kafka::wire_errc::unsupported_version);
  EXPECT_EQ(rewrite_error(api_key::api_versions, 3, f), kafka::wire_errc::unsupported_version);
}

TEST(KafkaRewrite, WrongVersionDoesNotParse) {
  // The same bytes read at a neighbouring version are not that response.
  EXPECT_TRUE(rewrite_error(api_key::metadata, 8, tk::encode_metadata(metadata_model(), 9, header)));
  EXPECT_TRUE(rewrite_error(api_key::metadata, 9, tk::encode_metadata(metadata_model(), 8, header)));
  EXPECT_TRUE(rewrite_error(api_key::find_coordinator, 4,
                            tk::encode_find_coordinator(find_coordinator_model(), 3, header)));
  EXPECT_TRUE(rewrite_error(api_key::produce, 13, tk::encode_produce(produce_model(), 12, header)));
}

}  // namespace
