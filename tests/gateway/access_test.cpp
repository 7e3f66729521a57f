// The gateway's access decisions and path routing, with no I/O.
#include "access.hpp"
#include "test_env.hpp"

#include <gtest/gtest.h>

namespace {

using kws::gateway::host_pattern;
using kws::gateway::origin_allowed;
using kws::gateway::parse_route;
using kws::gateway::parse_subprotocols;
using kws::gateway::route_request;
using kws::gateway::token_set;

TEST(GatewayAccess, BearerTokensFromAFileAreCheckedWholeAndExactly) {
  kws::test::temp_dir dir("kws-tokens");
  kws::test::write_file(dir / "tokens", "  first-token \n\nsecond-token\n");
  const auto tokens = token_set::from_file(dir / "tokens");
  EXPECT_TRUE(tokens.allows("Bearer first-token"));
  EXPECT_TRUE(tokens.allows("bearer second-token"));
  EXPECT_TRUE(tokens.allows("Bearer  second-token "));
  for (const char* bad :
       {"Bearer first-toke", "Bearer first-token2", "Bearer ", "Basic first-token", "first-token", ""})
    EXPECT_FALSE(tokens.allows(bad)) << bad;
  kws::test::write_file(dir / "empty", "\n  \n");
  EXPECT_THROW(token_set::from_file(dir / "empty"), std::runtime_error);
  EXPECT_THROW(token_set::from_file(dir / "missing"), std::runtime_error);
}

TEST(GatewayAccess, ABearerSubprotocolCarriesATokenInBase64url) {
  using headers = std::vector<std::pair<std::string, std::string>>;
  const token_set tokens({"s3cr?t>token"});
  // "czNjcj90PnRva2Vu" is "s3cr?t>token"; "-_-_Pw" has the two characters where base64url differs from
  // base64.
  const token_set odd({"\xfb\xff\xbf?"});
  const auto offer =
      parse_subprotocols({{"host", "x"}, {"sec-websocket-protocol", "kafka, bearer.czNjcj90PnRva2Vu"}});
  EXPECT_TRUE(offer.error.empty()) << offer.error;
  EXPECT_TRUE(offer.kafka);
  ASSERT_TRUE(offer.bearer);
  EXPECT_TRUE(tokens.allows_token(*offer.bearer));
  const auto split =
      parse_subprotocols({{"sec-websocket-protocol", "bearer.-_-_Pw"}, {"sec-websocket-protocol", "kafka"}});
  ASSERT_TRUE(split.bearer) << split.error;
  EXPECT_TRUE(odd.allows_token(*split.bearer));
  EXPECT_FALSE(tokens.allows_token(*split.bearer));
  EXPECT_FALSE(tokens.allows_token("s3cr?t>toke"));

  const auto plain = parse_subprotocols(headers{{"sec-websocket-protocol", "kafka"}});
  EXPECT_TRUE(plain.kafka);
  EXPECT_FALSE(plain.bearer);
  EXPECT_TRUE(plain.error.empty());
  const auto none = parse_subprotocols(headers{});
  EXPECT_FALSE(none.kafka);
  EXPECT_TRUE(none.error.empty());

  for (const char* bad :
       {"kafka, bearer.czNjcj90PnRva2Vu, bearer.czNjcj90PnRva2Vu", "bearer.czNjcj90PnRva2Vu",
        "kafka, bearer.", "kafka, bearer.c", "kafka, bearer.czNj=", "kafka, bearer.cz+j"}) {
    const auto o = parse_subprotocols(headers{{"sec-websocket-protocol", bad}});
    EXPECT_FALSE(o.error.empty()) << bad;
    EXPECT_EQ(o.error.find("czNj"), std::string::npos) << "the token is never quoted: " << o.error;
  }
}

TEST(GatewayAccess, OriginsLimitBrowsersOnly) {
  const std::vector<std::string> allowed{"https://app.example.com"};
  const std::string good = "https://APP.example.com", bad = "https://evil.example.com";
  EXPECT_TRUE(origin_allowed(allowed, &good));
  EXPECT_FALSE(origin_allowed(allowed, &bad));
  EXPECT_TRUE(origin_allowed(allowed, nullptr)) << "no Origin: not a browser";
  EXPECT_TRUE(origin_allowed({}, &bad)) << "no list: any origin";
}

TEST(GatewayAccess, PathsLeadToBootstrapOrANodeId) {
  for (const char* boot : {"/", "/kafka", "/kafka/", "/kafka?tenant=a"}) {
    const auto r = parse_route(boot);
    ASSERT_TRUE(r) << boot;
    EXPECT_TRUE(r->bootstrap) << boot;
  }
  const auto r = parse_route("/kafka/12?x=y");
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->bootstrap);
  EXPECT_EQ(r->node_id, 12);
  for (const char* bad : {"/kafka/-1", "/kafka/x", "/kafka/1/2", "/other", "/kafka/99999999999", ""})
    EXPECT_FALSE(parse_route(bad)) << bad;
}

