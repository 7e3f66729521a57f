// kafka-websocket-gateway in front of a TCP Kafka cluster that is not ours (librdkafka's mock cluster, or the
// dev broker's TCP listener), reached by real clients through the built proxy, over wss with a certificate
// made at test time; and its access control, validation and routing at the HTTP and WebSocket level.
// Everything on 127.0.0.1 with ephemeral ports; every wait is bounded.
#include "client_tools.hpp"
#include "frame_util.hpp"
#include "gateway_support.hpp"
#include "http_client.hpp"
#include "kafka_encoder.hpp"
#include "log_events.hpp"
#include "process.hpp"
#include "test_env.hpp"
#include "ws_test_client.hpp"
#include "ws_test_server.hpp"

#include <kws/kws.hpp>

#include <gtest/gtest.h>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/websocket/error.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <map>
#include <regex>
#include <set>
#include <thread>
#include <tuple>

namespace {

using namespace kws::test;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A request to the gateway over plain TCP: its status line, headers and body, until it closes.
std::string http_exchange(unsigned short port, const std::string& target,
                          const std::string& extra_headers = {}, bool upgrade = true) {
  asio::io_context ioc;
  tcp::socket s(ioc);
  s.connect({asio::ip::make_address("127.0.0.1"), port});
  std::string req = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  if (upgrade) {
    req +=
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
  }
  req += extra_headers + "\r\n";
  asio::write(s, asio::buffer(req));
  std::string in;
  asio::async_read(s, asio::dynamic_buffer(in), [](error_code, std::size_t) {});
  ioc.run_for(10s);
  return in;
}

// A Metadata v0 request for all topics.
std::string metadata_v0(std::int32_t correlation_id) {
  std::string r{0, 3, 0, 0};
  for (int shift = 24; shift >= 0; shift -= 8) r += static_cast<char>((correlation_id >> shift) & 0xff);
  r += std::string{0, 1, 't', 0, 0, 0, 0};
  return frame(r);
}

class Gateway : public ::testing::Test {
 protected:
  void TearDown() override {
    if (mock_in_ >= 0) ::close(mock_in_);
    for (auto* p : {proxy_.get(), gateway_.get()}) {
      if (!p) continue;
      p->signal(SIGTERM);
      EXPECT_EQ(p->wait(15s), std::optional<int>(0)) << "a server did not exit with 0 within 15 s of SIGTERM";
    }
    if (HasFailure()) {
      for (auto& [name, p] :
           std::vector<std::pair<const char*, child_process*>>{{"proxy", proxy_.get()},
                                                               {"gateway", gateway_.get()},
                                                               {"mock cluster", mock_.get()},
                                                               {"dev broker", devbroker_.get()}}) {
        if (p) std::cerr << "---- " << name << " log ----\n" << p->output();
      }
    }
  }

