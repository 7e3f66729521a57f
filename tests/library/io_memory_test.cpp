// The private memory primitives of src/io/: the per-thread read buffer cache (read_buffer.hpp), the handler
// slot (handler_slot.hpp), the optional allocated on first use (lazy_optional.hpp) and the dial arena
// (dial_arena.hpp). What each keeps, for how long, and what it gives back.
#include <kws/detail/dial_arena.hpp>
#include "io/handler_slot.hpp"
#include "io/lazy_optional.hpp"
#include "io/read_buffer.hpp"

#include <gtest/gtest.h>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
using kws::detail::dial_arena;
using kws::detail::handler_slot;
using kws::detail::lazy_optional;
using kws::detail::read_buffer_allocator;
using kws::detail::read_buffer_bytes;
using kws::detail::small_read_buffer_bytes;

// Runs `f` on a thread of its own, so that it starts from empty per-thread state (caches, arena chunks).
template <class F>
void on_fresh_thread(F f) {
  std::thread t(f);
  t.join();
}

// ---- read_buffer.hpp
// ----------------------------------------------------------------------------------------

TEST(ReadBufferCache, GivesBackTheLastBufferReturnedOnThisThread) {
  on_fresh_thread([] {
    read_buffer_allocator<char> a;
    char* p = a.allocate(read_buffer_bytes);
    a.deallocate(p, read_buffer_bytes);
    char* q = a.allocate(read_buffer_bytes);
    EXPECT_EQ(q, p);
    a.deallocate(q, read_buffer_bytes);
  });
}

TEST(ReadBufferCache, KeepsAtMostFourLargeAndSixteenSmallBuffers) {
  on_fresh_thread([] {
    read_buffer_allocator<char> a;
    for (const auto& [bytes, kept] :
         {std::pair{read_buffer_bytes, 4u}, std::pair{small_read_buffer_bytes, 16u}}) {
      std::vector<char*> given;
      for (unsigned i = 0; i < kept + 1; ++i) given.push_back(a.allocate(bytes));
      for (char* p : given) a.deallocate(p, bytes);
      // The cache is a stack: the last one kept comes back first, and the one beyond the bound was freed.
      std::vector<char*> taken;
      for (unsigned i = 0; i < kept; ++i) taken.push_back(a.allocate(bytes));
      for (unsigned i = 0; i < kept; ++i) EXPECT_EQ(taken[i], given[kept - 1 - i]) << bytes << " #" << i;
      for (char* p : taken) a.deallocate(p, bytes);
    }
  });
}

TEST(ReadBufferCache, KeepsTheTwoSizesApart) {
  on_fresh_thread([] {
    read_buffer_allocator<char> a;
    char* big = a.allocate(read_buffer_bytes);
    a.deallocate(big, read_buffer_bytes);
    // A small request is not served from the 64 KiB buffer kept (it would pin 64 KiB for 2 KiB).
    char* small = a.allocate(small_read_buffer_bytes);
    EXPECT_NE(small, big);
    char* big_again = a.allocate(read_buffer_bytes);
    EXPECT_EQ(big_again, big);
    a.deallocate(small, small_read_buffer_bytes);
    a.deallocate(big_again, read_buffer_bytes);
  });
}

TEST(ReadBufferCache, CachesArePerThread) {
  read_buffer_allocator<char> a;
  char* mine = nullptr;
  std::atomic<bool> given{false};
  std::atomic<bool> checked{false};
  std::thread other([&] {
    mine = a.allocate(read_buffer_bytes);
    a.deallocate(mine, read_buffer_bytes);
    given = true;
    given.notify_one();
    checked.wait(false);
    // Still this thread's: taken back here (and freed with the thread's cache at its exit).
    EXPECT_EQ(a.allocate(read_buffer_bytes), mine);
    a.deallocate(mine, read_buffer_bytes);
  });
  given.wait(false);
  on_fresh_thread([&] {
    char* p = a.allocate(read_buffer_bytes);
    EXPECT_NE(p, mine);
    a.deallocate(p, read_buffer_bytes);
  });
  checked = true;
  checked.notify_one();
  other.join();
}

