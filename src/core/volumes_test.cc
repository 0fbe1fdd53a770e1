#include "core/volumes.h"

#include <gtest/gtest.h>

namespace coppice::core {
namespace {

TEST(VolumeMountPath, AbsoluteCleanAndNotOverTheSandboxsOwnFileSystems) {
  EXPECT_EQ(*clean_mount_path("/data"), "/data");
  EXPECT_EQ(*clean_mount_path("//home//user/vol/"), "/home/user/vol");
  EXPECT_EQ(*clean_mount_path("/procs/x"), "/procs/x") << "only the component /proc itself";
  EXPECT_EQ(*clean_mount_path("/mnt/proc"), "/mnt/proc");
  for (const char* bad : {"", "data", "/", "//", "/proc", "/proc/x", "/sys/fs", "/dev", "/dev/shm/v", "/.coppice",
                          "/.coppice/run", "/a/../b", "/..", "/a/.", "/a\tb"}) {
    auto r = clean_mount_path(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message().find("volume mount path"), std::string::npos);
  }
  EXPECT_FALSE(clean_mount_path("/" + std::string(1100, 'x')));
}

}  // namespace
}  // namespace coppice::core
