// Encoders and decoders of the Kafka responses that carry broker addresses, plus ApiVersions, for the tests.
// Written from the JSON schemas of Apache Kafka (clients/src/main/resources/common/message/*Response.json)
// with byte primitives of their own: nothing here calls the library's kafka layer, so a test that rewrites a
// frame with the library and reads it back here compares two independent readings of the protocol.
//
// Each model holds every field of the newest version; encode(model, v) writes the fields that version has,
// and decode(frame, v) leaves the others at their defaults, so decode(encode(m, v), v) is m as version v sees
// it. Unknown tagged fields are kept in `tags` at every level (KIP-482) and written in ascending tag order.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace kws::test::kafka {

using bytes = std::vector<unsigned char>;
using uuid = std::array<unsigned char, 16>;

struct tagged_field {
  std::uint32_t tag = 0;
  bytes data;
  friend bool operator==(const tagged_field&, const tagged_field&) = default;
};
using tagged_fields = std::vector<tagged_field>;

/// Thrown by the decoders on anything that does not follow the schema.
struct decode_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---- byte primitives (https://kafka.apache.org/protocol#protocol_types) ----

class out_buf {
 public:
  explicit out_buf(bool flexible) : flexible_(flexible) {}

  bool flexible() const { return flexible_; }
  bytes& data() { return b_; }

  void i8(std::int8_t v) { b_.push_back(static_cast<unsigned char>(v)); }
  void i16(std::int16_t v) { be(static_cast<std::uint16_t>(v), 2); }
  void i32(std::int32_t v) { be(static_cast<std::uint32_t>(v), 4); }
  void i64(std::int64_t v) { be(static_cast<std::uint64_t>(v), 8); }
  void boolean(bool v) { i8(v ? 1 : 0); }
  void uvar(std::uint64_t v) {
    for (; v >= 0x80; v >>= 7) b_.push_back(static_cast<unsigned char>((v & 0x7f) | 0x80));
    b_.push_back(static_cast<unsigned char>(v));
  }
  void raw(const bytes& b) { b_.insert(b_.end(), b.begin(), b.end()); }
  void id(const uuid& u) { b_.insert(b_.end(), u.begin(), u.end()); }

  /// STRING (int16 length) or COMPACT_STRING (uvarint length + 1).
  void str(const std::string& s) {
    if (flexible_)
      uvar(s.size() + 1);
    else
      i16(static_cast<std::int16_t>(s.size()));
    b_.insert(b_.end(), s.begin(), s.end());
  }
  void nstr(const std::optional<std::string>& s) {
    if (s) return str(*s);
    if (flexible_)
      uvar(0);
    else
      i16(-1);
  }
  /// ARRAY (int32 count) or COMPACT_ARRAY (uvarint count + 1); null is -1 / 0.
  void count(std::size_t n) {
    if (flexible_)
      uvar(n + 1);
    else
      i32(static_cast<std::int32_t>(n));
  }
  void null_count() {
    if (flexible_)
      uvar(0);
    else
      i32(-1);
  }
  /// NULLABLE_BYTES / COMPACT_NULLABLE_BYTES (records).
  void nbytes(const std::optional<bytes>& b) {
    if (!b) return flexible_ ? uvar(0) : i32(-1);
    if (flexible_)
      uvar(b->size() + 1);
    else
      i32(static_cast<std::int32_t>(b->size()));
    raw(*b);
  }
  template <class T, class F>
  void array(const std::vector<T>& items, F&& each) {
    count(items.size());
    for (const auto& item : items) each(item);
  }
  /// A tagged-field section (flexible versions only): `known` joins `unknown`, all in ascending tag order.
  void tags(const tagged_fields& unknown, const tagged_fields& known = {}) {
    if (!flexible_) return;
    tagged_fields all = known;
    all.insert(all.end(), unknown.begin(), unknown.end());
    std::stable_sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.tag < b.tag; });
    uvar(all.size());
    for (const auto& f : all) {
      uvar(f.tag);
      uvar(f.data.size());
      raw(f.data);
    }
  }

 private:
  void be(std::uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) b_.push_back(static_cast<unsigned char>(v >> (8 * i)));
  }

  bool flexible_;
  bytes b_;
};