  // librdkafka's mock cluster: `brokers` brokers (node ids 1..N) and the given topics (NAME:PARTITIONS).
  void start_mock(int brokers, const std::vector<std::string>& topics) {
    const auto fifo = dir_ / "mock.in";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    // Held open before the child starts: posix_spawn waits for the child to exec, and the child's open of a
    // FIFO waits for a writer (Linux opens a FIFO read-write at once).
    mock_in_ = ::open(fifo.c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(mock_in_, 0);
    std::vector<std::string> argv{KWS_MOCK_CLUSTER_PATH, "--brokers", std::to_string(brokers)};
    for (const auto& t : topics) argv.insert(argv.end(), {"--topic", t});
    mock_ = std::make_unique<child_process>(argv, spawn_options{.stdin_file = fifo});
    const auto bs = mock_->wait_for_output(std::regex("bootstrap=(\\S+)"));
    ASSERT_TRUE(bs) << mock_->output();
    upstream_ = *bs;
  }

  // A command to the mock cluster ("down 2"), answered with "ok down 2".
  void mock_command(const std::string& cmd) {
    const auto line = cmd + "\n";
    ASSERT_EQ(::write(mock_in_, line.data(), line.size()), static_cast<ssize_t>(line.size()));
    ASSERT_TRUE(mock_->wait_for_output(std::regex("ok " + cmd))) << mock_->output();
  }

  // The dev broker with a TCP listener, as the cluster.
  void start_devbroker_tcp(const std::vector<std::string>& args = {}) {
    devbroker_ = std::make_unique<child_process>(
        std::vector<std::string>{KWS_DEVBROKER_PATH, "--listen", "127.0.0.1:0", "--tcp-listen", "127.0.0.1:0",
                                 "--topic", "dev:2", "--log-format", "json"} +
        args);
    const auto tcp_port = devbroker_->wait_for_output(std::regex(R"(tcp=127\.0\.0\.1:(\d+))"));
    ASSERT_TRUE(tcp_port) << devbroker_->output();
    upstream_ = "127.0.0.1:" + *tcp_port;
  }

  void start_gateway(const std::vector<std::string>& args = {}) {
    // The log is JSON: tests read its events by their fields.
    std::vector<std::string> argv{
        KWS_GATEWAY_PATH,  "--listen", "127.0.0.1:0",  "--upstream", upstream_, "--threads", "2",
        "--drain-timeout", "2s",       "--log-format", "json"};
    if (tls_)
      argv = argv + std::vector<std::string>{"--tls-cert", tls_->cert_pem, "--tls-key", tls_->key_pem};
    gateway_ = std::make_unique<child_process>(argv + args);
    const auto port = gateway_->wait_for_output(std::regex(R"(listening on 127\.0\.0\.1:(\d+))"));
    ASSERT_TRUE(port) << gateway_->output();
    gateway_port_ = static_cast<unsigned short>(std::stoi(*port));
  }

  // The proxy in front, reaching every broker through the gateway by node id (or through the gateway at
  // `node_gateway_port`, when given: bootstrap and brokers then go through two gateways).
  void start_proxy(unsigned short node_gateway_port = 0, const std::vector<std::string>& extra = {}) {
    const auto scheme = tls_ ? std::string("wss") : std::string("ws");
    const auto gw = scheme + "://localhost:" + std::to_string(gateway_port_);
    const auto nodes_gw =
        node_gateway_port ? scheme + "://localhost:" + std::to_string(node_gateway_port) : gw;
    std::vector<std::string> argv{
        KWS_PROXY_PATH, "--listen",  "127.0.0.1", "--port",          "0", "--broker",
        gw + "/kafka",  "--threads", "2",         "--drain-timeout", "2s"};
    if (node_template_)
      argv = argv + std::vector<std::string>{"--broker-url-template", nodes_gw + "/kafka/{node_id}"};
    if (tls_) argv = argv + std::vector<std::string>{"--ca-file", tls_->ca_pem};
    proxy_ = std::make_unique<child_process>(argv + extra);
    const auto port = proxy_->wait_for_output(std::regex(R"(listening on 127\.0\.0\.1:(\d+))"));
    ASSERT_TRUE(port) << proxy_->output();
    bootstrap_ = "127.0.0.1:" + *port;
  }

  void use_tls() { tls_ = make_test_certificates(); }

  // The proxy's lines for client connections that ended ("conn N closed ..."), each logged after everything
  // the proxy did for that connection.
  static std::size_t closes_in(std::string_view out) {
    static const std::regex closed(R"(conn \d+ closed )");
    return static_cast<std::size_t>(std::distance(
        std::cregex_iterator(out.data(), out.data() + out.size(), closed), std::cregex_iterator()));
  }
  std::size_t count_closes() const { return closes_in(proxy_->output()); }
  bool wait_for_closes(std::size_t n) const {
    return proxy_->wait_for_output([n](std::string_view out) { return closes_in(out) >= n; });
  }

#ifdef KWS_PLUGIN_PATH
  // kcat with the librdkafka plugin, straight to the gateway.
  std::vector<std::string> plugin_kcat() const {
    const auto gw = "ws://127.0.0.1:" + std::to_string(gateway_port_);
    return {KWS_KCAT_PATH,
            "-b",
            "127.0.0.1:" + std::to_string(gateway_port_),
            "-X",
            std::string("plugin.library.paths=") + KWS_PLUGIN_PATH,
            "-X",
            "kws.bootstrap.url.template=" + gw + "/kafka",
            "-X",
            "kws.url.template=" + gw + "/kafka/{node_id}"};
  }
  static spawn_options plugin_io(const std::filesystem::path& out) {
    spawn_options io = tool_io("/dev/null", out);
#ifdef KWS_ASAN_PRELOAD
    io.environment = {{"LD_PRELOAD", KWS_ASAN_PRELOAD}, {"ASAN_OPTIONS", "detect_leaks=0"}};
#endif
    return io;
  }
#endif

  void kcat(const std::string& name, const std::vector<std::string>& args,
            const std::string& in = "/dev/null", std::chrono::milliseconds limit = 30s) {
    const auto r = run(std::vector<std::string>{KWS_KCAT_PATH, "-b", bootstrap_} + args,
                       tool_io(in, dir_ / (name + ".out")), limit);
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << "kcat " << name << ": " << describe(r.exit_code, r.err);
  }
  std::string output_of(const std::string& name) const {
    return read_file(dir_ / (name + ".out"));
  }

  temp_dir dir_{"kws-gateway"};
  std::optional<tls_files> tls_;
  std::unique_ptr<child_process> mock_, devbroker_, gateway_, proxy_;
  int mock_in_ = -1;
  std::string upstream_;
  unsigned short gateway_port_ = 0;
  std::string bootstrap_;
  bool node_template_ = true;  // start_proxy gives --broker-url-template with {node_id}
};

TEST_F(Gateway, KcatThroughProxyAndWssReachesEveryPartitionOfSixOnThreeBrokers) {
  use_tls();
  ASSERT_NO_FATAL_FAILURE(start_mock(3, {"six:6"}));
  ASSERT_NO_FATAL_FAILURE(start_gateway());
  ASSERT_NO_FATAL_FAILURE(start_proxy());
  ASSERT_NO_FATAL_FAILURE(kcat("metadata", {"-L", "-t", "six"}));
  const auto md = output_of("metadata");
  const std::regex listed(R"(broker \d+ at 127\.0\.0\.1:\d+)");
  EXPECT_EQ(std::distance(std::sregex_iterator(md.begin(), md.end(), listed), std::sregex_iterator()), 3)
      << md;
  std::map<int, std::vector<std::string>> want;
  for (int p = 0; p < 6; ++p) {
    const auto lines = keyed_lines(200, "p" + std::to_string(p) + "-");
    write_file(dir_ / ("in" + std::to_string(p)), lines);
    want[p] = lines_of(lines);
    ASSERT_NO_FATAL_FAILURE(
        kcat("produce" + std::to_string(p),
             {"-P", "-t", "six", "-p", std::to_string(p), "-K:", "-l", dir_ / ("in" + std::to_string(p))}));
  }
  ASSERT_NO_FATAL_FAILURE(kcat("consume", {"-C", "-t", "six", "-o", "beginning", "-e", "-f", "%p|%k:%s\\n"}));
  EXPECT_TRUE(by_partition(output_of("consume")) == want) << "per-partition contents differ";
  // Every leader was reached through its own path (the mock cluster picks leaders at random).
  const auto led = leaders(md);
  ASSERT_FALSE(led.empty()) << md;
  for (int node : led) {
    EXPECT_FALSE(
        events(*gateway_, {field("event", "open"), field("target", "/kafka/" + std::to_string(node))})
            .empty())
        << "node " << node;
  }
  // Each broker on a listener of its own: the proxy reported no two sharing one. It would have said so while
  // mapping the first Metadata answer, before the first client connection ended (logged after it).
  ASSERT_TRUE(wait_for_closes(1)) << proxy_->output();
  EXPECT_EQ(proxy_->output().find("both map to"), std::string::npos) << proxy_->output();
}

TEST_F(Gateway, WithoutANodeIdTemplateTheProxySaysThatTwoBrokersShareOneUrl) {
  // The gateway advertises every broker at its own address; the default template makes one URL of them all,
  // so clients would send everything to the bootstrap path. The proxy says so, once, in a line that names
  // the fix.
  ASSERT_NO_FATAL_FAILURE(start_mock(3, {"six:6"}));
  ASSERT_NO_FATAL_FAILURE(start_gateway());
  node_template_ = false;
  ASSERT_NO_FATAL_FAILURE(start_proxy());
  ASSERT_NO_FATAL_FAILURE(kcat("metadata", {"-L", "-t", "six"}));
  const auto line = proxy_->wait_for_output(std::regex(
      R"(brokers (\d+) and \d+ both map to ws://localhost:\d+/kafka, so clients find both at [^ ]+ and send what )"
      R"(they mean for either to that one URL; if it leads to one broker only, give --broker-url-template a )"
      R"(\{node_id\} \(behind kafka-websocket-gateway: 'ws://localhost:\d+/kafka/\{node_id\}'\))"));
  ASSERT_TRUE(line) << proxy_->output();
  ASSERT_TRUE(wait_for_closes(1)) << proxy_->output();
  const auto closes = count_closes();
  ASSERT_NO_FATAL_FAILURE(kcat("metadata-again", {"-L", "-t", "six"}));
  // The second client's connection closed: whatever the proxy logged while it lasted is in the output.
  ASSERT_TRUE(wait_for_closes(closes + 1)) << proxy_->output();
  const auto out = proxy_->output();
  std::size_t lines = 0;
  for (auto at = out.find("both map to"); at != std::string::npos; at = out.find("both map to", at + 1))
    ++lines;
  EXPECT_EQ(lines, 1u) << out;
}

TEST_F(Gateway, AConsumerGroupThroughTheWholeChain) {
  ASSERT_NO_FATAL_FAILURE(start_mock(3, {"grouped:4"}));
  ASSERT_NO_FATAL_FAILURE(start_gateway());
  ASSERT_NO_FATAL_FAILURE(start_proxy());
  const auto input = keyed_lines(400, "g-");
  write_file(dir_ / "in", input);
  ASSERT_NO_FATAL_FAILURE(kcat("produce", {"-P", "-t", "grouped", "-K:", "-l", dir_ / "in"}));
  // A balanced consumer: FindCoordinator, JoinGroup, SyncGroup, OffsetCommit, all through the gateway.
  ASSERT_NO_FATAL_FAILURE(
      kcat("group", {"-G", "the-group", "-o", "beginning", "-c", "400", "-f", "%k:%s\\n", "grouped"},
           "/dev/null", 45s));
  auto got = lines_of(output_of("group"));
  auto sent = lines_of(input);
  std::sort(got.begin(), got.end());
  std::sort(sent.begin(), sent.end());
  EXPECT_TRUE(got == sent) << got.size() << " of " << sent.size() << " messages";
}

#ifdef KWS_PLUGIN_PATH
TEST_F(Gateway, AConsumerGroupWithTheLibrdkafkaPluginStraightToTheGateway) {
  ASSERT_NO_FATAL_FAILURE(start_mock(3, {"plugged:4"}));
  // librdkafka tells brokers apart by address: each gets a name of its own (which need not resolve).
  ASSERT_NO_FATAL_FAILURE(start_gateway({"--advertise", "kafka-{node_id}.gateway.invalid:443"}));
  const auto plugin = plugin_kcat();
  spawn_options io = plugin_io(dir_ / "plugin.out");
  const auto input = keyed_lines(300, "pl-");
  write_file(dir_ / "in", input);
  io.stdin_file = dir_ / "in";
  auto r = run(plugin + std::vector<std::string>{"-P", "-t", "plugged", "-K:"}, io, 30s);
  ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r.exit_code, r.err);
  io.stdin_file = "/dev/null";
  r = run(plugin + std::vector<std::string>{"-G", "plugin-group", "-o", "beginning", "-c", "300", "-f",
                                            "%k:%s\\n", "plugged"},
          io, 45s);
  ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r.exit_code, r.err);
  auto got = lines_of(read_file(dir_ / "plugin.out"));
  auto sent = lines_of(input);
  std::sort(got.begin(), got.end());
  std::sort(sent.begin(), sent.end());
  EXPECT_TRUE(got == sent) << got.size() << " of " << sent.size() << " messages";
  // A name per broker: the plugin had nothing to say about shared addresses.
  EXPECT_EQ(r.err.find("are all advertised at"), std::string::npos) << r.err;
}

TEST_F(Gateway, WithOneAdvertisedAddressForAllBrokersThePluginSaysLibrdkafkaCannotTellThemApart) {
  // The gateway's default --advertise: its own address for every broker. librdkafka keeps one connection per
  // address, so this cannot work; the plugin says why in one line, however many Metadata answers come.
  ASSERT_NO_FATAL_FAILURE(start_mock(3, {"six:6"}));
  ASSERT_NO_FATAL_FAILURE(start_gateway());
  const auto r =
      run(plugin_kcat() + std::vector<std::string>{"-L", "-t", "six"}, plugin_io(dir_ / "plugin.out"), 30s);
  ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r.exit_code, r.err);
  const std::string line =
      "brokers 1, 2, 3 are all advertised at 127.0.0.1:" + std::to_string(gateway_port_) +
      ": librdkafka keeps one connection per address";
  EXPECT_NE(r.err.find(line), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(line), r.err.rfind(line)) << r.err;
}
#endif

