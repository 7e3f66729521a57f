// The gateway's edge under careless and hostile clients (issue 26): sockets that never finish a handshake do
// not take the places of upgraded connections, and are bounded themselves, in all and per client address;
// refused and timed-out handshakes are counted and told in one line a second; client-supplied values reach
// the log and error bodies cut and escaped; a request with two Authorization or two Origin headers is
// refused. Real processes on 127.0.0.1 (clients from 127.0.0.2, 127.0.0.3, ... where a test needs several
// addresses: Linux delivers all of 127/8 on the loopback interface), every wait bounded and on an event.
// Also the pure parts below them: app::printable, the text log's escaping, the handshake bounds and tally.
#include "cli.hpp"
#include "handshakes.hpp"
#include "http_client.hpp"
#include "log_events.hpp"
#include "process.hpp"
#include "test_env.hpp"
#include "ws_test_client.hpp"

#include <gtest/gtest.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <iostream>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <vector>

namespace {

using namespace kws::test;
using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace http = boost::beast::http;
using boost::system::error_code;
using tcp = asio::ip::tcp;

// A connection to the gateway from `source`, one of the loopback addresses.
tcp::socket connect_from(asio::io_context& ioc, const std::string& source, unsigned short port) {
  tcp::socket s(ioc);
  s.open(tcp::v4());
  s.bind({asio::ip::make_address(source), 0});
  s.connect({asio::ip::make_address("127.0.0.1"), port});
  return s;
}

// True when the peer closes `s` within `limit` (end of stream or a reset) without sending anything.
bool closed_by_peer(asio::io_context& ioc, tcp::socket& s, std::chrono::milliseconds limit) {
  char byte = 0;
  std::optional<error_code> result;
  s.async_read_some(asio::buffer(&byte, 1), [&](error_code ec, std::size_t) { result = ec; });
  ioc.restart();
  ioc.run_for(limit);
  if (!result) {
    error_code ignored;
    s.cancel(ignored);
    ioc.restart();
    ioc.run_for(1s);
    return false;
  }
  return *result == asio::error::eof || *result == asio::error::connection_reset;
}

struct answer {
  int status = 0;  // 0: no answer within the bound
  std::string body;
  std::string protocol;  // Sec-WebSocket-Protocol
};

// Writes `request` from `source` and reads the answer's header and body (a 101 has none).
answer ask(unsigned short port, const std::string& request, const std::string& source = "127.0.0.1") {
  asio::io_context ioc;
  auto s = connect_from(ioc, source, port);
  asio::write(s, asio::buffer(request));
  boost::beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(1024 * 1024);
  bool done = false;
  http::async_read(s, buffer, parser, [&](error_code ec, std::size_t) { done = !ec; });
  ioc.run_for(5s);
  if (!done) return {};
  const auto& res = parser.get();
  return {static_cast<int>(res.result_int()), res.body(),
          std::string(res[http::field::sec_websocket_protocol])};
}

std::string upgrade_request(const std::string& target, const std::string& extra_headers = {}) {
  return "GET " + target +
         " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
         extra_headers + "\r\n";
}

const std::string plain_get = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

// The whole line of `text` holding `needle`, or "".
/// The refused event of a handshake answered with `status` because of `why`.
event_filter refused(int status, const std::string& why) {
  return {field("event", "refused"), field("status", std::to_string(status)), field("cause", why)};
}

std::string line_with(const std::string& text, const std::string& needle) {
  const auto at = text.find(needle);
  if (at == std::string::npos) return {};
  const auto start = text.rfind('\n', at);
  const auto from = start == std::string::npos ? 0 : start + 1;
  return text.substr(from, text.find('\n', at) - from);  // npos - from: to the end
}

class HostileEdge : public ::testing::Test {
 protected:
  void TearDown() override {
    if (mock_in_ >= 0) ::close(mock_in_);
    if (gateway_) {
      gateway_->signal(SIGTERM);
      EXPECT_EQ(gateway_->wait(15s), std::optional<int>(0))
          << "the gateway did not exit with 0 after SIGTERM";
    }
    if (HasFailure()) {
      if (gateway_) std::cerr << "---- gateway log ----\n" << gateway_->output();
      if (mock_) std::cerr << "---- mock cluster log ----\n" << mock_->output();
    }
  }