TEST(ReadBufferCache, KeepsTheLargestLargeBufferForAnyRequestItCovers) {
  on_fresh_thread([] {
    read_buffer_allocator<char> a;
    constexpr std::size_t kib = 1024;
    char* p300 = a.allocate(300 * kib);
    char* p200 = a.allocate(200 * kib);
    a.deallocate(p300, 300 * kib);
    a.deallocate(p200, 200 * kib);  // smaller than the one kept: freed
    // A request the kept buffer covers takes it, once.
    char* q = a.allocate(250 * kib);
    EXPECT_EQ(q, p300);
    char* r = a.allocate(250 * kib);
    EXPECT_NE(r, p300);
    a.deallocate(r, 250 * kib);
    // A larger buffer given back replaces the one kept.
    a.deallocate(q, 300 * kib);
    char* s = a.allocate(260 * kib);
    EXPECT_EQ(s, q);
    // Too large a request for the buffer kept gets new memory and leaves the kept one alone.
    a.deallocate(s, 300 * kib);
    char* t = a.allocate(400 * kib);
    EXPECT_NE(t, s);
    a.deallocate(t, 400 * kib);  // now the largest: s was freed
    EXPECT_EQ(a.allocate(400 * kib), t);
    a.deallocate(t, 400 * kib);
  });
}

TEST(ReadBufferCache, DoesNotKeepBuffersAboveOneMebibyte) {
  on_fresh_thread([] {
    read_buffer_allocator<char> a;
    constexpr std::size_t mib = 1024 * 1024;
    char* small_large = a.allocate(512 * 1024);
    a.deallocate(small_large, 512 * 1024);
    char* huge = a.allocate(2 * mib);
    a.deallocate(huge, 2 * mib);  // not kept, and the 512 KiB one stays
    EXPECT_EQ(a.allocate(256 * 1024), small_large);
    a.deallocate(small_large, 512 * 1024);
  });
}

TEST(ReadBufferCache, ABeastBufferGivesItsMemoryBackAndTakesItAgain) {
  on_fresh_thread([] {
    kws::detail::read_flat_buffer buf;
    buf.reserve(read_buffer_bytes);
    const void* first = buf.data().data();
    buf.commit(asio::buffer_copy(buf.prepare(5), asio::buffer("hello", 5)));
    buf.consume(5);
    buf.shrink_to_fit();
    EXPECT_EQ(buf.capacity(), 0u);
    buf.reserve(read_buffer_bytes);
    EXPECT_EQ(buf.data().data(), first);
  });
}

TEST(ReadBufferCache, BuffersKeptByAThreadGoWithIt) {
  // LeakSanitizer (asan-ubsan preset) reports the buffers if the thread's cache did not free them at its
  // exit.
  on_fresh_thread([] {
    read_buffer_allocator<char> a;
    std::vector<char*> v;
    for (int i = 0; i < 3; ++i) v.push_back(a.allocate(read_buffer_bytes));
    for (int i = 0; i < 3; ++i) v.push_back(a.allocate(small_read_buffer_bytes));
    v.push_back(a.allocate(100 * 1024));
    for (int i = 0; i < 3; ++i) a.deallocate(v[i], read_buffer_bytes);
    for (int i = 3; i < 6; ++i) a.deallocate(v[i], small_read_buffer_bytes);
    a.deallocate(v[6], 100 * 1024);
  });
  SUCCEED();
}

// ---- handler_slot.hpp
// ---------------------------------------------------------------------------------------

TEST(HandlerSlot, ServesOneAllocationAtATimeFromItsStorage) {
  handler_slot<64> slot;
  void* first = slot.allocate(64);
  EXPECT_TRUE(slot.owns(first));
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(first) % alignof(std::max_align_t), 0u);
  // Taken: the next one comes from the heap.
  void* second = slot.allocate(8);
  EXPECT_FALSE(slot.owns(second));
  slot.deallocate(second);
  slot.deallocate(first);
  // Free again.
  void* third = slot.allocate(1);
  EXPECT_EQ(third, first);
  slot.deallocate(third);
}

TEST(HandlerSlot, WhatDoesNotFitGoesToTheHeapAndLeavesTheSlotFree) {
  handler_slot<64> slot;
  void* big = slot.allocate(65);
  EXPECT_FALSE(slot.owns(big));
  void* small = slot.allocate(64);
  EXPECT_TRUE(slot.owns(small));
  slot.deallocate(big);
  slot.deallocate(small);
}

