#include "health.hpp"

#include <boost/asio/post.hpp>

namespace kws::app {

void cached_check::check(const boost::asio::any_io_executor& ex, std::function<void(check_result)> done) {
  std::unique_lock lock(mu_);
  if (checked_at_ != std::chrono::steady_clock::time_point{} &&
      std::chrono::steady_clock::now() - checked_at_ < max_age_) {
    return boost::asio::post(ex, [done = std::move(done), r = last_] { done(r); });
  }
  waiters_.emplace_back(ex, std::move(done));
  if (checking_) return;
  checking_ = true;
  lock.unlock();
  // The probe may call back at once, on this thread: the lock is not held then.
  probe_(ex, [this](check_result r) {
    std::vector<std::pair<boost::asio::any_io_executor, std::function<void(check_result)>>> waiters;
    {
      std::lock_guard guard(mu_);
      last_ = r;
      checked_at_ = std::chrono::steady_clock::now();
      checking_ = false;
      waiters.swap(waiters_);
    }
    for (auto& [wex, w] : waiters) boost::asio::post(wex, [w = std::move(w), r] { w(r); });
  });
}

}  // namespace kws::app