  // librdkafka's mock cluster with one broker as the cluster, then the gateway in front of it (one worker
  // thread, so that sessions are made in the order their sockets were accepted).
  void start(const std::vector<std::string>& args) {
    const auto fifo = dir_ / "mock.in";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    mock_in_ = ::open(fifo.c_str(), O_RDWR | O_CLOEXEC);  // before the child opens it: see gateway_test.cpp
    ASSERT_GE(mock_in_, 0);
    mock_ = std::make_unique<child_process>(std::vector<std::string>{KWS_MOCK_CLUSTER_PATH, "--brokers", "1"},
                                            spawn_options{.stdin_file = fifo});
    const auto bootstrap = mock_->wait_for_output(std::regex("bootstrap=(\\S+)"));
    ASSERT_TRUE(bootstrap) << mock_->output();
    // The log is JSON: tests read its events by their fields.
    std::vector<std::string> argv{
        KWS_GATEWAY_PATH,  "--listen", "127.0.0.1:0",  "--upstream", *bootstrap, "--threads", "1",
        "--drain-timeout", "2s",       "--log-format", "json"};
    argv.insert(argv.end(), args.begin(), args.end());
    gateway_ = std::make_unique<child_process>(argv);
    const auto port = gateway_->wait_for_output(std::regex(R"(listening on 127\.0\.0\.1:(\d+))"));
    ASSERT_TRUE(port) << gateway_->output();
    port_ = static_cast<unsigned short>(std::stoi(*port));
    if (std::find(args.begin(), args.end(), "--metrics-listen") != args.end()) {
      const auto m = gateway_->wait_for_output(std::regex(R"(metrics listening on 127\.0\.0\.1:(\d+))"));
      ASSERT_TRUE(m) << gateway_->output();
      metrics_port_ = static_cast<unsigned short>(std::stoi(*m));
    }
  }

  std::map<std::string, double> metrics() {
    const auto a = http_request(metrics_port_, "GET", "/metrics");
    EXPECT_EQ(a.status, 200) << a.raw;
    metrics_text_ = a.body;
    return parse_samples(a.body);
  }