TEST(HandlerSlot, HoldsAnAsioOperationWhileItWaitsAndIsFreeWhenItsHandlerRuns) {
  asio::io_context ioc;
  handler_slot<512> slot;
  asio::steady_timer timer(ioc, std::chrono::hours(1));
  int calls = 0;
  bool slot_free_in_handler = false;
  timer.async_wait(
      asio::bind_allocator(kws::detail::slot_allocator<void, 512>(slot), [&](boost::system::error_code ec) {
        ++calls;
        EXPECT_EQ(ec, asio::error::operation_aborted);
        // Asio frees the operation before the upcall.
        void* p = slot.allocate(1);
        slot_free_in_handler = slot.owns(p);
        slot.deallocate(p);
      }));
  // While the wait is pending its operation sits in the slot.
  void* probe = slot.allocate(1);
  EXPECT_FALSE(slot.owns(probe));
  slot.deallocate(probe);
  timer.cancel();
  ioc.run_for(std::chrono::seconds(5));
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(slot_free_in_handler);
}

TEST(HandlerSlot, AnOperationDestroyedWithItsContextGivesTheSlotBack) {
  handler_slot<512> slot;
  auto alive = std::make_shared<int>(0);
  std::weak_ptr<int> watch = alive;
  {
    asio::io_context ioc;
    asio::post(ioc, asio::bind_allocator(kws::detail::slot_allocator<void, 512>(slot),
                                         [keep = std::move(alive)] { ADD_FAILURE() << "ran"; }));
    void* probe = slot.allocate(1);
    EXPECT_FALSE(slot.owns(probe));
    slot.deallocate(probe);
  }
  EXPECT_TRUE(watch.expired());
  void* p = slot.allocate(1);
  EXPECT_TRUE(slot.owns(p));
  slot.deallocate(p);
}

// A handler in the slot may hold its owner's last reference: destroying it (unrun, with its context) frees
// the owner, slot included, before Asio gives the handler's memory back. The memory is the slot's own
// block, which that deallocation then frees (run under asan-ubsan to see a use after free otherwise).
TEST(HandlerSlot, AHandlerThatOwnsTheSlotsOwnerCanBeDestroyedWithItsContext) {
  struct owner {
    handler_slot<128> slot;
  };
  auto o = std::make_shared<owner>();
  std::weak_ptr<owner> watch = o;
  {
    asio::io_context ioc;
    auto alloc = kws::detail::slot_allocator<void, 128>(o->slot);
    asio::post(ioc, asio::bind_allocator(alloc, [keep = std::move(o)] { ADD_FAILURE() << "ran"; }));
    EXPECT_FALSE(watch.expired());
  }
  EXPECT_TRUE(watch.expired());
}

TEST(HandlerSlot, AllocatorsOfOneSlotCompareEqualAcrossRebinds) {
  handler_slot<32> a;
  handler_slot<32> b;
  kws::detail::slot_allocator<int, 32> ia(a);
  kws::detail::slot_allocator<char, 32> ca(ia);
  EXPECT_TRUE(ia == ca);
  EXPECT_FALSE(ia == (kws::detail::slot_allocator<int, 32>(b)));
  int* p = ia.allocate(4);
  EXPECT_TRUE(a.owns(p));
  ca.deallocate(reinterpret_cast<char*>(p), 16);
  EXPECT_EQ(ia.allocate(8), p);  // freed through the rebound copy
  ia.deallocate(p, 8);
}

// ---- lazy_optional.hpp
// --------------------------------------------------------------------------------------

struct counted {
  explicit counted(int v, int& live) : value(v), live_(&live) { ++live; }
  ~counted() { --*live_; }
  counted(const counted&) = delete;
  counted& operator=(const counted&) = delete;
  int value;
  int* live_;
};

TEST(LazyOptional, IsEmptyAndCostsAPointerUntilFirstUsed) {
  lazy_optional<std::array<char, 4096>> o;
  EXPECT_FALSE(o);
  EXPECT_EQ(sizeof(o), sizeof(void*));
  o.reset();  // on no storage: nothing
  EXPECT_FALSE(o);
}

TEST(LazyOptional, ResetDestroysTheValueAndKeepsItsStorageForTheNextOne) {
  int live = 0;
  lazy_optional<counted> o;
  counted& first = o.emplace(1, live);
  EXPECT_TRUE(o);
  EXPECT_EQ(live, 1);
  EXPECT_EQ(o->value, 1);
  o.reset();
  EXPECT_FALSE(o);
  EXPECT_EQ(live, 0);
  counted& second = o.emplace(2, live);
  EXPECT_EQ(&second, &first);
  EXPECT_EQ((*o).value, 2);
  EXPECT_EQ(live, 1);
}

TEST(LazyOptional, EmplaceOverAValueDestroysTheOldOneFirst) {
  int live = 0;
  lazy_optional<counted> o;
  o.emplace(1, live);
  o.emplace(2, live);
  EXPECT_EQ(live, 1);
  EXPECT_EQ(o->value, 2);
}

