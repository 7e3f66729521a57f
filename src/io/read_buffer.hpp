// Read buffers that are given back whenever their owner waits for its peer, and taken again when bytes
// arrive (src/ws/stream_io.cpp, the relay's TCP side in src/relay/sides.hpp).
#pragma once

#include <boost/beast/core/flat_buffer.hpp>

#include <cstddef>
#include <new>
#include <utility>
#include <vector>

namespace kws::detail {

/// The size of a read into an empty buffer: what a busy socket usually holds, taken in one system call.
constexpr std::size_t read_buffer_bytes = 64 * 1024;
/// A smaller size the cache keeps too.
constexpr std::size_t small_read_buffer_bytes = 2 * 1024;

// Buffers of the two sizes above, over and over: a few of each are kept per thread for the next read, so that
// a busy connection does not make malloc grow and trim its heap (a system call each, for 64 KiB) on every
// wake-up; and the largest buffer given back (up to 1 MiB), for the next large frame.
class read_buffer_cache {
 public:
  static void* take(std::size_t bytes) {
    auto* c = mine();
    auto* list = c ? c->list_for(bytes) : nullptr;
    if (!list || list->empty()) return ::operator new(bytes);
    void* p = list->back();
    list->pop_back();
    return p;
  }
  static void give(void* p, std::size_t bytes) noexcept {
    auto* c = mine();
    auto* list = c ? c->list_for(bytes) : nullptr;
    // Never beyond the room reserved up front: keeping a buffer allocates nothing.
    if (list && list->size() < list->capacity()) return list->push_back(p);
    ::operator delete(p);
  }
  static bool cached(std::size_t bytes) {
    return bytes == read_buffer_bytes || bytes == small_read_buffer_bytes;
  }
  // One larger buffer (a large frame's, up to large_limit) is kept too: a connection streaming large frames
  // takes the same one for each. It serves any request it is large enough for; large_bytes_ records the
  // least it is known to hold.
  static void* take_large(std::size_t bytes) {
    auto* c = mine();
    if (!c || !c->large_ || c->large_bytes_ < bytes) return nullptr;
    c->large_bytes_ = 0;
    return std::exchange(c->large_, nullptr);
  }
  static void give_large(void* p, std::size_t bytes) noexcept {
    auto* c = mine();
    if (!c || bytes > large_limit || (c->large_ && c->large_bytes_ >= bytes)) return ::operator delete(p);
    if (c->large_) ::operator delete(c->large_);
    c->large_ = p;
    c->large_bytes_ = bytes;
  }

  read_buffer_cache(const read_buffer_cache&) = delete;
  read_buffer_cache& operator=(const read_buffer_cache&) = delete;

 private:
  explicit read_buffer_cache(bool& gone) : gone_(gone) {
    hot_.reserve(4);
    cold_.reserve(16);
  }
  ~read_buffer_cache() {
    gone_ = true;
    if (large_) ::operator delete(large_);
    for (void* p : hot_) ::operator delete(p);
    for (void* p : cold_) ::operator delete(p);
  }
  std::vector<void*>* list_for(std::size_t bytes) { return bytes == read_buffer_bytes ? &hot_ : &cold_; }
  // The thread's cache; null once it is destroyed at the thread's exit (a buffer freed after that, by an
  // object destroyed later on the same thread, goes straight back to malloc).
  static read_buffer_cache* mine() {
    thread_local bool gone = false;
    if (gone) return nullptr;
    thread_local read_buffer_cache c(gone);
    return &c;
  }
  bool& gone_;
  std::vector<void*> hot_;
  std::vector<void*> cold_;
  static constexpr std::size_t large_limit = 1024 * 1024;
  void* large_ = nullptr;
  std::size_t large_bytes_ = 0;
};

template <class T>
struct read_buffer_allocator {
  using value_type = T;
  read_buffer_allocator() = default;
  template <class U>
  read_buffer_allocator(const read_buffer_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    const auto bytes = n * sizeof(T);
    if (read_buffer_cache::cached(bytes)) return static_cast<T*>(read_buffer_cache::take(bytes));
    if (void* p = read_buffer_cache::take_large(bytes)) return static_cast<T*>(p);
    return static_cast<T*>(::operator new(bytes));
  }
  void deallocate(T* p, std::size_t n) noexcept {
    const auto bytes = n * sizeof(T);
    if (read_buffer_cache::cached(bytes)) return read_buffer_cache::give(p, bytes);
    read_buffer_cache::give_large(p, bytes);
  }
  template <class U>
  bool operator==(const read_buffer_allocator<U>&) const noexcept {
    return true;
  }
};

/// A flat buffer whose allocations of the two sizes above come from the thread's cache.
using read_flat_buffer = boost::beast::basic_flat_buffer<read_buffer_allocator<char>>;

}  // namespace kws::detail
