#include <kws/kafka/rewrite.hpp>

#include "frame_edit.hpp"

namespace kws::kafka {

namespace {

// The highest versions whose layouts were checked field by field against the JSON schemas of Apache Kafka
// (4.x, see docs/architecture.md): Metadata 13 (top-level ErrorCode), FindCoordinator 6 (share groups,
// KIP-932), DescribeCluster 2 (IsFenced, KIP-1073), Produce 13 (topic ids, KIP-516), Fetch 18 (KIP-1166).
constexpr std::int16_t max_metadata = 13;
constexpr std::int16_t max_find_coordinator = 6;
constexpr std::int16_t max_describe_cluster = 2;
constexpr std::int16_t max_produce = 13;
constexpr std::int16_t max_fetch = 18;
// NodeEndpoints (KIP-951) arrived with Produce v10 and Fetch v16, as top-level tagged field 0 of both.
constexpr std::int16_t first_produce_with_endpoints = 10;
constexpr std::int16_t first_fetch_with_endpoints = 16;
constexpr std::uint32_t node_endpoints_tag = 0;

constexpr std::size_t uuid_bytes = 16;

/// A host and port to hand to the mapper, with the frame range [begin, end) that holds them: host, then port,
/// adjacent in every schema handled here.
struct endpoint_site {
  std::int32_t node_id = -1;
  std::string_view host;
  std::int32_t port = 0;
  std::size_t begin = 0;
  std::size_t end = 0;
};

/// A tagged field whose value holds endpoints: its size must follow the value's new length.
struct sized_region {
  std::size_t size_at = 0;  ///< frame offset of the size varint
  std::size_t value_at = 0;
  std::size_t value_end = 0;
  std::uint32_t size = 0;
};

/// Walks one response body, checking it against its schema and noting where the broker addresses are. Reads
/// straight through and lets the reader's sticky error end every loop.
class response_parser {
 public:
  response_parser(bytes_view frame, std::int16_t version, bool flexible, reader r) noexcept
      : frame_(frame), v_(version), flexible_(flexible), r_(r) {}

  bool ok() const noexcept { return r_.ok(); }
  const boost::system::error_code& error() const noexcept { return r_.error(); }

  // Metadata Response: https://kafka.apache.org/protocol#The_Messages_Metadata
  void metadata() {
    if (v_ >= 3) skip_int32();  // throttle_time_ms
    const auto brokers = array(4 + string_min() + 4 + (v_ >= 1 ? string_min() : 0) + tags_min());
    for (std::int32_t i = 0; i < brokers && r_.ok(); ++i) {
      endpoint(r_.int32());
      if (v_ >= 1) skip_nullable_string();  // rack
      tags();
    }
    if (v_ >= 2) skip_nullable_string();  // cluster_id
    if (v_ >= 1) skip_int32();            // controller_id
    const auto topics = array(2 + string_min() + (v_ >= 10 ? uuid_bytes : 0) + (v_ >= 1 ? 1 : 0) +
                              array_min() + (v_ >= 8 ? 4 : 0) + tags_min());
    for (std::int32_t i = 0; i < topics && r_.ok(); ++i) {
      r_.skip(2);  // error_code
      if (v_ >= 12)
        skip_nullable_string();  // name, null for a topic asked for by an unknown id
      else
        skip_string();
      if (v_ >= 10) r_.skip(uuid_bytes);  // topic_id
      if (v_ >= 1) r_.skip(1);            // is_internal
      const auto partitions =
          array(2 + 4 + 4 + (v_ >= 7 ? 4 : 0) + 2 * array_min() + (v_ >= 5 ? array_min() : 0) + tags_min());
      for (std::int32_t j = 0; j < partitions && r_.ok(); ++j) {
        r_.skip(2 + 4 + 4);               // error_code, partition_index, leader_id
        if (v_ >= 7) skip_int32();        // leader_epoch
        skip_int32_array();               // replica_nodes
        skip_int32_array();               // isr_nodes
        if (v_ >= 5) skip_int32_array();  // offline_replicas
        tags();
      }
      if (v_ >= 8) skip_int32();  // topic_authorized_operations
      tags();
    }
    // cluster_authorized_operations, v8-v10 only (moved to DescribeCluster, KIP-700)
    if (v_ >= 8 && v_ <= 10) skip_int32();
    if (v_ >= 13) r_.skip(2);  // error_code
    tags();
    r_.expect_end();
  }

