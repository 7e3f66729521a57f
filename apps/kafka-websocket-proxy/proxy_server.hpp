// The proxy's server: a TCP listener, one worker thread per core each with its own io_context and
// dialer, one relay per accepted connection, and an orderly drain on shutdown.
#pragma once

#include <kws/dialer.hpp>
#include <kws/relay.hpp>

#include <chrono>
#include <cstdint>
#include <string>

namespace kws::proxy {

struct proxy_config {
  /// Empty: every interface (IPv6 and IPv4 where the machine has IPv6).
  std::string listen_host;
  std::uint16_t port = 8080;
  /// host:port (scheme from dialer.tls) or a ws:// / wss:// URL.
  std::string broker = "localhost:8787";
  kws::dialer_config dialer;
  kws::relay_options relay;
  int dial_retries = 5;
  std::chrono::milliseconds dial_backoff{200};
  std::chrono::milliseconds drain_timeout{std::chrono::seconds(10)};
  unsigned threads = 1;
};

/// Runs until SIGINT or SIGTERM, then drains and returns the process exit code. Throws on start-up errors
/// (bad broker address, port in use, unreadable CA file).
int run(const proxy_config& config);

}  // namespace kws::proxy
