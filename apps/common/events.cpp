#include "events.hpp"

#include "cli.hpp"
#include "runtime.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace kws::app {
namespace {

thread_local const connection_event* logging_event = nullptr;

// A duration in milliseconds with microsecond precision: 950us -> 0.95, 13ms -> 13.
std::string milliseconds_text(std::chrono::steady_clock::duration d) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  if (us % 1000 == 0) return std::to_string(us / 1000);
  auto s = fmt::format("{}.{:03}", us / 1000, us % 1000);
  while (s.back() == '0') s.pop_back();
  return s;
}

}  // namespace

connection_event relay_closed_event(std::uint64_t conn, const kws::relay_report& r) {
  connection_event e;
  e.conn = conn;
  e.event = "closed";
  e.counts = connection_event::traffic{r.up_bytes, r.up_frames, r.down_bytes, r.down_frames};
  e.duration = r.duration;
  e.end = kws::to_string(r.end);
  if (r.side != kws::relay_side::none) e.side = kws::to_string(r.side);
  e.cause = r.cause;
  return e;
}

std::string event_text(const connection_event& e) {
  auto out = fmt::format("conn {}", e.conn);
  if (!e.event.empty()) fmt::format_to(std::back_inserter(out), " {}", e.event);
  for (const auto& [key, value] : e.fields) fmt::format_to(std::back_inserter(out), " {}={}", key, value);
  if (e.counts) {
    const auto& c = *e.counts;
    fmt::format_to(std::back_inserter(out), " up={}B/{}f down={}B/{}f", c.up_bytes, c.up_frames, c.down_bytes,
                   c.down_frames);
  }
  if (e.duration) out += " duration=" + human_duration(*e.duration);
  if (!e.cause.empty()) {
    if (e.counts || e.duration) {
      out += " cause=" + e.cause;
    } else {
      out += (e.event.empty() && e.fields.empty() ? " " : ": ") + e.cause;
    }
  }
  return out;
}

void append_event_json(std::string& out, const connection_event& e) {
  fmt::format_to(std::back_inserter(out), ",\"conn\":{}", e.conn);
  if (!e.event.empty()) append_json_member(out, "event", e.event);
  for (const auto& [key, value] : e.fields) append_json_member(out, key, value);
  if (e.counts) {
    const auto& c = *e.counts;
    fmt::format_to(std::back_inserter(out),
                   R"(,"up_bytes":{},"up_frames":{},"down_bytes":{},"down_frames":{})", c.up_bytes,
                   c.up_frames, c.down_bytes, c.down_frames);
  }
  if (e.duration) out += ",\"duration_ms\":" + milliseconds_text(*e.duration);
  if (!e.end.empty()) append_json_member(out, "end", e.end);
  if (!e.side.empty()) append_json_member(out, "side", e.side);
  if (!e.cause.empty() && !e.event.empty()) append_json_member(out, "cause", e.cause);
}

void log_event(spdlog::level::level_enum level, const connection_event& e) {
  auto* logger = spdlog::default_logger_raw();
  if (!logger->should_log(level)) return;
  logging_event = &e;
  try {
    logger->log(level, "{}", event_text(e));
  } catch (...) {
    logging_event = nullptr;
    throw;
  }
  logging_event = nullptr;
}

kws::frame_hook::log_function connection_log(std::uint64_t conn) {
  return [conn](kws::log_level level, std::string_view text) {
    // kws::log_level's values are spdlog's, trace to error.
    log_event(static_cast<spdlog::level::level_enum>(level), {.conn = conn, .cause = std::string(text)});
  };
}

const connection_event* current_event() noexcept {
  return logging_event;
}

}  // namespace kws::app
