#include <kws/kafka/api.hpp>
#include <kws/kafka/wire.hpp>
#include <kws/relay.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/error.hpp>

#include <array>

namespace kws {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using clock = std::chrono::steady_clock;

// Smallest read from the client socket.
constexpr std::size_t min_read_bytes = 16 * 1024;

bool is_teardown(const error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::operation_aborted ||
         ec == beast::websocket::error::closed || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe;
}

class relay_impl final : public relay {
 public:
  relay_impl(tcp::socket client, connection broker, relay_options options, done_handler on_done)
      : client_(std::move(client)),
        broker_(std::move(broker)),
        options_(options),
        on_done_(std::move(on_done)),
        timer_(client_.get_executor()),
        linger_timer_(client_.get_executor()),
        started_at_(clock::now()),
        last_activity_(started_at_) {}

  void start() override {
    // Reads after a readiness wait must never block the event loop, even on a spurious wake-up.
    error_code ec;
    client_.non_blocking(true, ec);
    if (ec) return fail(ec, "client socket");
    up_wait();
    down_read();
    if (options_.idle_timeout.count() > 0) arm_idle_timer();
  }

  void drain(std::chrono::milliseconds timeout) override {
    if (stopping_) return;
    draining_ = true;
    stop_reading_client();
    if (outstanding_ <= 0) return close_broker(close_code::going_away, "drained");
    ++ops_;
    timer_.expires_after(timeout);
    timer_.async_wait([self = shared_from_this(), this](error_code ec) {
      --ops_;
      if (!ec && !stopping_) {
        close_broker(close_code::going_away,
                     "drain timeout with " + std::to_string(outstanding_) + " response(s) outstanding");
      }
      maybe_done();
    });
  }

  std::int64_t outstanding() const override { return outstanding_; }

 private:
  // ---- client -> broker -----------------------------------------------------------------------------

  // Waiting for readability first keeps an idle relay free of read buffers.
  void up_wait() {
    if (stopping_ || client_eof_ || draining_) return;
    // Nothing held: give the buffer back while waiting, so that an idle relay holds no read buffer.
    if (up_buf_.size() == 0) up_buf_.shrink_to_fit();
    ++ops_;
    up_reading_ = true;
    client_.async_wait(
        tcp::socket::wait_read,
        asio::bind_cancellation_slot(up_cancel_.slot(), [self = shared_from_this(), this](error_code ec) {
          --ops_;
          up_reading_ = false;
          if (ec == asio::error::operation_aborted || stopping_) return maybe_done();
          if (ec) return fail(ec, "client read");
          up_read();
        }));
  }

  void up_read() {
    std::size_t want = min_read_bytes;
    if (error_code ec;
        auto len = peek_frame(detail::bytes_of(up_buf_.data()), options_.max_frame_bytes, ec)) {
      if (len > up_buf_.size()) want = std::max(want, len - up_buf_.size());
    }
    error_code ec;
    const auto n = client_.read_some(up_buf_.prepare(want), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) return up_wait();
    if (ec == asio::error::eof) return client_closed();
    if (ec) return fail(ec, "client read");
    up_buf_.commit(n);
    touch();
    up_process();
  }

  void up_process() {
    error_code ec;
    const auto data = detail::bytes_of(up_buf_.data());
    const auto len = peek_frame(data, options_.max_frame_bytes, ec);
    if (ec) return fail(ec, "client sent");
    if (len == 0 || len > data.size()) return up_wait();
    const auto frame = data.first(len);
    if (expects_response(frame)) ++outstanding_;
    up_len_ = len;
    ++ops_;
    up_writing_ = true;
    broker_.async_write_frame(asio::buffer(frame.data(), frame.size()),
                              [self = shared_from_this(), this](error_code ec, std::size_t) {
                                --ops_;
                                up_writing_ = false;
                                if (ec) return fail(ec, "broker write");
                                up_buf_.consume(up_len_);
                                report_.up_bytes += up_len_;
                                ++report_.up_frames;
                                touch();
                                if (close_pending_) return close_broker(close_code_, report_.cause);
                                if (stopping_) return maybe_done();
                                if (draining_ || client_eof_) return maybe_finish_requests();
                                up_process();
                              });
  }