  // FindCoordinator Response: https://kafka.apache.org/protocol#The_Messages_FindCoordinator
  void find_coordinator() {
    if (v_ >= 4) {
      // Batched lookups (KIP-699): one coordinator per requested key.
      skip_int32();  // throttle_time_ms
      const auto n = array(string_min() + 4 + string_min() + 4 + 2 + string_min() + tags_min());
      for (std::int32_t i = 0; i < n && r_.ok(); ++i) {
        skip_string();  // key
        endpoint(r_.int32());
        r_.skip(2);              // error_code
        skip_nullable_string();  // error_message
        tags();
      }
    } else {
      if (v_ >= 1) skip_int32();            // throttle_time_ms
      r_.skip(2);                           // error_code
      if (v_ >= 1) skip_nullable_string();  // error_message
      endpoint(r_.int32());
    }
    tags();
    r_.expect_end();
  }

  // DescribeCluster Response (KIP-700), flexible from v0:
  // https://kafka.apache.org/protocol#The_Messages_DescribeCluster
  void describe_cluster() {
    skip_int32();             // throttle_time_ms
    r_.skip(2);               // error_code
    skip_nullable_string();   // error_message
    if (v_ >= 1) r_.skip(1);  // endpoint_type
    skip_string();            // cluster_id
    skip_int32();             // controller_id
    const auto brokers = array(4 + string_min() + 4 + string_min() + (v_ >= 2 ? 1 : 0) + tags_min());
    for (std::int32_t i = 0; i < brokers && r_.ok(); ++i) {
      endpoint(r_.int32());
      skip_nullable_string();   // rack
      if (v_ >= 2) r_.skip(1);  // is_fenced (KIP-1073)
      tags();
    }
    skip_int32();  // cluster_authorized_operations
    tags();
    r_.expect_end();
  }

  // Produce Response v10+ (always flexible here): https://kafka.apache.org/protocol#The_Messages_Produce
  void produce() {
    const auto topics = array((v_ >= 13 ? uuid_bytes : 1) + 1 + 1);
    for (std::int32_t i = 0; i < topics && r_.ok(); ++i) {
      if (v_ >= 13)
        r_.skip(uuid_bytes);  // topic_id (KIP-516)
      else
        skip_string();  // name
      const auto partitions = array(4 + 2 + 8 + 8 + 8 + 1 + 1 + 1);
      for (std::int32_t j = 0; j < partitions && r_.ok(); ++j) {
        // index, error_code, base_offset, log_append_time_ms, log_start_offset
        r_.skip(4 + 2 + 8 + 8 + 8);
        const auto record_errors = array(4 + 1 + 1);
        for (std::int32_t k = 0; k < record_errors && r_.ok(); ++k) {
          skip_int32();            // batch_index
          skip_nullable_string();  // batch_index_error_message
          tags();
        }
        skip_nullable_string();  // error_message
        tags();                  // CurrentLeader (tag 0) among them
      }
      tags();
    }
    skip_int32();  // throttle_time_ms
    tags_with_node_endpoints();
    r_.expect_end();
  }

  // Fetch Response v16+ (always flexible here): https://kafka.apache.org/protocol#The_Messages_Fetch
  void fetch() {
    r_.skip(4 + 2 + 4);  // throttle_time_ms, error_code, session_id
    const auto topics = array(uuid_bytes + 1 + 1);
    for (std::int32_t i = 0; i < topics && r_.ok(); ++i) {
      r_.skip(uuid_bytes);  // topic_id
      const auto partitions = array(4 + 2 + 8 + 8 + 8 + 1 + 4 + 1 + 1);
      for (std::int32_t j = 0; j < partitions && r_.ok(); ++j) {
        // partition_index, error_code, high_watermark, last_stable_offset, log_start_offset
        r_.skip(4 + 2 + 8 + 8 + 8);
        const auto aborted = nullable_array(8 + 8 + 1);
        for (std::int32_t k = 0; k < aborted && r_.ok(); ++k) {
          r_.skip(8 + 8);  // producer_id, first_offset
          tags();
        }
        skip_int32();  // preferred_read_replica
        // Record data is skipped by its length and later copied as one span with everything around it.
        (void)r_.compact_nullable_bytes();
        tags();  // DivergingEpoch, CurrentLeader, SnapshotId
      }
      tags();
    }
    tags_with_node_endpoints();
    r_.expect_end();
  }

