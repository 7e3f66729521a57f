// The relay: one pump between a client side and a broker side (sides.hpp, tls_side.hpp), every frame through
// the hook, with backpressure both ways, half-close, drain, reconnects and the report of how it ended
// (causes.hpp). A template over the two sides, instantiated in relay.cpp (plain TCP) and tls_relay.cpp (TLS
// over TCP), so that only the latter compiles Asio's SSL operations.
#pragma once

#include "relay/causes.hpp"
#include "relay/relay_state.hpp"
#include "relay/relay_tally.hpp"
#include "relay/response_batches.hpp"
#include "relay/response_timer.hpp"
#include "relay/sides.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/websocket/error.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

namespace kws::detail {

// Responses for a TCP client are written in batches: while one write is in flight, the frames that arrive
// (and local answers) are appended to the next batch, which is written whole once the first is done. The
// broker is read only while the next batch is below this size, so each batch holds at most this plus one
// frame.
constexpr std::size_t down_batch_bytes = 64 * 1024;

// ---- the pump -----------------------------------------------------------------------------------------

template <class ClientConn, class BrokerConn>
class relay_impl final : public relay {
  using client_side = typename side_of<ClientConn>::type;
  using broker_side = typename side_of<BrokerConn>::type;
  // Responses are batched only towards a TCP client (plain or TLS): a WebSocket client gets one message per
  // frame.
  static constexpr bool batch_down = !std::is_same_v<client_side, ws_side>;

 public:
  relay_impl(ClientConn client, BrokerConn broker, relay_options options, std::shared_ptr<frame_hook> hook,
             done_handler on_done, reconnect_function<BrokerConn> reconnect)
      : options_(std::move(options)),
        client_(std::move(client), options_, options_.buffer_budget),
        broker_(std::in_place, std::move(broker), options_, options_.response_budget),
        hook_(hook ? std::move(hook) : std::make_shared<counting_hook>()),
        on_done_(std::move(on_done)),
        reconnect_(std::move(reconnect)),
        started_at_(clock::now()),
        last_activity_(started_at_) {
    if (options_.log) hook_->set_log(options_.log, options_.min_log_level);
    // A Kafka client over TCP that speaks TLS or HTTP is told apart from a bad size header.
    if constexpr (!std::is_same_v<client_side, ws_side>) client_.check_first_bytes();
  }

  void start() override {
    try {
      if (auto ec = client_.prepare()) return fail(ec, relay_side::client);
      if (auto ec = broker_->prepare()) return fail(ec, relay_side::broker);
      watch_broker_reads();
      up_next();
      down_pump();
      if (options_.idle_timeout.count() > 0) arm_idle_timer();
    } catch (const std::bad_alloc&) {
      out_of_memory();
    }
  }

  void drain(std::chrono::milliseconds timeout) override {
    if (stopping() || draining_) return;
    draining_ = true;
    stop_reading_client();
    if (quiet())
      return close_broker(close_code::going_away, {relay_end::shut_down, relay_side::none, shut_down_cause});
    timer().expires_after(timeout);
    timer().async_wait(op([this](error_code ec) {
      if (!ec && !stopping()) {
        close_broker(close_code::going_away, {relay_end::shut_down, relay_side::none,
                                              "shut down with " + std::to_string(hook_->in_flight()) +
                                                  " response(s) not delivered (drain timeout)"});
      }
    }));
  }

  std::size_t in_flight() const override { return hook_->in_flight(); }

  void stop_now(const std::string& why) override { stop(relay_end::stopped, why); }

  void stop(relay_end end, const std::string& why) {
    if (phase_ == phase::done) return;
    const auto owed = hook_->in_flight();
    set_cause({end, relay_side::none,
               owed ? why + " with " + std::to_string(owed) + " response(s) not delivered" : why});
    enter(phase::stopping);
    stop_reading_client();
    cancel_timers();
    broker_->abort();
    client_.abort();
    // Handlers still pending complete with operation_aborted and find the relay done.
    report();
  }

 private:
  // ---- state ----------------------------------------------------------------------------------------------
  //
  // The lifecycle and the request direction's state, with the steps each may take: relay/relay_state.hpp.
  // The response direction reads the broker while it writes to the client, so it keeps two facts of its own
  // (down_reading_, down_writing_) besides the batches; draining_ (no new requests, close with 1001 once
  // every response is out) and client_eof_ (the client stopped sending) are facts too, not states: both can
  // hold at once.
  using phase = relay_phase;
  using up_state = relay_up_state;

