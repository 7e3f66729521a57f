#include "server.hpp"

#include "cli.hpp"
#include "events.hpp"
#include "sasl.hpp"

#include <kws/accept.hpp>
#include <kws/accept_loop.hpp>
#include <kws/errc.hpp>
#include <kws/frame.hpp>
#include <kws/tls_socket.hpp>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/websocket/error.hpp>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <deque>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace kws::devbroker {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

// Kafka's connections.max.idle.ms default.
constexpr auto idle_timeout = std::chrono::minutes(10);
// A client that connects to a TLS listener has this long to finish its handshake.
constexpr auto tls_handshake_timeout = std::chrono::seconds(10);
// Buffers above this are released after use, so an idle connection does not keep a large frame's memory.
constexpr std::size_t keep_buffer_bytes = 1u << 20;
// --edge-quirks: how long after it came in a Produce's messages are stored, its response written. Requests
// pipelined behind it meanwhile read the same log end.
constexpr auto edge_append_delay = std::chrono::milliseconds(20);

std::string to_string(const tcp::endpoint& ep) {
  const auto a = ep.address();
  return a.is_v6() ? fmt::format("[{}]:{}", a.to_string(), ep.port())
                   : fmt::format("{}:{}", a.to_string(), ep.port());
}

const char* to_string(listener_kind k) {
  return k == listener_kind::ws ? "ws" : "tcp";
}

bool is_teardown(const error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::operation_aborted ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == websocket::error::closed || ec == beast::error::timeout || ec == http::error::end_of_stream;
}

class session;

struct shared_state {
  std::shared_ptr<broker> b;
  std::size_t max_frame_bytes = default_max_frame_bytes;
  std::chrono::milliseconds ws_close_idle_after{0};
  /// TLS on the TCP listeners; null for plain TCP.
  std::shared_ptr<asio::ssl::context> tcp_tls;
  /// SASL on the TCP listeners; null when off.
  std::shared_ptr<const sasl::users> sasl_users;
  std::uint64_t next_id = 1;
  /// Sessions with a long-poll Fetch outstanding; looked at after every append.
  std::vector<std::weak_ptr<session>> waiters;
  bool notify_posted = false;
};

// One client connection: read a request, hand it to the broker, write the response, read the next. Only one
// request is in progress at a time (as a Kafka broker mutes a connection until it has answered), so at most
// one read or one write is outstanding on the stream and responses stay in request order. A long-poll Fetch
// parks the connection on a timer instead of blocking the io_context.
class session : public std::enable_shared_from_this<session> {
 public:
  session(std::shared_ptr<shared_state> state, const asio::any_io_executor& ex, std::int32_t node,
          listener_kind kind, std::string peer)
      : state_(std::move(state)),
        id_(state_->next_id++),
        node_(node),
        kind_(kind),
        peer_(std::move(peer)),
        fetch_timer_(ex),
        append_timer_(ex) {
    if (kind_ == listener_kind::tcp && state_->sasl_users) gate_.emplace(*state_->sasl_users);
    app::log_event(spdlog::level::info, {.conn = id_, .event = "open", .fields = endpoint_fields()});
  }

  virtual ~session() {
    // The one line per connection end, as the proxy's and the gateway's: up counts the requests read, down
    // the responses written. At warn level when the peer broke the protocol.
    const bool shut = cause_.empty();
    app::log_event(abnormal_ ? spdlog::level::warn : spdlog::level::info,
                   {.conn = id_,
                    .event = "closed",
                    .fields = endpoint_fields(),
                    .counts = app::connection_event::traffic{bytes_in_, frames_in_, bytes_out_, frames_out_},
                    .duration = std::chrono::steady_clock::now() - started_,
                    .end = shut ? "shut_down" : end_,
                    .side = shut ? "" : "client",
                    .cause = shut ? std::string("shut down") : cause_});
  }

  virtual void run() = 0;

