// The proxy's monitoring endpoint (--metrics-listen), scraped over HTTP while real clients (kcat, raw Kafka
// frames) go through the built proxy to the built dev broker: the counters must match what happened.
// Everything on 127.0.0.1 with ephemeral ports; every wait is bounded.
#include "client_tools.hpp"
#include "http_client.hpp"
#include "proxy_support.hpp"
#include "test_env.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <iostream>
#include <memory>

#if !defined(KWS_DEVBROKER_PATH) || !defined(KWS_KCAT_PATH)
#error "tests/proxy/CMakeLists.txt defines KWS_DEVBROKER_PATH and KWS_KCAT_PATH"
#endif

namespace {

using namespace kws::test;
using namespace std::chrono_literals;

class ProxyMetrics : public ::testing::Test {
 protected:
  void TearDown() override {
    if (proxy_) {
      proxy_->proc.signal(SIGTERM);
      EXPECT_EQ(proxy_->proc.wait(15s), std::optional<int>(0))
          << "the proxy did not exit with 0 after SIGTERM";
    }
    if (HasFailure()) {
      if (proxy_) std::cerr << "---- proxy log ----\n" << proxy_->proc.output();
      if (broker_) std::cerr << "---- dev broker log ----\n" << broker_->output();
    }
  }

  void start_broker() {
    broker_ = std::make_unique<child_process>(
        std::vector<std::string>{KWS_DEVBROKER_PATH, "--listen", "127.0.0.1:0", "--topic", "metered:1"});
    const auto port = broker_->wait_for_output(std::regex(R"(listening ws=127\.0\.0\.1:(\d+))"));
    ASSERT_TRUE(port) << broker_->output();
    broker_addr_ = "127.0.0.1:" + *port;
  }

  void start_proxy(std::vector<std::string> args) {
    args.insert(args.end(),
                {"--broker", broker_addr_, "--metrics-listen", "127.0.0.1:0", "--drain-timeout", "2s"});
    proxy_ = std::make_unique<proxy_process>(args);
    const auto port = proxy_->proc.wait_for_output(std::regex(R"(metrics listening on 127\.0\.0\.1:(\d+))"));
    ASSERT_TRUE(port) << proxy_->proc.output();
    metrics_port_ = static_cast<unsigned short>(std::stoi(*port));
  }

  void kcat(const std::string& name, const std::vector<std::string>& args,
            const std::string& in = "/dev/null") {
    std::vector<std::string> argv{KWS_KCAT_PATH, "-b", "127.0.0.1:" + std::to_string(proxy_->port)};
    argv.insert(argv.end(), args.begin(), args.end());
    const auto r = run(argv, tool_io(in, dir_.path() / (name + ".out")), 30s);
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << "kcat " << name << ": " << describe(r.exit_code, r.err);
  }

  std::map<std::string, double> scrape() {
    auto a = http_request(metrics_port_, "GET", "/metrics");
    EXPECT_EQ(a.status, 200) << a.raw;
    EXPECT_NE(a.headers["content-type"].find("text/plain; version=0.0.4"), std::string::npos) << a.raw;
    last_scrape_ = a.body;
    return parse_samples(a.body);
  }

  // Scrapes until `done` holds (the proxy counts a closed connection once it has seen the close).
  std::map<std::string, double> scrape_until(
      const std::function<bool(std::map<std::string, double>&)>& done) {
    auto m = scrape();
    for (const auto until = std::chrono::steady_clock::now() + 10s;
         !done(m) && std::chrono::steady_clock::now() < until;) {
      std::this_thread::sleep_for(50ms);
      m = scrape();
    }
    return m;
  }

  // Sum of a family's samples whose name starts with `prefix` (a family with its label braces opened).
  static double sum_of(const std::map<std::string, double>& m, const std::string& prefix) {
    double total = 0;
    for (const auto& [k, v] : m) {
      if (k.rfind(prefix, 0) == 0) total += v;
    }
    return total;
  }

