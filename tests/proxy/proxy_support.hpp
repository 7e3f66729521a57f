// What the proxy's process-level tests share: the built binary on an ephemeral port of 127.0.0.1, and a Kafka
// client's TCP connection with every wait bounded.
#pragma once

#include "frame_util.hpp"
#include "process.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#ifndef KWS_PROXY_PATH
#error "tests/proxy/CMakeLists.txt defines KWS_PROXY_PATH"
#endif

namespace kws::test {

namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// The proxy binary, listening on an ephemeral port of 127.0.0.1 (or, with listen_on::default_listener, of
// every interface: no --listen, as users start it).
struct proxy_process {
  enum class listen_on { loopback_v4, default_listener };

  /// `environment`: changes to the proxy's environment (see spawn_options).
  explicit proxy_process(std::vector<std::string> args, bool go_style = false,
                         std::map<std::string, std::optional<std::string>> environment = {},
                         listen_on where = listen_on::loopback_v4)
      : proc(make_argv(std::move(args), go_style, where),
             spawn_options{.environment = std::move(environment)}) {
    auto p = proc.wait_for_output(where == listen_on::loopback_v4
                                      ? std::regex(R"(listening on 127\.0\.0\.1:(\d+))")
                                      : std::regex(R"(listening on (?:\[::\]|0\.0\.0\.0):(\d+))"));
    if (!p) throw std::runtime_error("the proxy did not start:\n" + proc.output());
    port = static_cast<unsigned short>(std::stoi(*p));
  }

  static std::vector<std::string> make_argv(std::vector<std::string> args, bool go_style,
                                            listen_on where = listen_on::loopback_v4) {
    std::vector<std::string> argv{KWS_PROXY_PATH};
    if (where == listen_on::loopback_v4)
      argv.insert(argv.end(), {go_style ? "-listen" : "--listen", "127.0.0.1"});
    if (go_style) {
      argv.insert(argv.end(), {"-port", "0"});
    } else {
      argv.insert(argv.end(), {"--port", "0", "--threads", "2", "--log-level", "debug"});
    }
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }

  child_process proc;
  unsigned short port = 0;
};

// A Kafka client's TCP connection, with every wait bounded.
class client {
 public:
  explicit client(unsigned short port, const std::string& address = "127.0.0.1") {
    sock_.connect({asio::ip::make_address(address), port});
    sock_.set_option(tcp::no_delay(true));
  }

  void send(const std::string& data) { asio::write(sock_, asio::buffer(data)); }
  void shutdown_send() { sock_.shutdown(tcp::socket::shutdown_send); }

  // Sends `out` and reads `n` bytes at the same time (so neither side blocks the other).
  std::string exchange(const std::string& out, std::size_t n, error_code& ec,
                       std::chrono::milliseconds limit = 10s) {
    std::string in(n, '\0');
    std::size_t got = 0;
    bool read_done = false, write_done = out.empty();
    if (!out.empty()) {
      asio::async_write(sock_, asio::buffer(out), [&](error_code e, std::size_t) {
        write_done = true;
        if (e && !ec) ec = e;
      });
    }
    asio::async_read(sock_, asio::buffer(in), [&](error_code e, std::size_t k) {
      read_done = true;
      got = k;
      if (e) ec = e;
    });
    ioc_.restart();
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!(read_done && write_done) && std::chrono::steady_clock::now() < until) ioc_.run_one_for(50ms);
    if (!(read_done && write_done)) {
      sock_.cancel();
      ioc_.restart();
      ioc_.run_for(1s);
      ec = asio::error::timed_out;
    }
    in.resize(got);
    return in;
  }

  std::string recv(std::size_t n, error_code& ec, std::chrono::milliseconds limit = 10s) {
    return exchange({}, n, ec, limit);
  }

  // Writes as much of `data` as the peer takes within the limit; returns how much that was.
  std::size_t send_for(std::string_view data, std::chrono::milliseconds limit) {
    std::size_t sent = 0;
    bool done = false;
    asio::async_write(sock_, asio::buffer(data.data(), data.size()), [&](error_code, std::size_t n) {
      sent = n;
      done = true;
    });
    ioc_.restart();
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!done && std::chrono::steady_clock::now() < until) ioc_.run_one_for(50ms);
    if (!done) {
      sock_.cancel();
      ioc_.restart();
      ioc_.run_for(1s);
    }
    return sent;
  }

  // True when the proxy ends the connection (EOF or reset) within the limit, with no more data.
  bool closed_by_peer(std::chrono::milliseconds limit = 10s) {
    error_code ec;
    auto extra = recv(1, ec, limit);
    return extra.empty() && (ec == asio::error::eof || ec == asio::error::connection_reset);
  }

 private:
  asio::io_context ioc_;
  tcp::socket sock_{ioc_};
};

// One whole frame from the client's connection ("" when none came within the limit).
inline std::string read_frame(client& c, error_code& ec, std::chrono::milliseconds limit = 10s) {
  auto header = c.recv(4, ec, limit);
  if (ec || header.size() != 4) return {};
  const auto size = (static_cast<std::uint32_t>(static_cast<unsigned char>(header[0])) << 24) |
                    (static_cast<std::uint32_t>(static_cast<unsigned char>(header[1])) << 16) |
                    (static_cast<std::uint32_t>(static_cast<unsigned char>(header[2])) << 8) |
                    static_cast<std::uint32_t>(static_cast<unsigned char>(header[3]));
  return header + c.recv(size, ec, limit);
}

// Resident memory of a process in KiB, from /proc (0 when it cannot be read).
inline std::size_t rss_kib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::smatch m;
  for (std::string line; std::getline(status, line);) {
    if (std::regex_search(line, m, std::regex(R"(VmRSS:\s+(\d+) kB)"))) return std::stoul(m[1].str());
  }
  return 0;
}

// A request frame: api key, version, correlation id, client id "t", then `body`.
inline std::string request(std::int16_t key, std::int16_t version, std::int32_t correlation_id,
                           const std::string& body = {}) {
  std::string b;
  auto i16 = [&](std::int16_t v) {
    b += static_cast<char>((v >> 8) & 0xff);
    b += static_cast<char>(v & 0xff);
  };
  i16(key);
  i16(version);
  for (int s = 24; s >= 0; s -= 8) b += static_cast<char>((correlation_id >> s) & 0xff);
  i16(1);
  b += "t";
  return frame(b + body);
}

}  // namespace kws::test
