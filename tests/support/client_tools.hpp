// What tests of real Kafka clients share: running a client tool with its output in files, reading the
// output back, and reproducible keyed input.
#pragma once

#include "process.hpp"

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace kws::test {

using clock_type = std::chrono::steady_clock;

inline std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

inline long long ms_since(clock_type::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t).count();
}

// A client tool's stdin from a file, stdout to a file (byte-exact, readable while it runs), stderr apart.
inline spawn_options tool_io(const std::filesystem::path& in, const std::filesystem::path& out) {
  return {.stdin_file = in, .stdout_file = out, .stderr_to = spawn_options::stderr_target::captured};
}

// A text for a failed tool: its exit status and the tail of its stderr.
inline std::string describe(const std::optional<int>& rc, std::string err) {
  if (err.size() > 4000) err = "..." + err.substr(err.size() - 4000);
  return describe_exit(rc) + ", stderr:\n" + err;
}

// `n` lines "key:value" with varied lengths and characters (no ':' in keys, no newlines).
inline std::string keyed_lines(int n, const std::string& prefix) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    s += prefix + "key-" + std::to_string(i) + ":" + prefix + "value-" + std::to_string(i * 7919) + "-" +
         std::string(static_cast<std::size_t>(i % 97), static_cast<char>('A' + i % 26)) + " ~!@#$%^&*()=\n";
  }
  return s;
}

// Lines "P|rest" grouped by partition P, in the order they came.
inline std::map<int, std::vector<std::string>> by_partition(const std::string& output) {
  std::map<int, std::vector<std::string>> out;
  for (const auto& line : lines_of(output)) {
    const auto bar = line.find('|');
    out[std::stoi(line.substr(0, bar))].push_back(line.substr(bar + 1));
  }
  return out;
}

}  // namespace kws::test
