#include "net/policy.h"

#include <gtest/gtest.h>

namespace coppice::net {
namespace {

using nlohmann::json;

TEST(Addr, ParsesAddressesAndBlocks) {
  EXPECT_EQ(*parse_ipv4("10.213.0.1"), 0x0AD50001u);
  EXPECT_EQ(*parse_ipv4("0.0.0.0"), 0u);
  EXPECT_EQ(*parse_ipv4("255.255.255.255"), 0xFFFFFFFFu);
  for (const char* bad : {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.4 ", "a.b.c.d", "1..2.3", "-1.2.3.4"}) {
    EXPECT_FALSE(parse_ipv4(bad)) << bad;
  }
  auto c = parse_cidr4("10.1.2.3/8");
  ASSERT_TRUE(c);
  EXPECT_EQ(to_string(*c), "10.0.0.0/8");
  EXPECT_EQ(to_string(*parse_cidr4("8.8.8.8")), "8.8.8.8/32");
  EXPECT_EQ(to_string(*parse_cidr4("0.0.0.0/0")), "0.0.0.0/0");
  for (const char* bad : {"10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/08", "10.0.0.0/8/8", "1.2.3/24"}) {
    auto r = parse_cidr4(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().message().find(bad), std::string::npos) << r.error().message();
  }
  EXPECT_TRUE(parse_cidr4("10.0.0.0/8")->contains(*parse_ipv4("10.255.1.1")));
  EXPECT_FALSE(parse_cidr4("10.0.0.0/8")->contains(*parse_ipv4("11.0.0.1")));
  EXPECT_TRUE(parse_cidr4("0.0.0.0/0")->covers(*parse_cidr4("10.0.0.0/8")));
  EXPECT_TRUE(parse_cidr4("10.0.0.0/8")->overlaps(*parse_cidr4("10.213.0.0/16")));
  EXPECT_FALSE(parse_cidr4("10.0.0.0/8")->overlaps(*parse_cidr4("11.0.0.0/16")));
}

TEST(Policy, AllowEntries) {
  EXPECT_EQ(to_string(*parse_allow_entry("1.2.3.4")->cidr), "1.2.3.4/32");
  EXPECT_EQ(parse_allow_entry("API.Example.com.")->domain, "api.example.com");
  EXPECT_EQ(parse_allow_entry("*.example.com")->domain, "*.example.com");
  EXPECT_EQ(parse_allow_entry("*.com")->domain, "*.com");
  for (const char* bad : {"", "*", "exa mple.com", "1.2.3.4:80", "::1", "-bad.com", "a..b", "*.", "**.x.com", "x.*.com",
                          "1.2.3", "10.0.0.0/33", "a/b"}) {
    auto r = parse_allow_entry(bad);
    EXPECT_FALSE(r) << bad;
  }
  auto r = parse_allow_entry("exa mple.com");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("\"exa mple.com\""), std::string::npos) << r.error().message();
}

TEST(Policy, DomainMatching) {
  EXPECT_TRUE(domain_matches("example.com", "example.com"));
  EXPECT_FALSE(domain_matches("example.com", "www.example.com"));
  EXPECT_TRUE(domain_matches("*.example.com", "www.example.com"));
  EXPECT_TRUE(domain_matches("*.example.com", "a.b.example.com"));
  EXPECT_FALSE(domain_matches("*.example.com", "example.com"));
  EXPECT_FALSE(domain_matches("*.example.com", "badexample.com"));
}

TEST(Policy, CreateDefaultsAndE2bSemantics) {
  auto c = parse_create(nullptr, nullptr);
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->internet);
  EXPECT_TRUE(c->allow_public_traffic);
  auto p = compile(*c);
  EXPECT_FALSE(p.offline);
  EXPECT_FALSE(p.default_deny);

  json f = false;
  c = parse_create(nullptr, &f);
  ASSERT_TRUE(c);
  p = compile(*c);
  EXPECT_TRUE(p.offline) << "no internet and no allowOut: nothing leaves, DNS included";

  json n = {{"allowOut", {"api.example.com", "1.2.3.4"}}};
  c = parse_create(&n, &f);
  ASSERT_TRUE(c);
  p = compile(*c);
  EXPECT_FALSE(p.offline) << "E2B: allow_internet_access false is denyOut 0.0.0.0/0; allowOut still wins";
  EXPECT_TRUE(p.default_deny);
  ASSERT_EQ(p.allow.size(), 1u);
  EXPECT_EQ(p.domains, std::vector<std::string>{"api.example.com"});

