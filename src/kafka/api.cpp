#include <kws/frame.hpp>
#include <kws/kafka/api.hpp>

#include <limits>

namespace kws::kafka {

namespace {

struct api_info {
  api_key key;
  std::string_view name;
  std::int16_t first_flexible;  ///< never_flexible when no version is flexible
};

constexpr std::int16_t never_flexible = std::numeric_limits<std::int16_t>::max();

// From the JSON message schemas of Apache Kafka ("flexibleVersions"), for the APIs a client of this project
// may send. Keys missing here are reported as unknown rather than guessed.
constexpr api_info api_table[] = {
    {api_key::produce, "produce", 9},
    {api_key::fetch, "fetch", 12},
    {api_key::list_offsets, "list_offsets", 6},
    {api_key::metadata, "metadata", 9},
    {api_key::controlled_shutdown, "controlled_shutdown", 3},
    {api_key::offset_commit, "offset_commit", 8},
    {api_key::offset_fetch, "offset_fetch", 6},
    {api_key::find_coordinator, "find_coordinator", 3},
    {api_key::join_group, "join_group", 6},
    {api_key::heartbeat, "heartbeat", 4},
    {api_key::leave_group, "leave_group", 4},
    {api_key::sync_group, "sync_group", 4},
    {api_key::describe_groups, "describe_groups", 5},
    {api_key::list_groups, "list_groups", 3},
    {api_key::sasl_handshake, "sasl_handshake", never_flexible},
    {api_key::api_versions, "api_versions", 3},
    {api_key::create_topics, "create_topics", 5},
    {api_key::delete_topics, "delete_topics", 4},
    {api_key::delete_records, "delete_records", 2},
    {api_key::init_producer_id, "init_producer_id", 2},
    {api_key::offset_for_leader_epoch, "offset_for_leader_epoch", 4},
    {api_key::add_partitions_to_txn, "add_partitions_to_txn", 3},
    {api_key::add_offsets_to_txn, "add_offsets_to_txn", 3},
    {api_key::end_txn, "end_txn", 3},
    {api_key::txn_offset_commit, "txn_offset_commit", 3},
    {api_key::describe_configs, "describe_configs", 4},
    {api_key::sasl_authenticate, "sasl_authenticate", 2},
    {api_key::create_partitions, "create_partitions", 2},
    {api_key::delete_groups, "delete_groups", 2},
    {api_key::offset_delete, "offset_delete", never_flexible},
    {api_key::describe_cluster, "describe_cluster", 0},
};

const api_info* find(api_key key) noexcept {
  for (const auto& info : api_table)
    if (info.key == key) return &info;
  return nullptr;
}

}  // namespace

std::string_view api_name(api_key key) noexcept {
  const api_info* info = find(key);
  return info ? info->name : std::string_view{"unknown"};
}

std::optional<std::int16_t> first_flexible_version(api_key key) noexcept {
  const api_info* info = find(key);
  if (!info) return std::nullopt;
  return info->first_flexible;
}

std::optional<int> response_header_version(api_key key, std::int16_t version) noexcept {
  if (key == api_key::api_versions) return 0;
  const auto flexible = first_flexible_version(key);
  if (!flexible) return std::nullopt;
  return version >= *flexible ? 1 : 0;
}

request_header peek_request_header(bytes_view body, boost::system::error_code& ec) noexcept {
  ec.clear();
  request_header h;
  reader r(body);
  h.key = static_cast<api_key>(r.int16());
  h.version = r.int16();
  h.correlation_id = r.int32();
  if (!r.ok()) {
    ec = r.error();
    return h;
  }
  // Header v0 (no client id) survives only in ControlledShutdown v0.
  if (h.key == api_key::controlled_shutdown && h.version == 0) {
    h.header_bytes = r.position();
    return h;
  }
  h.client_id = r.nullable_string();
  if (!r.ok()) {
    ec = r.error();
    h.client_id.reset();
    return h;
  }
  const auto flexible = first_flexible_version(h.key);
  if (!flexible) return h;  // header_bytes stays 0: tagged fields may follow, we cannot tell
  if (h.version >= *flexible) r.skip_tagged_fields();
  if (!r.ok()) {
    ec = r.error();
    return h;
  }
  h.header_bytes = r.position();
  return h;
}

bool expects_response(bytes_view frame) noexcept {
  if (frame.size() < frame_header_bytes + 8) return true;
  const auto body = frame.subspan(frame_header_bytes);
  boost::system::error_code ec;
  const auto h = peek_request_header(body, ec);
  if (ec || h.key != api_key::produce || h.header_bytes == 0) return true;
  reader r(body.subspan(h.header_bytes));
  // Produce v3+ starts with transactional_id (compact from v9, the first flexible version), then acks.
  if (h.version >= 9) {
    (void)r.compact_nullable_string();
  } else if (h.version >= 3) {
    (void)r.nullable_string();
  }
  const auto acks = r.int16();
  return !r.ok() || acks != 0;
}

}  // namespace kws::kafka
