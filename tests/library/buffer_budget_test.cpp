// kws::buffer_budget (src/io/buffer_budget.cpp): a wait that starts after bytes came back, the wake-up by a
// release, and cancellation, driven on an io_context in the test's thread.
#include <kws/buffer_budget.hpp>

#include <gtest/gtest.h>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>

#include <optional>

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

}  // namespace
