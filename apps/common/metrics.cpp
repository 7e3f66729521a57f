#include "metrics.hpp"

#include <kws/errc.hpp>

#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/websocket/error.hpp>

#include <prometheus/text_serializer.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace kws::app {

namespace asio = boost::asio;
namespace beast = boost::beast;
using boost::system::error_code;

// ---- histogram ----------------------------------------------------------------------------------------

histogram::histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)) {
  if (!std::is_sorted(bounds_.begin(), bounds_.end()) ||
      std::adjacent_find(bounds_.begin(), bounds_.end()) != bounds_.end())
    throw std::invalid_argument("histogram bounds must ascend strictly");
  for (const double b : bounds_) bounds_ns_.push_back(static_cast<std::int64_t>(std::llround(b * 1e9)));
  buckets_ = std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1);
  for (std::size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void histogram::observe(std::chrono::nanoseconds d) noexcept {
  const auto ns = std::max<std::int64_t>(0, d.count());
  std::size_t i = 0;
  while (i < bounds_ns_.size() && ns > bounds_ns_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(static_cast<std::uint64_t>(ns), std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

prometheus::ClientMetric::Histogram histogram::collect() const {
  prometheus::ClientMetric::Histogram h;
  h.sample_count = count();
  h.sample_sum = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    // Capped at the count: an observation may land between the reads.
    h.bucket.push_back({std::min(cumulative, h.sample_count), bounds_[i]});
  }
  // The +Inf bucket is the count by definition.
  h.bucket.push_back({h.sample_count, std::numeric_limits<double>::infinity()});
  return h;
}

// ---- scraped_metrics ----------------------------------------------------------------------------------

scraped_metrics::series& scraped_metrics::add(const std::string& name, const std::string& help,
                                              prometheus::MetricType type, const prometheus::Labels& l) {
  auto it = std::find_if(families_.begin(), families_.end(), [&](const family& f) { return f.name == name; });
  if (it == families_.end()) {
    families_.push_back(family{name, help, type, false, {}});
    it = families_.end() - 1;
  } else if (it->type != type) {
    throw std::invalid_argument("metric " + name + " registered with two types");
  }
  series s;
  for (const auto& [k, v] : l) s.labels.push_back({k, v});
  it->members.push_back(std::move(s));
  return it->members.back();
}

counter& scraped_metrics::add_counter(const std::string& name, const std::string& help,
                                      const prometheus::Labels& l) {
  auto& s = add(name, help, prometheus::MetricType::Counter, l);
  s.c = std::make_unique<counter>();
  return *s.c;
}

histogram& scraped_metrics::add_histogram(const std::string& name, const std::string& help,
                                          std::vector<double> upper_bounds, const prometheus::Labels& l) {
  auto& s = add(name, help, prometheus::MetricType::Histogram, l);
  s.h = std::make_unique<histogram>(std::move(upper_bounds));
  return *s.h;
}

void scraped_metrics::add_counter_function(const std::string& name, const std::string& help,
                                           const prometheus::Labels& l, std::function<double()> read) {
  add(name, help, prometheus::MetricType::Counter, l).read = std::move(read);
}

void scraped_metrics::add_gauge_function(const std::string& name, const std::string& help,
                                         const prometheus::Labels& l, std::function<double()> read) {
  add(name, help, prometheus::MetricType::Gauge, l).read = std::move(read);
}

void scraped_metrics::omit_while_zero(const std::string& name) {
  for (auto& f : families_) {
    if (f.name == name) f.omit_zero = true;
  }
}

std::vector<prometheus::MetricFamily> scraped_metrics::Collect() const {
  std::vector<prometheus::MetricFamily> out;
  out.reserve(families_.size());
  for (const auto& f : families_) {
    auto& mf = out.emplace_back(prometheus::MetricFamily{f.name, f.help, f.type, {}});
    for (const auto& s : f.members) {
      prometheus::ClientMetric m;
      m.label = s.labels;
      if (s.h) {
        m.histogram = s.h->collect();
        if (f.omit_zero && m.histogram.sample_count == 0) continue;
      } else {
        const double v = s.read ? s.read() : static_cast<double>(s.c->value());
        if (f.omit_zero && v == 0) continue;
        (f.type == prometheus::MetricType::Gauge ? m.gauge.value : m.counter.value) = v;
      }
      mf.metric.push_back(std::move(m));
    }
  }
  return out;
}

std::string serialize(std::vector<prometheus::MetricFamily> families) {
  std::sort(families.begin(), families.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  for (auto& f : families) {
    std::sort(f.metric.begin(), f.metric.end(),
              [](const auto& a, const auto& b) { return a.label < b.label; });
  }
  return prometheus::TextSerializer().Serialize(families);
}

std::vector<double> latency_buckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

// ---- causes and names ---------------------------------------------------------------------------------

std::string_view dial_failure_cause(const error_code& ec) {
  if (ec == asio::error::connection_refused) return "refused";
  if (ec == asio::error::timed_out || ec == beast::error::timeout || ec == kws::errc::proxy_timeout)
    return ec == kws::errc::proxy_timeout ? "forward_proxy" : "timeout";
  if (ec.category() == kws::error_category() && ec.value() >= static_cast<int>(kws::errc::invalid_proxy_url))
    return "forward_proxy";
  // The server answered, but not with a WebSocket upgrade (an HTTP error status, a bad handshake).
  static const auto& ws_category =
      beast::websocket::make_error_code(beast::websocket::error::closed).category();
  static const auto& http_category =
      beast::http::make_error_code(beast::http::error::end_of_stream).category();
  if (ec == kws::errc::upgrade_declined || ec.category() == ws_category || ec.category() == http_category)
    return "upgrade";
  if (ec == asio::error::host_not_found || ec == asio::error::host_not_found_try_again ||
      ec == asio::error::no_data || ec == asio::error::no_recovery ||
      ec.category() == asio::error::get_netdb_category() ||
      ec.category() == asio::error::get_addrinfo_category())
    return "resolve";
  if (ec == asio::error::network_unreachable || ec == asio::error::host_unreachable) return "unreachable";
  if (ec == asio::error::connection_reset || ec == asio::error::eof ||
      ec == asio::error::connection_aborted || ec == asio::error::broken_pipe)
    return "reset";
  if (ec.category() == asio::error::get_ssl_category() || ec == asio::ssl::error::stream_truncated)
    return "tls";
  return "other";
}

const std::vector<std::string_view>& dial_failure_causes() {
  static const std::vector<std::string_view> all{
      "refused", "timeout", "resolve", "unreachable", "reset", "tls", "upgrade", "forward_proxy", "other"};
  return all;
}

namespace {

constexpr std::array<std::pair<kws::errc, std::string_view>, 6> rejection_names{{
    {kws::errc::invalid_message_type, "invalid_message_type"},
    {kws::errc::negative_frame_size, "negative_frame_size"},
    {kws::errc::frame_too_large, "frame_too_large"},
    {kws::errc::frame_size_mismatch, "frame_size_mismatch"},
    {kws::errc::truncated_frame, "truncated_frame"},
    {kws::errc::unusable_response, "unusable_response"},
}};

// Keys 0..max_key have a slot each; anything else shares the last one ("unknown").
constexpr int max_key = 127;

}  // namespace

std::string_view rejection_cause(const error_code& ec) {
  for (const auto& [e, name] : rejection_names) {
    if (ec == e) return name;
  }
  return {};
}

std::string kafka_api_label(kws::kafka::api_key key) {
  const auto snake = kws::kafka::api_name(key);
  if (snake == "unknown") return "unknown";
  // api_versions -> ApiVersions: the table's names are the protocol's, in snake case.
  std::string out;
  bool upper = true;
  for (const char c : snake) {
    if (c == '_') {
      upper = true;
      continue;
    }
    out += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
    upper = false;
  }
  return out;
}

// ---- server_metrics -----------------------------------------------------------------------------------

// Per Kafka API: a request counter and a latency histogram, in slots indexed by API key so that counting
// is an array index and relaxed adds.
class server_metrics::kafka_observer final : public kws::kafka::request_observer {
 public:
  explicit kafka_observer(scraped_metrics& r) {
    const auto add = [&](std::size_t slot, const std::string& api) {
      requests_[slot] =
          &r.add_counter("kws_kafka_requests_total",
                         "Kafka requests read from clients, by API (answered or not)", {{"api", api}});
      latency_[slot] =
          &r.add_histogram("kws_kafka_request_duration_seconds",
                           "From a request passing the proxy to its response passing back, by API",
                           latency_buckets(), {{"api", api}});
    };
    for (int k = 0; k <= max_key; ++k) {
      const auto key = static_cast<kws::kafka::api_key>(k);
      if (kws::kafka::api_name(key) != "unknown") add(static_cast<std::size_t>(k), kafka_api_label(key));
    }
    add(unknown_slot, "unknown");
    for (std::size_t k = 0; k < unknown_slot; ++k) {
      if (!requests_[k]) {
        requests_[k] = requests_[unknown_slot];
        latency_[k] = latency_[unknown_slot];
      }
    }
    r.omit_while_zero("kws_kafka_requests_total");
    r.omit_while_zero("kws_kafka_request_duration_seconds");
  }

  void on_request(kws::kafka::api_key key) noexcept override { requests_[slot(key)]->inc(); }
  void on_response(kws::kafka::api_key key, std::chrono::steady_clock::duration latency) noexcept override {
    latency_[slot(key)]->observe(std::chrono::duration_cast<std::chrono::nanoseconds>(latency));
  }

 private:
  static constexpr std::size_t unknown_slot = max_key + 1;
  static std::size_t slot(kws::kafka::api_key key) noexcept {
    const auto k = static_cast<int>(key);
    return k >= 0 && k <= max_key ? static_cast<std::size_t>(k) : unknown_slot;
  }

  std::array<counter*, unknown_slot + 1> requests_{};
  std::array<histogram*, unknown_slot + 1> latency_{};
};

server_metrics::server_metrics() {
  auto& r = registry_;
  connections_total_ = &prometheus::BuildCounter()
                            .Name("kws_connections_total")
                            .Help("Client connections accepted")
                            .Register(r)
                            .Add({});
  connections_active_ = &prometheus::BuildGauge()
                             .Name("kws_connections_active")
                             .Help("Client connections open now")
                             .Register(r)
                             .Add({});
  dial_attempts_ = &prometheus::BuildCounter()
                        .Name("kws_dial_attempts_total")
                        .Help("Attempts to open the broker side of a connection")
                        .Register(r)
                        .Add({});
  auto& dial_failures = prometheus::BuildCounter()
                            .Name("kws_dial_failures_total")
                            .Help("Failed attempts to open the broker side, by cause")
                            .Register(r);
  for (const auto cause : dial_failure_causes())
    dial_failures_.emplace_back(cause, &dial_failures.Add({{"cause", std::string(cause)}}));
  handshake_ = &prometheus::BuildHistogram()
                    .Name("kws_handshake_duration_seconds")
                    .Help("Time to open the broker side of a connection, successful attempts only")
                    .Register(r)
                    .Add({}, latency_buckets());
  auto& rejected = prometheus::BuildCounter()
                       .Name("kws_frames_rejected_total")
                       .Help("Frames that ended their connection, by cause")
                       .Register(r);
  for (const auto& [e, name] : rejection_names)
    rejected_.emplace_back(name, &rejected.Add({{"cause", std::string(name)}}));

  // Counted per frame by the relays on their own atomics; read when scraped.
  const auto relay = relay_;
  const auto read = [relay](std::atomic<std::uint64_t> kws::relay_counters::*field) {
    return [relay, field] { return static_cast<double>(((*relay).*field).load(std::memory_order_relaxed)); };
  };
  const std::string frames_help =
      "Kafka frames relayed: up = requests from clients, down = responses to them";
  const std::string bytes_help = "Bytes of the Kafka frames relayed (size headers included), by direction";
  scraped_.add_counter_function("kws_relay_frames_total", frames_help, {{"direction", "up"}},
                                read(&kws::relay_counters::up_frames));
  scraped_.add_counter_function("kws_relay_frames_total", frames_help, {{"direction", "down"}},
                                read(&kws::relay_counters::down_frames));
  scraped_.add_counter_function("kws_relay_bytes_total", bytes_help, {{"direction", "up"}},
                                read(&kws::relay_counters::up_bytes));
  scraped_.add_counter_function("kws_relay_bytes_total", bytes_help, {{"direction", "down"}},
                                read(&kws::relay_counters::down_bytes));
  scraped_.add_counter_function("kws_reconnects_total",
                                "Broker connections opened again after the broker closed between requests",
                                {}, read(&kws::relay_counters::reconnects));
  kafka_ = std::make_shared<kafka_observer>(scraped_);
}

std::shared_ptr<kws::kafka::request_observer> server_metrics::request_observer() const {
  return kafka_;
}

std::string server_metrics::render() const {
  auto families = registry_.Collect();
  auto scraped = scraped_.Collect();
  families.insert(families.end(), std::make_move_iterator(scraped.begin()),
                  std::make_move_iterator(scraped.end()));
  return serialize(std::move(families));
}

void server_metrics::dial_failed(const error_code& ec) noexcept {
  const auto cause = dial_failure_cause(ec);
  for (auto& [name, c] : dial_failures_) {
    if (name == cause) return c->Increment();
  }
}

void server_metrics::dial_succeeded(std::chrono::steady_clock::duration took) noexcept {
  handshake_->Observe(std::chrono::duration<double>(took).count());
}

void server_metrics::relay_ended(const kws::relay_report& r) noexcept {
  const auto cause = rejection_cause(r.error);
  if (cause.empty()) return;
  for (auto& [name, c] : rejected_) {
    if (name == cause) return c->Increment();
  }
}

}  // namespace kws::app