  temp_dir dir_{"kws-hostile"};
  std::unique_ptr<child_process> mock_, gateway_;
  int mock_in_ = -1;
  unsigned short port_ = 0;
  unsigned short metrics_port_ = 0;
  std::string metrics_text_;
};

// Finding 4 of issue 26: 205 sockets that never sent a byte made an authenticated client get 503.
TEST_F(HostileEdge, IdlePreAuthSocketsDoNotTakeThePlacesOfUpgradedConnections) {
  write_file(dir_ / "tokens", "s3cret-token\n");
  ASSERT_NO_FATAL_FAILURE(
      start({"--auth-token-file", dir_ / "tokens", "--max-connections", "5", "--handshake-timeout", "30s"}));
  asio::io_context ioc;
  std::vector<tcp::socket> idle;
  // From four addresses, each under the default --max-handshakes-per-address: all of them are handshakes
  // under way.
  for (int i = 0; i < 205; ++i)
    idle.push_back(connect_from(ioc, "127.0.0." + std::to_string(2 + i % 4), port_));
  // The gateway accepts in order and makes sessions in order on its one worker: once this is answered,
  // every idle socket before it has its session.
  EXPECT_EQ(ask(port_, plain_get, "127.0.0.6").status, 426);

  std::vector<std::unique_ptr<ws_test_client>> clients;
  for (int i = 0; i < 5; ++i) {
    clients.push_back(std::make_unique<ws_test_client>());
    const auto ec = clients.back()->connect(port_, 3s, "/kafka", {{"Authorization", "Bearer s3cret-token"}});
    EXPECT_FALSE(ec) << "authenticated client " << i << ": " << ec.message();
  }
  // --max-connections still bounds the upgraded connections.
  const auto sixth = ask(port_, upgrade_request("/kafka", "Authorization: Bearer s3cret-token\r\n"));
  EXPECT_EQ(sixth.status, 503) << sixth.body;
  EXPECT_TRUE(wait_for_event(*gateway_, refused(503, "too many connections")));
}

// With the default --max-handshakes-per-address, 64.
TEST_F(HostileEdge, AHandshakeOverThePerAddressCapIsClosedAtOnceCountedAndToldInOneLine) {
  ASSERT_NO_FATAL_FAILURE(
      start({"--handshake-timeout", "30s", "--metrics-listen", "127.0.0.1:0", "--log-level", "debug"}));
  asio::io_context ioc;
  std::vector<tcp::socket> idle;
  for (int i = 0; i < 64; ++i) idle.push_back(connect_from(ioc, "127.0.0.2", port_));
  auto over = connect_from(ioc, "127.0.0.2", port_);
  EXPECT_TRUE(closed_by_peer(ioc, over, 5s)) << "the 65th handshake from 127.0.0.2 was not closed at once";
  // Other addresses are served meanwhile.
  EXPECT_EQ(ask(port_, plain_get, "127.0.0.3").status, 426);
  ws_test_client other;
  EXPECT_FALSE(other.connect(port_, 3s, "/kafka"));
  EXPECT_TRUE(wait_for_event(
      *gateway_, {field("level", "info"),
                  field("msg",
                        "refused 1 handshake(s) in the last second: 1 over --max-handshakes-per-address 64; "
                        "from 1 address, most from 127.0.0.2 (1)")}));
  auto m = metrics();
  EXPECT_EQ(sample(m, "kws_handshakes_refused_total{reason=\"per_address\"}"), 1) << metrics_text_;
  EXPECT_EQ(sample(m, "kws_handshakes_refused_total{reason=\"limit\"}"), 0) << metrics_text_;
  EXPECT_GE(sample(m, "kws_handshakes_in_progress"), 64) << metrics_text_;

  // A handshake that ends gives its place back: one idle socket closes, and 127.0.0.2 may start another.
  const auto gone = idle.front().local_endpoint().port();
  idle.front().close();
  EXPECT_TRUE(wait_for_event(*gateway_, {field("peer", "127.0.0.2:" + std::to_string(gone)),
                                         field("end", "no_handshake"), field("side", "client")}));
  EXPECT_EQ(ask(port_, plain_get, "127.0.0.2").status, 426);
}

TEST_F(HostileEdge, AHandshakeOverMaxHandshakesIsClosedAtOnceAndCounted) {
  ASSERT_NO_FATAL_FAILURE(
      start({"--max-handshakes", "3", "--handshake-timeout", "30s", "--metrics-listen", "127.0.0.1:0"}));
  asio::io_context ioc;
  std::vector<tcp::socket> idle;
  for (const char* from : {"127.0.0.2", "127.0.0.3", "127.0.0.4"})
    idle.push_back(connect_from(ioc, from, port_));
  auto fourth = connect_from(ioc, "127.0.0.5", port_);
  EXPECT_TRUE(closed_by_peer(ioc, fourth, 5s)) << "a fourth handshake under way was not closed at once";
  EXPECT_TRUE(wait_for_event(
      *gateway_,
      {field("level", "info"), field("msg",
                                     "refused 1 handshake(s) in the last second: 1 over "
                                     "--max-handshakes 3; from 1 address, most from 127.0.0.5 (1)")}));
  auto m = metrics();
  EXPECT_EQ(sample(m, "kws_handshakes_refused_total{reason=\"limit\"}"), 1) << metrics_text_;
  EXPECT_EQ(sample(m, "kws_handshakes_refused_total{reason=\"per_address\"}"), 0) << metrics_text_;
  EXPECT_EQ(sample(m, "kws_handshakes_in_progress"), 3) << metrics_text_;
}

TEST_F(HostileEdge, TimedOutHandshakesAreCountedToldInOneLineAndGiveTheirPlacesBack) {
  ASSERT_NO_FATAL_FAILURE(start({"--handshake-timeout", "300ms", "--metrics-listen", "127.0.0.1:0"}));
  asio::io_context ioc;
  std::vector<tcp::socket> idle;
  for (const char* from : {"127.0.0.2", "127.0.0.3"}) idle.push_back(connect_from(ioc, from, port_));
  for (auto& s : idle) EXPECT_TRUE(closed_by_peer(ioc, s, 5s)) << "not closed at the handshake timeout";
  EXPECT_TRUE(wait_for_event(
      *gateway_,
      {field("level", "info"),
       field_matching("msg", R"(^2 handshake\(s\) timed out in the last second \(--handshake-timeout )"
                             R"(300ms\); from 2 addresses, most from 127\.0\.0\.[23] \(1\)$)")}));
  auto m = metrics();
  EXPECT_EQ(sample(m, "kws_handshakes_timed_out_total"), 2) << metrics_text_;
  EXPECT_EQ(sample(m, "kws_handshakes_in_progress"), 0) << metrics_text_;
}

// Finding 5: a 15 KB Origin was written whole into the log line and the 403 body, raw bytes included.
TEST_F(HostileEdge, AHugeOriginOrPathIsCutAndEscapedInTheLogLineAndTheErrorBody) {
  ASSERT_NO_FATAL_FAILURE(start({"--allow-origin", "https://app.example.com"}));
  const std::string origin = "https://evil\t\xff" + std::string(15000, 'a') + ".example.com";
  const auto a = ask(port_, upgrade_request("/kafka", "Origin: " + origin + "\r\n"));
  EXPECT_EQ(a.status, 403) << a.body.substr(0, 300);
  EXPECT_LT(a.body.size(), 300u) << a.body.substr(0, 300);
  EXPECT_NE(a.body.find("origin https://evil\\x09\\xffaaa"), std::string::npos) << a.body.substr(0, 300);
  EXPECT_NE(a.body.find("...(" + std::to_string(origin.size()) + " bytes) is not allowed"), std::string::npos)
      << a.body.substr(0, 300);
  const auto origin_event = wait_for_event(*gateway_, {field("event", "refused"), field("status", "403")});
  ASSERT_TRUE(origin_event) << gateway_->output().substr(0, 2000);
  const auto why = field_text(*origin_event, "cause");
  EXPECT_TRUE(why.starts_with("origin https://evil\\x09\\xffaaa")) << why.substr(0, 600);
  EXPECT_NE(why.find("...(" + std::to_string(origin.size()) + " bytes) is not allowed"), std::string::npos)
      << why.substr(0, 600);
  // The JSON line holds the cut value twice (in the message and as a field): bounded all the same.
  const auto line = line_with(gateway_->output(), "\"status\":\"403\"");
  EXPECT_LT(line.size(), 1200u) << line.substr(0, 600);
  EXPECT_EQ(line.find('\xff'), std::string::npos) << line.substr(0, 600);
  EXPECT_EQ(line.find('\t'), std::string::npos) << line.substr(0, 600);

  // A long path with bytes that are not ASCII (a right-to-left override first): cut and escaped too.
  const std::string path = "/kafka/x?\xe2\x80\xae" + std::string(5000, 'b');
  const auto b = ask(port_, upgrade_request(path));
  EXPECT_EQ(b.status, 404) << b.body.substr(0, 300);
  const auto path_event = wait_for_event(*gateway_, {field("event", "refused"), field("status", "404")});
  ASSERT_TRUE(path_event) << gateway_->output().substr(0, 2000);
  const auto target = field_text(*path_event, "target");
  EXPECT_TRUE(target.starts_with("/kafka/x?\\xe2\\x80\\xaebbb")) << target.substr(0, 600);
  EXPECT_TRUE(target.ends_with("...(" + std::to_string(path.size()) + " bytes)")) << target.substr(0, 600);
  const auto path_line = line_with(gateway_->output(), "\"status\":\"404\"");
  EXPECT_LT(path_line.size(), 1200u) << path_line.substr(0, 600);
  EXPECT_EQ(gateway_->output().find('\xe2'), std::string::npos);
  EXPECT_LT(gateway_->output().size(), 4000u) << "the log holds more than the few lines expected";
}

// Finding 6: with two Authorization or two Origin headers the first one won.
TEST_F(HostileEdge, TwoAuthorizationOrTwoOriginHeadersGet400AndOneLine) {
  write_file(dir_ / "tokens", "s3cret-token\n");
  ASSERT_NO_FATAL_FAILURE(
      start({"--auth-token-file", dir_ / "tokens", "--allow-origin", "https://app.example.com"}));
  const auto two_tokens =
      ask(port_,
          upgrade_request("/kafka", "Authorization: Bearer s3cret-token\r\nAuthorization: Bearer other\r\n"));
  EXPECT_EQ(two_tokens.status, 400) << two_tokens.body;
  EXPECT_EQ(two_tokens.body, "more than one Authorization header\n");
  ASSERT_TRUE(wait_for_event(*gateway_, refused(400, "more than one Authorization header")));

  const auto two_origins =
      ask(port_, upgrade_request("/kafka",
                                 "Authorization: Bearer s3cret-token\r\nOrigin: https://app.example.com\r\n"
                                 "Origin: https://evil.example.com\r\n"));
  EXPECT_EQ(two_origins.status, 400) << two_origins.body;
  EXPECT_EQ(two_origins.body, "more than one Origin header\n");
  ASSERT_TRUE(wait_for_event(*gateway_, refused(400, "more than one Origin header")));

  // One line each, and the same requests with one of each header upgrade.
  const auto out = gateway_->output();
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 3) << out;  // "listening on" and the two refusals
  EXPECT_EQ(
      ask(port_, upgrade_request("/kafka",
                                 "Authorization: Bearer s3cret-token\r\nOrigin: https://app.example.com\r\n"))
          .status,
      101);
  EXPECT_EQ(out.find("s3cret"), std::string::npos) << "a token in the log";
}

