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
      case errc::invalid_proxy_url:
        return "invalid forward proxy URL: expected [http://][user:password@]host[:port]";
      case errc::proxy_unreachable:
        return "cannot connect to the forward proxy";
      case errc::proxy_auth_required:
        return "the forward proxy requires authentication, or refused the credentials given";
      case errc::proxy_refused:
        return "the forward proxy refused the tunnel (CONNECT answered with a status other than 2xx)";
      case errc::proxy_closed:
        return "the forward proxy closed the connection before answering CONNECT";
      case errc::proxy_timeout:
        return "the forward proxy did not answer CONNECT within the handshake timeout";
      case errc::proxy_bad_response:
        return "the forward proxy's answer to CONNECT was not usable HTTP";
      case errc::tls_on_kafka_port:
        return "the client spoke TLS at a plain Kafka port";
      case errc::http_on_kafka_port:
        return "the client spoke HTTP at a Kafka port";
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