  bool stopping() const { return phase_ >= phase::stopping; }
  bool holding_request() const { return up_ != up_state::wanting && up_ != up_state::reading; }

  void enter(phase next) {
    BOOST_ASSERT_MSG(phase_step_allowed(phase_, next), "relay: a lifecycle step that cannot happen");
    phase_ = next;
  }

  void enter(up_state next) {
    BOOST_ASSERT_MSG(up_step_allowed(up_, next), "relay: a request state change that cannot happen");
    up_ = next;
  }

  // ---- client -> broker ---------------------------------------------------------------------------------

  // Requests go to the broker corked, so that all those at hand leave in one write; the broker is uncorked
  // whenever the pump stops writing (to wait for the client, for the hook, or to end), so a lone request goes
  // out at once.
  void up_next() {
    up_pump();
    // A read that completes at once (a whole request is buffered) continues the batch.
    if (up_ != up_state::writing && !(up_ == up_state::reading && client_.frame_buffered())) uncork_broker();
  }

  // What the broker side gathered goes out now; what its socket does not take at once is written with a
  // handler, during which no further request is written (up_flushing_).
  void uncork_broker() {
    broker_->cork(false);
    if (up_flushing_ || broker_->gathered_bytes() == 0 || stopping()) return;
    up_flushing_ = true;
    broker_->async_flush(op([this](error_code ec) {
      up_flushing_ = false;
      if (ec) return fail(ec, relay_side::broker);
      touch();
      if (phase_ == phase::closing_after_write) return close_broker(close_code_, {});
      if (stopping()) return;
      if (draining_ || client_eof_) return maybe_finish();
      up_next();
    }));
  }

  void up_pump() {
    while (!stopping() && !draining_ && up_ != up_state::writing && up_ != up_state::connecting) {
      if (!holding_request()) {
        if (client_eof_ || up_ == up_state::reading) return;
        // A request already buffered is taken here, without a round through the event loop.
        if (error_code ec; client_.try_read_frame(ec)) {
          if (ec) {
            client_fault_ = close_code_for(ec);
            return fail(ec, relay_side::client);
          }
          enter(up_state::holding);
          touch();
          continue;
        }
        // Nothing more at hand: what gathered goes out before the client is read again (a part of a request
        // at hand means more is surely on its way, and is read first).
        if (client_.partial_bytes() == 0) uncork_broker();
        // More of a burst may wait in the socket: read it here rather than through a round of the event loop.
        if (client_.try_fill()) continue;
        uncork_broker();
        enter(up_state::reading);
        return client_.async_read_frame(up_cancel_.slot(), op([this](error_code ec) {
                                          enter(ec ? up_state::wanting : up_state::holding);
                                          if (stopping()) return;
                                          if (ec == asio::error::operation_aborted)
                                            return;  // stopped reading for a drain
                                          if (ec == asio::error::eof || ec == beast::websocket::error::closed)
                                            return client_closed();
                                          if (ec) {
                                            client_fault_ = close_code_for(ec);
                                            return fail(ec, relay_side::client);
                                          }
                                          touch();
                                          up_next();
                                        }));
      }
      if (!hook_->can_take_request()) {
        // Backpressure: the next response to go out resumes reading.
        enter(up_state::paused);
        return;
      }
      if (!broker_up_) return reconnect();
      if (up_flushing_) return;  // the flush's end resumes the pump
      const auto frame = client_.frame();
      up_replacement_.clear();
      const auto action = hook_->on_request(frame, up_replacement_);
      if (action == frame_action::answer || action == frame_action::drop) {
        if (action == frame_action::answer) tally_.local_answer();
        request_done(frame.size());
        down_pump();
        continue;
      }
      time_response();
      const bytes out = action == frame_action::replace ? bytes(up_replacement_) : frame;
      // Gathered with whatever else is at hand; up_next uncorks before the pump waits for anything.
      broker_->cork(true);
      // Taken at once while the broker's write buffer has room; otherwise written with a handler.
      if (error_code ec; broker_->try_write_frame(out, ec)) {
        if (ec) return fail(ec, relay_side::broker);
        request_done(frame.size());
        touch();
        continue;
      }
      enter(up_state::writing);
      return broker_->async_write_frame(out, op([this, n = frame.size()](error_code ec) {
                                          enter(up_state::holding);
                                          if (ec) return fail(ec, relay_side::broker);
                                          request_done(n);
                                          touch();
                                          if (phase_ != phase::running || draining_ || client_eof_) {
                                            uncork_broker();
                                          }
                                          if (phase_ == phase::closing_after_write)
                                            return close_broker(close_code_, {});
                                          if (stopping()) return;
                                          if (draining_ || client_eof_) return maybe_finish();
                                          up_next();
                                        }));
    }
  }