  void client_closed() {
    client_eof_ = true;
    if (up_buf_.size() != 0) {
      // The client went away inside a request; what it sent before still gets its responses.
      partial_request_bytes_ = up_buf_.size();
      up_buf_.clear();
    }
    maybe_finish_requests();
    if (!stopping_ && !draining_) {
      // A client that closed entirely looks the same as one that only stopped sending; bound the wait.
      ++ops_;
      timer_.expires_after(options_.half_close_timeout);
      timer_.async_wait([self = shared_from_this(), this](error_code ec) {
        --ops_;
        if (!ec && !stopping_ && !draining_) {
          close_broker(close_code::normal,
                       "client closed with " + std::to_string(outstanding_) + " response(s) outstanding");
        }
        maybe_done();
      });
    }
  }

  // After the client stopped sending (or a drain): close once every forwarded request has its response.
  void maybe_finish_requests() {
    if (stopping_ || up_writing_ || outstanding_ > 0) return;
    if (draining_) return close_broker(close_code::going_away, "drained");
    if (client_eof_) {
      close_broker(close_code::normal, partial_request_bytes_
                                           ? "client closed inside a request (" +
                                                 std::to_string(partial_request_bytes_) + " bytes dropped)"
                                           : "client closed");
    }
  }

  void stop_reading_client() {
    if (up_reading_) up_cancel_.emit(asio::cancellation_type::terminal);
  }

  // ---- broker -> client -----------------------------------------------------------------------------

  void down_read() {
    if (stopping_) return;
    ++ops_;
    broker_.async_read_frame(down_buf_, [self = shared_from_this(), this](error_code ec, std::size_t n) {
      --ops_;
      if (ec) return broker_read_failed(ec);
      touch();
      ++ops_;
      asio::async_write(client_, down_buf_.data(),
                        [self = shared_from_this(), this, n](error_code ec, std::size_t) {
                          --ops_;
                          if (ec) return fail(ec, "client write");
                          down_buf_.consume(n);
                          // Nothing held between responses: idle relays keep no write-side buffer either.
                          if (down_buf_.size() == 0) down_buf_.shrink_to_fit();
                          report_.down_bytes += n;
                          ++report_.down_frames;
                          if (outstanding_ > 0) --outstanding_;
                          touch();
                          if (stopping_) return maybe_done();
                          if (client_eof_ || draining_) maybe_finish_requests();
                          if (!stopping_) down_read();
                        });
    });
  }

  void broker_read_failed(const error_code& ec) {
    if (stopping_) return maybe_done();
    if (ec == asio::error::eof || ec == beast::websocket::error::closed) {
      // The broker closed in order; everything it sent has been written to the client already.
      broker_closed_ = true;
      set_cause("broker closed");
      return shutdown_all(false);
    }
    fail(ec, "broker read");
  }

  // ---- ending ---------------------------------------------------------------------------------------

  void close_broker(close_code code, const std::string& cause) {
    if (stopping_ && !close_pending_) return;
    if (up_writing_) {
      // One write at a time on the WebSocket: the close waits for the frame in flight.
      close_pending_ = true;
      close_code_ = code;
      set_cause(cause);
      return;
    }
    close_pending_ = false;
    set_cause(cause);
    stopping_ = true;
    stop_reading_client();
    timer_.cancel();
    ++ops_;
    broker_.async_close(code, [self = shared_from_this(), this](error_code) {
      --ops_;
      shutdown_client();
      maybe_done();
    });
  }

  void fail(const error_code& ec, const char* what) {
    if (stopping_) return maybe_done();
    if (!report_.error && !is_teardown(ec)) report_.error = ec;
    set_cause(std::string(what) + ": " + ec.message());
    shutdown_all(true);
  }

  void shutdown_all(bool abort_broker) {
    stopping_ = true;
    close_pending_ = false;
    stop_reading_client();
    timer_.cancel();
    if (abort_broker || broker_closed_) broker_.abort();
    shutdown_client();
    maybe_done();
  }

