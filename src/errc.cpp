#include <kws/errc.hpp>

#include <string>

namespace kws {
namespace {

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "kws"; }

  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::invalid_message_type:
        return "invalid WebSocket message type: Kafka frames must be binary messages";
      case errc::negative_frame_size:
        return "negative Kafka frame size";
      case errc::frame_too_large:
        return "Kafka frame size above the configured maximum";
      case errc::frame_size_mismatch:
        return "WebSocket message length does not match its Kafka size header";
      case errc::truncated_frame:
        return "stream ended inside a Kafka frame";
      case errc::invalid_address:
        return "invalid broker address: expected host:port or a ws:// or wss:// URL";
      case errc::unusable_response:
        return "a response that had to be rewritten could not be";
      case errc::upgrade_declined:
        return "the HTTP request was answered without a WebSocket upgrade";
    }
    return "unknown kws error";
  }
};

}  // namespace

const boost::system::error_category& error_category() noexcept {
  static const category instance;
  return instance;
}

}  // namespace kws
