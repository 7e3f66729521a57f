#include "log_events.hpp"

// Boost.JSON's sources, compiled here once (header-only use; Debian ships no libboost_json for 1.81 by
// default).
#include <boost/json/src.hpp>

namespace kws::test {

field_condition field(std::string key, std::string value) {
  return {std::move(key), std::move(value)};
}

field_condition field_containing(std::string key, std::string part) {
  return {std::move(key), std::move(part), true};
}

field_condition field_matching(std::string key, const std::string& pattern) {
  return {std::move(key), {}, false, std::regex(pattern)};
}

std::string field_text(const boost::json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (!v) return {};
  if (const auto* s = v->if_string()) return std::string(s->data(), s->size());
  return boost::json::serialize(*v);
}

namespace {

bool meets(const boost::json::object& o, const event_filter& filter) {
  for (const auto& c : filter) {
    if (!o.contains(c.key)) return false;
    const auto text = field_text(o, c.key);
    const bool ok = c.pattern    ? std::regex_search(text, *c.pattern)
                    : c.contains ? text.find(c.value) != std::string::npos
                                 : text == c.value;
    if (!ok) return false;
  }
  return true;
}

/// Walks the whole lines of `output` from `from`, calling `take` with each JSON object line that meets the
/// filter until it returns false; returns where the first line not yet looked at starts.
template <typename Take>
std::size_t scan(std::string_view output, std::size_t from, const event_filter& filter, Take&& take) {
  while (from < output.size()) {
    const auto nl = output.find('\n', from);
    if (nl == std::string_view::npos) break;
    const auto line = output.substr(from, nl - from);
    from = nl + 1;
    if (line.empty() || line.front() != '{') continue;
    boost::system::error_code ec;
    auto value = boost::json::parse(line, ec);
    if (ec || !value.is_object() || !meets(value.as_object(), filter)) continue;
    if (!take(std::move(value.as_object()))) break;
  }
  return from;
}

}  // namespace

std::vector<boost::json::object> events_in(std::string_view output, const event_filter& filter) {
  std::vector<boost::json::object> out;
  scan(output, 0, filter, [&](boost::json::object o) {
    out.push_back(std::move(o));
    return true;
  });
  return out;
}

std::vector<boost::json::object> events(const child_process& proc, const event_filter& filter) {
  return events_in(proc.output(), filter);
}

std::optional<boost::json::object> wait_for_event(const child_process& proc, const event_filter& filter,
                                                  std::chrono::milliseconds limit) {
  std::optional<boost::json::object> found;
  std::size_t next = 0;  // each line is parsed once, however often the output grows
  proc.wait_for_output(
      [&](std::string_view output) {
        next = scan(output, next, filter, [&](boost::json::object o) {
          found = std::move(o);
          return false;
        });
        return found.has_value();
      },
      limit);
  return found;
}

std::size_t wait_for_events(const child_process& proc, const event_filter& filter, std::size_t n,
                            std::chrono::milliseconds limit) {
  std::size_t seen = 0;
  std::size_t next = 0;
  proc.wait_for_output(
      [&](std::string_view output) {
        next = scan(output, next, filter, [&](boost::json::object) { return ++seen < n; });
        return seen >= n;
      },
      limit);
  return seen;
}

}  // namespace kws::test