TEST_F(Gateway, KafkaPythonWithDefaultSettingsThroughTheChain) {
  ASSERT_NO_FATAL_FAILURE(start_mock(3, {"py:1"}));
  ASSERT_NO_FATAL_FAILURE(start_gateway());
  ASSERT_NO_FATAL_FAILURE(start_proxy());
  const auto py = run({"/usr/bin/python3", KWS_KAFKA_PYTHON_SCRIPT, "--bootstrap", bootstrap_, "--topic",
                       "py", "--count", "500", "--api-version", "auto", "--limit-s", "25"},
                      {.stderr_to = spawn_options::stderr_target::captured}, 28s);
  EXPECT_EQ(py.exit_code, std::optional<int>(0)) << describe(py.exit_code, py.err) << "stdout:\n" << py.out;
  EXPECT_NE(py.out.find("500 messages round-tripped"), std::string::npos) << py.out;
}

TEST_F(Gateway, TheDevBrokersTcpListenerAsTheCluster) {
  ASSERT_NO_FATAL_FAILURE(start_devbroker_tcp());
  ASSERT_NO_FATAL_FAILURE(start_gateway());
  ASSERT_NO_FATAL_FAILURE(start_proxy());
  const auto input = keyed_lines(1000, "d-");
  write_file(dir_ / "in", input);
  ASSERT_NO_FATAL_FAILURE(kcat("produce", {"-P", "-t", "dev", "-p", "1", "-K:", "-l", dir_ / "in"}));
  ASSERT_NO_FATAL_FAILURE(
      kcat("consume", {"-C", "-t", "dev", "-p", "1", "-o", "beginning", "-e", "-f", "%k:%s\\n"}));
  EXPECT_TRUE(output_of("consume") == input);
}