  /// New data was appended somewhere: answer a parked fetch if it is now satisfied.
  void on_data() {
    if (pending_fetch_ && state_->b->fetch_ready(*pending_fetch_, node_)) finish_fetch();
  }
  bool waiting() const noexcept { return pending_fetch_ != nullptr; }
  asio::any_io_executor executor() { return fetch_timer_.get_executor(); }

 protected:
  virtual void read_next() = 0;
  /// Writes `out_`, then calls on_written.
  virtual void write_out() = 0;
  /// Ends the connection because of something the peer sent (already logged by the caller).
  virtual void close_for(const std::string& cause) = 0;

  /// The first cause wins; `end` is its name as a kws::relay_end's ("closed", "protocol_error", ...).
  void set_cause(std::string cause, std::string_view end) {
    if (!cause_.empty()) return;
    cause_ = std::move(cause);
    end_ = end;
  }

  std::vector<std::pair<std::string_view, std::string>> endpoint_fields() const {
    return {{"peer", peer_}, {"listener", to_string(kind_)}, {"node", std::to_string(node_)}};
  }

  /// A note about this connection, on a line of its own.
  void note(spdlog::level::level_enum level, std::string text) const {
    app::log_event(level, {.conn = id_, .cause = std::move(text)});
  }

  void fail(const error_code& ec, const char* what) {
    if (ec == asio::error::eof || ec == websocket::error::closed || ec == http::error::end_of_stream) {
      set_cause("peer closed", "closed");
    } else {
      set_cause(fmt::format("{}: {}", what, ec.message()),
                ec == asio::error::connection_reset ? "reset" : "failed");
    }
    note(is_teardown(ec) ? spdlog::level::debug : spdlog::level::warn,
         fmt::format("{}: {}", what, ec.message()));
  }

  /// Records a peer's protocol violation as the cause; the close line is then logged at warn level.
  void protocol_cause(std::string cause) {
    abnormal_ = true;
    set_cause(std::move(cause), "protocol_error");
  }

  void protocol_error(const std::string& cause) {
    protocol_cause(cause);
    close_for(cause);
  }

  void handle_frame(bytes_view frame) {
    ++frames_in_;
    bytes_in_ += frame.size();
    if (spdlog::should_log(spdlog::level::debug)) log_request(frame);
    if (gate_ && !through_gate(frame)) return;
    if (answering() && !is_produce(frame)) {
      // Only Produce requests overlap (--edge-quirks); anything else waits, unread behind it, for their
      // responses to go out.
      held_.assign(frame.begin(), frame.end());
      return;
    }
    dispatch(frame);
  }

  /// Deferred Produce requests or their responses still to be written (--edge-quirks).
  bool answering() const noexcept { return !deferred_.empty() || !queued_.empty() || writing_queued_; }

  void dispatch(bytes_view frame) {
    outcome o = state_->b->handle(frame, node_, kind_);
    switch (o.what) {
      case outcome::action::defer:
        note(spdlog::level::debug,
             fmt::format("edge quirk: produce (correlation id {}) read its log ends; stored in {}ms, while "
                         "the next request is read",
                         o.produce->correlation_id, edge_append_delay.count()));
        deferred_.push_back({std::move(o.produce), std::chrono::steady_clock::now() + edge_append_delay});
        if (deferred_.size() == 1) arm_append_timer();
        return read_next();
      case outcome::action::respond:
        if (!o.reason.empty()) note(spdlog::level::warn, o.reason);
        out_ = std::move(o.response);
        return write_out();
      case outcome::action::no_response:
        if (!o.reason.empty()) note(spdlog::level::info, o.reason);
        return read_next();
      case outcome::action::wait_fetch:
        return start_long_poll(std::move(o.fetch));
      case outcome::action::close:
        // Deferred Produce requests are dropped with the connection; a response being written goes out
        // first, since the stream takes one write at a time.
        deferred_.clear();
        queued_.clear();
        if (writing_queued_) {
          close_after_write_ = std::move(o.reason);
          return;
        }
        return protocol_error(o.reason);
    }
  }

