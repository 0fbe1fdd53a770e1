#include "sys/run_as.h"

#include <fcntl.h>
#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "common/test_temp_dir.h"

namespace coppice::sys {
namespace {

using test_util::TempDir;

// nobody:nogroup, present in every user namespace's map on these machines.
constexpr uid_t kUid = 65534;
constexpr gid_t kGid = 65534;

TEST(RunAs, OwnIdsRunInline) {
  pid_t tid = ::gettid();
  pid_t seen = 0;
  auto s = run_with_credentials(own_credentials(), [&] { seen = ::gettid(); });
  ASSERT_TRUE(s);
  EXPECT_EQ(seen, tid);
}

TEST(RunAs, ResultsPassThrough) {
  auto r = run_as(own_credentials(), []() -> Result<int> { return 7; });
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, 7);
  auto e = run_as(own_credentials(), []() -> Status { return make_error(ErrorCode::kNotFound, "gone"); });
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code(), ErrorCode::kNotFound);
}

class RunAsRoot : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to take another user's ids";
    ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);
  }
  std::string path(const std::string& name) const { return (dir_.path() / name).string(); }
  TempDir dir_{"coppice-run-as"};
};

TEST_F(RunAsRoot, WorkRunsWithTheUsersIdsOnAnotherThreadOnly) {
  Credentials c{kUid, kGid, {kGid}};
  uid_t ruid = 1, euid = 1, suid = 1, fsuid = 1;
  gid_t egid = 1;
  pid_t tid = 0;
  auto s = run_with_credentials(c, [&] {
    ::getresuid(&ruid, &euid, &suid);
    fsuid = static_cast<uid_t>(::setfsuid(static_cast<uid_t>(-1)));
    egid = ::getegid();
    tid = ::gettid();
  });
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(ruid, kUid);
  EXPECT_EQ(euid, kUid);
  EXPECT_EQ(suid, kUid);
  EXPECT_EQ(fsuid, kUid);
  EXPECT_EQ(egid, kGid);
  EXPECT_NE(tid, ::gettid());
  // The caller is untouched, and so is the process's dumpable flag.
  EXPECT_EQ(::geteuid(), 0u);
  EXPECT_EQ(::getegid(), 0u);
  EXPECT_EQ(::prctl(PR_GET_DUMPABLE), 1);
}

TEST_F(RunAsRoot, TheKernelChecksPermissionsAndTheUserOwnsWhatIsCreated) {
  // A root-only file: root can open it, the user cannot.
  std::string secret = path("secret");
  int fd = ::open(secret.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ::close(fd);
  Credentials c{kUid, kGid, {kGid}};
  auto denied = run_as(c, [&]() -> Status {
    int f = ::open(secret.c_str(), O_RDONLY | O_CLOEXEC);
    if (f < 0) return errno_error("open");
    ::close(f);
    return ok();
  });
  ASSERT_FALSE(denied);
  EXPECT_EQ(denied.error().sys_errno(), EACCES);

  // What the user creates is the user's without a chown.
  std::string open_dir = path("open");
  ASSERT_EQ(::mkdir(open_dir.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(open_dir.c_str(), 0777), 0);
  std::string mine = open_dir + "/mine";
  auto made = run_as(c, [&]() -> Status {
    if (::mkdir(mine.c_str(), 0755) != 0) return errno_error("mkdir");
    return ok();
  });
  ASSERT_TRUE(made) << made.error().message();
  struct stat st;
  ASSERT_EQ(::stat(mine.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kUid);
  EXPECT_EQ(st.st_gid, kGid);
}

TEST_F(RunAsRoot, NestedWorkForTheSameUserRunsInline) {
  Credentials c{kUid, kGid, {kGid}};
  pid_t outer = 0, inner = 0;
  uid_t inner_uid = 0;
  auto s = run_with_credentials(c, [&] {
    outer = ::gettid();
    auto n = run_with_credentials(c, [&] {
      inner = ::gettid();
      inner_uid = ::geteuid();
    });
    EXPECT_TRUE(n);
  });
  ASSERT_TRUE(s);
  EXPECT_EQ(inner, outer);
  EXPECT_EQ(inner_uid, kUid);
}

}  // namespace
}  // namespace coppice::sys
