// kws::dialer: opens WebSocket connections to a Kafka broker, the C++ form of the Go shim's Dialer.
#pragma once

#include <kws/address.hpp>
#include <kws/connection.hpp>
#include <kws/frame.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kws {

struct dialer_config {
  /// Scheme for `host:port` addresses: wss when true, ws when false. URLs carry their own scheme.
  bool tls = false;
  /// PEM file of trusted CA certificates; empty means the system store.
  std::string ca_file{};
  /// Skip certificate and host name verification (testing only).
  bool insecure_skip_verify = false;
  /// Extra HTTP headers on the upgrade request, e.g. {"Authorization", "Bearer …"}.
  std::vector<std::pair<std::string, std::string>> headers{};
  /// Bound on resolve + TCP connect + TLS handshake + WebSocket upgrade.
  std::chrono::milliseconds handshake_timeout{std::chrono::seconds(10)};
  /// With keepalive pings on, a ping goes out after half of this with nothing received, and the connection
  /// fails after all of it. Zero: no idle timeout and no pings.
  std::chrono::milliseconds idle_timeout{0};
  bool keepalive_pings = true;
  /// Largest Kafka frame body accepted either way.
  std::size_t max_frame_bytes = default_max_frame_bytes;
  /// User-Agent of the upgrade request.
  std::string user_agent = "kafka-websocket-shim";
};

namespace detail {
struct dialer_state;
using dial_handler = erased_handler<void(boost::system::error_code, connection)>;
void async_dial(const std::shared_ptr<const dialer_state>& state, const boost::asio::any_io_executor& ex,
                std::string address, dial_handler handler);
}  // namespace detail

class dialer {
 public:
  using executor_type = boost::asio::any_io_executor;

  /// The TLS context (system store or `ca_file`) is built here once and shared by every connection.
  /// Throws boost::system::system_error when `ca_file` cannot be loaded.
  dialer(executor_type ex, dialer_config config = {});

  executor_type get_executor() const { return ex_; }
  const dialer_config& config() const;

  /// A dialer with the same settings and TLS context whose connections run on `ex`.
  dialer rebind(executor_type ex) const { return dialer(std::move(ex), state_); }

  connection dial(std::string_view address, boost::system::error_code& ec);
  /// Throws boost::system::system_error.
  connection dial(std::string_view address);

  /// Completion signature: void(boost::system::error_code, kws::connection).
  template <class CompletionToken>
  auto async_dial(std::string address, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, connection)>(
        [](auto handler, const std::shared_ptr<const detail::dialer_state>& st, const executor_type& ex,
           std::string addr) {
          detail::async_dial(
              st, ex, std::move(addr),
              detail::erase_handler<void(boost::system::error_code, connection)>(std::move(handler), ex));
        },
        token, state_, ex_, std::move(address));
  }

 private:
  dialer(executor_type ex, std::shared_ptr<const detail::dialer_state> state)
      : ex_(std::move(ex)), state_(std::move(state)) {}

  executor_type ex_;
  std::shared_ptr<const detail::dialer_state> state_;
};

}  // namespace kws