  n = {{"denyOut", {"0.0.0.0/0"}}, {"allowOut", {"*.example.com"}}};
  c = parse_create(&n, nullptr);
  ASSERT_TRUE(c);
  p = compile(*c);
  EXPECT_TRUE(p.default_deny);
  EXPECT_FALSE(p.offline);
}

TEST(Policy, CreateRefusesWhatItCannotHonour) {
  for (const char* field : {"egressProxy", "rules"}) {
    json n = {{field, json::object({{"x", 1}})}};
    auto c = parse_create(&n, nullptr);
    ASSERT_FALSE(c) << field;
    EXPECT_NE(c.error().message().find(field), std::string::npos);
    EXPECT_NE(c.error().message().find("not supported"), std::string::npos);
  }
  json n = {{"bogus", 1}};
  EXPECT_FALSE(parse_create(&n, nullptr));
  n = {{"denyOut", {"example.com"}}};
  auto c = parse_create(&n, nullptr);
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message().find("example.com"), std::string::npos);
  json many = json::array();
  for (int i = 0; i < 10000; ++i) many.push_back("1.2.3.4");
  n = {{"allowOut", many}};
  c = parse_create(&n, nullptr);
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message().find("10000"), std::string::npos);
  n = {{"allowOut", {"ok.com", "bad host.com"}}};
  c = parse_create(&n, nullptr);
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message().find("bad host.com"), std::string::npos);
  json s = "yes";
  EXPECT_FALSE(parse_create(nullptr, &s));
  n = {{"maskRequestHost", "evil\r\nX: y"}};
  EXPECT_FALSE(parse_create(&n, nullptr));
  n = {{"maskRequestHost", "localhost:${PORT}"}};
  EXPECT_TRUE(parse_create(&n, nullptr));
  n = {{"maxEgressMbps", 0}};
  EXPECT_FALSE(parse_create(&n, nullptr));
  n = {{"maxEgressMbps", 8}};
  EXPECT_EQ(parse_create(&n, nullptr)->egress_limit_bps, 1000000u);
}

TEST(Policy, UpdateReplacesRulesAndKeepsInbound) {
  json n = {{"allowOut", {"1.1.1.1"}}, {"denyOut", {"0.0.0.0/0"}}, {"allowPublicTraffic", false}};
  auto c = parse_create(&n, nullptr);
  ASSERT_TRUE(c);
  auto u = parse_update(*c, json{{"denyOut", {"8.8.8.8"}}});
  ASSERT_TRUE(u);
  EXPECT_TRUE(u->allow_out.empty()) << "omitted fields are cleared";
  EXPECT_EQ(u->deny_out, std::vector<std::string>{"8.8.8.8"}) << "as given";
  EXPECT_FALSE(u->allow_public_traffic);
  u = parse_update(*c, json{{"allow_internet_access", false}});
  ASSERT_TRUE(u);
  EXPECT_TRUE(compile(*u).offline);
  EXPECT_FALSE(parse_update(*c, json{{"rules", json::object({{"a.com", json::array()}})}}));
  EXPECT_FALSE(parse_update(*c, json{{"allowPublicTraffic", true}}));
  EXPECT_FALSE(parse_update(*c, json::array()));
}

TEST(Policy, StoreRoundTripAndE2bShape) {
  json n = {{"allowOut", {"a.com", "10.0.0.0/8"}}, {"denyOut", {"0.0.0.0/0"}}, {"maskRequestHost", "x:${PORT}"},
            {"maxEgressMbps", 80}};
  json f = false;
  auto c = parse_create(&n, &f);
  ASSERT_TRUE(c);
  auto back = from_store_json(to_store_json(*c));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, *c);
  json e = to_e2b_json(*c);
  EXPECT_EQ(e["allowOut"], json({"a.com", "10.0.0.0/8"}));
  EXPECT_EQ(e["denyOut"], json({"0.0.0.0/0"}));
  EXPECT_EQ(e["allowPublicTraffic"], true);
  EXPECT_EQ(e["maskRequestHost"], "x:${PORT}");
}

}  // namespace
}  // namespace coppice::net
