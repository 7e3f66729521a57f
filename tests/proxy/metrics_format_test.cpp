// What /metrics shows of apps/common/metrics (prometheus-cpp's registry and text serializer, plus the series
// read from atomics when scraped): text format 0.0.4 as Prometheus parses it (one HELP and TYPE per family,
// a family's samples together, label values escaped, integers without exponent, cumulative histogram buckets
// ending in +Inf with _sum and _count), the names, HELP texts and labels users scrape, and the causes and API
// names the servers' metrics use.
#include "metrics.hpp"

#include <kws/errc.hpp>

#include <gtest/gtest.h>
#include <boost/asio/error.hpp>

#include <prometheus/counter.h>

#include <algorithm>
#include <array>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace {

using namespace kws::app;
using namespace std::chrono_literals;

bool contains(const std::string& text, const std::string& line) {
  return text.find(line) != std::string::npos;
}

std::size_t occurrences(const std::string& text, const std::string& s) {
  std::size_t n = 0;
  for (auto at = text.find(s); at != std::string::npos; at = text.find(s, at + 1)) ++n;
  return n;
}

TEST(MetricsText, EveryFamilyOnceWithItsHelpAndType) {
  server_metrics m;
  m.request_observer()->on_request(kws::kafka::api_key::produce);
  const auto text = m.render();
  const std::vector<std::array<std::string, 3>> families{
      {"kws_connections_total", "counter", "Client connections accepted"},
      {"kws_connections_active", "gauge", "Client connections open now"},
      {"kws_relay_frames_total", "counter",
       "Kafka frames relayed: up = requests from clients, down = responses to them"},
      {"kws_relay_bytes_total", "counter",
       "Bytes of the Kafka frames relayed (size headers included), by direction"},
      {"kws_dial_attempts_total", "counter", "Attempts to open the broker side of a connection"},
      {"kws_dial_failures_total", "counter", "Failed attempts to open the broker side, by cause"},
      {"kws_handshake_duration_seconds", "histogram",
       "Time to open the broker side of a connection, successful attempts only"},
      {"kws_reconnects_total", "counter",
       "Broker connections opened again after the broker closed between requests"},
      {"kws_frames_rejected_total", "counter", "Frames that ended their connection, by cause"},
      {"kws_kafka_requests_total", "counter", "Kafka requests read from clients, by API (answered or not)"},
      {"kws_kafka_request_duration_seconds", "histogram",
       "From a request passing the proxy to its response passing back, by API"},
  };
  for (const auto& [name, type, help] : families) {
    EXPECT_EQ(occurrences(text, "# HELP " + name + " " + help + "\n"), 1u) << name << "\n" << text;
    EXPECT_EQ(occurrences(text, "# TYPE " + name + " " + type + "\n"), 1u) << name << "\n" << text;
  }
  EXPECT_EQ(occurrences(text, "# TYPE "), families.size()) << text;
  EXPECT_EQ(m.render(), text) << "the same counts give the same text";
}

// Each sample belongs to the family of the TYPE line above it, and reads `name{label="value",...} number`.
TEST(MetricsText, EverySampleIsWellFormedAndUnderItsFamily) {
  server_metrics m;
  m.connection_opened();
  m.dial_started();
  m.dial_succeeded(2ms);
  m.relay_counters()->down_bytes += 98765432101ULL;
  m.request_observer()->on_request(kws::kafka::api_key::metadata);
  m.request_observer()->on_response(kws::kafka::api_key::metadata, 3ms);
  const auto text = m.render();
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  const std::regex sample(R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")"
                          R"((,[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")*\})? (\S+))");
  std::istringstream in(text);
  std::string line, family, type;
  std::set<std::string> seen;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream words(line.substr(7));
      words >> family >> type;
      EXPECT_TRUE(seen.insert(family).second) << family << " twice";
      continue;
    }
    std::smatch match;
    ASSERT_TRUE(std::regex_match(line, match, sample)) << line;
    const auto name = match[1].str();
    if (type == "histogram") {
      EXPECT_TRUE(name == family + "_bucket" || name == family + "_sum" || name == family + "_count") << line;
    } else {
      EXPECT_EQ(name, family) << line;
    }
    std::size_t used = 0;
    const auto value = match[match.size() - 1].str();
    EXPECT_NO_THROW((void)std::stod(value, &used)) << line;
    EXPECT_EQ(used, value.size()) << line;
  }
  // Counts are integers: no fraction, no exponent, however large.
  EXPECT_TRUE(contains(text, "kws_relay_bytes_total{direction=\"down\"} 98765432101\n")) << text;
}

