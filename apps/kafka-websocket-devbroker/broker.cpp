#include "broker.hpp"

#include <kws/kafka/api_versions.hpp>

#include <kws/frame.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

namespace kws::devbroker {

using kafka::api_key;
using kafka::error_code;

namespace {

// The versions this broker answers, as ApiVersions reports them: Kafka 0.10.0's Produce, Fetch and Metadata
// (plus ListOffsets v1, for offsets by time), every field of each implemented, so that clients with default
// settings use message format v1. kafka-python infers "0.10.0" from this list (it looks for Metadata v2 and
// newer to tell later releases); librdkafka takes the highest version both sides speak.
using kafka::api_version_range;
constexpr api_version_range supported[] = {
    {api_key::produce, 0, 2},
    {api_key::fetch, 0, 2},
    {api_key::list_offsets, 0, 1},
    {api_key::metadata, 0, 1},
    {api_key::api_versions, 0, kafka::max_api_versions_version},
};
// --kafka-0.8-only: the edge broker's set. ApiVersions is not listed: it gets no answer at all.
constexpr api_version_range kafka_08_supported[] = {
    {api_key::produce, 0, 0},
    {api_key::fetch, 0, 0},
    {api_key::list_offsets, 0, 0},
    {api_key::metadata, 0, 0},
};

template <std::size_t N>
const api_version_range* find_range(const api_version_range (&table)[N], api_key key) noexcept {
  for (const auto& r : table)
    if (r.key == key) return &r;
  return nullptr;
}

/// Starts a response frame: size placeholder and response header v0 (correlation id).
std::size_t begin_response(kafka::writer& w, std::int32_t correlation_id) {
  const std::size_t at = w.placeholder_int32();
  w.int32(correlation_id);
  return at;
}

void end_response(kafka::writer& w, std::size_t size_at) {
  w.patch_int32(size_at, static_cast<std::int32_t>(w.size() - size_at - frame_header_bytes));
}

outcome respond(std::vector<unsigned char> bytes) {
  outcome o;
  o.what = outcome::action::respond;
  o.response = std::move(bytes);
  return o;
}

outcome close_with(std::string reason) {
  outcome o;
  o.what = outcome::action::close;
  o.reason = std::move(reason);
  return o;
}

std::int16_t code(error_code e) noexcept {
  return static_cast<std::int16_t>(e);
}

}  // namespace

bool is_valid_topic_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > 249 || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

// ---- partition_log ----

namespace {

// The producer's offset field is arbitrary; the broker assigns offsets.
std::vector<unsigned char> stamped(bytes_view entry, std::int64_t offset) {
  std::vector<unsigned char> stored(entry.begin(), entry.end());
  for (int i = 0; i < 8; ++i)
    stored[static_cast<std::size_t>(i)] =
        static_cast<unsigned char>(static_cast<std::uint64_t>(offset) >> (56 - 8 * i));
  return stored;
}

}  // namespace

bool partition_log::write_at(std::int64_t offset, bytes_view entry) {
  if (offset >= high_watermark()) {
    append(entry);
    return false;
  }
  if (offset < start_offset_) return false;
  auto& slot = entries_[static_cast<std::size_t>(offset - start_offset_)];
  bytes_ -= slot.size();
  slot = stamped(entry, offset);
  bytes_ += slot.size();
  return true;
}

std::int64_t partition_log::append(bytes_view entry) {
  const std::int64_t offset = high_watermark();
  std::vector<unsigned char> stored = stamped(entry, offset);
  bytes_ += stored.size();
  entries_.push_back(std::move(stored));
  while (bytes_ > retention_bytes_ && entries_.size() > 1) {
    bytes_ -= entries_.front().size();
    entries_.pop_front();
    ++start_offset_;
  }
  return offset;
}

std::size_t partition_log::readable_bytes(std::int64_t offset, std::size_t max_bytes) const noexcept {
  if (offset < start_offset_ || offset >= high_watermark()) return 0;
  std::size_t total = 0;
  for (auto i = static_cast<std::size_t>(offset - start_offset_); i < entries_.size(); ++i) {
    const std::size_t n = entries_[i].size();
    if (total > 0 && total + n > max_bytes) break;
    total += n;
    if (total >= max_bytes) break;
  }
  return total;
}

void partition_log::read(std::int64_t offset, std::size_t max_bytes, std::vector<unsigned char>& out,
                         std::int8_t max_magic) const {
  const std::size_t want = readable_bytes(offset, max_bytes);
  kafka::writer w(out);
  std::vector<message_view> one;
  std::string why;
  std::size_t done = 0;
  for (auto i = static_cast<std::size_t>(offset - start_offset_); done < want; ++i) {
    const auto& entry = entries_[i];
    done += entry.size();
    if (static_cast<std::int8_t>(entry[log_overhead + 4]) <= max_magic) {
      out.insert(out.end(), entry.begin(), entry.end());
      continue;
    }
    // Every stored entry parsed when it was produced, so this parse succeeds; magic 1 down to 0 is the only
    // conversion there is.
    if (parse_message_set(entry, one, why) == error_code::none && one.size() == 1)
      encode_as_magic_0(w, one[0]);
  }
}

std::pair<std::int64_t, std::int64_t> partition_log::offset_for_timestamp(
    std::int64_t timestamp) const noexcept {
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    // entry = offset size crc magic attributes [timestamp]: the fields sit at fixed positions.
    kafka::reader r(bytes_view(entries_[i]).subspan(log_overhead + 4));
    const std::int8_t magic = r.int8();
    (void)r.int8();  // attributes
    const std::int64_t t = magic >= 1 ? r.int64() : -1;
    if (r.ok() && t >= timestamp) return {start_offset_ + static_cast<std::int64_t>(i), t};
  }
  return {-1, -1};
}

