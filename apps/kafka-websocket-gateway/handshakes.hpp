// Handshakes under way on the gateway (sockets accepted, not yet upgraded or answered): a bound on all of
// them and one per client address, apart from --max-connections, which counts upgraded connections only; and
// the tally of handshakes refused or timed out, told in a summary line a second. No I/O; every call is safe
// from any thread.
#pragma once

#include <boost/asio/ip/address.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kws::gateway {

/// A client address as the gateway's lines show it, without the port: an IPv4 client of a dual-stack
/// listener as the IPv4 address it is.
std::string address_text(const boost::asio::ip::address& a);

class handshake_limits : public std::enable_shared_from_this<handshake_limits> {
 public:
  enum class verdict { admitted, over_limit, over_per_address };
  /// IPv6 bytes; an IPv4 address (or an IPv4-mapped IPv6 one) as IPv4-mapped, so that both count as one.
  using key = std::array<unsigned char, 16>;

  /// A handshake's place under both bounds, given back when it is destroyed or released. Keeps the limits
  /// alive, so it may outlive whoever made them.
  class ticket {
   public:
    ticket() = default;
    ticket(ticket&& other) noexcept
        : owner_(std::move(other.owner_)), key_(other.key_), addressed_(other.addressed_) {}
    ticket& operator=(ticket&& other) noexcept;
    ticket(const ticket&) = delete;
    ticket& operator=(const ticket&) = delete;
    ~ticket() { release(); }
    explicit operator bool() const { return owner_ != nullptr; }
    void release();

   private:
    friend class handshake_limits;
    ticket(std::shared_ptr<handshake_limits> owner, const key& k, bool addressed)
        : owner_(std::move(owner)), key_(k), addressed_(addressed) {}
    std::shared_ptr<handshake_limits> owner_;
    key key_{};
    bool addressed_ = true;  // counted under key_'s bound too
  };

  /// At most `max_total` handshakes at once, and at most `max_per_address` from one client address.
  static std::shared_ptr<handshake_limits> create(std::size_t max_total, std::size_t max_per_address);

  /// Takes a place for a handshake from `peer` when both bounds allow it (`out` then holds it); otherwise
  /// says which bound refused it (the total is checked first) and leaves `out` empty.
  verdict admit(const boost::asio::ip::address& peer, ticket& out);
  /// A place under the total bound only, for a socket whose client is not known yet (--proxy-protocol: the
  /// header names it); place() counts it under the client's address once known.
  verdict admit_unaddressed(ticket& out);
  /// Counts a ticket of admit_unaddressed under `peer`'s bound, unless that is full: then the ticket is left
  /// as it is and over_per_address returned.
  verdict place(ticket& t, const boost::asio::ip::address& peer);

  std::size_t in_progress() const;
  std::size_t in_progress(const boost::asio::ip::address& peer) const;

 private:
  handshake_limits(std::size_t max_total, std::size_t max_per_address)
      : max_total_(max_total), max_per_address_(max_per_address) {}
  void release(const key& k, bool addressed);

  struct key_hash {
    std::size_t operator()(const key& k) const noexcept;
  };

  const std::size_t max_total_;
  const std::size_t max_per_address_;
  mutable std::mutex mu_;
  std::size_t total_ = 0;
  std::unordered_map<key, std::size_t, key_hash> per_address_;  // addresses with a handshake under way only
};

/// Handshakes refused or timed out since the last take(), for one summary line of each kind a second.
class handshake_tally {
 public:
  enum class event { refused_over_limit, refused_over_per_address, timed_out };

  /// What the lines quote: the bounds in force.
  handshake_tally(std::size_t max_handshakes, std::size_t max_per_address,
                  std::chrono::milliseconds handshake_timeout)
      : max_handshakes_(max_handshakes),
        max_per_address_(max_per_address),
        handshake_timeout_(handshake_timeout) {}

  /// Counts one event from `address`. True for the first since the last take(): the caller then calls
  /// take() a second later.
  bool add(event e, std::string_view address);
  /// The lines that tell what was counted since the last take() (none when nothing was), and starts over:
  /// `refused N handshake(s) in the last second: ...` and `N handshake(s) timed out in the last second ...`,
  /// each with the number of addresses and the one with the most.
  std::vector<std::string> take();

  /// Addresses told apart in one second; those beyond are counted without their address.
  static constexpr std::size_t max_addresses = 1024;

 private:
  struct window {
    std::size_t count = 0;
    std::size_t untracked = 0;  // events from addresses beyond max_addresses
    std::unordered_map<std::string, std::size_t> by_address;
    void add(std::string_view address);
    std::string sources() const;
  };

  const std::size_t max_handshakes_;
  const std::size_t max_per_address_;
  const std::chrono::milliseconds handshake_timeout_;
  std::mutex mu_;
  bool pending_ = false;
  std::size_t over_limit_ = 0;
  std::size_t over_per_address_ = 0;
  window refused_;
  window timed_out_;
};

}  // namespace kws::gateway
