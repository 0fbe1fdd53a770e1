#include "builder/rootless.h"

#include <gtest/gtest.h>

namespace coppice::builder {
namespace {

TEST(Rootless, FindsTheUsersRangeByNameOrUid) {
  const std::string text =
      "# comment\n"
      "alice:100000:65536\n"
      "broken line\n"
      "bob:x:10\n"
      "1001:300000:1000\n"
      "bob:200000:65536\n";
  auto a = find_subid_range(text, "alice", 1000);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->start, 100000u);
  EXPECT_EQ(a->count, 65536u);
  auto b = find_subid_range(text, "bob", 1002);  // its first line is malformed: the next one counts
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->start, 200000u);
  auto c = find_subid_range(text, "carol", 1001);  // by uid
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->start, 300000u);
  EXPECT_EQ(c->count, 1000u);
  EXPECT_FALSE(find_subid_range(text, "dave", 1003).has_value());
  EXPECT_FALSE(find_subid_range("eve:4294967000:65536\n", "eve", 1).has_value());  // past 2^32
  EXPECT_FALSE(find_subid_range("eve:100000:0\n", "eve", 1).has_value());
}

TEST(Rootless, MapsIdsBothWays) {
  const SubIdRange r{100000, 65536};
  EXPECT_EQ(host_id(0, 1234, r, 65536), 1234u);
  EXPECT_EQ(host_id(1, 1234, r, 65536), 100000u);
  EXPECT_EQ(host_id(1000, 1234, r, 65536), 100999u);
  EXPECT_EQ(host_id(65536, 1234, r, 65536), 165535u);
  EXPECT_FALSE(host_id(65537, 1234, r, 65536).has_value());
  EXPECT_EQ(inside_id(1234, 1234, r, 65536), 0u);
  EXPECT_EQ(inside_id(100999, 1234, r, 65536), 1000u);
  EXPECT_EQ(inside_id(165535, 1234, r, 65536), 65536u);
  EXPECT_FALSE(inside_id(165536, 1234, r, 65536).has_value());
  EXPECT_FALSE(inside_id(99999, 1234, r, 65536).has_value());
  EXPECT_FALSE(inside_id(0, 1234, r, 65536).has_value());  // host root is never the build's
  for (uint32_t i = 0; i <= 65536; i += 97) EXPECT_EQ(inside_id(*host_id(i, 1234, r, 65536), 1234, r, 65536), i);
}

}  // namespace
}  // namespace coppice::builder
