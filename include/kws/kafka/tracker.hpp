// kws::kafka::tracker: the frame hook that makes a relay Kafka-aware, with no I/O. It keeps a bounded FIFO
// of the requests in flight on one connection (correlation id, api key, version) so that each response can
// be decoded with its request's version; it rewrites broker addresses in the responses that carry them,
// clamps ApiVersions answers to what it can rewrite, and answers ApiVersions itself for a Kafka 0.8 broker
// (given, or found out when the broker leaves an ApiVersions unanswered).
// After a SaslHandshake v0 that the broker accepts, the client's frames are bare SASL tokens with no request
// header until the exchange ends: the tracker passes them and their answers untouched (docs/architecture.md,
// "SASL through the relay", says how it tells where the exchange ends).
// Everything it does not act on passes through untouched: the broker, not the proxy, polices the protocol.
#pragma once

#include <kws/frame_hook.hpp>
#include <kws/kafka/api.hpp>
#include <kws/kafka/api_verdicts.hpp>
#include <kws/kafka/api_versions.hpp>
#include <kws/kafka/rewrite.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace kws::kafka {

namespace profile_0_8 {
struct fetch_layout;
}
using profile_0_8_fetch_layout = profile_0_8::fetch_layout;

/// How the broker behind the relay handles ApiVersions.
enum class broker_api {
  /// The broker answers ApiVersions (Kafka 0.10 and later): requests go to it, and its answer is clamped to
  /// the versions the tracker can rewrite. With tracker_config::api_versions_timeout, a broker that leaves
  /// one unanswered that long is taken for kafka_0_8 instead.
  negotiate,
  /// A Kafka 0.8 broker, which never answers ApiVersions. The tracker answers ApiVersions v1 and later itself
  /// with the four v0 APIs (clients of KIP-511's era pick versions from those ranges), and drops v0
  /// unanswered,
  /// as the broker would: pre-KIP-511 clients (kafka-python 2.0) take any answer to v0 to mean "Kafka 0.10 or
  /// later", so only silence makes them probe down to 0.8.
  kafka_0_8,
};

/// Told about the requests a tracker sees and the responses it matches to them, for a process's monitoring
/// (the apps' metrics endpoint counts them per API). One observer serves every connection of a config, so it
/// is called from many relays' threads at once: implementations must be thread-safe, cheap and never block.
class request_observer {
 public:
  virtual ~request_observer() = default;
  /// A request from the client, whatever becomes of it (forwarded, answered locally, dropped; Produce with
  /// acks=0 included). A request too short to name its API comes with key -1. The bare SASL tokens that
  /// follow a SaslHandshake v0 are no requests: the observer hears of neither them nor their answers.
  virtual void on_request(api_key key) noexcept = 0;
  /// The broker's response to a request, matched by correlation id: `latency` runs from the tracker seeing
  /// the request to it seeing the response (the broker's time plus the WebSocket both ways).
  virtual void on_response(api_key key, std::chrono::steady_clock::duration latency) noexcept = 0;
};

struct tracker_config {
  /// Rewrite broker addresses, and clamp ApiVersions answers to what can be rewritten. Off: every frame
  /// passes unchanged and the FIFO only counts what is owed.
  bool rewrite = true;
  broker_api api = broker_api::negotiate;
  /// Requests in flight on one connection before the relay stops reading its client: a bound on memory.
  std::size_t max_in_flight = 1024;
  /// A tighter bound for brokers that mishandle pipelined requests: with this many in flight, the client's
  /// next request waits (unread, in order) until a response goes out. 0: none beyond max_in_flight; unset:
  /// 1 with broker_api::kafka_0_8, none otherwise (default_broker_max_in_flight). Produce with acks=0 is
  /// owed nothing and takes no place; a local answer holds its place until it is written to the client.
  std::optional<std::size_t> broker_max_in_flight;
  /// Where clients reach each advertised broker instead; required when rewriting. Shared by every tracker of
  /// this config, so called from many relays' threads at once: it must be thread-safe.
  broker_mapper map;
  /// With rewrite off: told the brokers that each Metadata answer lists (versions 0 up to
  /// max_rewritable_version(api_key::metadata); hosts are views into the frame, valid during the call).
  /// Watches only: the frame goes on unchanged, and one that does not parse is passed on without a call. May
  /// be null. Called from the relays' threads.
  std::function<void(const std::vector<advertised_broker>&)> on_metadata_brokers;
  /// Told about requests and matched responses (may be null: then the tracker reads no clock).
  std::shared_ptr<request_observer> observer;
  /// With broker_api::negotiate: how long the broker may leave an ApiVersions request unanswered before the
  /// tracker takes it for a Kafka 0.8 broker and goes on as with broker_api::kafka_0_8 (zero: never). While
  /// such a request waits, the client's next requests wait unread (clients send nothing else before the
  /// answer), so that whatever the verdict, they go to the broker under it.
  std::chrono::milliseconds api_versions_timeout{0};
  /// Where the trackers of this config keep their verdicts per broker URL, so that later connections to a
  /// broker found to be Kafka 0.8 start in that profile (may be null: each connection finds out for itself).
  std::shared_ptr<api_verdicts> verdicts;
};

