#include "ws/dialer_state.hpp"

#include <kws/dialer.hpp>
#include <kws/errc.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/system/system_error.hpp>

#include <chrono>
#include <optional>

namespace kws {
namespace {

std::shared_ptr<detail::dialer_state> make_state(dialer_config config) {
  auto st = std::make_shared<detail::dialer_state>();
  st->config = std::move(config);
  boost::system::error_code ec;
  std::string what;
  st->proxies = forward_proxy_rules::compile(st->config.forward_proxy, ec, &what);
  if (ec) throw boost::system::system_error(ec, what);
  auto& ctx = st->ssl;
  ctx.set_options(boost::asio::ssl::context::default_workarounds | boost::asio::ssl::context::no_sslv2 |
                  boost::asio::ssl::context::no_sslv3 | boost::asio::ssl::context::no_tlsv1 |
                  boost::asio::ssl::context::no_tlsv1_1);
  if (!st->config.ca_file.empty()) {
    ctx.load_verify_file(st->config.ca_file);  // throws with the OpenSSL reason
  } else {
    ctx.set_default_verify_paths();
  }
  return st;
}

}  // namespace

dialer::dialer(executor_type ex, dialer_config config)
    : ex_(std::move(ex)), state_(make_state(std::move(config))) {}

const dialer_config& dialer::config() const {
  return state_->config;
}

std::string dialer::via(std::string_view address) const {
  boost::system::error_code ec;
  const auto url = parse_address(address, state_->config.tls, ec);
  if (ec) return {};
  const auto* p = state_->proxies.for_url(url);
  return p ? p->authority() : std::string();
}

connection dialer::dial(std::string_view address, boost::system::error_code& ec, dial_info* info) {
  // The blocking dial runs the asynchronous one (so that every step is bounded by the handshake timeout) on
  // an io_context of its own, which it drives right here: the caller's context, which other threads may be
  // running or which may be stopped on purpose, is left alone. The connection keeps that context; its
  // blocking reads and writes need nobody to run it.
  auto ctx = std::make_shared<boost::asio::io_context>(1);
  std::optional<connection> result;
  dial_info local;
  rebind(ctx->get_executor())
      .async_dial(std::string(address), info ? *info : local, [&](boost::system::error_code e, connection c) {
        ec = e;
        result.emplace(std::move(c));
      });
  while (!result && ctx->run_one() != 0) {
  }
  if (!result) {
    ec = boost::asio::error::operation_aborted;  // cannot happen: the dial always completes
    return {};
  }
  if (result->impl_) result->impl_->owner = ctx;
  return std::move(*result);
}

connection dialer::dial(std::string_view address) {
  boost::system::error_code ec;
  dial_info info;
  auto c = dial(address, ec, &info);
  if (ec) {
    throw boost::system::system_error(
        ec, "kws::dialer::dial " + std::string(address) + (info.failure.empty() ? "" : ": " + info.failure));
  }
  return c;
}

}  // namespace kws
