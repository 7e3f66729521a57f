// Builders for the Kafka requests the dev broker speaks (v0 unless told otherwise) and parsers for their
// responses, shared by the dev broker's tests. They use the library's wire layer, so a test that round-trips
// through the broker checks both ends.
#pragma once

#include "message_set.hpp"

#include <kws/frame.hpp>
#include <kws/kafka/api.hpp>
#include <kws/kafka/wire.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kws::devbroker::test {

using bytes = std::vector<unsigned char>;
using kafka::api_key;

inline bytes to_bytes(std::string_view s) {
  return bytes(s.begin(), s.end());
}
inline std::string to_string(kafka::bytes_view b) {
  return std::string(b.begin(), b.end());
}

/// A whole frame: size, request header v1 (v2 when `flexible`), then what `body` writes.
template <class Body>
bytes request(api_key key, std::int16_t version, std::int32_t correlation_id, Body&& body,
              bool flexible = false) {
  bytes out;
  kafka::writer w(out);
  const auto size_at = w.placeholder_int32();
  w.int16(static_cast<std::int16_t>(key));
  w.int16(version);
  w.int32(correlation_id);
  w.nullable_string("kws-test");
  if (flexible) w.empty_tagged_fields();
  body(w);
  w.patch_int32(size_at, static_cast<std::int32_t>(out.size() - 4));
  return out;
}

struct kv {
  std::optional<std::string> key;
  std::optional<std::string> value;
};

inline bytes message_set(const std::vector<kv>& messages, std::int8_t magic = 0,
                         std::int64_t timestamp = 1700000000000) {
  bytes out;
  kafka::writer w(out);
  for (const auto& m : messages) {
    const bytes k = m.key ? to_bytes(*m.key) : bytes{};
    const bytes v = m.value ? to_bytes(*m.value) : bytes{};
    encode_message(w, 0, m.key ? std::optional<kafka::bytes_view>(k) : std::nullopt,
                   m.value ? std::optional<kafka::bytes_view>(v) : std::nullopt, magic, timestamp);
  }
  return out;
}

// Produce v0-v2 share one request layout.
inline bytes produce_request(std::int32_t corr, std::int16_t acks, const std::string& topic,
                             std::int32_t partition, const bytes& set, std::int16_t version = 0) {
  return request(api_key::produce, version, corr, [&](kafka::writer& w) {
    w.int16(acks);
    w.int32(1000);
    w.array_count(1);
    w.string(topic);
    w.array_count(1);
    w.int32(partition);
    w.bytes(set);
  });
}

// Fetch v0-v2 share one request layout.
inline bytes fetch_req(std::int32_t corr, std::int32_t max_wait_ms, std::int32_t min_bytes,
                       const std::string& topic, std::int32_t partition, std::int64_t offset,
                       std::int32_t max_bytes = 1 << 20, std::int16_t version = 0) {
  return request(api_key::fetch, version, corr, [&](kafka::writer& w) {
    w.int32(-1);
    w.int32(max_wait_ms);
    w.int32(min_bytes);
    w.array_count(1);
    w.string(topic);
    w.array_count(1);
    w.int32(partition);
    w.int64(offset);
    w.int32(max_bytes);
  });
}

// v1 drops max_num_offsets (v0 asks for 1).
inline bytes list_offsets_request(std::int32_t corr, const std::string& topic, std::int32_t partition,
                                  std::int64_t timestamp, std::int16_t version = 0) {
  return request(api_key::list_offsets, version, corr, [&](kafka::writer& w) {
    w.int32(-1);
    w.array_count(1);
    w.string(topic);
    w.array_count(1);
    w.int32(partition);
    w.int64(timestamp);
    if (version == 0) w.int32(1);
  });
}

inline bytes metadata_request(std::int32_t corr, const std::vector<std::string>& topics) {
  return request(api_key::metadata, 0, corr, [&](kafka::writer& w) {
    w.array_count(static_cast<std::int32_t>(topics.size()));
    for (const auto& t : topics) w.string(t);
  });
}

/// Metadata v1: std::nullopt (a null array) asks for all topics, an empty list for none.
inline bytes metadata_request_v1(std::int32_t corr, const std::optional<std::vector<std::string>>& topics) {
  return request(api_key::metadata, 1, corr, [&](kafka::writer& w) {
    w.array_count(topics ? static_cast<std::int32_t>(topics->size()) : -1);
    if (topics)
      for (const auto& t : *topics) w.string(t);
  });
}

inline bytes api_versions_request(std::int32_t corr, std::int16_t version) {
  const bool flexible = version >= 3;
  return request(
      api_key::api_versions, version, corr,
      [&](kafka::writer& w) {
        if (!flexible) return;
        w.compact_string("kws-test");
        w.compact_string("0.1");
        w.empty_tagged_fields();
      },
      flexible);
}

/// Reader over a response frame positioned after size and correlation id.
struct response {
  std::int32_t size = 0;
  std::int32_t correlation_id = 0;
  kafka::reader body{kafka::bytes_view{}};
};
inline response open_response(const bytes& frame) {
  response r;
  kafka::reader h(frame);
  r.size = h.int32();
  r.correlation_id = h.int32();
  r.body = kafka::reader(kafka::bytes_view(frame).subspan(std::min<std::size_t>(frame.size(), 8)));
  return r;
}

