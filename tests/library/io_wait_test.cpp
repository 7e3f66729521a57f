// The private waiting primitives of src/io/: the tick lists (tick_list.hpp), periodic checks with one timer
// per period, and the buffer-less readiness wait (read_wait.hpp) over real loopback sockets.
#include "io/read_wait.hpp"
#include "io/tick_list.hpp"

#include <gtest/gtest.h>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/version.hpp>

#include <sys/socket.h>

#include <array>
#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using namespace std::chrono_literals;
using kws::detail::tick_lists;

// Every test's run is bounded: a wait that never completes fails the test instead of hanging it.
constexpr auto bound = 10s;

// ---- tick_list.hpp
// ------------------------------------------------------------------------------------------

// An owner of one entry, as a connection owns its keep-alive check.
struct ticking : std::enable_shared_from_this<ticking> {
  explicit ticking(asio::io_context& ioc) : ex(ioc.get_executor()) {}
  static std::shared_ptr<void> lock(void* self) {
    auto* t = static_cast<ticking*>(self);
    if (t->refuse_lock) return {};
    return t->shared_from_this();
  }
  static void fire(void* self, std::shared_ptr<void> keep) {
    auto* t = static_cast<ticking*>(self);
    EXPECT_EQ(keep.get(), static_cast<void*>(t));
    t->fired_at.push_back(tick_lists::clock::now());
    if (t->on_fire) t->on_fire(*t);
  }
  static constexpr tick_lists::owner_ops ops{&ticking::lock, &ticking::fire};

  asio::any_io_executor ex;
  tick_lists::entry entry{this, &ops};
  std::vector<tick_lists::clock::time_point> fired_at;
  std::function<void(ticking&)> on_fire;
  bool refuse_lock = false;
};

TEST(TickList, FiresOnceNoEarlierThanItsPeriodAndRunReturnsAfterwards) {
  asio::io_context ioc;
  auto t = std::make_shared<ticking>(ioc);
  const auto start = tick_lists::clock::now();
  t->entry.schedule(t->ex, 30ms);
  // run() returns by itself: the list's timer is not waited for once the list is empty.
  ioc.run_for(bound);
  ASSERT_EQ(t->fired_at.size(), 1u);
  EXPECT_GE(t->fired_at[0] - start, 30ms);
  EXPECT_LT(tick_lists::clock::now() - start, bound / 2);
}

TEST(TickList, ACancelledEntryNeverFiresAndItsEmptyListLetsRunReturn) {
  asio::io_context ioc;
  auto t = std::make_shared<ticking>(ioc);
  const auto start = tick_lists::clock::now();
  t->entry.schedule(t->ex, std::chrono::milliseconds(std::chrono::hours(1)));
  t->entry.cancel();
  t->entry.cancel();  // twice: nothing
  ioc.run_for(bound);
  EXPECT_TRUE(t->fired_at.empty());
  EXPECT_LT(tick_lists::clock::now() - start, bound / 2);
}

TEST(TickList, RescheduleReplacesThePendingOne) {
  asio::io_context ioc;
  auto t = std::make_shared<ticking>(ioc);
  t->entry.schedule(t->ex, 20ms);
  const auto again = tick_lists::clock::now();
  t->entry.schedule(t->ex, 40ms);
  ioc.run_for(bound);
  ASSERT_EQ(t->fired_at.size(), 1u);
  EXPECT_GE(t->fired_at[0] - again, 40ms);
}

TEST(TickList, AnEntryMayScheduleItselfAgainFromItsCheck) {
  asio::io_context ioc;
  auto t = std::make_shared<ticking>(ioc);
  t->on_fire = [](ticking& self) {
    if (self.fired_at.size() < 3) self.entry.schedule(self.ex, 10ms);
  };
  t->entry.schedule(t->ex, 10ms);
  ioc.run_for(bound);
  EXPECT_EQ(t->fired_at.size(), 3u);
}

TEST(TickList, AnOwnerBeingDestroyedIsNotFired) {
  asio::io_context ioc;
  auto dying = std::make_shared<ticking>(ioc);
  auto living = std::make_shared<ticking>(ioc);
  dying->refuse_lock = true;  // what a weak lock returns once the last strong reference is gone
  dying->entry.schedule(dying->ex, 10ms);
  living->entry.schedule(living->ex, 10ms);
  ioc.run_for(bound);
  EXPECT_TRUE(dying->fired_at.empty());
  EXPECT_EQ(living->fired_at.size(), 1u);
}

