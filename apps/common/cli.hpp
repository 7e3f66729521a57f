// Command-line and logging conventions shared by the servers in apps/: durations with units, one set of log
// level names, one log line format.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace kws::app {

/// A duration flag: a number with ms, s, m or h (a bare number is milliseconds), stored in milliseconds.
CLI::Option* add_duration(CLI::App& app, const std::string& name, std::int64_t& milliseconds,
                          const std::string& description, const std::string& default_text);

/// The flags every server in apps/ has, with their defaults.
struct server_flags {
  std::int64_t ping_ms = 30000;
  std::int64_t drain_ms = 10000;
  std::uint64_t max_frame_bytes = 100u * 1024u * 1024u;
  unsigned threads = 1;  ///< set to the number of cores by add_server_flags
  std::string log_level = "info";
  std::size_t max_connections = 10000;
  std::uint64_t max_buffer_bytes = 512u * 1024u * 1024u;
  std::int64_t keepalive_ms = 30000;
  std::int64_t user_timeout_ms = 60000;
};
/// --ping-interval, --drain-timeout, --max-frame-bytes, --max-buffer-bytes, --threads, --log-level,
/// --max-connections, --tcp-keepalive and --tcp-user-timeout. Parse with parse_command_line, which checks
/// that a frame fits in the buffer budget.
void add_server_flags(CLI::App& app, server_flags& flags);

/// --log-level with the names the log itself prints.
CLI::Option* add_log_level(CLI::App& app, std::string& level);

/// Parses `args` (without the program name, in order). --help and --version print and give exit code 0; a bad
/// flag or value (also one `validate` throws CLI::ValidationError for) prints one line and a usage hint and
/// gives 2. std::nullopt: go on.
std::optional<int> parse_command_line(CLI::App& app, std::vector<std::string> args,
                                      const std::function<void()>& validate = {});

/// The default logger: stderr, `2026-11-25T16:00:00.000 info message`, flushed on every line.
void setup_logging(const std::string& name, const std::string& level);

}  // namespace kws::app
