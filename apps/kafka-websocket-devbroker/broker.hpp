// The dev broker's state and request handling, with no I/O: topics of in-memory partition logs, and a
// function from one Kafka request frame to what the connection must do next. The server owns the sockets.
#pragma once

#include "message_set.hpp"

#include <kws/kafka/api.hpp>
#include <kws/kafka/wire.hpp>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace kws::devbroker {

struct broker_config {
  /// Topics that exist at start: name and partition count.
  std::vector<std::pair<std::string, std::int32_t>> topics{{"test-topic", 1}};
  std::int32_t default_partitions = 1;
  bool auto_create = true;
  /// Per partition; the oldest messages are dropped beyond it (the newest one always stays).
  std::size_t retention_bytes = 64u * 1024u * 1024u;
  /// Brokers this process presents; partition p is led by node p % nodes.
  std::int32_t nodes = 1;
  /// Behave like the edge broker: no ApiVersions answer, only Produce/Fetch/ListOffsets/Metadata v0.
  /// Otherwise the broker speaks Kafka 0.10.0's versions of those four APIs, plus ApiVersions v0-v3.
  bool kafka_08_only = false;
  /// With kafka_08_only, the edge broker's faults too: no reply to a request outside its set of APIs and
  /// versions, nor to a Fetch that names a topic twice; a Produce reads the log end when it comes in and
  /// appends there later (broker::commit), so that two on one connection can get the same base offset and
  /// the later one overwrites the earlier.
  bool edge_quirks = false;
  /// SASL on the TCP listeners (the server's gate handles it): ApiVersions on them also lists SaslHandshake
  /// v0-v1 and SaslAuthenticate v0-v2.
  bool sasl_on_tcp = false;
};

struct endpoint {
  std::string host;
  std::int32_t port = 0;
};

/// Which listener a request came in on; Metadata advertises the brokers of that listener, as Kafka does.
enum class listener_kind { ws, tcp };

/// One partition's messages, each stored as a whole message-set entry with its offset filled in.
class partition_log {
 public:
  explicit partition_log(std::size_t retention_bytes) : retention_bytes_(retention_bytes) {}

  /// Appends a message entry, rewriting its offset; returns that offset.
  std::int64_t append(bytes_view entry);
  /// Stores a message entry at `offset`: replaces the one there (returns true), or appends when `offset` is
  /// at or past the end. An offset already dropped by retention stores nothing.
  bool write_at(std::int64_t offset, bytes_view entry);
  std::int64_t log_start_offset() const noexcept { return start_offset_; }
  std::int64_t high_watermark() const noexcept {
    return start_offset_ + static_cast<std::int64_t>(entries_.size());
  }
  std::size_t bytes() const noexcept { return bytes_; }
  /// Bytes a fetch from `offset` with `max_bytes` would return: whole entries up to max_bytes, but at least
  /// one entry when there is one, so a message larger than max_bytes still gets through.
  std::size_t readable_bytes(std::int64_t offset, std::size_t max_bytes) const noexcept;
  /// Appends those bytes to `out`. Entries of a newer magic than `max_magic` are converted down to it, as a
  /// Kafka 0.10 broker does for Fetch v0/v1, so `out` may grow by less than readable_bytes().
  void read(std::int64_t offset, std::size_t max_bytes, std::vector<unsigned char>& out,
            std::int8_t max_magic = 1) const;

  /// The first message whose timestamp is at least `timestamp` (ListOffsets v1 by time): its offset and
  /// timestamp, or -1 and -1 when there is none. Magic 0 messages have no timestamp (-1).
  std::pair<std::int64_t, std::int64_t> offset_for_timestamp(std::int64_t timestamp) const noexcept;

 private:
  std::size_t retention_bytes_;
  std::deque<std::vector<unsigned char>> entries_;
  std::int64_t start_offset_ = 0;
  std::size_t bytes_ = 0;
};