  void on_written(const error_code& ec, std::size_t bytes) {
    if (ec) return fail(ec, "write");
    ++frames_out_;
    bytes_out_ += bytes;
    if (!close_after_write_.empty()) return protocol_error(std::exchange(close_after_write_, {}));
    if (writing_queued_) {
      writing_queued_ = false;
      return write_queued();
    }
    if (out_.capacity() > keep_buffer_bytes) std::vector<unsigned char>().swap(out_);
    read_next();
  }

  std::shared_ptr<shared_state> state_;
  const std::uint64_t id_;
  const std::int32_t node_;
  const listener_kind kind_;
  const std::string peer_;
  std::vector<unsigned char> out_;
  /// SASL on this connection (TCP listeners with --sasl-users): every frame goes through it first.
  std::optional<sasl::gate> gate_;

 private:
  /// True when the broker is to handle `frame`; otherwise the gate has answered or closed.
  bool through_gate(bytes_view frame) {
    sasl::gate_result g = gate_->handle(frame);
    if (!g.note.empty()) note(spdlog::level::info, g.note);
    switch (g.what) {
      case sasl::gate_result::action::pass:
        return true;
      case sasl::gate_result::action::respond:
        out_ = std::move(g.response);
        write_out();
        return false;
      case sasl::gate_result::action::respond_and_close:
        // Kafka answers first (the client shows the error), then closes.
        close_after_write_ = std::move(g.reason);
        out_ = std::move(g.response);
        write_out();
        return false;
      case sasl::gate_result::action::close:
        protocol_error(g.reason);
        return false;
    }
    return false;
  }

  // Which API and version each request is: what a client negotiated shows in the debug log.
  void log_request(bytes_view frame) const {
    if (frame.size() < frame_header_bytes) return;
    if (gate_ && gate_->expects_raw_token()) {
      note(spdlog::level::debug, fmt::format("raw SASL token bytes={}", frame.size()));
      return;
    }
    error_code ec;
    const auto h = kafka::peek_request_header(frame.subspan(frame_header_bytes), ec);
    if (ec) return;
    note(spdlog::level::debug,
         fmt::format("request {} v{} correlation_id={} bytes={}", kafka::api_name(h.key), h.version,
                     h.correlation_id, frame.size()));
  }

  static bool is_produce(bytes_view frame) {
    if (frame.size() < frame_header_bytes) return false;
    error_code ec;
    const auto h = kafka::peek_request_header(frame.subspan(frame_header_bytes), ec);
    return !ec && h.key == kafka::api_key::produce;
  }

