#include "net/addr.h"

#include <gtest/gtest.h>

namespace coppice::net {
namespace {

TEST(Addr, ParsesAddressesAndCidrs) {
  auto a = parse_cidr4("1.2.3.4");
  ASSERT_TRUE(a) << a.error().to_string();
  EXPECT_EQ(a->addr, 0x01020304u);
  EXPECT_EQ(a->prefix, 32);

  auto b = parse_cidr4("10.0.0.0/8");
  ASSERT_TRUE(b);
  EXPECT_EQ(*b, (Cidr4{0x0a000000u, 8}));

  auto all = parse_cidr4("0.0.0.0/0");
  ASSERT_TRUE(all);
  EXPECT_EQ(*all, (Cidr4{0, 0}));

  auto top = parse_cidr4("255.255.255.255/32");
  ASSERT_TRUE(top);
  EXPECT_EQ(top->addr, 0xffffffffu);
}

TEST(Addr, MasksHostBits) {
  auto c = parse_cidr4("10.1.2.3/8");
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, (Cidr4{0x0a000000u, 8}));
  EXPECT_EQ(to_string(*c), "10.0.0.0/8");
  auto z = parse_cidr4("192.168.77.9/0");
  ASSERT_TRUE(z);
  EXPECT_EQ(*z, (Cidr4{0, 0}));
}

TEST(Addr, RejectsMalformedEntriesNamingThem) {
  for (const char* bad : {"", "1.2.3", "1.2.3.4.5", "256.0.0.1", "1.2.3.4/33", "1.2.3.4/", "/8",
                          "01.2.3.4", "1.2.3.4/08", " 1.2.3.4", "1.2.3.4 ", "1..3.4", "a.b.c.d",
                          "1.2.3.-4", "1.2.3.4/-1", "::1", "1.2.3.4/8/8", "1.2.3.4\n"}) {
    auto r = parse_cidr4(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument) << bad;
  }
  auto r = parse_cidr4("300.1.1.1/8");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("\"300.1.1.1/8\""), std::string::npos) << r.error().message();
  auto ctl = parse_cidr4("1.2.3.4\x01");
  ASSERT_FALSE(ctl);
  EXPECT_EQ(ctl.error().message().find('\x01'), std::string::npos);
}

TEST(Addr, FormatsAndContains) {
  EXPECT_EQ(ipv4_to_string(0), "0.0.0.0");
  EXPECT_EQ(ipv4_to_string(0xc0a80a01u), "192.168.10.1");
  EXPECT_EQ(to_string(Cidr4{0xac100000u, 12}), "172.16.0.0/12");
  EXPECT_EQ(to_string(Cidr4{0x01020304u, 32}), "1.2.3.4/32");

  Cidr4 lan{0xc0a80000u, 16};
  EXPECT_TRUE(contains(lan, 0xc0a80000u));
  EXPECT_TRUE(contains(lan, 0xc0a8ffffu));
  EXPECT_FALSE(contains(lan, 0xc0a90000u));
  EXPECT_FALSE(contains(lan, 0xc0a7ffffu));
  EXPECT_TRUE(contains(Cidr4{0, 0}, 0xffffffffu));
  EXPECT_TRUE(contains(Cidr4{0x01020304u, 32}, 0x01020304u));
  EXPECT_FALSE(contains(Cidr4{0x01020304u, 32}, 0x01020305u));
  EXPECT_EQ(first_address(lan), 0xc0a80000u);
  EXPECT_EQ(last_address(lan), 0xc0a8ffffu);
  EXPECT_EQ(last_address(Cidr4{0, 0}), 0xffffffffu);
}

}  // namespace
}  // namespace coppice::net