  void request_done(std::size_t n) {
    client_.pop();
    enter(up_state::wanting);
    tally_.requests(n);
  }

  void client_closed() {
    client_eof_ = true;
    // Nobody waits for a timed answer any more: no verdict is drawn from its absence.
    response_timer_.cancel();
    if (const auto partial = client_.partial_bytes()) {
      // The client went away inside a request; what it sent before still gets its responses.
      partial_request_bytes_ = partial;
    }
    if (!client_side::can_half_close)
      return close_broker(close_code::normal, {relay_end::closed, relay_side::client, "client closed"});
    maybe_finish();
    if (!stopping() && !draining_) {
      // A client that closed entirely looks the same as one that only stopped sending; bound the wait.
      timer().expires_after(options_.half_close_timeout);
      timer().async_wait(op([this](error_code ec) {
        if (!ec && !stopping() && !draining_) {
          close_broker(close_code::normal, {relay_end::closed_owing, relay_side::client,
                                            "client closed with " + std::to_string(hook_->in_flight()) +
                                                " response(s) outstanding"});
        }
      }));
    }
  }

  // Every request read has been answered (or needs none) and nothing is being written either way.
  bool quiet() const {
    return up_ != up_state::writing && !up_flushing_ && !down_writing_ && next_batch_bytes() == 0 &&
           hook_->in_flight() == 0;
  }

  // After the client stopped sending (or a drain): close once every request has its response.
  void maybe_finish() {
    if (stopping() || !quiet()) return;
    if (draining_)
      return close_broker(close_code::going_away, {relay_end::shut_down, relay_side::none, shut_down_cause});
    if (client_eof_) {
      close_broker(close_code::normal,
                   partial_request_bytes_
                       ? ending{relay_end::truncated, relay_side::client,
                                "client closed inside a request (" + std::to_string(partial_request_bytes_) +
                                    " bytes dropped)"}
                       : ending{relay_end::closed, relay_side::client, "client closed"});
    }
  }

  void stop_reading_client() { up_cancel_.emit(asio::cancellation_type::terminal); }

  // ---- broker (re)connection ----------------------------------------------------------------------------

  // The broker closed between requests earlier; the client has sent another one.
  void reconnect() {
    enter(up_state::connecting);
    reconnect_(op([this](error_code ec, BrokerConn conn) {
      enter(up_state::holding);
      if (stopping()) return;
      if (ec == asio::error::operation_aborted && draining_) {
        set_cause(
            {relay_end::shut_down, relay_side::none, "shut down while the broker was being dialled again"});
        return shutdown_all();
      }
      if (ec)
        return fail_with(ec, {relay_end::reconnect_failed, relay_side::broker,
                              "could not reconnect to the broker: " + ec.message()});
      broker_.emplace(std::move(conn), options_, options_.response_budget);
      broker_up_ = true;
      if (auto e = broker_->prepare()) return fail(e, relay_side::broker);
      watch_broker_reads();
      tally_.reconnect();
      log(log_level::debug, [] { return std::string("broker connection open again"); });
      if (draining_)
        return close_broker(close_code::going_away,
                            {relay_end::shut_down, relay_side::none, shut_down_cause});
      down_pump();
      up_next();
    }));
  }

  // ---- broker -> client ---------------------------------------------------------------------------------