/// What a tracker concluded about its broker on its own, for the application to log.
enum class api_verdict : std::uint8_t {
  /// An ApiVersions request went unanswered for api_versions_timeout: the broker is taken for Kafka 0.8, for
  /// the first time in the verdicts kept (the one to log).
  detected,
  /// The same, for a broker already taken for Kafka 0.8 (another connection found out first).
  detected_again,
  /// The connection started in the 0.8 profile: its broker was found to be Kafka 0.8 before.
  remembered,
};
using api_verdict_handler = std::function<void(api_verdict)>;

/// The bound on requests in flight that tracker_config::broker_max_in_flight takes when unset: 1 for a
/// Kafka 0.8 broker (the edge broker this project was made for appends the Produce requests of one connection
/// concurrently, so that pipelined batches overwrite each other), 0 (none) otherwise.
std::size_t default_broker_max_in_flight(broker_api api) noexcept;

/// Requests in flight on one connection before the client's next one waits: the tighter of max_in_flight
/// and broker_max_in_flight (or its default for `api`, config.api unless given).
std::size_t request_limit(const tracker_config& config) noexcept;
std::size_t request_limit(const tracker_config& config, broker_api api) noexcept;

/// The ApiVersions ranges answered for a Kafka 0.8 broker: Produce, Fetch, ListOffsets and Metadata at v0.
std::span<const api_version_range> kafka_0_8_api_versions() noexcept;

class tracker final : public frame_hook {
 public:
  /// `broker` names the broker (its URL) in the config's verdicts; `on_verdict` hears what the tracker
  /// concludes about that broker by itself (may be empty).
  explicit tracker(std::shared_ptr<const tracker_config> config, std::string broker = {},
                   api_verdict_handler on_verdict = {});

  frame_action on_request(bytes_view frame, std::vector<unsigned char>& replacement) override;
  frame_action on_response(bytes_view frame, std::vector<unsigned char>& replacement,
                           std::string& error) override;
  std::optional<std::vector<unsigned char>> take_local_response() override;
  bool can_take_request() const override;
  std::size_t in_flight() const override { return fifo_.size(); }
  /// True from the client's first SaslHandshake or SaslAuthenticate on.
  bool bound_to_broker_connection() const override { return sasl_seen_; }
  /// api_versions_timeout while an ApiVersions request waits for a broker not known yet to answer it.
  std::chrono::milliseconds response_timeout() const override;
  /// That request went unanswered: the broker is taken for Kafka 0.8 (see tracker_config).
  void on_response_timeout() override;
  /// The profile in use: the config's, or kafka_0_8 once the broker was taken for one.
  broker_api api() const { return api_; }

 private:
  enum class treatment : std::uint8_t {
    pass,            ///< forwarded; the response goes back untouched
    clamp,           ///< forwarded ApiVersions; the answer is clamped
    rewrite,         ///< forwarded; broker addresses in the answer are rewritten
    local,           ///< answered by the tracker; `response` holds the answer
    sasl_handshake,  ///< forwarded SaslHandshake v0; an answer with error code 0 starts the bare tokens
    sasl_token,      ///< a bare SASL token, forwarded; its answer (if one comes) goes back untouched
    fetch_merged,    ///< a Fetch merged for a Kafka 0.8 broker; the answer goes back in `layout`'s shape
    watch_brokers,   ///< forwarded Metadata, rewrite off; the answer's brokers go to on_metadata_brokers
  };
  /// What the client's frames are.
  enum class client_stream : std::uint8_t {
    requests,     ///< Kafka requests, each with its request header
    sasl_tokens,  ///< after an accepted SaslHandshake v0: size-prefixed SASL tokens, no header (RFC 4422)
  };
  /// SASL mechanisms by how their exchange over the v0 framing ends.
  enum class sasl_mechanism : std::uint8_t {
    other,        ///< GSSAPI and any other: the last token is the one the client does not wait on
    plain,        ///< one token, one (empty) answer
    scram,        ///< SCRAM-SHA-256/512: two tokens, two answers
    oauthbearer,  ///< one token; an empty answer ends it, an error answer gets one more token (RFC 7628)
  };
  struct entry {
    std::int32_t correlation_id = 0;
    bool has_correlation_id = false;
    api_key key{};
    std::int16_t version = 0;
    treatment how = treatment::pass;
    sasl_mechanism mechanism = sasl_mechanism::other;  ///< for sasl_handshake: the one the client asked for
    std::chrono::steady_clock::time_point seen{};      ///< when the request came by (only with an observer)
    bool timed = false;  ///< ApiVersions to a broker that may never answer it (api_versions_timeout)
    std::vector<unsigned char> response;
    std::shared_ptr<const profile_0_8_fetch_layout> layout;  ///< for fetch_merged: the client's request
  };

