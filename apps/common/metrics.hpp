// Prometheus metrics of the servers in apps/, on prometheus-cpp's core library (Debian 12:
// prometheus-cpp-dev, at run time libprometheus-cpp-core1.0). What is counted once per connection or dial
// lives in a prometheus::Registry (Family<Counter>, <Gauge>, <Histogram>); what is counted per frame or per
// Kafka request stays on relaxed atomics (kws::relay_counters, the per-API counts here) and becomes
// prometheus-cpp's families only when scraped (scraped_metrics), so that the hot path is a relaxed add, not
// prometheus-cpp's compare-exchange loop on a double or its histogram's mutex. prometheus::TextSerializer
// writes the text (format 0.0.4); monitoring.hpp serves it. No I/O here. Format:
// https://prometheus.io/docs/instrumenting/exposition_formats/
#pragma once

#include <kws/kafka/tracker.hpp>
#include <kws/relay.hpp>

#include <boost/system/error_code.hpp>

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/labels.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

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

/// A counter for the hot path: one relaxed add.
class counter {
 public:
  void inc(std::uint64_t n = 1) noexcept { v_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

/// A histogram for the hot path (prometheus::Histogram locks a mutex per observation): observations in
/// seconds, kept in nanoseconds so that the sum is an integer atomic too; buckets are counted apart and made
/// cumulative when collected. A scrape running alongside observations may see a count one or two ahead of
/// the buckets' total (each atomic is exact, the set is not a snapshot), never a bucket above the count.
class histogram {
 public:
  /// Upper bounds in seconds, ascending; +Inf is implicit.
  explicit histogram(std::vector<double> upper_bounds);
  void observe(std::chrono::nanoseconds d) noexcept;
  std::uint64_t count() const noexcept { return count_.load(std::memory_order_relaxed); }
  /// As prometheus-cpp reports one: cumulative buckets, the last one +Inf and equal to the count.
  prometheus::ClientMetric::Histogram collect() const;

 private:
  std::vector<double> bounds_;
  std::vector<std::int64_t> bounds_ns_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // bounds + 1 (+Inf)
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_ns_{0};
};

/// Series whose values are kept on atomics or read from elsewhere, turned into prometheus-cpp's metric
/// families on each Collect() (a scrape), in the order added. Add everything before the first scrape (the
/// set itself is not locked); the values are then updated and read from any thread.
class scraped_metrics final : public prometheus::Collectable {
 public:
  counter& add_counter(const std::string& name, const std::string& help, const prometheus::Labels& l);
  histogram& add_histogram(const std::string& name, const std::string& help, std::vector<double> upper_bounds,
                           const prometheus::Labels& l);
  /// A counter or gauge whose value is read when scraped.
  void add_counter_function(const std::string& name, const std::string& help, const prometheus::Labels& l,
                            std::function<double()> read);
  void add_gauge_function(const std::string& name, const std::string& help, const prometheus::Labels& l,
                          std::function<double()> read);
  /// A series is left out while its value (a histogram's count) is zero; for label sets that are many and
  /// mostly unused, such as one per Kafka API. The family's HELP and TYPE stay.
  void omit_while_zero(const std::string& name);

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  struct series {
    std::vector<prometheus::ClientMetric::Label> labels;
    std::function<double()> read;
    std::unique_ptr<counter> c;
    std::unique_ptr<histogram> h;
  };
  struct family {
    std::string name;
    std::string help;
    prometheus::MetricType type;
    bool omit_zero = false;
    std::vector<series> members;
  };
  series& add(const std::string& name, const std::string& help, prometheus::MetricType type,
              const prometheus::Labels& l);

  std::vector<family> families_;
};

/// The text format 0.0.4 of `families` (prometheus::TextSerializer), families sorted by name and each one's
/// series by labels: prometheus-cpp keeps series in a hash map, and sorting keeps the text the same from
/// scrape to scrape.
std::string serialize(std::vector<prometheus::MetricFamily> families);

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
/// counting points call these from any thread. A server adds metrics of its own to registry() or scraped()
/// before the first scrape; render() shows them with the rest.
class server_metrics {
 public:
  server_metrics();

  // Once per connection or dial: prometheus-cpp's counters (a compare-exchange loop on an atomic double).
  void connection_opened() noexcept {
    connections_total_->Increment();
    connections_active_->Increment();
  }
  void connection_closed() noexcept { connections_active_->Decrement(); }
  void dial_started() noexcept { dial_attempts_->Increment(); }
  void dial_failed(const boost::system::error_code& ec) noexcept;
  /// The broker side is open: `took` from the start of that attempt.
  void dial_succeeded(std::chrono::steady_clock::duration took) noexcept;
  /// A relay ended: counts the frame that ended it, if one did.
  void relay_ended(const kws::relay_report& r) noexcept;

  /// For relay_options::counters and tracker_config::observer: relaxed atomics, read when scraped.
  const std::shared_ptr<kws::relay_counters>& relay_counters() const { return relay_; }
  std::shared_ptr<kws::kafka::request_observer> request_observer() const;

  prometheus::Registry& registry() { return registry_; }
  scraped_metrics& scraped() { return scraped_; }

  /// Everything, in the text format 0.0.4.
  std::string render() const;

 private:
  class kafka_observer;

  prometheus::Registry registry_;
  scraped_metrics scraped_;
  prometheus::Counter* connections_total_ = nullptr;
  prometheus::Gauge* connections_active_ = nullptr;
  prometheus::Counter* dial_attempts_ = nullptr;
  std::vector<std::pair<std::string_view, prometheus::Counter*>> dial_failures_;
  prometheus::Histogram* handshake_ = nullptr;
  std::vector<std::pair<std::string_view, prometheus::Counter*>> rejected_;
  std::shared_ptr<kws::relay_counters> relay_ = std::make_shared<kws::relay_counters>();
  std::shared_ptr<kafka_observer> kafka_;
};

}  // namespace kws::app
