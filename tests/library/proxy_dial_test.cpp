// The dialer through an HTTP forward proxy: a real one (tinyproxy) for tunnels, credentials and refusals, and
// a scripted one for what a real proxy will not do on demand (stall, close mid-answer, answer garbage).
// Everything on 127.0.0.1, every wait bounded.
#include "forward_proxy_process.hpp"
#include "frame_util.hpp"
#include "ws_test_server.hpp"

#include <kws/kws.hpp>

#include <gtest/gtest.h>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>

#include <chrono>
#include <filesystem>
#include <mutex>
#include <thread>

#include <sys/socket.h>

namespace {
namespace asio = boost::asio;
using boost::system::error_code;
using kws::test::forward_proxy_process;
using kws::test::frame;
using kws::test::ws_peer;
using kws::test::ws_test_server;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

std::string read_exactly(kws::connection& c, std::size_t n) {
  std::string out(n, '\0');
  asio::read(c, asio::buffer(out));
  return out;
}

std::string port_of(const ws_test_server& s) {
  return std::to_string(s.port());
}

// A fake forward proxy: records each request head it receives and answers with `reply`, then closes (or, with
// `hold`, keeps the connection open without a word until it is destroyed).
class scripted_proxy {
 public:
  scripted_proxy(std::string reply, bool hold = false)
      : reply_(std::move(reply)), hold_(hold), acceptor_(ioc_, {asio::ip::make_address("127.0.0.1"), 0}) {
    thread_ = std::thread([this] { run(); });
  }
  ~scripted_proxy() {
    stopping_ = true;
    ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
    {
      std::lock_guard lock(mu_);
      for (auto& s : held_) ::shutdown(s->native_handle(), SHUT_RDWR);
    }
    thread_.join();
  }
  std::string url() const { return "http://" + authority(); }
  std::string authority() const { return "127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()); }
  std::vector<std::string> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }

 private:
  void run() {
    for (;;) {
      auto sock = std::make_shared<tcp::socket>(ioc_);
      error_code ec;
      acceptor_.accept(*sock, ec);
      if (ec || stopping_) return;
      asio::streambuf head(64 * 1024);
      const auto n = asio::read_until(*sock, head, "\r\n\r\n", ec);
      {
        std::lock_guard lock(mu_);
        requests_.emplace_back(asio::buffers_begin(head.data()), asio::buffers_begin(head.data()) + n);
      }
      if (!reply_.empty()) asio::write(*sock, asio::buffer(reply_), ec);
      if (hold_) {
        std::lock_guard lock(mu_);
        held_.push_back(sock);
      }
    }
  }

  std::string reply_;
  bool hold_;
  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  std::vector<std::string> requests_;
  std::vector<std::shared_ptr<tcp::socket>> held_;
  std::thread thread_;
};

class ProxyDial : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Only for the name "localhost": an address literal as the broker cannot pass verification with it.
    files_ = new kws::test::tls_files(kws::test::make_test_certificates("DNS:localhost"));
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(files_->dir);
    delete files_;
  }

  kws::dialer through(const std::string& proxy_url, kws::dialer_config cfg = {}) {
    cfg.forward_proxy = kws::forward_proxy_settings::through(proxy_url);
    return kws::dialer(ioc.get_executor(), cfg);
  }

  static kws::test::tls_files* files_;
  asio::io_context ioc;
};
kws::test::tls_files* ProxyDial::files_ = nullptr;

TEST_F(ProxyDial, TunnelsWsThroughARealForwardProxy) {
  ws_test_server server(kws::test::echo);
  forward_proxy_process proxy({.connect_ports = {server.port()}});
  auto d = through(proxy.url());
  kws::dial_info info;
  error_code ec;
  auto c = d.dial(server.address(), ec, &info);
  ASSERT_FALSE(ec) << ec.message() << " / " << info.failure << "\n" << proxy.log();
  EXPECT_EQ(info.via, proxy.authority());
  EXPECT_TRUE(info.failure.empty());
  EXPECT_EQ(d.via(server.address()), proxy.authority());
  asio::write(c, asio::buffer(frame("through the tunnel")));
  EXPECT_EQ(read_exactly(c, 22), frame("through the tunnel"));
  EXPECT_EQ(proxy.connects_to("127.0.0.1:" + port_of(server)), 1) << proxy.log();
}

TEST_F(ProxyDial, TunnelsWssWithSniAndVerificationForTheBrokersName) {
  std::mutex mu;
  std::vector<std::string> names;
  ws_test_server server(
      [&](ws_peer& p) {
        {
          std::lock_guard lock(mu);
          names.push_back(p.server_name());
        }
        kws::test::echo(p);
      },
      {.tls = files_});
  forward_proxy_process proxy({.connect_ports = {server.port()}});
  // The proxy is named by address, the broker by the one name its certificate holds.
  auto d = through(proxy.url(), {.ca_file = files_->ca_pem});
  auto c = d.dial("wss://localhost:" + port_of(server) + "/");
  asio::write(c, asio::buffer(frame("over tls, tunnelled")));
  EXPECT_EQ(read_exactly(c, 23), frame("over tls, tunnelled"));
  EXPECT_TRUE(proxy.wait_for_connects("localhost:" + port_of(server))) << proxy.log();
  c.close();
  ASSERT_TRUE(server.wait_finished(1));
  std::lock_guard lock(mu);
  EXPECT_EQ(names, std::vector<std::string>{"localhost"});
}

