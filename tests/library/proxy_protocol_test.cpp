// The PROXY protocol parser (include/kws/proxy_protocol.hpp), fed as a reader would: exactly the bytes it
// asks for, one step at a time, and every prefix of a header byte by byte. Headers are built here from the
// specification's layout, independently of the parser.
#include <kws/proxy_protocol.hpp>

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

namespace pp = kws::proxy_protocol;
using status = pp::result::status;
using bytes = std::vector<unsigned char>;

const bytes signature{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

// A v2 header: version and command, family and transport, then `block` (addresses and TLVs).
bytes v2(unsigned char ver_cmd, unsigned char family, const bytes& block) {
  bytes out = signature;
  out.push_back(ver_cmd);
  out.push_back(family);
  out.push_back(static_cast<unsigned char>(block.size() >> 8));
  out.push_back(static_cast<unsigned char>(block.size() & 0xff));
  out.insert(out.end(), block.begin(), block.end());
  return out;
}

// HAProxy's send-proxy-v2 for 127.0.0.1:40000 -> 127.0.0.1:8787.
const bytes ipv4_block{127, 0, 0, 1, 127, 0, 0, 1, 0x9c, 0x40, 0x22, 0x53};

bytes text(const std::string& s) {
  return bytes(s.begin(), s.end());
}

bytes operator+(bytes a, const bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Reads as the listener does: only as far as parse() asks, never past it. The result, and the bytes read.
std::pair<pp::result, std::size_t> read_as_listener(const bytes& stream) {
  std::size_t have = 0;
  for (int steps = 0; steps < 200; ++steps) {
    auto r = pp::parse(std::span(stream.data(), have));
    if (r.what != status::need_more) return {r, have};
    EXPECT_GT(r.needed, have) << "a step that asks for nothing more";
    if (r.needed <= have || r.needed > stream.size()) return {r, have};
    have = r.needed;
  }
  ADD_FAILURE() << "no end after 200 steps";
  return {};
}

// Every proper prefix of `header` asks for more, and never for a byte past the header.
void every_prefix_asks_for_more(const bytes& header) {
  for (std::size_t k = 0; k < header.size(); ++k) {
    const auto r = pp::parse(std::span(header.data(), k));
    ASSERT_EQ(r.what, status::need_more) << "prefix of " << k << " bytes: " << r.error;
    EXPECT_GT(r.needed, k);
    EXPECT_LE(r.needed, header.size()) << "prefix of " << k << " bytes";
  }
}

TEST(ProxyProtocol, AVersion2HeaderGivesTheClientAndStopsAtItsEnd) {
  const auto header = v2(0x21, 0x11, ipv4_block);
  every_prefix_asks_for_more(header);
  const auto [r, read] = read_as_listener(header + text("GET / HTTP/1.1\r\n"));
  ASSERT_EQ(r.what, status::done) << r.error;
  EXPECT_EQ(read, header.size()) << "read past the header";
  EXPECT_EQ(r.parsed.size, 28u);
  EXPECT_EQ(r.parsed.version, 2);
  EXPECT_FALSE(r.parsed.local);
  ASSERT_TRUE(r.parsed.source);
  EXPECT_EQ(r.parsed.source->address().to_string(), "127.0.0.1");
  EXPECT_EQ(r.parsed.source->port(), 40000);
  EXPECT_EQ(r.parsed.destination->port(), 8787);
}

TEST(ProxyProtocol, IPv6AndTLVsAfterTheAddresses) {
  bytes block(36, 0);
  block[15] = 1;  // ::1
  block[16] = 0x20;
  block[17] = 0x01;
  block[18] = 0x0d;
  block[19] = 0xb8;  // 2001:db8::
  block[32] = 0x01;
  block[33] = 0xbb;  // 443
  block[34] = 0x1f;
  block[35] = 0x90;  // 8080
  // PP2_TYPE_UNIQUE_ID with four bytes, and PP2_TYPE_NOOP with none.
  const auto header = v2(0x21, 0x21, block + bytes{0x05, 0, 4, 'a', 'b', 'c', 'd', 0x04, 0, 0});
  every_prefix_asks_for_more(header);
  const auto [r, read] = read_as_listener(header + bytes{0x16, 0x03, 0x01});
  ASSERT_EQ(r.what, status::done) << r.error;
  EXPECT_EQ(read, header.size());
  EXPECT_EQ(r.parsed.source->address().to_string(), "::1");
  EXPECT_EQ(r.parsed.source->port(), 443);
  EXPECT_EQ(r.parsed.destination->address().to_string(), "2001:db8::");
  EXPECT_EQ(r.parsed.destination->port(), 8080);
}

TEST(ProxyProtocol, LocalAndUnspecifiedCarryNoClient) {
  for (const auto& header : {v2(0x20, 0x00, {}), v2(0x20, 0x11, ipv4_block), v2(0x21, 0x00, {})}) {
    const auto [r, read] = read_as_listener(header + text("x"));
    ASSERT_EQ(r.what, status::done) << r.error;
    EXPECT_EQ(read, header.size());
    EXPECT_FALSE(r.parsed.source);
  }
  EXPECT_TRUE(pp::parse(v2(0x20, 0x11, ipv4_block)).parsed.local);
  EXPECT_FALSE(pp::parse(v2(0x21, 0x00, {})).parsed.local);
}

TEST(ProxyProtocol, AVersion1LineIsReadUpToItsCRLF) {
  const auto line = text("PROXY TCP4 192.0.2.7 127.0.0.1 56324 8787\r\n");
  every_prefix_asks_for_more(line);
  const auto [r, read] = read_as_listener(line + text("GET /"));
  ASSERT_EQ(r.what, status::done) << r.error;
  EXPECT_EQ(read, line.size());
  EXPECT_EQ(r.parsed.version, 1);
  EXPECT_EQ(r.parsed.source->address().to_string(), "192.0.2.7");
  EXPECT_EQ(r.parsed.source->port(), 56324);
  const auto six = pp::parse(text("PROXY TCP6 2001:db8::1 ::1 1 65535\r\n"));
  ASSERT_EQ(six.what, status::done) << six.error;
  EXPECT_EQ(six.parsed.source->address().to_string(), "2001:db8::1");
  const auto unknown = text("PROXY UNKNOWN\r\n");
  every_prefix_asks_for_more(unknown);
  const auto u = pp::parse(unknown);
  ASSERT_EQ(u.what, status::done) << u.error;
  EXPECT_TRUE(u.parsed.local);
  EXPECT_EQ(pp::parse(text("PROXY UNKNOWN ff::1 ::1 1 2\r\n")).what, status::done);
}

TEST(ProxyProtocol, WhatIsNotAHeaderIsRefusedWithItsCause) {
  struct bad_case {
    bytes input;
    std::string cause;
  };
  bytes too_big = signature + bytes{0x21, 0x11, 0x10, 0x01};
  const std::vector<bad_case> cases{
      // Six bytes are read before anything is decided: no header is shorter.
      {text("GET /kafka HTTP/1.1\r\n"), "no PROXY protocol header: the connection starts with 'GET /k'"},
      {bytes{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}, "starts with '\\x16\\x03\\x01\\x02\\x00\\x01'"},
      {bytes{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x52} + bytes(8, 0), "no PROXY protocol header"},
      {text("PROXZ /"), "no PROXY protocol header"},
      {v2(0x11, 0x11, ipv4_block), "version 1"},
      {v2(0x22, 0x11, ipv4_block), "command 2"},
      {v2(0x21, 0x31, bytes(216, 0)), "a UNIX socket"},
      {v2(0x21, 0x12, ipv4_block), "UDP"},
      {v2(0x21, 0x11, bytes{1, 2, 3, 4}), "too short for IPv4"},
      {v2(0x21, 0x21, ipv4_block), "too short for IPv6"},
      {too_big, "4097 bytes of addresses and TLVs (at most 4096"},
      {text("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"), "CR not followed by LF"},
      {text("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), "is not PROXY TCP4|TCP6"},
      {text("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), "is not PROXY TCP4|TCP6"},
      {text("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), "protocol 'UDP4'"},
      {text("PROXY TCP4 ::1 5.6.7.8 1 2\r\n"), "bad addresses or ports for TCP4"},
      {text("PROXY TCP6 1.2.3.4 ::1 1 2\r\n"), "bad addresses or ports for TCP6"},
      {text("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), "bad addresses or ports"},
      {text("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"), "bad addresses or ports"},
      {text("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"), "is not PROXY TCP4|TCP6"},
      {text("PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n"), "bad addresses or ports"},
      {text("PROXY " + std::string(101, 'A')), "without CRLF in its first 107 bytes"},
      // Found by the fuzzer: a CR as the 107th byte, whose LF would be the 108th.
      {text("PROXY " + std::string(100, 'A') + "\r\n"), "longer than 107 bytes"},
  };
  for (const auto& c : cases) {
    const auto [r, read] = read_as_listener(c.input);
    EXPECT_EQ(r.what, status::invalid) << c.cause;
    EXPECT_NE(r.error.find(c.cause), std::string::npos) << r.error << "\n  wanted: " << c.cause;
    EXPECT_LE(read, c.input.size());
  }
  // A line of exactly the longest length is still read.
  const auto longest = text(
      "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 "
      "65535\r\n");
  ASSERT_EQ(longest.size(), pp::max_v1_line);
  EXPECT_EQ(pp::parse(longest).what, status::done) << pp::parse(longest).error;
}

}  // namespace