TEST(TickList, DestroyingAScheduledEntryUnlinksItFromTheMiddleOfItsList) {
  asio::io_context ioc;
  std::vector<std::shared_ptr<ticking>> owners;
  for (int i = 0; i < 5; ++i) {
    owners.push_back(std::make_shared<ticking>(ioc));
    owners.back()->entry.schedule(owners.back()->ex, 20ms);
  }
  owners[0].reset();  // the head
  owners[2].reset();  // the middle
  owners[4].reset();  // the tail
  ioc.run_for(bound);
  EXPECT_EQ(owners[1]->fired_at.size(), 1u);
  EXPECT_EQ(owners[3]->fired_at.size(), 1u);
}

TEST(TickList, EntriesOfOnePeriodFireInOrderAndOtherPeriodsOnTheirOwnTimers) {
  asio::io_context ioc;
  std::vector<int> order;
  std::vector<std::shared_ptr<ticking>> owners;
  const std::array<std::chrono::milliseconds, 4> periods{60ms, 20ms, 60ms, 20ms};
  for (std::size_t i = 0; i < periods.size(); ++i) {
    owners.push_back(std::make_shared<ticking>(ioc));
    owners.back()->on_fire = [&order, i](ticking&) { order.push_back(static_cast<int>(i)); };
    owners.back()->entry.schedule(owners.back()->ex, periods[i]);
  }
  ioc.run_for(bound);
  EXPECT_EQ(order, (std::vector<int>{1, 3, 0, 2}));
}

TEST(TickList, EntriesScheduledTogetherFireInOneTick) {
  asio::io_context ioc;
  std::vector<std::shared_ptr<ticking>> owners;
  for (int i = 0; i < 50; ++i) owners.push_back(std::make_shared<ticking>(ioc));
  for (auto& o : owners) o->entry.schedule(o->ex, 10ms);
  // Handlers run: the one timer's wait, once or twice (if the entries straddled a tick), not once per entry.
  const auto handlers = ioc.run_for(bound);
  EXPECT_LE(handlers, 2u);
  for (auto& o : owners) EXPECT_EQ(o->fired_at.size(), 1u);
}

TEST(TickList, SchedulesAndCancelsFromOtherThreadsWhileTheContextRuns) {
  // What ThreadSanitizer (tsan preset) checks: the list is shared by every thread that schedules on it.
  asio::io_context ioc;
  auto guard = asio::make_work_guard(ioc);
  std::thread runner([&] { ioc.run_for(bound); });
  constexpr int threads = 4;
  constexpr int per_thread = 50;
  std::atomic<int> fired{0};
  std::promise<void> all_fired;
  std::vector<std::vector<std::shared_ptr<ticking>>> owners(threads);
  std::vector<std::thread> schedulers;
  for (int k = 0; k < threads; ++k) {
    schedulers.emplace_back([&, k] {
      for (int i = 0; i < per_thread; ++i) {
        auto o = std::make_shared<ticking>(ioc);
        o->on_fire = [&](ticking&) {
          if (++fired == threads * per_thread / 2) all_fired.set_value();
        };
        o->entry.schedule(o->ex, 10ms);
        // Every other one is cancelled, some after they were scheduled again.
        if (i % 2 == 1) {
          o->entry.schedule(o->ex, 20ms);
          o->entry.cancel();
        }
        owners[k].push_back(std::move(o));
      }
    });
  }
  for (auto& s : schedulers) s.join();
  EXPECT_EQ(all_fired.get_future().wait_for(bound), std::future_status::ready);
  // Entries go while the context still runs: cancelled from this thread.
  asio::post(ioc, [&] { guard.reset(); });
  runner.join();
  EXPECT_EQ(fired.load(), threads * per_thread / 2);
  owners.clear();
}

TEST(TickList, AContextDestroyedWithEntriesScheduledFiresNone) {
  auto ioc = std::make_unique<asio::io_context>();
  auto t = std::make_shared<ticking>(*ioc);
  t->entry.schedule(t->ex, std::chrono::milliseconds(std::chrono::hours(1)));
  // The owner goes first, as the rule says (its entry leaves the list), then the context, whose list timer
  // was cancelled as the list emptied.
  std::weak_ptr<ticking> w = t;
  t.reset();
  EXPECT_TRUE(w.expired());
  ioc.reset();
  SUCCEED();
}