TEST_F(ProxyDial, VerifiesTheBrokersNameNotTheProxys) {
  ws_test_server server(kws::test::echo, {.tls = files_});
  forward_proxy_process proxy({.connect_ports = {server.port()}});
  // Now the proxy has the certificate's name and the broker an address the certificate does not hold: a check
  // against the proxy's name would pass, the check against the broker's must fail.
  auto d = through("http://localhost:" + std::to_string(proxy.port()), {.ca_file = files_->ca_pem});
  error_code ec;
  d.dial("wss://127.0.0.1:" + port_of(server) + "/", ec);
  EXPECT_EQ(ec.category(), asio::error::get_ssl_category()) << ec.message();
  EXPECT_NE(ec.message().find("certificate verify failed"), std::string::npos) << ec.message();
  EXPECT_EQ(proxy.connects_to("127.0.0.1:" + port_of(server)), 1) << proxy.log();
  EXPECT_EQ(server.accepted(), 0);
}

TEST_F(ProxyDial, SendsBasicCredentialsFromTheUrlPercentDecoded) {
  ws_test_server server(kws::test::echo);
  forward_proxy_process proxy(
      {.connect_ports = {server.port()}, .user = "kws-user", .password = "s3cret-pw"});
  // %2D is '-': the proxy sees the password only once it is decoded.
  auto d = through(proxy.url("kws%2Duser:s3cret%2Dpw"));
  auto c = d.dial(server.address());
  asio::write(c, asio::buffer(frame("authenticated")));
  EXPECT_EQ(read_exactly(c, 17), frame("authenticated"));
}

