// Memory for what a handshake needs only while it runs: a dial's (src/ws/dialer.cpp: its operations' states,
// the upgrade request and the parser of the answer), an accept's (src/ws/accept.cpp: its operations' states,
// the request's parser and buffer, the answer) and the gateway's dial of its cluster
// (apps/kafka-websocket-gateway/cluster_dial.cpp). Public, though a detail, for that last one.
//
// A dial allocates a few dozen such objects, and every one of them is freed by the time the connection is
// handed over; but the connection, the relay and the session that live on are allocated in between. With
// thousands of dials under way at once (clients connecting in a burst while the broker is slow to answer
// upgrades), malloc then places long-lived objects among short-lived ones, and what those leave behind is
// scattered free space that the process keeps: 1.6 KiB per connection at 10,000 connections, measured.
//
// Here the short-lived objects come from chunks of their own instead, taken with mmap, handed out bump-style
// and counted: a chunk goes back to the system as soon as the last object in it is freed and the thread has
// moved on to another. Objects may be freed on any thread (a chunk's count is atomic); each carries a pointer
// to its chunk. One spare chunk is kept per thread, so that a steady trickle of dials maps nothing.
#pragma once

#include <sys/mman.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>

namespace kws::detail {

class dial_arena {
 public:
  static constexpr std::size_t chunk_bytes = 64 * 1024;
  /// Larger requests go to operator new (none of a dial's objects is this large).
  static constexpr std::size_t max_object_bytes = 4 * 1024;

#if defined(__SANITIZE_ADDRESS__)
  // Under AddressSanitizer every object gets memory of its own, which the sanitizer watches.
  static constexpr bool enabled = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  static constexpr bool enabled = false;
#else
  static constexpr bool enabled = true;
#endif
#else
  static constexpr bool enabled = true;
#endif

  static void* allocate(std::size_t n) {
    if (!enabled || n > max_object_bytes) return ::operator new(n);
    auto* t = mine();
    const std::size_t need = header_bytes + round_up(n);
    unsigned char* p;
    chunk* c = nullptr;
    if (t) {
      if (!t->current || t->current->used + need > chunk_bytes) t->next_chunk();
      c = t->current;
      p = reinterpret_cast<unsigned char*>(c) + c->used;
      c->used += need;
      c->live.fetch_add(1, std::memory_order_relaxed);
    } else {
      p = static_cast<unsigned char*>(::operator new(need));  // the thread is exiting
    }
    *reinterpret_cast<chunk**>(p) = c;
    return p + header_bytes;
  }

  static void deallocate(void* p, std::size_t n) noexcept {
    if (!enabled || n > max_object_bytes) return ::operator delete(p);
    auto* start = static_cast<unsigned char*>(p) - header_bytes;
    if (auto* c = *reinterpret_cast<chunk**>(start)) return release(c);
    ::operator delete(start);
  }

 private:
  struct chunk {
    std::atomic<std::size_t> live{1};  // objects in it, plus one while it is a thread's current chunk
    std::size_t used = 0;              // bytes handed out, this header included
  };
  static constexpr std::size_t align = alignof(std::max_align_t);
  static constexpr std::size_t header_bytes = align;  // the chunk pointer, padded to keep objects aligned
  static constexpr std::size_t round_up(std::size_t n) {
    return (n + align - 1) & ~(align - 1);
  }
  static constexpr std::size_t chunk_header_bytes = (sizeof(chunk) + align - 1) & ~(align - 1);

  static void release(chunk* c) noexcept {
    if (c->live.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    auto* t = mine();
    if (t && !t->spare) {
      t->spare = c;
      return;
    }
    ::munmap(c, chunk_bytes);
  }

  struct per_thread {
    explicit per_thread(bool& g) : gone(g) {}
    chunk* current = nullptr;
    chunk* spare = nullptr;
    bool& gone;
    void next_chunk() {
      chunk* c = spare;
      spare = nullptr;
      if (!c) {
        void* m = ::mmap(nullptr, chunk_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) throw std::bad_alloc();
        c = static_cast<chunk*>(m);
      }
      new (c) chunk();
      c->used = chunk_header_bytes;
      chunk* old = current;
      current = c;
      if (old) release(old);  // the thread's own reference
    }
    ~per_thread() {
      gone = true;  // from here on, chunks emptied on this thread are unmapped
      if (spare) ::munmap(spare, chunk_bytes);
      if (current) release(current);
    }
  };
  // The thread's state; null once it is destroyed at the thread's exit.
  static per_thread* mine() {
    thread_local bool gone = false;
    if (gone) return nullptr;
    thread_local per_thread t(gone);
    return &t;
  }
};

template <class T>
struct dial_allocator {
  using value_type = T;
  dial_allocator() = default;
  template <class U>
  dial_allocator(const dial_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(dial_arena::allocate(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { dial_arena::deallocate(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const dial_allocator<U>&) const noexcept {
    return true;
  }
};

/// Deletes an object made in the arena: `std::unique_ptr<T, dial_delete<T>>`, for state that must stay at one
/// address while an operation moves (make it with `new (dial_allocator<T>().allocate(1)) T(...)`).
template <class T>
struct dial_delete {
  void operator()(T* p) const noexcept {
    p->~T();
    dial_allocator<T>().deallocate(p, 1);
  }
};

}  // namespace kws::detail
