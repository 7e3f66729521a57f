// librdkafka in the test process: an idempotent producer of numbered messages whose pace a test can hold
// back, with the time of every produce call and delivery report kept, and a consumer group member that
// reads a topic to its end. Settings are librdkafka properties, applied in order (plugin.library.paths first,
// so that the plugin's own properties are known when they come).
#pragma once

#include <librdkafka/rdkafka.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace kws::test::fleet {

using settings = std::vector<std::pair<std::string, std::string>>;
using clock_type = std::chrono::steady_clock;

class producer {
 public:
  /// Messages 0 to n-1: key and value carry the number, partition = number % partitions.
  producer(const settings& s, std::string topic, int partitions, long n);
  ~producer();
  producer(const producer&) = delete;
  producer& operator=(const producer&) = delete;

  /// Lets run() produce messages below `upto` (from any thread).
  void allow(long upto);
  /// Waits (from another thread than run()'s) until at least `count` messages are delivered; false after
  /// `limit`, or once run() has ended without.
  bool wait_delivered(long count, std::chrono::milliseconds limit);
  /// Produces what allow() lets it, serving delivery reports, until every message has been reported (or a
  /// fatal error, or `limit`); on the calling thread.
  void run(std::chrono::milliseconds limit);

  long delivered() const { return delivered_.load(); }
  /// How many messages the partitions hold (high minus low watermark, summed), asked of the leaders; -1 when
  /// a query fails.
  long messages_in_log(const std::string& topic) const;
  /// Failed deliveries and fatal errors, the first few in words, and how many there were in all.
  std::vector<std::string> errors() const;
  long error_count() const { return error_count_.load(); }
  const std::vector<clock_type::time_point>& produced_at() const { return produced_at_; }
  const std::vector<clock_type::time_point>& delivered_at() const { return delivered_at_; }

 private:
  static void on_delivery(rd_kafka_t* rk, const rd_kafka_message_t* m, void* opaque);
  void record_error(std::string what);

  rd_kafka_t* rk_ = nullptr;
  rd_kafka_topic_t* topic_ = nullptr;
  const int partitions_;
  const long n_;
  std::atomic<long> allowed_{0};
  std::atomic<long> delivered_{0};
  std::atomic<long> reported_{0};
  std::atomic<long> error_count_{0};
  std::atomic<bool> ended_{false};
  std::vector<clock_type::time_point> produced_at_, delivered_at_;
  mutable std::mutex mu_;
  std::condition_variable progress_;
  std::vector<std::string> errors_;
};

/// What a consumer read: message numbers by partition, in the order they came.
struct consumed {
  std::map<int, std::vector<long>> by_partition;
  long total = 0;
  std::vector<std::string> errors;
  bool reached_end = false;
};

/// Joins `group`, reads `topic` from the beginning until every one of its partitions is at its end.
consumed consume_all(const settings& s, const std::string& topic, int partitions, const std::string& group,
                     std::chrono::milliseconds limit);

}  // namespace kws::test::fleet
