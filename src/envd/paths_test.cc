#include "envd/paths.h"

#include <gtest/gtest.h>

namespace coppice::envd {
namespace {

using namespace std::string_literals;

constexpr std::string_view kRootHome = "/root";
constexpr std::string_view kUserHome = "/home/user";
constexpr std::string_view kWorkdir = "/srv/work";

std::string resolved(std::string_view path, std::string_view home, std::string_view workdir = kWorkdir) {
  auto r = resolve_user_path(path, home, workdir);
  EXPECT_TRUE(r.has_value()) << "path '" << path << "': " << (r ? "" : r.error().to_string());
  return r.value_or("<error>");
}

// A relative path is under the requesting user's home, whatever the default
// workdir: E2B's envd joins it to the user's HOME.
TEST(ResolveUserPath, RelativeIsUnderTheUsersOwnHome) {
  EXPECT_EQ(resolved("rel.txt", kRootHome), "/root/rel.txt");
  EXPECT_EQ(resolved("rel.txt", kUserHome), "/home/user/rel.txt");
  EXPECT_EQ(resolved("a/b/../c", kUserHome), "/home/user/a/c");
  EXPECT_EQ(resolved("./x", kRootHome), "/root/x");
  EXPECT_EQ(resolved("..", kUserHome), "/home");
}

TEST(ResolveUserPath, EmptyIsTheDefaultWorkdirElseTheHome) {
  EXPECT_EQ(resolved("", kRootHome), "/srv/work");
  EXPECT_EQ(resolved("", kUserHome), "/srv/work");
  EXPECT_EQ(resolved("", kRootHome, ""), "/root");
  EXPECT_EQ(resolved("", kUserHome, ""), "/home/user");
  // The workdir follows the same rules: "~" or relative means each user's home.
  EXPECT_EQ(resolved("", kRootHome, "~"), "/root");
  EXPECT_EQ(resolved("", kUserHome, "~/proj"), "/home/user/proj");
  EXPECT_EQ(resolved("", kUserHome, "proj"), "/home/user/proj");
  EXPECT_EQ(resolved("", kUserHome, "/srv/work/"), "/srv/work");
}

TEST(ResolveUserPath, TildeIsTheRequestingUsersHome) {
  EXPECT_EQ(resolved("~", kRootHome), "/root");
  EXPECT_EQ(resolved("~/", kUserHome), "/home/user");
  EXPECT_EQ(resolved("~/a/./b", kUserHome), "/home/user/a/b");
  EXPECT_EQ(resolved("~/../../etc", kUserHome), "/etc");
}

TEST(ResolveUserPath, AbsoluteIsItselfCleaned) {
  EXPECT_EQ(resolved("/etc/passwd", kUserHome), "/etc/passwd");
  EXPECT_EQ(resolved("//tmp///x/", kUserHome), "/tmp/x");
  EXPECT_EQ(resolved("/../..", kRootHome), "/");
  EXPECT_EQ(resolved("/a/~/b", kRootHome), "/a/~/b");
}

TEST(ResolveUserPath, AnotherUsersHomeIsRefused) {
  for (std::string_view p : {"~user", "~root/x", "~x~"}) {
    auto r = resolve_user_path(p, kUserHome, kWorkdir);
    ASSERT_FALSE(r.has_value()) << p;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  }
  // Only a leading "~" is special.
  EXPECT_EQ(resolved("a~user", kUserHome), "/home/user/a~user");
}

TEST(ResolveUserPath, NulByteIsRefusedNotCut) {
  for (std::string p : {"/etc/passwd\0.txt"s, "rel\0"s, "\0"s, "~/\0/x"s}) {
    auto r = resolve_user_path(p, kUserHome, kWorkdir);
    ASSERT_FALSE(r.has_value()) << "path of " << p.size() << " bytes";
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message().find("NUL"), std::string::npos) << r.error().message();
  }
  auto w = resolve_user_path("", kUserHome, "/srv\0/work"s);
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().code(), ErrorCode::kInvalidArgument);
}

TEST(CheckNoNul, NamesTheField) {
  EXPECT_TRUE(check_no_nul("/bin/bash", "process.cmd").has_value());
  EXPECT_TRUE(check_no_nul("", "process.cmd").has_value());
  auto r = check_no_nul("/bin/sh\0-c"s, "process.cmd");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(r.error().message(), "process.cmd contains a NUL byte");
}

TEST(CleanPath, CollapsesDotsAndSlashes) {
  EXPECT_EQ(clean_path(""), "/");
  EXPECT_EQ(clean_path("/"), "/");
  EXPECT_EQ(clean_path("/a//b/./c/.."), "/a/b");
  EXPECT_EQ(clean_path("a/b"), "/a/b");
  EXPECT_EQ(clean_path("/../x"), "/x");
}

}  // namespace
}  // namespace coppice::envd
