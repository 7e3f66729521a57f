// The text parsers of broker and proxy addresses at their edges: kws::split_host_port (the one host:port
// splitter), parse_address (ws:// and wss:// through Boost.URL) and parse_proxy_url.
#include <kws/address.hpp>
#include <kws/dialer.hpp>
#include <kws/errc.hpp>
#include <kws/forward_proxy.hpp>
#include <kws/host_port.hpp>

#include <gtest/gtest.h>

namespace {

using boost::system::error_code;

TEST(ConnectTo, FourFieldsEitherPortMayBeEmptyIpv6InBrackets) {
  const auto all = kws::parse_connect_to("kafka-1.gw.example.com:443:10.0.0.5:8443");
  ASSERT_TRUE(all);
  EXPECT_EQ(all->host, "kafka-1.gw.example.com");
  EXPECT_EQ(all->port, 443);
  EXPECT_EQ(all->to_host, "10.0.0.5");
  EXPECT_EQ(all->to_port, 8443);
  const auto any = kws::parse_connect_to("*.gw.example.com::[::1]:");
  ASSERT_TRUE(any);
  EXPECT_EQ(any->host, "*.gw.example.com");
  EXPECT_EQ(any->port, 0) << "any port";
  EXPECT_EQ(any->to_host, "::1");
  EXPECT_EQ(any->to_port, 0) << "the same port";
  for (const char* bad : {"", "a:1:b", "a:1:b:2:3", ":1:b:2", "a:1::2", "a:0:b:2", "a:1:b:65536", "a:x:b:1",
                          "[::1:1:b:2", "a b:1:c:2"})
    EXPECT_FALSE(kws::parse_connect_to(bad)) << bad;
}

TEST(HostPort, SplitsNamesAddressesAndBracketedIpv6) {
  auto hp = kws::split_host_port("broker.example:9092");
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->host, "broker.example");
  EXPECT_TRUE(hp->has_port);
  EXPECT_EQ(hp->port, 9092);
  EXPECT_FALSE(hp->is_ipv6);

  hp = kws::split_host_port("[fd00::1]:443");
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->host, "fd00::1");
  EXPECT_TRUE(hp->is_ipv6);
  EXPECT_EQ(hp->port, 443);

  hp = kws::split_host_port("[::ffff:10.0.0.1]");
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->host, "::ffff:10.0.0.1");
  EXPECT_FALSE(hp->has_port);

  hp = kws::split_host_port(":8787");
  ASSERT_TRUE(hp) << "an empty host is for the caller to refuse or take as every interface";
  EXPECT_EQ(hp->host, "");
  EXPECT_EQ(hp->port, 8787);

  hp = kws::split_host_port("h:0");
  ASSERT_TRUE(hp) << "port 0 is for the caller to refuse or take as any free port";
  EXPECT_EQ(hp->port, 0);
  EXPECT_FALSE(kws::is_dialable(*hp));
  EXPECT_EQ(kws::split_host_port("h:00080")->port, 80);
}

TEST(HostPort, RefusesAmbiguousOrMalformedText) {
  for (std::string_view bad :
       {"::1:9092", "fd00::1", "h:", "h:65536", "h:99999", "h:123456", "h:-1", "h:+1", "h:x", "h:1x", "[::1",
        "[::1]9092", "[::1]:", "[not-v6]:1", "[v1.fe]:1", "[]:1", "[::1]:65536", "a:b:1"}) {
    EXPECT_FALSE(kws::split_host_port(bad)) << "'" << bad << "'";
  }
}

TEST(HostPort, JoinsWithBracketsForIpv6Only) {
  EXPECT_EQ(kws::join_host_port("h", 1), "h:1");
  EXPECT_EQ(kws::join_host_port("10.0.0.1", 9092), "10.0.0.1:9092");
  EXPECT_EQ(kws::join_host_port("fd00::1", 443), "[fd00::1]:443");
  EXPECT_EQ(kws::join_host_port("[fd00::1]", 443), "[fd00::1]:443") << "never bracketed twice";
}

TEST(HostPort, PlainNamesAreLettersDigitsDashDotAndUnderscore) {
  EXPECT_TRUE(kws::is_plain_host_name("b-1.internal_x"));
  EXPECT_TRUE(kws::is_plain_host_name("10.0.0.1"));
  for (std::string_view bad : {"", "a b", "a%41", "a!b", "{node_id}.gw", "::1", "caf\xc3\xa9"})
    EXPECT_FALSE(kws::is_plain_host_name(bad)) << "'" << bad << "'";
}