class in_buf {
 public:
  in_buf(const bytes& b, bool flexible, std::size_t pos = 0) : b_(b), pos_(pos), flexible_(flexible) {}

  std::size_t position() const { return pos_; }

  std::int8_t i8() { return static_cast<std::int8_t>(take(1)[0]); }
  std::int16_t i16() { return static_cast<std::int16_t>(be(2)); }
  std::int32_t i32() { return static_cast<std::int32_t>(be(4)); }
  std::int64_t i64() { return static_cast<std::int64_t>(be(8)); }
  bool boolean() { return i8() != 0; }
  std::uint32_t uvar() {
    std::uint64_t v = 0;
    for (int i = 0; i < 5; ++i) {
      const unsigned char c = take(1)[0];
      v |= std::uint64_t{c & 0x7fu} << (7 * i);
      if ((c & 0x80) == 0) {
        if (v > 0xffffffffu) throw decode_error("varint above 32 bits");
        return static_cast<std::uint32_t>(v);
      }
    }
    throw decode_error("varint longer than 5 bytes");
  }
  bytes raw(std::size_t n) {
    const unsigned char* p = take(n);
    return bytes(p, p + n);
  }
  uuid id() {
    uuid u{};
    const unsigned char* p = take(16);
    std::copy(p, p + 16, u.begin());
    return u;
  }
  std::optional<std::string> nstr() {
    std::int64_t n = flexible_ ? std::int64_t{uvar()} - 1 : i16();
    if (n == -1) return std::nullopt;
    if (n < 0) throw decode_error("negative string length");
    const unsigned char* p = take(static_cast<std::size_t>(n));
    return std::string(p, p + n);
  }
  std::string str() {
    auto s = nstr();
    if (!s) throw decode_error("null where a string is required");
    return *s;
  }
  std::optional<std::size_t> ncount() {
    std::int64_t n = flexible_ ? std::int64_t{uvar()} - 1 : i32();
    if (n == -1) return std::nullopt;
    if (n < 0) throw decode_error("negative array count");
    if (static_cast<std::size_t>(n) > b_.size() - pos_) throw decode_error("array count past the end");
    return static_cast<std::size_t>(n);
  }
  std::size_t count() {
    auto n = ncount();
    if (!n) throw decode_error("null where an array is required");
    return *n;
  }
  std::optional<bytes> nbytes() {
    std::int64_t n = flexible_ ? std::int64_t{uvar()} - 1 : i32();
    if (n == -1) return std::nullopt;
    if (n < 0) throw decode_error("negative bytes length");
    return raw(static_cast<std::size_t>(n));
  }
  template <class T, class F>
  std::vector<T> array(F&& each) {
    std::vector<T> items(count());
    for (auto& item : items) each(item);
    return items;
  }
  /// A tagged-field section; `known(tag, data)` returns true for the fields it takes, the rest are returned.
  tagged_fields tags(const std::function<bool(std::uint32_t, const bytes&)>& known = {}) {
    tagged_fields unknown;
    if (!flexible_) return unknown;
    const std::uint32_t n = uvar();
    for (std::uint32_t i = 0; i < n; ++i) {
      tagged_field f;
      f.tag = uvar();
      f.data = raw(uvar());
      if (!known || !known(f.tag, f.data)) unknown.push_back(std::move(f));
    }
    return unknown;
  }
  void end() const {
    if (pos_ != b_.size()) throw decode_error("trailing bytes");
  }

 private:
  const unsigned char* take(std::size_t n) {
    if (n > b_.size() - pos_) throw decode_error("truncated");
    const unsigned char* p = b_.data() + pos_;
    pos_ += n;
    return p;
  }
  std::uint64_t be(int n) {
    const unsigned char* p = take(static_cast<std::size_t>(n));
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
    return v;
  }

  const bytes& b_;
  std::size_t pos_;
  bool flexible_;
};

// ---- frames: 4-byte size, response header, body ----