  void arm_append_timer() {
    append_timer_.expires_at(deferred_.front().due);
    append_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      if (!ec) self->commit_front();
    });
  }

  void commit_front() {
    if (deferred_.empty()) return;  // dropped when the connection ended
    auto p = std::move(deferred_.front().produce);
    deferred_.pop_front();
    if (!deferred_.empty()) arm_append_timer();
    if (auto overwrote = state_->b->commit(*p); !overwrote.empty()) note(spdlog::level::info, overwrote);
    if (!p->response.empty()) queued_.push_back(std::move(p->response));
    write_queued();
  }

  // Writes the deferred Produce responses one at a time, in order; then the request held behind them.
  void write_queued() {
    if (writing_queued_) return;
    if (!queued_.empty()) {
      out_ = std::move(queued_.front());
      queued_.pop_front();
      writing_queued_ = true;
      return write_out();
    }
    if (deferred_.empty() && !held_.empty()) {
      const auto frame = std::move(held_);
      held_.clear();
      dispatch(frame);
    }
  }

  void start_long_poll(std::unique_ptr<fetch_request> req) {
    // Drop entries of sessions that are gone or no longer waiting, so the list stays as long as the number
    // of parked fetches even when nothing is produced.
    auto& w = state_->waiters;
    std::erase_if(w, [](const std::weak_ptr<session>& p) {
      auto s = p.lock();
      return !s || !s->waiting();
    });
    pending_fetch_ = std::move(req);
    const std::uint64_t generation = ++fetch_generation_;
    fetch_timer_.expires_after(std::chrono::milliseconds(pending_fetch_->max_wait_ms));
    fetch_timer_.async_wait([self = shared_from_this(), generation](const error_code& ec) {
      if (ec || generation != self->fetch_generation_ || !self->pending_fetch_) return;
      self->finish_fetch();
    });
    state_->waiters.push_back(weak_from_this());
  }

  void finish_fetch() {
    const auto req = std::move(pending_fetch_);
    ++fetch_generation_;  // a timer completion already queued must not answer again
    fetch_timer_.cancel();
    out_ = state_->b->fetch_response(*req, node_);
    write_out();
  }

  std::uint64_t frames_in_ = 0, bytes_in_ = 0, frames_out_ = 0, bytes_out_ = 0;
  std::string close_after_write_;  ///< the cause, when the connection ends once `out_` is written
  std::string cause_;
  std::string_view end_;  ///< cause_'s name as a relay_end's
  bool abnormal_ = false;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  asio::steady_timer fetch_timer_;
  std::unique_ptr<fetch_request> pending_fetch_;
  std::uint64_t fetch_generation_ = 0;
  // --edge-quirks: Produce requests whose messages are not stored yet, oldest first; their responses once
  // stored; a request read meanwhile that is no Produce.
  struct deferred_produce {
    std::unique_ptr<pending_produce> produce;
    std::chrono::steady_clock::time_point due;
  };
  std::deque<deferred_produce> deferred_;
  std::deque<std::vector<unsigned char>> queued_;
  bool writing_queued_ = false;
  std::vector<unsigned char> held_;
  asio::steady_timer append_timer_;
};

// TCP: the Kafka byte stream, a 4-byte size and then the body; over TLS when the listener has a certificate.
// `Stream` is beast::tcp_stream or kws::tls_socket (the library's TLS stream, which holds no buffer while the
// connection is idle; its deadline is a timer of the session's own).
template <class Stream>
class tcp_session final : public session {
  static constexpr bool tls = std::is_same_v<Stream, kws::tls_socket>;

 public:
  tcp_session(std::shared_ptr<shared_state> state, tcp::socket socket, std::int32_t node,
              std::string peer) requires(!tls)
      : session(std::move(state), socket.get_executor(), node, listener_kind::tcp, std::move(peer)),
        stream_(std::move(socket)) {}

  tcp_session(std::shared_ptr<shared_state> state, tcp::socket socket, std::int32_t node,
              std::string peer) requires(tls)
      : session(std::move(state), socket.get_executor(), node, listener_kind::tcp, std::move(peer)),
        accepted_(std::move(socket)),
        deadline_(executor()) {}

  void run() override {
    if constexpr (tls) {
      kws::tls_handshake_options o;
      o.side = kws::tls_handshake_options::role::server;
      o.host = peer_;
      o.timeout = tls_handshake_timeout;
      o.peer_name = "the client";
      kws::async_tls_handshake(std::move(*accepted_), state_->tcp_tls, std::move(o),
                               [self = self()](error_code ec, kws::tls_socket s, const std::string&) {
                                 self->accepted_.reset();
                                 // As Beast's deadline worded it.
                                 if (ec == asio::error::timed_out) ec = beast::error::timeout;
                                 self->stream_ = std::move(s);
                                 self->on_handshake(ec);
                               });
    } else {
      read_next();
    }
  }

 private:
  std::shared_ptr<tcp_session> self() { return std::static_pointer_cast<tcp_session>(shared_from_this()); }

  void on_handshake(const error_code& ec) {
    // The close line names the reason (a certificate the client refused, a plain-text client, a timeout).
    if (ec) return protocol_cause(fmt::format("TLS handshake failed: {}", ec.message()));
    read_next();
  }