TEST_F(Gateway, ClientsRecoverWhenABrokerGoesDownAndComesBack) {
  ASSERT_NO_FATAL_FAILURE(start_mock(3, {"flaky:3"}));
  ASSERT_NO_FATAL_FAILURE(start_gateway({"--log-level", "debug"}));
  ASSERT_NO_FATAL_FAILURE(start_proxy());
  const auto fifo = dir_ / "produce.in";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const int writer = ::open(fifo.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(writer, 0);
  auto producer = std::make_unique<child_process>(
      std::vector<std::string>{KWS_KCAT_PATH, "-b", bootstrap_, "-P", "-t", "flaky", "-K:"},
      tool_io(fifo, dir_ / "produce.out"));
  const auto send = [&](const std::string& text) {
    ASSERT_EQ(::write(writer, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  };
  ASSERT_NO_FATAL_FAILURE(kcat("metadata", {"-L", "-t", "flaky"}));
  const auto led = leaders(output_of("metadata"));
  ASSERT_FALSE(led.empty()) << output_of("metadata");
  const auto victim = std::to_string(*led.begin());
  send(keyed_lines(300, "before-"));
  // Every partition has been written to once the gateway has relayed to every leader.
  for (int node : led) {
    ASSERT_TRUE(wait_for_event(
        *gateway_, {field("event", "open"), field("target", "/kafka/" + std::to_string(node))}, 15s));
  }
  ASSERT_NO_FATAL_FAILURE(mock_command("down " + victim));
  send(keyed_lines(300, "during-"));
  ASSERT_NO_FATAL_FAILURE(mock_command("up " + victim));
  send(keyed_lines(300, "after-"));
  ::close(writer);  // EOF: kcat flushes (retrying what broker 2 could not take) and exits
  const auto rc = producer->wait(60s);
  ASSERT_EQ(rc, std::optional<int>(0)) << describe(rc, producer->error_output());
  kcat("consume", {"-C", "-t", "flaky", "-o", "beginning", "-e", "-f", "%k:%s\\n"});
  auto got = lines_of(output_of("consume"));
  auto sent =
      lines_of(keyed_lines(300, "before-") + keyed_lines(300, "during-") + keyed_lines(300, "after-"));
  std::sort(got.begin(), got.end());
  std::sort(sent.begin(), sent.end());
  EXPECT_TRUE(got == sent) << got.size() << " of " << sent.size() << " messages";
}

TEST_F(Gateway, TheLibrarysDialerStraightToTheGateway) {
  ASSERT_NO_FATAL_FAILURE(start_devbroker_tcp());
  ASSERT_NO_FATAL_FAILURE(start_gateway());
  asio::io_context ioc;
  kws::dialer d(ioc.get_executor(), kws::dialer_config{.handshake_timeout = 5s});
  auto c = d.dial("ws://127.0.0.1:" + std::to_string(gateway_port_) + "/kafka");
  // Metadata v0 for all topics: the broker list comes back at the gateway's address.
  const auto req = metadata_v0(9);
  error_code ec;
  c.write_frame(asio::buffer(req), ec);
  ASSERT_FALSE(ec) << ec.message();
  boost::beast::flat_buffer buf;
  c.read_frame(buf, ec);
  ASSERT_FALSE(ec) << ec.message();
  const auto res = boost::beast::buffers_to_string(buf.data());
  EXPECT_NE(res.find("127.0.0.1"), std::string::npos);
  const auto port = std::to_string(gateway_port_);
  const unsigned char be[4] = {0, 0, static_cast<unsigned char>(gateway_port_ >> 8),
                               static_cast<unsigned char>(gateway_port_ & 0xff)};
  EXPECT_NE(res.find(std::string(reinterpret_cast<const char*>(be), 4)), std::string::npos)
      << "the broker is advertised at the gateway's port " << port;
}

// A bootstrap server whose TCP connect never completes: a listener whose backlog (of one) a connection of
// its own has taken, so that the kernel drops the gateway's SYNs. Alone, it ends the client's connection
// at --connect-timeout, with one line saying so; listed first, the gateway goes on to the next one.
class SilentBootstrap : public Gateway {
 protected:
  void SetUp() override {
    listener_.open(asio::ip::tcp::v4());
    listener_.bind({asio::ip::make_address("127.0.0.1"), 0});
    listener_.listen(0);
    filler_.connect(listener_.local_endpoint());
    silent_ = "127.0.0.1:" + std::to_string(listener_.local_endpoint().port());
  }

  // Metadata v0 through the gateway's bootstrap path; its answer, or the error that ended the connection.
  std::pair<error_code, std::string> metadata_through_gateway() {
    kws::dialer d(ioc_.get_executor(), kws::dialer_config{.handshake_timeout = 5s});
    auto c = d.dial("ws://127.0.0.1:" + std::to_string(gateway_port_) + "/kafka");
    const auto req = metadata_v0(3);
    error_code ec;
    c.write_frame(asio::buffer(req), ec);
    if (ec) return {ec, {}};
    boost::beast::flat_buffer buf;
    c.read_frame(buf, ec);
    close_code_ = c.peer_close_code();
    return {ec, boost::beast::buffers_to_string(buf.data())};
  }

  asio::io_context ioc_;
  asio::ip::tcp::acceptor listener_{ioc_};
  asio::ip::tcp::socket filler_{ioc_};
  std::string silent_;
  int close_code_ = 0;
};

TEST_F(SilentBootstrap, AloneItEndsTheClientAtConnectTimeoutWithOneLine) {
  upstream_ = silent_;
  ASSERT_NO_FATAL_FAILURE(start_gateway({"--connect-timeout", "300ms"}));
  const auto [ec, answer] = metadata_through_gateway();
  EXPECT_TRUE(ec) << "answered: " << answer.size() << " bytes";
  EXPECT_EQ(close_code_, 1013);
  ASSERT_TRUE(wait_for_event(
      *gateway_, {field("event", "closed"), field("end", "cluster_unreachable"), field("side", "broker"),
                  field("cause", "cluster unreachable: Connection timed out")}))
      << gateway_->output();
  EXPECT_EQ(events(*gateway_, {field_containing("msg", "timed out")}).size(), 1u) << gateway_->output();
}

TEST_F(SilentBootstrap, ListedFirstTheNextBootstrapServerServesTheClient) {
  ASSERT_NO_FATAL_FAILURE(start_devbroker_tcp());
  const auto answering = upstream_;
  upstream_ = silent_ + "," + answering;
  ASSERT_NO_FATAL_FAILURE(start_gateway({"--connect-timeout", "300ms"}));
  const auto [ec, answer] = metadata_through_gateway();
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_NE(answer.find("127.0.0.1"), std::string::npos);
  EXPECT_TRUE(wait_for_event(*gateway_, {field("event", "open"), field("upstream", answering)}))
      << gateway_->output();
}

TEST_F(Gateway, AMissingOrWrongTokenGets401AndTheClusterSeesNoConnection) {
  ASSERT_NO_FATAL_FAILURE(start_devbroker_tcp());
  write_file(dir_ / "tokens", "s3cret-token\n");
  ASSERT_NO_FATAL_FAILURE(start_gateway({"--auth-token-file", dir_ / "tokens"}));
  const auto none = http_exchange(gateway_port_, "/kafka");
  EXPECT_TRUE(none.starts_with("HTTP/1.1 401")) << none;
  EXPECT_NE(none.find("WWW-Authenticate: Bearer"), std::string::npos) << none;
  const auto wrong = http_exchange(gateway_port_, "/kafka", "Authorization: Bearer s3cret-tokem\r\n");
  EXPECT_TRUE(wrong.starts_with("HTTP/1.1 401")) << wrong;
  EXPECT_TRUE(wait_for_event(*gateway_, {field("event", "refused"), field("status", "401"),
                                         field("cause", "the bearer token is not valid")}));
  const event_filter cluster_connection{field("event", "open"), field("listener", "tcp")};
  EXPECT_TRUE(events(*devbroker_, cluster_connection).empty()) << "the cluster saw a connection";
  ws_test_client ok;
  EXPECT_FALSE(ok.connect(gateway_port_, 3s, "/kafka", {{"Authorization", "Bearer s3cret-token"}}));
  EXPECT_TRUE(wait_for_event(*devbroker_, cluster_connection));
  EXPECT_EQ(gateway_->output().find("s3cret"), std::string::npos) << "a token in the log";
}

TEST_F(Gateway, AWrongOriginGets403UnknownNodeIdGets404PlainGetGets426AndHealthz200) {
  ASSERT_NO_FATAL_FAILURE(start_devbroker_tcp());
  ASSERT_NO_FATAL_FAILURE(start_gateway({"--allow-origin", "https://app.example.com"}));
  EXPECT_TRUE(http_exchange(gateway_port_, "/kafka", "Origin: https://evil.example.com\r\n")
                  .starts_with("HTTP/1.1 403"));
  const auto unknown = http_exchange(gateway_port_, "/kafka/77");
  EXPECT_TRUE(unknown.starts_with("HTTP/1.1 404")) << unknown;
  EXPECT_NE(unknown.find("no broker with node id 77"), std::string::npos) << unknown;
  // Node 0 has not been seen in a response yet: the gateway asks the cluster, and routes.
  ws_test_client node0;
  EXPECT_FALSE(node0.connect(gateway_port_, 3s, "/kafka/0", {{"Origin", "https://app.example.com"}}));
  EXPECT_TRUE(http_exchange(gateway_port_, "/", {}, false).starts_with("HTTP/1.1 426"));
  const auto health = http_exchange(gateway_port_, "/healthz", {}, false);
  EXPECT_TRUE(health.starts_with("HTTP/1.1 200")) << health;
  // A gateway whose cluster is not there.
  child_process orphan({KWS_GATEWAY_PATH, "--listen", "127.0.0.1:0", "--upstream",
                        "127.0.0.1:" + std::to_string(free_port()), "--connect-timeout", "1s"});
  const auto port = orphan.wait_for_output(std::regex(R"(listening on 127\.0\.0\.1:(\d+))"));
  ASSERT_TRUE(port) << orphan.output();
  const auto down = http_exchange(static_cast<unsigned short>(std::stoi(*port)), "/healthz", {}, false);
  EXPECT_TRUE(down.starts_with("HTTP/1.1 503")) << down;
}

TEST_F(Gateway, ATextMessageOrALyingSizeHeaderClosesOnlyThatConnection) {
  ASSERT_NO_FATAL_FAILURE(start_devbroker_tcp());
  ASSERT_NO_FATAL_FAILURE(start_gateway());
  ws_test_client good, text, lying;
  ASSERT_FALSE(good.connect(gateway_port_, 3s, "/kafka"));
  ASSERT_FALSE(text.connect(gateway_port_, 3s, "/kafka"));
  ASSERT_FALSE(lying.connect(gateway_port_, 3s, "/kafka"));
  const auto metadata = [](std::int32_t id) {
    const auto f = metadata_v0(id);
    return ws_test_client::bytes(f.begin(), f.end());
  };
  ws_test_client::bytes res;
  EXPECT_FALSE(text.send(metadata(1), /*text=*/true));
  EXPECT_EQ(text.read(res), boost::beast::websocket::error::closed);
  EXPECT_EQ(text.close_code(), 1003);
  auto bad = metadata(2);
  bad[3] = static_cast<unsigned char>(bad[3] + 10);  // the size header claims 10 bytes more than sent
  EXPECT_FALSE(lying.send(bad));
  EXPECT_EQ(lying.read(res), boost::beast::websocket::error::closed);
  EXPECT_EQ(lying.close_code(), 1002);
  const auto answer = good.roundtrip(metadata(3));
  EXPECT_GT(answer.size(), 8u);
  const auto client_broke = [](const std::string& cause) {
    return event_filter{field("event", "closed"), field("end", "protocol_error"), field("side", "client"),
                        field_matching("cause", cause)};
  };
  EXPECT_TRUE(wait_for_event(*gateway_,
                             client_broke(R"(^client sent a text message \(Kafka frames must be binary\))")));
  EXPECT_TRUE(wait_for_event(*gateway_,
                             client_broke("^client sent a WebSocket message whose length does not match")));
}

TEST_F(Gateway, MetricsCountTheRelayedTrafficAndReadyzFollowsTheCluster) {
  ASSERT_NO_FATAL_FAILURE(start_devbroker_tcp());
  ASSERT_NO_FATAL_FAILURE(start_gateway({"--metrics-listen", "127.0.0.1:0"}));
  const auto mport = gateway_->wait_for_output(std::regex(R"(metrics listening on 127\.0\.0\.1:(\d+))"));
  ASSERT_TRUE(mport) << gateway_->output();
  const auto metrics_port = static_cast<unsigned short>(std::stoi(*mport));
  EXPECT_EQ(http_request(metrics_port, "GET", "/healthz").status, 200);
  EXPECT_EQ(http_request(metrics_port, "GET", "/readyz").status, 200);
  EXPECT_EQ(http_request(metrics_port, "GET", "/kafka").status, 404);
  EXPECT_EQ(http_request(metrics_port, "PUT", "/metrics").status, 405);

  ASSERT_NO_FATAL_FAILURE(start_proxy());
  write_file(dir_ / "in", keyed_lines(20, "gm-"));
  ASSERT_NO_FATAL_FAILURE(kcat("produce", {"-P", "-t", "dev", "-p", "0", "-K:", "-l", dir_ / "in"}));
  ASSERT_NO_FATAL_FAILURE(kcat("metadata", {"-L"}));
  // A text message is a frame the gateway rejects.
  ws_test_client text;
  ASSERT_FALSE(text.connect(gateway_port_, 3s, "/kafka"));
  const auto f = metadata_v0(1);
  EXPECT_FALSE(text.send(ws_test_client::bytes(f.begin(), f.end()), /*text=*/true));
  ws_test_client::bytes res;
  EXPECT_EQ(text.read(res), boost::beast::websocket::error::closed);

  std::map<std::string, double> m;
  std::string body;
  for (const auto until = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < until;
       std::this_thread::sleep_for(50ms)) {
    const auto a = http_request(metrics_port, "GET", "/metrics");
    ASSERT_EQ(a.status, 200) << a.raw;
    EXPECT_NE(a.headers.at("content-type").find("text/plain; version=0.0.4"), std::string::npos);
    body = a.body;
    m = parse_samples(body);
    if (sample(m, "kws_frames_rejected_total{cause=\"invalid_message_type\"}") > 0 &&
        sample(m, "kws_connections_active") == 0)
      break;
  }
  EXPECT_EQ(sample(m, "kws_frames_rejected_total{cause=\"invalid_message_type\"}"), 1) << body;
  EXPECT_EQ(sample(m, "kws_connections_active"), 0) << body;
  const auto connections = sample(m, "kws_connections_total");
  EXPECT_GE(connections, 3) << "two kcat runs and the text client\n" << body;
  EXPECT_GE(sample(m, "kws_dial_attempts_total"), connections) << body;
  EXPECT_EQ(sample(m, "kws_handshake_duration_seconds_count"), sample(m, "kws_dial_attempts_total")) << body;
  EXPECT_GT(sample(m, "kws_relay_frames_total{direction=\"up\"}"), 0) << body;
  EXPECT_GT(sample(m, "kws_relay_bytes_total{direction=\"down\"}"),
            sample(m, "kws_relay_frames_total{direction=\"down\"}"))
      << body;
  EXPECT_GE(sample(m, "kws_kafka_requests_total{api=\"Produce\"}"), 1) << body;
  EXPECT_GE(sample(m, "kws_kafka_requests_total{api=\"Metadata\"}"), 2) << body;
  EXPECT_GE(sample(m, "kws_kafka_request_duration_seconds_count{api=\"Produce\"}"), 1) << body;

  // A gateway whose cluster is not there is alive but not ready.
  child_process orphan({KWS_GATEWAY_PATH, "--listen", "127.0.0.1:0", "--upstream",
                        "127.0.0.1:" + std::to_string(free_port()), "--connect-timeout", "1s",
                        "--metrics-listen", "127.0.0.1:0"});
  const auto oport = orphan.wait_for_output(std::regex(R"(metrics listening on 127\.0\.0\.1:(\d+))"));
  ASSERT_TRUE(oport) << orphan.output();
  const auto oport_n = static_cast<unsigned short>(std::stoi(*oport));
  EXPECT_EQ(http_request(oport_n, "GET", "/healthz").status, 200);
  const auto down = http_request(oport_n, "GET", "/readyz");
  EXPECT_EQ(down.status, 503) << down.raw;
  EXPECT_NE(down.body.find("no bootstrap server"), std::string::npos) << down.raw;
}

// ---- SASL from the client to the cluster: through the proxy, over ws, through the gateway, to the dev
// broker's TCP listeners (three nodes) requiring SASL. No hop reads a credential: the tracker passes
// SaslHandshake, SaslAuthenticate and the bare tokens of the v0 framing untouched (docs/architecture.md).
// librdkafka takes SaslHandshake v1 + SaslAuthenticate (the dev broker offers them in ApiVersions, which
// librdkafka 2.0 always asks for); kafka-python 2.0 takes SaslHandshake v0 and bare tokens. ----

// A cluster that requires SASL (PLAIN, SCRAM-SHA-256/512 for the users below), the gateway (logging the
// tracker's notes) and, unless told otherwise, the proxy in front.
class GatewaySasl : public Gateway {
 protected:
  void start_chain(const std::vector<std::string>& gateway_args = {}, bool proxy = true,
                   const std::vector<std::string>& broker_args = {}) {
    write_file(dir_ / "users", "alice:alice-secret\n" + std::string("bob:b0b:with:colons\n"));
    ASSERT_NO_FATAL_FAILURE(start_devbroker_tcp(
        std::vector<std::string>{"--sasl-users", dir_ / "users", "--nodes", "3", "--topic", "six:6"} +
        broker_args));
    ASSERT_NO_FATAL_FAILURE(start_gateway(std::vector<std::string>{"--log-level", "debug"} + gateway_args));
    if (proxy) {
      ASSERT_NO_FATAL_FAILURE(start_proxy());
    }
  }
  // Each mechanism with one of the users above (bob's password has ':' in it).
  static std::vector<std::tuple<std::string, std::string, std::string>> logins() {
    return {{"SCRAM-SHA-512", "alice", "alice-secret"},
            {"PLAIN", "bob", "b0b:with:colons"},
            {"SCRAM-SHA-256", "alice", "alice-secret"}};
  }
  // librdkafka's settings for SASL over plain TCP (the proxy's port).
  static std::vector<std::string> sasl(const std::string& mechanism, const std::string& user,
                                       const std::string& password) {
    return {"-X", "security.protocol=SASL_PLAINTEXT",
            "-X", "sasl.mechanisms=" + mechanism,
            "-X", "sasl.username=" + user,
            "-X", "sasl.password=" + password};
  }
};

TEST_F(GatewaySasl, KcatWithEachMechanismReachesEveryPartitionOnThreeBrokers) {
  ASSERT_NO_FATAL_FAILURE(start_chain());
  for (const auto& [mechanism, user, password] : logins()) {
    SCOPED_TRACE(mechanism);
    const auto auth = sasl(mechanism, user, password);
    ASSERT_NO_FATAL_FAILURE(
        kcat(mechanism + ".metadata", auth + std::vector<std::string>{"-L", "-t", "six"}));
    const auto md = output_of(mechanism + ".metadata");
    EXPECT_EQ(leaders(md), (std::set<int>{0, 1, 2})) << md;
    std::map<int, std::vector<std::string>> want;
    for (int p = 0; p < 6; ++p) {
      const auto name = mechanism + ".p" + std::to_string(p);
      const auto lines = keyed_lines(100, name + "-");
      write_file(dir_ / (name + ".in"), lines);
      want[p] = lines_of(lines);
      ASSERT_NO_FATAL_FAILURE(
          kcat(name, auth + std::vector<std::string>{"-P", "-t", "six", "-p", std::to_string(p), "-K:", "-l",
                                                     dir_ / (name + ".in")}));
    }
    ASSERT_NO_FATAL_FAILURE(kcat(
        mechanism + ".consume",
        auth + std::vector<std::string>{"-C", "-t", "six", "-o", "beginning", "-e", "-f", "%p|%k:%s\\n"}));
    // Each mechanism's messages follow the ones before them on every partition.
    auto got = by_partition(output_of(mechanism + ".consume"));
    for (auto& [p, lines] : got) {
      if (lines.size() > want[p].size()) lines.erase(lines.begin(), lines.end() - want[p].size());
    }
    EXPECT_TRUE(got == want) << mechanism << ": per-partition contents differ";
  }
}

TEST_F(GatewaySasl, AWrongPasswordGetsTheBrokersErrorAndAConsumerAlreadyInKeepsGoing) {
  ASSERT_NO_FATAL_FAILURE(start_chain());
  const auto good = sasl("SCRAM-SHA-512", "alice", "alice-secret");
  write_file(dir_ / "first", "k1:first\n");
  ASSERT_NO_FATAL_FAILURE(kcat(
      "first", good + std::vector<std::string>{"-P", "-t", "dev", "-p", "0", "-K:", "-l", dir_ / "first"}));
  // A consumer that authenticated and has read the first message, on its own connections (-u: unbuffered).
  child_process consumer(std::vector<std::string>{KWS_KCAT_PATH, "-b", bootstrap_} + good +
                             std::vector<std::string>{"-C", "-u", "-t", "dev", "-p", "0", "-o", "beginning",
                                                      "-c", "2", "-f", "%k:%s\\n"},
                         {.stderr_to = spawn_options::stderr_target::captured});
  ASSERT_TRUE(consumer.wait_for_output(std::regex("k1:first\n"), 20s)) << consumer.output();

  // Wrong passwords with each mechanism, side by side (kcat waits out -m before it gives up).
  std::vector<std::unique_ptr<child_process>> bad;
  const std::vector<std::string> mechanisms{"SCRAM-SHA-512", "PLAIN", "SCRAM-SHA-256"};
  for (const auto& mechanism : mechanisms) {
    bad.push_back(std::make_unique<child_process>(
        std::vector<std::string>{KWS_KCAT_PATH, "-b", bootstrap_, "-m", "3"} +
            sasl(mechanism, "alice", "wrong") + std::vector<std::string>{"-L"},
        spawn_options{.stderr_to = spawn_options::stderr_target::captured}));
  }
  for (std::size_t i = 0; i < bad.size(); ++i) {
    SCOPED_TRACE(mechanisms[i]);
    EXPECT_NE(bad[i]->wait(20s), std::optional<int>(0)) << bad[i]->output();
    // SaslAuthenticate carries the broker's own words to the client.
    EXPECT_NE(bad[i]->error_output().find("Authentication failed"), std::string::npos)
        << bad[i]->error_output();
  }

  write_file(dir_ / "second", "k2:second\n");
  ASSERT_NO_FATAL_FAILURE(kcat(
      "second", good + std::vector<std::string>{"-P", "-t", "dev", "-p", "0", "-K:", "-l", dir_ / "second"}));
  EXPECT_EQ(consumer.wait(20s), std::optional<int>(0)) << consumer.error_output();
  EXPECT_EQ(consumer.output(), "k1:first\nk2:second\n");
}

#ifdef KWS_PLUGIN_PATH
TEST_F(GatewaySasl, KcatWithThePluginAuthenticatesStraightToTheGateway) {
  // librdkafka tells brokers apart by address: each gets a name of its own (which need not resolve).
  ASSERT_NO_FATAL_FAILURE(start_chain({"--advertise", "kafka-{node_id}.gateway.invalid:443"}, false));
  const auto plugin = plugin_kcat() + sasl("SCRAM-SHA-512", "alice", "alice-secret");
  std::map<int, std::vector<std::string>> want;
  for (int p = 0; p < 6; ++p) {
    const auto name = "pl" + std::to_string(p);
    const auto lines = keyed_lines(100, name + "-");
    write_file(dir_ / (name + ".in"), lines);
    want[p] = lines_of(lines);
    spawn_options io = plugin_io(dir_ / (name + ".out"));
    io.stdin_file = dir_ / (name + ".in");
    const auto r =
        run(plugin + std::vector<std::string>{"-P", "-t", "six", "-p", std::to_string(p), "-K:"}, io, 30s);
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r.exit_code, r.err);
  }
  const auto r =
      run(plugin + std::vector<std::string>{"-C", "-t", "six", "-o", "beginning", "-e", "-f", "%p|%k:%s\\n"},
          plugin_io(dir_ / "consume.out"), 30s);
  ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r.exit_code, r.err);
  EXPECT_TRUE(by_partition(read_file(dir_ / "consume.out")) == want) << "per-partition contents differ";
}
#endif

TEST_F(GatewaySasl, KafkaPythonWithEachMechanismThroughTheChain) {
  ASSERT_NO_FATAL_FAILURE(start_chain());
  // kafka-python 2.0 sends SaslHandshake v0 and bare tokens, whatever the broker offers.
  for (const auto& [mechanism, user, password] : logins()) {
    SCOPED_TRACE(mechanism);
    const auto py = run({"/usr/bin/python3", KWS_KAFKA_PYTHON_SCRIPT, "--bootstrap", bootstrap_, "--topic",
                         "py-" + mechanism, "--count", "200", "--api-version", "auto", "--limit-s", "25",
                         "--sasl-mechanism", mechanism, "--sasl-username", user, "--sasl-password", password},
                        {.stderr_to = spawn_options::stderr_target::captured}, 28s);
    EXPECT_EQ(py.exit_code, std::optional<int>(0)) << describe(py.exit_code, py.err) << "stdout:\n" << py.out;
    EXPECT_NE(py.out.find("200 messages round-tripped"), std::string::npos) << py.out;
  }
  const auto log = gateway_->output();
  EXPECT_NE(log.find("SASL exchange over the v0 framing done after 1 answer(s)"), std::string::npos) << log;
  EXPECT_NE(log.find("SASL exchange over the v0 framing done after 2 answer(s)"), std::string::npos);

  // A wrong password: the broker closes the connection after the token, and kafka-python gives up.
  const auto bad =
      run({"/usr/bin/python3", KWS_KAFKA_PYTHON_SCRIPT, "--bootstrap", bootstrap_, "--topic", "py-bad",
           "--count", "1", "--api-version", "auto", "--limit-s", "15", "--sasl-mechanism", "SCRAM-SHA-256",
           "--sasl-username", "alice", "--sasl-password", "wrong"},
          {.stderr_to = spawn_options::stderr_target::captured}, 20s);
  EXPECT_NE(bad.exit_code, std::optional<int>(0)) << bad.out;
}

// kafka-python and confluent-kafka configured as for a managed cluster (security.protocol=SASL_SSL) to the
// proxy's TLS port, over ws to the gateway, over TLS to the dev broker requiring SASL: TLS ends at the proxy
// and again at the broker, SASL goes from the client to the broker untouched.
TEST_F(GatewaySasl, PythonClientsWithSaslSslToTheProxysTlsPortThroughTheGatewayToATlsCluster) {
  const auto certs = make_test_certificates();
  ASSERT_NO_FATAL_FAILURE(start_chain({"--upstream-tls", "--upstream-ca-file", certs.ca_pem}, false,
                                      {"--tcp-tls-cert", certs.cert_pem, "--tcp-tls-key", certs.key_pem}));
  ASSERT_NO_FATAL_FAILURE(
      start_proxy(0, {"--client-tls-cert", certs.cert_pem, "--client-tls-key", certs.key_pem}));
  const auto client = [&](const std::string& which, const std::string& mechanism, const std::string& password,
                          const std::string& topic) {
    return run({"/usr/bin/python3",
                KWS_SASL_CLIENTS_PY,
                "--client",
                which,
                "--bootstrap",
                bootstrap_,
                "--protocol",
                "SASL_SSL",
                "--ca",
                certs.ca_pem,
                "--mechanism",
                mechanism,
                "--user",
                "alice",
                "--password",
                password,
                "--topic",
                topic,
                "--count",
                "300",
                "--limit-s",
                "40"},
               {.stderr_to = spawn_options::stderr_target::captured}, 45s);
  };
  for (const auto& [which, mechanism] :
       std::vector<std::pair<std::string, std::string>>{{"kafka-python", "SCRAM-SHA-512"},
                                                        {"confluent-kafka", "SCRAM-SHA-512"},
                                                        {"confluent-kafka", "SCRAM-SHA-256"}}) {
    SCOPED_TRACE(which + " " + mechanism);
    const auto r = client(which, mechanism, "alice-secret", "ssl-" + which + "-" + mechanism);
    EXPECT_EQ(r.exit_code, std::optional<int>(0)) << describe(r.exit_code, r.err) << "stdout:\n" << r.out;
    EXPECT_NE(r.out.find("OK: 300 messages"), std::string::npos) << r.out;
  }
  // A wrong password: the broker's authentication error reaches the client, through both TLS hops.
  const auto bad = client("confluent-kafka", "SCRAM-SHA-512", "wrong", "ssl-bad");
  EXPECT_EQ(bad.exit_code, std::optional<int>(4)) << describe(bad.exit_code, bad.err) << bad.out;
  EXPECT_NE(bad.out.find("AUTH ERROR"), std::string::npos) << bad.out;
  EXPECT_TRUE(devbroker_->wait_for_output(std::regex("authenticated user=alice mechanism=SCRAM-SHA-256")));
}

// ---- The node map on a cluster that requires SASL (docs/addressing.md). A second gateway serves the
// proxy's per-broker connections while the first serves bootstrap: the second relays no Metadata before its
// first connection, which asks for a node id (/kafka/2, partition 2's leader), so it must look the node id
// up itself, and the cluster closes an unauthenticated lookup. ----

// The second gateway, to the same cluster; `port` is set to its WebSocket port.
std::unique_ptr<child_process> start_node_gateway(const std::string& upstream,
                                                  const std::vector<std::string>& args,
                                                  unsigned short& port) {
  auto gw = std::make_unique<child_process>(
      std::vector<std::string>{KWS_GATEWAY_PATH, "--listen", "127.0.0.1:0", "--upstream", upstream,
                               "--threads", "2", "--drain-timeout", "2s", "--log-format", "json"} +
      args);
  const auto p = gw->wait_for_output(std::regex(R"(listening on 127\.0\.0\.1:(\d+))"));
  EXPECT_TRUE(p) << gw->output();
  port = p ? static_cast<unsigned short>(std::stoi(*p)) : 0;
  return gw;
}

void stop_server(child_process& p) {
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait(15s), std::optional<int>(0)) << "did not exit with 0 within 15 s of SIGTERM";
}

