// kws::kafka::api_verdicts: the brokers, by URL, that a tracker found to be Kafka 0.8 (an ApiVersions request
// left unanswered), kept for the life of the process so that later connections to them start in the 0.8
// profile instead of waiting again. Shared by the trackers of every relay, so thread-safe; asked once per
// connection, not per frame.
#pragma once

#include <cstddef>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

namespace kws::kafka {

class api_verdicts {
 public:
  /// Keeps at most `max_brokers` URLs; past that, a verdict holds only for the connection that drew it.
  explicit api_verdicts(std::size_t max_brokers = 4096) : max_(max_brokers) {}

  /// True once `broker` was found to be Kafka 0.8.
  bool is_kafka_0_8(std::string_view broker) const;
  /// Notes that `broker` was found to be Kafka 0.8. True when it was not known as such before: the first
  /// verdict, the one worth a log line.
  bool remember_kafka_0_8(std::string_view broker);
  /// How many brokers are known as Kafka 0.8.
  std::size_t size() const;

 private:
  mutable std::mutex mu_;
  std::set<std::string, std::less<>> brokers_;
  std::size_t max_;
};

}  // namespace kws::kafka