/// A decoded Fetch request (v0-v2 share one layout), kept while a long poll waits.
struct fetch_request {
  struct partition {
    std::int32_t index = 0;
    std::int64_t offset = 0;
    std::int32_t max_bytes = 0;
  };
  struct topic {
    std::string name;
    std::vector<partition> partitions;
  };
  std::int32_t correlation_id = 0;
  std::int16_t version = 0;
  std::int32_t max_wait_ms = 0;
  std::int32_t min_bytes = 0;
  std::vector<topic> topics;
};

/// --edge-quirks: a Produce whose base offsets were read when it came in; broker::commit stores its messages
/// there.
struct pending_produce {
  struct partition {
    std::string topic;
    std::int32_t index = 0;
    std::int64_t base_offset = 0;
    std::vector<std::vector<unsigned char>> entries;
  };
  std::int32_t correlation_id = 0;
  std::vector<partition> partitions;
  std::vector<unsigned char> response;  ///< empty with acks=0
};

/// What the connection does after a request.
struct outcome {
  enum class action {
    respond,      ///< write `response` (a whole frame, size header included)
    no_response,  ///< read the next request (Produce with acks=0, ignored ApiVersions)
    wait_fetch,   ///< long poll: answer `fetch` when data arrives or after its max_wait_ms
    close,        ///< log `reason` and close the connection
    defer,        ///< --edge-quirks: commit `produce` later, then write its response; read on meanwhile
  };
  action what = action::respond;
  std::vector<unsigned char> response;
  std::unique_ptr<fetch_request> fetch;
  std::unique_ptr<pending_produce> produce;
  std::string reason;  ///< for close, and a note for no_response
};

class broker {
 public:
  explicit broker(broker_config config);

  /// Brokers advertised in Metadata per listener kind, index = node id. Set once the ports are bound.
  void set_advertised(listener_kind kind, std::vector<endpoint> nodes);

  /// Handles one request. `frame` is the whole Kafka frame as received (size header included, already
  /// checked against the frame limit); `node_id` is the broker the connection reached.
  outcome handle(bytes_view frame, std::int32_t node_id, listener_kind kind);

  /// True when a waiting fetch should be answered now: min_bytes reached, or a partition has an error.
  bool fetch_ready(const fetch_request& req, std::int32_t node_id) const;
  /// The Fetch response frame (in the request's version) for `req` as things stand.
  std::vector<unsigned char> fetch_response(const fetch_request& req, std::int32_t node_id) const;

  /// Stores a deferred Produce's messages at the offsets it read; returns what it overwrote, in words, or "".
  std::string commit(const pending_produce& p);

  /// Called after every append, so that waiting fetches can look again.
  void on_append(std::function<void()> callback) { on_append_ = std::move(callback); }

  const broker_config& config() const noexcept { return config_; }
  /// nullptr when the topic does not exist.
  const std::vector<partition_log>* topic(const std::string& name) const;

 private:
  struct topic_state {
    std::vector<partition_log> partitions;
  };

  outcome handle_api_versions(const kafka::request_header& h, bytes_view body, listener_kind kind);
  outcome handle_produce(const kafka::request_header& h, bytes_view body, std::int32_t node_id);
  outcome handle_fetch(const kafka::request_header& h, bytes_view body, std::int32_t node_id);
  outcome handle_list_offsets(const kafka::request_header& h, bytes_view body, std::int32_t node_id);
  outcome handle_metadata(const kafka::request_header& h, bytes_view body, listener_kind kind);

  /// Finds a topic, creating it when auto-creation allows. Sets `err` when it does not exist (or the name is
  /// not a legal topic name).
  topic_state* find_or_create(std::string_view name, kafka::error_code& err);
  topic_state* create(std::string_view name, std::int32_t partitions);
  /// Error of a partition for a request reaching `node_id`: unknown, not led by that node, or none.
  kafka::error_code check_partition(const topic_state* t, std::int32_t partition, std::int32_t node_id) const;

  broker_config config_;
  std::map<std::string, topic_state, std::less<>> topics_;
  std::vector<endpoint> advertised_[2];
  std::function<void()> on_append_;
};

/// True for names Kafka accepts: 1 to 249 characters of [a-zA-Z0-9._-], not "." or "..".
bool is_valid_topic_name(std::string_view name) noexcept;

}  // namespace kws::devbroker