class GatewaySaslNodeMap : public GatewaySasl {
 protected:
  // kcat (SCRAM-SHA-256 as alice) through the proxy: 50 messages to partition 2, then partition 2 read back;
  // what it reads ends with them, byte for byte.
  void produce_and_consume_partition_2(const std::string& name) {
    const auto auth = sasl("SCRAM-SHA-256", "alice", "alice-secret");
    const auto lines = keyed_lines(50, name + "-");
    write_file(dir_ / (name + ".in"), lines);
    ASSERT_NO_FATAL_FAILURE(kcat(
        name + ".produce",
        auth + std::vector<std::string>{"-P", "-t", "six", "-p", "2", "-K:", "-l", dir_ / (name + ".in")}));
    ASSERT_NO_FATAL_FAILURE(
        kcat(name + ".consume", auth + std::vector<std::string>{"-C", "-t", "six", "-p", "2", "-o",
                                                                "beginning", "-e", "-f", "%k:%s\\n"}));
    auto got = lines_of(output_of(name + ".consume"));
    const auto want = lines_of(lines);
    ASSERT_GE(got.size(), want.size()) << output_of(name + ".consume");
    got.erase(got.begin(), got.end() - static_cast<std::ptrdiff_t>(want.size()));
    EXPECT_EQ(got, want);
  }