/// One topic and one partition, as the builders above ask for.
struct produce_result {
  std::int32_t correlation_id = 0;
  std::string topic;
  std::int32_t partition = -100;
  std::int16_t error = -100;
  std::int64_t base_offset = -100;
  std::int64_t log_append_time = -100;   ///< v2
  std::int32_t throttle_time_ms = -100;  ///< v1+
  bool ok = false;
};
inline produce_result parse_produce(const bytes& frame, std::int16_t version = 0) {
  auto r = open_response(frame);
  produce_result p;
  p.correlation_id = r.correlation_id;
  auto& b = r.body;
  if (b.array_count() != 1) return p;
  p.topic = std::string(b.string());
  if (b.array_count() != 1) return p;
  p.partition = b.int32();
  p.error = b.int16();
  p.base_offset = b.int64();
  if (version >= 2) p.log_append_time = b.int64();
  if (version >= 1) p.throttle_time_ms = b.int32();
  b.expect_end();
  p.ok = b.ok();
  return p;
}

struct fetch_result {
  std::int32_t correlation_id = 0;
  std::int32_t throttle_time_ms = -100;  ///< v1+
  std::string topic;
  std::int32_t partition = -100;
  std::int16_t error = -100;
  std::int64_t high_watermark = -100;
  std::vector<message_view> messages;  ///< views into `frame`
  std::size_t records_bytes = 0;
  bool ok = false;
};
inline fetch_result parse_fetch(const bytes& frame, std::int16_t version = 0) {
  auto r = open_response(frame);
  fetch_result f;
  f.correlation_id = r.correlation_id;
  auto& b = r.body;
  if (version >= 1) f.throttle_time_ms = b.int32();
  if (b.array_count() != 1) return f;
  f.topic = std::string(b.string());
  if (b.array_count() != 1) return f;
  f.partition = b.int32();
  f.error = b.int16();
  f.high_watermark = b.int64();
  const auto records = b.bytes();
  b.expect_end();
  f.records_bytes = records.size();
  std::string why;
  f.ok = b.ok() && parse_fetched_message_set(records, f.messages, why) == kafka::error_code::none;
  return f;
}

struct list_offsets_result {
  std::int32_t correlation_id = 0;
  std::string topic;
  std::int32_t partition = -100;
  std::int16_t error = -100;
  std::vector<std::int64_t> offsets;  ///< v0
  std::int64_t timestamp = -100;      ///< v1
  std::int64_t offset = -100;         ///< v1
  bool ok = false;
};
inline list_offsets_result parse_list_offsets(const bytes& frame, std::int16_t version = 0) {
  auto r = open_response(frame);
  list_offsets_result l;
  l.correlation_id = r.correlation_id;
  auto& b = r.body;
  if (b.array_count() != 1) return l;
  l.topic = std::string(b.string());
  if (b.array_count() != 1) return l;
  l.partition = b.int32();
  l.error = b.int16();
  if (version == 0) {
    const auto n = b.array_count(8);
    for (std::int32_t i = 0; i < n; ++i) l.offsets.push_back(b.int64());
  } else {
    l.timestamp = b.int64();
    l.offset = b.int64();
  }
  b.expect_end();
  l.ok = b.ok();
  return l;
}

struct metadata_result {
  struct broker {
    std::int32_t node_id;
    std::string host;
    std::int32_t port;
    std::optional<std::string> rack;  ///< v1
  };
  struct partition {
    std::int16_t error;
    std::int32_t index;
    std::int32_t leader;
    std::vector<std::int32_t> replicas;
    std::vector<std::int32_t> isr;
  };
  struct topic {
    std::int16_t error;
    std::string name;
    bool is_internal = false;  ///< v1
    std::vector<partition> partitions;
  };
  std::int32_t correlation_id = 0;
  std::vector<broker> brokers;
  std::int32_t controller_id = -100;  ///< v1
  std::vector<topic> topics;
  bool ok = false;
};
inline metadata_result parse_metadata(const bytes& frame, std::int16_t version = 0) {
  auto r = open_response(frame);
  metadata_result m;
  m.correlation_id = r.correlation_id;
  auto& b = r.body;
  const auto nb = b.array_count(10);
  for (std::int32_t i = 0; i < nb; ++i) {
    metadata_result::broker br;
    br.node_id = b.int32();
    br.host = std::string(b.string());
    br.port = b.int32();
    if (version >= 1) {
      if (const auto rack = b.nullable_string()) br.rack = std::string(*rack);
    }
    m.brokers.push_back(br);
  }
  if (version >= 1) m.controller_id = b.int32();
  const auto nt = b.array_count(8);
  for (std::int32_t i = 0; i < nt; ++i) {
    metadata_result::topic t;
    t.error = b.int16();
    t.name = std::string(b.string());
    if (version >= 1) t.is_internal = b.int8() != 0;
    const auto np = b.array_count(18);
    for (std::int32_t j = 0; j < np; ++j) {
      metadata_result::partition p;
      p.error = b.int16();
      p.index = b.int32();
      p.leader = b.int32();
      const auto nr = b.array_count(4);
      for (std::int32_t k = 0; k < nr; ++k) p.replicas.push_back(b.int32());
      const auto ni = b.array_count(4);
      for (std::int32_t k = 0; k < ni; ++k) p.isr.push_back(b.int32());
      t.partitions.push_back(p);
    }
    m.topics.push_back(std::move(t));
  }
  b.expect_end();
  m.ok = b.ok();
  return m;
}

}  // namespace kws::devbroker::test
