// The gateway's access decisions and path routing, with no I/O.
#include "access.hpp"
#include "test_env.hpp"

#include <gtest/gtest.h>

namespace {

using kws::gateway::origin_allowed;
using kws::gateway::parse_route;
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

}  // namespace