struct response_header {
  std::int32_t correlation_id = 0;
  tagged_fields tags;  ///< header v1 only
  friend bool operator==(const response_header&, const response_header&) = default;
};

/// Size prefix + header (v1 adds tagged fields after the correlation id) + body.
inline bytes frame(const response_header& h, bool header_v1, const bytes& body) {
  out_buf head(header_v1);
  head.i32(h.correlation_id);
  head.tags(h.tags);
  out_buf f(false);
  f.i32(static_cast<std::int32_t>(head.data().size() + body.size()));
  f.raw(head.data());
  f.raw(body);
  return f.data();
}

/// Checks the size prefix and reads the header; returns the offset of the body.
inline std::size_t open_frame(const bytes& frame, bool header_v1, response_header& h) {
  in_buf size(frame, false);
  const std::int32_t n = size.i32();
  if (n < 0 || static_cast<std::size_t>(n) != frame.size() - 4) throw decode_error("size prefix mismatch");
  in_buf head(frame, header_v1, 4);
  h.correlation_id = head.i32();
  h.tags = head.tags();
  return head.position();
}

// ---- NodeEndpoints (Produce v10+, Fetch v16+, top-level tag 0, KIP-951) ----

struct node_endpoint {
  std::int32_t node_id = 0;
  std::string host;
  std::int32_t port = 0;
  std::optional<std::string> rack;
  tagged_fields tags;
  friend bool operator==(const node_endpoint&, const node_endpoint&) = default;
};

inline tagged_fields node_endpoints_tag(const std::optional<std::vector<node_endpoint>>& endpoints) {
  if (!endpoints) return {};
  out_buf o(true);
  o.array(*endpoints, [&](const node_endpoint& e) {
    o.i32(e.node_id);
    o.str(e.host);
    o.i32(e.port);
    o.nstr(e.rack);
    o.tags(e.tags);
  });
  return {tagged_field{0, o.data()}};
}

inline std::vector<node_endpoint> decode_node_endpoints(const bytes& data) {
  in_buf in(data, true);
  auto endpoints = in.array<node_endpoint>([&](node_endpoint& e) {
    e.node_id = in.i32();
    e.host = in.str();
    e.port = in.i32();
    e.rack = in.nstr();
    e.tags = in.tags();
  });
  in.end();
  return endpoints;
}

// ---- Metadata (key 3), v0-v13, flexible from v9 ----

struct metadata_broker {
  std::int32_t node_id = 0;
  std::string host;
  std::int32_t port = 0;
  std::optional<std::string> rack;  // v1+
  tagged_fields tags;
  friend bool operator==(const metadata_broker&, const metadata_broker&) = default;
};
struct metadata_partition {
  std::int16_t error_code = 0;
  std::int32_t partition_index = 0;
  std::int32_t leader_id = -1;
  std::int32_t leader_epoch = -1;  // v7+
  std::vector<std::int32_t> replica_nodes;
  std::vector<std::int32_t> isr_nodes;
  std::vector<std::int32_t> offline_replicas;  // v5+
  tagged_fields tags;
  friend bool operator==(const metadata_partition&, const metadata_partition&) = default;
};
struct metadata_topic {
  std::int16_t error_code = 0;
  std::optional<std::string> name;  // nullable from v12
  uuid topic_id{};                  // v10+
  bool is_internal = false;         // v1+
  std::vector<metadata_partition> partitions;
  std::int32_t topic_authorized_operations = std::numeric_limits<std::int32_t>::min();  // v8+
  tagged_fields tags;
  friend bool operator==(const metadata_topic&, const metadata_topic&) = default;
};
struct metadata_response {
  std::int32_t throttle_time_ms = 0;  // v3+
  std::vector<metadata_broker> brokers;
  std::optional<std::string> cluster_id;  // v2+
  std::int32_t controller_id = -1;        // v1+
  std::vector<metadata_topic> topics;
  std::int32_t cluster_authorized_operations = std::numeric_limits<std::int32_t>::min();  // v8-v10
  std::int16_t error_code = 0;                                                            // v13+
  tagged_fields tags;
  friend bool operator==(const metadata_response&, const metadata_response&) = default;
};

