#include "cli.hpp"

#include "events.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <iostream>
#include <limits>
#include <string_view>
#include <thread>

namespace kws::app {

namespace {

struct duration_unit {
  std::string_view name;
  std::int64_t ms;
};
// Largest first: format_duration takes the first that divides.
constexpr duration_unit duration_units[] = {{"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};

}  // namespace

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
  std::int64_t value = 0;
  const char* const end = text.data() + text.size();
  const auto [unit_at, err] = std::from_chars(text.data(), end, value);
  if (err != std::errc{} || unit_at == text.data() || value < 0) return std::nullopt;
  auto unit = std::string_view(unit_at, static_cast<std::size_t>(end - unit_at));
  while (unit.starts_with(' ')) unit.remove_prefix(1);
  std::int64_t scale = unit.empty() ? 1 : 0;
  for (const auto& u : duration_units) {
    if (unit == u.name) scale = u.ms;
  }
  if (scale == 0 || value > std::numeric_limits<std::int64_t>::max() / scale) return std::nullopt;
  return std::chrono::milliseconds(value * scale);
}

std::string format_duration(std::chrono::milliseconds d) {
  for (const auto& u : duration_units) {
    if (d.count() != 0 && d.count() % u.ms == 0)
      return std::to_string(d.count() / u.ms) + std::string(u.name);
  }
  return std::to_string(d.count()) + "ms";
}

CLI::Option* add_duration(CLI::App& app, const std::string& name, std::int64_t& milliseconds,
                          const std::string& description, const std::string& default_text,
                          std::chrono::milliseconds min, std::chrono::milliseconds max) {
  std::string bounds;
  if (min > std::chrono::milliseconds::zero()) bounds += "at least " + format_duration(min);
  if (max != std::chrono::milliseconds::max())
    bounds += (bounds.empty() ? "" : ", ") + std::string("at most ") + format_duration(max);
  if (!bounds.empty()) bounds = " (" + bounds + ")";
  // The value becomes the number of milliseconds before CLI11 stores it.
  const auto to_ms = [min, max, bounds](std::string& value) -> std::string {
    const auto d = parse_duration(value);
    if (!d || *d < min || *d > max)
      return "expected a duration such as 500ms, 2s or 5m" + bounds + ", got '" + value + "'";
    value = std::to_string(d->count());
    return {};
  };
  return app.add_option(name, milliseconds, description)
      ->transform(CLI::Validator(to_ms, "DURATION [ms, s, m, h]"))
      ->default_str(default_text);
}

std::optional<kws::host_port> parse_host_port(std::string_view text, bool allow_empty_host) {
  auto hp = kws::split_host_port(text);
  if (!hp || !hp->has_port || (hp->host.empty() && !allow_empty_host)) return std::nullopt;
  return hp;
}

std::function<std::string(const std::string&)> host_port_check(bool allow_empty_host) {
  return [allow_empty_host](const std::string& s) {
    return parse_host_port(s, allow_empty_host) ? std::string{} : "expected HOST:PORT, got '" + s + "'";
  };
}

void add_server_flags(CLI::App& app, server_flags& f) {
  f.threads = std::max(1u, std::thread::hardware_concurrency());
  add_duration(
      app, "--ping-interval", f.ping_ms,
      "WebSocket ping after this long without traffic; no answer within twice it ends the connection "
      "(0: off)",
      "30s");
  add_duration(app, "--drain-timeout", f.drain_ms,
               "on SIGINT/SIGTERM, bound on the whole shutdown: responses already requested, then closing "
               "handshakes; what is still open then is closed at once",
               "8s");
  app.add_option("--max-frame-bytes", f.max_frame_bytes,
                 "largest Kafka frame accepted either way (e.g. 100MiB)")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  app.add_option(
         "--max-buffer-bytes", f.max_buffer_bytes,
         "all frames being received from TCP peers at once, in bytes (e.g. 512MiB); a peer whose next "
         "frame does not fit is not read until others are done")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  app.add_option("--threads", f.threads, "worker threads (default: number of cores)")
      ->check(CLI::Range(1u, 256u));
  app.add_option("--max-connections", f.max_connections, "client connections at once; more are refused")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1000000}))
      ->capture_default_str();
  add_duration(
      app, "--tcp-keepalive", f.keepalive_ms,
      "TCP keep-alive probes on client connections after this long without traffic (then every third "
      "of it; three unanswered end the connection; 0: off)",
      "30s");
  add_duration(app, "--tcp-user-timeout", f.user_timeout_ms,
               "end a client connection whose sent data stays unacknowledged this long (0: the system's)",
               "60s");
  add_log_level(app, f.log_level);
  add_log_format(app, f.log_format);
  app.final_callback([&f] {
    if (f.max_buffer_bytes < f.max_frame_bytes + 4)
      throw CLI::ValidationError("--max-buffer-bytes", "must hold at least one frame of --max-frame-bytes");
  });
}

