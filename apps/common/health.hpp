// A readiness check that runs at most every few seconds: callers in between get the last answer, and
// callers during a check wait for it. The gateway's /healthz and the /readyz of both servers use it.
#pragma once

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace kws::app {

/// What a check found: ready or not, and why not (one line for people).
struct check_result {
  bool ok = false;
  std::string detail;
};

class cached_check {
 public:
  /// Runs one check on `ex` (the executor of the caller that found the last result too old) and calls
  /// `done` once, from any thread.
  using probe_function =
      std::function<void(const boost::asio::any_io_executor& ex, std::function<void(check_result)> done)>;

  cached_check(probe_function probe, std::chrono::milliseconds max_age = std::chrono::seconds(2))
      : probe_(std::move(probe)), max_age_(max_age) {}
  cached_check(const cached_check&) = delete;
  cached_check& operator=(const cached_check&) = delete;

  /// Calls `done` on `ex` with the last result when it is recent enough, else with the next one.
  void check(const boost::asio::any_io_executor& ex, std::function<void(check_result)> done);

 private:
  probe_function probe_;
  std::chrono::milliseconds max_age_;
  std::mutex mu_;
  check_result last_;
  bool checking_ = false;
  std::chrono::steady_clock::time_point checked_at_{};
  std::vector<std::pair<boost::asio::any_io_executor, std::function<void(check_result)>>> waiters_;
};

}  // namespace kws::app
