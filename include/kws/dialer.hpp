// kws::dialer: opens WebSocket connections to a Kafka broker, the C++ form of the Go shim's Dialer.
#pragma once

#include <kws/address.hpp>
#include <kws/connection.hpp>
#include <kws/forward_proxy.hpp>
#include <kws/frame.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kws {

/// Dial a broker's name somewhere else (curl's --connect-to): the connection goes to `to_host:to_port`, while
/// TLS (SNI, the certificate's name) and the upgrade's Host header keep the URL's own name.
struct connect_to_rule {
  /// The URL's host, compared without regard to case; `*.example.com`: every name under example.com. No
  /// IPv6 brackets.
  std::string host;
  std::uint16_t port = 0;     ///< the URL's port; 0: any
  std::string to_host;        ///< a name or an address, no IPv6 brackets
  std::uint16_t to_port = 0;  ///< 0: the URL's port
};

/// Parses `HOST:PORT:TO_HOST:TO_PORT` (either port may be empty; IPv6 addresses in brackets); std::nullopt
/// when it is not that.
std::optional<connect_to_rule> parse_connect_to(std::string_view text);

struct dialer_config {
  /// Scheme for `host:port` addresses: wss when true, ws when false. URLs carry their own scheme.
  bool tls = false;
  /// PEM file of trusted CA certificates; empty means the system store.
  std::string ca_file{};
  /// A client certificate for wss:// (mutual TLS): PEM certificate chain and its private key, both or
  /// neither.
  std::string cert_file{};
  std::string key_file{};
  /// Skip certificate and host name verification (testing only).
  bool insecure_skip_verify = false;
  /// Extra HTTP headers on the upgrade request, e.g. {"Authorization", "Bearer …"}.
  std::vector<std::pair<std::string, std::string>> headers{};
  /// Bound on resolve + TCP connect (+ CONNECT through a forward proxy) + TLS handshake + WebSocket upgrade.
  std::chrono::milliseconds handshake_timeout{std::chrono::seconds(10)};
  /// With keepalive pings on, a ping goes out after half of this with nothing received, and the connection
  /// fails after all of it. Zero: no idle timeout and no pings.
  std::chrono::milliseconds idle_timeout{0};
  bool keepalive_pings = true;
  /// Largest Kafka frame body accepted either way.
  std::size_t max_frame_bytes = default_max_frame_bytes;
  /// User-Agent of the upgrade request (and of the CONNECT request to a forward proxy).
  std::string user_agent = "kafka-websocket-shim";
  /// HTTP forward proxy: none by default. `forward_proxy_settings::through(url)` for one proxy, or
  /// `forward_proxy_from_environment(lookup)` for HTTP_PROXY / HTTPS_PROXY / NO_PROXY as Go reads them.
  forward_proxy_settings forward_proxy{};
  /// Where to connect for some broker names instead of their own address (the first rule that matches);
  /// not used for a dial through a forward proxy, which resolves the name itself.
  std::vector<connect_to_rule> connect_to{};
};

/// What a dial did, for people: filled in before the dial completes, whether it worked or not.
struct dial_info {
  /// The forward proxy the connection went through, as host:port (never its credentials); empty: direct.
  std::string via;
  /// After a failure the error_code cannot tell well: one sentence, such as "forward proxy 10.0.0.1:3128
  /// refused CONNECT broker.example:443: 403 Forbidden" or "the broker's TLS certificate was refused:
  /// certificate has expired (broker.example)". Empty otherwise (the error_code says it all).
  std::string failure;
};

namespace detail {
struct dialer_state;
using dial_handler = erased_handler<void(boost::system::error_code, connection)>;
void async_dial(const std::shared_ptr<const dialer_state>& state, const boost::asio::any_io_executor& ex,
                std::string address, dial_info* info, dial_handler handler);
}  // namespace detail

class dialer {
 public:
  using executor_type = boost::asio::any_io_executor;

  /// The TLS context (system store or `ca_file`, the client certificate) is built here once and shared by
  /// every connection. Throws boost::system::system_error when `ca_file`, `cert_file` or `key_file` cannot be
  /// loaded, the key is not the certificate's or only one of the two is given (its message names the file),
  /// or with errc::invalid_proxy_url when a forward proxy URL does not parse (its message never holds the
  /// credentials).
  dialer(executor_type ex, dialer_config config = {});

  executor_type get_executor() const { return ex_; }
  const dialer_config& config() const;

  /// A dialer with the same settings and TLS context whose connections run on `ex`.
  dialer rebind(executor_type ex) const { return dialer(std::move(ex), state_); }

  /// Reads `ca_file`, `cert_file` and `key_file` again. Dials that start afterwards, from this dialer and
  /// every rebind of it, use the new material; connections already open keep theirs. Throws as the
  /// constructor does (naming the file), and then nothing changes. Safe while other threads dial.
  void reload_tls_files();
  /// Replaces the extra headers of the upgrade requests of later dials (this dialer and its rebinds);
  /// config().headers keeps the ones it was made with. Safe while other threads dial.
  void set_headers(std::vector<std::pair<std::string, std::string>> headers);

  /// The forward proxy (host:port) that a dial of `address` goes through; empty when it goes direct or the
  /// address is invalid.
  std::string via(std::string_view address) const;

  /// Blocks until the connection is up or has failed. It runs on an io_context of its own (the dialer's
  /// executor is left alone), which the connection keeps: use it with blocking reads and writes
  /// (read_some, write_some, read_frame, write_frame, close); for asynchronous use, call async_dial.
  connection dial(std::string_view address, boost::system::error_code& ec, dial_info* info = nullptr);
  /// Throws boost::system::system_error; after a failure at a forward proxy its message is
  /// dial_info::failure.
  connection dial(std::string_view address);

  /// Completion signature: void(boost::system::error_code, kws::connection).
  template <class CompletionToken>
  auto async_dial(std::string address, CompletionToken&& token) {
    return initiate_dial(std::move(address), nullptr, std::forward<CompletionToken>(token));
  }

  /// As above, and fills in `info`, which must outlive the operation.
  template <class CompletionToken>
  auto async_dial(std::string address, dial_info& info, CompletionToken&& token) {
    return initiate_dial(std::move(address), &info, std::forward<CompletionToken>(token));
  }

 private:
  dialer(executor_type ex, std::shared_ptr<const detail::dialer_state> state)
      : ex_(std::move(ex)), state_(std::move(state)) {}

  template <class CompletionToken>
  auto initiate_dial(std::string address, dial_info* info, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, connection)>(
        [](auto handler, const std::shared_ptr<const detail::dialer_state>& st, const executor_type& ex,
           std::string addr, dial_info* i) {
          detail::async_dial(
              st, ex, std::move(addr), i,
              detail::erase_handler<void(boost::system::error_code, connection)>(std::move(handler), ex));
        },
        token, state_, ex_, std::move(address), info);
  }

  executor_type ex_;
  std::shared_ptr<const detail::dialer_state> state_;
};

}  // namespace kws