// Browsers cannot set Authorization on a WebSocket: the token comes as the subprotocol bearer.<base64url>.
TEST_F(HostileEdge, ATokenAsASubprotocolIsCheckedAnsweredWithKafkaOnlyAndNeverLogged) {
  write_file(dir_ / "tokens", "s3cret-token\n");
  ASSERT_NO_FATAL_FAILURE(start({"--auth-token-file", dir_ / "tokens"}));
  const std::string good = "czNjcmV0LXRva2Vu", wrong = "czNjcmV0LXRva2Vt";  // s3cret-token, s3cret-tokem
  const auto ok =
      ask(port_, upgrade_request("/kafka", "Sec-WebSocket-Protocol: kafka, bearer." + good + "\r\n"));
  EXPECT_EQ(ok.status, 101) << ok.body;
  EXPECT_EQ(ok.protocol, "kafka");
  const auto bad =
      ask(port_, upgrade_request("/kafka", "Sec-WebSocket-Protocol: kafka, bearer." + wrong + "\r\n"));
  EXPECT_EQ(bad.status, 401) << bad.body;
  ASSERT_TRUE(wait_for_event(*gateway_, refused(401, "the bearer token is not valid")));
  const auto both = ask(port_, upgrade_request("/kafka",
                                               "Authorization: Bearer s3cret-token\r\n"
                                               "Sec-WebSocket-Protocol: kafka, bearer." +
                                                   good + "\r\n"));
  EXPECT_EQ(both.status, 400) << both.body;
  ASSERT_TRUE(
      wait_for_event(*gateway_, refused(400, "a bearer token both in Authorization and in a subprotocol")));
  const auto alone = ask(port_, upgrade_request("/kafka", "Sec-WebSocket-Protocol: bearer." + good + "\r\n"));
  EXPECT_EQ(alone.status, 400) << alone.body;
  ASSERT_TRUE(wait_for_event(
      *gateway_, refused(400, "a bearer subprotocol needs the kafka subprotocol offered with it")));
  // The header still works, and a client that offers no subprotocol is answered with none.
  const auto header = ask(port_, upgrade_request("/kafka", "Authorization: Bearer s3cret-token\r\n"));
  EXPECT_EQ(header.status, 101) << header.body;
  EXPECT_EQ(header.protocol, "");
  const auto out = gateway_->output();
  EXPECT_EQ(out.find("s3cret"), std::string::npos) << "a token in the log";
  EXPECT_EQ(out.find("czNjcmV0"), std::string::npos) << "a token in the log";
}

