// kws::frame_hook: what a relay asks about each whole Kafka frame it moves, with no I/O. The relay calls it
// for every request (client -> broker) and every response (broker -> client); the hook decides whether a
// frame goes on as it is, goes on replaced, or (for requests) is answered or dropped without reaching the
// broker. It also keeps the requests in flight, which tells the relay when every answer has arrived.
#pragma once

#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kws {

/// A hook's verdict on one frame.
enum class frame_action {
  forward,  ///< pass the frame on unchanged
  replace,  ///< pass the replacement on instead
  answer,   ///< a request the hook answers itself: its response waits in take_local_response()
  drop,     ///< a request that goes nowhere and gets no response; a response the client never gets
  fail,     ///< a response that cannot be passed on: the connection ends with `error`
};

/// Severity of a hook's note for the log.
enum class log_level { trace, debug, info, warn, error };

class frame_hook {
 public:
  virtual ~frame_hook() = default;

  /// One whole request frame (size header included) from the client. For `replace`, the new frame is left
  /// in `replacement`.
  virtual frame_action on_request(std::span<const unsigned char> frame,
                                  std::vector<unsigned char>& replacement) = 0;

  /// One whole response frame from the broker. For `replace` the new frame is left in `replacement`; for
  /// `fail`, `error` says why (in words for the log).
  virtual frame_action on_response(std::span<const unsigned char> frame,
                                   std::vector<unsigned char>& replacement, std::string& error) = 0;

  /// A response the hook made itself, when it is the client's next one in request order.
  virtual std::optional<std::vector<unsigned char>> take_local_response() = 0;

  /// False while the requests in flight fill the hook's bound: the relay stops reading the client until a
  /// response goes out (backpressure, not an error).
  virtual bool can_take_request() const = 0;

  /// Requests the client still waits for an answer to: sent to the broker, or answered locally but not yet
  /// written to the client.
  virtual std::size_t in_flight() const = 0;

  /// While the hook waits on a request whose answer it times: how long the broker may take before the relay
  /// calls on_response_timeout (zero: nothing timed). The relay asks after each request it forwards and each
  /// response, and keeps one timer only while this is not zero.
  virtual std::chrono::milliseconds response_timeout() const { return {}; }
  /// The timed request went unanswered for response_timeout(). The hook may now have a local answer ready
  /// and take requests again; the relay delivers the one and resumes the other.
  virtual void on_response_timeout() {}

  /// True once the broker connection holds state of the client's that a new connection would not have
  /// (a SASL authentication begun or done). Then a broker that closes between requests ends the relay
  /// instead of being dialled again, so that the client reconnects and authenticates itself.
  virtual bool bound_to_broker_connection() const { return false; }

  /// Where the hook's notes go (frames passed through because they matched nothing tracked, at debug);
  /// notes below `min_level` are not even formatted.
  using log_function = std::function<void(log_level, std::string_view)>;
  void set_log(log_function log, log_level min_level) {
    log_ = std::move(log);
    min_level_ = min_level;
  }

 protected:
  template <class MakeText>
  void note(log_level level, MakeText&& make_text) const {
    if (log_ && level >= min_level_) log_(level, make_text());
  }

 private:
  log_function log_;
  log_level min_level_ = log_level::info;
};

}  // namespace kws
