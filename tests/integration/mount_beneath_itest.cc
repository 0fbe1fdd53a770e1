// sys::mnt::attach_beneath and open_mount_beneath against the real kernel,
// in a private mount namespace of a forked child: a mount lands on the
// directory walked to, missing directories are made owned like their
// parents, and a symlink or another mount on the way is refused (ELOOP,
// EXDEV) without anything being made where it points. Needs root; skips
// visibly otherwise.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "common/test_temp_dir.h"
#include "sys/linux_syscalls.h"
#include "sys/mount_ops.h"

namespace coppice::sys {
namespace {

namespace fs = std::filesystem;

// Runs `body` in a forked child inside a private mount namespace; its exit
// status is 0 when every check passed (a failed one names its line on stderr).
template <typename F>
int in_private_mount_ns(F body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) _exit(250);
    _exit(body());
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}

#define CHECK_OR_EXIT(cond)                                                   \
  do {                                                                        \
    if (!(cond)) {                                                            \
      std::fprintf(stderr, "check failed at line %d: %s\n", __LINE__, #cond); \
      return 1;                                                               \
    }                                                                         \
  } while (0)

TEST(MountBeneath, AttachesOnTheWalkedDirectoryAndRefusesSymlinksAndMounts) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (mount namespaces)";
  test_util::TempDir tmp("coppice-beneath-itest");
  const std::string root = (tmp.path() / "root").string();
  const std::string src = (tmp.path() / "volume").string();
  const std::string outside = (tmp.path() / "outside").string();
  fs::create_directories(root + "/home/user");
  fs::create_directories(src);
  ASSERT_EQ(::chown((root + "/home/user").c_str(), 1000, 1000), 0);
  { std::FILE* f = std::fopen((src + "/marker").c_str(), "w"); ASSERT_TRUE(f); std::fclose(f); }
  fs::create_symlink(outside, root + "/home/user/link");
  fs::create_symlink("/", root + "/home/user/up");
  fs::create_directories(root + "/mnt/other");

  int rc = in_private_mount_ns([&]() -> int {
    int rootfd = ::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    CHECK_OR_EXIT(rootfd >= 0);
    // Another mount below the root: the walk does not enter it.
    CHECK_OR_EXIT(::mount("tmpfs", (root + "/mnt/other").c_str(), "tmpfs", 0, "size=64k") == 0);
    auto tree = [&] { return raw::open_tree(AT_FDCWD, src.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC); };
    int t = tree();
    CHECK_OR_EXIT(t >= 0);
    CHECK_OR_EXIT(mnt::attach_beneath(t, rootfd, "/home/user/link", 0755) == ELOOP);
    CHECK_OR_EXIT(mnt::attach_beneath(t, rootfd, "/home/user/link/deeper", 0755) == ELOOP);
    CHECK_OR_EXIT(mnt::attach_beneath(t, rootfd, "/home/user/up/tmp", 0755) == ELOOP);
    CHECK_OR_EXIT(mnt::attach_beneath(t, rootfd, "/mnt/other/x", 0755) == EXDEV);
    CHECK_OR_EXIT(mnt::attach_beneath(t, rootfd, "/home/../etc", 0755) == EINVAL);
    CHECK_OR_EXIT(mnt::attach_beneath(t, rootfd, "/", 0755) == EINVAL);
    CHECK_OR_EXIT(!fs::exists(outside));
    // A good path: made on the way (owned like /home/user), mounted at the end.
    CHECK_OR_EXIT(mnt::attach_beneath(t, rootfd, "/home/user/work/vol", 0755) == 0);
    ::close(t);
    struct stat st;
    CHECK_OR_EXIT(::stat((root + "/home/user/work").c_str(), &st) == 0 && st.st_uid == 1000 && st.st_gid == 1000);
    CHECK_OR_EXIT(::stat((root + "/home/user/work/vol/marker").c_str(), &st) == 0);
    // Found again as a mount root, by the same rules.
    int parent = -1, m = -1;
    char name[256];
    CHECK_OR_EXIT(mnt::open_mount_beneath(rootfd, "/home/user/work/vol", &parent, &m, name) == 0);
    struct stat a, b;
    CHECK_OR_EXIT(::fstat(m, &a) == 0 && ::stat(src.c_str(), &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev);
    CHECK_OR_EXIT(std::string(name) == "vol");
    CHECK_OR_EXIT(mnt::open_mount_beneath(rootfd, "/home/user/link/x", &parent, &m, name) == ELOOP);
    return 0;
  });
  EXPECT_EQ(rc, 0) << "a check failed in the child (its line is on stderr)";
  EXPECT_FALSE(fs::exists(outside));
}

}  // namespace
}  // namespace coppice::sys
