// The library's server side: a real listening socket on 127.0.0.1, kws::async_accept on one end and the
// library's dialer (or a raw TCP client) on the other, every run bounded in time.
#include "frame_util.hpp"
#include "ws_test_server.hpp"

#include <kws/kws.hpp>

#include <gtest/gtest.h>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/websocket/error.hpp>

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using kws::test::frame;
using kws::test::pattern;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// One listening socket; each accepted connection goes through kws::async_accept, and an accepted
// connection echoes whole frames until it ends. Runs on its own thread.
class echo_server {
 public:
  explicit echo_server(kws::accept_config config, kws::accept_decider decide = {})
      : config_(std::move(config)), decide_(std::move(decide)) {
    acceptor_.open(tcp::v4());
    acceptor_.bind({asio::ip::make_address("127.0.0.1"), 0});
    acceptor_.listen();
    accept_next();
    thread_ = std::thread([this] { ioc_.run_for(30s); });
  }
  ~echo_server() {
    asio::post(ioc_, [this] { ioc_.stop(); });
    thread_.join();
  }

  unsigned short port() const { return acceptor_.local_endpoint().port(); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port()); }

  // What the last accept ended with, once it has (bounded wait).
  std::optional<error_code> wait_result(std::chrono::milliseconds limit = 10s) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, limit, [&] { return result_.has_value(); });
    return result_;
  }
  kws::http_request_info last_request() {
    std::lock_guard lock(mu_);
    return request_;
  }
  // Whether `n` echoes have been handed to their connection (bounded wait).
  bool wait_echoes_started(int n, std::chrono::milliseconds limit = 10s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return echoes_ >= n; });
  }
  std::optional<error_code> wait_read_error(std::chrono::milliseconds limit = 10s) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, limit, [&] { return read_error_.has_value(); });
    return read_error_;
  }

 private:
  struct session : std::enable_shared_from_this<session> {
    kws::connection conn;
    boost::beast::flat_buffer buf;
    echo_server* server;
    void read() {
      conn.async_read_frame(buf, [self = shared_from_this()](error_code ec, std::size_t) {
        if (ec) return self->server->set_read_error(ec);
        self->conn.async_write_frame(self->buf.data(), [self](error_code ec, std::size_t) {
          if (ec) return;
          self->buf.consume(self->buf.size());
          self->read();
        });
        self->server->echo_started();
      });
    }
  };

  void echo_started() {
    std::lock_guard lock(mu_);
    ++echoes_;
    cv_.notify_all();
  }

  void set_read_error(error_code ec) {
    std::lock_guard lock(mu_);
    read_error_ = ec;
    cv_.notify_all();
  }

  void accept_next() {
    acceptor_.async_accept([this](error_code ec, tcp::socket s) {
      if (ec) return;
      auto decide = decide_
                        ? decide_
                        : [](const kws::http_request_info&, std::function<void(kws::accept_decision)> done) {
                            done(kws::accept_decision::upgrade());
                          };
      kws::async_accept(std::move(s), config_, decide,
                        [this](error_code ec, kws::connection c, kws::http_request_info info) {
                          {
                            std::lock_guard lock(mu_);
                            result_ = ec;
                            request_ = info;
                            cv_.notify_all();
                          }
                          if (ec) return;
                          auto sess = std::make_shared<session>();
                          sess->conn = std::move(c);
                          sess->server = this;
                          sess->read();
                        });
      accept_next();
    });
  }

  kws::accept_config config_;
  kws::accept_decider decide_;
  asio::io_context ioc_;
  tcp::acceptor acceptor_{ioc_};
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<error_code> result_;
  std::optional<error_code> read_error_;
  int echoes_ = 0;
  kws::http_request_info request_;
};

kws::dialer plain_dialer(asio::io_context& ioc) {
  return kws::dialer(ioc.get_executor(), kws::dialer_config{.handshake_timeout = 5s});
}

// Sends raw bytes over TCP and reads until the server closes (bounded).
std::string raw_exchange(unsigned short port, const std::string& out) {
  asio::io_context ioc;
  tcp::socket s(ioc);
  s.connect({asio::ip::make_address("127.0.0.1"), port});
  asio::write(s, asio::buffer(out));
  std::string in;
  error_code ec;
  asio::async_read(s, asio::dynamic_buffer(in), [&](error_code e, std::size_t) { ec = e; });
  ioc.run_for(10s);
  return in;
}

