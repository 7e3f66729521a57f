// The relay's states (relay_impl.hpp): its lifecycle and the state of the request direction, and the steps
// each may take. relay_impl changes them only through enter(), which asserts the step (the asan-ubsan preset
// is a Debug build, so the whole suite runs with the asserts on).
#pragma once

#include <cstdint>

namespace kws::detail {

enum class relay_phase : std::uint8_t {
  running,
  closing_after_write,  // the broker side closes once the request being written to it is out
  stopping,             // both sides are being closed; the relay ends when its last operation completes
  done,                 // reported
};

enum class relay_up_state : std::uint8_t {
  wanting,     // no request at hand, and no read of the client in flight
  reading,     // a read of the client is in flight
  holding,     // a whole request waits at the front of the client side
  paused,      // holding, and the hook is at its bound of requests in flight: the next response resumes it
  connecting,  // holding, while the broker, which closed between requests, is dialled again
  writing,     // holding, while the request is written to the broker
};

// Only forward; closing_after_write is skipped when nothing is being written; stopping may be entered again.
constexpr bool phase_step_allowed(relay_phase from, relay_phase to) {
  return to > from || (to == relay_phase::stopping && from == relay_phase::stopping);
}

constexpr bool up_step_allowed(relay_up_state from, relay_up_state to) {
  using s = relay_up_state;
  switch (to) {
    case s::wanting:  // a read ended without a request, or the request is done
      return from == s::reading || from == s::holding || from == s::paused || from == s::wanting;
    case s::reading:
      return from == s::wanting;
    case s::holding:  // a request read; resumed; reconnected; written (then done) or failed
      return from == s::wanting || from == s::reading || from == s::paused || from == s::connecting ||
             from == s::writing || from == s::holding;
    case s::paused:
    case s::connecting:
    case s::writing:
      return from == s::holding || from == s::paused;
  }
  return false;
}

}  // namespace kws::detail
