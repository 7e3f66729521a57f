// Process-level tests: start the built kafka-websocket-devbroker on 127.0.0.1 with port 0, read its ports
// from the startup line, and drive it with real clients (kcat, kafka-python) and a raw Beast WebSocket
// client.
#include "devbroker_fixture.hpp"
#include "frame_util.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <regex>

using namespace kws::devbroker::test;
using kws::test::child_process;
using kws::test::read_file;
using kws::test::spawn_options;
using kws::test::write_file;
using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using boost::system::error_code;

TEST_F(DevbrokerProcess, KcatRoundTripsTenThousandKeyedMessagesOverTcp) {
  ASSERT_TRUE(have("/usr/bin/kcat")) << "kcat is missing: scripts/deps.sh installs it";
  ASSERT_NO_FATAL_FAILURE(start({}));
  std::string input;
  for (int i = 0; i < 10000; ++i)
    input += "key-" + std::to_string(i) + ":value-" + std::to_string(i * 7919) + "\n";
  write_file(path("in.txt"), input);
  // Default client settings: librdkafka asks ApiVersions (v3) and takes the highest versions both speak.
  ASSERT_EQ(kcat({"-P", "-t", "test-topic", "-K:"}, path("in.txt"), "/dev/null"), 0)
      << read_file(path("kcat.err"));
  ASSERT_EQ(kcat({"-C", "-t", "test-topic", "-o", "beginning", "-e", "-f", "%k:%s\\n"}, "/dev/null",
                 path("out.txt")),
            0)
      << read_file(path("kcat.err"));
  const std::string output = read_file(path("out.txt"));
  EXPECT_EQ(output.size(), input.size());
  EXPECT_TRUE(output == input) << "consumed bytes differ from produced bytes";
}

TEST_F(DevbrokerProcess, KcatInKafka08ModeWithApiVersionRequestDisabled) {
  ASSERT_TRUE(have("/usr/bin/kcat")) << "kcat is missing: scripts/deps.sh installs it";
  ASSERT_NO_FATAL_FAILURE(start({"--kafka-0.8-only"}));
  std::string input;
  for (int i = 0; i < 1000; ++i) input += "k" + std::to_string(i) + ":v" + std::to_string(i) + "\n";
  write_file(path("in.txt"), input);
  const std::vector<std::string> old{"-X", "api.version.request=false", "-X",
                                     "broker.version.fallback=0.8.0"};
  auto produce = old;
  produce.insert(produce.end(), {"-P", "-t", "old-topic", "-K:"});
  ASSERT_EQ(kcat(produce, path("in.txt"), "/dev/null"), 0) << read_file(path("kcat.err"));
  auto consume = old;
  consume.insert(consume.end(), {"-C", "-t", "old-topic", "-o", "beginning", "-e", "-f", "%k:%s\\n"});
  ASSERT_EQ(kcat(consume, "/dev/null", path("out.txt")), 0) << read_file(path("kcat.err"));
  EXPECT_TRUE(read_file(path("out.txt")) == input);
}

TEST_F(DevbrokerProcess, KcatCarriesA900KiBMessage) {
  ASSERT_TRUE(have("/usr/bin/kcat")) << "kcat is missing: scripts/deps.sh installs it";
  ASSERT_NO_FATAL_FAILURE(start({}));
  std::string big(900 * 1024, '\0');
  std::mt19937 rng(42);
  for (auto& c : big) c = static_cast<char>('a' + rng() % 26);
  write_file(path("big.bin"), big);
  // A file argument is sent as one message.
  ASSERT_EQ(kcat({"-P", "-t", "big", "-p", "0", path("big.bin")}, "/dev/null", "/dev/null"), 0)
      << read_file(path("kcat.err"));
  ASSERT_EQ(
      kcat({"-C", "-t", "big", "-o", "beginning", "-e", "-c", "1", "-f", "%s"}, "/dev/null", path("out.bin")),
      0)
      << read_file(path("kcat.err"));
  const std::string got = read_file(path("out.bin"));
  EXPECT_EQ(got.size(), big.size());
  EXPECT_TRUE(got == big);
}

