// Live reload of what the servers read from files at start (certificates, keys, CA files, token files): on
// SIGHUP, and when a watched file changes, each item that reads it loads it again. A load that fails (bad
// PEM, unreadable file, a key that does not belong to its certificate) keeps what was in use and logs one
// line naming the file; connections already open are never touched. Counted in kws_reloads_total{result}.
//
// Changes are noticed by looking at each file once a second (its inode, size and modification time, after
// following symbolic links, so that a Kubernetes secret whose `..data` link is swapped counts as a change):
// no inotify, whose watches follow inodes and miss a file replaced by rename unless its directory is watched.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace kws::app {

class reloader {
 public:
  /// Runs on `main` (the runtime's main context). SIGHUP is taken from here on (one that comes before
  /// start() is handled then), so that it never ends the process.
  explicit reloader(boost::asio::io_context& main,
                    std::chrono::milliseconds check_every = std::chrono::seconds(1));

  /// `what`: the flags, for the log ("--tls-cert/--tls-key"); `files`: what `load` reads; `load`: reads them
  /// again and puts the result in use, or throws (its message naming the file) and changes nothing. Call it
  /// right after the files were first read: a file is watched for changes from this call on.
  void add(std::string what, std::vector<std::string> files, std::function<void()> load);

  /// Counts reloads in kws_reloads_total{result} of `registry` (before start()).
  void count_in(prometheus::Registry& registry);

  /// Starts handling SIGHUP and watching the files. Without items, SIGHUP is still taken and logged.
  void start();
  /// Stops both (at shutdown).
  void stop();

  /// Loads every item again now (what SIGHUP does); returns how many failed.
  int reload_all(const char* why);

 private:
  struct file_state {
    std::string path;
    std::string seen;  ///< inode, size and modification time when last looked at; empty: unreadable
  };
  struct item {
    std::string what;
    std::vector<file_state> files;
    std::function<void()> load;
  };

  void wait_signal();
  void schedule_check();
  void check();
  bool reload(item& it, const char* why);
  static std::string look(const std::string& path);

  boost::asio::signal_set hup_;
  boost::asio::steady_timer timer_;
  std::chrono::milliseconds every_;
  std::vector<item> items_;
  prometheus::Counter* ok_ = nullptr;
  prometheus::Counter* failed_ = nullptr;
  bool stopped_ = false;
};

}  // namespace kws::app