  // The node gateway's log: its first connection was for /kafka/2, and the lookup authenticated as `user`.
  static void expect_looked_up_as(const child_process& nodes, const std::string& mechanism,
                                  const std::string& user, const std::string& password) {
    const auto log = nodes.output();
    const auto targets = events(nodes, {field_matching("target", "^/kafka/")});
    ASSERT_FALSE(targets.empty()) << log;
    EXPECT_EQ(field_text(targets.front(), "target"), "/kafka/2") << log;
    EXPECT_FALSE(events(nodes, {field_containing("msg", "learned 3 broker(s) from 127.0.0.1:")}).empty())
        << log;
    EXPECT_FALSE(events(nodes, {field_containing("msg", " as " + user + " (" + mechanism + ")")}).empty())
        << log;
    EXPECT_FALSE(events(nodes, {field_containing("msg", "lookup_auth=" + mechanism + ":" + user)}).empty())
        << log;
    EXPECT_EQ(log.find(password), std::string::npos) << "the password is in the log";
  }

  // The one line that ends a connection refused for `node`: the upgrade is answered 502, and the line says
  // why; returns it.
  std::string refused_line(child_process& nodes, unsigned short port, int node) {
    const auto answer = http_exchange(port, "/kafka/" + std::to_string(node));
    EXPECT_EQ(answer.substr(0, 12), "HTTP/1.1 502") << answer;
    const auto what = "cannot learn which broker node id " + std::to_string(node) + " is: ";
    const auto refused = wait_for_event(
        nodes, {field("event", "refused"), field("status", "502"),
                field("target", "/kafka/" + std::to_string(node)), field_containing("cause", what)});
    EXPECT_TRUE(refused) << nodes.output();
    EXPECT_EQ(events(nodes, {field_containing("msg", what)}).size(), 1u) << nodes.output();
    return refused ? field_text(*refused, "cause") : std::string();
  }
};

