#include "sandbox/ns/disk_quota.h"

#include <gtest/gtest.h>

namespace coppice::sandbox::ns {
namespace {

TEST(ParseSize, SuffixesArePowersOf1024) {
  EXPECT_EQ(parse_size("1048576").value(), 1048576u);
  EXPECT_EQ(parse_size("512M").value(), 512ull << 20);
  EXPECT_EQ(parse_size("20G").value(), 20ull << 30);
  EXPECT_EQ(parse_size("2t").value(), 2ull << 40);
  EXPECT_EQ(parse_size("4k").value(), 4096u);
}

TEST(ParseSize, RefusesAnythingElse) {
  for (const char* bad : {"", "M", "12MB", "-1", "1.5G", " 1G", "99999999999999999999", "1P"}) {
    auto r = parse_size(bad);
    EXPECT_FALSE(r.has_value()) << bad;
    if (!r) {
      EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    }
  }
  EXPECT_FALSE(parse_size("16777216T").has_value());  // overflows 64 bits
}

}  // namespace
}  // namespace coppice::sandbox::ns