// ---- the pure parts -----------------------------------------------------------------------------------

TEST(Printable, KeepsPrintableAsciiAndEscapesEveryOtherByte) {
  using kws::app::printable;
  EXPECT_EQ(printable("https://app.example.com/kafka?x=1"), "https://app.example.com/kafka?x=1");
  EXPECT_EQ(printable(""), "");
  EXPECT_EQ(printable(std::string("a\nb\r\tc\x1b[31m\x7f\x00z", 14)),
            "a\\x0ab\\x0d\\x09c\\x1b[31m\\x7f\\x00z");
  EXPECT_EQ(printable("caf\xc3\xa9 \xff"), "caf\\xc3\\xa9 \\xff");
  EXPECT_EQ(printable("back\\x41slash"), "back\\\\x41slash")
      << "a backslash in the value cannot pass for an escape";
}

TEST(Printable, CutsAtTheBoundWithTheWholeLengthAndKeepsEscapesWhole) {
  using kws::app::printable;
  const std::string big(15000, 'a');
  EXPECT_EQ(printable(big), std::string(200, 'a') + "...(15000 bytes)");
  EXPECT_EQ(printable(std::string(200, 'a')), std::string(200, 'a')) << "exactly the bound: not cut";
  EXPECT_EQ(printable("abcdef", 3), "abc...(6 bytes)");
  // An escape that would not fit whole is left out.
  EXPECT_EQ(printable("ab\x01xyz", 4), "ab...(6 bytes)");
  EXPECT_EQ(printable("ab\x01xyz", 6), "ab\\x01...(6 bytes)");
  for (std::size_t max : {0u, 1u, 5u, 64u, 200u}) {
    const auto out = printable(std::string(1000, '\xff'), max);
    EXPECT_LE(out.size(), max + std::string("...(1000 bytes)").size()) << max;
    EXPECT_TRUE(out.ends_with("...(1000 bytes)")) << out;
  }
}

