// The process-test fixture shared by the dev broker's process tests: start the built broker on 127.0.0.1
// with port 0 (WebSocket and TCP listeners), read its ports from the startup line, run client tools against
// it, and check on teardown that SIGTERM ends it with status 0.
#pragma once

#include "kafka_test_util.hpp"
#include "log_events.hpp"
#include "process.hpp"
#include "test_env.hpp"
#include "ws_test_client.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <iostream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#ifndef KWS_DEVBROKER_PATH
#error "KWS_DEVBROKER_PATH must name the built kafka-websocket-devbroker"
#endif

namespace kws::devbroker::test {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using namespace std::chrono_literals;
using kws::test::child_process;
using kws::test::field;
using kws::test::field_matching;
using kws::test::read_file;
using kws::test::spawn_options;

using kws::test::run_op;
using ws_client = kws::test::ws_test_client;

inline std::vector<std::uint16_t> parse_ports(const std::string& list) {
  std::vector<std::uint16_t> ports;
  std::stringstream s(list);
  std::string item;
  while (std::getline(s, item, ',')) {
    const auto colon = item.rfind(':');
    ports.push_back(static_cast<std::uint16_t>(std::stoi(item.substr(colon + 1))));
  }
  return ports;
}

class tcp_client {
 public:
  error_code connect(std::uint16_t port, std::chrono::milliseconds timeout = 3s) {
    const tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
    return run_op(ioc_, socket_, timeout, [&](auto done) { socket_.async_connect(ep, done); });
  }
  error_code send_raw(const std::string& s, std::chrono::milliseconds timeout = 5s) {
    return run_op(ioc_, socket_, timeout, [&](auto done) {
      asio::async_write(socket_, asio::buffer(s), [done](error_code ec, std::size_t) { done(ec); });
    });
  }
  error_code send(const bytes& b, std::chrono::milliseconds timeout = 5s) {
    return send_raw(std::string(b.begin(), b.end()), timeout);
  }
  /// Sends a request frame and reads one response frame (size header included).
  bytes roundtrip(const bytes& req, std::chrono::milliseconds timeout = 5s) {
    EXPECT_FALSE(send(req, timeout));
    bytes res(4);
    auto ec = run_op(ioc_, socket_, timeout, [&](auto done) {
      asio::async_read(socket_, asio::buffer(res), [done](error_code e, std::size_t) { done(e); });
    });
    EXPECT_FALSE(ec) << ec.message();
    if (ec) return {};
    res.resize(4 + static_cast<std::size_t>(kws::load_be32(res.data())));
    ec = run_op(ioc_, socket_, timeout, [&](auto done) {
      asio::async_read(socket_, asio::buffer(res.data() + 4, res.size() - 4),
                       [done](error_code e, std::size_t) { done(e); });
    });
    EXPECT_FALSE(ec) << ec.message();
    return res;
  }
  /// Reads whatever arrives until the peer closes (or the timeout); returns the close reason.
  error_code read_until_close(std::string& out, std::chrono::milliseconds timeout = 5s) {
    std::string buf;
    auto ec = run_op(ioc_, socket_, timeout, [&](auto done) {
      asio::async_read(socket_, asio::dynamic_buffer(buf), [done](error_code e, std::size_t) { done(e); });
    });
    out = buf;
    return ec;
  }

 private:
  asio::io_context ioc_;
  tcp::socket socket_{ioc_};
};

// stdin, stdout and stderr of a client tool on files.
inline spawn_options tool_io(const std::string& in, const std::string& out, const std::string& err) {
  return {.stdin_file = in,
          .stdout_file = out,
          .stderr_to = spawn_options::stderr_target::file,
          .stderr_file = err};
}

// The exit code; -1 when the tool timed out (then killed) or died from a signal.
inline int exit_code(const kws::test::run_result& r) {
  return r.exit_code && *r.exit_code >= 0 ? *r.exit_code : -1;
}

class DevbrokerProcess : public ::testing::Test {
 protected:
  void TearDown() override {
    if (broker_) {
      // Every test also checks that SIGTERM ends the broker promptly with status 0.
      broker_->signal(SIGTERM);
      const auto status = broker_->wait(5s);
      EXPECT_TRUE(status.has_value()) << "broker did not exit within 5 s of SIGTERM";
      if (status) {
        EXPECT_TRUE(*status == 0) << kws::test::describe_exit(status);
      }
      broker_.reset();
    }
    if (HasFailure()) std::cerr << "---- broker log ----\n" << log() << "--------------------\n";
  }

