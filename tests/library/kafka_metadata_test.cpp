// Metadata as the gateway asks for it (kws::kafka::encode_broker_list_request, decode_metadata_brokers). The
// request is checked against bytes spelled out from the protocol guide; responses are built by the
// schema-based test encoder (tests/support/kafka_encoder.hpp) at every version the library reads.
#include "kafka_encoder.hpp"

#include <kws/kafka/metadata.hpp>

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

namespace kafka = kws::kafka;
namespace tk = kws::test::kafka;
using bytes = std::vector<unsigned char>;
using boost::system::error_code;

tk::metadata_response three_brokers() {
  tk::metadata_response m;
  m.brokers = {{0, "kafka-0.example", 9092, std::nullopt, {}},
               {1, "10.0.0.2", 19092, "rack-b", {}},
               {2, "::1", 29092, std::nullopt, {}}};
  m.cluster_id = "cluster";
  m.controller_id = 1;
  tk::metadata_topic t;
  t.name = "t";
  tk::metadata_partition p;
  p.leader_id = 2;
  p.replica_nodes = {2, 0};
  p.isr_nodes = {2};
  t.partitions = {p};
  m.topics = {t};
  return m;
}

TEST(KafkaMetadata, TheBrokerListRequestIsMetadataV1AskingForNoTopics) {
  // Given a correlation id and a client id
  // When the request is encoded
  const auto got = kafka::encode_broker_list_request(0x01020304, "gw");
  // Then it is size, api key 3, version 1, correlation id, client id (int16 length), topics: an empty array
  // (a null one, -1, would ask for every topic).
  const bytes want = {0, 0, 0, 16, 0, 3, 0, 1, 1, 2, 3, 4, 0, 2, 'g', 'w', 0, 0, 0, 0};
  EXPECT_EQ(got, want);
  EXPECT_EQ(kafka::broker_list_metadata_version, 1);
}

TEST(KafkaMetadata, TheBrokersOfAResponseAreReadAtEveryVersion) {
  const auto m = three_brokers();
  for (std::int16_t v = 0; v <= *kafka::max_rewritable_version(kafka::api_key::metadata); ++v) {
    // Given a Metadata response at version v
    const auto frame = tk::encode_metadata(m, v, {42, {}});
    // When its brokers are decoded
    error_code ec;
    const auto got = kafka::decode_metadata_brokers(v, frame, ec);
    // Then every broker comes back in order, with its node id, host and port
    ASSERT_FALSE(ec) << "v" << v << ": " << ec.message();
    ASSERT_EQ(got.size(), m.brokers.size()) << "v" << v;
    for (std::size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].node_id, m.brokers[i].node_id) << "v" << v;
      EXPECT_EQ(got[i].host, m.brokers[i].host) << "v" << v;
      EXPECT_EQ(got[i].port, m.brokers[i].port) << "v" << v;
    }
  }
}

TEST(KafkaMetadata, AResponseWithNoBrokersIsAnEmptyList) {
  tk::metadata_response m;
  error_code ec;
  EXPECT_TRUE(kafka::decode_metadata_brokers(1, tk::encode_metadata(m, 1, {1, {}}), ec).empty());
  EXPECT_FALSE(ec) << ec.message();
}

TEST(KafkaMetadata, ATruncatedResponseIsAnErrorAndNoBrokers) {
  const auto frame = tk::encode_metadata(three_brokers(), 1, {1, {}});
  for (std::size_t cut : {std::size_t{3}, std::size_t{10}, frame.size() / 2, frame.size() - 1}) {
    // Given a response whose tail is missing, its size prefix fixed to match
    bytes f(frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(cut));
    if (f.size() >= 4) {
      const auto n = static_cast<std::uint32_t>(f.size() - 4);
      f[0] = static_cast<unsigned char>(n >> 24);
      f[1] = static_cast<unsigned char>(n >> 16);
      f[2] = static_cast<unsigned char>(n >> 8);
      f[3] = static_cast<unsigned char>(n);
    }
    error_code ec;
    // Then nothing is decoded, and the error says so
    EXPECT_TRUE(kafka::decode_metadata_brokers(1, f, ec).empty()) << cut;
    EXPECT_TRUE(ec) << cut;
  }
  // Bytes after the end of the response are an error too.
  auto longer = frame;
  longer.push_back(0);
  longer[3] = static_cast<unsigned char>(longer[3] + 1);
  error_code ec;
  EXPECT_TRUE(kafka::decode_metadata_brokers(1, longer, ec).empty());
  EXPECT_EQ(ec, kafka::wire_errc::trailing_bytes);
}

TEST(KafkaMetadata, AVersionWhoseLayoutIsUnknownIsRefused) {
  const auto frame = tk::encode_metadata(three_brokers(), 13, {1, {}});
  error_code ec;
  EXPECT_TRUE(kafka::decode_metadata_brokers(14, frame, ec).empty());
  EXPECT_EQ(ec, kafka::wire_errc::unsupported_version);
  EXPECT_TRUE(kafka::decode_metadata_brokers(-1, frame, ec).empty());
  EXPECT_EQ(ec, kafka::wire_errc::unsupported_version);
}

TEST(KafkaMetadata, AddressesOfOtherResponsesAreListedToo) {
  // advertised_brokers, under decode_metadata_brokers, reads every API whose responses carry addresses.
  tk::find_coordinator_response fc;
  fc.coordinators = {{"g", 7, "coord.example", 9093, 0, std::nullopt, {}}};
  error_code ec;
  // The hosts are views into the frame: it must outlive them.
  const auto frame = tk::encode_find_coordinator(fc, 4, {1, {}});
  const auto got = kafka::advertised_brokers(kafka::api_key::find_coordinator, 4, frame, ec);
  ASSERT_FALSE(ec) << ec.message();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].node_id, 7);
  EXPECT_EQ(got[0].host, "coord.example");
  EXPECT_EQ(got[0].port, 9093);
  // Produce below v10 carries none, and is not an error.
  EXPECT_TRUE(kafka::advertised_brokers(kafka::api_key::produce, 9, bytes{}, ec).empty());
  EXPECT_FALSE(ec);
}

}  // namespace
