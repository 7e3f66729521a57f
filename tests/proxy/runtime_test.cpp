// The servers' shared runtime (apps/common), in-process.
#include "runtime.hpp"
#include "cli.hpp"
#include "events.hpp"
#include "process.hpp"
#include "test_env.hpp"

#include <gtest/gtest.h>
#include <boost/asio/post.hpp>

#include <new>

namespace {

TEST(Runtime, AHandlerThatThrowsDoesNotStopTheWorker) {
  kws::app::worker w;
  bool later_ran = false;
  boost::asio::post(w.context(), [] { throw std::bad_alloc(); });
  boost::asio::post(w.context(), [] { throw 42; });
  boost::asio::post(w.context(), [&] {
    later_ran = true;
    w.stop();
  });
  w.run();
  EXPECT_TRUE(later_ran);
}

TEST(Runtime, DurationsAreRoundedForTheLog) {
  using namespace std::chrono;
  EXPECT_EQ(kws::app::human_duration(microseconds(950)), "950us");
  EXPECT_EQ(kws::app::human_duration(microseconds(12'600)), "13ms");
  EXPECT_EQ(kws::app::human_duration(seconds(3)), "3000ms");
  EXPECT_EQ(kws::app::human_duration(microseconds(9'999'700)), "10s");
  EXPECT_EQ(kws::app::human_duration(milliseconds(19'980)), "20s") << "rounded, not truncated";
}

TEST(Runtime, JsonLogLinesEscapeEverythingAndParse) {
  // Quotes, backslashes, control characters, UTF-8, and bytes that are not UTF-8 (a peer's text may be
  // logged): every line must parse, and the message come back as written (U+FFFD for the bad bytes).
  const std::vector<std::pair<std::string, std::string>> cases{
      {"plain", "plain"},
      {"quote \" backslash \\ slash /", "quote \" backslash \\ slash /"},
      {"newline\nreturn\rtab\tnul" + std::string(1, '\0') +
           "bell\x07"
           "del\x7f",
       "newline\nreturn\rtab\tnul" + std::string(1, '\0') +
           "bell\x07"
           "del\x7f"},
      {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
      {"bad \xff\xc3 end \xed\xa0\x80 \xc0\xaf",
       "bad \xef\xbf\xbd\xef\xbf\xbd end \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd "
       "\xef\xbf\xbd\xef\xbf\xbd"},
  };
  kws::test::temp_dir dir("kws-json");
  std::string lines, expected;
  for (const auto& [message, back] : cases) {
    lines += kws::app::json_log_line("2026-01-01T00:00:00.000Z", "info", message);
    expected += back + '\x1e';
  }
  // A connection event: its fields come from the event itself, whatever the message says.
  kws::relay_report report;
  report.up_bytes = 3;
  report.up_frames = 1;
  report.duration = std::chrono::microseconds(950);
  report.end = kws::relay_end::protocol_error;
  report.side = kws::relay_side::client;
  report.cause = "a \"b\" c \xff";
  auto event = kws::app::relay_closed_event(12, report);
  event.fields = {{"client", "[::1]:5"}, {"broker", "ws://b:1/"}};
  const auto text = kws::app::event_text(event);
  EXPECT_EQ(text,
            "conn 12 closed client=[::1]:5 broker=ws://b:1/ up=3B/1f down=0B/0f duration=950us cause=a "
            "\"b\" c \xff");
  lines += kws::app::json_log_line("2026-01-01T00:00:00.000Z", "info", text, &event);
  expected += text.substr(0, text.size() - 1) + "\xef\xbf\xbd" + '\x1e';
  kws::test::write_file(dir / "lines", lines);
  const std::string script = R"(
import json, sys
out = []
for line in open(sys.argv[1], encoding="utf-8").read().split("\n")[:-1]:
    o = json.loads(line)
    out.append(o["msg"])
    if o["msg"].startswith("conn 12"):
        assert o["conn"] == 12 and o["event"] == "closed" and o["client"] == "[::1]:5", o
        assert o["broker"] == "ws://b:1/", o
        assert o["up_bytes"] == 3 and o["down_frames"] == 0 and o["duration_ms"] == 0.95, o
        assert o["end"] == "protocol_error" and o["side"] == "client", o
        assert o["cause"] == 'a "b" c \ufffd', o
    else:
        assert "conn" not in o and "cause" not in o, o
sys.stdout.buffer.write("".join(m + "\x1e" for m in out).encode("utf-8"))
)";
  const auto r = kws::test::run({"/usr/bin/python3", "-c", script, (dir / "lines").string()},
                                {.stderr_to = kws::test::spawn_options::stderr_target::captured},
                                std::chrono::seconds(20));
  ASSERT_EQ(r.exit_code, 0) << r.err << "\n" << lines;
  EXPECT_EQ(r.out, expected);
}

}  // namespace
