#include "cluster_dial.hpp"

#include <kws/address.hpp>
#include <kws/detail/dial_arena.hpp>
#include <kws/errc.hpp>
#include <kws/frame.hpp>
#include <kws/host_port.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
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

namespace {

// A handler whose operation takes its memory from the dial arena.
template <class F>
auto bound(F f) {
  return asio::bind_allocator(kws::detail::dial_allocator<void>(), std::move(f));
}

// One dial: the candidates in turn, each resolved and connected within `timeout` (a timer races the resolve
// and the connect), then (with TLS) the handshake, which has its own timeout. Plain callbacks rather than a
// coroutine: the state and every operation's memory come from the dial arena (kws/detail/dial_arena.hpp),
// so nothing of a dial is left among the long-lived blocks of the connections made meanwhile (as a
// coroutine's frames were, and those of the awaitable operators racing the timer).
class dial : public std::enable_shared_from_this<dial> {
 public:
  dial(const asio::any_io_executor& ex, std::vector<upstream> candidates, std::chrono::milliseconds timeout,
       upstream_tls tls, std::function<void(connect_result)> done)
      : resolver_(ex),
        socket_(ex),
        timer_(ex),
        candidates_(std::move(candidates)),
        timeout_(timeout),
        tls_(std::move(tls)),
        done_(std::move(done)) {}

  void attempt() {
    if (next_ == candidates_.size())
      return finish(connect_result{last_, std::nullopt, {}, upstream{}, std::move(failure_)});
    const auto& u = candidates_[next_];
    stage_ = stage::resolving;
    ++attempts_;
    timer_.expires_after(timeout_);
    timer_.async_wait(bound([self = shared_from_this(), n = attempts_](error_code ec) {
      if (ec || n != self->attempts_) return;
      if (self->stage_ == stage::resolving) {
        self->timed_out_ = true;
        self->resolver_.cancel();
      } else if (self->stage_ == stage::connecting) {
        self->timed_out_ = true;
        self->cancel_connect_.emit(asio::cancellation_type::terminal);
      }
    }));
    resolver_.async_resolve(u.host, std::to_string(u.port),
                            bound([self = shared_from_this()](error_code ec, tcp::resolver::results_type r) {
                              self->resolved(ec, std::move(r));
                            }));
  }

 private:
  enum class stage { resolving, connecting, other };

  void resolved(error_code ec, tcp::resolver::results_type results) {
    if (timed_out_) ec = asio::error::timed_out;
    if (ec) return failed(ec);
    stage_ = stage::connecting;
    asio::async_connect(
        socket_, results,
        asio::bind_cancellation_slot(
            cancel_connect_.slot(),
            bound([self = shared_from_this()](error_code ec, const auto&) { self->connected(ec); })));
  }

  void connected(error_code ec) {
    stage_ = stage::other;
    timer_.cancel();
    if (timed_out_) ec = asio::error::timed_out;
    if (ec) return failed(ec);
    error_code ignored;
    socket_.set_option(tcp::no_delay(true), ignored);
    auto& u = candidates_[next_];
    if (!tls_.material) return finish(connect_result{error_code{}, std::move(socket_), {}, std::move(u), {}});
    kws::tls_handshake_options options;
    options.host = u.host;
    options.insecure_skip_verify = tls_.insecure;
    options.timeout = timeout_;
    options.timeout_name = "--connect-timeout";  // which bounds the dial and the TLS handshake both
    kws::async_tls_handshake(
        std::move(socket_), tls_.material->current(), std::move(options),
        bound([self = shared_from_this()](error_code ec, kws::tls_socket secured, std::string why) {
          if (ec) {
            self->failure_ = std::move(why);
            return self->failed(ec);
          }
          self->finish(connect_result{
              error_code{}, std::nullopt, std::move(secured), std::move(self->candidates_[self->next_]), {}});
        }));
  }

  // This candidate failed: the next one, on a fresh socket.
  void failed(error_code ec) {
    stage_ = stage::other;
    timer_.cancel();
    last_ = ec;
    timed_out_ = false;
    ++next_;
    error_code ignored;
    socket_.close(ignored);
    socket_ = tcp::socket(resolver_.get_executor());
    attempt();
  }

  void finish(connect_result r) {
    stage_ = stage::other;
    timer_.cancel();
    auto done = std::move(done_);
    done(std::move(r));
  }

  tcp::resolver resolver_;
  tcp::socket socket_;
  asio::steady_timer timer_;
  asio::cancellation_signal cancel_connect_;
  std::vector<upstream> candidates_;
  std::size_t next_ = 0;
  std::chrono::milliseconds timeout_;
  upstream_tls tls_;
  std::function<void(connect_result)> done_;
  error_code last_ = asio::error::host_not_found;
  std::string failure_;  // the last TLS failure's sentence
  unsigned attempts_ = 0;
  stage stage_ = stage::other;
  bool timed_out_ = false;
};

}  // namespace

void async_connect_any(const asio::any_io_executor& ex, std::vector<upstream> candidates,
                       std::chrono::milliseconds timeout, upstream_tls tls,
                       std::function<void(connect_result)> done) {
  auto d = std::allocate_shared<dial>(kws::detail::dial_allocator<dial>(), ex, std::move(candidates), timeout,
                                      std::move(tls), std::move(done));
  // Started from the executor, so that `done` is never called before this returns.
  asio::post(ex, bound([d] { d->attempt(); }));
}

awaitable<connect_result> connect_any(std::vector<upstream> candidates, std::chrono::milliseconds timeout,
                                      upstream_tls tls) {
  auto ex = co_await asio::this_coro::executor;
  // Named, not temporaries in the co_await expression (GCC 12). The awaitable's handler can only be moved,
  // and std::function copies: it is shared.
  auto initiate = [&](auto handler) {
    auto h = std::make_shared<decltype(handler)>(std::move(handler));
    async_connect_any(ex, std::move(candidates), timeout, std::move(tls),
                      [h](connect_result r) { std::move (*h)(std::move(r)); });
  };
  auto result = co_await asio::async_initiate<decltype(asio::use_awaitable), void(connect_result)>(
      initiate, asio::use_awaitable);
  co_return result;
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