TEST(GatewayAccess, AHostPatternNamesANodeIdByTheWholeName) {
  const host_pattern names("kafka-{node_id}.gw.example.com");
  EXPECT_EQ(names.node_of("kafka-0.gw.example.com"), 0);
  EXPECT_EQ(names.node_of("KAFKA-12.GW.example.com"), 12);
  for (const char* other : {"kafka-.gw.example.com", "kafka-01.gw.example.com", "kafka--1.gw.example.com",
                            "kafka-1.gw.example.co", "kafka-1.gw.example.com.evil", "kafka-1x.gw.example.com",
                            "kafka-99999999999.gw.example.com", "gw.example.com", "", "kafka-"})
    EXPECT_FALSE(names.node_of(other)) << other;
  const host_pattern twice("b{node_id}.n{node_id}.example");
  EXPECT_EQ(twice.node_of("b3.n3.example"), 3);
  EXPECT_FALSE(twice.node_of("b3.n4.example"));
  EXPECT_TRUE(host_pattern("gw.example.com").empty()) << "no {node_id}: no names";
  EXPECT_FALSE(host_pattern("gw.example.com").node_of("gw.example.com"));
  EXPECT_EQ(kws::gateway::host_without_port("kafka-1.gw:443"), "kafka-1.gw");
  EXPECT_EQ(kws::gateway::host_without_port("[::1]:443"), "[::1]");
  EXPECT_EQ(kws::gateway::host_without_port("kafka-1.gw"), "kafka-1.gw");
}

TEST(GatewayAccess, HostAndServerNamePickANodeAndMustAgreeWithEachOtherAndThePath) {
  const host_pattern names("kafka-{node_id}.gw");
  const std::string two = "kafka-2.gw:443", one = "kafka-1.gw", bare = "gw:443";
  const auto node = [&](std::string_view target, const std::string* host, std::string_view sni) {
    const auto r = route_request(names, target, host, sni);
    return r.to ? (r.to->bootstrap ? -1 : r.to->node_id) : -100 - r.status;
  };
  EXPECT_EQ(node("/", &two, ""), 2);
  EXPECT_EQ(node("/kafka", &two, "kafka-2.gw"), 2);
  EXPECT_EQ(node("/kafka/2", &two, ""), 2);
  EXPECT_EQ(node("/", &bare, ""), -1) << "a name that is not the pattern's: the path";
  EXPECT_EQ(node("/kafka/1", &bare, "gw"), 1);
  EXPECT_EQ(node("/", nullptr, ""), -1);
  EXPECT_EQ(node("/", &two, "kafka-1.gw"), -521) << "SNI and Host disagree";
  EXPECT_EQ(node("/", &two, "gw"), -521) << "SNI names no broker, Host does";
  EXPECT_EQ(node("/", &bare, "kafka-2.gw"), -521) << "SNI names a broker, Host does not";
  EXPECT_EQ(node("/kafka/1", &two, ""), -521) << "path and Host disagree";
  EXPECT_EQ(node("/other", &two, ""), -504);
  EXPECT_EQ(route_request(host_pattern(), "/", &one, "kafka-2.gw").to->bootstrap, true)
      << "without a pattern names are not read";
}

}  // namespace
