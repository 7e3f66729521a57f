// What the tracker does for a Kafka 0.8 broker beyond answering ApiVersions: Fetch requests that name a topic
// more than once are merged into one entry per topic (that broker never answers them) and their responses put
// back in the client's shape; requests outside the profile are answered here, with UNSUPPORTED_VERSION,
// instead of reaching a broker that would leave them unanswered.
#pragma once

#include <kws/kafka/api.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace kws::kafka::profile_0_8 {

/// The topics and partitions of a Fetch as the client sent them, in its order.
struct fetch_layout {
  struct topic {
    std::string name;
    std::vector<std::int32_t> partitions;
  };
  std::vector<topic> topics;
};

/// True when `key` at `version` is one the Kafka 0.8 broker answers (ApiVersions aside).
bool serves(api_key key, std::int16_t version) noexcept;

/// The consumer-group APIs (OffsetCommit to ListGroups).
bool is_group_api(api_key key) noexcept;

/// The requests kafka-python 2.0 sends, after an unanswered ApiVersions v0, to tell Kafka 0.9 (ListGroups
/// v0), 0.8.2 (FindCoordinator v0) and 0.8.1 (OffsetFetch v0) from 0.8.0: any answer makes it take the
/// broker for that version, so only silence lets it settle on 0.8.0.
bool is_version_probe(api_key key, std::int16_t version) noexcept;

/// For a Fetch v0 frame that names a topic more than once: the same request with one entry per topic
/// (partitions in the order they came) in `merged`, and the client's layout in `layout`; returns true. False
/// when no topic repeats or the request cannot be read (then it goes on as it is).
bool merge_fetch(bytes_view frame, const request_header& h, std::vector<unsigned char>& merged,
                 fetch_layout& layout);

/// The broker's Fetch v0 response to a merged request, rebuilt in the client's layout into `out`. False, with
/// `why`, when the response cannot be read or lacks a partition the client asked for.
bool restore_fetch(bytes_view frame, const fetch_layout& layout, std::vector<unsigned char>& out,
                   std::string& why);

/// The proxy's answer to a request the profile does not serve (a whole frame, size header included): the
/// response of that API and version with UNSUPPORTED_VERSION in its error fields, for the group APIs at
/// their versions before flexible encoding; for any other, the correlation id and the error code alone,
/// which responses that start with an error code read as that error, and the others fail to parse. `body`
/// is the frame without its size header.
std::vector<unsigned char> unsupported_answer(const request_header& h, bytes_view body);

}  // namespace kws::kafka::profile_0_8
