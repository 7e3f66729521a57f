// The relay's timer for the hook's timed request (frame_hook::response_timeout): made on first use, armed
// only while the hook times a request, so that a relay whose broker answers pays one arm and one cancel.
#pragma once

#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <utility>

namespace kws::detail {

class response_timer {
 public:
  bool armed() const { return armed_; }

  // `on_expiry(bool expired)` runs once: true when the time ran out, false when the wait was cancelled.
  template <class Executor, class Handler>
  void arm(const Executor& ex, std::chrono::milliseconds limit, Handler on_expiry) {
    if (!timer_) timer_ = std::make_unique<boost::asio::steady_timer>(ex);
    armed_ = true;
    timer_->expires_after(limit);
    // A round number tells a wait cancelled (and perhaps armed again since) from the current one.
    timer_->async_wait(
        [this, round = ++round_, h = std::move(on_expiry)](boost::system::error_code ec) mutable {
          const bool current = round == round_;
          if (current) armed_ = false;
          h(current && !ec);
        });
  }

  void cancel() {
    if (!armed_) return;
    armed_ = false;
    ++round_;
    timer_->cancel();
  }

 private:
  std::unique_ptr<boost::asio::steady_timer> timer_;
  std::uint64_t round_ = 0;
  bool armed_ = false;
};

}  // namespace kws::detail