  /// Every endpoint found, in frame order (node id -1 and empty hosts included).
  std::vector<advertised_broker> endpoints() const {
    std::vector<advertised_broker> out;
    out.reserve(endpoints_.size());
    for (const auto& site : endpoints_) out.push_back({site.node_id, site.host, site.port});
    return out;
  }

  /// Asks `map` for each endpoint and turns its answers into patches, including the new sizes of the tagged
  /// fields that hold rewritten endpoints. Called only once the whole frame parsed.
  bool map_endpoints(const broker_mapper& map, std::vector<detail::patch>& patches,
                     boost::system::error_code& ec) const {
    for (const auto& site : endpoints_) {
      if (site.node_id == -1 || site.host.empty()) continue;
      boost::system::error_code map_ec;
      const auto to = map ? map(advertised_broker{site.node_id, site.host, site.port}, map_ec)
                          : std::optional<broker_endpoint>{};
      if (map_ec) {
        ec = map_ec;
        return false;
      }
      if (!to || (to->host == site.host && to->port == site.port)) continue;
      if (!flexible_ && to->host.size() > 0x7fff) {
        ec = wire_errc::invalid_length;  // an int16-length string cannot hold it
        return false;
      }
      std::vector<unsigned char> bytes;
      writer w(bytes);
      if (flexible_)
        w.compact_string(to->host);
      else
        w.string(to->host);
      w.int32(to->port);
      patches.push_back({site.begin, site.end - site.begin, std::move(bytes)});
    }
    for (const auto& region : regions_) {
      const auto delta = detail::delta_within(patches, region.value_at, region.value_end);
      if (delta == 0) continue;
      const auto size = static_cast<std::int64_t>(region.size) + delta;
      if (size < 0 || size > 0xffffffff) {
        ec = wire_errc::invalid_length;
        return false;
      }
      patches.push_back({region.size_at, region.value_at - region.size_at,
                         detail::uvarint_bytes(static_cast<std::uint64_t>(size))});
    }
    return true;
  }

 private:
  std::size_t string_min() const noexcept { return flexible_ ? 1 : 2; }
  std::size_t array_min() const noexcept { return flexible_ ? 1 : 4; }
  std::size_t tags_min() const noexcept { return flexible_ ? 1 : 0; }

  void skip_int32() noexcept { r_.skip(4); }
  void skip_string() noexcept { (void)(flexible_ ? r_.compact_string() : r_.string()); }
  void skip_nullable_string() noexcept {
    (void)(flexible_ ? r_.compact_nullable_string() : r_.nullable_string());
  }
  void tags() noexcept {
    if (flexible_) r_.skip_tagged_fields();
  }

  /// Count of an array that may be null; -1 for null.
  std::int32_t nullable_array(std::size_t min_element_bytes) noexcept {
    return flexible_ ? r_.compact_array_count(min_element_bytes) : r_.array_count(min_element_bytes);
  }
  /// Count of an array that the schema does not let be null.
  std::int32_t array(std::size_t min_element_bytes) noexcept {
    const auto n = nullable_array(min_element_bytes);
    if (r_.ok() && n < 0) r_.fail(wire_errc::invalid_length);
    return r_.ok() ? n : 0;
  }
  void skip_int32_array() noexcept { r_.skip(4 * static_cast<std::size_t>(array(4))); }

  /// Host and port at the current position, for the entry of `node_id`.
  void endpoint(std::int32_t node_id) {
    endpoint_site site;
    site.node_id = node_id;
    site.begin = r_.position();
    site.host = flexible_ ? r_.compact_string() : r_.string();
    site.port = r_.int32();
    site.end = r_.position();
    if (r_.ok()) endpoints_.push_back(site);
  }

