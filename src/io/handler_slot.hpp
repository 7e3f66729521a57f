// Memory for one asynchronous operation at a time, inside the object that starts it.
//
// An idle relay always has its broker read waiting (src/relay/sides.hpp, ws_side), and the connection keeps
// that read's handler type-erased for as long as the broker is quiet. Asio-style allocation of such a handler
// goes through a per-thread cache that reuses the block last freed on that thread whenever it is large enough
// (blocks of up to about 1 KiB are cached), so a handler of 48 bytes can hold a block freed by a far larger
// operation, such as one of the HTTP handshake, for as long as the connection stays idle. Bound to a handler
// through boost::asio::bind_allocator, a slot_allocator puts it in the owner's own storage instead: no
// allocation at all, and no more memory than the storage. What does not fit, or comes while the slot is
// still taken, gets ordinary heap memory. (The read waits and the keep-alive check, which used slots too,
// now keep no handler at all: see read_wait.hpp and tick_list.hpp.)
//
// Like the operations it serves, a slot is used from its owner's executor only.
#pragma once

#include <cstddef>
#include <new>

namespace kws::detail {

template <std::size_t N>
class handler_slot {
 public:
  handler_slot() = default;
  handler_slot(const handler_slot&) = delete;
  handler_slot& operator=(const handler_slot&) = delete;

  void* allocate(std::size_t size) {
    if (!taken_ && size <= N) {
      taken_ = true;
      return storage_;
    }
    return ::operator new(size);
  }
  void deallocate(void* p) noexcept {
    if (p == static_cast<void*>(storage_)) {
      taken_ = false;
    } else {
      ::operator delete(p);
    }
  }

 private:
  alignas(std::max_align_t) unsigned char storage_[N];
  bool taken_ = false;
};

template <class T, std::size_t N>
class slot_allocator {
 public:
  using value_type = T;
  template <class U>
  struct rebind {
    using other = slot_allocator<U, N>;
  };

  explicit slot_allocator(handler_slot<N>& s) noexcept : slot_(&s) {}
  template <class U>
  slot_allocator(const slot_allocator<U, N>& o) noexcept : slot_(o.slot()) {}

  T* allocate(std::size_t n) { return static_cast<T*>(slot_->allocate(n * sizeof(T))); }
  void deallocate(T* p, std::size_t) noexcept { slot_->deallocate(p); }
  handler_slot<N>* slot() const noexcept { return slot_; }

  template <class U>
  bool operator==(const slot_allocator<U, N>& o) const noexcept {
    return slot_ == o.slot();
  }

 private:
  handler_slot<N>* slot_;
};

}  // namespace kws::detail
