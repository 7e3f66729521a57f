// The Kafka-aware proxy as a client sees it: the built binary between a TCP client and real WebSocket
// brokers that answer with Kafka responses built by the tests' own encoder (tests/support/kafka_encoder.hpp),
// read back with its decoder. Everything on 127.0.0.1, bounded in time.
#include "frame_util.hpp"
#include "kafka_encoder.hpp"
#include "log_events.hpp"
#include "proxy_support.hpp"
#include "ws_test_server.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <regex>
#include <string>

namespace {

namespace kt = kws::test::kafka;
using kws::test::client;
using kws::test::error_code;
using kws::test::field;
using kws::test::field_matching;
using kws::test::frame;
using kws::test::proxy_process;
using kws::test::request;
using kws::test::wait_for_event;
using kws::test::ws_peer;
using kws::test::ws_test_server;
using namespace std::chrono_literals;

std::string str(const kt::bytes& b) {
  return {b.begin(), b.end()};
}
kt::bytes bytes_of(const std::string& s) {
  return {s.begin(), s.end()};
}

// Metadata v1 request for all topics (a null array).
std::string metadata_v1(std::int32_t correlation_id) {
  return request(3, 1, correlation_id, std::string("\xff\xff\xff\xff", 4));
}

kt::metadata_response two_brokers(unsigned short port0, unsigned short port1) {
  kt::metadata_response m;
  m.brokers = {{0, "127.0.0.1", port0, std::nullopt, {}}, {1, "127.0.0.1", port1, "rack-b", {}}};
  m.controller_id = 1;
  kt::metadata_topic t;
  t.name = "t";
  for (int p = 0; p < 2; ++p) {
    kt::metadata_partition part;
    part.partition_index = p;
    part.leader_id = p;
    part.replica_nodes = {p};
    part.isr_nodes = {p};
    t.partitions.push_back(part);
  }
  m.topics = {t};
  return m;
}

// A broker that answers every Metadata request with `response(correlation id)` and echoes anything else.
kws::test::ws_script metadata_broker(std::function<kt::bytes(std::int32_t)> response) {
  return [response](ws_peer& p) {
    ws_peer::message m;
    while (p.read(m)) {
      const auto* d = reinterpret_cast<const unsigned char*>(m.data.data());
      if (m.data.size() >= 12 && d[4] == 0 && d[5] == 3) {
        p.write_binary(str(response(static_cast<std::int32_t>(kws::load_be32(d + 8)))));
      } else {
        p.write_binary(m.data);
      }
    }
  };
}

TEST(ProxyRewrite, MetadataAdvertisesOnlyProxyListenersAndEachReachesItsBroker) {
  ws_test_server node1(kws::test::echo);
  std::atomic<unsigned short> node0_port{0};
  ws_test_server node0(metadata_broker([&](std::int32_t id) {
    return kt::encode_metadata(two_brokers(node0_port, node1.port()), 1, {id, {}});
  }));
  node0_port = node0.port();
  proxy_process proxy({"--broker", node0.address()});
  client c(proxy.port);
  error_code ec;
  const auto want = kt::encode_metadata(two_brokers(node0.port(), node1.port()), 1, {7, {}});
  // The rewritten response has other ports, same length digits or not; read the size first.
  const auto head = c.exchange(metadata_v1(7), 4, ec);
  ASSERT_FALSE(ec) << ec.message();
  const auto len = kws::load_be32(reinterpret_cast<const unsigned char*>(head.data()));
  const auto rest = c.recv(static_cast<std::size_t>(len), ec);
  ASSERT_FALSE(ec) << ec.message();
  kt::response_header h;
  const auto got = kt::decode_metadata(bytes_of(head + rest), 1, &h);
  EXPECT_EQ(h.correlation_id, 7);

  // Node 0 is the bootstrap broker: the main listener. Node 1 gets a listener of its own.
  ASSERT_EQ(got.brokers.size(), 2u);
  EXPECT_EQ(got.brokers[0].host, "127.0.0.1");
  EXPECT_EQ(got.brokers[0].port, proxy.port);
  EXPECT_EQ(got.brokers[1].host, "127.0.0.1");
  EXPECT_NE(got.brokers[1].port, node1.port());
  EXPECT_NE(got.brokers[1].port, proxy.port);
  // Everything but the addresses is as the broker sent it.
  auto expected = kt::decode_metadata(want, 1);
  expected.brokers[0].port = got.brokers[0].port;
  expected.brokers[1].port = got.brokers[1].port;
  EXPECT_TRUE(got == expected);
  EXPECT_TRUE(proxy.proc.wait_for_output(
      std::regex("broker 1 at 127\\.0\\.0\\.1:" + std::to_string(node1.port()) +
                 " is reachable through 127\\.0\\.0\\.1:" + std::to_string(got.brokers[1].port))))
      << proxy.proc.output();

  // The new listener leads to node 1, and stays the same when node 1 is seen again.
  client c1(static_cast<unsigned short>(got.brokers[1].port));
  EXPECT_EQ(c1.exchange(frame("to node 1"), 13, ec), frame("to node 1"));
  EXPECT_EQ(node1.accepted(), 1);
  const auto again = c.exchange(metadata_v1(8), head.size() + rest.size(), ec);
  EXPECT_EQ(kt::decode_metadata(bytes_of(again), 1).brokers, got.brokers);
}

TEST(ProxyRewrite, NoRewritePassesResponsesByteForByte) {
  const auto canned = [](std::int32_t id) {
    return kt::encode_metadata(two_brokers(9092, 9093), 1, {id, {}});
  };
  ws_test_server broker(metadata_broker(canned));
  proxy_process proxy({"--broker", broker.address(), "--no-rewrite"});
  client c(proxy.port);
  error_code ec;
  const auto want = str(canned(3));
  EXPECT_EQ(c.exchange(metadata_v1(3), want.size(), ec), want);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(proxy.proc.output().find("is reachable through"), std::string::npos) << proxy.proc.output();
}

TEST(ProxyRewrite, ABrokerThatAdvertisesTheProxyItselfIsLeftAlone) {
  std::atomic<unsigned short> proxy_port{0};
  const auto canned = [&](std::int32_t id) {
    auto m = two_brokers(proxy_port, proxy_port);
    m.brokers[0].host = "localhost";
    return kt::encode_metadata(m, 1, {id, {}});
  };
  ws_test_server broker(metadata_broker(canned));
  proxy_process proxy({"--broker", broker.address()});
  proxy_port = proxy.port;
  client c(proxy.port);
  error_code ec;
  const auto want = str(canned(4));
  EXPECT_EQ(c.exchange(metadata_v1(4), want.size(), ec), want);
  EXPECT_EQ(proxy.proc.output().find("is reachable through"), std::string::npos) << proxy.proc.output();
}

TEST(ProxyRewrite, AResponseThatCannotBeRewrittenEndsOnlyThatConnection) {
  ws_test_server broker(metadata_broker([](std::int32_t id) {
    auto f = kt::encode_metadata(two_brokers(9092, 9093), 1, {id, {}});
    // Cut inside the broker list, with a size header that matches what is left.
    f.resize(30);
    kws::store_be32(f.data(), static_cast<std::int32_t>(f.size() - 4));
    return f;
  }));
  proxy_process proxy({"--broker", broker.address(), "--log-format", "json"});
  client other(proxy.port);
  client victim(proxy.port);
  victim.send(metadata_v1(5));
  EXPECT_TRUE(victim.closed_by_peer());
  EXPECT_TRUE(wait_for_event(
      proxy.proc, {field("event", "closed"), field("end", "unusable_response"), field("side", "broker"),
                   field_matching("cause", R"(^cannot rewrite the response to metadata v1 )"
                                           R"(\(correlation id 5\): Kafka )")}))
      << proxy.proc.output();
  error_code ec;
  EXPECT_EQ(other.exchange(frame("still here"), 14, ec), frame("still here"));
}

TEST(ProxyRewrite, BrokerApi08AnswersApiVersionsV3ItselfAndDropsV0) {
  std::atomic<int> messages{0};
  ws_test_server broker([&](ws_peer& p) {
    ws_peer::message m;
    while (p.read(m)) {
      ++messages;
      p.write_binary(m.data);
    }
  });
  proxy_process proxy({"--broker", broker.address(), "--broker-api", "0.8"});
  client c(proxy.port);
  // v3 body: client software name and version as compact strings, then no tagged fields.
  const auto v3 = request(18, 3, 11, std::string("\x02x\x02y\x00", 5));
  error_code ec;
  const auto head = c.exchange(v3, 4, ec);
  ASSERT_FALSE(ec) << ec.message();
  const auto rest = c.recv(
      static_cast<std::size_t>(kws::load_be32(reinterpret_cast<const unsigned char*>(head.data()))), ec);
  const auto answer = kt::decode_api_versions(bytes_of(head + rest), 3);
  EXPECT_EQ(answer.error_code, 0);
  std::map<std::int16_t, std::pair<std::int16_t, std::int16_t>> ranges;
  for (const auto& e : answer.api_keys) ranges[e.api_key] = {e.min_version, e.max_version};
  const std::map<std::int16_t, std::pair<std::int16_t, std::int16_t>> want{
      {0, {0, 0}}, {1, {0, 0}}, {2, {0, 0}}, {3, {0, 0}}, {10, {0, 0}}, {18, {0, 5}}};
  EXPECT_EQ(ranges, want);
  // v0 goes nowhere and gets nothing, as from a Kafka 0.8 broker; the next request is answered in order.
  c.send(request(18, 0, 12));
  EXPECT_EQ(c.exchange(frame("after"), 9, ec), frame("after"));
  EXPECT_EQ(messages.load(), 1) << "only the last frame reached the broker";
}

}  // namespace
