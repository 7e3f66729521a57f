// An optional whose storage is allocated when it is first engaged, and kept for the next time: for members
// of long-lived objects that most of them never use (a connection's pending write or close handler), so that
// those that do not use them carry a pointer instead of the value's full size.
#pragma once

#include <memory>
#include <optional>
#include <utility>

namespace kws::detail {

template <class T>
class lazy_optional {
 public:
  lazy_optional() = default;
  lazy_optional(const lazy_optional&) = delete;
  lazy_optional& operator=(const lazy_optional&) = delete;

  explicit operator bool() const noexcept { return p_ && p_->has_value(); }
  T& operator*() noexcept { return **p_; }
  T* operator->() noexcept { return &**p_; }
  const T* operator->() const noexcept { return &**p_; }

  template <class... Args>
  T& emplace(Args&&... args) {
    if (!p_) p_ = std::make_unique<std::optional<T>>();
    return p_->emplace(std::forward<Args>(args)...);
  }
  void reset() noexcept {
    if (p_) p_->reset();
  }

 private:
  std::unique_ptr<std::optional<T>> p_;
};

}  // namespace kws::detail