TEST(MetricsText, LabelValuesAreEscaped) {
  scraped_metrics s;
  s.add_counter("kws_things_total", "Things", {{"cause", "a\"b\\c\nd"}}).inc(3);
  const auto text = serialize(s.Collect());
  EXPECT_TRUE(contains(text, "kws_things_total{cause=\"a\\\"b\\\\c\\nd\"} 3\n")) << text;
}

TEST(MetricsText, HistogramBucketsAreCumulativeAndEndInInfWithSumAndCount) {
  server_metrics m;
  // The handshake histogram is prometheus-cpp's; the per-API one is read from atomics when scraped.
  for (const std::chrono::microseconds d : {500us, 1000us, 700000us, 20000000us}) {
    m.dial_succeeded(d);
    m.request_observer()->on_response(kws::kafka::api_key::produce, d);
  }
  const auto text = m.render();
  for (const std::string labels : {"", "api=\"Produce\","}) {
    const auto family = labels.empty() ? std::string("kws_handshake_duration_seconds")
                                       : std::string("kws_kafka_request_duration_seconds");
    // On a bound counts in that bucket: le means less or equal.
    for (const auto& [le, n] : std::vector<std::pair<std::string, int>>{
             {"0.0005", 1}, {"0.001", 2}, {"0.0025", 2}, {"0.5", 2}, {"1", 3}, {"10", 3}, {"+Inf", 4}}) {
      EXPECT_TRUE(
          contains(text, family + "_bucket{" + labels + "le=\"" + le + "\"} " + std::to_string(n) + "\n"))
          << family << " le=" << le << "\n"
          << text;
    }
    const auto braces = labels.empty() ? std::string() : "{" + labels.substr(0, labels.size() - 1) + "}";
    EXPECT_TRUE(contains(text, family + "_count" + braces + " 4\n")) << text;
    EXPECT_TRUE(contains(text, family + "_sum" + braces + " 20.7015\n")) << text;
  }
}

TEST(MetricsText, HistogramWithoutObservations) {
  server_metrics m;
  const auto text = m.render();
  EXPECT_TRUE(contains(text,
                       "kws_handshake_duration_seconds_bucket{le=\"10\"} 0\n"
                       "kws_handshake_duration_seconds_bucket{le=\"+Inf\"} 0\n"))
      << text;
  EXPECT_TRUE(contains(text, "kws_handshake_duration_seconds_sum 0\n")) << text;
  EXPECT_TRUE(contains(text, "kws_handshake_duration_seconds_count 0\n")) << text;
}

TEST(MetricsText, RefusesBucketsThatDoNotAscend) {
  EXPECT_THROW(histogram({1, 0.5}), std::invalid_argument);
  EXPECT_THROW(histogram({1, 1}), std::invalid_argument);
}

TEST(MetricsText, PerApiSeriesAppearOnceThatApiIsSeenOtherSeriesAlways) {
  server_metrics m;
  m.request_observer()->on_request(kws::kafka::api_key::fetch);
  const auto text = m.render();
  EXPECT_TRUE(contains(text, "kws_kafka_requests_total{api=\"Fetch\"} 1\n")) << text;
  EXPECT_FALSE(contains(text, "api=\"Produce\"")) << text;
  EXPECT_FALSE(contains(text, "kws_kafka_request_duration_seconds_count")) << "no response yet\n" << text;
  EXPECT_TRUE(contains(text, "# TYPE kws_kafka_request_duration_seconds histogram\n")) << text;
  for (const auto cause : dial_failure_causes())
    EXPECT_TRUE(contains(text, "kws_dial_failures_total{cause=\"" + std::string(cause) + "\"} 0\n")) << cause;
  EXPECT_TRUE(contains(text, "kws_frames_rejected_total{cause=\"truncated_frame\"} 0\n")) << text;
}

// Values kept elsewhere are read on each scrape; a server's own families (the gateway's) show with the rest.
TEST(MetricsText, ValuesAreReadWhenScrapedAndServersAddTheirOwn) {
  server_metrics m;
  double in_progress = 7;
  m.scraped().add_gauge_function("kws_things_in_progress", "Things now", {}, [&] { return in_progress; });
  auto& refused =
      prometheus::BuildCounter().Name("kws_things_refused_total").Help("Refused").Register(m.registry());
  refused.Add({{"reason", "limit"}}).Increment();
  m.relay_counters()->up_frames += 2;
  EXPECT_TRUE(contains(m.render(), "kws_relay_frames_total{direction=\"up\"} 2\n"));
  in_progress = 9;
  m.relay_counters()->up_frames += 3;
  const auto text = m.render();
  EXPECT_TRUE(contains(text, "# TYPE kws_things_in_progress gauge\nkws_things_in_progress 9\n")) << text;
  EXPECT_TRUE(contains(text, "kws_things_refused_total{reason=\"limit\"} 1\n")) << text;
  EXPECT_TRUE(contains(text, "kws_relay_frames_total{direction=\"up\"} 5\n")) << text;
}