inline bytes encode_metadata(const metadata_response& m, std::int16_t v, const response_header& h) {
  out_buf o(v >= 9);
  auto ints = [&](const std::vector<std::int32_t>& xs) { o.array(xs, [&](std::int32_t x) { o.i32(x); }); };
  if (v >= 3) o.i32(m.throttle_time_ms);
  o.array(m.brokers, [&](const metadata_broker& b) {
    o.i32(b.node_id);
    o.str(b.host);
    o.i32(b.port);
    if (v >= 1) o.nstr(b.rack);
    o.tags(b.tags);
  });
  if (v >= 2) o.nstr(m.cluster_id);
  if (v >= 1) o.i32(m.controller_id);
  o.array(m.topics, [&](const metadata_topic& t) {
    o.i16(t.error_code);
    if (v >= 12)
      o.nstr(t.name);
    else
      o.str(t.name.value_or(""));
    if (v >= 10) o.id(t.topic_id);
    if (v >= 1) o.boolean(t.is_internal);
    o.array(t.partitions, [&](const metadata_partition& p) {
      o.i16(p.error_code);
      o.i32(p.partition_index);
      o.i32(p.leader_id);
      if (v >= 7) o.i32(p.leader_epoch);
      ints(p.replica_nodes);
      ints(p.isr_nodes);
      if (v >= 5) ints(p.offline_replicas);
      o.tags(p.tags);
    });
    if (v >= 8) o.i32(t.topic_authorized_operations);
    o.tags(t.tags);
  });
  if (v >= 8 && v <= 10) o.i32(m.cluster_authorized_operations);
  if (v >= 13) o.i16(m.error_code);
  o.tags(m.tags);
  return frame(h, v >= 9, o.data());
}

inline metadata_response decode_metadata(const bytes& f, std::int16_t v, response_header* header = nullptr) {
  response_header h;
  in_buf in(f, v >= 9, open_frame(f, v >= 9, h));
  auto ints = [&] { return in.array<std::int32_t>([&](std::int32_t& x) { x = in.i32(); }); };
  metadata_response m;
  if (v >= 3) m.throttle_time_ms = in.i32();
  m.brokers = in.array<metadata_broker>([&](metadata_broker& b) {
    b.node_id = in.i32();
    b.host = in.str();
    b.port = in.i32();
    if (v >= 1) b.rack = in.nstr();
    b.tags = in.tags();
  });
  if (v >= 2) m.cluster_id = in.nstr();
  if (v >= 1) m.controller_id = in.i32();
  m.topics = in.array<metadata_topic>([&](metadata_topic& t) {
    t.error_code = in.i16();
    t.name = v >= 12 ? in.nstr() : std::optional<std::string>(in.str());
    if (v >= 10) t.topic_id = in.id();
    if (v >= 1) t.is_internal = in.boolean();
    t.partitions = in.array<metadata_partition>([&](metadata_partition& p) {
      p.error_code = in.i16();
      p.partition_index = in.i32();
      p.leader_id = in.i32();
      if (v >= 7) p.leader_epoch = in.i32();
      p.replica_nodes = ints();
      p.isr_nodes = ints();
      if (v >= 5) p.offline_replicas = ints();
      p.tags = in.tags();
    });
    if (v >= 8) t.topic_authorized_operations = in.i32();
    t.tags = in.tags();
  });
  if (v >= 8 && v <= 10) m.cluster_authorized_operations = in.i32();
  if (v >= 13) m.error_code = in.i16();
  m.tags = in.tags();
  in.end();
  if (header) *header = h;
  return m;
}

// ---- FindCoordinator (key 10), v0-v6, flexible from v3, batched from v4 (KIP-699) ----

struct coordinator {
  std::string key;
  std::int32_t node_id = 0;
  std::string host;
  std::int32_t port = 0;
  std::int16_t error_code = 0;
  std::optional<std::string> error_message;
  tagged_fields tags;
  friend bool operator==(const coordinator&, const coordinator&) = default;
};
struct find_coordinator_response {
  std::int32_t throttle_time_ms = 0;         // v1+
  std::int16_t error_code = 0;               // v0-v3
  std::optional<std::string> error_message;  // v1-v3
  std::int32_t node_id = 0;                  // v0-v3
  std::string host;                          // v0-v3
  std::int32_t port = 0;                     // v0-v3
  std::vector<coordinator> coordinators;     // v4+
  tagged_fields tags;
  friend bool operator==(const find_coordinator_response&, const find_coordinator_response&) = default;
};