TEST_F(ProxyDial, ReportsWrongOrMissingCredentialsAsProxyAuthRequiredWithoutThePassword) {
  ws_test_server server(kws::test::echo);
  forward_proxy_process proxy(
      {.connect_ports = {server.port()}, .user = "kws-user", .password = "s3cret-pw"});
  for (const std::string userinfo : {"kws-user:wrong-pw", ""}) {
    SCOPED_TRACE(userinfo);
    auto d = through(proxy.url(userinfo));
    kws::dial_info info;
    error_code ec;
    d.dial(server.address(), ec, &info);
    EXPECT_EQ(ec, kws::errc::proxy_auth_required) << ec.message();
    EXPECT_NE(info.failure.find("forward proxy " + proxy.authority()), std::string::npos) << info.failure;
    // tinyproxy answers 407 without credentials, and 401 with wrong ones.
    EXPECT_NE(info.failure.find(userinfo.empty() ? "with 407 " : "with 401 "), std::string::npos)
        << info.failure;
    EXPECT_NE(info.failure.find(userinfo.empty() ? "wants credentials" : "refused the credentials"),
              std::string::npos)
        << info.failure;
    EXPECT_EQ(info.failure.find("wrong-pw"), std::string::npos) << info.failure;
    // The blocking form that throws carries the same sentence.
    try {
      d.dial(server.address());
      ADD_FAILURE() << "no exception";
    } catch (const boost::system::system_error& e) {
      EXPECT_EQ(e.code(), kws::errc::proxy_auth_required);
      EXPECT_NE(std::string(e.what()).find(proxy.authority()), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find("wrong-pw"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(server.accepted(), 0);
}

TEST_F(ProxyDial, ReportsARefusedConnectWithItsStatusAndReason) {
  ws_test_server server(kws::test::echo);
  // tinyproxy refuses CONNECT to ports it was not told about: 403 Access violation.
  forward_proxy_process proxy({.connect_ports = {static_cast<unsigned short>(server.port() == 1 ? 2 : 1)}});
  auto d = through(proxy.url());
  kws::dial_info info;
  error_code ec;
  d.dial(server.address(), ec, &info);
  EXPECT_EQ(ec, kws::errc::proxy_refused) << ec.message();
  EXPECT_EQ(info.failure, "forward proxy " + proxy.authority() + " answered CONNECT " + server.address() +
                              " with 403 Access violation");
  EXPECT_EQ(server.accepted(), 0);
}

TEST_F(ProxyDial, ReportsAnUnreachableProxyByName) {
  const kws::test::refused_port dead;
  auto d = through("http://127.0.0.1:" + std::to_string(dead.port()));
  kws::dial_info info;
  error_code ec;
  d.dial("127.0.0.1:9", ec, &info);
  EXPECT_EQ(ec, kws::errc::proxy_unreachable) << ec.message();
  EXPECT_EQ(info.via, "127.0.0.1:" + std::to_string(dead.port()));
  EXPECT_NE(info.failure.find("cannot connect to the forward proxy 127.0.0.1:" + std::to_string(dead.port())),
            std::string::npos)
      << info.failure;
}

TEST_F(ProxyDial, TimesOutAProxyThatNeverAnswersWithinTheHandshakeTimeout) {
  scripted_proxy silent("", /*hold=*/true);
  auto d = through(silent.url(), {.handshake_timeout = 400ms});
  kws::dial_info info;
  error_code ec;
  const auto start = std::chrono::steady_clock::now();
  d.dial("kafka.example:443", ec, &info);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(ec, kws::errc::proxy_timeout) << ec.message();
  EXPECT_GE(took, 350ms);
  EXPECT_LT(took, 3s);
  EXPECT_NE(info.failure.find(silent.authority()), std::string::npos) << info.failure;
  ASSERT_EQ(silent.requests().size(), 1u);
  EXPECT_TRUE(
      silent.requests()[0].starts_with("CONNECT kafka.example:443 HTTP/1.1\r\nHost: kafka.example:443\r\n"))
      << silent.requests()[0];
}

TEST_F(ProxyDial, ReportsAProxyThatClosesBeforeAnswering) {
  for (const std::string& reply : {std::string(), std::string("HTTP/1.1 200 Conn")}) {
    scripted_proxy closing(reply);
    auto d = through(closing.url());
    kws::dial_info info;
    error_code ec;
    d.dial("kafka.example:443", ec, &info);
    EXPECT_EQ(ec, kws::errc::proxy_closed) << "after '" << reply << "': " << ec.message();
    EXPECT_NE(info.failure.find("closed the connection"), std::string::npos) << info.failure;
  }
}

TEST_F(ProxyDial, RejectsAnswersThatAreNotUsableHttp) {
  const std::string huge = "HTTP/1.1 200 OK\r\nX-Pad: " + std::string(20000, 'a') + "\r\n\r\n";
  for (const std::string& reply :
       {std::string("SSH-2.0-OpenSSH_9.2\r\n\r\n"), huge,
        // A proxy that speaks for the broker: nothing may come before the client's first bytes.
        std::string("HTTP/1.1 200 Connection established\r\n\r\nextra")}) {
    scripted_proxy odd(reply, /*hold=*/true);
    auto d = through(odd.url());
    kws::dial_info info;
    error_code ec;
    d.dial("kafka.example:443", ec, &info);
    EXPECT_EQ(ec, kws::errc::proxy_bad_response) << reply.substr(0, 40) << ": " << ec.message();
    EXPECT_NE(info.failure.find(odd.authority()), std::string::npos) << info.failure;
  }
}

TEST_F(ProxyDial, NoProxyAndLoopbackGoDirectAndTheProxySeesNothing) {
  ws_test_server server(kws::test::echo);
  forward_proxy_process proxy({.connect_ports = {server.port()}});
  const auto direct = [&](kws::forward_proxy_settings s) {
    kws::dialer d(ioc.get_executor(), {.forward_proxy = std::move(s)});
    kws::dial_info info;
    error_code ec;
    auto c = d.dial(server.address(), ec, &info);
    EXPECT_FALSE(ec) << ec.message();
    return info.via;
  };
  // Settings as from the environment: loopback direct by default.
  EXPECT_EQ(direct({.http_proxy = proxy.url(), .direct_loopback = true}), "");
  // NO_PROXY naming the broker.
  EXPECT_EQ(
      direct({.http_proxy = proxy.url(), .no_proxy = "<-loopback>,127.0.0.0/8", .direct_loopback = true}),
      "");
  // The proxy's log is the witness: it was asked for nothing so far. Then <-loopback> alone sends it there.
  EXPECT_EQ(proxy.connects_to(server.address()), 0) << proxy.log();
  EXPECT_EQ(direct({.http_proxy = proxy.url(), .no_proxy = "<-loopback>", .direct_loopback = true}),
            proxy.authority());
  EXPECT_EQ(proxy.connects_to(server.address()), 1) << proxy.log();
}

TEST_F(ProxyDial, AsyncDialFillsInTheProxyItWentThrough) {
  ws_test_server server(kws::test::echo);
  forward_proxy_process proxy({.connect_ports = {server.port()}});
  auto d = through(proxy.url());
  kws::dial_info info;
  std::optional<error_code> result;
  kws::connection conn;
  d.async_dial(server.address(), info, [&](error_code ec, kws::connection c) {
    result = ec;
    conn = std::move(c);
  });
  ioc.run_for(10s);
  ASSERT_TRUE(result);
  EXPECT_FALSE(*result) << result->message();
  EXPECT_EQ(info.via, proxy.authority());
  EXPECT_TRUE(conn.is_open());
}

TEST_F(ProxyDial, AnInvalidProxyUrlFailsTheDialerWithoutShowingCredentials) {
  try {
    kws::dialer d(ioc.get_executor(),
                  {.forward_proxy = kws::forward_proxy_settings::through("socks5://a:pw@h:1")});
    ADD_FAILURE() << "no exception";
  } catch (const boost::system::system_error& e) {
    EXPECT_EQ(e.code(), kws::errc::invalid_proxy_url);
    EXPECT_EQ(std::string(e.what()).find("pw"), std::string::npos) << e.what();
  }
}

}  // namespace
