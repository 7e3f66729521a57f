// Throughput of the Kafka size-prefix framing (kws::detail::frame_splitter::feed, kws::peek_frame) over a
// stream of equal frames delivered in 64 KiB chunks, next to a plain memcpy of the same chunks as the
// baseline that any byte-copying proxy pays at minimum. Read the framing figures as a ratio against the
// memcpy figure of the same run: the shared machine is noisy, the ratio much less so.
#include "kafka/frame_splitter.hpp"

#include <kws/frame.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <span>
#include <vector>

namespace {

/// What a TCP reader gets per read_some on a busy connection.
constexpr std::size_t chunk_bytes = 64u * 1024u;
/// Stream length aimed at per benchmark: large enough to leave the L2 cache, small enough to build quickly.
constexpr std::size_t target_stream_bytes = 8u * 1024u * 1024u;

struct frame_stream {
  std::vector<unsigned char> bytes;
  std::size_t frames = 0;
  /// Frames whose 4-byte header is split across two chunks, so the splitter's header path is exercised.
  std::size_t split_headers = 0;
};

frame_stream make_stream(std::size_t body_bytes) {
  frame_stream s;
  const std::size_t frame_bytes = kws::frame_header_bytes + body_bytes;
  s.frames = std::max<std::size_t>(4, target_stream_bytes / frame_bytes);
  s.bytes.resize(s.frames * frame_bytes);
  for (std::size_t i = 0; i < s.frames; ++i) {
    unsigned char* frame = s.bytes.data() + i * frame_bytes;
    kws::store_be32(frame, static_cast<std::int32_t>(body_bytes));
    // Non-zero bodies so that nothing downstream can take a shortcut on zero pages.
    for (std::size_t j = 0; j < body_bytes; ++j)
      frame[kws::frame_header_bytes + j] = static_cast<unsigned char>(i + j);
    const std::size_t start = i * frame_bytes;
    if (start / chunk_bytes != (start + kws::frame_header_bytes - 1) / chunk_bytes) ++s.split_headers;
  }
  return s;
}

/// Built once per body size, outside every timed loop.
const frame_stream& stream_for(std::size_t body_bytes) {
  static std::map<std::size_t, frame_stream> cache;
  auto it = cache.find(body_bytes);
  if (it == cache.end()) it = cache.emplace(body_bytes, make_stream(body_bytes)).first;
  return it->second;
}

void set_counters(benchmark::State& state, const frame_stream& s) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(s.bytes.size()));
  state.counters["frames/s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * static_cast<double>(s.frames), benchmark::Counter::kIsRate);
  state.counters["split_hdrs"] = static_cast<double>(s.split_headers);
}

// frame_splitter::feed over each 64 KiB chunk: feed until the chunk is used up, counting the frames that
// complete. (The relay's TCP side does not use frame_splitter: it finds frames with peek_frame, measured
// below.)
void BM_frame_splitter_feed(benchmark::State& state) {
  const frame_stream& s = stream_for(static_cast<std::size_t>(state.range(0)));
  const std::span<const unsigned char> stream(s.bytes);
  for (auto _ : state) {
    kws::detail::frame_splitter splitter;
    boost::system::error_code ec;
    std::size_t frames = 0;
    bool stalled = false;
    for (std::size_t off = 0; off < stream.size() && !ec && !stalled; off += chunk_bytes) {
      auto in = stream.subspan(off, std::min(chunk_bytes, stream.size() - off));
      while (!in.empty()) {
        const auto step = splitter.feed(in, ec);
        benchmark::DoNotOptimize(step);
        if (ec) break;
        if (step.consumed == 0 && !step.complete) {
          stalled = true;
          break;
        }
        frames += step.complete ? 1 : 0;
        in = in.subspan(step.consumed);
      }
    }
    benchmark::DoNotOptimize(frames);
    if (ec) {
      state.SkipWithError("frame_splitter::feed reported an error on a well-formed stream");
      break;
    }
    if (stalled) {
      state.SkipWithError("frame_splitter::feed consumed nothing from a non-empty chunk");
      break;
    }
    if (frames != s.frames || !splitter.at_boundary()) {
      state.SkipWithError("frame_splitter::feed found a wrong number of complete frames");
      break;
    }
  }
  set_counters(state, s);
}

// peek_frame as used by a reader with one contiguous receive buffer: peek at the unconsumed bytes, take the
// frame when it is complete, otherwise "receive" the next 64 KiB chunk. The stream already sits in that
// buffer, so this measures peek_frame and the bookkeeping only, not the copy a real receive would add (that
// copy is what BM_memcpy_baseline measures).
void BM_peek_frame(benchmark::State& state) {
  const frame_stream& s = stream_for(static_cast<std::size_t>(state.range(0)));
  const std::span<const unsigned char> stream(s.bytes);
  for (auto _ : state) {
    boost::system::error_code ec;
    std::size_t frames = 0;
    std::size_t pos = 0;
    std::size_t received = 0;
    while (pos < stream.size()) {
      const auto available = stream.subspan(pos, received - pos);
      const std::size_t length = kws::peek_frame(available, kws::default_max_frame_bytes, ec);
      benchmark::DoNotOptimize(length);
      if (ec) break;
      if (length != 0 && length <= available.size()) {
        ++frames;
        pos += length;
        continue;
      }
      if (received == stream.size()) break;  // truncated tail: cannot happen for the streams built here
      received = std::min(received + chunk_bytes, stream.size());
    }
    benchmark::DoNotOptimize(frames);
    if (ec) {
      state.SkipWithError("peek_frame reported an error on a well-formed stream");
      break;
    }
    if (frames != s.frames || pos != stream.size()) {
      state.SkipWithError("peek_frame found a wrong number of complete frames");
      break;
    }
  }
  set_counters(state, s);
}

// Baseline: copy the same 64 KiB chunks into one reused buffer, the least a byte-copying proxy does.
void BM_memcpy_baseline(benchmark::State& state) {
  const frame_stream& s = stream_for(static_cast<std::size_t>(state.range(0)));
  const std::span<const unsigned char> stream(s.bytes);
  std::vector<unsigned char> buffer(chunk_bytes);
  for (auto _ : state) {
    for (std::size_t off = 0; off < stream.size(); off += chunk_bytes) {
      const std::size_t n = std::min(chunk_bytes, stream.size() - off);
      std::memcpy(buffer.data(), stream.data() + off, n);
      benchmark::DoNotOptimize(buffer.data());
      benchmark::ClobberMemory();
    }
  }
  set_counters(state, s);
}

void body_sizes(benchmark::internal::Benchmark* b) {
  b->ArgName("body")->Arg(100)->Arg(16 * 1024)->Arg(1024 * 1024);
}

}  // namespace

BENCHMARK(BM_memcpy_baseline)->Apply(body_sizes);
BENCHMARK(BM_frame_splitter_feed)->Apply(body_sizes);
BENCHMARK(BM_peek_frame)->Apply(body_sizes);