inline bytes encode_find_coordinator(const find_coordinator_response& m, std::int16_t v,
                                     const response_header& h) {
  out_buf o(v >= 3);
  if (v >= 1) o.i32(m.throttle_time_ms);
  if (v <= 3) {
    o.i16(m.error_code);
    if (v >= 1) o.nstr(m.error_message);
    o.i32(m.node_id);
    o.str(m.host);
    o.i32(m.port);
  } else {
    o.array(m.coordinators, [&](const coordinator& c) {
      o.str(c.key);
      o.i32(c.node_id);
      o.str(c.host);
      o.i32(c.port);
      o.i16(c.error_code);
      o.nstr(c.error_message);
      o.tags(c.tags);
    });
  }
  o.tags(m.tags);
  return frame(h, v >= 3, o.data());
}

inline find_coordinator_response decode_find_coordinator(const bytes& f, std::int16_t v,
                                                         response_header* header = nullptr) {
  response_header h;
  in_buf in(f, v >= 3, open_frame(f, v >= 3, h));
  find_coordinator_response m;
  if (v >= 1) m.throttle_time_ms = in.i32();
  if (v <= 3) {
    m.error_code = in.i16();
    if (v >= 1) m.error_message = in.nstr();
    m.node_id = in.i32();
    m.host = in.str();
    m.port = in.i32();
  } else {
    m.coordinators = in.array<coordinator>([&](coordinator& c) {
      c.key = in.str();
      c.node_id = in.i32();
      c.host = in.str();
      c.port = in.i32();
      c.error_code = in.i16();
      c.error_message = in.nstr();
      c.tags = in.tags();
    });
  }
  m.tags = in.tags();
  in.end();
  if (header) *header = h;
  return m;
}

// ---- DescribeCluster (key 60), v0-v2, always flexible ----

struct describe_cluster_broker {
  std::int32_t broker_id = 0;
  std::string host;
  std::int32_t port = 0;
  std::optional<std::string> rack;
  bool is_fenced = false;  // v2+
  tagged_fields tags;
  friend bool operator==(const describe_cluster_broker&, const describe_cluster_broker&) = default;
};
struct describe_cluster_response {
  std::int32_t throttle_time_ms = 0;
  std::int16_t error_code = 0;
  std::optional<std::string> error_message;
  std::int8_t endpoint_type = 1;  // v1+
  std::string cluster_id;
  std::int32_t controller_id = -1;
  std::vector<describe_cluster_broker> brokers;
  std::int32_t cluster_authorized_operations = std::numeric_limits<std::int32_t>::min();
  tagged_fields tags;
  friend bool operator==(const describe_cluster_response&, const describe_cluster_response&) = default;
};

inline bytes encode_describe_cluster(const describe_cluster_response& m, std::int16_t v,
                                     const response_header& h) {
  out_buf o(true);
  o.i32(m.throttle_time_ms);
  o.i16(m.error_code);
  o.nstr(m.error_message);
  if (v >= 1) o.i8(m.endpoint_type);
  o.str(m.cluster_id);
  o.i32(m.controller_id);
  o.array(m.brokers, [&](const describe_cluster_broker& b) {
    o.i32(b.broker_id);
    o.str(b.host);
    o.i32(b.port);
    o.nstr(b.rack);
    if (v >= 2) o.boolean(b.is_fenced);
    o.tags(b.tags);
  });
  o.i32(m.cluster_authorized_operations);
  o.tags(m.tags);
  return frame(h, true, o.data());
}

