// The gateway's way to its cluster: dialling a broker (plain TCP or TLS, the first of several candidates that
// answers) and one request/response exchange on such a connection (the gateway's own lookup). The Asio
// templates of both are instantiated here, apart from the sessions.
#pragma once

#include <kws/host_port.hpp>
#include <kws/tls_socket.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace kws::gateway {

using boost::system::error_code;
using tcp = boost::asio::ip::tcp;

struct upstream {
  std::string host;
  std::uint16_t port = 0;
  std::string text() const { return kws::join_host_port(host, port); }
};

/// host:port or [v6]:port; throws std::invalid_argument otherwise.
upstream parse_upstream(const std::string& s);

// How the cluster is dialled: plain TCP, or TLS with the context current when a dial starts (system store or
// --upstream-ca-file, a client certificate for mutual TLS; read again by a reload).
struct upstream_tls {
  std::shared_ptr<kws::reloadable_client_tls> material;  // null: plain TCP
  bool insecure = false;                                 // --upstream-insecure
};

// What a dial of the cluster ends with: a plain socket, or a TLS one.
struct connect_result {
  error_code ec;
  std::optional<tcp::socket> socket;
  kws::tls_socket tls;
  upstream to;
  std::string failure;  // after a failed TLS handshake: the sentence that says why (certificate, host name)
  std::string why() const { return failure.empty() ? ec.message() : failure; }
};

// Connects to the first of `candidates` that answers, each within `timeout` (and with TLS, completes the
// handshake within another `timeout`: SNI and the certificate's name checked against the host as dialled),
// then calls `done` on `ex` (never before returning). `ex` runs one handler at a time (an io_context run by
// one thread, as each worker's is).
void async_connect_any(const boost::asio::any_io_executor& ex, std::vector<upstream> candidates,
                       std::chrono::milliseconds timeout, upstream_tls tls,
                       std::function<void(connect_result)> done);

// The same, for a coroutine (the gateway's own lookup).
boost::asio::awaitable<connect_result> connect_any(std::vector<upstream> candidates,
                                                   std::chrono::milliseconds timeout, upstream_tls tls);

// One request and its response frame (at most 64 MiB), over plain TCP or TLS, within `timeout`.
boost::asio::awaitable<std::tuple<error_code, std::vector<unsigned char>>> exchange(
    tcp::socket& stream, const std::vector<unsigned char>& request, std::chrono::milliseconds timeout);
boost::asio::awaitable<std::tuple<error_code, std::vector<unsigned char>>> exchange(
    kws::tls_socket& stream, const std::vector<unsigned char>& request, std::chrono::milliseconds timeout);

}  // namespace kws::gateway
