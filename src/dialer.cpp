#include "dialer_state.hpp"

#include <kws/dialer.hpp>
#include <kws/errc.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/system/system_error.hpp>

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>

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

// The io_context behind an executor, when it is one (possibly wrapped in a strand).
boost::asio::io_context* context_of(const boost::asio::any_io_executor& ex) {
  using io_ex = boost::asio::io_context::executor_type;
  if (auto* e = ex.target<io_ex>()) return &e->context();
  if (auto* s = ex.target<boost::asio::strand<io_ex>>()) return &s->get_inner_executor().context();
  return nullptr;
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
  // The blocking dial runs the asynchronous one, so that every step is bounded by the handshake timeout.
  // It drives the connection's io_context itself when that is where the connection lives; any other
  // executor must be run by its own threads (a thread_pool, say).
  auto* ctx = context_of(ex_);
  if (ctx && ctx->get_executor().running_in_this_thread()) {
    // Running the context from one of its own handlers is not allowed; refuse rather than deadlock (and
    // before starting anything that would later complete into this frame's locals).
    ec = boost::asio::error::operation_not_supported;
    return {};
  }
  std::atomic<bool> done{false};
  std::optional<connection> result;
  dial_info local;
  async_dial(std::string(address), info ? *info : local, [&](boost::system::error_code e, connection c) {
    ec = e;
    result.emplace(std::move(c));
    done.store(true, std::memory_order_release);
  });
  while (!done.load(std::memory_order_acquire)) {
    if (ctx) {
      if (ctx->stopped()) ctx->restart();
      ctx->run_one_for(std::chrono::milliseconds(50));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
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