// ---- broker ----

broker::broker(broker_config config) : config_(std::move(config)) {
  if (config_.nodes < 1) throw std::invalid_argument("nodes must be at least 1");
  for (const auto& [name, partitions] : config_.topics) {
    if (!is_valid_topic_name(name)) throw std::invalid_argument(fmt::format("invalid topic name '{}'", name));
    if (partitions < 1)
      throw std::invalid_argument(fmt::format("topic '{}' needs at least 1 partition", name));
    create(name, partitions);
  }
}

void broker::set_advertised(listener_kind kind, std::vector<endpoint> nodes) {
  advertised_[static_cast<int>(kind)] = std::move(nodes);
}

const std::vector<partition_log>* broker::topic(const std::string& name) const {
  auto it = topics_.find(name);
  return it == topics_.end() ? nullptr : &it->second.partitions;
}

broker::topic_state* broker::create(std::string_view name, std::int32_t partitions) {
  topic_state t;
  t.partitions.assign(static_cast<std::size_t>(partitions), partition_log(config_.retention_bytes));
  return &topics_.insert_or_assign(std::string(name), std::move(t)).first->second;
}

broker::topic_state* broker::find_or_create(std::string_view name, error_code& err) {
  err = error_code::none;
  if (auto it = topics_.find(name); it != topics_.end()) return &it->second;
  if (!is_valid_topic_name(name)) {
    err = error_code::invalid_topic_exception;
    return nullptr;
  }
  if (!config_.auto_create) {
    err = error_code::unknown_topic_or_partition;
    return nullptr;
  }
  return create(name, config_.default_partitions);
}

error_code broker::check_partition(const topic_state* t, std::int32_t partition, std::int32_t node_id) const {
  if (!t || partition < 0 || static_cast<std::size_t>(partition) >= t->partitions.size())
    return error_code::unknown_topic_or_partition;
  if (partition % config_.nodes != node_id) return error_code::not_leader_for_partition;
  return error_code::none;
}

outcome broker::handle(bytes_view frame, std::int32_t node_id, listener_kind kind) {
  if (frame.size() < frame_header_bytes) return close_with("frame shorter than its size header");
  const bytes_view body = frame.subspan(frame_header_bytes);
  boost::system::error_code ec;
  const kafka::request_header h = kafka::peek_request_header(body, ec);
  if (ec) return close_with(fmt::format("malformed request header: {}", ec.message()));

  const auto key = static_cast<std::int16_t>(h.key);
  if (h.key == api_key::api_versions) {
    if (config_.kafka_08_only) {
      outcome o;
      o.what = outcome::action::no_response;
      o.reason = fmt::format("ignored ApiVersions v{} (correlation id {}) as a Kafka 0.8 broker would",
                             h.version, h.correlation_id);
      return o;
    }
    return handle_api_versions(h, body, kind);
  }
  const api_version_range* range =
      config_.kafka_08_only ? find_range(kafka_08_supported, h.key) : find_range(supported, h.key);
  if (config_.edge_quirks && (!range || h.version < range->min_version || h.version > range->max_version)) {
    outcome o;
    o.what = outcome::action::no_response;
    o.reason = fmt::format("edge quirk: no reply to unsupported API key {} ({}) v{}, correlation id {}", key,
                           kafka::api_name(h.key), h.version, h.correlation_id);
    return o;
  }
  if (!range) {
    return close_with(fmt::format("unsupported API key {} ({}) v{}, correlation id {}", key,
                                  kafka::api_name(h.key), h.version, h.correlation_id));
  }
  // Kafka closes the connection for versions it does not speak, except for ApiVersions (answered above).
  if (h.version < range->min_version || h.version > range->max_version) {
    return close_with(fmt::format("unsupported version {} of {}, correlation id {}", h.version,
                                  kafka::api_name(h.key), h.correlation_id));
  }
  const bytes_view request_body = body.subspan(h.header_bytes);
  switch (h.key) {
    case api_key::produce:
      return handle_produce(h, request_body, node_id);
    case api_key::fetch:
      return handle_fetch(h, request_body, node_id);
    case api_key::list_offsets:
      return handle_list_offsets(h, request_body, node_id);
    default:
      return handle_metadata(h, request_body, kind);
  }
}