// ---- read_wait.hpp
// ------------------------------------------------------------------------------------------

TEST(ReadWait, UsesAsiosReactorOnBoost181WithEpoll) {
#if defined(__linux__) && BOOST_VERSION / 100 == 1081 && !defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT)
#ifndef KWS_HAS_READ_WAIT
  ADD_FAILURE() << "Boost 1.81 with epoll should build the reactor wait, not the fallback";
#endif
#else
  GTEST_SKIP() << "Boost " << BOOST_LIB_VERSION << ": the portable fallback (socket::async_wait) is built";
#endif
}

// A connected pair over loopback: `ours` is the reader under test, `peer` writes.
struct socket_pair {
  explicit socket_pair(asio::io_context& ioc) : ours(ioc), peer(ioc) {
    tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    ours.connect(acceptor.local_endpoint());
    peer = acceptor.accept();
  }
  void send(const std::string& s) { asio::write(peer, asio::buffer(s)); }
  tcp::socket ours;
  tcp::socket peer;
};

// Reads everything the socket holds now, until recv_now says would_block (the wait's precondition).
std::string drain(tcp::socket& s, error_code& ec) {
  std::string out;
  std::array<char, 4096> buf;
  for (;;) {
    const auto n = kws::detail::recv_now(s, buf.data(), buf.size(), ec);
    if (ec) break;
    out.append(buf.data(), n);
  }
  return out;
}

TEST(ReadWait, RecvNowNeverBlocksAndTellsDataNothingAndEndOfStreamApart) {
  asio::io_context ioc;
  socket_pair p(ioc);
  std::array<char, 16> buf;
  error_code ec;
  // A blocking socket (no async operation has made it non-blocking yet): still returns at once.
  EXPECT_EQ(kws::detail::recv_now(p.ours, buf.data(), buf.size(), ec), 0u);
  EXPECT_EQ(ec, asio::error::would_block);
  p.send("abc");
  // A read of nothing, with bytes there, is not the end of the stream (recv returns 0 for both). Loopback has
  // the bytes once the write returned; the loop only covers a kernel that is slower to queue them.
  do {
    EXPECT_EQ(kws::detail::recv_now(p.ours, buf.data(), 0, ec), 0u);
  } while (ec == asio::error::would_block);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(kws::detail::recv_now(p.ours, buf.data(), buf.size(), ec), 3u);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(std::string(buf.data(), 3), "abc");
  p.peer.shutdown(tcp::socket::shutdown_send);
  for (;;) {
    kws::detail::recv_now(p.ours, buf.data(), buf.size(), ec);
    if (ec != asio::error::would_block) break;
  }
  EXPECT_EQ(ec, asio::error::eof);
}

// Waits with async_wait_readable until bytes come, tolerating the spurious wake-ups the contract allows.
// Returns the bytes read, or sets ec to what ended the wait.
struct reader {
  explicit reader(socket_pair& p) : p(p), waiter(kws::detail::reactor_of(p.ours)) {}
  void wait() {
    ++waits;
    kws::detail::async_wait_readable(p.ours, waiter, [this](error_code e) {
      ++wakeups;
      if (e) {
        ec = e;
        done = true;
        return;
      }
      error_code rec;
      got += drain(p.ours, rec);
      if (rec != asio::error::would_block) {
        ec = rec;
        done = true;
        return;
      }
      if (got.empty()) return wait();  // spurious: the next wait queues
      done = true;
    });
  }
  socket_pair& p;
  kws::detail::read_waiter waiter;
  int waits = 0;
  int wakeups = 0;
  bool done = false;
  std::string got;
  error_code ec;
};

// Runs the handlers that are ready now; afterwards a wait that has not completed is queued in the reactor.
void settle(asio::io_context& ioc) {
  ioc.restart();
  while (ioc.poll() != 0) {
  }
}

TEST(ReadWait, CompletesWhenBytesArriveAfterTheReadFoundNone) {
  asio::io_context ioc;
  socket_pair p(ioc);
  error_code ec;
  EXPECT_EQ(drain(p.ours, ec), "");
  reader r(p);
  r.wait();
  settle(ioc);
  ASSERT_FALSE(r.done) << "completed with nothing to read";
  // At most one spurious wake-up (the socket's first wait, before the reactor has seen it idle).
  EXPECT_LE(r.wakeups, 1);
  p.send("kafka");
  ioc.restart();
  ioc.run_for(bound);
  ASSERT_TRUE(r.done);
  EXPECT_FALSE(r.ec) << r.ec.message();
  EXPECT_EQ(r.got, "kafka");
}