TEST(Address, TakesIpv6LiteralsOnlyInBrackets) {
  auto a = kws::parse_address("[fd00::1]:9092", true);
  EXPECT_TRUE(a.secure);
  EXPECT_EQ(a.host, "fd00::1");
  EXPECT_EQ(a.str(), "wss://[fd00::1]:9092/");
  a = kws::parse_address("wss://[::ffff:10.0.0.1]/kafka", false);
  EXPECT_EQ(a.host, "::ffff:10.0.0.1");
  EXPECT_EQ(a.port, 443);
  for (std::string_view bad : {"fd00::1:9092", "ws://fd00::1:9092/", "ws://[fd00::1/", "ws://[v1.x]:1/",
                               "ws://[fe80::1%25eth0]:1/", "[zz::1]:1"}) {
    error_code ec;
    kws::parse_address(bad, false, ec);
    EXPECT_EQ(ec, kws::errc::invalid_address) << "'" << bad << "'";
  }
}

TEST(Address, RefusesPortsOutOfRange) {
  for (std::string_view bad : {"h:0", "h:65536", "ws://h:0/", "ws://h:65536/", "wss://h:99999999999/",
                               "ws://h:/", "ws://h:x/", "[::1]:0"}) {
    error_code ec;
    kws::parse_address(bad, false, ec);
    EXPECT_EQ(ec, kws::errc::invalid_address) << "'" << bad << "'";
  }
  EXPECT_EQ(kws::parse_address("ws://h:65535/", false).port, 65535);
  EXPECT_EQ(kws::parse_address("h:1", false).port, 1);
}

TEST(Address, KeepsPercentEscapesOfPathAndQueryAndDropsTheFragment) {
  const auto a = kws::parse_address("ws://h:1/a%20b/%7Bx%7D?q=%26&r#frag", false);
  EXPECT_EQ(a.target, "/a%20b/%7Bx%7D?q=%26&r");
  EXPECT_EQ(kws::parse_address("ws://h?x=1", false).target, "/?x=1");
  EXPECT_EQ(kws::parse_address("ws://h/p?", false).target, "/p?");
  EXPECT_EQ(kws::parse_address("ws://h#f", false).target, "/");
  // Brackets outside the host, as a template's {host} writes an IPv6 broker: kept as they are.
  EXPECT_EQ(kws::parse_address("ws://h/k/[fd00::1]?h=[::1]", false).target, "/k/[fd00::1]?h=[::1]");
  // What RFC 3986 leaves out of a path (Boost.URL checks it): no request line carries it as it is.
  for (std::string_view bad :
       {"ws://h/a%zz", "ws://h/a%4", "ws://h/a{b}", "ws://h/a|b", "ws://h/a\\b", "ws://h/\xc3\xa9"}) {
    error_code ec;
    kws::parse_address(bad, false, ec);
    EXPECT_EQ(ec, kws::errc::invalid_address) << "'" << bad << "'";
  }
}

TEST(Address, RefusesUserInfoOddHostsAndOtherSchemes) {
  for (std::string_view bad : {"ws://u@h/", "ws://u:p@h:1/", "ws://h%41:1/", "ws://h!x/", "ws://:1/",
                               "ws:///p", "ws:h:1", "http://h:1/", "wss//h:1", "h:1/path", "u@h:1"}) {
    error_code ec;
    kws::parse_address(bad, false, ec);
    EXPECT_EQ(ec, kws::errc::invalid_address) << "'" << bad << "'";
  }
}

kws::proxy_url proxy_ok(std::string_view text) {
  error_code ec;
  auto p = kws::parse_proxy_url(text, ec);
  EXPECT_FALSE(ec) << text << ": " << ec.message();
  return p;
}

TEST(ProxyUrlEdges, UserInfoIsPercentDecodedAndMayBeEmpty) {
  auto p = proxy_ok("http://%61lice:pa%20ss@proxy:3128");
  EXPECT_EQ(p.username, "alice");
  EXPECT_EQ(p.password, "pa ss");
  p = proxy_ok("http://:secret@proxy:1");
  EXPECT_EQ(p.username, "");
  EXPECT_TRUE(p.has_password);
  p = proxy_ok("http://@proxy:1");
  EXPECT_EQ(p.username, "");
  EXPECT_FALSE(p.has_password);
  p = proxy_ok("u:a@b@c@[fd00::1]:8080/x@y");
  EXPECT_EQ(p.password, "a@b@c") << "the last '@' before the path ends the user info";
  EXPECT_EQ(p.authority(), "[fd00::1]:8080");
}

TEST(ProxyUrlEdges, RefusesBadEscapesHostsAndPorts) {
  for (std::string_view bad :
       {"http://u%:p@proxy:1", "http://u:p%g0@proxy:1", "http://proxy:00000000080", "http://[fd00::1]:0",
        "http://[::1]:70000", "http://[v1.x]:1", "http://pr%6Fxy:1", "http://u:p@:1", "http://u:p@"}) {
    error_code ec;
    kws::parse_proxy_url(bad, ec);
    EXPECT_EQ(ec, kws::errc::invalid_proxy_url) << "'" << bad << "'";
  }
}

}  // namespace