TEST_F(GatewaySaslNodeMap, AFreshGatewaysFirstConnectionForNode2LooksItUpWithItsOwnCredentials) {
  ASSERT_NO_FATAL_FAILURE(start_chain({}, false));
  const std::vector<std::tuple<std::string, std::string, std::string>> lookups{
      {"PLAIN", "bob", "b0b:with:colons"}, {"SCRAM-SHA-512", "alice", "alice-secret"}};
  for (const auto& [mechanism, user, password] : lookups) {
    SCOPED_TRACE(mechanism);
    write_file(dir_ / "lookup", "# the gateway's own lookup\nmechanism=" + mechanism +
                                    "\nusername = " + user + "\npassword=" + password + "\n");
    unsigned short port = 0;
    auto nodes = start_node_gateway(upstream_,
                                    {"--upstream-sasl-file", dir_ / "lookup", "--log-level", "debug"}, port);
    ASSERT_NO_FATAL_FAILURE(start_proxy(port));
    ASSERT_NO_FATAL_FAILURE(produce_and_consume_partition_2("lookup-" + mechanism));
    expect_looked_up_as(*nodes, mechanism, user, password);
    stop_server(*nodes);
    stop_server(*proxy_);
    proxy_.reset();
  }
}

TEST_F(GatewaySaslNodeMap, OverTlsToTheClusterTheLookupAuthenticatesToo) {
  const auto certs = make_test_certificates();
  const std::vector<std::string> tls{"--upstream-tls", "--upstream-ca-file", certs.ca_pem};
  ASSERT_NO_FATAL_FAILURE(
      start_chain(tls, false, {"--tcp-tls-cert", certs.cert_pem, "--tcp-tls-key", certs.key_pem}));
  write_file(dir_ / "lookup", "mechanism=SCRAM-SHA-512\nusername=alice\npassword=alice-secret\n");
  unsigned short port = 0;
  auto nodes = start_node_gateway(
      upstream_,
      tls + std::vector<std::string>{"--upstream-sasl-file", dir_ / "lookup", "--log-level", "debug"}, port);
  ASSERT_NO_FATAL_FAILURE(start_proxy(port));
  ASSERT_NO_FATAL_FAILURE(produce_and_consume_partition_2("tls"));
  expect_looked_up_as(*nodes, "SCRAM-SHA-512", "alice", "alice-secret");
  stop_server(*nodes);
}

TEST_F(GatewaySaslNodeMap, WithoutCredentialsTheRefusedLookupIsOneLineNamingTheFlag) {
  ASSERT_NO_FATAL_FAILURE(start_chain({}, false));
  unsigned short port = 0;
  auto nodes = start_node_gateway(upstream_, {}, port);
  const auto line = refused_line(*nodes, port, 2);
  EXPECT_NE(
      line.find("closed the gateway's lookup (an unauthenticated Metadata request) without an answer, as "
                "a cluster that requires SASL authentication does; give the gateway credentials with "
                "--upstream-sasl-file"),
      std::string::npos)
      << line;
  // The dev broker says why it closed.
  EXPECT_TRUE(wait_for_event(
      *devbroker_, {field("event", "closed"), field("end", "protocol_error"),
                    field_matching("cause", R"(^metadata v1 \(correlation id 1\) request )"
                                            R"(before SASL authentication: closed without an answer)")}))
      << devbroker_->output();
  // The gateway goes on: bootstrap through it still works for a client that authenticates itself.
  ASSERT_NO_FATAL_FAILURE(start_proxy());
  ASSERT_NO_FATAL_FAILURE(
      kcat("after", sasl("PLAIN", "bob", "b0b:with:colons") + std::vector<std::string>{"-L"}));
  stop_server(*nodes);
}

TEST_F(GatewaySaslNodeMap, AWrongPasswordInTheFileIsOneLineNamingTheAuthenticationFailure) {
  ASSERT_NO_FATAL_FAILURE(start_chain({}, false));
  write_file(dir_ / "lookup", "mechanism=SCRAM-SHA-512\nusername=alice\npassword=not-the-password-42\n");
  unsigned short port = 0;
  auto nodes = start_node_gateway(upstream_, {"--upstream-sasl-file", dir_ / "lookup"}, port);
  const auto line = refused_line(*nodes, port, 2);
  EXPECT_NE(line.find("the cluster refused the gateway's lookup: authentication failed for user 'alice' with "
                      "SCRAM-SHA-512: Authentication failed"),
            std::string::npos)
      << line;
  EXPECT_NE(line.find("(--upstream-sasl-file)"), std::string::npos) << line;
  EXPECT_EQ(nodes->output().find("not-the-password-42"), std::string::npos) << "the password is in the log";
  stop_server(*nodes);
}

// The file fixed while the gateway runs: it is read again, and the next lookup authenticates with it at once.
TEST_F(GatewaySaslNodeMap, ACorrectedCredentialsFileIsReadAgainAndTheNextLookupUsesIt) {
  ASSERT_NO_FATAL_FAILURE(start_chain({}, false));
  write_file(dir_ / "lookup", "mechanism=SCRAM-SHA-512\nusername=alice\npassword=not-the-password-42\n");
  unsigned short port = 0;
  auto nodes =
      start_node_gateway(upstream_, {"--upstream-sasl-file", dir_ / "lookup", "--log-level", "debug"}, port);
  const auto line = refused_line(*nodes, port, 2);
  EXPECT_NE(line.find("authentication failed for user 'alice'"), std::string::npos) << line;

  write_file(dir_ / "lookup.new", "mechanism=SCRAM-SHA-512\nusername=alice\npassword=alice-secret\n");
  std::filesystem::rename(dir_ / "lookup.new", dir_ / "lookup");
  ASSERT_TRUE(wait_for_event(
      *nodes, {field("level", "info"), field_matching("msg", "^reloaded --upstream-sasl-file ")}))
      << nodes->output();
  ASSERT_NO_FATAL_FAILURE(start_proxy(port));
  ASSERT_NO_FATAL_FAILURE(produce_and_consume_partition_2("corrected"));
  EXPECT_FALSE(events(*nodes, {field_containing("msg", " as alice (SCRAM-SHA-512)")}).empty())
      << nodes->output();
  EXPECT_EQ(nodes->output().find("alice-secret"), std::string::npos) << "the password is in the log";
  stop_server(*nodes);
}

// ---- The same, byte by byte, against a scripted broker: SASL frames whose bytes look like Metadata, and
// re-authentication (KIP-368) among pipelined requests, through the proxy and the gateway. ----

namespace kt = kws::test::kafka;
using bytes = std::vector<unsigned char>;

std::string as_string(const bytes& b) {
  return std::string(b.begin(), b.end());
}

// A request frame (header v1, or v2 for a flexible version), client id "t".
std::string kafka_request(std::int16_t key, std::int16_t version, std::int32_t correlation_id,
                          const bytes& body, bool flexible = false) {
  kt::out_buf h(false);
  h.i16(key);
  h.i16(version);
  h.i32(correlation_id);
  h.str("t");
  if (flexible) h.uvar(0);
  h.raw(body);
  return frame(as_string(h.data()));
}
std::string metadata_v1(std::int32_t correlation_id) {
  return kafka_request(3, 1, correlation_id, {0xff, 0xff, 0xff, 0xff});  // every topic
}
std::string sasl_handshake(std::int16_t version, std::int32_t correlation_id) {
  return kafka_request(17, version, correlation_id, {0, 5, 'P', 'L', 'A', 'I', 'N'});
}
std::string sasl_authenticate_v2(std::int32_t correlation_id) {
  return kafka_request(36, 2, correlation_id,
                       {12, 0, 'a', 'l', 'i', 'c', 'e', 0, 's', 'e', 'c', 'r', 'e', 't', 0}, true);
}

// What the scripted broker answers, byte for byte: Metadata naming itself at an address only it knows.
std::string metadata_answer(std::int32_t correlation_id) {
  kt::metadata_response m;
  m.brokers = {{0, "10.9.9.9", 9092, std::nullopt, {}}};
  m.controller_id = 0;
  return as_string(kt::encode_metadata(m, 1, {correlation_id, {}}));
}
std::string handshake_answer(std::int32_t correlation_id) {
  return as_string(kt::frame({correlation_id, {}}, false, {0, 0, 0, 0, 0, 1, 0, 5, 'P', 'L', 'A', 'I', 'N'}));
}
std::string authenticate_answer(std::int32_t correlation_id) {
  // error_code, error_message (null), auth_bytes "ok", session_lifetime_ms 3600000, no tagged fields.
  return as_string(
      kt::frame({correlation_id, {}}, true, {0, 0, 0, 3, 'o', 'k', 0, 0, 0, 0, 0, 0x36, 0xee, 0x80, 0}));
}

