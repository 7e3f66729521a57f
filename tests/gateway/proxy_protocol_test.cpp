// --proxy-protocol on the gateway's WebSocket listener and on the proxy's client listener, behind a real
// HAProxy (Debian's haproxy, `send-proxy-v2`): the lines name the client HAProxy saw, and the load balancer
// apart; a connection without a valid header is refused with one line, and the others go on. HAProxy's
// frontends are sockets the test binds and hands down (`bind fd@N`), so they accept from the moment it
// starts. Real processes on 127.0.0.1, every wait bounded.
#include "gateway_support.hpp"
#include "log_events.hpp"
#include "process.hpp"
#include "test_env.hpp"

#include <kws/kws.hpp>

#include <gtest/gtest.h>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <regex>

namespace {

using namespace kws::test;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;

// A Metadata v0 request; an empty topic array asks for every topic.
std::string metadata_v0(std::int32_t correlation_id) {
  return sized(std::string{0, 3, 0, 0} + be32(correlation_id) + std::string{0, 1, 't'} + be32(0));
}

// A socket of 127.0.0.1 that HAProxy takes over: bound and listening, inheritable (no FD_CLOEXEC).
struct handed_listener {
  int fd = -1;
  unsigned short port = 0;
  handed_listener() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 64) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("cannot make a listener for HAProxy");
    port = ntohs(a.sin_port);
  }
  ~handed_listener() { close(); }
  void close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

// HAProxy in TCP mode: each frontend (a handed listener) to one server with send-proxy-v2.
class haproxy {
 public:
  haproxy(const std::filesystem::path& dir,
          const std::vector<std::pair<handed_listener*, unsigned short>>& routes) {
    std::string cfg =
        "global\n  log stderr format raw local0 info\n"
        "defaults\n  mode tcp\n  log global\n  timeout connect 5s\n  timeout client 30s\n  timeout server "
        "30s\n";
    int n = 0;
    for (const auto& [front, server_port] : routes) {
      const auto name = std::to_string(n++);
      cfg += "frontend fe" + name + "\n  bind fd@" + std::to_string(front->fd) + "\n  default_backend be" +
             name + "\nbackend be" + name + "\n  server s" + name +
             " 127.0.0.1:" + std::to_string(server_port) + " send-proxy-v2\n";
    }
    write_file(dir / "haproxy.cfg", cfg);
    proc_ = std::make_unique<child_process>(
        std::vector<std::string>{KWS_HAPROXY_PATH, "-f", dir / "haproxy.cfg", "-db"});
    // HAProxy has its copies now; later children need not inherit them.
    for (const auto& r : routes) r.first->close();
  }
  ~haproxy() {
    proc_->signal(SIGTERM);
    proc_->wait(10s);
  }
  std::string output() const { return proc_->output(); }

 private:
  std::unique_ptr<child_process> proc_;
};

// Connects to 127.0.0.1:port, writes `bytes`, reads until the peer closes (or `until` is read); what came.
std::string exchange(asio::io_context& ioc, unsigned short port, const std::string& bytes,
                     unsigned short* local_port = nullptr, const std::string& until = {}) {
  tcp::socket s(ioc);
  s.connect({asio::ip::make_address("127.0.0.1"), port});
  bound_io(s);
  if (local_port) *local_port = s.local_endpoint().port();
  asio::write(s, asio::buffer(bytes));
  std::string in;
  error_code ec;
  if (until.empty()) {
    asio::read(s, asio::dynamic_buffer(in), ec);
  } else {
    asio::read_until(s, asio::dynamic_buffer(in), until, ec);
  }
  return in;
}

const std::string upgrade_kafka =
    "GET /kafka HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
const std::string v2_signature{"\r\n\r\n\0\r\nQUIT\n", 12};

class ProxyProtocol : public ::testing::Test {
 protected:
  void TearDown() override {
    lb_.reset();
    stop_and_report(proxy_.get(), gateway_.get(), mock_.get());
  }

