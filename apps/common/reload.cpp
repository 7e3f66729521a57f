#include "reload.hpp"

#include "cli.hpp"

#include <spdlog/spdlog.h>

#include <csignal>
#include <exception>

#include <sys/stat.h>

namespace kws::app {

reloader::reloader(boost::asio::io_context& main, std::chrono::milliseconds check_every)
    : hup_(main, SIGHUP), timer_(main), every_(check_every) {}

void reloader::count_in(prometheus::Registry& registry) {
  auto& family =
      prometheus::BuildCounter()
          .Name("kws_reloads_total")
          .Help(
              "Reloads of certificate, key, CA, token, header and credential files (SIGHUP or a changed "
              "file), by result")
          .Register(registry);
  ok_ = &family.Add({{"result", "ok"}});
  failed_ = &family.Add({{"result", "failed"}});
}

void reloader::add(std::string what, std::vector<std::string> files, std::function<void()> load) {
  item it{std::move(what), {}, std::move(load)};
  for (auto& f : files) {
    if (f.empty()) continue;
    it.files.push_back({f, look(f)});
  }
  items_.push_back(std::move(it));
}

void reloader::start() {
  wait_signal();
  bool any_file = false;
  for (const auto& it : items_) any_file = any_file || !it.files.empty();
  if (any_file) schedule_check();
}

void reloader::stop() {
  stopped_ = true;
  boost::system::error_code ignored;
  hup_.cancel(ignored);
  timer_.cancel();
}

int reloader::reload_all(const char* why) {
  if (items_.empty()) {
    spdlog::info(
        "{}: nothing to reload (certificate, key, CA, token, header and SASL credential files are "
        "reloaded; none was given)",
        why);
    return 0;
  }
  int failures = 0;
  for (auto& it : items_) failures += reload(it, why) ? 0 : 1;
  return failures;
}

void reloader::wait_signal() {
  hup_.async_wait([this](const boost::system::error_code& ec, int) {
    if (ec || stopped_) return;
    reload_all("SIGHUP");
    wait_signal();
  });
}

void reloader::schedule_check() {
  timer_.expires_after(every_);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopped_) return;
    check();
    schedule_check();
  });
}

void reloader::check() {
  for (auto& it : items_) {
    bool changed = false;
    for (auto& f : it.files) {
      // A file that is gone for the moment (being replaced) is looked at again next time.
      auto now = look(f.path);
      if (!now.empty() && now != f.seen) changed = true;
    }
    if (changed) reload(it, "a file changed");
  }
}

bool reloader::reload(item& it, const char* why) {
  // What is seen now is what this attempt read: a failed load is retried only once a file changes again.
  for (auto& f : it.files) f.seen = look(f.path);
  try {
    it.load();
  } catch (const std::exception& e) {
    if (failed_) failed_->Increment();
    spdlog::warn("reload of {} failed ({}); keeping what was in use: {}", it.what, why, plain_message(e));
    return false;
  }
  if (ok_) ok_->Increment();
  std::string files;
  for (const auto& f : it.files) files += (files.empty() ? "" : ", ") + f.path;
  spdlog::info("reloaded {} from {} ({}); new connections use it", it.what, files, why);
  return true;
}

std::string reloader::look(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) +
         ":" + std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
}

}  // namespace kws::app
