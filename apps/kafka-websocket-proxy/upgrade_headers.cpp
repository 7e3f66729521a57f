#include "upgrade_headers.hpp"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <stdexcept>
#include <string_view>

namespace kws::proxy {

std::string header_problem(const std::string& h) {
  const auto colon = h.find(':');
  if (colon == std::string::npos || colon == 0) return "expected 'Name: value' (the text is not shown)";
  const auto name = h.substr(0, colon);
  const auto is_token_char = [](unsigned char c) {
    return std::isalnum(c) ||
           std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
  };
  if (!std::all_of(name.begin(), name.end(), is_token_char))
    return "'" + name + "' is not a valid header name";
  if (h.find_first_of(std::string("\r\n\0", 3)) != std::string::npos)
    return "the value of header '" + name + "' holds a line break or NUL";
  return {};
}

std::pair<std::string, std::string> split_header(const std::string& h) {
  const auto colon = h.find(':');
  auto value = h.substr(colon + 1);
  value.erase(0, value.find_first_not_of(" \t"));
  return {h.substr(0, colon), std::move(value)};
}

header_list read_header_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read '" + path + "'");
  header_list out;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    if (auto problem = header_problem(line); !problem.empty())
      throw std::runtime_error(path + " line " + std::to_string(n) + ": " + problem);
    out.push_back(split_header(line));
  }
  if (in.bad()) throw std::runtime_error("cannot read '" + path + "'");
  return out;
}

header_list collect_headers(const header_list& fixed, const std::vector<std::string>& files) {
  header_list out = fixed;
  for (const auto& f : files) {
    auto more = read_header_file(f);
    out.insert(out.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
  }
  return out;
}

}  // namespace kws::proxy