inline describe_cluster_response decode_describe_cluster(const bytes& f, std::int16_t v,
                                                         response_header* header = nullptr) {
  response_header h;
  in_buf in(f, true, open_frame(f, true, h));
  describe_cluster_response m;
  m.throttle_time_ms = in.i32();
  m.error_code = in.i16();
  m.error_message = in.nstr();
  if (v >= 1) m.endpoint_type = in.i8();
  m.cluster_id = in.str();
  m.controller_id = in.i32();
  m.brokers = in.array<describe_cluster_broker>([&](describe_cluster_broker& b) {
    b.broker_id = in.i32();
    b.host = in.str();
    b.port = in.i32();
    b.rack = in.nstr();
    if (v >= 2) b.is_fenced = in.boolean();
    b.tags = in.tags();
  });
  m.cluster_authorized_operations = in.i32();
  m.tags = in.tags();
  in.end();
  if (header) *header = h;
  return m;
}

// ---- Produce (key 0), v0-v13, flexible from v9, NodeEndpoints from v10, topic ids from v13 ----

struct record_error {
  std::int32_t batch_index = 0;
  std::optional<std::string> message;
  tagged_fields tags;
  friend bool operator==(const record_error&, const record_error&) = default;
};
struct produce_partition {
  std::int32_t index = 0;
  std::int16_t error_code = 0;
  std::int64_t base_offset = 0;
  std::int64_t log_append_time_ms = -1;      // v2+
  std::int64_t log_start_offset = -1;        // v5+
  std::vector<record_error> record_errors;   // v8+
  std::optional<std::string> error_message;  // v8+
  tagged_fields tags;                        ///< CurrentLeader (tag 0, v10+) stays raw here
  friend bool operator==(const produce_partition&, const produce_partition&) = default;
};
struct produce_topic {
  std::string name;  // v0-v12
  uuid topic_id{};   // v13+
  std::vector<produce_partition> partitions;
  tagged_fields tags;
  friend bool operator==(const produce_topic&, const produce_topic&) = default;
};
struct produce_response {
  std::vector<produce_topic> responses;
  std::int32_t throttle_time_ms = 0;                         // v1+
  std::optional<std::vector<node_endpoint>> node_endpoints;  // v10+, tag 0
  tagged_fields tags;
  friend bool operator==(const produce_response&, const produce_response&) = default;
};

inline bytes encode_produce(const produce_response& m, std::int16_t v, const response_header& h) {
  out_buf o(v >= 9);
  o.array(m.responses, [&](const produce_topic& t) {
    if (v >= 13)
      o.id(t.topic_id);
    else
      o.str(t.name);
    o.array(t.partitions, [&](const produce_partition& p) {
      o.i32(p.index);
      o.i16(p.error_code);
      o.i64(p.base_offset);
      if (v >= 2) o.i64(p.log_append_time_ms);
      if (v >= 5) o.i64(p.log_start_offset);
      if (v >= 8) {
        o.array(p.record_errors, [&](const record_error& e) {
          o.i32(e.batch_index);
          o.nstr(e.message);
          o.tags(e.tags);
        });
        o.nstr(p.error_message);
      }
      o.tags(p.tags);
    });
    o.tags(t.tags);
  });
  if (v >= 1) o.i32(m.throttle_time_ms);
  o.tags(m.tags, v >= 10 ? node_endpoints_tag(m.node_endpoints) : tagged_fields{});
  return frame(h, v >= 9, o.data());
}

inline produce_response decode_produce(const bytes& f, std::int16_t v, response_header* header = nullptr) {
  response_header h;
  in_buf in(f, v >= 9, open_frame(f, v >= 9, h));
  produce_response m;
  m.responses = in.array<produce_topic>([&](produce_topic& t) {
    if (v >= 13)
      t.topic_id = in.id();
    else
      t.name = in.str();
    t.partitions = in.array<produce_partition>([&](produce_partition& p) {
      p.index = in.i32();
      p.error_code = in.i16();
      p.base_offset = in.i64();
      if (v >= 2) p.log_append_time_ms = in.i64();
      if (v >= 5) p.log_start_offset = in.i64();
      if (v >= 8) {
        p.record_errors = in.array<record_error>([&](record_error& e) {
          e.batch_index = in.i32();
          e.message = in.nstr();
          e.tags = in.tags();
        });
        p.error_message = in.nstr();
      }
      p.tags = in.tags();
    });
    t.tags = in.tags();
  });
  if (v >= 1) m.throttle_time_ms = in.i32();
  m.tags = in.tags([&](std::uint32_t tag, const bytes& data) {
    if (v < 10 || tag != 0) return false;
    m.node_endpoints = decode_node_endpoints(data);
    return true;
  });
  in.end();
  if (header) *header = h;
  return m;
}