TEST(TextLog, ControlBytesAndBrokenUtf8AreEscapedWellFormedUtf8IsKept) {
  using kws::app::text_log_message;
  EXPECT_EQ(text_log_message("conn 1 open peer=127.0.0.1:5 target=/kafka"),
            "conn 1 open peer=127.0.0.1:5 target=/kafka");
  EXPECT_EQ(text_log_message("one\nfake 2026-01-01 info line\r\x1b[2J\x7f"),
            "one\\x0afake 2026-01-01 info line\\x0d\\x1b[2J\\x7f");
  EXPECT_EQ(text_log_message("caf\xc3\xa9 \xe2\x80\xa6"), "caf\xc3\xa9 \xe2\x80\xa6") << "UTF-8 is kept";
  EXPECT_EQ(text_log_message("csi \xc2\x9b"
                             "31m"),
            "csi \\xc2\\x9b31m")
      << "a C1 control";
  EXPECT_EQ(text_log_message("bad \xff\xe2\x80 end"), "bad \\xff\\xe2\\x80 end") << "not UTF-8";
  EXPECT_EQ(text_log_message("overlong \xc0\xaf"), "overlong \\xc0\\xaf");
}

TEST(HandshakeLimits, BoundInAllAndPerAddressAndGiveBackWhenTheTicketGoes) {
  using kws::gateway::handshake_limits;
  using verdict = handshake_limits::verdict;
  const auto a = asio::ip::make_address("192.0.2.1");
  const auto a_mapped = asio::ip::make_address("::ffff:192.0.2.1");
  const auto b = asio::ip::make_address("2001:db8::1");
  const auto c = asio::ip::make_address("192.0.2.3");
  auto limits = handshake_limits::create(3, 2);
  handshake_limits::ticket t1, t2, t3, t4;
  EXPECT_EQ(limits->admit(a, t1), verdict::admitted);
  EXPECT_EQ(limits->admit(a_mapped, t2), verdict::admitted) << "the same client on a dual-stack listener";
  EXPECT_EQ(limits->admit(a, t3), verdict::over_per_address);
  EXPECT_FALSE(t3);
  EXPECT_EQ(limits->in_progress(a), 2u);
  EXPECT_EQ(limits->admit(b, t3), verdict::admitted);
  EXPECT_EQ(limits->admit(c, t4), verdict::over_limit);
  EXPECT_EQ(limits->in_progress(), 3u);
  t2.release();
  EXPECT_EQ(limits->in_progress(a_mapped), 1u);
  EXPECT_EQ(limits->admit(c, t4), verdict::admitted);
  {
    auto moved = std::move(t4);
    EXPECT_FALSE(t4);
    EXPECT_EQ(limits->in_progress(), 3u);
  }
  EXPECT_EQ(limits->in_progress(c), 0u);
  EXPECT_EQ(limits->in_progress(), 2u);
  // A ticket keeps its limits alive.
  std::weak_ptr<handshake_limits> weak = limits;
  limits.reset();
  EXPECT_FALSE(weak.expired());
  t1.release();
  t3.release();
  EXPECT_TRUE(weak.expired());
}

