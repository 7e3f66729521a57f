// Prometheus metrics of the servers in apps/, written by hand (Debian 12 has no C++ client library):
// counters, gauges and histograms on relaxed atomics, a registry that renders the text exposition format
// 0.0.4, and the set of metrics the proxy and the gateway share. No I/O here: http_endpoint.hpp serves the
// text. Format: https://prometheus.io/docs/instrumenting/exposition_formats/
#pragma once

#include <kws/kafka/tracker.hpp>
#include <kws/relay.hpp>

#include <boost/system/error_code.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kws::app {

/// Label names and values of one series, in the order they are written.
using labels = std::vector<std::pair<std::string, std::string>>;

/// A label value as the format wants it: backslash, double quote and line feed escaped.
std::string escape_label_value(std::string_view v);
/// A HELP text as the format wants it: backslash and line feed escaped.
std::string escape_help(std::string_view v);
/// A sample value: integers without a fraction, +Inf/-Inf/NaN spelled as the format spells them.
std::string format_value(double v);

class counter {
 public:
  void inc(std::uint64_t n = 1) noexcept { v_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

class gauge {
 public:
  void add(std::int64_t n) noexcept { v_.fetch_add(n, std::memory_order_relaxed); }
  void set(std::int64_t n) noexcept { v_.store(n, std::memory_order_relaxed); }
  std::int64_t value() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> v_{0};
};

/// Observations in seconds, kept in nanoseconds so that the sum is an integer atomic too. Buckets are counted
/// apart and made cumulative when rendered. A scrape running alongside observations may see a count that is
/// one or two ahead of the buckets' total: each atomic is exact, the set is not a snapshot.
class histogram {
 public:
  /// Upper bounds in seconds, ascending; +Inf is implicit.
  explicit histogram(std::vector<double> upper_bounds);
  void observe(std::chrono::nanoseconds d) noexcept;
  const std::vector<double>& upper_bounds() const { return bounds_; }
  /// Observations at or below upper_bounds()[i] and above the bound before (the last: above every bound).
  std::uint64_t bucket(std::size_t i) const noexcept { return buckets_[i].load(std::memory_order_relaxed); }
  std::uint64_t count() const noexcept { return count_.load(std::memory_order_relaxed); }
  double sum_seconds() const noexcept {
    return static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
  }

 private:
  std::vector<double> bounds_;
  std::vector<std::int64_t> bounds_ns_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // bounds + 1 (+Inf)
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_ns_{0};
};

/// Metrics by name, rendered in the order registered. Register everything before the first render (the
/// registry itself is not locked); the metrics are then updated and read from any thread.
class registry {
 public:
  counter& add_counter(const std::string& name, const std::string& help, labels l = {});
  gauge& add_gauge(const std::string& name, const std::string& help, labels l = {});
  histogram& add_histogram(const std::string& name, const std::string& help, std::vector<double> upper_bounds,
                           labels l = {});
  /// A counter or gauge whose value is read from elsewhere when rendered.
  void add_counter_function(const std::string& name, const std::string& help, labels l,
                            std::function<double()> read);
  void add_gauge_function(const std::string& name, const std::string& help, labels l,
                          std::function<double()> read);
  /// A series (of any kind) is left out of the text while its value (a histogram's count) is zero; for label
  /// sets that are many and mostly unused, such as one per Kafka API.
  void omit_while_zero(const std::string& name);

  /// The text exposition format, version 0.0.4.
  std::string render() const;

 private:
  enum class kind { counter, gauge, histogram };
  struct series {
    std::string labels;  // rendered: `a="x",b="y"`, or empty
    std::function<double()> read;
    std::unique_ptr<counter> c;
    std::unique_ptr<gauge> g;
    std::unique_ptr<histogram> h;
  };
  struct family {
    std::string name;
    std::string help;
    kind type;
    bool omit_zero = false;
    std::vector<series> members;
  };
  series& add(const std::string& name, const std::string& help, kind type, const labels& l);

  std::vector<family> families_;
};

/// Upper bounds, in seconds, for latencies from 0.5 ms to 10 s.
std::vector<double> latency_buckets();

/// The cause label of a failed dial (or connect): "refused", "timeout", "resolve", "unreachable", "reset",
/// "tls", "upgrade" (the server answered HTTP without upgrading), "forward_proxy", or "other".
std::string_view dial_failure_cause(const boost::system::error_code& ec);
/// Every value dial_failure_cause gives.
const std::vector<std::string_view>& dial_failure_causes();
/// The cause label of a frame that ended a relay (the kws::errc name, "invalid_message_type" and the like),
/// or empty when the relay ended for another reason.
std::string_view rejection_cause(const boost::system::error_code& ec);
/// The Kafka protocol's name of an API ("Produce", "ApiVersions"), or "unknown".
std::string kafka_api_label(kws::kafka::api_key key);

/// The metrics the proxy and the gateway share; see README.md "Metrics and health" for the list. The
/// counting points call these from any thread.
class server_metrics {
 public:
  server_metrics();

  void connection_opened() noexcept {
    connections_total_->inc();
    connections_active_->add(1);
  }
  void connection_closed() noexcept { connections_active_->add(-1); }
  void dial_started() noexcept { dial_attempts_->inc(); }
  void dial_failed(const boost::system::error_code& ec) noexcept;
  /// The broker side is open: `took` from the start of that attempt.
  void dial_succeeded(std::chrono::steady_clock::duration took) noexcept;
  /// A relay ended: counts the frame that ended it, if one did.
  void relay_ended(const kws::relay_report& r) noexcept;

  /// For relay_options::counters and tracker_config::observer.
  const std::shared_ptr<kws::relay_counters>& relay_counters() const { return relay_; }
  std::shared_ptr<kws::kafka::request_observer> request_observer() const;

  std::string render() const { return registry_.render(); }

 private:
  class kafka_observer;

  registry registry_;
  counter* connections_total_ = nullptr;
  gauge* connections_active_ = nullptr;
  counter* dial_attempts_ = nullptr;
  std::vector<std::pair<std::string_view, counter*>> dial_failures_;
  histogram* handshake_ = nullptr;
  std::vector<std::pair<std::string_view, counter*>> rejected_;
  std::shared_ptr<kws::relay_counters> relay_ = std::make_shared<kws::relay_counters>();
  std::shared_ptr<kafka_observer> kafka_;
};

}  // namespace kws::app