  // The connection closes when the deadline passes with an operation pending, which then fails with Beast's
  // timeout.
  void expires_after(std::chrono::steady_clock::duration d) {
    if constexpr (tls) {
      deadline_.expires_after(d);
      deadline_.async_wait([weak = weak_from_this(), this](const error_code& ec) {
        const auto alive = weak.lock();
        if (ec || !alive) return;
        timed_out_ = true;
        stream_.close();
      });
    } else {
      beast::get_lowest_layer(stream_).expires_after(d);
    }
  }
  void expires_never() {
    if constexpr (tls) {
      deadline_.cancel();
    } else {
      beast::get_lowest_layer(stream_).expires_never();
    }
  }
  error_code timed(error_code ec) const {
    return tls && timed_out_ && ec == asio::error::operation_aborted ? error_code(beast::error::timeout) : ec;
  }

  void read_next() override {
    if (frame_.capacity() > keep_buffer_bytes) std::vector<unsigned char>().swap(frame_);
    expires_after(idle_timeout);
    asio::async_read(stream_, asio::buffer(header_),
                     beast::bind_front_handler(&tcp_session::on_header, self()));
  }

  void on_header(const error_code& ec, std::size_t) {
    if (ec) return fail(timed(ec), "read");
    const std::int32_t size = load_be32(header_.data());
    // Before SASL authentication, Kafka reads at most sasl.server.max.receive.size bytes per frame.
    if (gate_ && !gate_->authenticated() && size > 0 &&
        static_cast<std::size_t>(size) >
            std::min(state_->max_frame_bytes, sasl::max_unauthenticated_frame_bytes))
      return protocol_error(fmt::format("size header {} before SASL authentication: larger than {} bytes",
                                        size, sasl::max_unauthenticated_frame_bytes));
    if (auto bad = check_frame_size(size, state_->max_frame_bytes))
      return protocol_error(fmt::format("size header {}: {}", size, bad.message()));
    frame_.resize(frame_header_bytes + static_cast<std::size_t>(size));
    std::memcpy(frame_.data(), header_.data(), frame_header_bytes);
    asio::async_read(stream_,
                     asio::buffer(frame_.data() + frame_header_bytes, static_cast<std::size_t>(size)),
                     beast::bind_front_handler(&tcp_session::on_body, self()));
  }

  void on_body(const error_code& ec, std::size_t) {
    if (ec) return fail(timed(ec), "read");
    expires_never();
    handle_frame(frame_);
  }

  void write_out() override {
    expires_after(idle_timeout);
    asio::async_write(stream_, asio::buffer(out_), [self = self()](const error_code& ec, std::size_t n) {
      self->on_written(self->timed(ec), n);
    });
  }

  void close_for(const std::string&) override {
    // No TLS close_notify: the peer broke the protocol, so the connection just ends.
    error_code ignored;
    if constexpr (tls) {
      if (!stream_.is_open()) return;
      stream_.next_layer().shutdown(tcp::socket::shutdown_both, ignored);
      stream_.close();
    } else {
      auto& lowest = beast::get_lowest_layer(stream_);
      lowest.socket().shutdown(tcp::socket::shutdown_both, ignored);
      lowest.close();
    }
  }

  std::optional<tcp::socket> accepted_;  // TLS: until the handshake
  Stream stream_;
  std::conditional_t<tls, asio::steady_timer, std::monostate> deadline_;
  bool timed_out_ = false;
  std::array<unsigned char, frame_header_bytes> header_{};
  std::vector<unsigned char> frame_;
};

// WebSocket: one Kafka frame, size header included, per binary message.
class ws_session final : public session {
 public:
  ws_session(std::shared_ptr<shared_state> state, tcp::socket socket, std::int32_t node, std::string peer)
      : session(std::move(state), socket.get_executor(), node, listener_kind::ws, std::move(peer)),
        socket_(std::move(socket)),
        idle_timer_(socket_.get_executor()) {}

