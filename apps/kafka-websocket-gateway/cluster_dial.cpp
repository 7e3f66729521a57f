#include "cluster_dial.hpp"

#include <kws/address.hpp>
#include <kws/errc.hpp>
#include <kws/frame.hpp>
#include <kws/host_port.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <array>
#include <variant>

namespace kws::gateway {
namespace {

namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;
using asio::awaitable;
constexpr auto as_tuple_awaitable = asio::as_tuple(asio::use_awaitable);

template <class Stream>
awaitable<std::tuple<error_code, std::vector<unsigned char>>> exchange_on(
    Stream& stream, const std::vector<unsigned char>& request, std::chrono::milliseconds timeout) {
  auto once = [&]() -> awaitable<std::tuple<error_code, std::vector<unsigned char>>> {
    auto [wec, wn] = co_await asio::async_write(stream, asio::buffer(request), as_tuple_awaitable);
    if (wec) co_return std::tuple{wec, std::vector<unsigned char>{}};
    std::array<unsigned char, 4> head{};
    auto [hec, hn] = co_await asio::async_read(stream, asio::buffer(head), as_tuple_awaitable);
    if (hec) co_return std::tuple{hec, std::vector<unsigned char>{}};
    const auto size = load_be32(head.data());
    if (size < 0 || size > 64 * 1024 * 1024)
      co_return std::tuple{error_code(errc::frame_too_large), std::vector<unsigned char>{}};
    std::vector<unsigned char> frame(4 + static_cast<std::size_t>(size));
    std::copy(head.begin(), head.end(), frame.begin());
    auto [bec, bn] = co_await asio::async_read(stream, asio::buffer(frame.data() + 4, frame.size() - 4),
                                               as_tuple_awaitable);
    co_return std::tuple{bec, std::move(frame)};
  };
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_after(timeout);
  auto got = co_await (once() || timer.async_wait(as_tuple_awaitable));
  if (got.index() == 1)
    co_return std::tuple{error_code(asio::error::timed_out), std::vector<unsigned char>{}};
  co_return std::move(std::get<0>(got));
}

}  // namespace

upstream parse_upstream(const std::string& s) {
  const auto u = kws::parse_address(s, false);  // host:port or [v6]:port; throws otherwise
  return {u.host, u.port};
}

awaitable<connect_result> connect_any(std::vector<upstream> candidates, std::chrono::milliseconds timeout,
                                      upstream_tls tls) {
  auto ex = co_await asio::this_coro::executor;
  error_code last = asio::error::host_not_found;
  std::string failure;
  for (const auto& u : candidates) {
    tcp::resolver resolver(ex);
    tcp::socket socket(ex);
    asio::steady_timer timer(ex);
    timer.expires_after(timeout);
    // Named, not a temporary in the co_await expression (see the handshake options below).
    const auto service = std::to_string(u.port);
    auto resolved = co_await (resolver.async_resolve(u.host, service, as_tuple_awaitable) ||
                              timer.async_wait(as_tuple_awaitable));
    if (resolved.index() == 1) {
      last = asio::error::timed_out;
      continue;
    }
    auto [rec, results] = std::get<0>(resolved);
    if (rec) {
      last = rec;
      continue;
    }
    auto connected = co_await (asio::async_connect(socket, results, as_tuple_awaitable) ||
                               timer.async_wait(as_tuple_awaitable));
    if (connected.index() == 1) {
      last = asio::error::timed_out;
      continue;
    }
    if (auto cec = std::get<0>(std::get<0>(connected)); cec) {
      last = cec;
      continue;
    }
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    if (!tls.material) co_return connect_result{error_code{}, std::move(socket), {}, u, {}};
    // A named variable, not a temporary in the co_await expression: with GCC 12, a std::string member of
    // such a temporary came out of use_awaitable's initiation pointing into a freed coroutine frame (seen
    // with valgrind).
    kws::tls_handshake_options options;
    options.host = u.host;
    options.insecure_skip_verify = tls.insecure;
    options.timeout = timeout;
    options.timeout_name = "--connect-timeout";  // which bounds the dial and the TLS handshake both
    auto ctx = tls.material->current();
    auto [hec, secured, why] = co_await kws::async_tls_handshake(std::move(socket), std::move(ctx),
                                                                 std::move(options), as_tuple_awaitable);
    if (hec) {
      last = hec;
      failure = std::move(why);
      continue;
    }
    co_return connect_result{error_code{}, std::nullopt, std::move(secured), u, {}};
  }
  co_return connect_result{last, std::nullopt, {}, upstream{}, std::move(failure)};
}

awaitable<std::tuple<error_code, std::vector<unsigned char>>> exchange(
    tcp::socket& stream, const std::vector<unsigned char>& request, std::chrono::milliseconds timeout) {
  co_return co_await exchange_on(stream, request, timeout);
}

awaitable<std::tuple<error_code, std::vector<unsigned char>>> exchange(
    kws::tls_socket& stream, const std::vector<unsigned char>& request, std::chrono::milliseconds timeout) {
  co_return co_await exchange_on(stream, request, timeout);
}

}  // namespace kws::gateway
