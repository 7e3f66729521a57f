#include "node_table.hpp"

#include <kws/kafka/metadata.hpp>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>

namespace kws::gateway {

namespace asio = boost::asio;
using asio::awaitable;
using clock = std::chrono::steady_clock;

void node_table::set_credentials(kafka::sasl::credentials c) {
  credentials_.store(std::make_shared<const kafka::sasl::credentials>(std::move(c)));
  std::lock_guard lock(mu_);
  last_fetch_ = {};
}

std::optional<upstream> node_table::find(std::int32_t node) const {
  std::lock_guard lock(mu_);
  auto it = nodes_.find(node);
  if (it == nodes_.end()) return std::nullopt;
  return it->second;
}

void node_table::learn(std::int32_t node, std::string_view host, std::int32_t port) {
  std::lock_guard lock(mu_);
  auto& n = nodes_[node];
  if (n.host != host || n.port != port) {
    if (!n.host.empty()) spdlog::info("broker {} moved from {} to {}:{}", node, n.text(), host, port);
    n = upstream{std::string(host), static_cast<std::uint16_t>(port)};
  }
}

void node_table::refresh(const asio::any_io_executor& ex, std::function<void()> done) {
  std::lock_guard lock(mu_);
  waiters_.emplace_back(ex, std::move(done));
  if (fetching_) return;
  if (clock::now() - last_fetch_ < std::chrono::seconds(1)) return wake_all();
  fetching_ = true;
  last_fetch_ = clock::now();
  asio::co_spawn(ex, fetch(), [this](std::exception_ptr e, std::string failure) {
    if (e) failure = "the lookup failed unexpectedly";
    // Said on the line of each connection refused for it, not here: one line per connection.
    if (!failure.empty()) spdlog::debug("cannot learn the cluster's brokers: {}", failure);
    std::lock_guard lock(mu_);
    fetching_ = false;
    last_failure_ = std::move(failure);
    wake_all();
  });
}

std::string node_table::last_failure() const {
  std::lock_guard lock(mu_);
  return last_failure_;
}

void node_table::wake_all() {
  for (auto& [ex, done] : waiters_) asio::post(ex, std::move(done));
  waiters_.clear();
}

awaitable<std::string> node_table::fetch() {
  auto connected = co_await connect_any(bootstrap_, timeout_, tls_);
  if (connected.ec) co_return connected.why();
  // (An if: with co_await in the arms of a conditional expression, as built by GCC 12, the lookup read a
  // response it could not decode.)
  std::string failure;
  if (connected.socket) {
    failure = co_await lookup(*connected.socket, connected.to);
  } else {
    failure = co_await lookup(connected.tls, connected.to);
  }
  co_return failure;
}

template <class Stream>
awaitable<std::string> node_table::lookup(Stream& stream, upstream from) {
  std::int32_t correlation_id = 1;
  std::string as;
  const auto credentials = credentials_.load();
  if (credentials) {
    kafka::sasl::client_exchange sasl(*credentials, "kafka-websocket-gateway", kafka::sasl::make_nonce());
    for (auto step = sasl.start();;) {
      if (step.what == kafka::sasl::client_exchange::step::status::failed)
        co_return "the cluster refused the gateway's lookup: " + step.failure + " (--upstream-sasl-file)";
      if (step.what == kafka::sasl::client_exchange::step::status::done) break;
      auto [sec, answer] = co_await exchange(stream, step.frame, timeout_);
      if (sec) co_return "SASL with " + from.text() + " for the gateway's lookup: " + sec.message();
      step = sasl.on_response(answer);
    }
    correlation_id = sasl.next_correlation_id();
    as = fmt::format(" as {} ({})", credentials->username, kafka::sasl::mechanism_name(credentials->which));
  }
  const auto request = kafka::encode_broker_list_request(correlation_id, "kafka-websocket-gateway");
  auto [xec, frame] = co_await exchange(stream, request, timeout_);
  if (!credentials && (xec == asio::error::eof || xec == asio::ssl::error::stream_truncated ||
                       xec == asio::error::connection_reset)) {
    // What a broker that requires SASL does with a request before authentication (Kafka's
    // SaslServerAuthenticator), so most likely that; the gateway cannot tell it apart from a broker that
    // went away at that moment.
    co_return fmt::format(
        "{} closed the gateway's lookup (an unauthenticated Metadata request) without an answer, as a "
        "cluster that requires SASL authentication does; give the gateway credentials with "
        "--upstream-sasl-file",
        from.text());
  }
  if (xec) co_return fmt::format("Metadata from {}: {}", from.text(), xec.message());
  error_code ec;
  const auto brokers = kafka::decode_metadata_brokers(kafka::broker_list_metadata_version, frame, ec);
  if (ec) co_return fmt::format("Metadata from {}: {}", from.text(), ec.message());
  int seen = 0;
  for (const auto& b : brokers) {
    // As a relayed response's: an entry without a node id or a host names nobody.
    if (b.node_id == -1 || b.host.empty()) continue;
    learn(b.node_id, b.host, b.port);
    ++seen;
  }
  spdlog::debug("learned {} broker(s) from {}{}", seen, from.text(), as);
  co_return std::string();
}

}  // namespace kws::gateway