TEST(ReadWait, BytesThatCameWhileNoWaitWasQueuedWakeTheNextWait) {
  asio::io_context ioc;
  socket_pair p(ioc);
  reader r(p);
  r.wait();
  settle(ioc);
  p.send("one");
  ioc.restart();
  ioc.run_for(bound);
  ASSERT_EQ(r.got, "one");
  // Drained (the reader's last recv said would_block); now bytes come with no wait queued, and the context
  // runs once in between with nothing to do.
  p.send("two");
  settle(ioc);
  r.done = false;
  r.got.clear();
  r.wait();
  ioc.restart();
  ioc.run_for(bound);
  ASSERT_TRUE(r.done);
  EXPECT_EQ(r.got, "two");
}

TEST(ReadWait, TheEndOfTheStreamWakesTheWait) {
  asio::io_context ioc;
  socket_pair p(ioc);
  reader r(p);
  r.wait();
  settle(ioc);
  p.peer.shutdown(tcp::socket::shutdown_send);
  ioc.restart();
  ioc.run_for(bound);
  ASSERT_TRUE(r.done);
  EXPECT_EQ(r.ec, asio::error::eof);
}

TEST(ReadWait, ClosingOrCancellingTheSocketAbortsTheWait) {
  for (const bool close : {false, true}) {
    asio::io_context ioc;
    socket_pair p(ioc);
    reader r(p);
    r.wait();
    settle(ioc);
    ASSERT_FALSE(r.done);
    if (close) {
      p.ours.close();
    } else {
      p.ours.cancel();
    }
    ioc.restart();
    ioc.run_for(bound);
    ASSERT_TRUE(r.done);
    EXPECT_EQ(r.ec, asio::error::operation_aborted) << (close ? "close" : "cancel");
  }
}

TEST(ReadWait, AWaitOnAClosedSocketFailsAtOnce) {
  asio::io_context ioc;
  socket_pair p(ioc);
  p.ours.close();
  error_code got;
  int calls = 0;
  kws::detail::async_wait_readable(p.ours, kws::detail::reactor_of(p.peer), [&](error_code ec) {
    ++calls;
    got = ec;
  });
  ioc.run_for(bound);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(got, asio::error::bad_descriptor);
}

TEST(ReadWait, ACancellationSlotAbortsOnlyThatWaitAndTheSocketReadsOn) {
  asio::io_context ioc;
  socket_pair p(ioc);
  error_code ec;
  drain(p.ours, ec);
  asio::cancellation_signal cancel;
  error_code first;
  int calls = 0;
  const auto waiter = kws::detail::reactor_of(p.ours);
  std::function<void()> wait_once = [&] {
    kws::detail::async_wait_readable(p.ours, waiter,
                                     asio::bind_cancellation_slot(cancel.slot(), [&](error_code e) {
                                       ++calls;
                                       if (!e && drain(p.ours, first).empty())
                                         return wait_once();  // spurious
                                       first = e;
                                     }));
  };
  wait_once();
  settle(ioc);  // (a spurious first wake-up queued a second wait)
  ASSERT_GE(calls, 0);
  cancel.emit(asio::cancellation_type::terminal);
  ioc.restart();
  ioc.run_for(bound);
  EXPECT_EQ(first, asio::error::operation_aborted);
  reader r(p);
  r.wait();
  settle(ioc);
  p.send("still open");
  ioc.restart();
  ioc.run_for(bound);
  EXPECT_EQ(r.got, "still open");
}

// Counts what a handler's associated allocator is asked for, and what it has given back.
struct counts {
  int allocated = 0;
  int freed = 0;
};
template <class T>
struct counting_allocator {
  using value_type = T;
  explicit counting_allocator(counts& c) : c(&c) {}
  template <class U>
  counting_allocator(const counting_allocator<U>& o) : c(o.c) {}
  T* allocate(std::size_t n) {
    ++c->allocated;
    return std::allocator<T>().allocate(n);
  }
  void deallocate(T* p, std::size_t n) {
    ++c->freed;
    std::allocator<T>().deallocate(p, n);
  }
  template <class U>
  bool operator==(const counting_allocator<U>& o) const {
    return c == o.c;
  }
  counts* c;
};

