// kws::relay: one bidirectional pump between a Kafka client and a broker, one side a TCP socket (the plain
// Kafka byte stream, or the same inside TLS), the other a WebSocket connection (one Kafka frame per binary
// message). The proxy runs it with the client on TCP; the gateway runs the mirror image, with the client on
// WebSocket.
#pragma once

#include <kws/buffer_budget.hpp>
#include <kws/connection.hpp>
#include <kws/frame.hpp>
#include <kws/frame_hook.hpp>
#include <kws/tls_socket.hpp>

#include <boost/asio/ip/tcp.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace kws {

/// Running totals that every relay given them adds to as frames move, for a process's monitoring (the apps'
/// metrics endpoint reads them from another thread). Plain relaxed atomics: one frame costs two relaxed adds
/// and no lock. `relay_report` has the same figures per relay, but only when the relay ends.
struct relay_counters {
  /// Requests read from clients.
  std::atomic<std::uint64_t> up_bytes{0};
  std::atomic<std::uint64_t> up_frames{0};
  /// Responses written to clients (the broker's and local answers).
  std::atomic<std::uint64_t> down_bytes{0};
  std::atomic<std::uint64_t> down_frames{0};
  /// Broker connections opened again after the broker closed between requests.
  std::atomic<std::uint64_t> reconnects{0};
};

struct relay_options {
  /// Close both sides when no byte moved either way for this long (0: never).
  std::chrono::milliseconds idle_timeout{0};
  /// After the client stops sending, how long responses to its requests may take before the relay closes. A
  /// client that closed entirely looks the same (until a write to it fails), so this is kept short.
  std::chrono::milliseconds half_close_timeout{std::chrono::seconds(2)};
  /// After the relay has sent everything to a TCP peer and shut down its sending side, how long it keeps
  /// reading (and discarding) until that peer closes too, so that the kernel delivers the tail instead of
  /// answering unread input with a reset. 0: close at once.
  std::chrono::milliseconds linger_timeout{std::chrono::seconds(5)};
  /// Largest Kafka frame body accepted from the TCP side.
  std::size_t max_frame_bytes = default_max_frame_bytes;
  /// Shared by every relay of a process (may be null): requests arriving from clients reserve their length
  /// here before their body is read (over WebSocket from each WebSocket frame's header, see
  /// kws::connection::set_buffer_budget; over TCP from the Kafka size header of a request that does not fit
  /// the read that brought its header: one that arrives whole within a read is held only in the side's read
  /// buffer, at most 64 KiB per connection), and a client is not read for such a request while the budget
  /// is spent.
  std::shared_ptr<kws::buffer_budget> buffer_budget{};
  /// The same for responses arriving from brokers (may be null). Give a budget of its own, not buffer_budget:
  /// a response that waited for budget held by requests only partly received (whose clients may in turn wait
  /// for that response) could wait for good.
  std::shared_ptr<kws::buffer_budget> response_budget{};
  /// Shared running totals (may be null: nothing is counted beyond the relay's own report).
  std::shared_ptr<relay_counters> counters{};
  /// Where the relay's and the hook's notes go (may be empty), and the lowest level worth formatting.
  frame_hook::log_function log{};
  log_level min_log_level = log_level::info;
};

/// The side a relay's end came from.
enum class relay_side : std::uint8_t { none, client, broker };

/// How a relay ended, for programs: `relay_report::cause` says the same in words, with its details.
enum class relay_end : std::uint8_t {
  closed,                ///< `side` closed in order with nothing owed (none: the relay closed both)
  closed_owing,          ///< `side` closed while responses were still owed to the client
  reset,                 ///< `side` reset the connection
  closed_while_sending,  ///< `side` closed while data was being written to it
  ping_timeout,          ///< `side` stopped answering WebSocket pings
  tcp_timeout,           ///< `side` stopped acknowledging data
  protocol_error,        ///< `side` broke the wire contract; `error` says how (text message, bad size, ...)
  truncated,             ///< `side` closed in the middle of a Kafka frame
  failed,                ///< `side`'s connection failed otherwise; see `error`
  reconnect_failed,      ///< the broker could not be dialled again
  unusable_response,     ///< a response that had to be rewritten could not be
  idle,                  ///< no traffic either way for the idle timeout
  shut_down,             ///< a drain: every response delivered, or the drain's timeout ran out
  stopped,               ///< stop_now; the cause is the caller's reason
  out_of_memory,         ///< memory for a frame could not be had
};

/// "closed", "closed_owing", "protocol_error", ...: the enumerator's name, for logs and metrics.
const char* to_string(relay_end end) noexcept;
/// "none", "client", "broker".
const char* to_string(relay_side side) noexcept;

