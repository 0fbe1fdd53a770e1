#include "sandbox/ns/trash.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <fstream>

#include "sandbox/ns/rootfs.h"
#include "sys/fsutil.h"
#include "sys/tree_test_util.h"

namespace coppice::sandbox::ns {
namespace {

using test_util::make_chain;
using test_util::make_files;
using test_util::Scratch;

bool empty_dir(const std::string& dir) {
  auto names = sys::list_dir(dir);
  return names && names->empty();
}

TEST(Trash, LivesBesideTheStateDirs) {
  EXPECT_EQ(trash_dir_for("/var/lib/coppice/sandboxes/abc"), "/var/lib/coppice/sandboxes/.trash");
  EXPECT_EQ(trash_dir_for("/var/lib/coppice/sandboxes/abc/"), "/var/lib/coppice/sandboxes/.trash");
  EXPECT_EQ(trash_dir_for("/abc"), "/.trash");
}

TEST(Trash, AStateDirGoesAsideAtOnceAndTheReaperEmptiesIt) {
  Scratch s;
  const std::string state = s / "sandboxes/sbx1";
  ASSERT_TRUE(sys::make_dirs(state + "/upper/wide", 0755));
  make_chain(state + "/upper", 5000);
  make_files(state + "/upper/wide", 5000);
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(move_to_trash(state));
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_FALSE(sys::path_exists(state));
  const std::string trash = s / "sandboxes/.trash";
  EXPECT_EQ(trash_dir_for(state), trash);
  ASSERT_TRUE(wait_trash_idle(trash, std::chrono::seconds(120)));
  EXPECT_TRUE(empty_dir(trash));
  std::printf("[ figures  ] state dir with a 5,000-deep chain and 5,000 files moved aside in %lld us\n",
              static_cast<long long>(us));
  // Gone already: nothing to do.
  EXPECT_TRUE(move_to_trash(state));
}

TEST(Trash, LeftoversOfAnEarlierProcessAreEmptiedOnceTheReaperStarts) {
  Scratch s;
  const std::string trash = s / "sandboxes/.trash";
  ASSERT_TRUE(sys::make_dirs(trash + "/old.1-0/upper", 0700));
  make_chain(trash + "/old.1-0/upper", 3000);
  std::ofstream(trash + "/old.1-1") << "a file left there";
  start_trash_reaper(s / "sandboxes/next");
  ASSERT_TRUE(wait_trash_idle(trash, std::chrono::seconds(60)));
  EXPECT_TRUE(empty_dir(trash));
}

TEST(UpperDiskBytes, BoundedAndCached) {
  Scratch s;
  const std::string state = s / "state";
  ASSERT_TRUE(sys::make_dirs(state + "/upper", 0755));
  std::ofstream(state + "/upper/a") << std::string(64 * 1024, 'x');
  auto first = upper_disk_bytes(state);
  ASSERT_TRUE(first);
  EXPECT_GE(*first, 64u * 1024);
  // Within the cache's lifetime the figure stands.
  std::ofstream(state + "/upper/b") << std::string(1 << 20, 'y');
  auto second = upper_disk_bytes(state);
  ASSERT_TRUE(second);
  EXPECT_EQ(*second, *first);

  // A tree too big for the budget costs the budget, not the tree.
  const std::string deep = s / "deep";
  ASSERT_TRUE(sys::make_dirs(deep + "/upper", 0755));
  make_chain(deep + "/upper", 5000);
  auto t0 = std::chrono::steady_clock::now();
  auto bounded = upper_disk_bytes(deep);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(bounded);
  EXPECT_GT(*bounded, 0u);
  EXPECT_LT(ms, 1000) << "a bounded walk took " << ms << " ms";

  EXPECT_FALSE(upper_disk_bytes(s / "missing"));
}

}  // namespace
}  // namespace coppice::sandbox::ns