TEST(ReadWait, TheOperationUsesTheHandlersAllocatorAndIsFreedBeforeTheHandlerRuns) {
  asio::io_context ioc;
  socket_pair p(ioc);
  counts c;
  int freed_in_handler = -1;
  kws::detail::async_wait_readable(
      p.ours, kws::detail::reactor_of(p.ours),
      asio::bind_allocator(counting_allocator<void>(c), [&](error_code) { freed_in_handler = c.freed; }));
  p.send("x");
  ioc.run_for(bound);
#ifdef KWS_HAS_READ_WAIT
  EXPECT_EQ(c.allocated, 1);
  EXPECT_EQ(freed_in_handler, 1);
#endif
  EXPECT_EQ(c.allocated, c.freed);
}

TEST(ReadWait, TheHandlerRunsOnItsOwnExecutor) {
  asio::io_context ioc;
  socket_pair p(ioc);
  auto strand = asio::make_strand(ioc);
  bool on_strand = false;
  kws::detail::async_wait_readable(
      p.ours, kws::detail::reactor_of(p.ours),
      asio::bind_executor(strand, [&](error_code) { on_strand = strand.running_in_this_thread(); }));
  p.send("x");
  ioc.run_for(bound);
  EXPECT_TRUE(on_strand);
}

TEST(ReadWait, AContextDestroyedWithTheWaitQueuedDestroysTheHandlerUncalled) {
  auto held = std::make_shared<int>(1);
  std::weak_ptr<int> watch = held;
  bool called = false;
  {
    // The sockets outlive the context's shutdown here, as they do inside sessions kept by handlers.
    struct shutdown_first : asio::io_context {
      using asio::io_context::shutdown;
    };
    shutdown_first ioc;
    auto p = std::make_unique<socket_pair>(ioc);
    error_code ec;
    drain(p->ours, ec);
    // Spurious wake-ups re-queue; the last wait stays queued.
    std::function<void(std::shared_ptr<int>)> wait = [&](std::shared_ptr<int> keep) {
      kws::detail::async_wait_readable(p->ours, kws::detail::reactor_of(p->ours),
                                       [&, keep = std::move(keep)](error_code e) mutable {
                                         if (!e && drain(p->ours, ec).empty()) return wait(std::move(keep));
                                         called = true;
                                       });
    };
    wait(std::move(held));
    settle(ioc);
    ioc.shutdown();
    EXPECT_TRUE(watch.expired()) << "the shutdown should have destroyed the queued handler";
    p.reset();
  }
  EXPECT_FALSE(called);
  EXPECT_TRUE(watch.expired());
}

#ifdef KWS_HAS_READ_WAIT

TEST(ReadWait, OnIoContextTellsTheContextsOwnExecutorFromAStrand) {
  asio::io_context ioc;
  EXPECT_TRUE(kws::detail::on_io_context(ioc.get_executor()));
  EXPECT_TRUE(kws::detail::on_io_context(
      asio::prefer(ioc.get_executor(), asio::execution::outstanding_work.tracked)));
  EXPECT_FALSE(kws::detail::on_io_context(asio::make_strand(ioc)));
}

// An owner of a read_wait_op, as a relay's TCP side is: it keeps itself alive while its wait is queued.
struct waiting_owner : std::enable_shared_from_this<waiting_owner> {
  explicit waiting_owner(asio::io_context& ioc) : pair(ioc), waiter(kws::detail::reactor_of(pair.ours)) {}
  void start() {
    self = shared_from_this();
    op.start(pair.ours, waiter, slot);
  }
  static void on_wait(void* owner, const error_code& ec, bool destroyed) {
    auto* o = static_cast<waiting_owner*>(owner);
    ++o->calls;
    // Let go of the wait's reference first: this may be the owner's last.
    auto keep = std::move(o->self);
    if (destroyed) {
      ++*o->destroyed_calls;
      return;
    }
    if (ec) {
      o->ec = ec;
      return;
    }
    error_code rec;
    o->got += drain(o->pair.ours, rec);
    if (rec == asio::error::would_block && o->got.size() < o->want) return o->start();  // the next wait
    o->ec = rec == asio::error::would_block ? error_code() : rec;
  }