outcome broker::handle_api_versions(const kafka::request_header& h, bytes_view body, listener_kind kind) {
  // A version this broker cannot read gets the KIP-511 answer (a v0 body listing the ApiVersions range).
  if (h.version < 0 || h.version > kafka::max_api_versions_version || h.header_bytes == 0)
    return respond(kafka::encode_api_versions_unsupported(h.correlation_id));
  boost::system::error_code ec;
  kafka::parse_api_versions_request(h.version, body.subspan(h.header_bytes), ec);
  const auto err = ec ? error_code::invalid_request : error_code::none;
  if (!config_.sasl_on_tcp || kind != listener_kind::tcp)
    return respond(kafka::encode_api_versions_response(h.version, h.correlation_id, supported, code(err)));
  // The SASL APIs are answered by the server's gate in front of this broker (sasl.hpp), before and after
  // authentication.
  std::vector<api_version_range> with_sasl(std::begin(supported), std::end(supported));
  with_sasl.push_back({api_key::sasl_handshake, 0, 1});
  with_sasl.push_back({api_key::sasl_authenticate, 0, 2});
  return respond(kafka::encode_api_versions_response(h.version, h.correlation_id, with_sasl, code(err)));
}

// Produce Request (Version: 0-2) => acks timeout [topic [partition record_set]]
// Produce Response (Version: 0) => [topic [partition error_code base_offset]]
// Produce Response (Version: 1) => [topic [partition error_code base_offset]] throttle_time_ms
// Produce Response (Version: 2) => [topic [partition error_code base_offset log_append_time]]
//                                  throttle_time_ms
outcome broker::handle_produce(const kafka::request_header& h, bytes_view body, std::int32_t node_id) {
  struct partition_data {
    std::int32_t index;
    bytes_view records;
  };
  struct topic_data {
    std::string_view name;
    std::vector<partition_data> partitions;
  };
  kafka::reader r(body);
  const std::int16_t acks = r.int16();
  (void)r.int32();  // timeout: appends are immediate here
  std::vector<topic_data> topics(static_cast<std::size_t>(std::max(0, r.array_count(6))));
  for (auto& t : topics) {
    t.name = r.string();
    t.partitions.resize(static_cast<std::size_t>(std::max(0, r.array_count(8))));
    for (auto& p : t.partitions) {
      p.index = r.int32();
      p.records = r.bytes();
    }
  }
  r.expect_end();
  if (!r.ok()) return close_with(fmt::format("malformed produce request: {}", r.error().message()));

  std::vector<unsigned char> out;
  kafka::writer w(out);
  const std::size_t size_at = begin_response(w, h.correlation_id);
  w.array_count(static_cast<std::int32_t>(topics.size()));
  std::vector<message_view> messages;
  std::string why;
  std::vector<std::string> problems;
  bool appended = false;
  // --edge-quirks: the log ends are read now, the messages stored when the connection commits them.
  auto pending = config_.edge_quirks ? std::make_unique<pending_produce>() : nullptr;
  for (const auto& t : topics) {
    w.string(t.name);
    w.array_count(static_cast<std::int32_t>(t.partitions.size()));
    error_code topic_err = error_code::none;
    topic_state* ts = find_or_create(t.name, topic_err);
    for (const auto& p : t.partitions) {
      error_code err = topic_err;
      std::int64_t base_offset = -1;
      if (acks != 0 && acks != 1 && acks != -1) err = error_code::invalid_required_acks;
      if (err == error_code::none) err = check_partition(ts, p.index, node_id);
      if (err == error_code::none) {
        err = parse_message_set(p.records, messages, why);
        if (err != error_code::none) problems.push_back(fmt::format("{}-{}: {}", t.name, p.index, why));
      }
      if (err == error_code::none) {
        auto& log = ts->partitions[static_cast<std::size_t>(p.index)];
        base_offset = log.high_watermark();
        if (pending) {
          auto& part = pending->partitions.emplace_back(
              pending_produce::partition{std::string(t.name), p.index, base_offset, {}});
          for (const auto& m : messages) part.entries.emplace_back(m.entry.begin(), m.entry.end());
        } else {
          for (const auto& m : messages) log.append(m.entry);
          appended = appended || !messages.empty();
        }
      }
      w.int32(p.index);
      w.int16(code(err));
      w.int64(base_offset);
      // Topics here use CreateTime, for which Kafka answers -1.
      if (h.version >= 2) w.int64(-1);  // log_append_time
    }
  }
  if (h.version >= 1) w.int32(0);  // throttle_time_ms
  end_response(w, size_at);
  if (appended && on_append_) on_append_();
  outcome o;
  if (!problems.empty()) o.reason = fmt::format("rejected produce: {}", fmt::join(problems, "; "));
  if (pending) {
    pending->correlation_id = h.correlation_id;
    if (acks != 0) pending->response = std::move(out);
    o.what = outcome::action::defer;
    o.produce = std::move(pending);
  } else if (acks == 0) {
    o.what = outcome::action::no_response;  // acks=0: the client expects no response at all
  } else {
    o.what = outcome::action::respond;
    o.response = std::move(out);
  }
  return o;
}