  void run() override {
    kws::accept_config cfg;
    cfg.max_frame_bytes = state_->max_frame_bytes;
    cfg.handshake_timeout = std::chrono::seconds(30);
    // Idle connections get pings instead of being dropped, as long as the peer answers them.
    cfg.idle_timeout = std::chrono::minutes(5);
    cfg.server_name = "kafka-websocket-devbroker";
    kws::async_accept(
        std::move(socket_), cfg,
        [self = self()](const kws::http_request_info& req, std::function<void(kws::accept_decision)> done) {
          if (!req.websocket_upgrade) {
            self->protocol_cause(fmt::format("plain HTTP {} {} without WebSocket upgrade, answered 426",
                                             req.method, req.target.substr(0, 200)));
            return done(kws::accept_decision::respond(
                426, "kafka-websocket-devbroker: Kafka over WebSocket only; send a WebSocket upgrade\n"));
          }
          done(kws::accept_decision::upgrade());
        },
        [self = self()](const error_code& ec, kws::connection c, const kws::http_request_info&) {
          if (ec == kws::errc::upgrade_declined) return;  // the cause is set already
          if (ec) return self->fail(ec, "websocket accept");
          self->conn_ = std::move(c);
          self->read_next();
        });
  }

 private:
  std::shared_ptr<ws_session> self() { return std::static_pointer_cast<ws_session>(shared_from_this()); }

  void read_next() override {
    buffer_.consume(buffer_.size());
    if (buffer_.capacity() > keep_buffer_bytes) buffer_.shrink_to_fit();
    conn_.async_read_frame(buffer_, beast::bind_front_handler(&ws_session::on_read, self()));
    // Only here is the connection idle: no request being answered, the next one not yet in.
    if (state_->ws_close_idle_after.count() > 0 && !answering()) {
      idle_timer_.expires_after(state_->ws_close_idle_after);
      idle_timer_.async_wait([self = self(), generation = idle_generation_](const error_code& ec) {
        if (ec || generation != self->idle_generation_) return;
        self->idle_close();
      });
    }
  }

  void idle_close() {
    idle_closing_ = true;
    set_cause("idle close after " + app::format_duration(state_->ws_close_idle_after), "idle");
    // The read stays outstanding and ends with `eof` when the peer answers; no write is in flight, so the
    // close frame is the one write.
    conn_.async_close(kws::close_code::normal, [self = self()](const error_code& ec) {
      if (ec && !is_teardown(ec)) self->note(spdlog::level::debug, "close: " + ec.message());
    });
  }

  void on_read(const error_code& ec, std::size_t) {
    // Whatever ended the read, the idle timer armed with it is stale now.
    ++idle_generation_;
    idle_timer_.cancel();
    if (idle_closing_ && !ec) {
      // A request that crossed our close frame: not answered, as on an edge platform; the close handshake
      // reads on until the peer's close frame.
      note(spdlog::level::debug,
           fmt::format("dropped a {}-byte message that arrived during the idle close", buffer_.size()));
      return;
    }
    if (ec == kws::errc::frame_too_large) {
      protocol_cause(
          fmt::format("message larger than {} bytes", state_->max_frame_bytes + frame_header_bytes));
      // Over the limit at its WebSocket frame header, the connection has already failed itself with close
      // code 1009. A shorter message whose Kafka size header claims too much gets no close frame: nothing is
      // pending any more, so the session ends here and its connection is aborted (socket closed) with it.
      return;
    }
    if (ec == kws::errc::invalid_message_type) {
      return protocol_error("text message; Kafka frames travel as binary messages");
    }
    if (ec.category() == kws::error_category() && ec != kws::errc::truncated_frame) {
      const bytes_view message{static_cast<const unsigned char*>(buffer_.data().data()), buffer_.size()};
      const std::int32_t size = message.size() >= frame_header_bytes ? load_be32(message.data()) : -1;
      return protocol_error(
          fmt::format("message of {} bytes with size header {}: {}", message.size(), size, ec.message()));
    }
    if (ec) return fail(ec, "read");
    handle_frame({static_cast<const unsigned char*>(buffer_.data().data()), buffer_.size()});
  }

