// A raw WebSocket client for tests (Beast, plain TCP), below the library's guarantees: it can send text
// messages and frames whose size header lies, and it sees the peer's close code. Every call is bounded.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace kws::test {

/// Runs one asynchronous operation on `ioc` for at most `timeout`; on timeout cancels the socket and reports
/// timed_out.
template <class Start>
boost::system::error_code run_op(boost::asio::io_context& ioc, boost::asio::ip::tcp::socket& socket,
                                 std::chrono::milliseconds timeout, Start start) {
  boost::system::error_code result = boost::asio::error::timed_out;
  bool done = false;
  start([&](boost::system::error_code ec) {
    result = ec;
    done = true;
  });
  ioc.restart();
  ioc.run_for(timeout);
  if (!done) {
    boost::system::error_code ignored;
    socket.cancel(ignored);
    socket.close(ignored);
    ioc.restart();
    ioc.run_for(std::chrono::seconds(1));
    return boost::asio::error::timed_out;
  }
  return result;
}

class ws_test_client {
 public:
  using bytes = std::vector<unsigned char>;
  ws_test_client();
  ~ws_test_client();

  /// Connects to 127.0.0.1:`port` and upgrades at `target` with extra `headers`.
  boost::system::error_code connect(std::uint16_t port,
                                    std::chrono::milliseconds timeout = std::chrono::seconds(3),
                                    const std::string& target = "/",
                                    const std::vector<std::pair<std::string, std::string>>& headers = {});
  boost::system::error_code send(const bytes& b, bool text = false,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(5));
  boost::system::error_code read(bytes& out, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  /// Sends a request frame and reads one response frame.
  bytes roundtrip(const bytes& req) {
    bytes res;
    EXPECT_FALSE(send(req));
    const auto ec = read(res);
    EXPECT_FALSE(ec) << ec.message();
    return res;
  }
  /// The code of the peer's close frame, once a read ended with websocket::error::closed (0 before).
  int close_code() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace kws::test