// Fetch Request (Version: 0-2) => replica_id max_wait_ms min_bytes [topic [partition fetch_offset max_bytes]]
// Fetch Response (Version: 0) => [topic [partition error_code high_watermark records]]
// Fetch Response (Version: 1-2) => throttle_time_ms [topic [partition error_code high_watermark records]]
// v0 and v1 clients read message format v0 only; v2 is the first that may get magic 1 (KIP-32).
outcome broker::handle_fetch(const kafka::request_header& h, bytes_view body, std::int32_t node_id) {
  kafka::reader r(body);
  auto req = std::make_unique<fetch_request>();
  req->correlation_id = h.correlation_id;
  req->version = h.version;
  (void)r.int32();  // replica_id
  req->max_wait_ms = r.int32();
  req->min_bytes = r.int32();
  req->topics.resize(static_cast<std::size_t>(std::max(0, r.array_count(6))));
  for (auto& t : req->topics) {
    t.name = std::string(r.string());
    t.partitions.resize(static_cast<std::size_t>(std::max(0, r.array_count(16))));
    for (auto& p : t.partitions) {
      p.index = r.int32();
      p.offset = r.int64();
      p.max_bytes = r.int32();
    }
  }
  r.expect_end();
  if (!r.ok()) return close_with(fmt::format("malformed fetch request: {}", r.error().message()));
  if (config_.edge_quirks) {
    for (std::size_t i = 0; i < req->topics.size(); ++i) {
      for (std::size_t j = 0; j < i; ++j) {
        if (req->topics[i].name != req->topics[j].name) continue;
        outcome o;
        o.what = outcome::action::no_response;
        o.reason =
            fmt::format("edge quirk: no reply to Fetch v{} (correlation id {}) naming topic '{}' twice",
                        h.version, h.correlation_id, req->topics[i].name);
        return o;
      }
    }
  }

  if (req->max_wait_ms <= 0 || fetch_ready(*req, node_id)) return respond(fetch_response(*req, node_id));
  outcome o;
  o.what = outcome::action::wait_fetch;
  o.fetch = std::move(req);
  return o;
}

std::string broker::commit(const pending_produce& p) {
  std::vector<std::string> overwritten;
  bool appended = false;
  for (const auto& part : p.partitions) {
    auto it = topics_.find(part.topic);
    if (it == topics_.end()) continue;
    auto& log = it->second.partitions[static_cast<std::size_t>(part.index)];
    std::size_t replaced = 0;
    for (std::size_t i = 0; i < part.entries.size(); ++i)
      replaced += log.write_at(part.base_offset + static_cast<std::int64_t>(i), part.entries[i]) ? 1 : 0;
    appended = appended || replaced < part.entries.size();
    if (replaced > 0)
      overwritten.push_back(fmt::format("{} message(s) of {}-{} from offset {}", replaced, part.topic,
                                        part.index, part.base_offset));
  }
  if (appended && on_append_) on_append_();
  if (overwritten.empty()) return {};
  return fmt::format("edge quirk: produce (correlation id {}) overwrote {}", p.correlation_id,
                     fmt::join(overwritten, "; "));
}

