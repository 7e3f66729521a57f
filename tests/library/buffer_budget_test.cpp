// kws::buffer_budget (src/io/buffer_budget.cpp): a wait that starts after bytes came back, the wake-up by a
// release, and cancellation, driven on an io_context in the test's thread; then takes, releases and waits
// racing on two threads.
#include <kws/buffer_budget.hpp>

#include <gtest/gtest.h>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <optional>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;

// The window between a reader's failed try_acquire and its async_wait: the bytes it needed came back in
// between, from the last holder, so no later release would ever wake it. It is called back at once.
TEST(BufferBudget, BytesGivenBackBetweenAFailedTakeAndTheWaitWakeTheWaiterAtOnce) {
  asio::io_context ioc;
  kws::buffer_budget budget(100);
  ASSERT_TRUE(budget.try_acquire(100));
  std::uint32_t seen = 0;
  ASSERT_FALSE(budget.try_acquire(50, seen));
  budget.release(100);  // the last bytes held: no release comes after this one
  std::optional<bool> called;
  budget.async_wait(
      ioc.get_executor(), asio::cancellation_slot(), [&](bool cancelled) { called = cancelled; }, seen);
  ioc.poll();
  ASSERT_TRUE(called.has_value()) << "the waiter was not called back";
  EXPECT_FALSE(*called);
  EXPECT_TRUE(budget.try_acquire(50));
}

TEST(BufferBudget, AWaiterWithNothingGivenBackWaitsForTheNextRelease) {
  asio::io_context ioc;
  kws::buffer_budget budget(100);
  ASSERT_TRUE(budget.try_acquire(60));
  ASSERT_TRUE(budget.try_acquire(40));
  std::uint32_t seen = 0;
  ASSERT_FALSE(budget.try_acquire(50, seen));
  std::optional<bool> called;
  budget.async_wait(
      ioc.get_executor(), asio::cancellation_slot(), [&](bool cancelled) { called = cancelled; }, seen);
  ioc.poll();
  EXPECT_FALSE(called.has_value()) << "called back with nothing given back";
  budget.release(60);
  ioc.restart();
  ioc.poll();
  ASSERT_TRUE(called.has_value());
  EXPECT_FALSE(*called);
  EXPECT_TRUE(budget.try_acquire(50));
  EXPECT_EQ(budget.in_use(), 90u);
}

TEST(BufferBudget, ACancelledWaitIsCalledBackOnceWithCancelled) {
  asio::io_context ioc;
  kws::buffer_budget budget(10);
  ASSERT_TRUE(budget.try_acquire(10));
  std::uint32_t seen = 0;
  ASSERT_FALSE(budget.try_acquire(1, seen));
  asio::cancellation_signal cancel;
  int calls = 0;
  std::optional<bool> called;
  budget.async_wait(
      ioc.get_executor(), cancel.slot(),
      [&](bool cancelled) {
        ++calls;
        called = cancelled;
      },
      seen);
  cancel.emit(asio::cancellation_type::terminal);
  ioc.poll();
  budget.release(10);  // nobody waits any more
  ioc.restart();
  ioc.poll();
  EXPECT_EQ(calls, 1);
  ASSERT_TRUE(called.has_value());
  EXPECT_TRUE(*called);
}