  /// The top-level tagged fields of Produce v10+ and Fetch v16+. NodeEndpoints is parsed inside its own
  /// bounds, which must hold it exactly; every other field is kept as it is.
  void tags_with_node_endpoints() {
    const std::uint32_t n = r_.uvarint();
    for (std::uint32_t i = 0; i < n && r_.ok(); ++i) {
      const std::uint32_t tag = r_.uvarint();
      sized_region region;
      region.size_at = r_.position();
      region.size = r_.uvarint();
      region.value_at = r_.position();
      if (!r_.ok()) return;
      if (region.size > r_.remaining()) return r_.fail(wire_errc::truncated);
      region.value_end = region.value_at + region.size;
      if (tag == node_endpoints_tag) {
        const reader outer = r_;
        r_ = reader(frame_.first(region.value_end));
        r_.skip(region.value_at);
        node_endpoints();
        r_.expect_end();
        const auto inner = r_.error();
        r_ = outer;
        if (inner) return r_.fail(inner);
        regions_.push_back(region);
      }
      r_.skip(region.size);
    }
  }

  // NodeEndpoints => [node_id host port rack TAG_BUFFER], a compact array (KIP-951).
  void node_endpoints() {
    const auto n = array(4 + 1 + 4 + 1 + 1);
    for (std::int32_t i = 0; i < n && r_.ok(); ++i) {
      endpoint(r_.int32());
      skip_nullable_string();  // rack
      tags();
    }
  }

  bytes_view frame_;
  std::int16_t v_;
  bool flexible_;
  reader r_;
  std::vector<endpoint_site> endpoints_;
  std::vector<sized_region> regions_;
};

}  // namespace

std::optional<std::int16_t> max_rewritable_version(api_key key) noexcept {
  switch (key) {
    case api_key::metadata:
      return max_metadata;
    case api_key::find_coordinator:
      return max_find_coordinator;
    case api_key::describe_cluster:
      return max_describe_cluster;
    case api_key::produce:
      return max_produce;
    case api_key::fetch:
      return max_fetch;
    default:
      return std::nullopt;
  }
}

bool carries_broker_addresses(api_key key, std::int16_t version) noexcept {
  const auto max = max_rewritable_version(key);
  if (!max || version < 0 || version > *max) return false;
  if (key == api_key::produce) return version >= first_produce_with_endpoints;
  if (key == api_key::fetch) return version >= first_fetch_with_endpoints;
  return true;
}

namespace {

// Parses one response frame that carries broker addresses; the caller checks `ok()` and then reads the
// endpoints. `key` and `version` must pass carries_broker_addresses.
response_parser parse_response(api_key key, std::int16_t version, bytes_view frame) {
  // Both tables know every key that gets here.
  const int header_version = response_header_version(key, version).value_or(0);
  const bool flexible = version >= first_flexible_version(key).value_or(0);
  response_parser p(frame, version, flexible, detail::open_response_frame(frame, header_version));
  if (p.ok()) {
    switch (key) {
      case api_key::metadata:
        p.metadata();
        break;
      case api_key::find_coordinator:
        p.find_coordinator();
        break;
      case api_key::describe_cluster:
        p.describe_cluster();
        break;
      case api_key::produce:
        p.produce();
        break;
      case api_key::fetch:
        p.fetch();
        break;
      default:
        break;
    }
  }
  return p;
}

}  // namespace

bool rewrite_response(api_key key, std::int16_t version, bytes_view frame, const broker_mapper& map,
                      std::vector<unsigned char>& out, boost::system::error_code& ec) {
  ec.clear();
  if (!carries_broker_addresses(key, version)) {
    const auto max = max_rewritable_version(key);
    if (max && version >= 0 && version <= *max) return false;  // older Produce / Fetch: nothing to rewrite
    ec = wire_errc::unsupported_version;
    return false;
  }
  const auto p = parse_response(key, version, frame);
  if (!p.ok()) {
    ec = p.error();
    return false;
  }
  std::vector<detail::patch> patches;
  if (!p.map_endpoints(map, patches, ec)) return false;
  if (patches.empty()) return false;
  return detail::apply_patches(frame, patches, out, ec);
}

std::vector<advertised_broker> advertised_brokers(api_key key, std::int16_t version, bytes_view frame,
                                                  boost::system::error_code& ec) {
  ec.clear();
  if (!carries_broker_addresses(key, version)) {
    const auto max = max_rewritable_version(key);
    if (!max || version < 0 || version > *max) ec = wire_errc::unsupported_version;
    return {};
  }
  const auto p = parse_response(key, version, frame);
  if (!p.ok()) {
    ec = p.error();
    return {};
  }
  return p.endpoints();
}

}  // namespace kws::kafka
