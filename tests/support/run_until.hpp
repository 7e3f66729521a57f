// Running an io_context until something holds, bounded in time: the in-process tests' only wait.
#pragma once

#include <boost/asio/io_context.hpp>

#include <chrono>

namespace kws::test {

/// Runs `ioc` until `done()` holds, for at most `limit`; returns whether it holds. Stops early when nothing
/// is left to run (then `done()` can no longer change).
template <class Pred>
bool run_until(boost::asio::io_context& ioc, Pred done,
               std::chrono::steady_clock::duration limit = std::chrono::seconds(10)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    if (ioc.stopped()) ioc.restart();
    if (ioc.run_one_until(until) == 0 && ioc.stopped()) return done();
  }
  return true;
}

}  // namespace kws::test
