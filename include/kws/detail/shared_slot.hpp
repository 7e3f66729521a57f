// A value that a reload replaces whole while other threads read it: each reader takes the current one and
// keeps it as long as it needs (a handshake, a dial, a lookup).
//
// A mutex rather than std::atomic<std::shared_ptr<T>>: GCC 12's atomic shared_ptr ends a load by unlocking
// with a relaxed decrement, so nothing orders the reader's read of the pointer before the next store's write
// of it; ThreadSanitizer reports exactly that as a data race. Readers take this once per connection, where
// an uncontended lock costs nothing measurable.
#pragma once

#include <memory>
#include <mutex>
#include <utility>

namespace kws::detail {

template <class T>
class shared_slot {
 public:
  shared_slot() = default;
  explicit shared_slot(std::shared_ptr<T> value) : value_(std::move(value)) {}
  shared_slot(const shared_slot&) = delete;
  shared_slot& operator=(const shared_slot&) = delete;

  std::shared_ptr<T> load() const {
    std::lock_guard lock(mutex_);
    return value_;
  }
  /// The value replaced is released after the lock (its destructor may be long: an SSL context).
  void store(std::shared_ptr<T> value) {
    {
      std::lock_guard lock(mutex_);
      value_.swap(value);
    }
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<T> value_;
};

}  // namespace kws::detail
