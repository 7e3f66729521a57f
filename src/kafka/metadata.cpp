#include <kws/kafka/metadata.hpp>

namespace kws::kafka {

std::vector<unsigned char> encode_broker_list_request(std::int32_t correlation_id,
                                                      std::string_view client_id) {
  std::vector<unsigned char> frame;
  writer w(frame);
  const auto size_at = w.placeholder_int32();
  // Request header v1: api key, version, correlation id, client id.
  w.int16(static_cast<std::int16_t>(api_key::metadata));
  w.int16(broker_list_metadata_version);
  w.int32(correlation_id);
  w.nullable_string(client_id);
  w.array_count(0);  // topics: none
  w.patch_int32(size_at, static_cast<std::int32_t>(frame.size() - 4));
  return frame;
}

std::vector<advertised_broker> decode_metadata_brokers(std::int16_t version, bytes_view frame,
                                                       boost::system::error_code& ec) {
  // Metadata's addresses are its broker list and nothing else, so the rewrite's parse is the decoder.
  return advertised_brokers(api_key::metadata, version, frame, ec);
}

}  // namespace kws::kafka
