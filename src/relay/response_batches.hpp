// Responses on their way to a TCP client (plain or TLS), gathered so that many small ones cost one write:
// the batch being written and the one after it. Both are made when a response is first added and given back
// once everything added is written, so an idle relay holds neither.
#pragma once

#include "relay/sides.hpp"

#include <boost/beast/core/flat_buffer.hpp>

#include <cstddef>
#include <memory>
#include <utility>

namespace kws::detail {

class response_batches {
 public:
  /// Bytes waiting for the next write.
  std::size_t next_bytes() const { return b_ ? b_->next.size() : 0; }
  /// Adds a response (a copy).
  void add(bytes frame) {
    append_to(state().next, frame);
    ++b_->next_frames;
  }
  /// Adds the frame at hand on `side` (its buffer itself when the batch is empty) and pops it there.
  template <class Side>
  void take_from(Side& side) {
    side.move_frame_to(state().next);
    ++b_->next_frames;
  }
  /// The waiting batch becomes the one in flight: its bytes, which stay valid until written().
  bytes start_write() {
    auto& s = state();
    std::swap(s.out, s.next);
    s.out_frames = std::exchange(s.next_frames, 0);
    return {static_cast<const unsigned char*>(s.out.data().data()), s.out.size()};
  }
  /// The batch in flight is written: its bytes and frames, for the counts. Gives everything back when
  /// nothing waits.
  std::pair<std::size_t, std::size_t> written() {
    const std::pair<std::size_t, std::size_t> done{b_->out.size(), b_->out_frames};
    b_->out.clear();
    if (b_->next.size() == 0) b_.reset();
    return done;
  }

 private:
  struct batches {
    beast::flat_buffer out;   // the batch being written to the client
    beast::flat_buffer next;  // the batch after it
    std::size_t out_frames = 0;
    std::size_t next_frames = 0;
  };
  batches& state() {
    if (!b_) b_ = std::make_unique<batches>();
    return *b_;
  }
  std::unique_ptr<batches> b_;
};

}  // namespace kws::detail