// spdlog's own names, which the log prints.
const std::vector<std::string> log_level_names{"trace", "debug",    "info", "warning",
                                               "error", "critical", "off"};

CLI::Option* add_log_level(CLI::App& app, std::string& level) {
  return app
      .add_option("--log-level", level,
                  "lowest level logged: trace, debug, info, warning, error, critical or off (warn: warning)")
      ->check([](const std::string& v) -> std::string {
        if (v == "warn" ||
            std::find(log_level_names.begin(), log_level_names.end(), v) != log_level_names.end())
          return {};
        return "expected trace, debug, info, warning, error, critical or off, got '" + v + "'";
      })
      ->capture_default_str();
}

CLI::Option* add_log_format(CLI::App& app, std::string& format) {
  return app
      .add_option("--log-format", format,
                  "text, or json: one JSON object per line (ts, level, msg, and a connection line's fields)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
}

std::optional<int> parse_command_line(CLI::App& app, std::vector<std::string> args,
                                      const std::function<void()>& validate) {
  std::reverse(args.begin(), args.end());  // CLI11 takes a reversed vector
  try {
    app.parse(args);
    if (validate) validate();
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return 0;
  } catch (const CLI::CallForVersion& e) {
    std::cout << e.what() << '\n';
    return 0;
  } catch (const CLI::ParseError& e) {
    std::cerr << app.get_name() << ": " << e.what() << "\nRun '" << app.get_name() << " --help' for usage.\n";
    return 2;
  }
  return std::nullopt;
}

namespace {

// The length of the well-formed UTF-8 sequence of two to four bytes at s[i] (no overlong forms, surrogates or
// values above U+10FFFF), or 0 when there is none there.
std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  std::size_t n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
  bool ok = n != 0 && i + n <= s.size();
  for (std::size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80;
  if (ok && n >= 3) {
    const auto c1 = static_cast<unsigned char>(s[i + 1]);
    if (c == 0xe0 && c1 < 0xa0) ok = false;
    if (c == 0xed && c1 >= 0xa0) ok = false;
    if (c == 0xf0 && c1 < 0x90) ok = false;
    if (c == 0xf4 && c1 >= 0x90) ok = false;
  }
  return ok ? n : 0;
}

constexpr char hex_digits[] = "0123456789abcdef";

void append_hex_escape(std::string& out, unsigned char c) {
  out += "\\x";
  out += hex_digits[c >> 4];
  out += hex_digits[c & 0xf];
}

// Appends `s` as the inside of a JSON string: quotes, backslashes and control characters escaped, and bytes
// that are not UTF-8 replaced with U+FFFD (a log line may carry what a peer sent).
void append_json_chars(std::string& out, std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (c == '"')
        out += "\\\"";
      else if (c == '\\')
        out += "\\\\";
      else if (c == '\n')
        out += "\\n";
      else if (c == '\r')
        out += "\\r";
      else if (c == '\t')
        out += "\\t";
      else if (c < 0x20 || c == 0x7f)
        out += fmt::format("\\u{:04x}", c);
      else
        out += static_cast<char>(c);
      ++i;
      continue;
    }
    // A well-formed sequence is copied.
    const auto n = utf8_sequence_length(s, i);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
      continue;
    }
    out.append(s.substr(i, n));
    i += n;
  }
}

