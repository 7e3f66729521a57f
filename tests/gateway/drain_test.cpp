// The gateway's drain for rolling restarts: from SIGTERM on, /readyz on the metrics port answers 503
// (draining) while an open connection still gets the response to its request; the WebSocket listener is
// closed, and a socket accepted before the signal whose upgrade comes after it gets 503 with Connection:
// close. The cluster is a socket of the test's that holds its response until told. Real processes on
// 127.0.0.1, every wait bounded.
#include "gateway_support.hpp"
#include "http_client.hpp"
#include "log_events.hpp"
#include "process.hpp"

#include <kws/kws.hpp>

#include <gtest/gtest.h>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>

#include <csignal>
#include <regex>

namespace {

using namespace kws::test;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;

TEST(GatewayDrain, ReadyzTurns503AtOnceWhileAnOpenConnectionGetsItsResponse) {
  asio::io_context ioc;
  tcp::acceptor cluster(ioc, {asio::ip::make_address("127.0.0.1"), 0});
  const auto cluster_port = cluster.local_endpoint().port();
  child_process gw({KWS_GATEWAY_PATH, "--listen", "127.0.0.1:0", "--upstream",
                    "127.0.0.1:" + std::to_string(cluster_port), "--metrics-listen", "127.0.0.1:0",
                    "--drain-timeout", "20s", "--log-level", "debug", "--log-format", "json"});
  const auto port = gw.wait_for_output(std::regex(R"(listening on 127\.0\.0\.1:(\d+))"));
  ASSERT_TRUE(port) << gw.output();
  const auto metrics = gw.wait_for_output(std::regex(R"(metrics listening on 127\.0\.0\.1:(\d+))"));
  ASSERT_TRUE(metrics) << gw.output();
  const auto metrics_port = static_cast<unsigned short>(std::stoi(*metrics));
  EXPECT_EQ(http_request(metrics_port, "GET", "/readyz").status, 200) << "the cluster's port accepts: ready";

  // A client with a ListOffsets request in flight (an API the gateway passes unchanged).
  kws::dialer d(ioc.get_executor(), kws::dialer_config{.handshake_timeout = 5s});
  auto client = d.dial("ws://127.0.0.1:" + *port + "/kafka");
  ASSERT_TRUE(wait_for_event(gw, {field("event", "open"), field("target", "/kafka")})) << gw.output();
  tcp::socket broker(ioc);
  // The readiness check's connections come first and are closed at once; the relayed one carries a frame.
  std::string request;
  const std::string list_offsets =
      sized(std::string{0, 2, 0, 0} + be32(7) + std::string{'\xff', '\xff'} + be32(-1) + be32(0));
  error_code ec;
  client.write_frame(asio::buffer(list_offsets), ec);
  ASSERT_FALSE(ec) << ec.message();
  for (int i = 0; i < 5 && request.empty(); ++i) {
    broker = cluster.accept();
    bound_io(broker);
    request.resize(list_offsets.size());
    asio::read(broker, asio::buffer(request), ec);
    if (ec) request.clear();
  }
  ASSERT_EQ(request, list_offsets);

  // A socket accepted before the signal, its upgrade request not sent yet.
  tcp::socket late(ioc);
  late.connect({asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(std::stoi(*port))});
  bound_io(late);
  ASSERT_EQ(wait_for_events(gw, {field("event", "accepted")}, 2), 2u) << gw.output();

  gw.signal(SIGTERM);
  ASSERT_TRUE(wait_for_event(gw, {field_containing("msg", "signal 15")})) << gw.output();
  const auto ready = http_request(metrics_port, "GET", "/readyz");
  EXPECT_EQ(ready.status, 503) << ready.raw;
  EXPECT_NE(ready.body.find("draining"), std::string::npos) << ready.raw;
  EXPECT_EQ(http_request(metrics_port, "GET", "/healthz").status, 200) << "the process still serves";

  // The late upgrade: 503, Connection: close.
  const std::string upgrade =
      "GET /kafka HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
  asio::write(late, asio::buffer(upgrade), ec);
  ASSERT_FALSE(ec) << ec.message();
  std::string answer;
  asio::read(late, asio::dynamic_buffer(answer), ec);
  EXPECT_EQ(ec, asio::error::eof) << ec.message();
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 503")) << answer;
  EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
  EXPECT_NE(answer.find("draining"), std::string::npos) << answer;
  // The listener is closed: a new connection is refused outright.
  tcp::socket fresh(ioc);
  fresh.connect({asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(std::stoi(*port))}, ec);
  EXPECT_EQ(ec, asio::error::connection_refused) << ec.message();

  // The held response goes out now, and the client gets it whole; then the gateway closes with 1001.
  const std::string response = sized(be32(7) + be32(0));
  asio::write(broker, asio::buffer(response), ec);
  ASSERT_FALSE(ec) << ec.message();
  boost::beast::flat_buffer got;
  client.read_frame(got, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(boost::beast::buffers_to_string(got.data()), response);
  client.read_frame(got, ec);
  EXPECT_TRUE(ec) << "the gateway closes the connection once its responses are out";
  EXPECT_TRUE(wait_for_event(gw, {field("event", "closed"), field("end", "shut_down")})) << gw.output();
  EXPECT_EQ(gw.wait(15s), std::optional<int>(0)) << gw.output();
}

}  // namespace
