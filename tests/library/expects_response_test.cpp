// Which requests the relay waits for a response to: everything but Produce with acks=0.
#include "frame_util.hpp"

#include <kws/kafka/api.hpp>

#include <gtest/gtest.h>

namespace {

struct request_builder {
  std::string b;
  request_builder& i8(int v) {
    b += static_cast<char>(v & 0xff);
    return *this;
  }
  request_builder& i16(int v) { return i8(v >> 8).i8(v); }
  request_builder& i32(std::int32_t v) { return i16(v >> 16).i16(v & 0xffff); }
  request_builder& str(const std::string& s) {
    i16(static_cast<int>(s.size()));
    b += s;
    return *this;
  }
  std::string frame() const { return kws::test::frame(b); }
};

bool expects(const std::string& f) {
  return kws::kafka::expects_response({reinterpret_cast<const unsigned char*>(f.data()), f.size()});
}

TEST(ExpectsResponse, ProduceV0WithAcksZeroGetsNone) {
  EXPECT_FALSE(expects(request_builder{}.i16(0).i16(0).i32(7).str("cli").i16(0).i32(1000).i32(0).frame()));
  EXPECT_TRUE(expects(request_builder{}.i16(0).i16(0).i32(7).str("cli").i16(1).i32(1000).i32(0).frame()));
  EXPECT_TRUE(expects(request_builder{}.i16(0).i16(0).i32(7).str("cli").i16(-1).i32(1000).i32(0).frame()));
}

TEST(ExpectsResponse, ProduceV3ReadsPastTheTransactionalId) {
  // Header v1, then transactional_id (nullable string) and acks.
  EXPECT_FALSE(expects(request_builder{}.i16(0).i16(3).i32(1).str("cli").i16(-1).i16(0).i32(1000).frame()));
  EXPECT_FALSE(
      expects(request_builder{}.i16(0).i16(7).i32(1).str("cli").str("txn-1").i16(0).i32(1000).frame()));
  EXPECT_TRUE(
      expects(request_builder{}.i16(0).i16(7).i32(1).str("cli").str("txn-1").i16(1).i32(1000).frame()));
}

TEST(ExpectsResponse, FlexibleProduceReadsTheCompactTransactionalId) {
  // Produce v9: header v2 (client id, then empty tagged fields), compact nullable transactional_id.
  EXPECT_FALSE(
      expects(request_builder{}.i16(0).i16(9).i32(1).str("cli").i8(0).i8(0).i16(0).i32(1000).frame()));
  EXPECT_FALSE(expects(request_builder{}
                           .i16(0)
                           .i16(9)
                           .i32(1)
                           .str("cli")
                           .i8(0)
                           .i8(4)
                           .i8('t')
                           .i8('x')
                           .i8('n')
                           .i16(0)
                           .i32(1000)
                           .frame()));
  EXPECT_TRUE(
      expects(request_builder{}.i16(0).i16(9).i32(1).str("cli").i8(0).i8(0).i16(-1).i32(1000).frame()));
}

TEST(ExpectsResponse, EverythingElseAndAnythingUnreadableGetsOne) {
  EXPECT_TRUE(expects(request_builder{}.i16(3).i16(0).i32(2).str("cli").i32(0).frame()));  // Metadata v0
  EXPECT_TRUE(expects(request_builder{}.i16(18).i16(3).i32(3).str("cli").i8(0).frame()));  // ApiVersions v3
  EXPECT_TRUE(expects(kws::test::frame("")));
  EXPECT_TRUE(expects(request_builder{}.i16(0).i16(0).i32(7).frame()));  // truncated Produce
}

}  // namespace