TEST(HandshakeLimits, ASocketBehindAProxyHeaderCountsUnderItsClientOnceKnown) {
  using kws::gateway::handshake_limits;
  using verdict = handshake_limits::verdict;
  const auto lb_client = asio::ip::make_address("192.0.2.9");
  auto limits = handshake_limits::create(3, 1);
  handshake_limits::ticket t1, t2, t3, t4;
  // Accepted from the load balancer: the total only, however many come from its one address.
  EXPECT_EQ(limits->admit_unaddressed(t1), verdict::admitted);
  EXPECT_EQ(limits->admit_unaddressed(t2), verdict::admitted);
  EXPECT_EQ(limits->in_progress(), 2u);
  EXPECT_EQ(limits->place(t1, lb_client), verdict::admitted);
  EXPECT_EQ(limits->in_progress(lb_client), 1u);
  EXPECT_EQ(limits->place(t2, lb_client), verdict::over_per_address) << "the header's client is at its bound";
  EXPECT_TRUE(t2) << "a refused placement leaves the ticket as it was";
  EXPECT_EQ(limits->admit_unaddressed(t3), verdict::admitted);
  EXPECT_EQ(limits->admit_unaddressed(t4), verdict::over_limit);
  t2.release();
  t3.release();
  EXPECT_EQ(limits->in_progress(), 1u);
  EXPECT_EQ(limits->in_progress(lb_client), 1u);
  t1.release();
  EXPECT_EQ(limits->in_progress(), 0u);
  EXPECT_EQ(limits->in_progress(lb_client), 0u);
}

TEST(HandshakeTally, TellsEachKindInOneLineOnceAWindow) {
  using kws::gateway::handshake_tally;
  using event = handshake_tally::event;
  handshake_tally tally(1024, 64, 10s);
  EXPECT_TRUE(tally.take().empty());
  EXPECT_TRUE(tally.add(event::refused_over_per_address, "192.0.2.1"));
  EXPECT_FALSE(tally.add(event::refused_over_per_address, "192.0.2.1"));
  EXPECT_FALSE(tally.add(event::refused_over_limit, "192.0.2.2"));
  EXPECT_FALSE(tally.add(event::timed_out, "2001:db8::1"));
  const auto lines = tally.take();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0],
            "refused 3 handshake(s) in the last second: 1 over --max-handshakes 1024, 2 over "
            "--max-handshakes-per-address 64; from 2 addresses, most from 192.0.2.1 (2)");
  EXPECT_EQ(
      lines[1],
      "1 handshake(s) timed out in the last second (--handshake-timeout 10s); from 1 address, most from "
      "2001:db8::1 (1)");
  EXPECT_TRUE(tally.take().empty());
  EXPECT_TRUE(tally.add(event::timed_out, "192.0.2.9")) << "a new window";
  // Addresses beyond the ones told apart are still counted.
  for (std::size_t i = 0; i < handshake_tally::max_addresses + 5; ++i)
    tally.add(event::refused_over_limit, "10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256));
  const auto many = tally.take();
  ASSERT_EQ(many.size(), 2u);
  EXPECT_TRUE(
      many[0].starts_with("refused 1029 handshake(s) in the last second: 1029 over --max-handshakes 1024; "
                          "from more than 1024 addresses, most from "))
      << many[0];
}

}  // namespace