// ---- Fetch (key 1), flexible versions v12-v18 only; NodeEndpoints from v16, topic ids from v13 ----

struct aborted_transaction {
  std::int64_t producer_id = 0;
  std::int64_t first_offset = 0;
  tagged_fields tags;
  friend bool operator==(const aborted_transaction&, const aborted_transaction&) = default;
};
struct fetch_partition {
  std::int32_t partition_index = 0;
  std::int16_t error_code = 0;
  std::int64_t high_watermark = 0;
  std::int64_t last_stable_offset = -1;
  std::int64_t log_start_offset = -1;
  std::optional<std::vector<aborted_transaction>> aborted_transactions;
  std::int32_t preferred_read_replica = -1;
  std::optional<bytes> records;
  tagged_fields tags;  ///< DivergingEpoch, CurrentLeader, SnapshotId stay raw here
  friend bool operator==(const fetch_partition&, const fetch_partition&) = default;
};
struct fetch_topic {
  std::string topic;  // v12
  uuid topic_id{};    // v13+
  std::vector<fetch_partition> partitions;
  tagged_fields tags;
  friend bool operator==(const fetch_topic&, const fetch_topic&) = default;
};
struct fetch_response {
  std::int32_t throttle_time_ms = 0;
  std::int16_t error_code = 0;
  std::int32_t session_id = 0;
  std::vector<fetch_topic> responses;
  std::optional<std::vector<node_endpoint>> node_endpoints;  // v16+, tag 0
  tagged_fields tags;
  friend bool operator==(const fetch_response&, const fetch_response&) = default;
};

inline bytes encode_fetch(const fetch_response& m, std::int16_t v, const response_header& h) {
  if (v < 12) throw std::invalid_argument("the test encoder writes Fetch v12+ only");
  out_buf o(true);
  o.i32(m.throttle_time_ms);
  o.i16(m.error_code);
  o.i32(m.session_id);
  o.array(m.responses, [&](const fetch_topic& t) {
    if (v >= 13)
      o.id(t.topic_id);
    else
      o.str(t.topic);
    o.array(t.partitions, [&](const fetch_partition& p) {
      o.i32(p.partition_index);
      o.i16(p.error_code);
      o.i64(p.high_watermark);
      o.i64(p.last_stable_offset);
      o.i64(p.log_start_offset);
      if (p.aborted_transactions) {
        o.array(*p.aborted_transactions, [&](const aborted_transaction& a) {
          o.i64(a.producer_id);
          o.i64(a.first_offset);
          o.tags(a.tags);
        });
      } else {
        o.null_count();
      }
      o.i32(p.preferred_read_replica);
      o.nbytes(p.records);
      o.tags(p.tags);
    });
    o.tags(t.tags);
  });
  o.tags(m.tags, v >= 16 ? node_endpoints_tag(m.node_endpoints) : tagged_fields{});
  return frame(h, true, o.data());
}

inline fetch_response decode_fetch(const bytes& f, std::int16_t v, response_header* header = nullptr) {
  if (v < 12) throw std::invalid_argument("the test decoder reads Fetch v12+ only");
  response_header h;
  in_buf in(f, true, open_frame(f, true, h));
  fetch_response m;
  m.throttle_time_ms = in.i32();
  m.error_code = in.i16();
  m.session_id = in.i32();
  m.responses = in.array<fetch_topic>([&](fetch_topic& t) {
    if (v >= 13)
      t.topic_id = in.id();
    else
      t.topic = in.str();
    t.partitions = in.array<fetch_partition>([&](fetch_partition& p) {
      p.partition_index = in.i32();
      p.error_code = in.i16();
      p.high_watermark = in.i64();
      p.last_stable_offset = in.i64();
      p.log_start_offset = in.i64();
      if (const auto n = in.ncount()) {
        p.aborted_transactions.emplace(*n);
        for (auto& a : *p.aborted_transactions) {
          a.producer_id = in.i64();
          a.first_offset = in.i64();
          a.tags = in.tags();
        }
      }
      p.preferred_read_replica = in.i32();
      p.records = in.nbytes();
      p.tags = in.tags();
    });
    t.tags = in.tags();
  });
  m.tags = in.tags([&](std::uint32_t tag, const bytes& data) {
    if (v < 16 || tag != 0) return false;
    m.node_endpoints = decode_node_endpoints(data);
    return true;
  });
  in.end();
  if (header) *header = h;
  return m;
}

