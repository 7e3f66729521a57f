// Periodic checks for many objects with one timer per period. An idle connection's keep-alive check
// (src/ws/stream.hpp) is an entry in a list here, where it used to be a timer and a waiting operation of its
// own: 56 bytes instead of about 400 for every connection.
//
// Every entry of a list has the list's period, so appending keeps it in deadline order: scheduling,
// cancelling and firing cost O(1) per entry, and the list's timer waits only for its head. Deadlines are
// rounded up to tick_grain so that entries scheduled together fire together: a check comes up to that much
// late, never early. The timer is cancelled when its list empties, so that it does not keep io_context::run()
// from returning once the last entry has gone.
//
// An entry is fired once per schedule(). Firing takes a strong reference to the owner (`lock`) while the list
// is locked, and calls `fire` after unlocking: the owner then runs its check on its own executor. Entries may
// be scheduled and cancelled from any thread; the owner must cancel (or destroy) its entry before its
// execution context is destroyed, as it would have to destroy a timer.
#pragma once

#include <boost/asio/execution_context.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace kws::detail {

class tick_lists : public boost::asio::execution_context::service {
 public:
  using clock = std::chrono::steady_clock;
  static constexpr auto tick_grain = std::chrono::milliseconds(10);
  static inline boost::asio::execution_context::id id;

  /// What an entry's owner provides: a strong reference to itself (empty once it is being destroyed), and the
  /// check to run (from the list's timer, so usually not on the owner's executor).
  struct owner_ops {
    std::shared_ptr<void> (*lock)(void* owner);
    void (*fire)(void* owner, std::shared_ptr<void> keep);
  };

  class entry;

  explicit tick_lists(boost::asio::execution_context& ctx) : service(ctx) {}
  ~tick_lists() override = default;

 private:
  struct list {
    list(std::chrono::milliseconds p, const boost::asio::any_io_executor& ex)
        : period(p), timer(boost::asio::prefer(ex, boost::asio::execution::outstanding_work.untracked)) {}
    std::chrono::milliseconds period;
    entry* head = nullptr;
    entry* tail = nullptr;
    boost::asio::steady_timer timer;
    bool armed = false;  // a wait is pending on `timer`
  };

 public:
  class entry {
   public:
    entry(void* owner, const owner_ops* ops) noexcept : owner_(owner), ops_(ops) {}
    entry(const entry&) = delete;
    entry& operator=(const entry&) = delete;
    ~entry() { cancel(); }

    /// Fires once, `period` (rounded up to tick_grain) from now; replaces a schedule still pending.
    void schedule(const boost::asio::any_io_executor& ex, std::chrono::milliseconds period) {
      if (!svc_) {
        svc_ = &boost::asio::use_service<tick_lists>(boost::asio::query(ex, boost::asio::execution::context));
      }
      svc_->add(*this, ex, period);
    }
    void cancel() {
      if (svc_) svc_->remove(*this);
    }

   private:
    friend class tick_lists;
    void* owner_;
    const owner_ops* ops_;
    tick_lists* svc_ = nullptr;
    list* list_ = nullptr;  // while scheduled
    entry* prev_ = nullptr;
    entry* next_ = nullptr;
    clock::time_point due_{};
  };

 private:
  // The context is going: its pending handlers are destroyed, not run. The timers go now, while every
  // service they use still exists.
  void shutdown() override {
    const std::lock_guard lock(mu_);
    for (auto& l : lists_) {
      while (l->head) unlink(*l->head);
    }
    lists_.clear();
  }

  void add(entry& e, const boost::asio::any_io_executor& ex, std::chrono::milliseconds period) {
    const std::lock_guard lock(mu_);
    if (e.list_) unlink(e);
    list* l = nullptr;
    for (auto& p : lists_) {
      if (p->period == period) l = p.get();
    }
    if (!l) l = lists_.emplace_back(std::make_unique<list>(period, ex)).get();
    const auto due = clock::now() + period + tick_grain;
    e.due_ = due - due.time_since_epoch() % tick_grain;
    e.list_ = l;
    e.prev_ = l->tail;
    e.next_ = nullptr;
    (l->tail ? l->tail->next_ : l->head) = &e;
    l->tail = &e;
    if (!l->armed) arm(*l);
  }

  void remove(entry& e) {
    const std::lock_guard lock(mu_);
    if (!e.list_) return;
    list& l = *e.list_;
    unlink(e);
    if (!l.head && l.armed) l.timer.cancel();
  }

  // With mu_ held.
  static void unlink(entry& e) {
    list& l = *e.list_;
    (e.prev_ ? e.prev_->next_ : l.head) = e.next_;
    (e.next_ ? e.next_->prev_ : l.tail) = e.prev_;
    e.list_ = nullptr;
    e.prev_ = e.next_ = nullptr;
  }

  // With mu_ held; the list has a head.
  void arm(list& l) {
    l.armed = true;
    l.timer.expires_at(l.head->due_);
    l.timer.async_wait([this, &l](boost::system::error_code ec) { tick(l, ec); });
  }

  void tick(list& l, boost::system::error_code ec) {
    std::vector<std::pair<std::shared_ptr<void>, entry*>> due;
    {
      const std::lock_guard lock(mu_);
      l.armed = false;
      if (!ec) {
        const auto now = clock::now();
        while (l.head && l.head->due_ <= now) {
          entry& e = *l.head;
          unlink(e);
          if (auto keep = e.ops_->lock(e.owner_)) due.emplace_back(std::move(keep), &e);
        }
      }
      // (Cancelled because the list emptied, it may have been filled again since.)
      if (l.head) arm(l);
    }
    for (auto& [keep, e] : due) e->ops_->fire(e->owner_, std::move(keep));
  }

  std::mutex mu_;
  std::vector<std::unique_ptr<list>> lists_;  // one per period in use
};

}  // namespace kws::detail
