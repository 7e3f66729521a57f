// The servers' shared runtime (apps/common), in-process.
#include "runtime.hpp"

#include <gtest/gtest.h>
#include <boost/asio/post.hpp>

#include <new>

namespace {

TEST(Runtime, AHandlerThatThrowsDoesNotStopTheWorker) {
  kws::app::worker w;
  bool later_ran = false;
  boost::asio::post(w.context(), [] { throw std::bad_alloc(); });
  boost::asio::post(w.context(), [] { throw 42; });
  boost::asio::post(w.context(), [&] {
    later_ran = true;
    w.stop();
  });
  w.run();
  EXPECT_TRUE(later_ran);
}

TEST(Runtime, DurationsAreRoundedForTheLog) {
  using namespace std::chrono;
  EXPECT_EQ(kws::app::human_duration(microseconds(950)), "950us");
  EXPECT_EQ(kws::app::human_duration(microseconds(12'600)), "13ms");
  EXPECT_EQ(kws::app::human_duration(seconds(3)), "3000ms");
  EXPECT_EQ(kws::app::human_duration(microseconds(9'999'700)), "10s");
  EXPECT_EQ(kws::app::human_duration(milliseconds(19'980)), "20s") << "rounded, not truncated";
}

}  // namespace
