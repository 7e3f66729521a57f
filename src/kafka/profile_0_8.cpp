#include "profile_0_8.hpp"

#include <kws/frame.hpp>
#include <kws/kafka/wire.hpp>

#include <algorithm>
#include <deque>
#include <map>
#include <utility>

namespace kws::kafka::profile_0_8 {
namespace {

constexpr auto unsupported = static_cast<std::int16_t>(error_code::unsupported_version);

// Fetch v0 request: replica_id max_wait_ms min_bytes [topic [partition fetch_offset max_bytes]].
constexpr std::size_t fetch_partition_bytes = 4 + 8 + 4;

std::size_t begin_frame(writer& w, std::int32_t correlation_id) {
  const std::size_t at = w.placeholder_int32();
  w.int32(correlation_id);
  return at;
}

void end_frame(writer& w, std::size_t at) {
  w.patch_int32(at, static_cast<std::int32_t>(w.size() - at - frame_header_bytes));
}

// The [topic [partition]] of an OffsetCommit v0-v2 or OffsetFetch v0-v1 request, past its group fields.
std::vector<fetch_layout::topic> read_topic_partitions(reader& r, std::size_t partition_bytes,
                                                       bool with_metadata) {
  std::vector<fetch_layout::topic> topics(static_cast<std::size_t>(std::max(0, r.array_count(6))));
  for (auto& t : topics) {
    t.name = std::string(r.string());
    const std::int32_t n = r.array_count(partition_bytes);
    for (std::int32_t i = 0; i < n && r.ok(); ++i) {
      t.partitions.push_back(r.int32());
      r.skip(partition_bytes - 4 - (with_metadata ? 2 : 0));
      if (with_metadata) (void)r.nullable_string();
    }
  }
  if (!r.ok()) topics.clear();
  return topics;
}

}  // namespace

bool serves(api_key key, std::int16_t version) noexcept {
  switch (key) {
    case api_key::produce:
    case api_key::fetch:
    case api_key::list_offsets:
    case api_key::metadata:
      return version == 0;
    default:
      return false;
  }
}

bool is_group_api(api_key key) noexcept {
  const auto k = static_cast<std::int16_t>(key);
  return k >= static_cast<std::int16_t>(api_key::offset_commit) &&
         k <= static_cast<std::int16_t>(api_key::list_groups);
}

bool is_version_probe(api_key key, std::int16_t version) noexcept {
  return version == 0 &&
         (key == api_key::list_groups || key == api_key::find_coordinator || key == api_key::offset_fetch);
}

bool merge_fetch(bytes_view frame, const request_header& h, std::vector<unsigned char>& merged,
                 fetch_layout& layout) {
  if (h.key != api_key::fetch || h.version != 0 || h.header_bytes == 0) return false;
  const bytes_view body = frame.subspan(frame_header_bytes);
  reader r(body.subspan(h.header_bytes));
  const bytes_view fixed = r.raw(12);  // replica_id max_wait_ms min_bytes
  fetch_layout client;
  // Per topic, in order of first mention: the raw partition entries of every mention.
  std::vector<std::pair<std::string_view, std::vector<unsigned char>>> topics;
  bool repeated = false;
  const std::int32_t n = r.array_count(6);
  for (std::int32_t i = 0; i < n && r.ok(); ++i) {
    const auto name = r.string();
    const std::int32_t count = r.array_count(fetch_partition_bytes);
    auto& mention = client.topics.emplace_back(fetch_layout::topic{std::string(name), {}});
    auto it = std::find_if(topics.begin(), topics.end(), [&](const auto& t) { return t.first == name; });
    if (it == topics.end()) {
      topics.emplace_back(name, std::vector<unsigned char>());
      it = topics.end() - 1;
    } else {
      repeated = true;
    }
    for (std::int32_t j = 0; j < count && r.ok(); ++j) {
      const bytes_view entry = r.raw(fetch_partition_bytes);
      if (!r.ok()) break;
      mention.partitions.push_back(static_cast<std::int32_t>(load_be32(entry.data())));
      it->second.insert(it->second.end(), entry.begin(), entry.end());
    }
  }
  r.expect_end();
  if (!r.ok() || !repeated) return false;

  merged.clear();
  writer w(merged);
  const std::size_t at = w.placeholder_int32();
  w.raw(body.first(h.header_bytes));
  w.raw(fixed);
  w.array_count(static_cast<std::int32_t>(topics.size()));
  for (const auto& [name, partitions] : topics) {
    w.string(name);
    w.array_count(static_cast<std::int32_t>(partitions.size() / fetch_partition_bytes));
    w.raw(partitions);
  }
  end_frame(w, at);
  layout = std::move(client);
  return true;
}

// Fetch v0 response: [topic [partition error_code high_watermark records]].
bool restore_fetch(bytes_view frame, const fetch_layout& layout, std::vector<unsigned char>& out,
                   std::string& why) {
  reader r(frame.size() >= frame_header_bytes ? frame.subspan(frame_header_bytes) : bytes_view{});
  const std::int32_t correlation_id = r.int32();
  std::map<std::pair<std::string_view, std::int32_t>, std::deque<bytes_view>> parts;
  const std::int32_t topics = r.array_count(6);
  for (std::int32_t i = 0; i < topics && r.ok(); ++i) {
    const auto name = r.string();
    const std::int32_t n = r.array_count(4 + 2 + 8 + 4);
    for (std::int32_t j = 0; j < n && r.ok(); ++j) {
      const std::size_t start = r.position();
      const std::int32_t partition = r.int32();
      r.skip(2 + 8);
      (void)r.bytes();
      if (!r.ok()) break;
      parts[{name, partition}].push_back(frame.subspan(frame_header_bytes + start, r.position() - start));
    }
  }
  r.expect_end();
  if (!r.ok()) {
    why = r.error().message();
    return false;
  }
  out.clear();
  writer w(out);
  const std::size_t at = begin_frame(w, correlation_id);
  w.array_count(static_cast<std::int32_t>(layout.topics.size()));
  for (const auto& t : layout.topics) {
    w.string(t.name);
    w.array_count(static_cast<std::int32_t>(t.partitions.size()));
    for (const auto p : t.partitions) {
      auto it = parts.find({t.name, p});
      if (it == parts.end() || it->second.empty()) {
        why = "no partition " + t.name + "-" + std::to_string(p) + " in it";
        return false;
      }
      w.raw(it->second.front());
      it->second.pop_front();
    }
  }
  end_frame(w, at);
  return true;
}

std::vector<unsigned char> unsupported_answer(const request_header& h, bytes_view body) {
  std::vector<unsigned char> out;
  writer w(out);
  const std::size_t at = begin_frame(w, h.correlation_id);
  reader r(h.header_bytes > 0 ? body.subspan(h.header_bytes) : bytes_view{});
  const std::int16_t v = h.version;
  auto done = [&] {
    end_frame(w, at);
    return std::move(out);
  };
  auto throttle_from = [&](std::int16_t first) {
    if (v >= first) w.int32(0);
  };
  switch (h.key) {
    case api_key::offset_commit:
      if (v > 2) break;
      (void)r.string();  // group_id
      if (v >= 1) {
        (void)r.int32();   // generation_id
        (void)r.string();  // member_id
      }
      if (v >= 2) (void)r.int64();  // retention_time_ms
      {
        const auto topics = read_topic_partitions(r, v == 1 ? 4 + 8 + 8 + 2 : 4 + 8 + 2, true);
        w.array_count(static_cast<std::int32_t>(topics.size()));
        for (const auto& t : topics) {
          w.string(t.name);
          w.array_count(static_cast<std::int32_t>(t.partitions.size()));
          for (const auto p : t.partitions) {
            w.int32(p);
            w.int16(unsupported);
          }
        }
      }
      return done();
    case api_key::offset_fetch:
      if (v > 1) break;
      (void)r.string();  // group_id
      {
        const auto topics = read_topic_partitions(r, 4, false);
        w.array_count(static_cast<std::int32_t>(topics.size()));
        for (const auto& t : topics) {
          w.string(t.name);
          w.array_count(static_cast<std::int32_t>(t.partitions.size()));
          for (const auto p : t.partitions) {
            w.int32(p);
            w.int64(-1);   // offset
            w.string("");  // metadata
            w.int16(unsupported);
          }
        }
      }
      return done();
    case api_key::find_coordinator:
      if (v > 2) break;
      throttle_from(1);
      w.int16(unsupported);
      if (v >= 1) w.nullable_string("this broker has no consumer groups");
      w.int32(-1);   // node_id
      w.string("");  // host
      w.int32(-1);   // port
      return done();
    case api_key::join_group:
      if (v > 5) break;
      throttle_from(2);
      w.int16(unsupported);
      w.int32(-1);   // generation_id
      w.string("");  // protocol_name
      w.string("");  // leader
      w.string("");  // member_id
      w.array_count(0);
      return done();
    case api_key::heartbeat:
    case api_key::leave_group:
      if (v > 3) break;
      throttle_from(1);
      w.int16(unsupported);
      if (h.key == api_key::leave_group && v == 3) w.array_count(0);  // members
      return done();
    case api_key::sync_group:
      if (v > 3) break;
      throttle_from(1);
      w.int16(unsupported);
      w.bytes({});  // assignment
      return done();
    case api_key::describe_groups:
      if (v > 2) break;
      throttle_from(1);
      {
        std::vector<std::string_view> groups;
        const std::int32_t n = r.array_count(2);
        for (std::int32_t i = 0; i < n && r.ok(); ++i) groups.push_back(r.string());
        if (!r.ok()) groups.clear();
        w.array_count(static_cast<std::int32_t>(groups.size()));
        for (const auto g : groups) {
          w.int16(unsupported);
          w.string(g);
          w.string("");  // group_state
          w.string("");  // protocol_type
          w.string("");  // protocol_data
          w.array_count(0);
        }
      }
      return done();
    case api_key::sasl_handshake:
      if (v > 1) break;
      w.int16(unsupported);
      w.array_count(0);  // mechanisms
      return done();
    case api_key::list_groups:
      if (v > 2) break;
      throttle_from(1);
      w.int16(unsupported);
      w.array_count(0);
      return done();
    default:
      break;
  }
  out.resize(at + frame_header_bytes + 4);
  w.int16(unsupported);
  end_frame(w, at);
  return out;
}

}  // namespace kws::kafka::profile_0_8