// Reads exactly n bytes within 10 s; false on an error, a timeout or `stop`.
bool read_exactly(tcp::socket& s, std::string& out, std::size_t n, const std::atomic<bool>* stop = nullptr) {
  out.assign(n, '\0');
  const auto until = std::chrono::steady_clock::now() + 10s;
  for (std::size_t got = 0; got < n;) {
    if ((stop && *stop) || std::chrono::steady_clock::now() > until) return false;
    pollfd p{s.native_handle(), POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    error_code ec;
    got += s.read_some(asio::buffer(out.data() + got, n - got), ec);
    if (ec) return false;
  }
  return true;
}
bool read_kafka_frame(tcp::socket& s, std::string& out, const std::atomic<bool>* stop = nullptr) {
  std::string head, body;
  if (!read_exactly(s, head, 4, stop)) return false;
  const auto size = kws::load_be32(reinterpret_cast<const unsigned char*>(head.data()));
  if (size < 0 || size > 1 << 20 || !read_exactly(s, body, static_cast<std::size_t>(size), stop))
    return false;
  out = head + body;
  return true;
}

// A TCP Kafka broker on a script (one connection at a time): Metadata v1, SaslHandshake (after v0, one bare
// PLAIN token, answered with the bytes of a Metadata answer to the correlation id its bytes hold), and
// SaslAuthenticate. Anything else ends the connection.
class scripted_broker {
 public:
  scripted_broker() : acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    thread_ = std::thread([this] { serve(); });
  }
  ~scripted_broker() {
    stopping_ = true;
    ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
    thread_.join();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()); }

 private:
  void serve() {
    while (!stopping_) {
      tcp::socket s(ioc_);
      error_code ec;
      acceptor_.accept(s, ec);
      if (ec) return;
      bool token_next = false;
      for (std::string f; read_kafka_frame(s, f, &stopping_);) {
        const auto* b = reinterpret_cast<const unsigned char*>(f.data());
        const std::int32_t id = f.size() >= 12 ? kws::load_be32(b + 8) : 0;
        std::string answer;
        if (token_next) {
          answer = metadata_answer(id);
          token_next = false;
        } else if (f.size() >= 12 && b[4] == 0 && b[5] == 3) {
          answer = metadata_answer(id);
        } else if (f.size() >= 12 && b[4] == 0 && b[5] == 17) {
          answer = handshake_answer(id);
          token_next = b[7] == 0;  // SaslHandshake v0
        } else if (f.size() >= 12 && b[4] == 0 && b[5] == 36) {
          answer = authenticate_answer(id);
        } else {
          break;
        }
        asio::write(s, asio::buffer(answer), ec);
        if (ec) break;
      }
    }
  }

  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

TEST_F(Gateway, SaslFramesPassByteForByteAndReauthenticationKeepsEveryAnswerWithItsRequest) {
  scripted_broker broker;
  upstream_ = broker.address();
  ASSERT_NO_FATAL_FAILURE(start_gateway());
  ASSERT_NO_FATAL_FAILURE(start_proxy());
  asio::io_context ioc;
  tcp::socket c(ioc);
  c.connect({asio::ip::make_address("127.0.0.1"),
             static_cast<unsigned short>(std::stoi(bootstrap_.substr(bootstrap_.rfind(':') + 1)))});
  const auto ask = [&](const std::string& out, int answers) {
    asio::write(c, asio::buffer(out));
    std::vector<std::string> in(static_cast<std::size_t>(answers));
    for (auto& f : in) EXPECT_TRUE(read_kafka_frame(c, f)) << "an answer did not come";
    return in;
  };
  // Both hops rewrite the broker's address in Metadata.
  const auto rewritten = [](const std::string& f, std::int32_t id) {
    kt::response_header h;
    const auto m = kt::decode_metadata(bytes(f.begin(), f.end()), 1, &h);
    EXPECT_EQ(h.correlation_id, id);
    ASSERT_EQ(m.brokers.size(), 1u);
    EXPECT_EQ(m.brokers[0].host, "127.0.0.1") << "rewritten by the gateway, then by the proxy";
  };
  rewritten(ask(metadata_v1(1), 1)[0], 1);

  // SaslHandshake v0, then a bare PLAIN token whose bytes are those of a Metadata request, answered with the
  // bytes of a Metadata answer: neither hop may read it as one, so it arrives as the broker wrote it.
  EXPECT_EQ(ask(sasl_handshake(0, 2), 1)[0], handshake_answer(2));
  EXPECT_EQ(ask(metadata_v1(42), 1)[0], metadata_answer(42)) << "a SASL token's answer was rewritten";

  // Re-authentication among pipelined requests: every answer with its own request, SASL ones untouched.
  const auto in = ask(metadata_v1(3) + sasl_handshake(1, 4) + sasl_authenticate_v2(5) + metadata_v1(6), 4);
  rewritten(in[0], 3);
  EXPECT_EQ(in[1], handshake_answer(4));
  EXPECT_EQ(in[2], authenticate_answer(5));
  rewritten(in[3], 6);
}

}  // namespace

namespace {

TEST(GatewayFlags, BadFlagsExitWith2AndOneLineStartUpFailuresWith1) {
  for (const auto& args :
       std::vector<std::vector<std::string>>{{"--bogus"},
                                             {},
                                             {"--upstream", "h:1", "--listen", "nope"},
                                             {"--upstream", "h:1", "--tls-cert", "/etc/hostname"},
                                             {"--upstream", "h:1", "--max-connections", "0"}}) {
    std::vector<std::string> argv{KWS_GATEWAY_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    child_process p(argv);
    EXPECT_EQ(p.wait(10s), 2) << (args.empty() ? "(none)" : args[0]) << "\n" << p.output();
    const auto out = p.output();
    EXPECT_NE(out.find("--help"), std::string::npos) << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2) << out;
  }
  child_process bad_upstream({KWS_GATEWAY_PATH, "--listen", "127.0.0.1:0", "--upstream", "no-port-here"});
  EXPECT_EQ(bad_upstream.wait(10s), 1) << bad_upstream.output();
}

}  // namespace

namespace {

// Start-up failures are one line in words (no "[system:98 at ...]"), exit code 1.
void expect_cannot_start(child_process& p, const std::string& expected) {
  EXPECT_EQ(p.wait(10s), 1) << p.output();
  const auto out = p.output();
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_NE(out.find(" critical cannot start: " + expected), std::string::npos) << out;
  EXPECT_EQ(out.find('['), std::string::npos) << out;
  EXPECT_EQ(out.find(".hpp"), std::string::npos) << out;
}

TEST(GatewayStartup, APortInUseOrACertificateFileWithoutACertificateIsOnePlainLine) {
  asio::io_context ioc;
  tcp::acceptor taken(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto port = std::to_string(taken.local_endpoint().port());
  child_process in_use({KWS_GATEWAY_PATH, "--listen", "127.0.0.1:" + port, "--upstream", "127.0.0.1:9092"});
  expect_cannot_start(in_use, "listening on 127.0.0.1:" + port + ": Address already in use");

  temp_dir dir("kws-gateway");
  write_file(dir / "cert.pem", "not a certificate\n");
  write_file(dir / "key.pem", "not a key\n");
  child_process bad_cert({KWS_GATEWAY_PATH, "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9092",
                          "--tls-cert", (dir / "cert.pem").string(), "--tls-key",
                          (dir / "key.pem").string()});
  expect_cannot_start(bad_cert, "TLS certificate " + (dir / "cert.pem").string() + ": ");
}

}  // namespace

namespace {

TEST(GatewayStartup, AnUnreadableOrMalformedSaslFileIsOneLineNamingTheFileAndTheProblem) {
  temp_dir dir("kws-gateway-sasl-file");
  const std::string missing = dir / "missing";
  const std::string bad = dir / "bad";
  write_file(bad, "mechanism=PLAIN\nuser=alice\npassword=hunter2-secret\n");
  const std::string no_password = dir / "no-password";
  write_file(no_password, "mechanism=SCRAM-SHA-256\nusername=alice\n");
  for (const auto& [file, expected] : std::vector<std::pair<std::string, std::string>>{
           {missing, "--upstream-sasl-file " + missing + ": cannot read it (No such file or directory)"},
           {bad, "--upstream-sasl-file " + bad +
                     ": line 2: unknown key 'user' (keys: mechanism, username, password)"},
           {no_password, "--upstream-sasl-file " + no_password + ": no password= line"},
           {dir.path().string(), "--upstream-sasl-file " + dir.path().string() + ": is a directory"}}) {
    child_process p({KWS_GATEWAY_PATH, "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9",
                     "--upstream-sasl-file", file});
    expect_cannot_start(p, expected);
    EXPECT_EQ(p.output().find("hunter2"), std::string::npos) << p.output();
  }
}

}  // namespace
