// Connection events as data: what happened to one connection and everything known about it then. An app
// fills a connection_event and logs it with log_event; the text format writes it as one line
// (`conn 7 closed client=a:1 broker=ws://b/ up=3B/1f down=3B/1f duration=13ms cause=client closed`), the
// JSON format as an object whose fields are the event's (cli.hpp, json_log_line). Nothing reads log text
// back.
#pragma once

#include <kws/relay.hpp>

#include <spdlog/common.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kws::app {

struct connection_event {
  /// The connection's number in this process.
  std::uint64_t conn = 0;
  /// "open", "closed", "refused", "accepted"; empty for a note about the connection (a library line, say).
  std::string_view event{};
  /// Endpoints and the like, in the order they are written: client=, peer=, broker=, via=, target=,
  /// upstream=.
  std::vector<std::pair<std::string_view, std::string>> fields{};
  struct traffic {
    std::uint64_t up_bytes = 0;  ///< requests read from the client
    std::uint64_t up_frames = 0;
    std::uint64_t down_bytes = 0;  ///< responses written to the client
    std::uint64_t down_frames = 0;
  };
  std::optional<traffic> counts{};
  std::optional<std::chrono::steady_clock::duration> duration{};
  /// What ended it, as a stable name: a kws::relay_end's ("closed", "protocol_error", ...) or the app's own
  /// ("dial_failed", "cluster_unreachable", ...). Empty when the event is not an end.
  std::string_view end{};
  /// The side the end came from: "client", "broker"; empty when neither.
  std::string_view side{};
  /// Why, in words (for an end), or the note's text.
  std::string cause{};
};

/// The closed event of a relay that ended: its counts, duration, end, side and cause.
connection_event relay_closed_event(std::uint64_t conn, const kws::relay_report& r);

/// The event as the text format writes it: `conn N [event] k=v ...`, then the counts and duration when
/// known, then the cause (` cause=...` after counts, `: ...` otherwise).
std::string event_text(const connection_event& e);

/// Appends the event's JSON members to an object being written (each as `,"key":value`): conn, event, each
/// field, up_bytes/up_frames/down_bytes/down_frames, duration_ms, end, side, cause.
void append_event_json(std::string& out, const connection_event& e);

/// Logs the event at `level` (nothing when the logger would drop that level).
void log_event(spdlog::level::level_enum level, const connection_event& e);

/// Where a relay's (and its hook's) notes about connection `conn` go: log_event with the note as cause.
kws::frame_hook::log_function connection_log(std::uint64_t conn);

/// The event being logged on this thread right now (log_event sets it while the logger formats), or null.
const connection_event* current_event() noexcept;

}  // namespace kws::app