TEST(Accept, UpgradesAndCarriesFramesBothWays) {
  echo_server server({.max_frame_bytes = 1024 * 1024});
  asio::io_context ioc;
  auto c = plain_dialer(ioc).dial("ws://" + server.address() + "/kafka/3?x=1");
  const auto f = frame(pattern(70000));
  error_code ec;
  c.write_frame(asio::buffer(f), ec);
  ASSERT_FALSE(ec) << ec.message();
  boost::beast::flat_buffer buf;
  c.read_frame(buf, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(boost::beast::buffers_to_string(buf.data()), f);
  ASSERT_EQ(server.wait_result(), std::optional<error_code>(error_code{}));
  const auto req = server.last_request();
  EXPECT_EQ(req.method, "GET");
  EXPECT_EQ(req.target, "/kafka/3?x=1");
  EXPECT_TRUE(req.websocket_upgrade);
  ASSERT_TRUE(req.header("user-agent"));
  EXPECT_EQ(*req.header("user-agent"), "kafka-websocket-shim");
  EXPECT_TRUE(req.peer.starts_with("127.0.0.1:")) << req.peer;
}

// The server's side sends a large frame from where it lies and copies only what the socket does not take at
// once: a frame larger than the sockets' buffers echoed while the client reads nothing, then large and small
// ones pipelined, come back whole and in order.
TEST(Accept, LargeFramesComeBackWholeAndInOrder) {
  echo_server server({.max_frame_bytes = 8 * 1024 * 1024});
  asio::io_context ioc;
  // Dialled asynchronously, so that the connection's operations run on `ioc` (a blocking dial gives the
  // connection a context of its own).
  auto dialer = plain_dialer(ioc);
  std::optional<kws::connection> dialled;
  dialer.async_dial("ws://" + server.address() + "/", [&](error_code ec, kws::connection conn) {
    ASSERT_FALSE(ec) << ec.message();
    dialled.emplace(std::move(conn));
  });
  while (!dialled && ioc.run_one_for(10s) != 0) {
  }
  ASSERT_TRUE(dialled) << "the dial never completed";
  auto& c = *dialled;
  const std::vector<std::string> frames = {frame(pattern(4 * 1024 * 1024, 2)), frame(pattern(5, 3)),
                                           frame(pattern(1024 * 1024, 4)), frame(pattern(40000, 5)),
                                           frame(pattern(70000, 6))};
  std::size_t written = 0;
  std::vector<std::string> got;
  std::optional<error_code> failed;
  boost::beast::flat_buffer buf;
  std::function<void()> write_next = [&] {
    if (written == frames.size()) return;
    c.async_write_frame(asio::buffer(frames[written]), [&](error_code ec, std::size_t) {
      if (ec) {
        failed = ec;
        return;
      }
      ++written;
      write_next();
    });
  };
  std::function<void()> read_next = [&] {
    c.async_read_frame(buf, [&](error_code ec, std::size_t) {
      if (ec) {
        failed = ec;
        return;
      }
      got.push_back(boost::beast::buffers_to_string(buf.data()));
      buf.consume(buf.size());
      if (got.size() < frames.size()) read_next();
    });
  };
  // The first frame's echo starts while this side reads nothing, so the socket takes only part of it: the
  // rest of its payload is what gets copied.
  write_next();
  while (!failed && written == 0 && ioc.run_one_for(10s) != 0) {
  }
  ASSERT_TRUE(server.wait_echoes_started(1)) << "the server never echoed the first frame";
  read_next();
  while (!failed && got.size() < frames.size() && ioc.run_one_for(10s) != 0) {
  }
  ASSERT_FALSE(failed) << failed->message();
  ASSERT_EQ(got.size(), frames.size()) << written << " written";
  for (std::size_t i = 0; i < frames.size(); ++i)
    EXPECT_TRUE(got[i] == frames[i]) << "frame " << i << ": " << got[i].size() << " bytes back of "
                                     << frames[i].size();
}

TEST(Accept, TheDecidersPlainAnswerReachesTheClientAndNothingIsUpgraded) {
  echo_server server(
      {}, [](const kws::http_request_info& req, std::function<void(kws::accept_decision)> done) {
        // Decided later, from another thread, as a server that asks someone first would.
        std::thread([done, ok = req.header("authorization") != nullptr] {
          done(ok ? kws::accept_decision::upgrade() : kws::accept_decision::respond(401, "who are you?\n"));
        }).detach();
      });
  asio::io_context ioc;
  error_code ec;
  plain_dialer(ioc).dial(server.address(), ec);
  EXPECT_EQ(ec, boost::beast::websocket::error::upgrade_declined) << ec.message();
  EXPECT_EQ(server.wait_result(), std::optional<error_code>(kws::errc::upgrade_declined));
  const auto answer = raw_exchange(server.port(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 401")) << answer;
  EXPECT_NE(answer.find("who are you?"), std::string::npos) << answer;

  kws::dialer with_token(ioc.get_executor(), kws::dialer_config{.headers = {{"Authorization", "Bearer t"}},
                                                                .handshake_timeout = 5s});
  auto c = with_token.dial(server.address());
  EXPECT_TRUE(c.is_open());
}

TEST(Accept, PlainHttpWithoutAnUpgradeGets426) {
  echo_server server({});
  const auto answer = raw_exchange(server.port(), "GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 426")) << answer;
  EXPECT_NE(answer.find("Upgrade: websocket"), std::string::npos) << answer;
  EXPECT_EQ(server.wait_result(), std::optional<error_code>(kws::errc::upgrade_declined));
}

TEST(Accept, AKeyThatIsNotBase64OfSixteenBytesGets400) {
  // 24 characters, as a key must have, but not base64 of 16 bytes (RFC 6455 4.2.1).
  for (const std::string key :
       {"!!!!!!!!!!!!!!!!!!!!!!!!", "dGhlIHNhbXBsZSBub25jZQ=x", "dGhlIHNhbXBsZSBub25j===="}) {
    echo_server server({});
    const auto answer =
        raw_exchange(server.port(),
                     "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
                         key + "\r\n\r\n");
    EXPECT_TRUE(answer.starts_with("HTTP/1.1 400")) << key << ": " << answer;
  }
}

TEST(Accept, AHalfOpenClientIsDroppedAfterTheHandshakeTimeout) {
  echo_server server({.handshake_timeout = 300ms});
  asio::io_context ioc;
  tcp::socket s(ioc);
  s.connect({asio::ip::make_address("127.0.0.1"), server.port()});
  asio::write(s, asio::buffer(std::string("GET / HTTP/1.1\r\nHost: x\r\n")));  // never finishes
  const auto start = std::chrono::steady_clock::now();
  const auto r = server.wait_result(5s);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, boost::beast::error::timeout) << r->message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

TEST(Accept, HoldsTheClientToTheFrameLimitLikeTheClientSideDoes) {
  echo_server server({.max_frame_bytes = 1024});
  asio::io_context ioc;
  kws::dialer big(ioc.get_executor(), kws::dialer_config{.handshake_timeout = 5s, .max_frame_bytes = 4096});
  auto c = big.dial(server.address());
  error_code ec;
  c.write_frame(asio::buffer(frame(pattern(2000))), ec);
  ASSERT_FALSE(ec) << ec.message();
  const auto got = server.wait_read_error();
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, kws::errc::frame_too_large) << got->message();
}

TEST(Accept, ServesWssWithTheGivenCertificate) {
  const auto files = kws::test::make_test_certificates();
  echo_server server({.tls = kws::make_server_tls_context(files.cert_pem, files.key_pem)});
  asio::io_context ioc;
  kws::dialer d(ioc.get_executor(),
                kws::dialer_config{.tls = true, .ca_file = files.ca_pem, .handshake_timeout = 5s});
  auto c = d.dial("localhost:" + std::to_string(server.port()));
  const auto f = frame("secure");
  error_code ec;
  c.write_frame(asio::buffer(f), ec);
  boost::beast::flat_buffer buf;
  c.read_frame(buf, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(boost::beast::buffers_to_string(buf.data()), f);
  EXPECT_THROW(kws::make_server_tls_context(files.dir + "/missing.pem", files.key_pem),
               boost::system::system_error);
  std::filesystem::remove_all(files.dir);
}

}  // namespace