TEST_F(DevbrokerProcess, KafkaPythonProducerAndConsumerAtApiVersion080) {
  ASSERT_EQ(std::system("/usr/bin/python3 -c 'import kafka' >/dev/null 2>&1"), 0)
      << "python3-kafka is missing: scripts/deps.sh installs it";
  ASSERT_NO_FATAL_FAILURE(start({"--kafka-0.8-only"}));
  write_file(path("client.py"), R"(import sys
from kafka import KafkaProducer, KafkaConsumer, TopicPartition
bs, n = sys.argv[1], int(sys.argv[2])
p = KafkaProducer(bootstrap_servers=bs, api_version=(0, 8, 0), acks=1)
for i in range(n):
    p.send('py-topic', key=b'k%d' % i, value=b'v%d' % i)
p.flush(); p.close()
c = KafkaConsumer(bootstrap_servers=bs, api_version=(0, 8, 0), group_id=None, consumer_timeout_ms=5000)
c.assign([TopicPartition('py-topic', 0)])
c.seek_to_beginning()
got = []
for m in c:
    got.append((m.key, m.value))
    if len(got) == n: break
c.close()
sys.exit(0 if got == [(b'k%d' % i, b'v%d' % i) for i in range(n)] else 3)
)");
  const auto py = kws::test::run({"/usr/bin/python3", path("client.py"), tcp_bootstrap(), "2000"},
                                 {.stderr_to = spawn_options::stderr_target::captured}, 30s);
  EXPECT_EQ(exit_code(py), 0) << py.err;
}

TEST_F(DevbrokerProcess, WebSocketRoundTripsLargeEmptyAndNullKeyedMessagesOnThreePartitions) {
  ASSERT_NO_FATAL_FAILURE(start({"--topic", "multi:3"}));
  ws_client c;
  ASSERT_FALSE(c.connect(ws_ports_[0]));
  const std::string big(900 * 1024, 'z');
  const std::vector<std::vector<kv>> per_partition{
      {{"k0", big}}, {{"k1", ""}, {std::nullopt, "null key"}}, {{std::nullopt, std::nullopt}, {"k2", "v2"}}};
  for (std::int32_t p = 0; p < 3; ++p) {
    const auto res = c.roundtrip(produce_request(10 + p, 1, "multi", p, message_set(per_partition[p])));
    const auto pr = parse_produce(res);
    ASSERT_TRUE(pr.ok);
    EXPECT_EQ(pr.correlation_id, 10 + p);
    EXPECT_EQ(pr.error, 0);
    EXPECT_EQ(pr.base_offset, 0);
  }
  for (std::int32_t p = 0; p < 3; ++p) {
    const auto res = c.roundtrip(fetch_req(20 + p, 100, 1, "multi", p, 0, 2 << 20));
    const auto f = parse_fetch(res);
    ASSERT_TRUE(f.ok);
    EXPECT_EQ(f.correlation_id, 20 + p);
    ASSERT_EQ(f.messages.size(), per_partition[p].size());
    for (std::size_t i = 0; i < f.messages.size(); ++i) {
      const auto& want = per_partition[p][i];
      const auto& got = f.messages[i];
      EXPECT_EQ(got.offset, static_cast<std::int64_t>(i));
      EXPECT_EQ(got.key.has_value(), want.key.has_value());
      if (want.key && got.key) {
        EXPECT_EQ(to_string(*got.key), *want.key);
      }
      EXPECT_EQ(got.value.has_value(), want.value.has_value());
      if (want.value && got.value) {
        EXPECT_TRUE(to_string(*got.value) == *want.value);
      }
    }
  }
}

TEST_F(DevbrokerProcess, WebSocketTextMessageClosesTheConnectionWithOneLogLine) {
  ASSERT_NO_FATAL_FAILURE(start({}));
  ws_client c;
  ASSERT_FALSE(c.connect(ws_ports_[0]));
  const bytes req = metadata_request(1, {});
  ASSERT_FALSE(c.send(req, /*text=*/true));
  bytes res;
  EXPECT_EQ(c.read(res), websocket::error::closed);
  ASSERT_TRUE(wait_protocol_error("^text message")) << log();
  // Exactly one line names the cause.
  EXPECT_EQ(logged({field_matching("cause", "text message")}).size(), 1u) << log();
  // The broker keeps serving others.
  ws_client other;
  ASSERT_FALSE(other.connect(ws_ports_[0]));
  EXPECT_TRUE(parse_metadata(other.roundtrip(req)).ok);
}

