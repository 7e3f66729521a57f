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
// Like the operations it serves, a slot is used from its owner's executor only. Its storage is one small
// allocation made with the owner, so that it can outlive the owner by one handler's destruction (below).
#pragma once

#include <cstddef>
#include <new>

namespace kws::detail {

template <std::size_t N>
class handler_slot {
  // The storage is a block of its own, not part of the owner: a handler kept in it may hold the owner's
  // last reference, and then destroying that handler frees the owner before the handler's memory is given
  // back (Asio destroys a handler, then deallocates it). A block still taken when its slot goes is left to
  // that deallocation to free.
  struct block {
    alignas(std::max_align_t) unsigned char storage[N];
    bool taken = false;
    bool orphaned = false;
  };

 public:
  handler_slot() : block_(new block) {}
  ~handler_slot() {
    if (block_->taken) {
      block_->orphaned = true;
    } else {
      delete block_;
    }
  }
  handler_slot(const handler_slot&) = delete;
  handler_slot& operator=(const handler_slot&) = delete;

  /// What an allocator keeps: valid for as long as memory it handed out is in use, even past the slot.
  class ref {
   public:
    void* allocate(std::size_t size) {
      if (!b_->taken && !b_->orphaned && size <= N) {
        b_->taken = true;
        return b_->storage;
      }
      return ::operator new(size);
    }
    void deallocate(void* p) noexcept {
      if (p != static_cast<void*>(b_->storage)) return ::operator delete(p);
      if (b_->orphaned) return delete b_;
      b_->taken = false;
    }
    bool operator==(const ref&) const noexcept = default;

   private:
    friend class handler_slot;
    explicit ref(block* b) noexcept : b_(b) {}
    block* b_;
  };
  ref get() noexcept { return ref(block_); }

  /// True when `p` is this slot's storage.
  bool owns(const void* p) const noexcept { return p == static_cast<const void*>(block_->storage); }
  // Used while the slot is there (so never orphaned).
  void* allocate(std::size_t size) {
    if (!block_->taken && size <= N) {
      block_->taken = true;
      return block_->storage;
    }
    return ::operator new(size);
  }
  void deallocate(void* p) noexcept {
    if (owns(p)) {
      block_->taken = false;
    } else {
      ::operator delete(p);
    }
  }

 private:
  block* block_;
};

template <class T, std::size_t N>
class slot_allocator {
 public:
  using value_type = T;
  template <class U>
  struct rebind {
    using other = slot_allocator<U, N>;
  };

  explicit slot_allocator(handler_slot<N>& s) noexcept : slot_(s.get()) {}
  template <class U>
  slot_allocator(const slot_allocator<U, N>& o) noexcept : slot_(o.slot()) {}

  T* allocate(std::size_t n) { return static_cast<T*>(slot_.allocate(n * sizeof(T))); }
  void deallocate(T* p, std::size_t) noexcept { slot_.deallocate(p); }
  typename handler_slot<N>::ref slot() const noexcept { return slot_; }

  template <class U>
  bool operator==(const slot_allocator<U, N>& o) const noexcept {
    return slot_ == o.slot();
  }

 private:
  typename handler_slot<N>::ref slot_;
};

}  // namespace kws::detail
