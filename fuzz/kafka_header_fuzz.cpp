// Two targets in one over arbitrary bytes:
//  1. kws::kafka::peek_request_header on the whole input: fixed fields match a plain decode, views stay
//  inside
//     the input, errors come from the wire category, and the peeked header re-encodes to the input's bytes.
//  2. A program of kws::kafka::reader calls chosen by the input, over the input's remaining bytes: position
//     and remaining always add up, the first error sticks and nothing moves after it, returned views lie in
//     the input, and every value read is written back with kws::kafka::writer and read again unchanged.
// The input is copied into a heap block of exactly its size, so AddressSanitizer reports any read past it.
#include "fuzz_check.hpp"

#include <kws/kafka/api.hpp>
#include <kws/kafka/wire.hpp>

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace {

using kws::kafka::bytes_view;
using kws::kafka::reader;
using kws::kafka::wire_errc;
using kws::kafka::writer;

bool inside(bytes_view outer, const void* p, std::size_t n) {
  const auto* b = static_cast<const unsigned char*>(p);
  if (n == 0) return true;  // an empty view may point anywhere (or nowhere)
  return b >= outer.data() && b + n <= outer.data() + outer.size();
}

std::int16_t be16(const unsigned char* p) {
  return static_cast<std::int16_t>((p[0] << 8) | p[1]);
}
std::int32_t be32(const unsigned char* p) {
  return static_cast<std::int32_t>((std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) |
                                   (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]});
}

void fuzz_request_header(bytes_view body) {
  boost::system::error_code ec;
  const auto h = kws::kafka::peek_request_header(body, ec);
  if (ec) KWS_FUZZ_CHECK(&ec.category() == &kws::kafka::wire_category());
  if (body.size() < 8) {
    KWS_FUZZ_CHECK(ec == wire_errc::truncated);
    return;
  }
  KWS_FUZZ_CHECK(static_cast<std::int16_t>(h.key) == be16(body.data()));
  KWS_FUZZ_CHECK(h.version == be16(body.data() + 2));
  KWS_FUZZ_CHECK(h.correlation_id == be32(body.data() + 4));
  // Tables must answer for any key, known or not.
  (void)kws::kafka::api_name(h.key);
  (void)kws::kafka::response_header_version(h.key, h.version);
  // A client id read before a later failure (bad tagged fields) may be kept; it must still lie in the input.
  if (h.client_id) KWS_FUZZ_CHECK(inside(body, h.client_id->data(), h.client_id->size()));
  if (ec) return;
  KWS_FUZZ_CHECK(h.header_bytes <= body.size());

  // Re-encode the fixed part and the client id; it must equal the input's prefix.
  std::vector<unsigned char> out;
  writer w(out);
  w.int16(static_cast<std::int16_t>(h.key));
  w.int16(h.version);
  w.int32(h.correlation_id);
  const bool header_v0 = h.key == kws::kafka::api_key::controlled_shutdown && h.version == 0;
  if (!header_v0) w.nullable_string(h.client_id);
  KWS_FUZZ_CHECK(out.size() <= body.size());
  KWS_FUZZ_CHECK(std::equal(out.begin(), out.end(), body.begin()));
  if (header_v0) KWS_FUZZ_CHECK(h.header_bytes == 8);
  const auto flexible = kws::kafka::first_flexible_version(h.key);
  if (!header_v0 && flexible && h.version < *flexible) KWS_FUZZ_CHECK(h.header_bytes == out.size());
  if (!header_v0 && flexible && h.version >= *flexible) KWS_FUZZ_CHECK(h.header_bytes > out.size());
  if (!header_v0 && !flexible) KWS_FUZZ_CHECK(h.header_bytes == 0);
}

void check_after(const reader& r, bytes_view input, std::size_t pos_before, bool ok_before,
                 const boost::system::error_code& ec_before) {
  KWS_FUZZ_CHECK(r.position() + r.remaining() == input.size());
  KWS_FUZZ_CHECK(r.position() >= pos_before);
  KWS_FUZZ_CHECK(r.ok() == !r.error());
  if (!ok_before) {
    KWS_FUZZ_CHECK(r.position() == pos_before);
    KWS_FUZZ_CHECK(r.error() == ec_before);
  }
  // Errors are the reader's own, or the one a decoder injected with fail().
  if (!r.ok())
    KWS_FUZZ_CHECK(&r.error().category() == &kws::kafka::wire_category() ||
                   r.error() == boost::system::errc::protocol_error);
}