  void write_out() override {
    conn_.async_write_frame(asio::buffer(out_), beast::bind_front_handler(&ws_session::on_written, self()));
  }

  void close_for(const std::string& cause) override {
    // Nothing else is outstanding on the stream here: this is the one write in flight.
    conn_.async_close(
        cause.starts_with("text") ? kws::close_code::unsupported_data : kws::close_code::policy_violation,
        [self = self()](const error_code& ec) {
          if (ec && !is_teardown(ec)) self->note(spdlog::level::debug, "close: " + ec.message());
        });
  }

  tcp::socket socket_;  // until the upgrade
  kws::connection conn_;
  asio::steady_timer idle_timer_;
  std::uint64_t idle_generation_ = 0;
  bool idle_closing_ = false;
  beast::flat_buffer buffer_;
};

class listener {
 public:
  listener(asio::io_context& ioc, const tcp::endpoint& ep, std::shared_ptr<shared_state> state,
           std::int32_t node, listener_kind kind)
      : acceptor_(ioc), state_(std::move(state)), node_(node), kind_(kind) {
    acceptor_.open(ep.protocol());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    acceptor_.bind(ep);
    acceptor_.listen(asio::socket_base::max_listen_connections);
    // Each session on a strand of its own; out of descriptors, the loop pauses instead of spinning.
    loop_.emplace(
        acceptor_, [&ioc] { return asio::any_io_executor(asio::make_strand(ioc)); },
        [this](tcp::socket socket) { on_accept(std::move(socket)); },
        kws::accept_loop_options{.name = fmt::format("{} listener node {}", to_string(kind_), node_),
                                 .log = [](kws::log_level level, std::string_view text) {
                                   spdlog::log(static_cast<spdlog::level::level_enum>(level), "{}", text);
                                 }});
  }

  tcp::endpoint local() const { return acceptor_.local_endpoint(); }
  void run() { loop_->start(); }
  void stop() {
    error_code ignored;
    acceptor_.close(ignored);
    loop_->stop();
  }

 private:
  void on_accept(tcp::socket socket) {
    error_code peer_ec;
    const auto peer = socket.remote_endpoint(peer_ec);
    const std::string peer_str = peer_ec ? std::string("?") : to_string(peer);
    std::shared_ptr<session> s;
    if (kind_ == listener_kind::ws)
      s = std::make_shared<ws_session>(state_, std::move(socket), node_, peer_str);
    else if (state_->tcp_tls)
      s = std::make_shared<tcp_session<kws::tls_socket>>(state_, std::move(socket), node_, peer_str);
    else
      s = std::make_shared<tcp_session<beast::tcp_stream>>(state_, std::move(socket), node_, peer_str);
    s->run();
  }

  tcp::acceptor acceptor_;
  std::shared_ptr<shared_state> state_;
  std::int32_t node_;
  listener_kind kind_;
  std::optional<kws::accept_loop> loop_;  // after the acceptor: stopped before it goes
};

asio::ip::address parse_host(const std::string& host) {
  if (host == "localhost") return asio::ip::make_address("127.0.0.1");
  error_code ec;
  auto a = asio::ip::make_address(host, ec);
  if (ec) throw std::invalid_argument(fmt::format("listen address '{}' is not an IP address", host));
  return a;
}

}  // namespace

struct server::impl {
  asio::io_context& ioc;
  std::shared_ptr<shared_state> state;
  server_config config;
  std::vector<std::shared_ptr<listener>> ws, tcp;
};