TEST_F(DevbrokerProcess, WebSocketSizeHeaderMismatchClosesTheConnection) {
  ASSERT_NO_FATAL_FAILURE(start({}));
  ws_client c;
  ASSERT_FALSE(c.connect(ws_ports_[0]));
  bytes two = metadata_request(1, {});
  const bytes second = metadata_request(2, {});
  two.insert(two.end(), second.begin(), second.end());  // two frames in one message
  ASSERT_FALSE(c.send(two));
  bytes res;
  EXPECT_EQ(c.read(res), websocket::error::closed);
  const std::string expected = "^message of " + std::to_string(two.size()) + " bytes with size header " +
                               std::to_string(second.size() - 4) +
                               ": WebSocket message length does not match";
  EXPECT_TRUE(wait_protocol_error(expected)) << "log:\n" << log();
}

TEST_F(DevbrokerProcess, PlainHttpWithoutUpgradeGets426) {
  ASSERT_NO_FATAL_FAILURE(start({}));
  tcp_client c;
  ASSERT_FALSE(c.connect(ws_ports_[0]));
  ASSERT_FALSE(c.send_raw("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  std::string reply;
  const auto ec = c.read_until_close(reply);
  EXPECT_EQ(ec, asio::error::eof);
  EXPECT_EQ(reply.rfind("HTTP/1.1 426 Upgrade Required\r\n", 0), 0u) << reply;
  EXPECT_TRUE(wait_protocol_error("^plain HTTP GET / without WebSocket upgrade, answered 426$")) << log();
}

TEST_F(DevbrokerProcess, OversizedFrameOnTcpClosesTheConnection) {
  ASSERT_NO_FATAL_FAILURE(start({"--max-frame-bytes", "1024"}));
  tcp_client c;
  ASSERT_FALSE(c.connect(tcp_ports_[0]));
  ASSERT_FALSE(c.send_raw(kws::test::raw_size(4096)));
  std::string reply;
  EXPECT_EQ(c.read_until_close(reply), asio::error::eof);
  EXPECT_TRUE(reply.empty());
  EXPECT_TRUE(wait_protocol_error("^size header 4096: ")) << log();
}

TEST_F(DevbrokerProcess, LongPollFetchWaitsForDataWithoutBlockingOtherConnections) {
  ASSERT_NO_FATAL_FAILURE(start({}));
  ws_client consumer, other;
  ASSERT_FALSE(consumer.connect(ws_ports_[0]));
  ASSERT_FALSE(other.connect(ws_ports_[0]));

  // With no data, a fetch comes back empty after max_wait_ms, not before.
  auto t0 = std::chrono::steady_clock::now();
  auto empty = parse_fetch(consumer.roundtrip(fetch_req(1, 300, 1, "test-topic", 0, 0)));
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_TRUE(empty.ok);
  EXPECT_TRUE(empty.messages.empty());
  EXPECT_GE(waited, 280ms);
  EXPECT_LT(waited, 3s);

  // A long poll parks; another connection is served meanwhile and its produce wakes the poll.
  t0 = std::chrono::steady_clock::now();
  ASSERT_FALSE(consumer.send(fetch_req(2, 8000, 1, "test-topic", 0, 0)));
  const auto meta = parse_metadata(other.roundtrip(metadata_request(3, {})));
  EXPECT_TRUE(meta.ok);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(
      parse_produce(other.roundtrip(produce_request(4, 1, "test-topic", 0, message_set({{"k", "woken"}}))))
          .error,
      0);
  bytes res;
  ASSERT_FALSE(consumer.read(res, 6s));
  const auto f = parse_fetch(res);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s)
      << "the fetch waited for its timeout instead of the data";
  EXPECT_EQ(f.correlation_id, 2);
  ASSERT_EQ(f.messages.size(), 1u);
  EXPECT_EQ(to_string(*f.messages[0].value), "woken");
}

TEST_F(DevbrokerProcess, Kafka08ModeIgnoresApiVersionsAndKeepsTheConnectionOpen) {
  ASSERT_NO_FATAL_FAILURE(start({"--kafka-0.8-only"}));
  ws_client c;
  ASSERT_FALSE(c.connect(ws_ports_[0]));
  ASSERT_FALSE(c.send(api_versions_request(1, 3)));
  // The next answer on this connection is Metadata's: ApiVersions got none.
  const auto m = parse_metadata(c.roundtrip(metadata_request(2, {})));
  EXPECT_EQ(m.correlation_id, 2);
  EXPECT_TRUE(m.ok);
  EXPECT_TRUE(log_contains("ignored ApiVersions v3"));
}

TEST_F(DevbrokerProcess, EdgeQuirksLeaveUnsupportedAndRepeatedTopicFetchesUnansweredAndOverlapProduces) {
  ASSERT_NO_FATAL_FAILURE(start({"--kafka-0.8-only", "--edge-quirks", "--log-level", "debug"}));
  ws_client c;
  ASSERT_FALSE(c.connect(ws_ports_[0]));
  // Fetch v1 is outside the 0.8 set: no reply, and the connection stays open.
  ASSERT_FALSE(c.send(fetch_req(1, 0, 0, "edge", 0, 0, 1 << 20, 1)));
  // Two Produce requests pipelined: both read the log end (0) before either stores its messages.
  ASSERT_FALSE(c.send(produce_request(2, 1, "edge", 0, message_set({{"a", "first-1"}, {"b", "first-2"}}))));
  ASSERT_FALSE(c.send(produce_request(3, 1, "edge", 0, message_set({{"c", "second"}}))));
  bytes first, second;
  ASSERT_FALSE(c.read(first));
  ASSERT_FALSE(c.read(second));
  const auto p2 = parse_produce(first), p3 = parse_produce(second);
  EXPECT_EQ(p2.correlation_id, 2);
  EXPECT_EQ(p3.correlation_id, 3);
  EXPECT_EQ(p2.base_offset, 0);
  EXPECT_EQ(p3.base_offset, 0);
  EXPECT_TRUE(wait_event(
      {kws::test::field_containing("msg", "produce (correlation id 3) overwrote 1 message(s) of edge-0")}));
  // A Fetch naming the topic twice gets no reply either; the next request's answer is the next one read.
  ASSERT_FALSE(c.send(request(api_key::fetch, 0, 4, [](kws::kafka::writer& w) {
    w.int32(-1);
    w.int32(0);
    w.int32(0);
    w.array_count(2);
    for (int i = 0; i < 2; ++i) {
      w.string("edge");
      w.array_count(1);
      w.int32(0);
      w.int64(0);
      w.int32(1 << 20);
    }
  })));
  const auto f = parse_fetch(c.roundtrip(fetch_req(5, 0, 0, "edge", 0, 0)));
  EXPECT_EQ(f.correlation_id, 5);
  ASSERT_EQ(f.messages.size(), 2u);  // "second" overwrote "first-1"; "first-2" stayed
  EXPECT_EQ(f.high_watermark, 2);
  EXPECT_TRUE(
      wait_event({kws::test::field_containing("msg", "no reply to unsupported API key 1 (fetch) v1")}));
  EXPECT_TRUE(wait_event({kws::test::field_containing("msg", "naming topic 'edge' twice")}));
}

TEST_F(DevbrokerProcess, ApiVersionsV3OverWebSocketListsTheFiveApis) {
  ASSERT_NO_FATAL_FAILURE(start({}));
  ws_client c;
  ASSERT_FALSE(c.connect(ws_ports_[0]));
  const auto res = c.roundtrip(api_versions_request(5, 3));
  auto r = open_response(res);
  EXPECT_EQ(r.correlation_id, 5);
  EXPECT_EQ(r.body.int16(), 0);
  EXPECT_EQ(r.body.compact_array_count(), 5);
}

TEST_F(DevbrokerProcess, ThreeNodesOnPortZeroAdvertiseTheirRealPortsAndLeadPartitionsModuloN) {
  ASSERT_NO_FATAL_FAILURE(start({"--nodes", "3", "--topic", "multi:3"}));
  ASSERT_EQ(ws_ports_.size(), 3u);
  ASSERT_EQ(tcp_ports_.size(), 3u);
  ws_client node0, node1;
  ASSERT_FALSE(node0.connect(ws_ports_[0]));
  ASSERT_FALSE(node1.connect(ws_ports_[1]));
  const auto m = parse_metadata(node0.roundtrip(metadata_request(1, {"multi"})));
  ASSERT_TRUE(m.ok);
  ASSERT_EQ(m.brokers.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(m.brokers[i].node_id, static_cast<std::int32_t>(i));
    EXPECT_EQ(m.brokers[i].host, "127.0.0.1");
    EXPECT_EQ(m.brokers[i].port, ws_ports_[i]);
  }
  ASSERT_EQ(m.topics.size(), 1u);
  ASSERT_EQ(m.topics[0].partitions.size(), 3u);
  EXPECT_EQ(m.topics[0].partitions[1].leader, 1);
  const auto set = message_set({{"k", "v"}});
  EXPECT_EQ(parse_produce(node0.roundtrip(produce_request(2, 1, "multi", 1, set))).error,
            static_cast<std::int16_t>(kws::kafka::error_code::not_leader_for_partition));
  EXPECT_EQ(parse_produce(node1.roundtrip(produce_request(3, 1, "multi", 1, set))).error, 0);
}

TEST_F(DevbrokerProcess, AdvertiseOverridesTheBrokerAddressInMetadata) {
  ASSERT_NO_FATAL_FAILURE(start({"--nodes", "2", "--advertise", "broker.example:9000"}));
  ws_client c;
  ASSERT_FALSE(c.connect(ws_ports_[0]));
  const auto m = parse_metadata(c.roundtrip(metadata_request(1, {})));
  ASSERT_EQ(m.brokers.size(), 2u);
  EXPECT_EQ(m.brokers[0].host, "broker.example");
  EXPECT_EQ(m.brokers[0].port, 9000);
  EXPECT_EQ(m.brokers[1].port, 9001);
}

TEST_F(DevbrokerProcess, KafkaPythonWithDefaultSettingsProducesAndConsumesOverTcp) {
  ASSERT_EQ(std::system("/usr/bin/python3 -c 'import kafka' >/dev/null 2>&1"), 0)
      << "python3-kafka is missing: scripts/deps.sh installs it";
  ASSERT_NO_FATAL_FAILURE(start({"--log-level", "debug"}));
  // No api_version: both clients probe with ApiVersions v0 and pick their request versions from the answer.
  write_file(path("client.py"), R"(import sys
from kafka import KafkaProducer, KafkaConsumer
bs, n = sys.argv[1], int(sys.argv[2])
base = 1700000000000
p = KafkaProducer(bootstrap_servers=bs)
print('producer api_version', p.config['api_version'])
futures = [p.send('py-default', key=b'k%d' % i, value=b'v%d' % i, timestamp_ms=base + i) for i in range(n)]
p.flush()
offsets = [f.get(timeout=10).offset for f in futures]
p.close()
c = KafkaConsumer('py-default', bootstrap_servers=bs, auto_offset_reset='earliest', consumer_timeout_ms=10000)
print('consumer api_version', c.config['api_version'])
got = []
for m in c:
    got.append((m.offset, m.key, m.value, m.timestamp))
    if len(got) == n: break
c.close()
print('offsets', 'ok' if offsets == list(range(n)) else offsets[:5])
print('messages', 'ok' if got == [(i, b'k%d' % i, b'v%d' % i, base + i) for i in range(n)] else got[:5])
)");
  const auto py = kws::test::run({"/usr/bin/python3", path("client.py"), tcp_bootstrap(), "500"},
                                 {.stderr_to = spawn_options::stderr_target::captured}, 40s);
  ASSERT_EQ(exit_code(py), 0) << py.err;
  EXPECT_EQ(py.out,
            "producer api_version (0, 10, 0)\n"
            "consumer api_version (0, 10, 0)\n"
            "offsets ok\n"
            "messages ok\n")
      << py.err;
  // What kafka-python sends for 0.10.0; the timestamps above came back, so message format v1 went both ways.
  const std::string l = log();
  for (const char* used : {"request api_versions v0 ", "request metadata v1 ", "request produce v2 ",
                           "request fetch v2 ", "request list_offsets v0 "})
    EXPECT_NE(l.find(used), std::string::npos) << used << " missing from the log:\n" << l;
  EXPECT_EQ(l.find("unsupported"), std::string::npos) << l;
  EXPECT_TRUE(logged({field("level", "warning")}).empty()) << l;
}

TEST_F(DevbrokerProcess, KcatWithDefaultSettingsUsesKafka0100VersionsAndFindsOffsetsByTime) {
  ASSERT_TRUE(have("/usr/bin/kcat")) << "kcat is missing: scripts/deps.sh installs it";
  ASSERT_NO_FATAL_FAILURE(start({"--log-level", "debug"}));
  std::string input;
  for (int i = 0; i < 100; ++i) input += "k" + std::to_string(i) + ":v" + std::to_string(i) + "\n";
  write_file(path("in.txt"), input);
  ASSERT_EQ(kcat({"-P", "-t", "kc", "-K:"}, path("in.txt"), "/dev/null"), 0) << read_file(path("kcat.err"));
  ASSERT_EQ(
      kcat({"-C", "-t", "kc", "-o", "beginning", "-e", "-f", "%T %k:%s\\n"}, "/dev/null", path("out.txt")), 0)
      << read_file(path("kcat.err"));
  // Produce v2 carries magic 1 messages with librdkafka's create times; Fetch v2 returns them.
  std::string keyed;
  std::istringstream lines(read_file(path("out.txt")));
  for (std::string line; std::getline(lines, line);) {
    const auto space = line.find(' ');
    ASSERT_NE(space, std::string::npos) << line;
    EXPECT_GT(std::stoll(line.substr(0, space)), 1600000000000) << line;
    keyed += line.substr(space + 1) + "\n";
  }
  EXPECT_TRUE(keyed == input);

  // Offsets by time: ListOffsets v1 over timestamps produced as magic 1 at 1000, 2000 and 3000.
  ws_client c;
  ASSERT_FALSE(c.connect(ws_ports_[0]));
  for (int i = 0; i < 3; ++i) {
    const auto set =
        message_set({{std::nullopt, std::string(1, static_cast<char>('a' + i))}}, 1, 1000 * (i + 1));
    EXPECT_EQ(parse_produce(c.roundtrip(produce_request(i, 1, "timed", 0, set, 2)), 2).base_offset, i);
  }
  ASSERT_EQ(kcat({"-Q", "-t", "timed:0:2000"}, "/dev/null", path("query.txt")), 0)
      << read_file(path("kcat.err"));
  EXPECT_NE(read_file(path("query.txt")).find("offset 1"), std::string::npos) << read_file(path("query.txt"));
  ASSERT_EQ(
      kcat({"-C", "-t", "timed", "-o", "s@1500", "-e", "-f", "%o:%T:%s\\n"}, "/dev/null", path("timed.txt")),
      0)
      << read_file(path("kcat.err"));
  EXPECT_EQ(read_file(path("timed.txt")), "1:2000:b\n2:3000:c\n");

  // librdkafka 2.0 takes the highest version both sides speak.
  const std::string l = log();
  for (const char* used : {"request api_versions v3 ", "request metadata v1 ", "request produce v2 ",
                           "request fetch v2 ", "request list_offsets v1 "})
    EXPECT_NE(l.find(used), std::string::npos) << used << " missing from the log:\n" << l;
  EXPECT_EQ(l.find("unsupported"), std::string::npos) << l;
}

TEST_F(DevbrokerProcess, IdleWebSocketIsClosedWithCode1000AfterTheIdleTimeButNotDuringARequest) {
  ASSERT_NO_FATAL_FAILURE(start({"--close-idle-after", "500ms"}));
  tcp_client plain;
  ASSERT_FALSE(plain.connect(tcp_ports_[0]));
  ws_client c;
  ASSERT_FALSE(c.connect(ws_ports_[0]));
  // A request within the idle time is answered.
  EXPECT_TRUE(parse_metadata(c.roundtrip(metadata_request(1, {}))).ok);
  // A long poll longer than the idle time is answered too: the connection is busy, not idle, meanwhile.
  const auto f = parse_fetch(c.roundtrip(fetch_req(2, 800, 1, "test-topic", 0, 0, 1 << 20, 2)), 2);
  EXPECT_TRUE(f.ok);
  EXPECT_EQ(f.correlation_id, 2);
  EXPECT_TRUE(f.messages.empty());

  // Then nothing: the broker closes, which ends this read.
  const auto idle_from = std::chrono::steady_clock::now();
  bytes res;
  EXPECT_EQ(c.read(res, 5s), websocket::error::closed);
  const auto idle = std::chrono::steady_clock::now() - idle_from;
  EXPECT_EQ(c.close_code(), 1000);
  EXPECT_GE(idle, 450ms);
  EXPECT_LT(idle, 3s);
  // Exactly one close line so far, an ordinary (info) one for the WebSocket connection. Connection ids are
  // not compared: the two listeners accept in either order.
  ASSERT_TRUE(wait_event({field("event", "closed"), field("level", "info"), field("listener", "ws"),
                          field("end", "idle"), field("cause", "idle close after 500ms")}))
      << log();
  const auto close_lines = [this] { return logged({field("event", "closed")}).size(); };
  EXPECT_EQ(close_lines(), 1u) << log();
  EXPECT_TRUE(logged({field("level", "warning")}).empty()) << log();

  // TCP connections are never closed for idleness: the one opened first, idle all along, still answers.
  EXPECT_TRUE(parse_metadata(plain.roundtrip(metadata_request(3, {}))).ok);
  EXPECT_EQ(close_lines(), 1u) << log();
}

TEST_F(DevbrokerProcess, CloseIdleAfterRejectsAMalformedDuration) {
  for (const char* bad : {"5x", "0ms", "-1s", "ms", "25h"}) {
    const auto r = kws::test::run({KWS_DEVBROKER_PATH, "--listen", "127.0.0.1:0", "--close-idle-after", bad},
                                  {.stderr_to = spawn_options::stderr_target::captured}, 5s);
    EXPECT_NE(exit_code(r), 0) << bad;
    EXPECT_NE((r.out + r.err).find("expected a duration"), std::string::npos)
        << bad << ": " << r.out << r.err;
  }
}

namespace {

// The exit codes and start-up line the other servers in apps/ use: 2 for a bad flag, 1 (one plain line) when
// it cannot start.
TEST(DevbrokerStartup, BadFlagsExitWith2AndAPortInUseIsOnePlainLineWithExitCode1) {
  for (const auto& bad : std::vector<std::vector<std::string>>{{"--bogus"}, {"--log-level", "loud"}}) {
    std::vector<std::string> argv{KWS_DEVBROKER_PATH};
    argv.insert(argv.end(), bad.begin(), bad.end());
    child_process p(argv);
    EXPECT_EQ(p.wait(10s), 2) << bad[0] << ": " << p.output();
  }
  asio::io_context ioc;
  tcp::acceptor taken(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto port = std::to_string(taken.local_endpoint().port());
  child_process p({KWS_DEVBROKER_PATH, "--listen", "127.0.0.1:" + port, "--log-level", "warning"});
  EXPECT_EQ(p.wait(10s), 1) << p.output();
  const auto out = p.output();
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_NE(out.find(" critical cannot start: "), std::string::npos) << out;
  EXPECT_NE(out.find("Address already in use"), std::string::npos) << out;
  EXPECT_EQ(out.find('['), std::string::npos) << out;
}

}  // namespace
