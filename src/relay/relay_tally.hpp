// What a relay counts as it runs, mirrored into the process-wide counters when it has them, and the report it
// ends with. The report past its counts (its end, side, cause and error) is made by the first of them,
// mostly as the relay ends, so that a running relay does not carry it.
#pragma once

#include <kws/relay.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace kws::detail {

class relay_tally {
 public:
  /// `shared`: the process-wide counters, or null; whoever made the relay keeps them alive.
  explicit relay_tally(relay_counters* shared) : shared_(shared) {}

  void requests(std::uint64_t bytes, std::uint64_t frames = 1) {
    up_bytes_ += bytes;
    up_frames_ += frames;
    if (shared_) {
      shared_->up_bytes.fetch_add(bytes, std::memory_order_relaxed);
      shared_->up_frames.fetch_add(frames, std::memory_order_relaxed);
    }
  }
  void responses(std::uint64_t bytes, std::uint64_t frames = 1) {
    down_bytes_ += bytes;
    down_frames_ += frames;
    if (shared_) {
      shared_->down_bytes.fetch_add(bytes, std::memory_order_relaxed);
      shared_->down_frames.fetch_add(frames, std::memory_order_relaxed);
    }
  }
  void local_answer() { ++local_answers_; }
  void reconnect() {
    ++reconnects_;
    if (shared_) shared_->reconnects.fetch_add(1, std::memory_order_relaxed);
  }

  /// The first error is the one reported.
  void note_error(const boost::system::error_code& ec) {
    if (!report().error) report().error = ec;
  }
  /// The first cause is the one reported; an empty text is no cause.
  void note_cause(relay_end end, relay_side side, const std::string& text) {
    auto& r = report();
    if (!r.cause.empty() || text.empty()) return;
    r.cause = text;
    r.end = end;
    r.side = side;
  }

  /// The whole report, counts and `duration` in, "closed" when no cause was noted.
  const relay_report& finish(std::chrono::steady_clock::duration duration) {
    note_cause(relay_end::closed, relay_side::none, "closed");
    auto& r = report();
    r.up_bytes = up_bytes_;
    r.up_frames = up_frames_;
    r.down_bytes = down_bytes_;
    r.down_frames = down_frames_;
    r.local_answers = local_answers_;
    r.reconnects = reconnects_;
    r.duration = duration;
    return r;
  }

 private:
  relay_report& report() {
    if (!report_) report_ = std::make_unique<relay_report>();
    return *report_;
  }

  relay_counters* shared_;
  std::uint64_t up_bytes_ = 0, up_frames_ = 0, down_bytes_ = 0, down_frames_ = 0, local_answers_ = 0,
                reconnects_ = 0;
  std::unique_ptr<relay_report> report_;
};

}  // namespace kws::detail
