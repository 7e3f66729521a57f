#include <kws/frame.hpp>
#include <kws/kafka/metadata.hpp>
#include <kws/kafka/tracker.hpp>

#include "profile_0_8.hpp"

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace kws::kafka {
namespace {

constexpr api_version_range kafka_0_8_ranges[] = {
    {api_key::produce, 0, 0},
    {api_key::fetch, 0, 0},
    {api_key::list_offsets, 0, 0},
    {api_key::metadata, 0, 0},
    {api_key::api_versions, 0, max_api_versions_version},
    // Not the broker's: listed so that librdkafka asks for a group coordinator (otherwise it waits for a
    // broker that has one, silently); the tracker answers it UNSUPPORTED_VERSION, which librdkafka reports.
    {api_key::find_coordinator, 0, 0},
};

std::string describe(api_key key, std::int16_t version, std::int32_t correlation_id) {
  const auto name = api_name(key);
  return (name == "unknown" ? "api key " + std::to_string(static_cast<int>(key)) : std::string(name)) + " v" +
         std::to_string(version) + " (correlation id " + std::to_string(correlation_id) + ")";
}

// APIs whose responses carry broker addresses, at any version.
bool is_address_api(api_key key) noexcept {
  return max_rewritable_version(key).has_value();
}

// The error code of a SaslHandshake response (any version: correlation id, then error_code), or -1 when the
// frame is too short to hold one.
std::int16_t sasl_handshake_error(bytes_view frame) noexcept {
  reader r(frame.size() >= frame_header_bytes + 4 ? frame.subspan(frame_header_bytes + 4) : bytes_view{});
  const auto code = r.int16();
  return r.ok() ? code : std::int16_t{-1};
}

}  // namespace

std::span<const api_version_range> kafka_0_8_api_versions() noexcept {
  return kafka_0_8_ranges;
}

std::size_t default_broker_max_in_flight(broker_api api) noexcept {
  return api == broker_api::kafka_0_8 ? 1 : 0;
}

std::size_t request_limit(const tracker_config& config) noexcept {
  return request_limit(config, config.api);
}

std::size_t request_limit(const tracker_config& config, broker_api api) noexcept {
  const auto broker = config.broker_max_in_flight.value_or(default_broker_max_in_flight(api));
  return broker == 0 ? config.max_in_flight : std::min(broker, config.max_in_flight);
}

tracker::tracker(std::shared_ptr<const tracker_config> config, std::string broker,
                 api_verdict_handler on_verdict)
    : config_(std::move(config)),
      limit_(config_ ? request_limit(*config_) : 0),
      api_(config_ ? config_->api : broker_api::negotiate),
      broker_(std::move(broker)),
      on_verdict_(std::move(on_verdict)) {
  if (!config_) throw std::invalid_argument("kws::kafka::tracker needs a config");
  if (config_->rewrite && !config_->map)
    throw std::invalid_argument("kws::kafka::tracker: rewriting needs a map");
  start_detection();
}

bool tracker::can_take_request() const {
  if (waits_for_api_versions()) return false;
  // A frame that comes while a bare SASL token waits for its answer settles that token (on_request), so
  // the token holds no place against it: otherwise a bound of 1 would wait for ever after GSSAPI's last
  // token, which is never answered.
  const std::size_t settled = stream_ == client_stream::sasl_tokens && token_waits() ? 1 : 0;
  return fifo_.size() - settled < limit_;
}

frame_action tracker::answer(entry e, std::vector<unsigned char> response) {
  e.how = treatment::local;
  e.response = std::move(response);
  fifo_.push_back(std::move(e));
  return frame_action::answer;
}

// SASL over the v0 framing (https://kafka.apache.org/protocol#sasl_handshake): after a SaslHandshake v0
// answered with error code 0, the client sends bare tokens (a size, then the token) and the broker answers
// each with a bare token, or closes the connection when authentication fails. Nothing in a token says where
// the exchange ends, so the tracker goes by the mechanism the handshake named, and by the rule every client
// keeps: one token at a time, the next only after the answer to the last.
// - PLAIN ends with the answer to its one token (empty), SCRAM-SHA-256/512 with the answer to its second
//   (server-final), OAUTHBEARER with an empty answer to its token (an error answer gets one more token, %x01,
//   then the broker closes: RFC 7628 3.2.3).
// - GSSAPI, and any mechanism not named here, takes as many tokens as its context needs, and the last one
//   gets no answer: Kafka's SaslServerAuthenticator writes an answer only when SaslServer.evaluateResponse
//   returns one, its SaslClientAuthenticator and librdkafka's rdkafka_sasl_cyrus.c complete after sending the
//   last token without reading. So a frame that comes while a token still waits for its answer ends the
//   exchange: that token was the last and is owed nothing, and this frame is a request. Until it comes, the
//   last token counts as in flight. (A mechanism not named here whose last token is answered would leave the
//   tracker reading requests as tokens, passed untouched, until the client sends one before the answer to
//   the last. Kafka's Java client and librdkafka use the v0 framing only with brokers older than Kafka 1.0;
//   kafka-python 2.0 always does, and it and librdkafka offer only the mechanisms named here.)
// SaslHandshake v1 and SaslAuthenticate (KIP-152), re-authentication included (KIP-368), are ordinary
// requests with headers and correlation ids, and pass untouched like any API the tracker does not act on.
bool tracker::token_waits() const {
  return !fifo_.empty() && fifo_.back().how == treatment::sasl_token;
}

void tracker::on_token_answer(bytes_view frame) {
  fifo_.pop_front();
  if (stream_ != client_stream::sasl_tokens) return;  // the exchange already ended on a client frame
  if (token_answers_ < 255) ++token_answers_;
  bool last = false;
  switch (mechanism_) {
    case sasl_mechanism::plain:
      last = token_answers_ >= 1;
      break;
    case sasl_mechanism::scram:
      last = token_answers_ >= 2;
      break;
    case sasl_mechanism::oauthbearer:
      last = frame.size() == frame_header_bytes;
      break;
    case sasl_mechanism::other:
      break;
  }
  if (last) {
    stream_ = client_stream::requests;
    note(log_level::debug, [&] {
      return "SASL exchange over the v0 framing done after " + std::to_string(token_answers_) +
             " answer(s): requests follow";
    });
  }
}

frame_action tracker::on_request(bytes_view frame, std::vector<unsigned char>& replacement) {
  if (stream_ == client_stream::sasl_tokens) {
    if (!token_waits()) {
      // A bare token goes as it is: its bytes are no header, whatever they look like.
      entry e;
      e.how = treatment::sasl_token;
      fifo_.push_back(e);
      return frame_action::forward;
    }
    fifo_.pop_back();
    stream_ = client_stream::requests;
    note(log_level::debug, [&] {
      return "request of " + std::to_string(frame.size()) +
             " bytes while a SASL token waits for its answer: that token was the last, requests follow";
    });
  }
  const auto body = frame.size() >= frame_header_bytes ? frame.subspan(frame_header_bytes) : bytes_view{};
  boost::system::error_code ec;
  const auto h = peek_request_header(body, ec);
  entry e;
  if (auto* o = config_->observer.get()) {
    o->on_request(ec && body.size() < 8 ? static_cast<api_key>(-1) : h.key);
    e.seen = std::chrono::steady_clock::now();
  }
  if (ec && body.size() < 8) {
    // Too short to hold api key, version and correlation id: not Kafka as we know it. Pass it on; count it
    // as owed, and let the next response (whatever it is) settle it.
    note(log_level::debug, [&] {
      return "request of " + std::to_string(frame.size()) +
             " bytes too short for a Kafka header, passed through";
    });
    fifo_.push_back(e);
    return frame_action::forward;
  }
  e.correlation_id = h.correlation_id;
  e.has_correlation_id = true;
  e.key = h.key;
  e.version = h.version;
  if (h.key == api_key::sasl_handshake || h.key == api_key::sasl_authenticate) sasl_seen_ = true;
  if (api_ == broker_api::kafka_0_8 && h.key != api_key::api_versions) {
    if (auto action = on_0_8_request(e, frame, h, replacement)) return *action;
  }
  if (h.key == api_key::produce && !expects_response(frame)) return frame_action::forward;  // acks=0
  if (api_name(h.key) == "unknown") {
    note(log_level::debug, [&] {
      return "request " + describe(h.key, h.version, h.correlation_id) +
             " passed through (a key unknown here)";
    });
  }

  if (h.key == api_key::api_versions && (config_->rewrite || api_ == broker_api::kafka_0_8 || detecting_)) {
    if (api_ == broker_api::kafka_0_8) return answer_as_kafka_0_8(std::move(e));
    // KIP-511: answer a version we cannot decode with an error listing the versions we can; the client
    // retries with one of those.
    if (h.version > max_api_versions_version && config_->rewrite)
      return answer(e, encode_api_versions_unsupported(h.correlation_id));
    e.how = config_->rewrite ? treatment::clamp : treatment::pass;
    e.timed = detecting_;
  } else if (h.key == api_key::sasl_handshake && h.version == 0) {
    e.how = treatment::sasl_handshake;
    if (h.header_bytes > 0) {
      reader r(body.subspan(h.header_bytes));
      const auto name = r.string();
      if (name == "PLAIN") {
        e.mechanism = sasl_mechanism::plain;
      } else if (name == "SCRAM-SHA-256" || name == "SCRAM-SHA-512") {
        e.mechanism = sasl_mechanism::scram;
      } else if (name == "OAUTHBEARER") {
        e.mechanism = sasl_mechanism::oauthbearer;
      }
    }
  } else if (config_->rewrite && is_address_api(h.key)) {
    // Produce and Fetch carry addresses only from the versions with NodeEndpoints; versions above what can
    // be rewritten are tracked too, so that their answers fail closed instead of leaking broker addresses.
    if (carries_broker_addresses(h.key, h.version) || h.version > *max_rewritable_version(h.key)) {
      e.how = treatment::rewrite;
    }
  } else if (!config_->rewrite && config_->on_metadata_brokers && h.key == api_key::metadata &&
             h.version >= 0 && h.version <= *max_rewritable_version(api_key::metadata)) {
    e.how = treatment::watch_brokers;
  }
  fifo_.push_back(std::move(e));
  return frame_action::forward;
}

std::optional<frame_action> tracker::on_0_8_request(entry& e, bytes_view frame, const request_header& h,
                                                    std::vector<unsigned char>& replacement) {
  if (!profile_0_8::serves(h.key, h.version)) {
    if (h.key == api_key::produce && !expects_response(frame)) {
      note(log_level::debug, [&] {
        return "dropped " + describe(h.key, h.version, h.correlation_id) +
               " (acks=0): outside what a Kafka 0.8 broker serves";
      });
      return frame_action::drop;
    }
    if (!negotiated_ && profile_0_8::is_version_probe(h.key, h.version)) {
      note(log_level::debug, [&] {
        return "dropped " + describe(h.key, h.version, h.correlation_id) +
               " unanswered, as a Kafka 0.8 broker would: no ApiVersions v1 or later on this connection, so "
               "it may be a client probing for the broker's version";
      });
      return frame_action::drop;
    }
    if (profile_0_8::is_group_api(h.key) && !groups_refused_) {
      groups_refused_ = true;
      note(log_level::info, [&] {
        return describe(h.key, h.version, h.correlation_id) +
               " answered UNSUPPORTED_VERSION: the Kafka 0.8 broker has no consumer groups; clients that "
               "subscribe or commit offsets need a broker that has them (assign partitions instead)";
      });
    } else {
      note(log_level::debug, [&] {
        return describe(h.key, h.version, h.correlation_id) +
               " answered UNSUPPORTED_VERSION: outside what a Kafka 0.8 broker serves";
      });
    }
    return answer(std::move(e), profile_0_8::unsupported_answer(h, frame.subspan(frame_header_bytes)));
  }
  profile_0_8::fetch_layout layout;
  if (!profile_0_8::merge_fetch(frame, h, replacement, layout)) return std::nullopt;
  note(log_level::debug, [&] {
    return describe(h.key, h.version, h.correlation_id) + " names a topic more than once: sent as " +
           std::to_string(layout.topics.size()) + " entries merged into one per topic";
  });
  e.how = treatment::fetch_merged;
  e.layout = std::make_shared<const profile_0_8::fetch_layout>(std::move(layout));
  fifo_.push_back(std::move(e));
  return frame_action::replace;
}

std::optional<std::vector<unsigned char>> tracker::take_local_response() {
  if (fifo_.empty() || fifo_.front().how != treatment::local) return std::nullopt;
  auto out = std::move(fifo_.front().response);
  fifo_.pop_front();
  return out;
}

frame_action tracker::on_response(bytes_view frame, std::vector<unsigned char>& replacement,
                                  std::string& error) {
  if (late_id_ && drop_late_api_versions(frame)) return frame_action::drop;
  const bool has_id = frame.size() >= frame_header_bytes + 4;
  const std::int32_t id = has_id ? load_be32(frame.data() + frame_header_bytes) : 0;
  // Brokers answer in request order, so the response belongs to the oldest request in flight. Look further
  // only among requests sent to the broker (a local answer ahead means the broker is answering out of turn).
  std::size_t match = fifo_.size();
  for (std::size_t i = 0; i < fifo_.size() && fifo_[i].how != treatment::local; ++i) {
    if (has_id && fifo_[i].has_correlation_id && fifo_[i].correlation_id == id) {
      match = i;
      break;
    }
  }
  if (match == fifo_.size() && !fifo_.empty() && fifo_.front().how == treatment::sasl_token) {
    on_token_answer(frame);
    return frame_action::forward;
  }
  if (match == fifo_.size()) {
    note(log_level::debug, [&] {
      return "response of " + std::to_string(frame.size()) + " bytes" +
             (has_id ? " with correlation id " + std::to_string(id) : std::string()) +
             " matches no request in flight, passed through";
    });
    // Still owed to the oldest request: an echo peer, or a broker that answers without correlation ids.
    if (!fifo_.empty() && fifo_.front().how != treatment::local) fifo_.pop_front();
    return frame_action::forward;
  }
  if (match > 0) {
    note(log_level::debug, [&] {
      return std::to_string(match) + " request(s) before correlation id " + std::to_string(id) +
             " got no response";
    });
    fifo_.drop_front(match);
  }
  const entry e = std::move(fifo_.front());
  fifo_.pop_front();
  if (e.timed) {
    detecting_ = false;     // the broker answers ApiVersions
    on_verdict_ = nullptr;  // no verdict comes any more: an idle connection does not keep what it captured
  }
  if (auto* o = config_->observer.get(); o && e.has_correlation_id)
    o->on_response(e.key, std::chrono::steady_clock::now() - e.seen);

  boost::system::error_code ec;
  bool changed = false;
  switch (e.how) {
    case treatment::pass:
    case treatment::local:
    case treatment::sasl_token:
      return frame_action::forward;
    case treatment::sasl_handshake:
      if (sasl_handshake_error(frame) == 0) {
        stream_ = client_stream::sasl_tokens;
        mechanism_ = e.mechanism;
        token_answers_ = 0;
        note(log_level::debug, [&] {
          return describe(e.key, e.version, e.correlation_id) +
                 " accepted: SASL tokens without request headers follow";
        });
      }
      return frame_action::forward;
    case treatment::clamp:
      changed = clamp_api_versions(
          e.version, frame,
          [](api_key key) -> std::optional<std::int16_t> {
            if (key == api_key::api_versions) return max_api_versions_version;
            return max_rewritable_version(key);
          },
          replacement, ec);
      break;
    case treatment::watch_brokers:
      if (auto brokers = decode_metadata_brokers(e.version, frame, ec); !ec) {
        try {
          config_->on_metadata_brokers(brokers);
        } catch (const std::exception&) {
          // Only a watcher: whatever it could not do, the answer goes on.
        }
      } else {
        note(log_level::debug, [&] {
          return "the brokers of the answer to " + describe(e.key, e.version, e.correlation_id) +
                 " could not be read (" + ec.message() + "); passed on as it came";
        });
      }
      return frame_action::forward;
    case treatment::fetch_merged:
      if (std::string why; !profile_0_8::restore_fetch(frame, *e.layout, replacement, why)) {
        error = "cannot put the answer to the merged " + describe(e.key, e.version, e.correlation_id) +
                " back in the client's shape: " + why;
        return frame_action::fail;
      }
      return frame_action::replace;
    case treatment::rewrite:
      if (e.version > *max_rewritable_version(e.key)) {
        error = describe(e.key, e.version, e.correlation_id) +
                ": this proxy rewrites broker addresses up to v" +
                std::to_string(*max_rewritable_version(e.key));
        return frame_action::fail;
      }
      changed = rewrite_response(e.key, e.version, frame, config_->map, replacement, ec);
      break;
  }
  if (ec) {
    error = "cannot rewrite the response to " + describe(e.key, e.version, e.correlation_id) + ": " +
            ec.message();
    return frame_action::fail;
  }
  return changed ? frame_action::replace : frame_action::forward;
}

// ---- the Kafka 0.8 profile, given or found out ---------------------------------------------------------

frame_action tracker::answer_as_kafka_0_8(entry e) {
  // KIP-511: a version we cannot decode gets an error listing the versions we can; the client retries.
  if (e.version > max_api_versions_version) {
    auto error = encode_api_versions_unsupported(e.correlation_id);
    return answer(std::move(e), std::move(error));
  }
  if (e.version == 0) {
    note(log_level::debug, [&] {
      return "dropped " + describe(e.key, e.version, e.correlation_id) +
             " unanswered, as a Kafka 0.8 broker would";
    });
    return frame_action::drop;
  }
  negotiated_ = true;
  auto response = encode_api_versions_response(e.version, e.correlation_id, kafka_0_8_api_versions());
  return answer(std::move(e), std::move(response));
}

void tracker::start_detection() {
  if (api_ != broker_api::negotiate || config_->api_versions_timeout.count() <= 0) {
    on_verdict_ = nullptr;  // never called
    return;
  }
  if (config_->verdicts && config_->verdicts->is_kafka_0_8(broker_)) {
    become_kafka_0_8();
    if (on_verdict_) std::exchange(on_verdict_, nullptr)(api_verdict::remembered);
    return;
  }
  detecting_ = true;
}

void tracker::become_kafka_0_8() {
  api_ = broker_api::kafka_0_8;
  limit_ = request_limit(*config_, api_);
  detecting_ = false;
}

// The timed ApiVersions is the last request in flight: the client's next ones wait unread meanwhile.
bool tracker::waits_for_api_versions() const {
  return detecting_ && !fifo_.empty() && fifo_.back().timed;
}

std::chrono::milliseconds tracker::response_timeout() const {
  return waits_for_api_versions() ? config_->api_versions_timeout : std::chrono::milliseconds::zero();
}

void tracker::on_response_timeout() {
  if (!waits_for_api_versions()) return;
  entry e = std::move(fifo_.back());
  fifo_.pop_back();
  late_id_ = e.correlation_id;
  late_ahead_ = 0;
  for (std::size_t i = 0; i < fifo_.size(); ++i) late_ahead_ += fifo_[i].how != treatment::local;
  become_kafka_0_8();
  const bool first = !config_->verdicts || config_->verdicts->remember_kafka_0_8(broker_);
  if (on_verdict_)
    std::exchange(on_verdict_, nullptr)(first ? api_verdict::detected : api_verdict::detected_again);
  e.timed = false;
  e.how = treatment::pass;
  answer_as_kafka_0_8(std::move(e));
}

// Brokers answer in order: the late answer comes before any to a request sent after it, or never.
bool tracker::drop_late_api_versions(bytes_view frame) {
  const bool has_id = frame.size() >= frame_header_bytes + 4;
  if (has_id && load_be32(frame.data() + frame_header_bytes) == *late_id_) {
    note(log_level::debug, [&] {
      return "dropped the broker's late answer to ApiVersions (correlation id " + std::to_string(*late_id_) +
             "), answered already as for Kafka 0.8";
    });
    late_id_.reset();
    return true;
  }
  if (late_ahead_ > 0) {
    --late_ahead_;
  } else {
    late_id_.reset();
  }
  return false;
}

}  // namespace kws::kafka
