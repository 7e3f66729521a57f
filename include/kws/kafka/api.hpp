// Kafka API keys and the request header, with no I/O. See https://kafka.apache.org/protocol#protocol_api_keys
// and KIP-482 / KIP-511 for the header versions.
#pragma once

#include <kws/kafka/wire.hpp>

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <optional>
#include <string_view>

namespace kws::kafka {

enum class api_key : std::int16_t {
  produce = 0,
  fetch = 1,
  list_offsets = 2,
  metadata = 3,
  leader_and_isr = 4,
  stop_replica = 5,
  update_metadata = 6,
  controlled_shutdown = 7,
  offset_commit = 8,
  offset_fetch = 9,
  find_coordinator = 10,
  join_group = 11,
  heartbeat = 12,
  leave_group = 13,
  sync_group = 14,
  describe_groups = 15,
  list_groups = 16,
  sasl_handshake = 17,
  api_versions = 18,
  create_topics = 19,
  delete_topics = 20,
  delete_records = 21,
  init_producer_id = 22,
  offset_for_leader_epoch = 23,
  add_partitions_to_txn = 24,
  add_offsets_to_txn = 25,
  end_txn = 26,
  write_txn_markers = 27,
  txn_offset_commit = 28,
  describe_acls = 29,
  create_acls = 30,
  delete_acls = 31,
  describe_configs = 32,
  alter_configs = 33,
  alter_replica_log_dirs = 34,
  describe_log_dirs = 35,
  sasl_authenticate = 36,
  create_partitions = 37,
  create_delegation_token = 38,
  renew_delegation_token = 39,
  expire_delegation_token = 40,
  describe_delegation_token = 41,
  delete_groups = 42,
  elect_leaders = 43,
  incremental_alter_configs = 44,
  alter_partition_reassignments = 45,
  list_partition_reassignments = 46,
  offset_delete = 47,
  describe_client_quotas = 48,
  alter_client_quotas = 49,
  describe_user_scram_credentials = 50,
  alter_user_scram_credentials = 51,
  describe_quorum = 55,
  alter_partition = 56,
  update_features = 57,
  envelope = 58,
  describe_cluster = 60,
  describe_producers = 61,
  describe_transactions = 65,
  list_transactions = 66,
  allocate_producer_ids = 67,
};

/// Lower-case name such as "api_versions", or "unknown".
std::string_view api_name(api_key key) noexcept;

/// First flexible (KIP-482) version of an API, or std::nullopt when this table does not know the key. A
/// request at or above that version uses request header v2 (tagged fields after the client id).
std::optional<std::int16_t> first_flexible_version(api_key key) noexcept;

/// Response header version for a request: 1 (tagged fields) for flexible versions, else 0. ApiVersions always
/// answers with header v0 so that a client can parse it before it knows what the broker speaks (KIP-511).
/// std::nullopt for an API this table does not know.
std::optional<int> response_header_version(api_key key, std::int16_t version) noexcept;

/// The request header fields a relay or broker needs before decoding a body.
struct request_header {
  api_key key{};
  std::int16_t version = 0;
  std::int32_t correlation_id = 0;
  std::optional<std::string_view> client_id;  ///< view into the peeked bytes
  /// Bytes of the header, i.e. where the body starts; 0 when unknown (a flexible header of an API that the
  /// table does not know, whose tagged fields cannot be located).
  std::size_t header_bytes = 0;
};

/// Peeks the request header v1/v2 at the start of `body` (a Kafka frame without its 4-byte size). Needs at
/// least api key, version and correlation id (8 bytes); sets `ec` to wire_errc::truncated otherwise. The
/// client id and, for flexible versions, the tagged fields are read when present and well formed.
request_header peek_request_header(bytes_view body, boost::system::error_code& ec) noexcept;

/// True unless `frame` (a whole request, size header included) gets no response: Produce with acks=0. A
/// frame too short or malformed to tell counts as expecting one.
bool expects_response(bytes_view frame) noexcept;

/// Kafka error codes used by this project (https://kafka.apache.org/protocol#protocol_error_codes).
enum class error_code : std::int16_t {
  none = 0,
  offset_out_of_range = 1,
  corrupt_message = 2,
  unknown_topic_or_partition = 3,
  invalid_fetch_size = 4,
  leader_not_available = 5,
  not_leader_for_partition = 6,
  request_timed_out = 7,
  message_too_large = 10,
  invalid_topic_exception = 17,
  record_list_too_large = 18,
  invalid_required_acks = 21,
  unsupported_version = 35,
  invalid_request = 42,
  unsupported_compression_type = 76,
};

}  // namespace kws::kafka
