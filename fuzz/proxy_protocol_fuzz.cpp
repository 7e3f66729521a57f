// kws::proxy_protocol::parse over arbitrary bytes, fed as a listener feeds it (only as many bytes as it asks
// for, from the start of the connection):
//  - every step asks for more than it has, within the longest header (16 + max_v2_block bytes for v2,
//    max_v1_line for v1), and never for a byte past where a header it then accepts ends;
//  - a header it accepts has a size no larger than what was read, and parsing exactly those bytes, or them
//    followed by anything, gives the same header; LOCAL and UNKNOWN carry no client, PROXY over TCP does;
//  - a refusal always says why.
#include "fuzz_check.hpp"

#include <kws/proxy_protocol.hpp>

#include <span>
#include <vector>

namespace pp = kws::proxy_protocol;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const unsigned char> stream(data, size);
  std::size_t have = 0;
  pp::result r;
  for (;;) {
    r = pp::parse(stream.first(have));
    if (r.what != pp::result::status::need_more) break;
    KWS_FUZZ_CHECK(r.needed > have);
    KWS_FUZZ_CHECK(r.needed <= 16 + pp::max_v2_block);
    if (have > 0 && data[0] == 'P') KWS_FUZZ_CHECK(r.needed <= pp::max_v1_line);
    if (r.needed > size) return 0;  // the connection would wait for more
    have = r.needed;
  }
  if (r.what == pp::result::status::invalid) {
    KWS_FUZZ_CHECK(!r.error.empty());
    return 0;
  }
  const auto& h = r.parsed;
  KWS_FUZZ_CHECK(h.size == have);
  KWS_FUZZ_CHECK(h.version == 1 || h.version == 2);
  KWS_FUZZ_CHECK(!h.local || !h.source);
  KWS_FUZZ_CHECK(h.source.has_value() == h.destination.has_value());
  for (const auto& again : {pp::parse(stream.first(have)), pp::parse(stream)}) {
    KWS_FUZZ_CHECK(again.what == pp::result::status::done);
    KWS_FUZZ_CHECK(again.parsed.size == h.size && again.parsed.local == h.local &&
                   again.parsed.source == h.source && again.parsed.destination == h.destination);
  }
  return 0;
}
