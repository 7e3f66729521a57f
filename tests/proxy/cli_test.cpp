// The command-line helpers every server in apps/ shares: durations and HOST:PORT flags.
#include "cli.hpp"
#include "monitoring.hpp"

#include <gtest/gtest.h>

namespace {

using namespace std::chrono_literals;

TEST(Duration, ReadsWholeNumbersWithAUnitOrMilliseconds) {
  EXPECT_EQ(kws::app::parse_duration("500ms"), 500ms);
  EXPECT_EQ(kws::app::parse_duration("2s"), 2s);
  EXPECT_EQ(kws::app::parse_duration("5m"), 5min);
  EXPECT_EQ(kws::app::parse_duration("24h"), 24h);
  EXPECT_EQ(kws::app::parse_duration("250"), 250ms) << "a bare number is milliseconds";
  EXPECT_EQ(kws::app::parse_duration("0"), 0ms);
  EXPECT_EQ(kws::app::parse_duration("30 s"), 30s);
}

TEST(Duration, RefusesOtherUnitsSignsFractionsAndOverflow) {
  for (std::string_view bad : {"", "ms", "5x", "-1s", "1.5s", "2S", "s2", "1d", " 1s", "1s ",
                               "9223372036854775807h", "99999999999999999999"}) {
    EXPECT_FALSE(kws::app::parse_duration(bad)) << "'" << bad << "'";
  }
}

TEST(Duration, FormatsInTheLargestUnitThatDividesAndReadsBack) {
  EXPECT_EQ(kws::app::format_duration(500ms), "500ms");
  EXPECT_EQ(kws::app::format_duration(1500ms), "1500ms");
  EXPECT_EQ(kws::app::format_duration(2s), "2s");
  EXPECT_EQ(kws::app::format_duration(90s), "90s");
  EXPECT_EQ(kws::app::format_duration(5min), "5m");
  EXPECT_EQ(kws::app::format_duration(24h), "24h");
  EXPECT_EQ(kws::app::format_duration(0ms), "0ms");
  for (std::chrono::milliseconds d : {1ms, 999ms, 61000ms, 10800000ms})
    EXPECT_EQ(kws::app::parse_duration(kws::app::format_duration(d)), d);
}

int parse(CLI::App& app, std::vector<std::string> args) {
  return kws::app::parse_command_line(app, std::move(args)).value_or(-1);
}

TEST(Duration, AFlagStoresMillisecondsWithinItsBounds) {
  CLI::App app;
  std::int64_t ms = 7;
  kws::app::add_duration(app, "--wait", ms, "how long", "never", 1ms, 24h);
  EXPECT_EQ(parse(app, {"--wait", "2s"}), -1);
  EXPECT_EQ(ms, 2000);
  for (const char* bad : {"0ms", "25h", "5x"}) {
    CLI::App again;
    kws::app::add_duration(again, "--wait", ms, "how long", "never", 1ms, 24h);
    testing::internal::CaptureStderr();
    testing::internal::CaptureStdout();
    EXPECT_EQ(parse(again, {"--wait", bad}), 2) << bad;
    const auto out = testing::internal::GetCapturedStdout() + testing::internal::GetCapturedStderr();
    EXPECT_NE(out.find("expected a duration such as 500ms, 2s or 5m (at least 1ms, at most 24h), got '" +
                       std::string(bad) + "'"),
              std::string::npos)
        << out;
  }
}

TEST(HostPortFlag, NeedsAPortAndAHostUnlessEveryInterfaceIsMeant) {
  auto hp = kws::app::parse_host_port("127.0.0.1:0");
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->port, 0);
  hp = kws::app::parse_host_port("[::1]:8787");
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->host, "::1");
  hp = kws::app::parse_host_port("kafka-{node_id}.gw.example:443");
  ASSERT_TRUE(hp) << "the host is the caller's to check: the gateway takes a template";
  EXPECT_EQ(hp->host, "kafka-{node_id}.gw.example");
  EXPECT_FALSE(kws::app::parse_host_port(":8787"));
  EXPECT_TRUE(kws::app::parse_host_port(":8787", true));
  for (std::string_view bad : {"nope", "h:", "h:65536", "::1:8787", "[::1]", "[::1]8787", "h:1:2"})
    EXPECT_FALSE(kws::app::parse_host_port(bad, true)) << "'" << bad << "'";
  EXPECT_EQ(kws::app::host_port_check()("h:1"), "");
  EXPECT_EQ(kws::app::host_port_check()("h"), "expected HOST:PORT, got 'h'");
}

TEST(HostPortFlag, MetricsListenTakesAddressesOnly) {
  EXPECT_TRUE(kws::app::parse_listen_address(":9100"));
  EXPECT_TRUE(kws::app::parse_listen_address("[::]:9100"));
  EXPECT_EQ(kws::app::parse_listen_address("127.0.0.1:9100")->port, 9100);
  for (const char* bad : {"9100", "localhost:9100", "127.0.0.1:99999", "127.0.0.1:x", "::1:9100"})
    EXPECT_FALSE(kws::app::parse_listen_address(bad)) << bad;
}

}  // namespace
