// Brokers of the cluster by node id, learned from its own Metadata: from every response relayed to a client,
// and, for a node id nobody has asked about on this gateway yet, from a Metadata request of its own
// (authenticated with --upstream-sasl-file when given; see docs/addressing.md). Shared by all workers.
#pragma once

#include "cluster_dial.hpp"

#include <kws/detail/shared_slot.hpp>
#include <kws/kafka/sasl.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kws::gateway {

class node_table {
 public:
  node_table(std::vector<upstream> bootstrap, std::chrono::milliseconds timeout, upstream_tls tls,
             const std::optional<kafka::sasl::credentials>& credentials)
      : bootstrap_(std::move(bootstrap)), timeout_(timeout), tls_(std::move(tls)) {
    if (credentials) set_credentials(*credentials);
  }

  /// The credentials of later lookups (a reload of --upstream-sasl-file); one already running keeps its own.
  /// The next lookup may run at once, not a second after the last one, which may have failed for want of
  /// them.
  void set_credentials(kafka::sasl::credentials c);

  std::optional<upstream> find(std::int32_t node) const;
  void learn(std::int32_t node, std::string_view host, std::int32_t port);

  /// Asks a bootstrap server for Metadata (one request at a time, at most once a second); `done` runs on
  /// `ex`.
  void refresh(const boost::asio::any_io_executor& ex, std::function<void()> done);

  /// Why the last lookup learned nothing (empty: it succeeded, or none ran yet).
  std::string last_failure() const;

 private:
  void wake_all();
  // The failure in words; empty when the brokers were learned.
  boost::asio::awaitable<std::string> fetch();
  // SASL first when the gateway has credentials, then Metadata for no topics, on one connection.
  template <class Stream>
  boost::asio::awaitable<std::string> lookup(Stream& stream, upstream from);

  std::vector<upstream> bootstrap_;
  std::chrono::milliseconds timeout_;
  upstream_tls tls_;
  kws::detail::shared_slot<const kafka::sasl::credentials> credentials_;
  mutable std::mutex mu_;
  std::map<std::int32_t, upstream> nodes_;
  std::vector<std::pair<boost::asio::any_io_executor, std::function<void()>>> waiters_;
  bool fetching_ = false;
  std::chrono::steady_clock::time_point last_fetch_{};
  std::string last_failure_;
};

}  // namespace kws::gateway
