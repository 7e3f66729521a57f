// kws::kafka::tracker, the Kafka frame hook, driven by an input that is a sequence of steps: a request frame
// from the client, a response frame from the broker, taking a local answer, or the timed ApiVersions running
// out of time, with the tracker's mode (rewriting or not, Kafka 0.8, negotiating or detecting, a small bound)
// from the first bytes. Invariants: requests in
// flight never exceed the bound while the relay honours can_take_request(); every verdict is one the caller
// can act on (a replacement, of a request or a response, is a whole frame whose size header matches; answers
// come back through take_local_response with a frame of their own); nothing crashes on any bytes.
#include "fuzz_check.hpp"

#include <kws/errc.hpp>
#include <kws/frame.hpp>
#include <kws/kafka/tracker.hpp>

#include <fuzzer/FuzzedDataProvider.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace {

bool whole_frame(const std::vector<unsigned char>& f) {
  return f.size() >= kws::frame_header_bytes &&
         static_cast<std::size_t>(kws::load_be32(f.data())) + kws::frame_header_bytes == f.size();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  auto cfg = std::make_shared<kws::kafka::tracker_config>();
  cfg->rewrite = in.ConsumeBool();
  cfg->api = in.ConsumeBool() ? kws::kafka::broker_api::kafka_0_8 : kws::kafka::broker_api::negotiate;
  cfg->max_in_flight = in.ConsumeIntegralInRange<std::size_t>(1, 8);
  const bool detecting = in.ConsumeBool();
  if (detecting) cfg->api_versions_timeout = std::chrono::milliseconds(1000);
  const bool map_fails = in.ConsumeBool();
  if (cfg->rewrite) {
    cfg->map = [map_fails](const kws::kafka::advertised_broker& b, boost::system::error_code& ec) {
      if (map_fails && b.node_id % 3 == 0) {
        ec = kws::errc::unusable_response;
        return std::optional<kws::kafka::broker_endpoint>();
      }
      return std::optional<kws::kafka::broker_endpoint>(
          kws::kafka::broker_endpoint{"proxy.example", 9000 + (b.node_id & 0xff)});
    };
  } else {
    // The watcher of a tracker that does not rewrite (the plugin's): every byte of every host view is read
    // (into an atomic, so that the reads stay), so a view past the frame shows under ASan.
    cfg->on_metadata_brokers = [](const std::vector<kws::kafka::advertised_broker>& brokers) {
      static std::atomic<unsigned> sum{0};
      for (const auto& b : brokers)
        for (const char c : b.host) sum.fetch_add(static_cast<unsigned char>(c), std::memory_order_relaxed);
    };
  }
  kws::kafka::tracker t(cfg);
  while (in.remaining_bytes() > 0) {
    const int step = in.ConsumeIntegralInRange<int>(0, 3);
    if (step == 2) {
      if (auto local = t.take_local_response()) KWS_FUZZ_CHECK(whole_frame(*local));
      continue;
    }
    if (step == 3) {
      // The relay calls it only while response_timeout() is set; the tracker must not mind either way.
      const auto before = t.in_flight();
      t.on_response_timeout();
      KWS_FUZZ_CHECK(t.in_flight() <= before);
      KWS_FUZZ_CHECK(t.response_timeout().count() == 0);
      continue;
    }
    // A frame: its size header always right (the relay only hands over whole frames), the body from the
    // input.
    auto body = in.ConsumeBytes<unsigned char>(in.ConsumeIntegralInRange<std::size_t>(0, 512));
    std::vector<unsigned char> frame(kws::frame_header_bytes + body.size());
    kws::store_be32(frame.data(), static_cast<std::int32_t>(body.size()));
    std::copy(body.begin(), body.end(), frame.begin() + kws::frame_header_bytes);
    std::vector<unsigned char> replacement;
    if (step == 0) {
      if (!t.can_take_request()) continue;  // the relay would not read the client now
      const auto before = t.in_flight();
      const auto verdict = t.on_request(frame, replacement);
      // A request is forwarded, answered here, dropped, or replaced (the Kafka 0.8 profile merges a Fetch
      // that names a topic twice); a replacement is a whole frame.
      KWS_FUZZ_CHECK(verdict == kws::frame_action::forward || verdict == kws::frame_action::answer ||
                     verdict == kws::frame_action::drop || verdict == kws::frame_action::replace);
      if (verdict == kws::frame_action::replace) KWS_FUZZ_CHECK(whole_frame(replacement));
      KWS_FUZZ_CHECK(t.in_flight() <= before + 1);
      KWS_FUZZ_CHECK(t.in_flight() <= cfg->max_in_flight);
    } else {
      std::string error;
      const auto before = t.in_flight();
      const auto verdict = t.on_response(frame, replacement, error);
      KWS_FUZZ_CHECK(t.in_flight() <= before);
      if (verdict == kws::frame_action::replace) KWS_FUZZ_CHECK(whole_frame(replacement));
      if (verdict == kws::frame_action::fail) KWS_FUZZ_CHECK(!error.empty());
      KWS_FUZZ_CHECK(verdict != kws::frame_action::answer);
      // Only the late answer to an ApiVersions the tracker answered itself is dropped.
      KWS_FUZZ_CHECK(verdict != kws::frame_action::drop || detecting);
    }
  }
  return 0;
}