bool broker::fetch_ready(const fetch_request& req, std::int32_t node_id) const {
  std::size_t total = 0;
  for (const auto& t : req.topics) {
    auto it = topics_.find(t.name);
    const topic_state* ts = it == topics_.end() ? nullptr : &it->second;
    for (const auto& p : t.partitions) {
      if (check_partition(ts, p.index, node_id) != error_code::none) return true;
      const auto& log = ts->partitions[static_cast<std::size_t>(p.index)];
      if (p.offset < log.log_start_offset() || p.offset > log.high_watermark()) return true;
      if (p.max_bytes < 0) return true;
      total += log.readable_bytes(p.offset, static_cast<std::size_t>(p.max_bytes));
    }
  }
  return total >= static_cast<std::size_t>(std::max(0, req.min_bytes));
}

std::vector<unsigned char> broker::fetch_response(const fetch_request& req, std::int32_t node_id) const {
  std::vector<unsigned char> out;
  kafka::writer w(out);
  const std::size_t size_at = begin_response(w, req.correlation_id);
  if (req.version >= 1) w.int32(0);  // throttle_time_ms
  const std::int8_t max_magic = req.version >= 2 ? 1 : 0;
  w.array_count(static_cast<std::int32_t>(req.topics.size()));
  for (const auto& t : req.topics) {
    auto it = topics_.find(t.name);
    const topic_state* ts = it == topics_.end() ? nullptr : &it->second;
    w.string(t.name);
    w.array_count(static_cast<std::int32_t>(t.partitions.size()));
    for (const auto& p : t.partitions) {
      w.int32(p.index);
      error_code err = check_partition(ts, p.index, node_id);
      if (err != error_code::none) {
        w.int16(code(err));
        w.int64(-1);
        w.int32(0);
        continue;
      }
      const auto& log = ts->partitions[static_cast<std::size_t>(p.index)];
      if (p.offset < log.log_start_offset() || p.offset > log.high_watermark())
        err = error_code::offset_out_of_range;
      if (p.max_bytes < 0) err = error_code::invalid_fetch_size;
      w.int16(code(err));
      w.int64(log.high_watermark());
      const std::size_t records_at = w.placeholder_int32();
      if (err == error_code::none) log.read(p.offset, static_cast<std::size_t>(p.max_bytes), out, max_magic);
      w.patch_int32(records_at, static_cast<std::int32_t>(out.size() - records_at - 4));
    }
  }
  end_response(w, size_at);
  return out;
}

// ListOffsets Request (Version: 0) => replica_id [topic [partition timestamp max_num_offsets]]
// ListOffsets Request (Version: 1) => replica_id [topic [partition timestamp]]
// ListOffsets Response (Version: 0) => [topic [partition error_code [old_style_offsets]]]
// ListOffsets Response (Version: 1) => [topic [partition error_code timestamp offset]]
outcome broker::handle_list_offsets(const kafka::request_header& h, bytes_view body, std::int32_t node_id) {
  struct partition_query {
    std::int32_t index;
    std::int64_t timestamp;
    std::int32_t max_num_offsets;
  };
  struct topic_query {
    std::string_view name;
    std::vector<partition_query> partitions;
  };
  const bool v0 = h.version == 0;
  kafka::reader r(body);
  (void)r.int32();  // replica_id
  std::vector<topic_query> topics(static_cast<std::size_t>(std::max(0, r.array_count(6))));
  for (auto& t : topics) {
    t.name = r.string();
    t.partitions.resize(static_cast<std::size_t>(std::max(0, r.array_count(v0 ? 16 : 12))));
    for (auto& p : t.partitions) {
      p.index = r.int32();
      p.timestamp = r.int64();
      p.max_num_offsets = v0 ? r.int32() : 1;
    }
  }
  r.expect_end();
  if (!r.ok()) return close_with(fmt::format("malformed list_offsets request: {}", r.error().message()));

  std::vector<unsigned char> out;
  kafka::writer w(out);
  const std::size_t size_at = begin_response(w, h.correlation_id);
  w.array_count(static_cast<std::int32_t>(topics.size()));
  for (const auto& t : topics) {
    auto it = topics_.find(t.name);
    const topic_state* ts = it == topics_.end() ? nullptr : &it->second;
    w.string(t.name);
    w.array_count(static_cast<std::int32_t>(t.partitions.size()));
    for (const auto& p : t.partitions) {
      w.int32(p.index);
      const error_code err = check_partition(ts, p.index, node_id);
      w.int16(code(err));
      if (err != error_code::none) {
        if (v0) {
          w.array_count(0);
        } else {
          w.int64(-1);  // timestamp
          w.int64(-1);  // offset
        }
        continue;
      }
      const auto& log = ts->partitions[static_cast<std::size_t>(p.index)];
      if (v0) {
        if (p.max_num_offsets <= 0) {
          w.array_count(0);
          continue;
        }
        // -1 latest, -2 earliest. A 0.8 broker answers other times per log segment; with one segment that is
        // the earliest offset.
        w.array_count(1);
        w.int64(p.timestamp == -1 ? log.high_watermark() : log.log_start_offset());
        continue;
      }
      // v1: -1 latest and -2 earliest come with timestamp -1; any other time finds the first message at or
      // after it, by the timestamps of magic 1 messages (KIP-79).
      if (p.timestamp == -1 || p.timestamp == -2) {
        w.int64(-1);
        w.int64(p.timestamp == -1 ? log.high_watermark() : log.log_start_offset());
      } else {
        const auto [offset, timestamp] = log.offset_for_timestamp(p.timestamp);
        w.int64(timestamp);
        w.int64(offset);
      }
    }
  }
  end_response(w, size_at);
  return respond(std::move(out));
}