// The text format's pattern, with the message through text_log_message when it holds a byte that needs it.
class text_formatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const std::string_view payload(msg.payload.data(), msg.payload.size());
    const bool plain = std::all_of(payload.begin(), payload.end(), [](char ch) {
      const auto c = static_cast<unsigned char>(ch);
      return c >= 0x20 && c < 0x7f;
    });
    if (plain) return pattern_.format(msg, dest);
    const auto escaped = text_log_message(payload);
    auto copy = msg;
    copy.payload = spdlog::string_view_t(escaped.data(), escaped.size());
    pattern_.format(copy, dest);
    // The colour range (the level) is set on the message the sink passed, which it reads afterwards.
    msg.color_range_start = copy.color_range_start;
    msg.color_range_end = copy.color_range_end;
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<text_formatter>(); }

 private:
  spdlog::pattern_formatter pattern_{"%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v"};
};

class json_formatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch()).count() % 1000;
    const auto ts =
        fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03}Z", fmt::gmtime(spdlog::log_clock::to_time_t(msg.time)), ms);
    const auto level = spdlog::level::to_string_view(msg.level);
    const auto line =
        json_log_line(ts, std::string_view(level.data(), level.size()),
                      std::string_view(msg.payload.data(), msg.payload.size()), current_event());
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<json_formatter>(); }
};

}  // namespace

kws::frame_hook::log_function log_to_spdlog() {
  // kws::log_level's values are spdlog's, trace to error.
  return [](kws::log_level level, std::string_view text) {
    spdlog::log(static_cast<spdlog::level::level_enum>(level), "{}", text);
  };
}

std::string printable(std::string_view value, std::size_t max) {
  std::string out;
  std::size_t i = 0;
  for (; i < value.size(); ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    const std::size_t width = c == '\\' ? 2 : c >= 0x20 && c < 0x7f ? 1 : 4;
    if (out.size() + width > max) break;
    if (c == '\\') {
      out += "\\\\";
    } else if (width == 1) {
      out += static_cast<char>(c);
    } else {
      append_hex_escape(out, c);
    }
  }
  if (i < value.size()) out += fmt::format("...({} bytes)", value.size());
  return out;
}

std::string text_log_message(std::string_view message) {
  std::string out;
  out.reserve(message.size());
  for (std::size_t i = 0; i < message.size();) {
    const auto c = static_cast<unsigned char>(message[i]);
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) {
        append_hex_escape(out, c);
      } else {
        out += static_cast<char>(c);
      }
      ++i;
      continue;
    }
    const auto n = utf8_sequence_length(message, i);
    // U+0080 to U+009F (C1 controls) are 0xc2 0x80 to 0xc2 0x9f.
    const bool c1 = n == 2 && c == 0xc2 && static_cast<unsigned char>(message[i + 1]) < 0xa0;
    if (n != 0 && !c1) {
      out.append(message.substr(i, n));
      i += n;
      continue;
    }
    const auto escaped = std::max<std::size_t>(n, 1);
    for (std::size_t k = 0; k < escaped; ++k)
      append_hex_escape(out, static_cast<unsigned char>(message[i + k]));
    i += escaped;
  }
  return out;
}

void append_json_member(std::string& out, std::string_view key, std::string_view value) {
  out += ",\"";
  append_json_chars(out, key);
  out += "\":\"";
  append_json_chars(out, value);
  out += '"';
}

std::string json_log_line(std::string_view ts, std::string_view level, std::string_view message,
                          const connection_event* event) {
  std::string out = "{\"ts\":\"";
  append_json_chars(out, ts);
  out += '"';
  append_json_member(out, "level", level);
  append_json_member(out, "msg", message);
  if (event) append_event_json(out, *event);
  out += "}\n";
  return out;
}

void setup_logging(const std::string& name, const std::string& level, const std::string& format) {
  auto logger = spdlog::stderr_color_mt(name);
  if (format == "json") {
    logger->set_formatter(std::make_unique<json_formatter>());
  } else {
    logger->set_formatter(std::make_unique<text_formatter>());
  }
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

std::string plain_message(const std::exception& e) {
  std::string what = e.what();
  if (const auto* se = dynamic_cast<const boost::system::system_error*>(&e)) {
    const auto at = what.rfind(std::string(" [") + se->code().category().name() + ":");
    if (at != std::string::npos) what.erase(at);
  }
  return what;
}

int cannot_start(const std::exception& e) {
  auto logger = spdlog::default_logger();
  // Said whatever --log-level is: the process is about to exit for this reason.
  if (logger->level() > spdlog::level::critical) logger->set_level(spdlog::level::critical);
  logger->critical("cannot start: {}", plain_message(e));
  return exit_cannot_start;
}

}  // namespace kws::app
