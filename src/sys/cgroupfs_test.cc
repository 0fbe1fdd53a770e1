#include "sys/cgroupfs.h"

#include <gtest/gtest.h>

namespace coppice::sys::cgroupfs {
namespace {

TEST(Cgroupfs, ParsesHybridLayout) {
  const char* text =
      "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
      "31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct\n"
      "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
      "38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
      "39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n"
      "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
      "41 30 0:31 /sub /mnt/x rw,relatime - cgroup cgroup rw,freezer\n";
  Mounts m = parse_mountinfo(text);
  EXPECT_EQ(m.v2, "/sys/fs/cgroup/unified");
  EXPECT_EQ(m.v1["cpu"], "/sys/fs/cgroup/cpu,cpuacct");
  EXPECT_EQ(m.v1["cpuacct"], "/sys/fs/cgroup/cpu,cpuacct");
  EXPECT_EQ(m.v1["memory"], "/sys/fs/cgroup/memory");
  EXPECT_EQ(m.v1["pids"], "/sys/fs/cgroup/pids");
  EXPECT_FALSE(m.v1.contains("xattr"));
  EXPECT_FALSE(m.v1.contains("name=systemd"));
  EXPECT_FALSE(m.v1.contains("freezer"));  // only a bind of a sub-cgroup
}

TEST(Cgroupfs, ParsesPureV2) {
  Mounts m = parse_mountinfo("26 21 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n");
  EXPECT_EQ(m.v2, "/sys/fs/cgroup");
  EXPECT_TRUE(m.v1.empty());
}

}  // namespace
}  // namespace coppice::sys::cgroupfs