  temp_dir dir_{"kws-metrics"};
  std::unique_ptr<child_process> broker_;
  std::unique_ptr<proxy_process> proxy_;
  std::string broker_addr_;
  kws::test::refused_port refused_;  // where no broker listens, held for the test
  unsigned short metrics_port_ = 0;
  std::string last_scrape_;
};

TEST_F(ProxyMetrics, CountConnectionsFramesBytesAndRequestsPerApiOfKcatTraffic) {
  ASSERT_NO_FATAL_FAILURE(start_broker());
  ASSERT_NO_FATAL_FAILURE(start_proxy({}));

  EXPECT_EQ(http_request(metrics_port_, "GET", "/healthz").status, 200);
  const auto ready = http_request(metrics_port_, "GET", "/readyz");
  EXPECT_EQ(ready.status, 200) << ready.raw;
  // The readiness dial is not a client's: nothing is counted for it.
  auto m = scrape();
  EXPECT_EQ(sample(m, "kws_dial_attempts_total"), 0) << last_scrape_;
  EXPECT_EQ(sample(m, "kws_connections_total"), 0) << last_scrape_;

  write_file(dir_.path() / "in", keyed_lines(50, "m-"));
  ASSERT_NO_FATAL_FAILURE(kcat("produce", {"-P", "-t", "metered", "-K:", "-l", dir_.path() / "in"}));
  ASSERT_NO_FATAL_FAILURE(kcat("consume", {"-C", "-t", "metered", "-o", "beginning", "-e", "-c", "50"}));
  ASSERT_NO_FATAL_FAILURE(kcat("metadata", {"-L"}));
  EXPECT_EQ(lines_of(read_file(dir_.path() / "consume.out")).size(), 50u);

  m = scrape_until(
      [](auto& s) { return s["kws_connections_total"] > 0 && s["kws_connections_active"] == 0; });
  EXPECT_EQ(sample(m, "kws_connections_active"), 0) << last_scrape_;
  const auto connections = sample(m, "kws_connections_total");
  EXPECT_GE(connections, 3) << "three kcat runs, each with at least one connection\n" << last_scrape_;
  // One successful dial per connection, each with its handshake time; nothing failed.
  EXPECT_EQ(sample(m, "kws_dial_attempts_total"), connections) << last_scrape_;
  EXPECT_EQ(sample(m, "kws_handshake_duration_seconds_count"), connections) << last_scrape_;
  EXPECT_EQ(sample(m, "kws_handshake_duration_seconds_bucket{le=\"+Inf\"}"), connections) << last_scrape_;
  EXPECT_EQ(sum_of(m, "kws_dial_failures_total{"), 0) << last_scrape_;
  EXPECT_EQ(sum_of(m, "kws_frames_rejected_total{"), 0) << last_scrape_;
  EXPECT_EQ(sample(m, "kws_reconnects_total"), 0) << last_scrape_;

  const auto up = sample(m, "kws_relay_frames_total{direction=\"up\"}");
  const auto down = sample(m, "kws_relay_frames_total{direction=\"down\"}");
  EXPECT_GT(up, 0) << last_scrape_;
  EXPECT_GT(down, 0) << last_scrape_;
  // Every Kafka frame has a 4-byte size and an 8-byte header at least.
  EXPECT_GE(sample(m, "kws_relay_bytes_total{direction=\"up\"}"), 12 * up) << last_scrape_;
  EXPECT_GE(sample(m, "kws_relay_bytes_total{direction=\"down\"}"), 8 * down) << last_scrape_;
  // Every request frame that went up is counted once under its API. Responses are matched to requests
  // before they go to the client: a client that leaves with a request in flight (kcat -e with a Fetch
  // waiting) may have a response matched but not delivered, or not even answered.
  EXPECT_EQ(sum_of(m, "kws_kafka_requests_total{"), up) << last_scrape_;
  const auto matched = sum_of(m, "kws_kafka_request_duration_seconds_count{");
  EXPECT_GE(matched, down) << last_scrape_;
  EXPECT_LE(matched, up) << last_scrape_;
  for (const auto* api : {"ApiVersions", "Metadata", "Produce", "Fetch", "ListOffsets"}) {
    const std::string label = std::string("{api=\"") + api + "\"}";
    EXPECT_GE(sample(m, "kws_kafka_request_duration_seconds_count" + label), 1) << api << "\n"
                                                                                << last_scrape_;
    EXPECT_LE(sample(m, "kws_kafka_request_duration_seconds_count" + label),
              sample(m, "kws_kafka_requests_total" + label))
        << api << "\n"
        << last_scrape_;
  }
  // kcat -P exits only once every message is acknowledged: each Produce was answered.
  EXPECT_EQ(sample(m, "kws_kafka_request_duration_seconds_count{api=\"Produce\"}"),
            sample(m, "kws_kafka_requests_total{api=\"Produce\"}"))
      << last_scrape_;
  EXPECT_GE(sample(m, "kws_kafka_requests_total{api=\"Metadata\"}"), 3) << "each kcat run asks for Metadata\n"
                                                                        << last_scrape_;

  // A frame with a negative size ends its connection and is counted by cause.
  client c(proxy_->port);
  c.send(std::string("\xff\xff\xff\xff", 4));
  EXPECT_TRUE(c.closed_by_peer());
  m = scrape_until([](auto& s) { return s["kws_frames_rejected_total{cause=\"negative_frame_size\"}"] > 0; });
  EXPECT_EQ(sample(m, "kws_frames_rejected_total{cause=\"negative_frame_size\"}"), 1) << last_scrape_;
  EXPECT_EQ(sample(m, "kws_connections_total"), connections + 1) << last_scrape_;
}

TEST_F(ProxyMetrics, BrokerDownMakesReadyz503AndCountsEachDialFailureByCause) {
  broker_addr_ = "127.0.0.1:" + std::to_string(refused_.port());  // nobody listens there
  ASSERT_NO_FATAL_FAILURE(start_proxy({"--dial-retries", "2", "--dial-backoff", "10ms"}));

  EXPECT_EQ(http_request(metrics_port_, "GET", "/healthz").status, 200);
  const auto ready = http_request(metrics_port_, "GET", "/readyz");
  EXPECT_EQ(ready.status, 503) << ready.raw;
  EXPECT_NE(ready.body.find("not ready: broker ws://" + broker_addr_), std::string::npos) << ready.raw;

  client c(proxy_->port);
  EXPECT_TRUE(c.closed_by_peer()) << "the proxy closes the client once every dial failed";
  const auto m = scrape_until([](auto& s) { return s["kws_connections_active"] == 0; });
  EXPECT_EQ(sample(m, "kws_connections_total"), 1) << last_scrape_;
  EXPECT_EQ(sample(m, "kws_connections_active"), 0) << last_scrape_;
  EXPECT_EQ(sample(m, "kws_dial_attempts_total"), 3) << last_scrape_;
  EXPECT_EQ(sample(m, "kws_dial_failures_total{cause=\"refused\"}"), 3) << last_scrape_;
  EXPECT_EQ(sum_of(m, "kws_dial_failures_total{"), 3) << last_scrape_;
  EXPECT_EQ(sample(m, "kws_handshake_duration_seconds_count"), 0) << last_scrape_;
  EXPECT_EQ(sample(m, "kws_relay_frames_total{direction=\"up\"}"), 0) << last_scrape_;
}

TEST_F(ProxyMetrics, UnknownPathsGet404OtherMethods405AndHeadNoBody) {
  broker_addr_ = "127.0.0.1:" + std::to_string(free_port());
  ASSERT_NO_FATAL_FAILURE(start_proxy({}));
  EXPECT_EQ(http_request(metrics_port_, "GET", "/nothing").status, 404);
  EXPECT_EQ(http_request(metrics_port_, "GET", "/metrics/more").status, 404);
  EXPECT_EQ(http_request(metrics_port_, "GET", "/metrics?x=1").status, 200);
  auto post = http_request(metrics_port_, "POST", "/metrics");
  EXPECT_EQ(post.status, 405) << post.raw;
  EXPECT_EQ(post.headers["allow"], "GET, HEAD") << post.raw;
  EXPECT_EQ(http_request(metrics_port_, "DELETE", "/healthz").status, 405);
  auto head = http_request(metrics_port_, "HEAD", "/metrics");
  EXPECT_EQ(head.status, 200) << head.raw;
  EXPECT_TRUE(head.body.empty()) << head.raw;
  EXPECT_GT(std::stoul(head.headers["content-length"]), 0u) << head.raw;
}

TEST(ProxyMetricsFlag, ABadAddressStopsTheProxyWithExitCode2) {
  for (const auto* bad : {"9100", "localhost:9100", "127.0.0.1:99999", "127.0.0.1:x"}) {
    const auto r = run({KWS_PROXY_PATH, "--metrics-listen", bad}, {}, 10s);
    EXPECT_EQ(r.exit_code, std::optional<int>(2)) << bad << ": " << r.out;
    EXPECT_NE(r.out.find("--metrics-listen"), std::string::npos) << bad << ": " << r.out;
  }
}

}  // namespace