// Metadata Request (Version: 0) => [topic]            (an empty list means all topics)
// Metadata Request (Version: 1) => [topic]            (null means all topics, an empty list none)
// Metadata Response (Version: 0) => [node_id host port] [error_code name [error_code partition leader
//                                   [replicas] [isr]]]
// Metadata Response (Version: 1) => [node_id host port rack] controller_id [error_code name is_internal
//                                   [error_code partition leader [replicas] [isr]]]
outcome broker::handle_metadata(const kafka::request_header& h, bytes_view body, listener_kind kind) {
  kafka::reader r(body);
  const std::int32_t n = r.array_count(2);
  std::vector<std::string_view> names;
  for (std::int32_t i = 0; i < n && r.ok(); ++i) names.push_back(r.string());
  r.expect_end();
  if (!r.ok()) return close_with(fmt::format("malformed metadata request: {}", r.error().message()));
  // v0 has no null list (a -1 count is taken as empty, as before); v1 tells "all" (null) from "none" (empty).
  const bool all_topics = h.version == 0 ? names.empty() : n < 0;

  std::vector<unsigned char> out;
  kafka::writer w(out);
  const std::size_t size_at = begin_response(w, h.correlation_id);
  const auto& brokers = advertised_[static_cast<int>(kind)];
  w.array_count(static_cast<std::int32_t>(brokers.size()));
  for (std::size_t i = 0; i < brokers.size(); ++i) {
    w.int32(static_cast<std::int32_t>(i));
    w.string(brokers[i].host);
    w.int32(brokers[i].port);
    if (h.version >= 1) w.nullable_string(std::nullopt);  // rack
  }
  if (h.version >= 1) w.int32(0);  // controller_id: node 0 stands in for the controller

  auto write_topic = [&](std::string_view name, const topic_state* ts, error_code err) {
    w.int16(code(err));
    w.string(name);
    if (h.version >= 1) w.int8(0);  // is_internal: no internal topics here
    if (!ts) return w.array_count(0);
    w.array_count(static_cast<std::int32_t>(ts->partitions.size()));
    for (std::size_t p = 0; p < ts->partitions.size(); ++p) {
      const auto leader = static_cast<std::int32_t>(p) % config_.nodes;
      w.int16(0);
      w.int32(static_cast<std::int32_t>(p));
      w.int32(leader);
      w.array_count(1);  // replicas
      w.int32(leader);
      w.array_count(1);  // isr
      w.int32(leader);
    }
  };
  if (all_topics) {
    w.array_count(static_cast<std::int32_t>(topics_.size()));
    for (const auto& [name, ts] : topics_) write_topic(name, &ts, error_code::none);
  } else {
    w.array_count(static_cast<std::int32_t>(names.size()));
    for (auto name : names) {
      error_code err = error_code::none;
      const topic_state* ts = find_or_create(name, err);
      write_topic(name, ts, err);
    }
  }
  end_response(w, size_at);
  return respond(std::move(out));
}

}  // namespace kws::devbroker
