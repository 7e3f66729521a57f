// kws::buffer_budget: a process-wide bound on the bytes of Kafka frames held while they arrive, as Kafka's
// queued.max.request.bytes bounds queued requests. A reader reserves a frame's whole length once its size
// header is known and before it reads the body; when the budget is spent it stops reading that peer until
// another frame's bytes are given back. A reservation covers a whole frame (a Kafka frame on TCP; on
// WebSocket each WebSocket frame, which for unfragmented messages, all that Kafka clients send, is the whole
// Kafka frame), so readers do not wait for each other holding half a frame, and memory still grows only as
// bytes arrive.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>

namespace kws {

class buffer_budget {
 public:
  explicit buffer_budget(std::size_t capacity) : capacity_(capacity) {}
  buffer_budget(const buffer_budget&) = delete;
  buffer_budget& operator=(const buffer_budget&) = delete;

  std::size_t capacity() const { return capacity_; }
  std::size_t in_use() const;

  /// Takes `n` bytes if they are free; thread-safe. `seen` is set to the count of releases before the
  /// attempt, for the async_wait that follows a failure.
  bool try_acquire(std::size_t n, std::uint32_t& seen);
  bool try_acquire(std::size_t n) {
    std::uint32_t seen = 0;
    return try_acquire(n, seen);
  }
  /// Gives `n` bytes back and wakes the waiters.
  void release(std::size_t n);

  /// Calls `retry` on `ex` once bytes have been given back (then try_acquire again), or with nothing when
  /// `slot` is cancelled first. Returns at once. `seen` comes from the try_acquire that failed: bytes given
  /// back since then count too, and `retry` is then posted at once (they may have been the last ones held,
  /// and no later release would come).
  void async_wait(const boost::asio::any_io_executor& ex, boost::asio::cancellation_slot slot,
                  std::function<void(bool cancelled)> retry, std::uint32_t seen);

 private:
  struct waiter {
    std::uint64_t id;
    boost::asio::any_io_executor ex;
    std::function<void(bool)> retry;
  };

  // Taking and giving back are lock-free: every frame a relay reads does both, on any thread. The mutex
  // guards only the waiters, and a release that finds waiting_ at zero does not take it; a wait counts itself
  // in waiting_ before it compares releases_, and a release bumps releases_ before it reads waiting_, so (all
  // four sequentially consistent) at least one of the two sees the other.
  const std::size_t capacity_;
  std::atomic<std::size_t> used_{0};
  std::atomic<std::uint32_t> releases_{0};  // wraps; only compared for equality over a wait's start
  std::atomic<std::size_t> waiting_{0};     // waiters_.size(), changed under mu_
  std::mutex mu_;
  std::list<waiter> waiters_;
  std::uint64_t next_id_ = 0;
};

}  // namespace kws