  void start(std::vector<std::string> args) {
    // The log is JSON, so that tests read its events by their fields.
    std::vector<std::string> argv{KWS_DEVBROKER_PATH, "--listen",     "127.0.0.1:0", "--tcp-listen",
                                  "127.0.0.1:0",      "--log-format", "json"};
    argv.insert(argv.end(), args.begin(), args.end());
    // stdout captured for the startup line, the log (stderr) on a file.
    broker_ = std::make_unique<child_process>(
        argv,
        spawn_options{.stderr_to = spawn_options::stderr_target::file, .stderr_file = path("broker.log")});
    const auto line = broker_->read_line(10s);
    ASSERT_TRUE(line.has_value()) << "no startup line; log:\n" << log();
    static const std::regex re(R"(^listening ws=(\S+)(?: tcp=(\S+))?$)");
    std::smatch m;
    ASSERT_TRUE(std::regex_match(*line, m, re)) << *line;
    ws_ports_ = parse_ports(m[1]);
    if (m[2].matched) tcp_ports_ = parse_ports(m[2]);
    ASSERT_FALSE(ws_ports_.empty());
    ASSERT_FALSE(tcp_ports_.empty());
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string log() const { return read_file(path("broker.log")); }
  std::string tcp_bootstrap() const { return "127.0.0.1:" + std::to_string(tcp_ports_.at(0)); }

  /// Waits until the broker log contains `text`.
  bool log_contains(const std::string& text, std::chrono::milliseconds timeout = 3s) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    do {
      if (log().find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(20ms);
    } while (std::chrono::steady_clock::now() < deadline);
    return false;
  }

  /// The log's events that meet `filter` so far.
  std::vector<boost::json::object> logged(const kws::test::event_filter& filter) const {
    return kws::test::events_in(log(), filter);
  }

  /// Waits until the log has an event that meets `filter`; returns it.
  std::optional<boost::json::object> wait_event(const kws::test::event_filter& filter,
                                                std::chrono::milliseconds timeout = 3s) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    do {
      if (auto found = logged(filter); !found.empty()) return found.front();
      std::this_thread::sleep_for(20ms);
    } while (std::chrono::steady_clock::now() < deadline);
    return std::nullopt;
  }

  /// Waits for the closed event of a connection the client ended by breaking the protocol, whose cause
  /// contains `cause` (a regex).
  std::optional<boost::json::object> wait_protocol_error(const std::string& cause,
                                                         std::chrono::milliseconds timeout = 3s) const {
    return wait_event({field("event", "closed"), field("end", "protocol_error"), field("side", "client"),
                       field_matching("cause", cause)},
                      timeout);
  }

  int kcat(std::vector<std::string> args, const std::string& in, const std::string& out,
           std::chrono::milliseconds timeout = 20s) {
    std::vector<std::string> argv{"/usr/bin/kcat", "-b", tcp_bootstrap()};
    argv.insert(argv.end(), args.begin(), args.end());
    return exit_code(kws::test::run(argv, tool_io(in, out, path("kcat.err")), timeout));
  }

  kws::test::temp_dir dir_{"kws-devbroker-test"};
  std::unique_ptr<child_process> broker_;
  std::vector<std::uint16_t> ws_ports_, tcp_ports_;
};

inline bool have(const char* p) {
  return ::access(p, X_OK) == 0;
}

}  // namespace kws::devbroker::test