server::server(asio::io_context& ioc, std::shared_ptr<broker> b, server_config config)
    : impl_(std::make_unique<impl>(impl{ioc, std::make_shared<shared_state>(), std::move(config), {}, {}})) {
  impl_->state->b = std::move(b);
  impl_->state->max_frame_bytes = impl_->config.max_frame_bytes;
  impl_->state->ws_close_idle_after = impl_->config.ws_close_idle_after;
  impl_->state->sasl_users = impl_->config.sasl_users;
  if (!impl_->config.tcp_tls_cert.empty()) {
    impl_->state->tcp_tls = make_server_tls_context(impl_->config.tcp_tls_cert, impl_->config.tcp_tls_key);
    if (!impl_->config.tcp_tls_client_ca.empty())
      require_client_certificates(*impl_->state->tcp_tls, impl_->config.tcp_tls_client_ca);
  }
}

server::~server() {
  stop();
}

void server::start() {
  auto& st = *impl_;
  const std::int32_t nodes = st.state->b->config().nodes;

  auto bind_all = [&](const endpoint& where, listener_kind kind,
                      std::vector<std::shared_ptr<listener>>& out) {
    const auto address = parse_host(where.host);
    for (std::int32_t i = 0; i < nodes; ++i) {
      // Port 0 lets the system pick every port; otherwise the nodes sit on consecutive ports.
      const std::int32_t port = where.port == 0 ? 0 : where.port + i;
      if (port > 65535) throw std::invalid_argument(fmt::format("port {} out of range for node {}", port, i));
      const tcp::endpoint ep(address, static_cast<std::uint16_t>(port));
      try {
        out.push_back(std::make_shared<listener>(st.ioc, ep, st.state, i, kind));
      } catch (const boost::system::system_error& e) {
        throw std::runtime_error(fmt::format("cannot listen on {}: {}", to_string(ep), e.code().message()));
      }
    }
  };
  auto advertise = [&](const std::vector<std::shared_ptr<listener>>& ls, const std::optional<endpoint>& adv) {
    std::vector<endpoint> eps;
    for (std::size_t i = 0; i < ls.size(); ++i) {
      if (adv)
        eps.push_back({adv->host, adv->port + static_cast<std::int32_t>(i)});
      else
        eps.push_back({ls[i]->local().address().to_string(), ls[i]->local().port()});
    }
    return eps;
  };

  bind_all(st.config.ws_listen, listener_kind::ws, st.ws);
  if (st.config.tcp_listen) bind_all(*st.config.tcp_listen, listener_kind::tcp, st.tcp);
  st.state->b->set_advertised(listener_kind::ws, advertise(st.ws, st.config.ws_advertise));
  st.state->b->set_advertised(listener_kind::tcp, advertise(st.tcp, st.config.tcp_advertise));

  // Appends wake parked fetches; one post per burst of appends.
  std::weak_ptr<shared_state> weak = st.state;
  asio::io_context& ioc = st.ioc;
  st.state->b->on_append([weak, &ioc] {
    auto state = weak.lock();
    if (!state || state->notify_posted) return;
    state->notify_posted = true;
    asio::post(ioc, [weak] {
      auto state = weak.lock();
      if (!state) return;
      state->notify_posted = false;
      auto waiters = std::move(state->waiters);
      state->waiters.clear();
      for (auto& w : waiters) {
        auto s = w.lock();
        if (!s || !s->waiting()) continue;
        state->waiters.push_back(w);
        asio::dispatch(s->executor(), [s] { s->on_data(); });
      }
    });
  });

  for (auto& l : st.ws) l->run();
  for (auto& l : st.tcp) l->run();
}

std::string server::listening_line() const {
  auto list = [](const std::vector<std::shared_ptr<listener>>& ls) {
    std::string out;
    for (const auto& l : ls) {
      if (!out.empty()) out += ',';
      out += to_string(l->local());
    }
    return out;
  };
  std::string line = "listening ws=" + list(impl_->ws);
  if (!impl_->tcp.empty()) line += " tcp=" + list(impl_->tcp);
  return line;
}

void server::stop() {
  for (auto& l : impl_->ws) l->stop();
  for (auto& l : impl_->tcp) l->stop();
}

}  // namespace kws::devbroker
