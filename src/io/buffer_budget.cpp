#include <kws/buffer_budget.hpp>

#include <boost/asio/post.hpp>

namespace kws {

std::size_t buffer_budget::in_use() const {
  std::lock_guard lock(mu_);
  return used_;
}

bool buffer_budget::try_acquire(std::size_t n, std::uint32_t& seen) {
  std::lock_guard lock(mu_);
  if (n > capacity_ - used_) {
    seen = releases_;
    return false;
  }
  used_ += n;
  return true;
}

void buffer_budget::release(std::size_t n) {
  std::list<waiter> woken;
  {
    std::lock_guard lock(mu_);
    used_ -= std::min(n, used_);
    ++releases_;
    // Everyone tries again; those that still do not fit wait again. Waits are rare (the budget is spent).
    woken.swap(waiters_);
  }
  for (auto& w : woken) boost::asio::post(w.ex, [retry = std::move(w.retry)] { retry(false); });
}

void buffer_budget::async_wait(const boost::asio::any_io_executor& ex, boost::asio::cancellation_slot slot,
                               std::function<void(bool)> retry, std::uint32_t seen) {
  std::unique_lock lock(mu_);
  if (releases_ != seen) {
    // Bytes came back since the try_acquire that failed; that release woke only those already waiting.
    lock.unlock();
    boost::asio::post(ex, [retry = std::move(retry)] { retry(false); });
    return;
  }
  const auto id = ++next_id_;
  waiters_.push_back(waiter{id, ex, std::move(retry)});
  if (slot.is_connected()) {
    // Found by id: a release may have taken the waiter off the list (and woken it) already.
    slot.assign([this, id](boost::asio::cancellation_type) {
      std::function<void(bool)> cancelled;
      boost::asio::any_io_executor wex;
      {
        std::lock_guard lock(mu_);
        for (auto w = waiters_.begin(); w != waiters_.end(); ++w) {
          if (w->id != id) continue;
          cancelled = std::move(w->retry);
          wex = w->ex;
          waiters_.erase(w);
          break;
        }
      }
      if (cancelled) boost::asio::post(wex, [cancelled = std::move(cancelled)] { cancelled(true); });
    });
  }
}

}  // namespace kws
