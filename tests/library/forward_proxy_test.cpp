// The pure half of forward proxy support: proxy URLs, NO_PROXY lists, the environment as Go reads it, which
// proxy a broker gets, and the CONNECT request.
#include <kws/errc.hpp>
#include <kws/forward_proxy.hpp>

#include <gtest/gtest.h>

#include <map>

namespace {

using boost::system::error_code;

kws::proxy_url parse_ok(std::string_view text) {
  error_code ec;
  auto p = kws::parse_proxy_url(text, ec);
  EXPECT_FALSE(ec) << text << ": " << ec.message();
  return p;
}

TEST(ProxyUrl, ParsesSchemeUserInfoHostAndPort) {
  auto p = parse_ok("http://alice:s3cret@proxy.example.com:3128");
  EXPECT_EQ(p.host, "proxy.example.com");
  EXPECT_EQ(p.port, 3128);
  EXPECT_EQ(p.username, "alice");
  EXPECT_EQ(p.password, "s3cret");
  EXPECT_TRUE(p.has_password);
  EXPECT_EQ(p.authority(), "proxy.example.com:3128");
}

TEST(ProxyUrl, TakesHttpWhenTheSchemeIsMissingAndPort80WhenThePortIs) {
  auto p = parse_ok("proxy.example.com:8080");
  EXPECT_EQ(p.host, "proxy.example.com");
  EXPECT_EQ(p.port, 8080);
  EXPECT_FALSE(p.has_password);
  EXPECT_EQ(parse_ok("http://proxy.example.com").port, 80);
  EXPECT_EQ(parse_ok("proxy.example.com").port, 80);
  EXPECT_EQ(parse_ok("HTTP://Proxy:1/").host, "Proxy");
  // A path (and blanks around the value) are ignored, as Go and curl ignore them.
  EXPECT_EQ(parse_ok("  http://proxy:3128/some/path?x=1  ").authority(), "proxy:3128");
}

TEST(ProxyUrl, PercentDecodesTheUserInfo) {
  auto p = parse_ok("http://dom%5Calice%40corp:p%3Ass%2Fw%40rd%25@10.0.0.1:3128");
  EXPECT_EQ(p.username, "dom\\alice@corp");
  EXPECT_EQ(p.password, "p:ss/w@rd%");
  // The last '@' ends the user info: an unencoded '@' in a password still works.
  auto q = parse_ok("http://bob:a@b@proxy:1");
  EXPECT_EQ(q.password, "a@b");
  EXPECT_EQ(q.host, "proxy");
}

TEST(ProxyUrl, ParsesIpv6InBrackets) {
  auto p = parse_ok("http://[fd00::1]:3128");
  EXPECT_EQ(p.host, "fd00::1");
  EXPECT_EQ(p.authority(), "[fd00::1]:3128");
  EXPECT_EQ(parse_ok("[::1]").port, 80);
}

TEST(ProxyUrl, RejectsWhatTheDialerCannotUse) {
  for (std::string_view bad :
       {"", "   ", "https://proxy:443", "socks5://proxy:1080", "ftp://proxy", "http://", "http://:3128",
        "http://proxy:0", "http://proxy:65536", "http://proxy:port", "http://pro xy:1",
        "http://proxy:1\r\nX: y", "http://u:%zz@proxy:1", "http://u:%4@proxy:1", "http://[fd00::1:3128",
        "http://fd00::1:3128", "http://prox!y:1"}) {
    error_code ec;
    kws::parse_proxy_url(bad, ec);
    EXPECT_EQ(ec, kws::errc::invalid_proxy_url) << "'" << bad << "'";
  }
}

TEST(ProxyUrl, RedactsUserInfoAndNothingElse) {
  EXPECT_EQ(kws::redact_proxy_url("http://alice:s3cret@proxy:3128/"), "http://***@proxy:3128/");
  EXPECT_EQ(kws::redact_proxy_url("alice:s3cret@proxy:3128"), "***@proxy:3128");
  EXPECT_EQ(kws::redact_proxy_url("http://a:b@c@proxy:1"), "http://***@proxy:1");
  EXPECT_EQ(kws::redact_proxy_url("http://proxy:3128/a@b"), "http://proxy:3128/a@b");
  EXPECT_EQ(kws::redact_proxy_url("proxy:3128"), "proxy:3128");
}

TEST(ProxyUrl, AuthorizationIsBasicOfUserColonPasswordOnlyWithAPassword) {
  EXPECT_EQ(parse_ok("http://Aladdin:open%20sesame@p:1").authorization(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
  EXPECT_EQ(parse_ok("http://user:@p:1").authorization(), "Basic dXNlcjo=");
  // Go's WebSocket dialer sends no credentials for a user without a password; neither do we.
  EXPECT_EQ(parse_ok("http://user@p:1").authorization(), "");
  EXPECT_EQ(parse_ok("http://p:1").authorization(), "");
}

TEST(Base64, EncodesWithPadding) {
  EXPECT_EQ(kws::base64_encode(""), "");
  EXPECT_EQ(kws::base64_encode("f"), "Zg==");
  EXPECT_EQ(kws::base64_encode("fo"), "Zm8=");
  EXPECT_EQ(kws::base64_encode("foo"), "Zm9v");
  EXPECT_EQ(kws::base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(kws::base64_encode(std::string("\xff\xfe\x00", 3)), "//4A");
}

// ---- NO_PROXY -------------------------------------------------------------------------------------------

TEST(NoProxy, NamesMatchThemselvesAndNamesUnderThem) {
  const auto l = kws::no_proxy_list::parse("example.com");
  EXPECT_TRUE(l.matches("example.com", 443));
  EXPECT_TRUE(l.matches("kafka.example.com", 443));
  EXPECT_TRUE(l.matches("a.b.EXAMPLE.com", 80));
  EXPECT_FALSE(l.matches("notexample.com", 443));
  EXPECT_FALSE(l.matches("example.com.evil", 443));
}

TEST(NoProxy, ALeadingDotOrStarDotMatchesOnlyNamesUnderIt) {
  for (const char* text : {".example.com", "*.example.com"}) {
    const auto l = kws::no_proxy_list::parse(text);
    EXPECT_TRUE(l.matches("kafka.example.com", 443)) << text;
    EXPECT_FALSE(l.matches("example.com", 443)) << text << " (Go's rule; curl would match it)";
    EXPECT_FALSE(l.matches("xexample.com", 443)) << text;
  }
}

TEST(NoProxy, StarMatchesEverything) {
  const auto l = kws::no_proxy_list::parse(" * ");
  EXPECT_TRUE(l.matches("anything.example", 1));
  EXPECT_TRUE(l.matches("10.1.2.3", 9092));
  EXPECT_FALSE(l.empty());
}

TEST(NoProxy, AddressesAndCidrRangesMatchAddressesOnly) {
  const auto l = kws::no_proxy_list::parse("10.1.2.3, 192.168.0.0/16,fd00::/8 ,::1");
  EXPECT_TRUE(l.matches("10.1.2.3", 80));
  EXPECT_FALSE(l.matches("10.1.2.4", 80));
  EXPECT_TRUE(l.matches("192.168.200.7", 443));
  EXPECT_FALSE(l.matches("192.169.0.1", 443));
  EXPECT_TRUE(l.matches("fd12:3456::9", 443));
  EXPECT_FALSE(l.matches("fe80::1", 443));
  EXPECT_TRUE(l.matches("::1", 443));
  // An IPv4-mapped IPv6 address is the IPv4 address it carries.
  EXPECT_TRUE(l.matches("::ffff:192.168.1.1", 443));
  // Names are never resolved to decide, and never read as addresses.
  EXPECT_FALSE(l.matches("kafka.internal", 443));
  EXPECT_FALSE(kws::no_proxy_list::parse("2.3.4").matches("1.2.3.4", 443));
}

TEST(NoProxy, APortLimitsAnEntryToThatPort) {
  const auto l = kws::no_proxy_list::parse("example.com:8443,10.0.0.1:9092,[fd00::1]:443");
  EXPECT_TRUE(l.matches("kafka.example.com", 8443));
  EXPECT_FALSE(l.matches("kafka.example.com", 443));
  EXPECT_TRUE(l.matches("10.0.0.1", 9092));
  EXPECT_FALSE(l.matches("10.0.0.1", 9093));
  EXPECT_TRUE(l.matches("fd00::1", 443));
  EXPECT_FALSE(l.matches("fd00::1", 80));
}

TEST(NoProxy, KeepsMalformedEntriesApartAndMatchesNothingWithThem) {
  const auto l = kws::no_proxy_list::parse("good.example,10.0.0.0/33,host:99999,ex ample.com,,[::1,a..b");
  EXPECT_TRUE(l.matches("good.example", 1));
  EXPECT_EQ(l.ignored(),
            (std::vector<std::string>{"10.0.0.0/33", "host:99999", "ex ample.com", "[::1", "a..b"}));
  EXPECT_TRUE(kws::no_proxy_list::parse("").empty());
  EXPECT_TRUE(kws::no_proxy_list::parse(" , ,").empty());
}

TEST(NoProxy, MinusLoopbackIsNotedNotMatched) {
  const auto l = kws::no_proxy_list::parse("<-loopback>");
  EXPECT_TRUE(l.proxies_loopback());
  EXPECT_FALSE(l.matches("localhost", 80));
  EXPECT_TRUE(l.ignored().empty());
}

TEST(Loopback, IsLocalhostAndLoopbackAddressesOnly) {
  for (const char* h : {"localhost", "LOCALHOST", "127.0.0.1", "127.10.20.30", "::1", "::ffff:127.0.0.1"})
    EXPECT_TRUE(kws::is_loopback_host(h)) << h;
  for (const char* h : {"localhost.example.com", "128.0.0.1", "::2", "0.0.0.0", "::", "10.0.0.1", "vm"})
    EXPECT_FALSE(kws::is_loopback_host(h)) << h;
}

// ---- the environment --------------------------------------------------------------------------------------

kws::env_lookup env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
}

TEST(ProxyEnvironment, ReadsTheUpperCaseNamesFirstThenTheLowerCaseOnes) {
  auto s = kws::forward_proxy_from_environment(env({{"HTTP_PROXY", "http://upper:1"},
                                                    {"http_proxy", "http://lower:1"},
                                                    {"https_proxy", "http://lower-s:1"},
                                                    {"NO_PROXY", "a.example"},
                                                    {"no_proxy", "b.example"}}));
  EXPECT_EQ(s.http_proxy, "http://upper:1");
  EXPECT_EQ(s.https_proxy, "http://lower-s:1");
  EXPECT_EQ(s.no_proxy, "a.example");
  EXPECT_TRUE(s.direct_loopback);
}

TEST(ProxyEnvironment, AnEmptyValueCountsAsUnset) {
  auto s = kws::forward_proxy_from_environment(
      env({{"HTTPS_PROXY", ""}, {"https_proxy", "http://lower:1"}, {"HTTP_PROXY", ""}, {"NO_PROXY", ""}}));
  EXPECT_EQ(s.https_proxy, "http://lower:1");
  EXPECT_EQ(s.http_proxy, "");
  EXPECT_EQ(s.no_proxy, "");
}

TEST(ProxyEnvironment, IgnoresAllProxyAsGoDoes) {
  auto s = kws::forward_proxy_from_environment(
      env({{"ALL_PROXY", "http://all:1"}, {"all_proxy", "http://all:1"}}));
  EXPECT_TRUE(s.empty());
}

// ---- which proxy for which broker -------------------------------------------------------------------------

std::string via(const kws::forward_proxy_rules& r, const std::string& address) {
  const auto* p = r.for_url(kws::parse_address(address, false));
  return p ? p->authority() : "direct";
}

kws::forward_proxy_rules compile(const kws::forward_proxy_settings& s) {
  error_code ec;
  auto r = kws::forward_proxy_rules::compile(s, ec);
  EXPECT_FALSE(ec) << ec.message();
  return r;
}

TEST(ProxyRules, HttpProxyServesWsAndHttpsProxyServesWssWithNoFallback) {
  const auto only_http = compile(kws::forward_proxy_from_environment(env({{"HTTP_PROXY", "p1:3128"}})));
  EXPECT_EQ(via(only_http, "ws://kafka.example:80/"), "p1:3128");
  EXPECT_EQ(via(only_http, "wss://kafka.example/"), "direct");
  const auto only_https = compile(kws::forward_proxy_from_environment(env({{"HTTPS_PROXY", "p2:3128"}})));
  EXPECT_EQ(via(only_https, "ws://kafka.example/"), "direct");
  EXPECT_EQ(via(only_https, "wss://kafka.example/"), "p2:3128");
}

TEST(ProxyRules, FromTheEnvironmentLoopbackGoesDirectUnlessNoProxySaysMinusLoopback) {
  const auto go = compile(kws::forward_proxy_from_environment(env({{"HTTPS_PROXY", "p:3128"}})));
  for (const char* a : {"wss://localhost:8787/", "wss://127.0.0.1:8787/", "wss://[::1]:8787/"})
    EXPECT_EQ(via(go, a), "direct") << a;
  EXPECT_EQ(via(go, "wss://kafka.example/"), "p:3128");
  const auto all = compile(
      kws::forward_proxy_from_environment(env({{"HTTPS_PROXY", "p:3128"}, {"NO_PROXY", "<-loopback>"}})));
  EXPECT_EQ(via(all, "wss://localhost:8787/"), "p:3128");
  EXPECT_EQ(via(all, "wss://127.0.0.1:8787/"), "p:3128");
}

TEST(ProxyRules, AnExplicitProxyCarriesEveryBrokerLoopbackIncluded) {
  const auto r = compile(kws::forward_proxy_settings::through("http://u:p@proxy:3128"));
  EXPECT_EQ(via(r, "ws://127.0.0.1:8787/"), "proxy:3128");
  EXPECT_EQ(via(r, "wss://localhost/"), "proxy:3128");
  EXPECT_EQ(via(r, "wss://kafka.example/"), "proxy:3128");
}

TEST(ProxyRules, NoProxyMatchesTheBrokersHostAndItsEffectivePort) {
  const auto r = compile({.http_proxy = "p:1",
                          .https_proxy = "p:1",
                          .no_proxy = "internal.example,10.0.0.0/8,edge.example:443",
                          .direct_loopback = false});
  EXPECT_EQ(via(r, "wss://kafka.internal.example/"), "direct");
  EXPECT_EQ(via(r, "ws://10.2.3.4:8787/"), "direct");
  EXPECT_EQ(via(r, "wss://edge.example/"), "direct");  // 443 from the scheme
  EXPECT_EQ(via(r, "ws://edge.example/"), "p:1");      // 80
  EXPECT_EQ(via(r, "wss://kafka.example/"), "p:1");
  EXPECT_EQ(via(r, "ws://127.0.0.1:1/"), "p:1");
}

TEST(ProxyRules, AnInvalidUrlIsReportedWithoutItsCredentials) {
  error_code ec;
  std::string what;
  kws::forward_proxy_rules::compile({.https_proxy = "https://alice:s3cret@proxy:3128"}, ec, &what);
  EXPECT_EQ(ec, kws::errc::invalid_proxy_url);
  EXPECT_NE(what.find("wss://"), std::string::npos) << what;
  EXPECT_NE(what.find("***@proxy:3128"), std::string::npos) << what;
  EXPECT_EQ(what.find("s3cret"), std::string::npos) << what;
  EXPECT_EQ(what.find("alice"), std::string::npos) << what;
}

// ---- the CONNECT exchange ---------------------------------------------------------------------------------

TEST(ConnectRequest, AsksForTheBrokersAuthorityWithHostAndCredentials) {
  EXPECT_EQ(kws::connect_request(parse_ok("http://alice:s3cret@p:3128"), "kafka.example:443", "kws/1"),
            "CONNECT kafka.example:443 HTTP/1.1\r\n"
            "Host: kafka.example:443\r\n"
            "User-Agent: kws/1\r\n"
            "Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n"
            "\r\n");
  EXPECT_EQ(kws::connect_request(parse_ok("p:3128"), "[fd00::1]:8787", ""),
            "CONNECT [fd00::1]:8787 HTTP/1.1\r\nHost: [fd00::1]:8787\r\n\r\n");
  // A User-Agent from the configuration cannot add header lines.
  EXPECT_EQ(kws::connect_request(parse_ok("p:3128"), "k:1", "a\r\nX-Evil: 1"),
            "CONNECT k:1 HTTP/1.1\r\nHost: k:1\r\nUser-Agent: a??X-Evil: 1\r\n\r\n");
}

TEST(ConnectRequest, StatusesMapToTypedErrors) {
  EXPECT_FALSE(kws::connect_status_error(200));
  EXPECT_FALSE(kws::connect_status_error(204));
  EXPECT_EQ(kws::connect_status_error(407), kws::errc::proxy_auth_required);
  // tinyproxy's answer to wrong credentials.
  EXPECT_EQ(kws::connect_status_error(401), kws::errc::proxy_auth_required);
  for (unsigned s : {100u, 301u, 400u, 403u, 500u, 502u, 503u})
    EXPECT_EQ(kws::connect_status_error(s), kws::errc::proxy_refused) << s;
}

TEST(Printable, KeepsPrintableAsciiAndBoundsTheLength) {
  EXPECT_EQ(kws::printable("Forbidden"), "Forbidden");
  EXPECT_EQ(kws::printable("a\x1b[31mb\n"), "a?[31mb?");
  EXPECT_EQ(kws::printable(std::string(500, 'x')).size(), 120u);
}

}  // namespace