  // Writes the client's responses: a local answer when it is next in request order, else the broker frame at
  // hand, else reads one. One client write at a time keeps responses in order. Towards a WebSocket client
  // (one message per frame) every response at hand is written corked, so that they leave in one write; the
  // client is uncorked before the pump waits for anything.
  void down_pump() {
    if constexpr (batch_down) {
      return down_pump_batched();
    } else {
      if (stopping() || down_writing_) return;
      client_.cork(true);
      bool wrote = false;
      bool read_next = false;
      for (;;) {
        if (auto local = hook_->take_local_response()) {
          if (error_code ec; client_.try_write_frame(bytes(*local), ec)) {
            if (ec) return fail(ec, relay_side::client);
            down_written(local->size());
            wrote = true;
            continue;
          }
          client_.cork(false);
          down_local_ = std::move(*local);
          return down_write(down_local_, false);
        }
        if (!down_have_) {
          if (down_reading_ || !broker_up_ || up_ == up_state::connecting) break;
          error_code ec;
          if (!broker_->try_read_frame(ec)) {
            read_next = true;
            break;
          }
          if (ec) {
            client_.cork(false);
            return broker_read_failed(ec);
          }
          down_have_ = true;
          touch();
        }
        const auto verdict = judge_response();
        if (!verdict) return;
        if (verdict->dropped) {
          broker_->pop();
          down_have_ = false;
          continue;
        }
        if (error_code ec; client_.try_write_frame(verdict->out, ec)) {
          if (ec) return fail(ec, relay_side::client);
          broker_->pop();
          down_have_ = false;
          down_written(verdict->out.size());
          wrote = true;
          continue;
        }
        client_.cork(false);
        return down_write(verdict->out, true);
      }
      // The responses go out before the broker is read again (a TCP side's read may try the socket at once).
      client_.cork(false);
      if (read_next) {
        down_reading_ = true;
        broker_->async_read_frame(asio::cancellation_slot(), op([this](error_code ec) {
                                    down_reading_ = false;
                                    if (ec) return broker_read_failed(ec);
                                    down_have_ = true;
                                    touch();
                                    down_pump();
                                  }));
      }
      if (wrote) down_resume();
    }
  }

  void down_written(std::size_t n) {
    tally_.responses(n);
    touch();
  }

  // After responses went out: requests paused for the hook's bound go on, and a relay waiting to end may.
  void down_resume() {
    if (stopping()) return;
    if (up_ == up_state::paused) {
      enter(up_state::holding);
      up_next();
    }
    if (draining_ || client_eof_) maybe_finish();
  }

  struct response_verdict {
    bytes out;             // what the client gets: the broker's frame, or the hook's replacement
    bool replaced;         // out is the replacement
    bool dropped = false;  // the client gets nothing
  };

  // The hook's verdict on the broker frame at hand, for both down paths; none when it failed the relay.
  std::optional<response_verdict> judge_response() {
    const auto frame = broker_->frame();
    std::string why;
    down_replacement_.clear();
    const auto action = hook_->on_response(frame, down_replacement_, why);
    if (response_timer_.armed() && hook_->response_timeout().count() == 0) response_timer_.cancel();
    switch (action) {
      case frame_action::fail:
        fail_with(errc::unusable_response, {relay_end::unusable_response, relay_side::broker, why});
        return std::nullopt;
      case frame_action::replace:
        return response_verdict{bytes(down_replacement_), true};
      case frame_action::drop:
        return response_verdict{frame, false, true};
      default:
        return response_verdict{frame, false};
    }
  }

  // The hook's timed request (a broker's first ApiVersions, say): its answer not in time is the hook's to
  // handle; whatever it answers then goes out, and requests it held back go on.
  void time_response() {
    if (response_timer_.armed() || stopping()) return;
    const auto limit = hook_->response_timeout();
    if (limit.count() <= 0) return;
    response_timer_.arm(client_.get_executor(), limit, op([this](bool expired) {
                          if (!expired || stopping()) return;
                          hook_->on_response_timeout();
                          down_pump();
                          down_resume();
                        }));
  }

  void cancel_timers() {
    if (timer_) timer_->cancel();
    response_timer_.cancel();
  }