  // The requests in flight, oldest first: a vector taken from the front, which allocates nothing until the
  // first request (std::deque allocates a 512-byte block up front, and every idle connection has a tracker)
  // and gives its storage back once every request has been answered, so that an idle connection keeps none.
  // The next request then takes at once as much as the last burst grew to (at most 64 entries): one
  // allocation per burst, not one per doubling with the entries moved each time (a burst of 16 requests
  // would make five and move the entries four times).
  class fifo {
   public:
    bool empty() const { return head_ == items_.size(); }
    std::size_t size() const { return items_.size() - head_; }
    entry& front() { return items_[head_]; }
    const entry& back() const { return items_.back(); }
    entry& operator[](std::size_t i) { return items_[head_ + i]; }
    void push_back(entry e) {
      if (items_.capacity() == 0 && last_capacity_ > 1) items_.reserve(last_capacity_);
      items_.push_back(std::move(e));
    }
    void pop_front() { drop_front(1); }
    void pop_back() {
      items_.pop_back();
      if (head_ == items_.size()) release();
    }
    void drop_front(std::size_t n) {
      head_ += n;
      if (head_ == items_.size()) {
        release();
      } else if (head_ >= 64 && head_ * 2 >= items_.size()) {
        items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
        head_ = 0;
      }
    }

   private:
    void release() {
      last_capacity_ = std::min<std::size_t>(items_.capacity(), 64);
      std::vector<entry>().swap(items_);
      head_ = 0;
    }
    std::vector<entry> items_;
    std::size_t head_ = 0;
    std::size_t last_capacity_ = 0;  // what the last burst grew to
  };

  frame_action answer(entry e, std::vector<unsigned char> response);
  /// With broker_api::kafka_0_8: answers a request outside the profile, or merges a Fetch that repeats a
  /// topic; nullopt for a request that goes on as usual.
  std::optional<frame_action> on_0_8_request(entry& e, bytes_view frame, const request_header& h,
                                             std::vector<unsigned char>& replacement);
  frame_action answer_as_kafka_0_8(entry e);
  void start_detection();
  void become_kafka_0_8();
  bool waits_for_api_versions() const;
  bool drop_late_api_versions(bytes_view frame);
  bool token_waits() const;
  void on_token_answer(bytes_view frame);

  std::shared_ptr<const tracker_config> config_;
  std::size_t limit_;  ///< request_limit(*config_)
  fifo fifo_;
  client_stream stream_ = client_stream::requests;
  sasl_mechanism mechanism_ = sasl_mechanism::other;  ///< while stream_ is sasl_tokens
  std::uint8_t token_answers_ = 0;                    ///< answers to bare tokens since the handshake
  bool sasl_seen_ = false;                            ///< a SaslHandshake or SaslAuthenticate came by
  bool groups_refused_ = false;                       ///< a group API was answered for a Kafka 0.8 broker
  bool negotiated_ = false;  ///< ApiVersions v1 or later answered for a Kafka 0.8 broker on this connection
  broker_api api_;           ///< the profile in use (api())
  bool detecting_ = false;   ///< ApiVersions requests are timed: the broker has not shown which it is yet
  std::string broker_;
  api_verdict_handler on_verdict_;
  /// After a timed ApiVersions went unanswered: its correlation id, whose answer, if the broker still gives
  /// one, the client must not get; and the broker's answers still owed to requests sent before it.
  std::optional<std::int32_t> late_id_;
  std::size_t late_ahead_ = 0;
};

}  // namespace kws::kafka