// Readers on two threads take their bytes and have them given back on the other thread, waiting whenever
// the budget is spent (each take is more than half of it), as relays on two threads do. Every reader
// finishes, and then nothing is held: the lock-free counting loses no bytes either way, and the waits are
// woken (a wake-up lost here would mostly be covered by the next release; the test below races that
// window itself).
TEST(BufferBudget, ReadersOnTwoThreadsAllFinishAndGiveEverythingBack) {
  constexpr int readers_per_thread = 4;
  constexpr int takes = 2000;
  kws::buffer_budget budget(10);
  asio::io_context ioc[2];
  auto guard0 = asio::make_work_guard(ioc[0]);
  auto guard1 = asio::make_work_guard(ioc[1]);
  struct reader {
    asio::io_context* home;
    asio::io_context* other;
    std::size_t n;
    int left;
  };
  std::vector<reader> rs;
  for (int i = 0; i < 2 * readers_per_thread; ++i)
    rs.push_back(reader{&ioc[i % 2], &ioc[1 - i % 2], 6 + static_cast<std::size_t>(i % 2), takes});
  std::atomic<int> running{static_cast<int>(rs.size())};
  std::promise<void> all_done;
  std::atomic<long> waits{0};
  std::function<void(reader&)> step = [&](reader& r) {
    while (r.left > 0) {
      std::uint32_t seen = 0;
      if (!budget.try_acquire(r.n, seen)) {
        ++waits;
        budget.async_wait(
            r.home->get_executor(), asio::cancellation_slot(), [&step, &r](bool) { step(r); }, seen);
        return;
      }
      --r.left;
      asio::post(*r.other, [&budget, n = r.n] { budget.release(n); });
      if (r.left % 8 == 0) {  // let the thread's other readers and releases run
        asio::post(*r.home, [&step, &r] { step(r); });
        return;
      }
    }
    if (--running == 0) all_done.set_value();
  };
  for (auto& r : rs) asio::post(*r.home, [&step, &r] { step(r); });
  std::thread t0([&] { ioc[0].run(); });
  std::thread t1([&] { ioc[1].run(); });
  const bool finished = all_done.get_future().wait_for(std::chrono::seconds(60)) == std::future_status::ready;
  guard0.reset();
  guard1.reset();
  if (!finished) {
    ioc[0].stop();
    ioc[1].stop();
  }
  t0.join();
  t1.join();
  ASSERT_TRUE(finished) << running.load() << " readers still waiting after 60 s";
  EXPECT_EQ(budget.in_use(), 0u);
  EXPECT_GT(waits.load(), 0) << "the budget was never spent: the test tried nothing";
}

// The first test's window, raced for real: the last holder gives its bytes back on one thread while a
// reader on another fails its take and starts its wait. Whichever comes first, once both calls have
// returned the reader's retry must be on its way. Trials (a fresh budget each) repeat until the release
// has landed between the failed take and the wait 20 times, for at most 3 s: a few hundred to a few thousand
// trials on a quiet machine. Under `ctest -j4` on two cores a bound of 20,000 trials (a quarter of a second)
// missed the window every time in four of six runs, hence a bound in time; with four CPU-bound
// processes beside it on two cores even 3 s missed it in two runs of three (then it skips, below). With the
// wait's check of the release count removed, 600 to 1,200 readers were stranded in each of five such runs.
TEST(BufferBudget, TheLastReleaseRacingAFailedTakeAndItsWaitNeverStrandsTheReader) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  constexpr int wanted_races = 20;
  asio::io_context ioc;
  std::optional<kws::buffer_budget> budget;
  // Both threads spin between trials (yielding now and then), so that both are running when a trial
  // starts: a blocking barrier wakes one of them late, and then the release almost always comes first.
  std::atomic<int> go{0}, done{0};
  std::atomic<bool> stop{false};
  const auto spin_until = [](const std::atomic<int>& a, int v) {
    for (int i = 1; a.load() < v; ++i)
      if (i % 4096 == 0) std::this_thread::yield();
  };
  std::thread releaser([&] {
    for (int t = 1;; ++t) {
      spin_until(go, t);  // a trial starts
      if (stop.load()) return;
      budget->release(10);
      done.store(t);
    }
  });
  int trials = 0, waits = 0, stranded = 0, races = 0;
  while (races < wanted_races && std::chrono::steady_clock::now() < deadline) {
    ++trials;
    budget.emplace(10);
    if (!budget->try_acquire(10)) {
      ADD_FAILURE() << "a fresh budget refused its whole capacity";
      break;
    }
    bool called = false;
    go.store(trials);
    // The release needs a moment to see `go`: a delay that sweeps trial by trial moves the take across it.
    for (int k = 0; k < trials % 1024; ++k) std::atomic_signal_fence(std::memory_order_seq_cst);
    std::uint32_t seen = 0;
    const bool took = budget->try_acquire(1, seen);
    if (!took) {
      ++waits;
      // The release landed between the failed take and this wait when it is already counted here.
      if (budget->in_use() == 0) ++races;
      budget->async_wait(
          ioc.get_executor(), asio::cancellation_slot(), [&](bool) { called = true; }, seen);
    }
    spin_until(done, trials);  // both calls have returned
    ioc.restart();
    ioc.poll();
    if (!took && !called) ++stranded;
  }
  stop.store(true);
  go.store(trials + 1);
  releaser.join();
  EXPECT_EQ(stranded, 0) << "of " << waits << " waits in " << trials << " trials";
  // On a machine too busy to run both threads at once the release may never land in the window; that says
  // nothing either way.
  if (races == 0)
    GTEST_SKIP() << "in " << trials << " trials the release never landed between a failed take and its wait";
}

}  // namespace
