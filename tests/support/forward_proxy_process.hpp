// A real HTTP forward proxy for tests: Debian's tinyproxy on 127.0.0.1, with a configuration written at test
// time (CONNECT only to the given ports, optional Basic authentication) and its log captured, so that tests
// see every CONNECT it was asked for.
#pragma once

#include "process.hpp"
#include "test_env.hpp"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace kws::test {

struct forward_proxy_options {
  /// Ports that CONNECT may reach; tinyproxy refuses others with 403. Empty: every port.
  std::vector<unsigned short> connect_ports{};
  /// With a user, tinyproxy requires Basic authentication (407 without it, or with other credentials).
  std::string user{};
  std::string password{};
};

class forward_proxy_process {
 public:
  /// Starts tinyproxy on a free port of 127.0.0.1 (again on another port if that one was taken meanwhile) and
  /// waits until it accepts connections. Throws std::runtime_error when it does not start.
  explicit forward_proxy_process(forward_proxy_options options = {});

  unsigned short port() const { return port_; }
  /// `127.0.0.1:port`, what the dialer's messages name.
  std::string authority() const { return "127.0.0.1:" + std::to_string(port_); }
  /// `http://[user:password@]127.0.0.1:port`, with the given credentials (percent-encoding is the caller's).
  std::string url(const std::string& userinfo = {}) const {
    return "http://" + (userinfo.empty() ? std::string() : userinfo + "@") + authority();
  }
  /// Everything tinyproxy logged so far.
  std::string log() const { return proc_->output(); }
  /// How many CONNECT requests for `target` (host:port) it logged before this call (sync() first).
  int connects_to(const std::string& target) const;
  /// Returns once everything tinyproxy logged before this call has reached log(): it sends a request of its
  /// own (CONNECT 127.0.0.1:1) and waits for its log line.
  void sync() const;
  /// Waits until it logged `n` CONNECT requests for `target` (bounded); false when it did not.
  bool wait_for_connects(const std::string& target, int n = 1,
                         std::chrono::milliseconds limit = std::chrono::seconds(10)) const;

 private:
  int count(const std::string& target) const;

  temp_dir dir_{"kws-tinyproxy"};
  std::unique_ptr<child_process> proc_;
  unsigned short port_ = 0;
};

}  // namespace kws::test
