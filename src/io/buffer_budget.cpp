#include <kws/buffer_budget.hpp>

#include <boost/asio/post.hpp>

#include <algorithm>

namespace kws {

std::size_t buffer_budget::in_use() const {
  return used_.load(std::memory_order_relaxed);
}

bool buffer_budget::try_acquire(std::size_t n, std::uint32_t& seen) {
  // Read before the attempt: a release after this point, even one that lands between a failed attempt and
  // the wait, shows as a changed count.
  seen = releases_.load();
  auto used = used_.load(std::memory_order_relaxed);
  do {
    if (n > capacity_ - used) return false;
  } while (
      !used_.compare_exchange_weak(used, used + n, std::memory_order_acquire, std::memory_order_relaxed));
  return true;
}

void buffer_budget::release(std::size_t n) {
  auto used = used_.load(std::memory_order_relaxed);
  while (!used_.compare_exchange_weak(used, used - std::min(n, used), std::memory_order_release,
                                      std::memory_order_relaxed)) {
  }
  releases_.fetch_add(1);
  if (waiting_.load() == 0) return;
  std::list<waiter> woken;
  {
    std::lock_guard lock(mu_);
    // Everyone tries again; those that still do not fit wait again. Waits are rare (the budget is spent).
    woken.swap(waiters_);
    waiting_.store(0);
  }
  for (auto& w : woken) boost::asio::post(w.ex, [retry = std::move(w.retry)] { retry(false); });
}

void buffer_budget::async_wait(const boost::asio::any_io_executor& ex, boost::asio::cancellation_slot slot,
                               std::function<void(bool)> retry, std::uint32_t seen) {
  std::unique_lock lock(mu_);
  waiting_.fetch_add(1);
  if (releases_.load() != seen) {
    // Bytes came back since the try_acquire that failed; that release woke only those already waiting.
    waiting_.fetch_sub(1);
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
          waiting_.fetch_sub(1);
          break;
        }
      }
      if (cancelled) boost::asio::post(wex, [cancelled = std::move(cancelled)] { cancelled(true); });
    });
  }
}

}  // namespace kws
