// Metadata as a client of the cluster asks for it, with no I/O: the request for the broker list alone and the
// broker list of the answer. For a program that learns a cluster's brokers itself (the gateway asks a
// bootstrap server when a client names a node id it has not seen). Layouts: the Metadata request and
// response at https://kafka.apache.org/protocol#The_Messages_Metadata.
#pragma once

#include <kws/kafka/api.hpp>
#include <kws/kafka/rewrite.hpp>
#include <kws/kafka/wire.hpp>

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <string_view>
#include <vector>

namespace kws::kafka {

/// The version of the request encode_broker_list_request makes: v1, the first that can ask for no topics
/// (an empty array; v1's null array means every topic), which every broker since Kafka 0.10 answers.
inline constexpr std::int16_t broker_list_metadata_version = 1;

/// A whole Metadata request frame (size prefix, request header v1, body) at broker_list_metadata_version
/// that asks for no topics: its answer lists the brokers and nothing else.
std::vector<unsigned char> encode_broker_list_request(std::int32_t correlation_id,
                                                      std::string_view client_id);

/// The brokers a Metadata response frame (size prefix included) to a request of `version` lists, in frame
/// order; hosts are views into `frame`. The whole frame is parsed and checked as rewrite_response parses it
/// (versions 0 up to max_rewritable_version(api_key::metadata)); on a frame that does not parse, sets `ec`
/// and returns none.
std::vector<advertised_broker> decode_metadata_brokers(std::int16_t version, bytes_view frame,
                                                       boost::system::error_code& ec);

}  // namespace kws::kafka