TEST(LazyOptional, DestroysAnEngagedValueOnce) {
  int live = 0;
  {
    lazy_optional<counted> o;
    o.emplace(1, live);
  }
  EXPECT_EQ(live, 0);
  {
    lazy_optional<counted> o;
    o.emplace(1, live);
    o.reset();
  }
  EXPECT_EQ(live, 0);
}

// ---- dial_arena.hpp
// -----------------------------------------------------------------------------------------

// Whether the page holding `p` is mapped (msync fails with ENOMEM on an unmapped range).
bool mapped(const void* p) {
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  auto* start = reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(p) & ~(page - 1));
  if (::msync(start, page, MS_ASYNC) == 0) return true;
  EXPECT_EQ(errno, ENOMEM);
  return false;
}

constexpr std::size_t object_bytes = 100;
// The distance between two objects of that size in one chunk: a header (the chunk pointer) before each
// object, sizes rounded up to the alignment.
constexpr std::size_t align = alignof(std::max_align_t);
constexpr std::ptrdiff_t stride = align + (object_bytes + align - 1) / align * align;

std::ptrdiff_t distance(const void* from, const void* to) {
  return static_cast<std::ptrdiff_t>(reinterpret_cast<std::uintptr_t>(to) -
                                     reinterpret_cast<std::uintptr_t>(from));
}

TEST(DialArena, IsOffUnderAddressSanitizerOnlyAndRoundTripsEitherWay) {
#if defined(__SANITIZE_ADDRESS__)
  EXPECT_FALSE(dial_arena::enabled);
#else
  EXPECT_TRUE(dial_arena::enabled);
#endif
  on_fresh_thread([] {
    std::vector<void*> v;
    for (std::size_t n : {1u, 16u, 100u, 4096u, 4097u, 100000u}) {
      void* p = dial_arena::allocate(n);
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % alignof(std::max_align_t), 0u) << n;
      std::memset(p, 0xab, n);
      v.push_back(p);
    }
    std::size_t i = 0;
    for (std::size_t n : {1u, 16u, 100u, 4096u, 4097u, 100000u}) dial_arena::deallocate(v[i++], n);
  });
}

TEST(DialArena, HandsOutObjectsBumpStyleAndLargeOnesFromTheHeap) {
  if (!dial_arena::enabled) GTEST_SKIP() << "off under AddressSanitizer";
  on_fresh_thread([] {
    void* a = dial_arena::allocate(object_bytes);
    void* big = dial_arena::allocate(dial_arena::max_object_bytes + 1);
    void* b = dial_arena::allocate(object_bytes);
    // The large one took no room in the chunk.
    EXPECT_EQ(distance(a, b), stride);
    dial_arena::deallocate(big, dial_arena::max_object_bytes + 1);
    dial_arena::deallocate(a, object_bytes);
    dial_arena::deallocate(b, object_bytes);
  });
}

// Allocates objects until one lands in a chunk other than the first object's: returns them all, the last one
// being the first of the next chunk.
std::vector<void*> fill_one_chunk() {
  std::vector<void*> v{dial_arena::allocate(object_bytes)};
  for (;;) {
    void* p = dial_arena::allocate(object_bytes);
    v.push_back(p);
    if (distance(v[v.size() - 2], p) != stride) return v;
  }
}

TEST(DialArena, AnEmptiedChunkIsKeptAsTheSpareThenTheNextOneIsUnmapped) {
  if (!dial_arena::enabled) GTEST_SKIP() << "off under AddressSanitizer";
  on_fresh_thread([] {
    auto a = fill_one_chunk();  // chunk A full; the last object opened chunk B
    void* b_first = a.back();
    a.pop_back();
    EXPECT_GE(a.size() * object_bytes, dial_arena::chunk_bytes / 2);
    auto b = fill_one_chunk();  // the rest of B; the last one opened chunk C
    b.insert(b.begin(), b_first);
    void* c_first = b.back();
    b.pop_back();
    auto c = fill_one_chunk();  // the rest of C, and the first object of D

    // Still in use until its last object goes.
    for (std::size_t i = 1; i < a.size(); ++i) dial_arena::deallocate(a[i], object_bytes);
    EXPECT_TRUE(mapped(a[0]));
    dial_arena::deallocate(a[0], object_bytes);
    EXPECT_TRUE(mapped(a[0])) << "the first chunk emptied should be kept as the thread's spare";
    for (void* p : b) dial_arena::deallocate(p, object_bytes);
    EXPECT_FALSE(mapped(b[0])) << "with a spare kept, an emptied chunk goes back to the system";
    dial_arena::deallocate(c_first, object_bytes);
    for (void* p : c) dial_arena::deallocate(p, object_bytes);
  });
}