TEST(MetricsNames, KafkaApisByTheProtocolsNames) {
  using kws::kafka::api_key;
  EXPECT_EQ(kafka_api_label(api_key::produce), "Produce");
  EXPECT_EQ(kafka_api_label(api_key::api_versions), "ApiVersions");
  EXPECT_EQ(kafka_api_label(api_key::offset_for_leader_epoch), "OffsetForLeaderEpoch");
  EXPECT_EQ(kafka_api_label(api_key::init_producer_id), "InitProducerId");
  // Keys the table in kws/kafka/api.hpp has no name for share one label.
  EXPECT_EQ(kafka_api_label(api_key::describe_acls), "unknown");
  EXPECT_EQ(kafka_api_label(static_cast<api_key>(-1)), "unknown");
  EXPECT_EQ(kafka_api_label(static_cast<api_key>(999)), "unknown");
}

TEST(MetricsNames, DialFailureCauses) {
  namespace asio = boost::asio;
  EXPECT_EQ(dial_failure_cause(asio::error::connection_refused), "refused");
  EXPECT_EQ(dial_failure_cause(asio::error::timed_out), "timeout");
  EXPECT_EQ(dial_failure_cause(asio::error::host_not_found), "resolve");
  EXPECT_EQ(dial_failure_cause(asio::error::network_unreachable), "unreachable");
  EXPECT_EQ(dial_failure_cause(asio::error::connection_reset), "reset");
  EXPECT_EQ(dial_failure_cause(kws::errc::upgrade_declined), "upgrade");
  EXPECT_EQ(dial_failure_cause(kws::errc::proxy_refused), "forward_proxy");
  EXPECT_EQ(dial_failure_cause(kws::errc::proxy_timeout), "forward_proxy");
  EXPECT_EQ(dial_failure_cause(asio::error::no_buffer_space), "other");
  for (const auto& c : {"refused", "timeout", "resolve", "unreachable", "reset", "tls", "upgrade",
                        "forward_proxy", "other"}) {
    EXPECT_NE(std::find(dial_failure_causes().begin(), dial_failure_causes().end(), c),
              dial_failure_causes().end())
        << c;
  }
  EXPECT_EQ(rejection_cause(kws::errc::frame_too_large), "frame_too_large");
  EXPECT_EQ(rejection_cause(asio::error::eof), "");
}

TEST(MetricsNames, ServerMetricsCountWhatTheyAreTold) {
  server_metrics m;
  m.connection_opened();
  m.connection_opened();
  m.connection_closed();
  m.dial_started();
  m.dial_started();
  m.dial_failed(boost::asio::error::connection_refused);
  m.dial_succeeded(3ms);
  m.relay_counters()->up_frames += 4;
  m.request_observer()->on_request(kws::kafka::api_key::metadata);
  m.request_observer()->on_response(kws::kafka::api_key::metadata, 2ms);
  kws::relay_report r;
  r.error = kws::errc::invalid_message_type;
  m.relay_ended(r);
  const auto text = m.render();
  for (const auto* line :
       {"kws_connections_total 2\n", "kws_connections_active 1\n", "kws_dial_attempts_total 2\n",
        "kws_dial_failures_total{cause=\"refused\"} 1\n", "kws_dial_failures_total{cause=\"timeout\"} 0\n",
        "kws_handshake_duration_seconds_count 1\n", "kws_relay_frames_total{direction=\"up\"} 4\n",
        "kws_relay_bytes_total{direction=\"down\"} 0\n", "kws_reconnects_total 0\n",
        "kws_frames_rejected_total{cause=\"invalid_message_type\"} 1\n",
        "kws_kafka_requests_total{api=\"Metadata\"} 1\n",
        "kws_kafka_request_duration_seconds_bucket{api=\"Metadata\",le=\"0.0025\"} 1\n",
        "kws_kafka_request_duration_seconds_count{api=\"Metadata\"} 1\n"}) {
    EXPECT_TRUE(contains(text, line)) << line << " not in:\n" << text;
  }
  EXPECT_FALSE(contains(text, "api=\"Produce\"")) << text;
}

}  // namespace
