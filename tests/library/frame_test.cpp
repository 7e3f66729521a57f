#include "frame_util.hpp"

#include "kafka/frame_splitter.hpp"

#include <kws/frame.hpp>

#include <gtest/gtest.h>

#include <vector>

namespace {
using kws::test::frame;
using kws::test::raw_size;

std::span<const unsigned char> bytes(const std::string& s) {
  return {reinterpret_cast<const unsigned char*>(s.data()), s.size()};
}

TEST(Frame, PeekWaitsForTheWholeHeader) {
  boost::system::error_code ec;
  EXPECT_EQ(kws::peek_frame(bytes(std::string("\0\0", 2)), 100, ec), 0u);
  EXPECT_FALSE(ec);
  EXPECT_EQ(kws::peek_frame(bytes(frame("abc")), 100, ec), 7u);
  EXPECT_FALSE(ec);
}

TEST(Frame, PeekRejectsNegativeAndOversizedSizes) {
  boost::system::error_code ec;
  kws::peek_frame(bytes(raw_size(-1)), 100, ec);
  EXPECT_EQ(ec, kws::errc::negative_frame_size);
  kws::peek_frame(bytes(raw_size(101)), 100, ec);
  EXPECT_EQ(ec, kws::errc::frame_too_large);
  kws::peek_frame(bytes(raw_size(100)), 100, ec);
  EXPECT_FALSE(ec);
}

TEST(Frame, CheckMessageRequiresExactLength) {
  EXPECT_FALSE(kws::check_message(bytes(frame("hello")), 100));
  EXPECT_FALSE(kws::check_message(bytes(frame("")), 100));
  EXPECT_EQ(kws::check_message(bytes(frame("hello") + "x"), 100), kws::errc::frame_size_mismatch);
  EXPECT_EQ(kws::check_message(bytes(frame("hello").substr(0, 6)), 100), kws::errc::frame_size_mismatch);
  EXPECT_EQ(kws::check_message(bytes(std::string("\0\0", 2)), 100), kws::errc::frame_size_mismatch);
  EXPECT_EQ(kws::check_message(bytes(raw_size(-5)), 100), kws::errc::negative_frame_size);
}

TEST(Frame, SplitterFindsFramesAcrossAnyChunking) {
  const std::string stream = frame("first") + frame("") + frame(std::string(1000, 'z')) + frame("last");
  for (std::size_t chunk : {1u, 2u, 3u, 5u, 7u, 64u, 4096u}) {
    kws::detail::frame_splitter sp(2000);
    std::vector<std::size_t> ends;
    std::size_t pos = 0;
    while (pos < stream.size()) {
      auto piece = bytes(stream).subspan(pos, std::min(chunk, stream.size() - pos));
      while (!piece.empty()) {
        boost::system::error_code ec;
        auto st = sp.feed(piece, ec);
        ASSERT_FALSE(ec);
        pos += st.consumed;
        piece = piece.subspan(st.consumed);
        if (st.complete) ends.push_back(pos);
      }
    }
    EXPECT_EQ(ends, (std::vector<std::size_t>{9, 13, 1017, 1025})) << "chunk " << chunk;
    EXPECT_TRUE(sp.at_boundary());
  }
}

TEST(Frame, SplitterRejectsBadSizeBeforeTheBody) {
  kws::detail::frame_splitter sp(10);
  boost::system::error_code ec;
  const auto big = raw_size(11) + "0123456789a";
  auto st = sp.feed(bytes(big), ec);
  EXPECT_EQ(ec, kws::errc::frame_too_large);
  EXPECT_EQ(st.consumed, 4u);
}

TEST(Errc, HasItsOwnCategoryAndMessages) {
  boost::system::error_code ec = kws::errc::invalid_message_type;
  EXPECT_STREQ(ec.category().name(), "kws");
  EXPECT_NE(ec.message().find("binary"), std::string::npos);
}
}  // namespace

namespace {
TEST(Frame, SplitterTakesAnEmptyInputAtABoundary) {
  kws::detail::frame_splitter sp;
  boost::system::error_code ec;
  const auto st = sp.feed(std::span<const unsigned char>{}, ec);
  EXPECT_FALSE(ec);
  EXPECT_EQ(st.consumed, 0u);
  EXPECT_FALSE(st.complete);
  EXPECT_TRUE(sp.at_boundary());
}
}  // namespace