  // Towards a TCP client: every response at hand (local answers in their place) goes to the next batch; the
  // broker is read on while a batch is written, up to down_batch_bytes ahead. One client write at a time
  // keeps responses in order; a batch is one write, so many small responses cost one system call.
  void down_pump_batched() {
    if (stopping()) return;
    for (;;) {
      while (auto local = hook_->take_local_response()) {
        batches_.add(bytes(*local));
      }
      if (!down_have_) {
        // Responses already received join the batch here, without a round through the event loop.
        if (down_reading_ || !broker_up_ || up_ == up_state::connecting || broker_error_ ||
            next_batch_bytes() >= down_batch_bytes)
          break;
        error_code ec;
        if (!broker_->try_read_frame(ec)) break;
        if (ec) {
          if ((down_writing_ || next_batch_bytes() > 0) && !stopping()) {
            broker_error_ = ec;  // written after what arrived before it, below
            break;
          }
          return broker_read_failed(ec);
        }
        down_have_ = true;
        touch();
        continue;
      }
      const auto verdict = judge_response();
      if (!verdict) return;
      if (verdict->dropped) {
        broker_->pop();
        down_have_ = false;
        continue;
      }
      if (verdict->replaced) {
        batches_.add(verdict->out);
        broker_->pop();
      } else {
        batches_.take_from(*broker_);
      }
      down_have_ = false;
    }
    if (!down_reading_ && broker_up_ && up_ != up_state::connecting && !broker_error_ &&
        next_batch_bytes() < down_batch_bytes) {
      down_reading_ = true;
      broker_read_waits_ = false;
      in_down_read_start_ = true;
      broker_->async_read_frame(asio::cancellation_slot(), op([this](error_code ec) {
                                  down_reading_ = false;
                                  broker_read_waits_ = false;
                                  if (ec) {
                                    if ((down_writing_ || next_batch_bytes() > 0) && !stopping()) {
                                      // Whatever arrived before the broker's side ended reaches the client
                                      // first.
                                      broker_error_ = ec;
                                      return maybe_write_batch();
                                    }
                                    return broker_read_failed(ec);
                                  }
                                  down_have_ = true;
                                  touch();
                                  down_pump();
                                }));
      in_down_read_start_ = false;
    }
    maybe_write_batch();
  }

  // The batch goes out now unless the broker read in flight will complete from bytes already received, in
  // which case that response joins it. Without that knowledge (TLS) every read counts as waiting.
  void maybe_write_batch() {
    if (stopping() || down_writing_ || next_batch_bytes() == 0) return;
    if (down_reading_ && broker_reads_watched_ && !broker_read_waits_) return;
    write_batch();
  }

  void watch_broker_reads() {
    if constexpr (batch_down) {
      broker_reads_watched_ = broker_->on_read_wait([w = std::weak_ptr<relay>(shared_from_this())] {
        if (auto s = w.lock()) static_cast<relay_impl*>(s.get())->broker_read_waiting();
      });
    }
  }

  void broker_read_waiting() {
    if (!down_reading_) return;
    broker_read_waits_ = true;
    if (!in_down_read_start_) maybe_write_batch();
  }

  void write_batch() {
    const bytes out = batches_.start_write();
    down_writing_ = true;
    auto done = op([this](error_code ec) {
      down_writing_ = false;
      if (ec) return fail(ec, relay_side::client);
      // Nothing more to send: an idle relay keeps no buffer.
      const auto [written_bytes, written_frames] = batches_.written();
      tally_.responses(written_bytes, written_frames);
      touch();
      if (stopping()) return;
      if (up_ == up_state::paused) {
        enter(up_state::holding);
        up_next();
      }
      down_pump();
      if (broker_error_ && !down_writing_ && next_batch_bytes() == 0) {
        const auto e = *std::exchange(broker_error_, std::nullopt);
        return broker_read_failed(e);
      }
      if (draining_ || client_eof_) maybe_finish();
    });
    // Written at once when the socket takes it all: no round through the event loop.
    if (error_code ec; client_.try_write_frame(out, ec)) return done(ec);
    client_.async_write_frame(out, std::move(done));
  }

  void down_write(bytes out, bool from_broker) {
    down_writing_ = true;
    client_.async_write_frame(out, op([this, n = out.size(), from_broker](error_code ec) {
                                down_writing_ = false;
                                if (ec) return fail(ec, relay_side::client);
                                if (from_broker) {
                                  broker_->pop();
                                  down_have_ = false;
                                } else {
                                  std::vector<unsigned char>().swap(down_local_);
                                }
                                down_written(n);
                                down_resume();
                                down_pump();
                              }));
  }