/// What a relay did, reported once when it ends.
struct relay_report {
  std::uint64_t up_bytes = 0;  ///< requests read from the client
  std::uint64_t up_frames = 0;
  std::uint64_t down_bytes = 0;  ///< responses written to the client (the broker's and local answers)
  std::uint64_t down_frames = 0;
  /// Requests answered by the hook without reaching the broker.
  std::uint64_t local_answers = 0;
  /// Times the broker connection was opened again after it closed between requests.
  std::uint64_t reconnects = 0;
  std::chrono::steady_clock::duration duration{};
  /// Why it ended, in words for the log: "client closed", "broker closed (code 1001 going away)", "broker did
  /// not answer pings", "shut down, every response delivered", ...
  std::string cause;
  /// The first failure, empty when the relay ended in an orderly way.
  boost::system::error_code error;
  /// The cause as data: what ended the relay, and on which side.
  relay_end end = relay_end::closed;
  relay_side side = relay_side::none;
};

/// Opens the broker side again, with whatever retries the caller wants, and completes once.
template <class Connection>
using reconnect_function =
    std::function<void(std::function<void(boost::system::error_code, Connection)> on_connected)>;

/// Pumps frames both ways with backpressure: it reads from one side only while the other side has taken
/// (nearly) everything read before. Memory per relay: up, the request being read, and what waits in the
/// broker connection's write buffer (frames are taken there while under 64 KiB wait: at most that plus one
/// frame); down, one frame towards a WebSocket client, and towards a TCP client at most two batches of 64 KiB
/// plus one frame each (responses that arrive while one batch is written gather in the next, and the broker
/// is not read while that is full).
///
/// - Each whole request goes through the hook, then to the broker as it is or replaced, or is answered (or
///   dropped) by the hook. Responses go through the hook too and reach the client in request order, local
///   answers included. While the hook's requests in flight are at its bound, the client is not read.
/// - A bad frame size from either side ends the relay; one WebSocket message is exactly one frame.
/// - The broker closing while no request is in flight (edge platforms recycle connections) keeps the client
///   connected when a reconnect function is given: the next request opens a new broker connection (not once
///   the hook says the connection holds the client's authentication: see
///   frame_hook::bound_to_broker_connection). With requests in flight, the client's connection is closed
///   after everything received was delivered.
/// - A TCP client shutting down its sending side ends the relay once every request it sent that expects a
///   response has been answered (Produce with acks=0 expects none), or after `half_close_timeout`.
///
/// The sides must share one serialising executor (an io_context run by one thread, or a strand), and every
/// member function must be called on it.
class relay : public std::enable_shared_from_this<relay> {
 public:
  using done_handler = std::function<void(const relay_report&)>;

  /// Kafka client over TCP, broker over WebSocket (the proxy). `hook` may be null: frames pass unchanged
  /// and only the responses owed are counted.
  static std::shared_ptr<relay> create(boost::asio::ip::tcp::socket client, connection broker,
                                       relay_options options, std::shared_ptr<frame_hook> hook,
                                       done_handler on_done, reconnect_function<connection> reconnect = {});

  /// Kafka client over WebSocket, broker over TCP (the gateway).
  static std::shared_ptr<relay> create(connection client, boost::asio::ip::tcp::socket broker,
                                       relay_options options, std::shared_ptr<frame_hook> hook,
                                       done_handler on_done,
                                       reconnect_function<boost::asio::ip::tcp::socket> reconnect = {});

  /// Kafka client over TCP with TLS, its handshake done (kws::async_tls_handshake), broker over WebSocket
  /// (the proxy serving security.protocol=SSL clients).
  static std::shared_ptr<relay> create(tls_socket client, connection broker, relay_options options,
                                       std::shared_ptr<frame_hook> hook, done_handler on_done,
                                       reconnect_function<connection> reconnect = {});

  /// Kafka client over WebSocket, broker over TCP with TLS (the gateway to a cluster that listens with TLS).
  static std::shared_ptr<relay> create(connection client, tls_socket broker, relay_options options,
                                       std::shared_ptr<frame_hook> hook, done_handler on_done,
                                       reconnect_function<tls_socket> reconnect = {});

  virtual ~relay() = default;

  /// Starts both directions.
  virtual void start() = 0;
  /// Orderly stop: no new requests are read; responses to requests already forwarded still reach the
  /// client for up to `timeout`; then the broker side is closed (WebSocket code 1001, going away).
  virtual void drain(std::chrono::milliseconds timeout) = 0;
  /// Requests the client still waits for an answer to.
  virtual std::size_t in_flight() const = 0;
  /// Ends at once, without closing handshakes: both sides are closed and the done handler runs before this
  /// returns. The report's cause is `why` (plus the responses not delivered), unless the relay was already
  /// closing for another reason, whose cause it keeps.
  virtual void stop_now(const std::string& why) = 0;
};

}  // namespace kws