// ---- ApiVersions (key 18), v0-v5, flexible from v3, response header always v0 (KIP-511) ----

struct api_versions_entry {
  std::int16_t api_key = 0;
  std::int16_t min_version = 0;
  std::int16_t max_version = 0;
  tagged_fields tags;
  friend bool operator==(const api_versions_entry&, const api_versions_entry&) = default;
};
struct api_versions_response {
  std::int16_t error_code = 0;
  std::vector<api_versions_entry> api_keys;
  std::int32_t throttle_time_ms = 0;  // v1+
  tagged_fields tags;                 ///< SupportedFeatures (0), FinalizedFeaturesEpoch (1), ... stay raw
  friend bool operator==(const api_versions_response&, const api_versions_response&) = default;
};

/// `body_version` is the layout of the body: the request version, or 0 for the KIP-511 error answer.
inline bytes encode_api_versions(const api_versions_response& m, std::int16_t body_version,
                                 std::int32_t correlation_id) {
  const std::int16_t v = body_version;
  out_buf o(v >= 3);
  o.i16(m.error_code);
  o.array(m.api_keys, [&](const api_versions_entry& e) {
    o.i16(e.api_key);
    o.i16(e.min_version);
    o.i16(e.max_version);
    o.tags(e.tags);
  });
  if (v >= 1) o.i32(m.throttle_time_ms);
  o.tags(m.tags);
  return frame(response_header{correlation_id, {}}, false, o.data());
}

inline api_versions_response decode_api_versions(const bytes& f, std::int16_t body_version,
                                                 std::int32_t* correlation_id = nullptr) {
  const std::int16_t v = body_version;
  response_header h;
  in_buf in(f, v >= 3, open_frame(f, false, h));
  api_versions_response m;
  m.error_code = in.i16();
  m.api_keys = in.array<api_versions_entry>([&](api_versions_entry& e) {
    e.api_key = in.i16();
    e.min_version = in.i16();
    e.max_version = in.i16();
    e.tags = in.tags();
  });
  if (v >= 1) m.throttle_time_ms = in.i32();
  m.tags = in.tags();
  in.end();
  if (correlation_id) *correlation_id = h.correlation_id;
  return m;
}

// ---- the endpoints of each model, for computing what a rewrite should produce ----

/// Calls `f(node_id, host, port)` with references to every advertised endpoint of a model.
template <class F>
void for_each_endpoint(metadata_response& m, F&& f) {
  for (auto& b : m.brokers) f(b.node_id, b.host, b.port);
}
template <class F>
void for_each_endpoint(find_coordinator_response& m, F&& f) {
  f(m.node_id, m.host, m.port);
  for (auto& c : m.coordinators) f(c.node_id, c.host, c.port);
}
template <class F>
void for_each_endpoint(describe_cluster_response& m, F&& f) {
  for (auto& b : m.brokers) f(b.broker_id, b.host, b.port);
}
template <class F>
void for_each_endpoint(produce_response& m, F&& f) {
  if (m.node_endpoints)
    for (auto& e : *m.node_endpoints) f(e.node_id, e.host, e.port);
}
template <class F>
void for_each_endpoint(fetch_response& m, F&& f) {
  if (m.node_endpoints)
    for (auto& e : *m.node_endpoints) f(e.node_id, e.host, e.port);
}

}  // namespace kws::test::kafka