  socket_pair pair;
  kws::detail::read_waiter waiter;
  kws::detail::read_wait_op op{this, &waiting_owner::on_wait};
  asio::cancellation_slot slot;
  std::shared_ptr<waiting_owner> self;
  std::shared_ptr<int> destroyed_calls = std::make_shared<int>(0);
  int calls = 0;
  std::size_t want = 0;
  std::string got;
  error_code ec;
};

TEST(ReadWaitOp, ReadsMessagesAsTheyComeStartingEachNextWaitFromItsCallback) {
  asio::io_context ioc;
  auto o = std::make_shared<waiting_owner>(ioc);
  error_code ec;
  drain(o->pair.ours, ec);
  o->want = 9;
  o->start();
  for (const char* part : {"abc", "def", "ghi"}) {
    settle(ioc);
    o->pair.send(part);
  }
  ioc.restart();
  ioc.run_for(bound);
  EXPECT_EQ(o->got, "abcdefghi");
  EXPECT_FALSE(o->ec);
  EXPECT_EQ(o->self, nullptr);
  EXPECT_EQ(*o->destroyed_calls, 0);
}

TEST(ReadWaitOp, ClosingTheSocketCompletesTheWaitWithOperationAborted) {
  asio::io_context ioc;
  auto o = std::make_shared<waiting_owner>(ioc);
  error_code ec;
  drain(o->pair.ours, ec);
  o->want = 1;
  o->start();
  settle(ioc);
  const int before = o->calls;  // a spurious first wake-up restarts the wait
  o->pair.ours.close();
  ioc.restart();
  ioc.run_for(bound);
  EXPECT_EQ(o->calls, before + 1);
  EXPECT_EQ(o->ec, asio::error::operation_aborted);
  EXPECT_EQ(o->self, nullptr);
}

TEST(ReadWaitOp, ACancellationSlotCompletesTheWaitWithOperationAborted) {
  asio::io_context ioc;
  auto o = std::make_shared<waiting_owner>(ioc);
  asio::cancellation_signal cancel;
  o->slot = cancel.slot();
  error_code ec;
  drain(o->pair.ours, ec);
  o->want = 1;
  o->start();
  settle(ioc);
  cancel.emit(asio::cancellation_type::terminal);
  ioc.restart();
  ioc.run_for(bound);
  EXPECT_EQ(o->ec, asio::error::operation_aborted);
  EXPECT_EQ(o->self, nullptr);
}

TEST(ReadWaitOp, AContextDestroyedWithTheWaitQueuedTellsTheOwnerOnceAndItGoes) {
  auto destroyed_calls = std::make_shared<int>(0);
  std::weak_ptr<waiting_owner> watch;
  {
    asio::io_context ioc;
    auto o = std::make_shared<waiting_owner>(ioc);
    o->destroyed_calls = destroyed_calls;
    watch = o;
    error_code ec;
    drain(o->pair.ours, ec);
    o->want = 1;
    o->start();
    settle(ioc);
    // Only the wait keeps the owner (and its sockets) now: they go during the context's shutdown.
    o.reset();
    ASSERT_FALSE(watch.expired());
  }
  EXPECT_EQ(*destroyed_calls, 1);
  EXPECT_TRUE(watch.expired());
}

TEST(ReadWaitOp, BytesWrittenFromAnotherThreadAreAllRead) {
  // The reactor's queue is shared with the thread that runs the context (ThreadSanitizer, tsan preset).
  asio::io_context ioc;
  auto o = std::make_shared<waiting_owner>(ioc);
  error_code ec;
  drain(o->pair.ours, ec);
  constexpr std::size_t total = 256 * 1024;
  o->want = total;
  auto guard = asio::make_work_guard(ioc);
  asio::post(ioc, [&] { o->start(); });
  std::thread runner([&] { ioc.run_for(bound); });
  // Written in pieces with the peer's own blocking writes, from this thread.
  const std::string piece(4096, 'k');
  for (std::size_t sent = 0; sent < total; sent += piece.size()) o->pair.send(piece);
  // Done when the owner stopped waiting (it has everything, or failed): its self reference is gone.
  asio::post(ioc, [&] { guard.reset(); });
  runner.join();
  EXPECT_EQ(o->got.size(), total);
  EXPECT_FALSE(o->ec) << o->ec.message();
}

#endif  // KWS_HAS_READ_WAIT

}  // namespace