  void broker_read_failed(const error_code& ec) {
    if (stopping()) return maybe_done();
    if (is_protocol_error(ec)) {
      broker_fault_ = close_code_for(ec);
      return fail(ec, relay_side::broker);
    }
    const bool orderly = ec == asio::error::eof || ec == beast::websocket::error::closed;
    const auto owed = hook_->in_flight();
    if (owed == 0 && up_ != up_state::writing && !up_flushing_ && reconnect_ && !draining_ && !client_eof_ &&
        !hook_->bound_to_broker_connection()) {
      // Edge platforms recycle connections; the client should not notice. Dial again on its next request.
      log(log_level::debug, [&] {
        return "broker connection ended between requests (" + ec.message() +
               "); reconnecting on the next request";
      });
      broker_->abort();
      broker_up_ = false;
      return;
    }
    const auto in_flight =
        owed > 0 ? " with " + std::to_string(owed) + " request(s) in flight" : std::string();
    // A TCP broker's end of stream inside a response reads as a WebSocket broker's close inside a message.
    if (orderly && broker_->partial_bytes() > 0)
      return fail(make_error_code(errc::truncated_frame), relay_side::broker, in_flight);
    if (orderly) {
      if (owed == 0) {
        set_cause({end_of(ec), relay_side::broker, peer_failure("broker", ec, broker_->peer_close_code())});
        return shutdown_all();
      }
      // The client will retry what was lost; it gets everything that did arrive first.
      const auto code = broker_->peer_close_code();
      return fail_with(asio::error::connection_aborted,
                       {relay_end::closed_owing, relay_side::broker,
                        "broker closed with " + std::to_string(owed) + " request(s) in flight" +
                            (code ? " (" + close_code_text(code) + ")" : std::string())});
    }
    fail(ec, relay_side::broker, in_flight);
  }

  // ---- ending -------------------------------------------------------------------------------------------

  // What ended the relay: the first one given counts.
  struct ending {
    relay_end end = relay_end::closed;
    relay_side side = relay_side::none;
    std::string text;
  };

  // `why` may be empty: a close that was waiting for a write keeps the cause it was given then.
  void close_broker(close_code code, const ending& why) {
    if (stopping()) return;
    uncork_broker();
    if (up_ == up_state::writing || up_flushing_) {
      // One write at a time on the broker side: the close waits for the frame (or the batch) in flight.
      if (phase_ != phase::closing_after_write) enter(phase::closing_after_write);
      close_code_ = code;
      set_cause(why);
      return;
    }
    set_cause(why);
    enter(phase::stopping);
    stop_reading_client();
    cancel_timers();
    if (!broker_up_) {
      finish_client(code);
      return maybe_done();
    }
    broker_->async_finish(code, options_.linger_timeout, shared_from_this(), false,
                          op([this, code](error_code) { finish_client(code); }));
  }

  // `ec` came from `who`'s side.
  void fail(const error_code& ec, relay_side who, const std::string& detail = {}) {
    if (stopping()) return maybe_done();
    if (!is_teardown(ec)) tally_.note_error(ec);
    const auto code = who == relay_side::client ? client_.peer_close_code() : broker_->peer_close_code();
    set_cause({end_of(ec), who, peer_failure(to_string(who), ec, code) + detail});
    shutdown_all();
  }

  void fail_with(error_code ec, const ending& why) {
    if (stopping()) return maybe_done();
    tally_.note_error(ec);
    set_cause(why);
    shutdown_all();
  }

  // Ends at once: the broker side is dropped (or, when it broke the protocol, told so with a close code),
  // the client gets what was already written to it.
  void shutdown_all() {
    enter(phase::stopping);
    stop_reading_client();
    cancel_timers();
    if (broker_fault_ && broker_up_) {
      broker_->async_finish(*broker_fault_, options_.linger_timeout, shared_from_this(), false,
                            op([](error_code) {}));
    } else {
      broker_->abort();
    }
    finish_client(close_code::normal);
    maybe_done();
  }

  // A client that broke the protocol is told so with a fitting close code (WebSocket clients only).
  void finish_client(close_code code) {
    if (client_finished_) return;
    client_finished_ = true;
    client_.async_finish(client_fault_.value_or(code), options_.linger_timeout, shared_from_this(),
                         client_eof_, op([](error_code) {}));
  }

  // Every operation the relay starts (a read, a write, a close, a timer, a dial) completes through the
  // handler this makes, which counts it and, after `f` has run, checks whether the relay is over. So a relay
  // that is stopping ends when its last operation completes, whichever that is and whatever `f` did.
  // An allocation that fails in a handler ends this relay (and only this one), with its sides.
  template <class F>
  auto op(F&& f) {
    ++ops_;
    return [self = shared_from_this(), this, f = std::forward<F>(f)](auto&&... args) mutable {
      --ops_;
      try {
        f(std::forward<decltype(args)>(args)...);
      } catch (const std::bad_alloc&) {
        out_of_memory();
      }
      maybe_done();
    };
  }

