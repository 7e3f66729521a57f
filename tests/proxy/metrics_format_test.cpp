// The hand-written Prometheus exposition of apps/common/metrics: text format 0.0.4 as Prometheus parses it
// (escaping, one HELP/TYPE per family, cumulative histogram buckets ending in +Inf, _sum and _count), and the
// names and causes the servers' metrics use.
#include "metrics.hpp"

#include <kws/errc.hpp>

#include <gtest/gtest.h>
#include <boost/asio/error.hpp>

#include <string>

namespace {

using namespace kws::app;
using namespace std::chrono_literals;

bool contains(const std::string& text, const std::string& line) {
  return text.find(line) != std::string::npos;
}

TEST(MetricsFormat, EscapesBackslashQuoteAndNewlineInLabelValuesAndHelp) {
  registry r;
  r.add_counter("kws_things_total", "Things with a \\ and a\nsecond line", {{"cause", "a\"b\\c\nd"}}).inc(3);
  const auto text = r.render();
  EXPECT_TRUE(contains(text, "# HELP kws_things_total Things with a \\\\ and a\\nsecond line\n")) << text;
  EXPECT_TRUE(contains(text, "# TYPE kws_things_total counter\n")) << text;
  EXPECT_TRUE(contains(text, "kws_things_total{cause=\"a\\\"b\\\\c\\nd\"} 3\n")) << text;
  EXPECT_EQ(escape_label_value("plain"), "plain");
}

TEST(MetricsFormat, WritesHelpAndTypeOncePerFamilyAndSeriesInRegistrationOrder) {
  registry r;
  r.add_counter("kws_frames_total", "Frames", {{"direction", "up"}}).inc(2);
  r.add_gauge("kws_open", "Open now").add(-1);
  r.add_counter("kws_frames_total", "Frames", {{"direction", "down"}}).inc(5);
  EXPECT_EQ(r.render(),
            "# HELP kws_frames_total Frames\n"
            "# TYPE kws_frames_total counter\n"
            "kws_frames_total{direction=\"up\"} 2\n"
            "kws_frames_total{direction=\"down\"} 5\n"
            "# HELP kws_open Open now\n"
            "# TYPE kws_open gauge\n"
            "kws_open -1\n");
}

TEST(MetricsFormat, HistogramBucketsAreCumulativeAndEndInInfWithSumAndCount) {
  registry r;
  auto& h = r.add_histogram("kws_wait_seconds", "Waits", {0.1, 1}, {{"api", "Produce"}});
  h.observe(50ms);
  h.observe(100ms);  // on a bound: counted in that bucket (le means less or equal)
  h.observe(500ms);
  h.observe(5s);
  EXPECT_EQ(r.render(),
            "# HELP kws_wait_seconds Waits\n"
            "# TYPE kws_wait_seconds histogram\n"
            "kws_wait_seconds_bucket{api=\"Produce\",le=\"0.1\"} 2\n"
            "kws_wait_seconds_bucket{api=\"Produce\",le=\"1\"} 3\n"
            "kws_wait_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 4\n"
            "kws_wait_seconds_sum{api=\"Produce\"} 5.65\n"
            "kws_wait_seconds_count{api=\"Produce\"} 4\n");
}

TEST(MetricsFormat, HistogramWithoutLabelsAndWithoutObservations) {
  registry r;
  r.add_histogram("kws_h_seconds", "H", {0.5});
  const auto text = r.render();
  EXPECT_TRUE(contains(text,
                       "kws_h_seconds_bucket{le=\"0.5\"} 0\nkws_h_seconds_bucket{le=\"+Inf\"} 0\n"
                       "kws_h_seconds_sum 0\nkws_h_seconds_count 0\n"))
      << text;
}

TEST(MetricsFormat, RefusesBucketsThatDoNotAscend) {
  EXPECT_THROW(histogram({1, 0.5}), std::invalid_argument);
  EXPECT_THROW(histogram({1, 1}), std::invalid_argument);
}

TEST(MetricsFormat, OmitsSeriesWhileZeroOnlyWhereAsked) {
  registry r;
  r.add_counter("kws_a_total", "A", {{"api", "Produce"}});
  r.add_counter("kws_a_total", "A", {{"api", "Fetch"}}).inc();
  r.add_histogram("kws_b_seconds", "B", {1}, {{"api", "Produce"}});
  r.add_counter("kws_c_total", "C");
  r.omit_while_zero("kws_a_total");
  r.omit_while_zero("kws_b_seconds");
  const auto text = r.render();
  EXPECT_FALSE(contains(text, "api=\"Produce\"")) << text;
  EXPECT_TRUE(contains(text, "kws_a_total{api=\"Fetch\"} 1\n")) << text;
  EXPECT_TRUE(contains(text, "kws_c_total 0\n")) << text;
}

TEST(MetricsFormat, ValuesReadFromFunctions) {
  registry r;
  double v = 7;
  r.add_counter_function("kws_read_total", "Read", {}, [&] { return v; });
  v = 9;
  EXPECT_TRUE(contains(r.render(), "kws_read_total 9\n"));
}

TEST(MetricsFormat, SampleValues) {
  EXPECT_EQ(format_value(0), "0");
  EXPECT_EQ(format_value(18446744073709.0), "18446744073709");
  EXPECT_EQ(format_value(0.25), "0.25");
  EXPECT_EQ(format_value(HUGE_VAL), "+Inf");
  EXPECT_EQ(format_value(-HUGE_VAL), "-Inf");
  EXPECT_EQ(format_value(std::nan("")), "NaN");
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
