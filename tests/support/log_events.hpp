// A server's JSON log (`--log-format json`) read as data: tests ask for an event by its fields (`event`,
// `end`, `side`, `target`, ...) instead of matching the wording of a text line.
#pragma once

#include "process.hpp"

#include <boost/json/object.hpp>

#include <chrono>
#include <optional>
#include <regex>
#include <string>
#include <vector>

namespace kws::test {

/// One condition on a log line's field. The field's value is compared as text: a string as it is, a number
/// or a boolean as JSON writes it. A missing field never matches.
struct field_condition {
  std::string key;
  std::string value;  ///< the whole value, or (with `contains`) a part of it; unused with `pattern`
  bool contains = false;
  std::optional<std::regex> pattern{};  ///< searched for in the value, when set
};

/// `key` is exactly `value`.
field_condition field(std::string key, std::string value);
/// `key`'s value contains `part` (plain text, not a regex).
field_condition field_containing(std::string key, std::string part);
/// `key`'s value contains a match of the ECMAScript regex `pattern`.
field_condition field_matching(std::string key, const std::string& pattern);

using event_filter = std::vector<field_condition>;

/// The JSON object lines of `output` (other lines are skipped) that meet every condition, in order.
std::vector<boost::json::object> events_in(std::string_view output, const event_filter& filter);

/// Every line `proc` has logged so far that meets the filter.
std::vector<boost::json::object> events(const child_process& proc, const event_filter& filter);

/// Waits until `proc` logs a line that meets the filter (one already logged counts); returns it, or nullopt
/// after `limit` or when the process's output ended without one.
std::optional<boost::json::object> wait_for_event(const child_process& proc, const event_filter& filter,
                                                  std::chrono::milliseconds limit = std::chrono::seconds(10));

/// Waits until `proc` has logged `n` lines that meet the filter; returns how many it saw.
std::size_t wait_for_events(const child_process& proc, const event_filter& filter, std::size_t n,
                            std::chrono::milliseconds limit = std::chrono::seconds(10));

/// A field's value as text (as field_condition compares it), or "" when the object has no such field.
std::string field_text(const boost::json::object& o, std::string_view key);

}  // namespace kws::test
