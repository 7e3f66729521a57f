// kws::relay: one bidirectional pump between a client's TCP socket (the plain Kafka byte stream) and a
// WebSocket connection (one Kafka frame per binary message). The proxy and the gateway both run on it.
#pragma once

#include <kws/connection.hpp>
#include <kws/frame.hpp>

#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace kws {

struct relay_options {
  /// Close both sides when no byte moved either way for this long (0: never).
  std::chrono::milliseconds idle_timeout{0};
  /// After the client stops sending, how long responses to its requests may take before the relay closes.
  std::chrono::milliseconds half_close_timeout{std::chrono::seconds(10)};
  /// After the relay has sent everything to the client and shut down its sending side, how long it keeps
  /// reading (and discarding) until the client closes too, so that the kernel delivers the tail instead of
  /// answering unread input with a reset. 0: close at once.
  std::chrono::milliseconds linger_timeout{std::chrono::seconds(5)};
  /// Largest Kafka frame body accepted from the TCP side.
  std::size_t max_frame_bytes = default_max_frame_bytes;
};

/// What a relay did, reported once when it ends.
struct relay_report {
  std::uint64_t up_bytes = 0;  ///< TCP -> WebSocket
  std::uint64_t up_frames = 0;
  std::uint64_t down_bytes = 0;  ///< WebSocket -> TCP
  std::uint64_t down_frames = 0;
  std::chrono::steady_clock::duration duration{};
  /// Why it ended, for the log: "client closed", "broker closed", "drained", or the failure.
  std::string cause;
  /// The first failure, empty when the relay ended in an orderly way.
  boost::system::error_code error;
};

/// Pumps frames both ways with backpressure: it reads from one side only while the other side has taken
/// everything read before, so memory per relay is one frame each way plus small fixed buffers.
///
/// - TCP -> WebSocket: each complete frame becomes one binary message; a bad size ends the relay.
/// - WebSocket -> TCP: each message is checked as one whole frame and written to the client in order.
/// - The client shutting down its sending side ends the relay only once every request it sent that expects
///   a response has been answered (Produce with acks=0 expects none), or after `half_close_timeout`.
/// - The broker closing: all it sent is delivered, then the client's connection is closed.
///
/// The socket and the connection must share one serialising executor (an io_context run by one thread, or
/// a strand), and every member function must be called on it.
class relay : public std::enable_shared_from_this<relay> {
 public:
  using done_handler = std::function<void(const relay_report&)>;

  static std::shared_ptr<relay> create(boost::asio::ip::tcp::socket client, connection broker,
                                       relay_options options, done_handler on_done);
  virtual ~relay() = default;

  /// Starts both directions.
  virtual void start() = 0;
  /// Orderly stop: no new requests are read; responses to requests already forwarded still reach the
  /// client for up to `timeout`; then the WebSocket is closed with 1001 (going away).
  virtual void drain(std::chrono::milliseconds timeout) = 0;
  /// Requests that expect a response and have not had one yet.
  virtual std::int64_t outstanding() const = 0;
};

/// True unless `frame` (size header included) is a request that gets no response: Produce with acks=0.
bool expects_response(std::span<const unsigned char> frame) noexcept;

}  // namespace kws
