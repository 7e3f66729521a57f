#include "cli.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <thread>

namespace kws::app {

CLI::Option* add_duration(CLI::App& app, const std::string& name, std::int64_t& milliseconds,
                          const std::string& description, const std::string& default_text) {
  static const std::map<std::string, std::int64_t> units{
      {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
  return app.add_option(name, milliseconds, description)
      ->transform(CLI::AsNumberWithUnit(units, CLI::AsNumberWithUnit::UNIT_OPTIONAL, "DURATION"))
      ->default_str(default_text);
}

void add_server_flags(CLI::App& app, server_flags& f) {
  f.threads = std::max(1u, std::thread::hardware_concurrency());
  add_duration(
      app, "--ping-interval", f.ping_ms,
      "WebSocket ping after this long without traffic; no answer within twice it ends the connection "
      "(0: off)",
      "30s");
  add_duration(app, "--drain-timeout", f.drain_ms,
               "on SIGINT/SIGTERM, how long open connections may wait for responses", "10s");
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
  app.final_callback([&f] {
    if (f.max_buffer_bytes < f.max_frame_bytes + 4)
      throw CLI::ValidationError("--max-buffer-bytes", "must hold at least one frame of --max-frame-bytes");
  });
}

CLI::Option* add_log_level(CLI::App& app, std::string& level) {
  return app.add_option("--log-level", level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
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

void setup_logging(const std::string& name, const std::string& level) {
  auto logger = spdlog::stderr_color_mt(name);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

}  // namespace kws::app