void fuzz_reader(bytes_view input, FuzzedDataProvider& ops) {
  reader r(input);
  std::vector<unsigned char> out;
  writer w(out);
  for (int step = 0; step < 64 && ops.remaining_bytes() > 0; ++step) {
    const std::size_t pos_before = r.position();
    const bool ok_before = r.ok();
    const auto ec_before = r.error();
    out.clear();
    reader back{bytes_view{}};
    switch (ops.ConsumeIntegralInRange<int>(0, 20)) {
      case 0: {
        const auto v = r.int8();
        if (!r.ok()) KWS_FUZZ_CHECK(v == 0);
        if (r.ok())
          KWS_FUZZ_CHECK(r.position() == pos_before + 1 && v == static_cast<std::int8_t>(input[pos_before]));
        break;
      }
      case 1: {
        const auto v = r.int16();
        if (!r.ok()) KWS_FUZZ_CHECK(v == 0);
        if (r.ok()) {
          w.int16(v);
          KWS_FUZZ_CHECK(
              std::equal(out.begin(), out.end(), input.begin() + static_cast<std::ptrdiff_t>(pos_before)));
        }
        break;
      }
      case 2: {
        const auto v = r.int32();
        if (!r.ok()) KWS_FUZZ_CHECK(v == 0);
        if (r.ok()) {
          w.int32(v);
          KWS_FUZZ_CHECK(
              out.size() == 4 &&
              std::equal(out.begin(), out.end(), input.begin() + static_cast<std::ptrdiff_t>(pos_before)));
        }
        break;
      }
      case 3: {
        const auto v = r.int64();
        if (!r.ok()) KWS_FUZZ_CHECK(v == 0);
        if (r.ok()) {
          w.int64(v);
          KWS_FUZZ_CHECK(
              out.size() == 8 &&
              std::equal(out.begin(), out.end(), input.begin() + static_cast<std::ptrdiff_t>(pos_before)));
        }
        break;
      }
      case 4: {
        const auto v = r.uvarint();
        if (!r.ok()) KWS_FUZZ_CHECK(v == 0);
        if (r.ok()) {
          KWS_FUZZ_CHECK(r.position() - pos_before <= 5);
          w.uvarint(v);
          KWS_FUZZ_CHECK(out.size() == kws::kafka::uvarint_size(v) &&
                         out.size() <= r.position() - pos_before);
          back = reader(out);
          KWS_FUZZ_CHECK(back.uvarint() == v && back.ok() && back.remaining() == 0);
        }
        break;
      }
      case 5: {
        const auto v = r.uvarlong();
        if (!r.ok()) KWS_FUZZ_CHECK(v == 0);
        if (r.ok()) {
          KWS_FUZZ_CHECK(r.position() - pos_before <= 10);
          w.uvarint(v);
          back = reader(out);
          KWS_FUZZ_CHECK(back.uvarlong() == v && back.ok() && back.remaining() == 0);
        }
        break;
      }
      case 6: {
        const auto v = r.varint();
        if (!r.ok()) KWS_FUZZ_CHECK(v == 0);
        if (r.ok()) {
          w.varint(v);
          back = reader(out);
          KWS_FUZZ_CHECK(back.varint() == v && back.ok() && back.remaining() == 0);
        }
        break;
      }
      case 7: {
        const auto v = r.varlong();
        if (!r.ok()) KWS_FUZZ_CHECK(v == 0);
        if (r.ok()) {
          w.varint(v);
          back = reader(out);
          KWS_FUZZ_CHECK(back.varlong() == v && back.ok() && back.remaining() == 0);
        }
        break;
      }
      case 8: {
        const auto v = r.string();
        if (!r.ok()) KWS_FUZZ_CHECK(v.empty());
        if (r.ok()) {
          KWS_FUZZ_CHECK(inside(input, v.data(), v.size()));
          w.string(v);
          KWS_FUZZ_CHECK(
              out.size() == r.position() - pos_before &&
              std::equal(out.begin(), out.end(), input.begin() + static_cast<std::ptrdiff_t>(pos_before)));
        }
        break;
      }
      case 9: {
        const auto v = r.nullable_string();
        if (!r.ok()) KWS_FUZZ_CHECK(!v);
        if (r.ok()) {
          if (v) KWS_FUZZ_CHECK(inside(input, v->data(), v->size()));
          w.nullable_string(v);
          KWS_FUZZ_CHECK(
              out.size() == r.position() - pos_before &&
              std::equal(out.begin(), out.end(), input.begin() + static_cast<std::ptrdiff_t>(pos_before)));
        }
        break;
      }
      case 10: {
        const auto v = r.compact_string();
        if (!r.ok()) KWS_FUZZ_CHECK(v.empty());
        if (r.ok()) {
          KWS_FUZZ_CHECK(inside(input, v.data(), v.size()));
          w.compact_string(v);
          back = reader(out);
          KWS_FUZZ_CHECK(back.compact_string() == v && back.ok() && back.remaining() == 0);
        }
        break;
      }
      case 11: {
        const auto v = r.compact_nullable_string();
        if (!r.ok()) KWS_FUZZ_CHECK(!v);
        if (r.ok()) {
          if (v) KWS_FUZZ_CHECK(inside(input, v->data(), v->size()));
          w.compact_nullable_string(v);
          back = reader(out);
          KWS_FUZZ_CHECK(back.compact_nullable_string() == v && back.ok() && back.remaining() == 0);
        }
        break;
      }
      case 12: {
        const auto v = r.nullable_bytes();
        if (!r.ok()) KWS_FUZZ_CHECK(!v);
        if (r.ok()) {
          if (v) KWS_FUZZ_CHECK(inside(input, v->data(), v->size()));
          w.nullable_bytes(v);
          KWS_FUZZ_CHECK(
              out.size() == r.position() - pos_before &&
              std::equal(out.begin(), out.end(), input.begin() + static_cast<std::ptrdiff_t>(pos_before)));
        }
        break;
      }
      case 13: {
        const auto v = r.bytes();
        if (!r.ok()) KWS_FUZZ_CHECK(v.empty());
        if (r.ok()) {
          KWS_FUZZ_CHECK(inside(input, v.data(), v.size()));
          w.bytes(v);
          KWS_FUZZ_CHECK(
              out.size() == r.position() - pos_before &&
              std::equal(out.begin(), out.end(), input.begin() + static_cast<std::ptrdiff_t>(pos_before)));
        }
        break;
      }
      case 14: {
        const auto v = r.compact_nullable_bytes();
        if (!r.ok()) KWS_FUZZ_CHECK(!v);
        if (r.ok()) {
          if (v) KWS_FUZZ_CHECK(inside(input, v->data(), v->size()));
          w.compact_nullable_bytes(v);
          back = reader(out);
          const auto again = back.compact_nullable_bytes();
          KWS_FUZZ_CHECK(back.ok() && back.remaining() == 0 && again.has_value() == v.has_value());
          if (v) KWS_FUZZ_CHECK(std::equal(v->begin(), v->end(), again->begin(), again->end()));
        }
        break;
      }
      case 15: {
        const std::size_t min_element = ops.ConsumeIntegralInRange<std::size_t>(0, 16);
        const auto n = r.array_count(min_element);
        if (!r.ok()) KWS_FUZZ_CHECK(n == 0);
        if (r.ok()) {
          KWS_FUZZ_CHECK(n >= -1);
          if (n > 0 && min_element > 0)
            KWS_FUZZ_CHECK(static_cast<std::size_t>(n) * min_element <= r.remaining());
        }
        break;
      }
      case 16: {
        const std::size_t min_element = ops.ConsumeIntegralInRange<std::size_t>(0, 16);
        const auto n = r.compact_array_count(min_element);
        if (!r.ok()) KWS_FUZZ_CHECK(n == 0);
        if (r.ok()) {
          KWS_FUZZ_CHECK(n >= -1);
          if (n > 0 && min_element > 0)
            KWS_FUZZ_CHECK(static_cast<std::size_t>(n) * min_element <= r.remaining());
          w.compact_array_count(n);
          back = reader(out);
          KWS_FUZZ_CHECK(back.compact_array_count(0) == n && back.ok());
        }
        break;
      }
      case 17:
        r.skip_tagged_fields();
        break;
      case 18: {
        const std::size_t n = ops.ConsumeIntegralInRange<std::size_t>(0, 64);
        const auto v = r.raw(n);
        if (!r.ok()) KWS_FUZZ_CHECK(v.empty());
        if (r.ok())
          KWS_FUZZ_CHECK(v.size() == n && inside(input, v.data(), v.size()) &&
                         v.data() == input.data() + pos_before);
        break;
      }
      case 19:
        r.expect_end();
        if (ok_before) KWS_FUZZ_CHECK(r.ok() == (r.remaining() == 0));
        break;
      case 20: {
        // A decoder's own error: sticks only when it is the first.
        r.fail(boost::system::errc::make_error_code(boost::system::errc::protocol_error));
        KWS_FUZZ_CHECK(!r.ok());
        if (ok_before) KWS_FUZZ_CHECK(r.error() == boost::system::errc::protocol_error);
        break;
      }
    }
    check_after(r, input, pos_before, ok_before, ec_before);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::vector<unsigned char> whole(data, data + size);
  fuzz_request_header(whole);

  // The bytes the reader reads come from the front of the input, the program of calls from the end.
  FuzzedDataProvider ops(data, size);
  const std::vector<unsigned char> input =
      ops.ConsumeBytes<unsigned char>(ops.ConsumeIntegralInRange<std::size_t>(0, size));
  fuzz_reader(input, ops);
  return 0;
}