TEST(DialArena, TheSpareChunkServesTheNextChunkNeeded) {
  if (!dial_arena::enabled) GTEST_SKIP() << "off under AddressSanitizer";
  on_fresh_thread([] {
    auto a = fill_one_chunk();
    void* in_b = a.back();
    a.pop_back();
    for (void* p : a) dial_arena::deallocate(p, object_bytes);  // A is the spare now
    auto b = fill_one_chunk();                                  // B fills up: the next chunk is A again
    const auto off = distance(a.front(), b.back());
    EXPECT_GE(off, 0);
    EXPECT_LT(off, static_cast<std::ptrdiff_t>(dial_arena::chunk_bytes));
    dial_arena::deallocate(in_b, object_bytes);
    for (void* p : b) dial_arena::deallocate(p, object_bytes);
  });
}

TEST(DialArena, ObjectsOutliveTheThreadThatAllocatedThemAndTheirChunkGoesWithTheLast) {
  if (!dial_arena::enabled) GTEST_SKIP() << "off under AddressSanitizer";
  std::vector<void*> left;
  on_fresh_thread([&] {
    for (int i = 0; i < 10; ++i) left.push_back(dial_arena::allocate(object_bytes));
  });
  // The thread's exit released its own reference to the chunk; the objects keep it mapped.
  for (void* p : left) std::memset(p, 0x5a, object_bytes);
  EXPECT_TRUE(mapped(left[0]));
  on_fresh_thread([&] {
    // Emptied here: this thread has no spare yet, so the chunk becomes it, and goes at this thread's exit.
    for (void* p : left) dial_arena::deallocate(p, object_bytes);
    EXPECT_TRUE(mapped(left[0]));
  });
  EXPECT_FALSE(mapped(left[0]));
}

TEST(DialArena, ObjectsFreedOnOtherThreadsWhileTheOwnerKeepsAllocating) {
  // Dials complete on any worker: the chunk's count is shared (ThreadSanitizer checks it, tsan preset).
  constexpr int per_round = 200;
  constexpr int rounds = 50;
  std::vector<std::vector<void*>> batches(rounds);
  std::atomic<int> ready{0};
  std::thread producer([&] {
    for (int r = 0; r < rounds; ++r) {
      for (int i = 0; i < per_round; ++i) {
        auto* p = static_cast<unsigned char*>(dial_arena::allocate(object_bytes));
        std::memset(p, r, object_bytes);
        batches[r].push_back(p);
      }
      ready.store(r + 1, std::memory_order_release);
      ready.notify_one();
    }
  });
  std::thread consumer([&] {
    for (int r = 0; r < rounds; ++r) {
      for (int have = ready.load(std::memory_order_acquire); have <= r;
           have = ready.load(std::memory_order_acquire))
        ready.wait(have);
      for (void* p : batches[r]) {
        EXPECT_EQ(*static_cast<unsigned char*>(p), static_cast<unsigned char>(r));
        dial_arena::deallocate(p, object_bytes);
      }
    }
  });
  producer.join();
  consumer.join();
}

struct allocates_at_exit {
  bool* done;
  ~allocates_at_exit() {
    // The thread's arena state is gone by now (it was made after this object): plain heap memory.
    void* p = dial_arena::allocate(object_bytes);
    std::memset(p, 1, object_bytes);
    dial_arena::deallocate(p, object_bytes);
    *done = true;
  }
};

TEST(DialArena, AllocatesFromTheHeapOnceTheThreadsStateIsGone) {
  bool done = false;
  on_fresh_thread([&] {
    thread_local allocates_at_exit probe{&done};
    (void)probe;
    dial_arena::deallocate(dial_arena::allocate(object_bytes), object_bytes);
  });
  EXPECT_TRUE(done);
}

TEST(DialArena, ServesStandardContainersThroughItsAllocator) {
  on_fresh_thread([] {
    std::vector<int, kws::detail::dial_allocator<int>> v;
    for (int i = 0; i < 500; ++i) v.push_back(i);  // grows past max_object_bytes: onto the heap, and back
    int sum = 0;
    for (int x : v) sum += x;
    EXPECT_EQ(sum, 499 * 500 / 2);
    auto sp = std::allocate_shared<std::string>(kws::detail::dial_allocator<std::string>(), "dial");
    EXPECT_EQ(*sp, "dial");
  });
}

}  // namespace
