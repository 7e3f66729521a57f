// Command-line and logging conventions shared by the servers in apps/: durations with units, HOST:PORT, one
// set of log level names (those the log prints), the log line formats (text, or JSON for log shippers), and
// the exit codes: 0 after a signal, 2 for a bad flag or value, 1 when the server cannot start.
#pragma once

#include <kws/frame_hook.hpp>
#include <kws/host_port.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kws::app {

/// A duration as the flags take it: a whole number with ms, s, m or h (`500ms`, `2s`, `5m`, `1h`; blanks
/// between the number and the unit allowed); a bare number is milliseconds. nullopt for anything else, a
/// negative number, or more than fits in milliseconds.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

/// `d` as parse_duration reads it, in the largest unit that divides it: 1500ms, 2s, 5m, 24h.
std::string format_duration(std::chrono::milliseconds d);

/// A duration flag (see parse_duration), stored in milliseconds, within [min, max]. A bad value gets
/// "expected a duration such as 500ms, 2s or 5m[ (bounds)], got '...'".
CLI::Option* add_duration(CLI::App& app, const std::string& name, std::int64_t& milliseconds,
                          const std::string& description, const std::string& default_text,
                          std::chrono::milliseconds min = std::chrono::milliseconds::zero(),
                          std::chrono::milliseconds max = std::chrono::milliseconds::max());

/// HOST:PORT or [V6]:PORT as the listen and advertise flags take it (kws::split_host_port): the port is
/// required, 0 included (a listener then gets any free one); an empty host only when `allow_empty_host`
/// (every interface). The host is not checked further: callers take a name, an address or a template.
std::optional<kws::host_port> parse_host_port(std::string_view text, bool allow_empty_host = false);

/// A CLI11 check for parse_host_port: "expected HOST:PORT, got '...'".
std::function<std::string(const std::string&)> host_port_check(bool allow_empty_host = false);

/// The flags every server in apps/ has, with their defaults.
struct server_flags {
  std::int64_t ping_ms = 30000;
  std::int64_t drain_ms = 8000;  ///< fits Docker's 10 s stop grace
  std::uint64_t max_frame_bytes = 100u * 1024u * 1024u;
  unsigned threads = 1;  ///< set to the number of cores by add_server_flags
  std::string log_level = "info";
  std::string log_format = "text";
  std::size_t max_connections = 10000;
  std::uint64_t max_buffer_bytes = 512u * 1024u * 1024u;
  std::int64_t keepalive_ms = 30000;
  std::int64_t user_timeout_ms = 60000;
};
/// --ping-interval, --drain-timeout, --max-frame-bytes, --max-buffer-bytes, --threads, --log-level,
/// --log-format, --max-connections, --tcp-keepalive and --tcp-user-timeout. Parse with parse_command_line,
/// which checks that a frame fits in the buffer budget.
void add_server_flags(CLI::App& app, server_flags& flags);

/// The level names the log prints, lowest first; --log-level takes these (and `warn` for `warning`).
extern const std::vector<std::string> log_level_names;

/// --log-level with the names the log itself prints.
CLI::Option* add_log_level(CLI::App& app, std::string& level);
/// --log-format text|json.
CLI::Option* add_log_format(CLI::App& app, std::string& format);

/// Parses `args` (without the program name, in order). --help and --version print and give exit code 0; a bad
/// flag or value (also one `validate` throws CLI::ValidationError for) prints one line and a usage hint and
/// gives 2. std::nullopt: go on.
std::optional<int> parse_command_line(CLI::App& app, std::vector<std::string> args,
                                      const std::function<void()>& validate = {});

/// The default logger: stderr, flushed on every line. `format` "text": `2026-11-25T16:00:00.000 info message`
/// (local time); "json": one object per line, see json_log_formatter.
void setup_logging(const std::string& name, const std::string& level, const std::string& format = "text");

/// The library's log lines (kws::frame_hook::log_function) into the default logger, at their own level.
kws::frame_hook::log_function log_to_spdlog();

/// A value a peer supplied (a request path, a header), made safe for a log line or an error body: at most
/// `max` characters of printable ASCII, every other byte (controls, DEL, anything not ASCII) as `\xNN` and a
/// backslash as `\\`, escapes kept whole; a value that does not fit is cut there and `...(N bytes)` added,
/// N being the value's whole length.
std::string printable(std::string_view value, std::size_t max = 200);

/// A log message as the text format writes it: control bytes (C0, DEL, and C1 code points) and bytes that
/// are not well-formed UTF-8 as `\xNN`, everything else as it is, so that a line is one line and writes no
/// terminal controls.
std::string text_log_message(std::string_view message);

/// The exit code of a server that cannot start.
constexpr int exit_cannot_start = 1;
/// The exception's message for people: a boost::system::system_error loses its "[category:value at
/// file:line]" suffix.
std::string plain_message(const std::exception& e);
/// Logs `cannot start: <plain_message>` as one line (whatever the log level) and returns exit_cannot_start.
int cannot_start(const std::exception& e);

struct connection_event;

/// Appends `,"key":"value"` to a JSON object being written, both strings escaped (bytes that are not UTF-8
/// as U+FFFD).
void append_json_member(std::string& out, std::string_view key, std::string_view value);

/// One JSON object per log line: `ts` (UTC, ms), `level`, `msg` (the text line's message, whole), and for a
/// connection event (events.hpp) its fields, from the event itself.
std::string json_log_line(std::string_view ts, std::string_view level, std::string_view message,
                          const connection_event* event = nullptr);

}  // namespace kws::app
