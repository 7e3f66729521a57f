#include "handshakes.hpp"

#include <algorithm>

namespace kws::gateway {
namespace {

namespace ip = boost::asio::ip;

ip::address plain(const ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) return ip::make_address_v4(ip::v4_mapped, a.to_v6());
  return a;
}

handshake_limits::key key_of(const ip::address& a) {
  const auto p = plain(a);
  return p.is_v4() ? ip::make_address_v6(ip::v4_mapped, p.to_v4()).to_bytes() : p.to_v6().to_bytes();
}

std::string duration_text(std::chrono::milliseconds d) {
  return d.count() % 1000 == 0 ? std::to_string(d.count() / 1000) + "s" : std::to_string(d.count()) + "ms";
}

}  // namespace

std::string address_text(const ip::address& a) {
  return plain(a).to_string();
}

// ---- handshake_limits ---------------------------------------------------------------------------------

handshake_limits::ticket& handshake_limits::ticket::operator=(ticket&& other) noexcept {
  if (this != &other) {
    release();
    owner_ = std::move(other.owner_);
    key_ = other.key_;
    addressed_ = other.addressed_;
  }
  return *this;
}

void handshake_limits::ticket::release() {
  if (!owner_) return;
  owner_->release(key_, addressed_);
  owner_.reset();
}

std::shared_ptr<handshake_limits> handshake_limits::create(std::size_t max_total,
                                                           std::size_t max_per_address) {
  return std::shared_ptr<handshake_limits>(new handshake_limits(max_total, max_per_address));
}

handshake_limits::verdict handshake_limits::admit(const ip::address& peer, ticket& out) {
  const auto k = key_of(peer);
  {
    std::lock_guard lock(mu_);
    if (total_ >= max_total_) return verdict::over_limit;
    auto it = per_address_.find(k);
    if (it != per_address_.end() && it->second >= max_per_address_) return verdict::over_per_address;
    if (it == per_address_.end()) it = per_address_.emplace(k, 0).first;
    ++it->second;
    ++total_;
  }
  out = ticket(shared_from_this(), k, true);
  return verdict::admitted;
}

handshake_limits::verdict handshake_limits::admit_unaddressed(ticket& out) {
  {
    std::lock_guard lock(mu_);
    if (total_ >= max_total_) return verdict::over_limit;
    ++total_;
  }
  out = ticket(shared_from_this(), key{}, false);
  return verdict::admitted;
}

handshake_limits::verdict handshake_limits::place(ticket& t, const ip::address& peer) {
  if (!t || t.addressed_) return verdict::admitted;
  const auto k = key_of(peer);
  std::lock_guard lock(mu_);
  auto it = per_address_.find(k);
  if (it != per_address_.end() && it->second >= max_per_address_) return verdict::over_per_address;
  if (it == per_address_.end()) it = per_address_.emplace(k, 0).first;
  ++it->second;
  t.key_ = k;
  t.addressed_ = true;
  return verdict::admitted;
}

void handshake_limits::release(const key& k, bool addressed) {
  std::lock_guard lock(mu_);
  --total_;
  if (!addressed) return;
  auto it = per_address_.find(k);
  if (it != per_address_.end() && --it->second == 0) per_address_.erase(it);
}

std::size_t handshake_limits::in_progress() const {
  std::lock_guard lock(mu_);
  return total_;
}

std::size_t handshake_limits::in_progress(const ip::address& peer) const {
  std::lock_guard lock(mu_);
  const auto it = per_address_.find(key_of(peer));
  return it == per_address_.end() ? 0 : it->second;
}

std::size_t handshake_limits::key_hash::operator()(const key& k) const noexcept {
  // FNV-1a.
  std::size_t h = 14695981039346656037ull;
  for (const auto b : k) h = (h ^ b) * 1099511628211ull;
  return h;
}

// ---- handshake_tally ----------------------------------------------------------------------------------

void handshake_tally::window::add(std::string_view address) {
  ++count;
  auto it = by_address.find(std::string(address));
  if (it != by_address.end()) {
    ++it->second;
  } else if (by_address.size() < max_addresses) {
    by_address.emplace(std::string(address), 1);
  } else {
    ++untracked;
  }
}

std::string handshake_tally::window::sources() const {
  const auto top = std::max_element(by_address.begin(), by_address.end(),
                                    [](const auto& a, const auto& b) { return a.second < b.second; });
  if (top == by_address.end()) return {};
  const auto n = std::to_string(by_address.size());
  const auto addresses = untracked > 0            ? "more than " + n + " addresses"
                         : by_address.size() == 1 ? std::string("1 address")
                                                  : n + " addresses";
  return "from " + addresses + ", most from " + top->first + " (" + std::to_string(top->second) + ")";
}

bool handshake_tally::add(event e, std::string_view address) {
  std::lock_guard lock(mu_);
  switch (e) {
    case event::refused_over_limit:
      ++over_limit_;
      refused_.add(address);
      break;
    case event::refused_over_per_address:
      ++over_per_address_;
      refused_.add(address);
      break;
    case event::timed_out:
      timed_out_.add(address);
      break;
  }
  const bool first = !pending_;
  pending_ = true;
  return first;
}

std::vector<std::string> handshake_tally::take() {
  std::lock_guard lock(mu_);
  std::vector<std::string> lines;
  if (refused_.count > 0) {
    std::string why;
    if (over_limit_ > 0)
      why = std::to_string(over_limit_) + " over --max-handshakes " + std::to_string(max_handshakes_);
    if (over_per_address_ > 0) {
      why += (why.empty() ? "" : ", ") + std::to_string(over_per_address_) +
             " over --max-handshakes-per-address " + std::to_string(max_per_address_);
    }
    lines.push_back("refused " + std::to_string(refused_.count) + " handshake(s) in the last second: " + why +
                    "; " + refused_.sources());
  }
  if (timed_out_.count > 0) {
    lines.push_back(std::to_string(timed_out_.count) +
                    " handshake(s) timed out in the last second (--handshake-timeout " +
                    duration_text(handshake_timeout_) + "); " + timed_out_.sources());
  }
  refused_ = window{};
  timed_out_ = window{};
  over_limit_ = 0;
  over_per_address_ = 0;
  pending_ = false;
  return lines;
}

}  // namespace kws::gateway