  void out_of_memory() noexcept {
    try {
      tally_.note_error(make_error_code(boost::system::errc::not_enough_memory));
      stop(relay_end::out_of_memory, "out of memory");
    } catch (...) {
      // Nothing is left to end it with; the process's own handler logs what escapes a handler.
    }
  }

  // The one place a relay ends (besides stop_now): stopping, and no operation of its own is pending.
  void maybe_done() {
    if (phase_ != phase::stopping || ops_ > 0) return;
    // A close handshake may still be running on the broker side after an orderly close; stop it.
    broker_->abort();
    report();
  }

  void report() {
    enter(phase::done);
    const auto& r = tally_.finish(clock::now() - started_at_);
    if (on_done_) on_done_(r);
  }

  void set_cause(const ending& why) { tally_.note_cause(why.end, why.side, why.text); }

  template <class MakeText>
  void log(log_level level, MakeText&& make_text) const {
    if (options_.log && level >= options_.min_log_level) options_.log(level, make_text());
  }

  // Every frame marks the relay active; only the idle timer reads the clock (reading it per frame took about
  // a tenth of the gateway's CPU time in a profile of 1 KiB frames). A tick that finds the mark takes its
  // own time as the last activity, which is never earlier than the real one, so the relay is never called
  // idle early; the end still comes at most one tick (half the timeout) after the timeout has passed.
  void touch() { active_ = true; }

  void arm_idle_timer() {
    if (stopping() || draining_) return;
    timer().expires_after(options_.idle_timeout / 2 + std::chrono::milliseconds(1));
    timer().async_wait(op([this](error_code ec) {
      if (ec || stopping() || draining_) return;
      const auto now = clock::now();
      if (std::exchange(active_, false)) last_activity_ = now;
      if (now - last_activity_ >= options_.idle_timeout) {
        set_cause(
            {relay_end::idle, relay_side::none,
             "idle: no traffic either way for " + std::to_string(options_.idle_timeout.count()) + "ms"});
        return shutdown_all();
      }
      arm_idle_timer();
    }));
  }

  relay_options options_;
  client_side client_;
  std::optional<broker_side> broker_;  // always engaged; replaced on a reconnect
  std::shared_ptr<frame_hook> hook_;
  done_handler on_done_;
  reconnect_function<BrokerConn> reconnect_;
  // Drain, half-close and idle deadlines: made when first needed (most relays never need it).
  std::unique_ptr<asio::steady_timer> timer_;
  asio::steady_timer& timer() {
    if (!timer_) timer_ = std::make_unique<asio::steady_timer>(client_.get_executor());
    return *timer_;
  }
  response_timer response_timer_;
  asio::cancellation_signal up_cancel_;
  std::vector<unsigned char> up_replacement_;
  std::vector<unsigned char> down_replacement_;
  std::vector<unsigned char> down_local_;
  // Towards a TCP client (batch_down) the response batches; towards a WebSocket client, nothing.
  struct no_batches {};
  [[no_unique_address]] std::conditional_t<batch_down, response_batches, no_batches> batches_;
  std::size_t next_batch_bytes() const {
    if constexpr (batch_down) {
      return batches_.next_bytes();
    } else {
      return 0;
    }
  }
  std::optional<error_code> broker_error_;  // a broker read failure waiting for the batch in flight
  bool broker_reads_watched_ = false;       // the broker connection says when a read waits for the peer
  bool broker_read_waits_ = false;          // the broker read in flight waits for the peer
  bool in_down_read_start_ = false;
  std::size_t partial_request_bytes_ = 0;
  int ops_ = 0;
  up_state up_ = up_state::wanting;
  bool down_reading_ = false;
  bool down_have_ = false;  // a whole response waits at the front of the broker side
  bool down_writing_ = false;
  bool up_flushing_ = false;  // what the broker side gathered is being written (see uncork_broker)
  std::optional<close_code> client_fault_;  // the close code for a client that broke the protocol
  std::optional<close_code> broker_fault_;  // the same for the broker
  bool broker_up_ = true;  // false after the broker closed between requests, until the next request
  bool client_eof_ = false;
  bool client_finished_ = false;
  bool draining_ = false;
  phase phase_ = phase::running;
  close_code close_code_ = close_code::normal;
  relay_tally tally_{options_.counters.get()};  // options_ keeps the counters alive
  clock::time_point started_at_;
  clock::time_point last_activity_;  // as the idle timer last saw it (touch)
  bool active_ = false;              // a frame moved since the idle timer's last tick
};

}  // namespace kws::detail
