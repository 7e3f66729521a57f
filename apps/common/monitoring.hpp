// The monitoring endpoint of the servers in apps/ (--metrics-listen HOST:PORT): GET /metrics (Prometheus
// text format 0.0.4), /healthz (200 while the process serves) and /readyz (200 when its check passes, else
// 503), over HTTP/1.1. Beast's HTTP templates stay in monitoring.cpp.
#pragma once

#include "health.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace kws::app {

struct listen_address {
  std::string host;  ///< empty: every interface
  std::uint16_t port = 0;
};
/// HOST:PORT, [V6]:PORT or :PORT; std::nullopt for anything else.
std::optional<listen_address> parse_listen_address(const std::string& s);

/// --metrics-listen HOST:PORT (empty: no endpoint).
CLI::Option* add_metrics_listen(CLI::App& app, std::string& value);

class monitoring_endpoint {
 public:
  struct handlers {
    /// The body of GET /metrics.
    std::function<std::string()> metrics;
    /// The readiness check of GET /readyz; empty: always ready.
    std::function<void(std::function<void(check_result)>)> ready;
  };

  /// Binds at once (throws boost::system::system_error when it cannot); serves on `ioc` after start().
  monitoring_endpoint(boost::asio::io_context& ioc, const listen_address& where, handlers h);
  ~monitoring_endpoint();
  monitoring_endpoint(const monitoring_endpoint&) = delete;
  monitoring_endpoint& operator=(const monitoring_endpoint&) = delete;

  boost::asio::ip::tcp::endpoint local_endpoint() const;
  /// Accepts and logs "metrics listening on HOST:PORT".
  void start();
  /// Closes the listener and every open connection (call on the io_context's thread).
  void stop();

 private:
  class impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace kws::app