  // Closes like a web server: send FIN after everything written, then read and discard until the client
  // closes too (or the linger time is up). Closing a socket with unread input makes the kernel answer with
  // a reset and drop whatever it had not sent yet, the tail of the last response among it. The linger is not
  // counted in ops_: the relay reports its end at once, and the pending wait keeps the relay (and the
  // worker's event loop) alive until the socket is closed.
  void shutdown_client() {
    if (lingering_ || !client_.is_open()) return;
    lingering_ = true;
    error_code ignored;
    client_.shutdown(tcp::socket::shutdown_send, ignored);
    if (client_eof_ || options_.linger_timeout.count() <= 0) {
      client_.close(ignored);
      return;
    }
    linger_timer_.expires_after(options_.linger_timeout);
    linger_timer_.async_wait([self = shared_from_this(), this](error_code ec) {
      if (ec) return;
      error_code ignored;
      client_.close(ignored);  // the pending discard read completes with operation_aborted
    });
    linger_read();
  }

  void linger_read() {
    client_.async_wait(tcp::socket::wait_read, [self = shared_from_this(), this](error_code ec) {
      if (!ec) {
        std::array<char, 4096> sink;
        for (;;) {
          const auto n = client_.read_some(asio::buffer(sink), ec);
          if (ec || n == 0) break;
        }
        if (ec == asio::error::would_block || ec == asio::error::try_again) return linger_read();
      }
      // EOF, an error, or closed by the linger timer: the client has what it will get.
      error_code ignored;
      linger_timer_.cancel();
      client_.close(ignored);
    });
  }

  void maybe_done() {
    if (!stopping_ || ops_ > 0 || done_) return;
    done_ = true;
    // A close handshake may still be running on the broker side after an orderly close; stop it.
    broker_.abort();
    report_.duration = clock::now() - started_at_;
    if (report_.cause.empty()) report_.cause = "closed";
    if (on_done_) on_done_(report_);
  }

  void set_cause(const std::string& c) {
    if (report_.cause.empty()) report_.cause = c;
  }

  void touch() { last_activity_ = clock::now(); }

  void arm_idle_timer() {
    if (stopping_ || draining_) return;
    ++ops_;
    timer_.expires_after(options_.idle_timeout / 2 + std::chrono::milliseconds(1));
    timer_.async_wait([self = shared_from_this(), this](error_code ec) {
      --ops_;
      if (ec || stopping_ || draining_) return maybe_done();
      if (clock::now() - last_activity_ >= options_.idle_timeout) {
        set_cause("idle timeout");
        return shutdown_all(true);
      }
      arm_idle_timer();
    });
  }

  tcp::socket client_;
  connection broker_;
  relay_options options_;
  done_handler on_done_;
  asio::steady_timer timer_;
  asio::steady_timer linger_timer_;
  asio::cancellation_signal up_cancel_;
  beast::flat_buffer up_buf_;
  beast::flat_buffer down_buf_;
  std::size_t up_len_ = 0;
  std::size_t partial_request_bytes_ = 0;
  std::int64_t outstanding_ = 0;
  int ops_ = 0;
  bool up_reading_ = false;
  bool up_writing_ = false;
  bool client_eof_ = false;
  bool broker_closed_ = false;
  bool draining_ = false;
  bool stopping_ = false;
  bool close_pending_ = false;
  bool done_ = false;
  bool lingering_ = false;
  close_code close_code_ = close_code::normal;
  relay_report report_;
  clock::time_point started_at_;
  clock::time_point last_activity_;
};

}  // namespace

std::shared_ptr<relay> relay::create(tcp::socket client, connection broker, relay_options options,
                                     done_handler on_done) {
  return std::make_shared<relay_impl>(std::move(client), std::move(broker), options, std::move(on_done));
}

bool expects_response(std::span<const unsigned char> frame) noexcept {
  if (frame.size() < frame_header_bytes + 8) return true;
  const auto body = frame.subspan(frame_header_bytes);
  boost::system::error_code ec;
  const auto h = kafka::peek_request_header(body, ec);
  if (ec || h.key != kafka::api_key::produce || h.header_bytes == 0) return true;
  kafka::reader r(body.subspan(h.header_bytes));
  // Produce v3+ starts with transactional_id (compact from v9, the first flexible version), then acks.
  if (h.version >= 9) {
    (void)r.compact_nullable_string();
  } else if (h.version >= 3) {
    (void)r.nullable_string();
  }
  const auto acks = r.int16();
  return !r.ok() || acks != 0;
}

}  // namespace kws