  void start_cluster_and_gateway() {
    mock_ = std::make_unique<mock_cluster>(dir_.path(), 1, std::vector<std::string>{"pp:1"});
    gateway_ = std::make_unique<child_process>(std::vector<std::string>{
        KWS_GATEWAY_PATH, "--listen", "127.0.0.1:0", "--upstream", mock_->bootstrap(), "--proxy-protocol",
        "--threads", "2", "--handshake-timeout", "2s", "--drain-timeout", "2s", "--log-format", "json"});
    const auto port = gateway_->wait_for_output(std::regex(R"(listening on 127\.0\.0\.1:(\d+))"));
    ASSERT_TRUE(port) << gateway_->output();
    gateway_port_ = static_cast<unsigned short>(std::stoi(*port));
  }

  temp_dir dir_{"kws-proxy-protocol"};
  std::unique_ptr<mock_cluster> mock_;
  std::unique_ptr<child_process> gateway_, proxy_;
  std::unique_ptr<haproxy> lb_;
  unsigned short gateway_port_ = 0;
};

TEST_F(ProxyProtocol, TheGatewayBehindHAProxyNamesTheClientAndRefusesConnectionsWithoutAHeader) {
  ASSERT_NO_FATAL_FAILURE(start_cluster_and_gateway());
  handed_listener front;
  lb_ = std::make_unique<haproxy>(
      dir_.path(), std::vector<std::pair<handed_listener*, unsigned short>>{{&front, gateway_port_}});
  asio::io_context ioc;

  // Through HAProxy: the client's own address and port, and HAProxy's apart.
  unsigned short client_port = 0;
  const auto answer = exchange(ioc, front.port, upgrade_kafka, &client_port, "\r\n\r\n");
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 101")) << answer;
  const auto open = wait_for_event(*gateway_, {field("event", "open"), field("target", "/kafka"),
                                               field("peer", "127.0.0.1:" + std::to_string(client_port))});
  ASSERT_TRUE(open) << gateway_->output();
  EXPECT_TRUE(std::regex_match(field_text(*open, "lb"), std::regex(R"(127\.0\.0\.1:\d+)")));
  EXPECT_NE(field_text(*open, "lb"), field_text(*open, "peer"));

  // Straight to the gateway, no header: refused, one line naming the cause.
  unsigned short direct_port = 0;
  EXPECT_EQ(exchange(ioc, gateway_port_, upgrade_kafka, &direct_port), "") << "no answer at all";
  auto bad = wait_for_event(*gateway_, {field("event", "closed"), field("end", "bad_proxy_header"),
                                        field("peer", "127.0.0.1:" + std::to_string(direct_port))});
  ASSERT_TRUE(bad);
  EXPECT_EQ(field_text(*bad, "cause"), "no PROXY protocol header: the connection starts with 'GET /k'");
  // A v2 signature with version 3.
  EXPECT_EQ(exchange(ioc, gateway_port_, v2_signature + std::string{0x31, 0x11, 0, 0}), "");
  EXPECT_TRUE(
      wait_for_event(*gateway_, {field("end", "bad_proxy_header"), field_containing("cause", "version 3")}));
  // Half a header, then nothing: closed at the handshake timeout.
  tcp::socket half(ioc);
  half.connect({asio::ip::make_address("127.0.0.1"), gateway_port_});
  asio::write(half, asio::buffer(v2_signature.substr(0, 10)));
  EXPECT_TRUE(
      wait_for_event(*gateway_, {field("end", "bad_proxy_header"),
                                 field_containing("cause",
                                                  "no complete PROXY protocol header within 2000ms (10 "
                                                  "byte(s) came")}));
  // LOCAL (a load balancer's own check): the socket's address stands, and the request is served.
  const auto health = exchange(
      ioc, gateway_port_,
      v2_signature + std::string{0x20, 0x00, 0, 0} + "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  EXPECT_TRUE(health.starts_with("HTTP/1.1 200")) << health;

  // And through HAProxy the gateway still relays: a Metadata exchange over the library's dialer.
  kws::dialer d(ioc.get_executor(), kws::dialer_config{.handshake_timeout = 5s});
  auto c = d.dial("ws://127.0.0.1:" + std::to_string(front.port) + "/kafka");
  error_code ec;
  const auto req = metadata_v0(5);
  c.write_frame(asio::buffer(req), ec);
  ASSERT_FALSE(ec) << ec.message();
  boost::beast::flat_buffer buf;
  c.read_frame(buf, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(boost::beast::buffers_to_string(buf.data()).substr(4, 4), be32(5));
}

TEST_F(ProxyProtocol, TheProxysClientListenerBehindHAProxyNamesTheClient) {
  ASSERT_NO_FATAL_FAILURE(start_cluster_and_gateway());
  handed_listener to_gateway, to_proxy;
  // The proxy reaches the gateway through HAProxy too: both listeners require the header.
  proxy_ = std::make_unique<child_process>(std::vector<std::string>{
      KWS_PROXY_PATH, "--listen", "127.0.0.1", "--port", "0", "--proxy-protocol", "--broker",
      "ws://127.0.0.1:" + std::to_string(to_gateway.port) + "/kafka", "--broker-url-template",
      "ws://127.0.0.1:" + std::to_string(to_gateway.port) + "/kafka/{node_id}", "--http-proxy", "none",
      "--threads", "2", "--drain-timeout", "2s", "--log-format", "json"});
  const auto port = proxy_->wait_for_output(std::regex(R"(listening on 127\.0\.0\.1:(\d+))"));
  ASSERT_TRUE(port) << proxy_->output();
  const auto proxy_port = static_cast<unsigned short>(std::stoi(*port));
  lb_ = std::make_unique<haproxy>(dir_.path(), std::vector<std::pair<handed_listener*, unsigned short>>{
                                                   {&to_gateway, gateway_port_}, {&to_proxy, proxy_port}});
  asio::io_context ioc;

  // A Kafka client through HAProxy: its Metadata answered, its address on the proxy's line.
  tcp::socket client(ioc);
  client.connect({asio::ip::make_address("127.0.0.1"), to_proxy.port});
  bound_io(client);
  const auto client_port = client.local_endpoint().port();
  asio::write(client, asio::buffer(metadata_v0(11)));
  std::string size(4, '\0');
  asio::read(client, asio::buffer(size));
  const auto n = (static_cast<unsigned char>(size[0]) << 24) | (static_cast<unsigned char>(size[1]) << 16) |
                 (static_cast<unsigned char>(size[2]) << 8) | static_cast<unsigned char>(size[3]);
  ASSERT_GT(n, 4);
  ASSERT_LT(n, 1 << 20);
  std::string body(static_cast<std::size_t>(n), '\0');
  asio::read(client, asio::buffer(body));
  EXPECT_EQ(body.substr(0, 4), be32(11));
  const auto open = wait_for_event(
      *proxy_, {field("event", "open"), field("client", "127.0.0.1:" + std::to_string(client_port))});
  ASSERT_TRUE(open) << proxy_->output();
  EXPECT_TRUE(std::regex_match(field_text(*open, "lb"), std::regex(R"(127\.0\.0\.1:\d+)")));
  // The gateway saw the proxy's connection, through HAProxy, as its client.
  const auto relayed = wait_for_event(*gateway_, {field("event", "open"), field("target", "/kafka")});
  ASSERT_TRUE(relayed) << gateway_->output();
  EXPECT_FALSE(field_text(*relayed, "lb").empty());

  // A Kafka client straight to the proxy, no header: refused with one line.
  unsigned short direct_port = 0;
  EXPECT_EQ(exchange(ioc, proxy_port, metadata_v0(12), &direct_port), "");
  const auto bad = wait_for_event(*proxy_, {field("event", "closed"), field("end", "bad_proxy_header"),
                                            field("client", "127.0.0.1:" + std::to_string(direct_port))});
  ASSERT_TRUE(bad) << proxy_->output();
  EXPECT_NE(field_text(*bad, "cause").find("no PROXY protocol header"), std::string::npos);
}

}  // namespace
