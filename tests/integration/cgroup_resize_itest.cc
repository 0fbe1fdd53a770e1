// Live resize of a sandbox's cgroups (CgroupManager::resize) against the
// real kernel: a process in the cgroup holds anonymous memory; a limit below
// it is refused with nothing changed and the process alive (no OOM kill), a
// higher one and a new CPU quota are written, a frozen cgroup is resized
// too. Needs root; skips visibly otherwise. Removes its process and cgroups.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <cstring>
#include <optional>
#include <string>

#include "sandbox/ns/cgroup.h"
#include "sys/fsutil.h"

namespace coppice::sandbox {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

class CgroupResizeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "cgroups need root";
    parent_ = "coppice-resize-itest-" + std::to_string(::getpid());
    auto cg = ns::CgroupManager::open(parent_);
    if (!cg) GTEST_SKIP() << "no usable cgroup hierarchy: " << cg.error().to_string();
    cgroups_.emplace(std::move(*cg));
  }

  void TearDown() override {
    if (child_ > 0) {
      ::kill(child_, SIGKILL);
      int st = 0;
      ::waitpid(child_, &st, 0);
    }
    if (cgroups_) {
      (void)cgroups_->thaw(id_);
      EXPECT_TRUE(cgroups_->remove(id_).has_value());
      EXPECT_TRUE(cgroups_->remove_parent().has_value()) << "parent cgroups " << parent_ << " left behind";
    }
  }

  // Makes the cgroup with `limits` and a child in it that holds `held` bytes
  // of touched anonymous memory (then sleeps).
  void start(const Limits& limits, uint64_t held) {
    auto cg = cgroups_->create(id_, limits);
    ASSERT_TRUE(cg.has_value()) << cg.error().to_string();
    int ready[2];
    ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
    child_ = ::fork();
    ASSERT_GE(child_, 0);
    if (child_ == 0) {
      // Only async-signal-safe calls from here (the test is threaded).
      for (const auto& fd : cg->procs_fds()) {
        if (::write(fd.get(), "0", 1) != 1) ::_exit(2);
      }
      void* p = ::mmap(nullptr, held, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) ::_exit(3);
      std::memset(p, 0x5a, held);
      char c = 'r';
      if (::write(ready[1], &c, 1) != 1) ::_exit(4);
      for (;;) ::pause();
    }
    ::close(ready[1]);
    char c = 0;
    ASSERT_EQ(::read(ready[0], &c, 1), 1) << "the child did not get its memory";
    ::close(ready[0]);
    cg->close_fds();
    cg->release();  // TearDown removes it
  }

  uint64_t mem_limit() {
    auto u = cgroups_->usage(id_);
    EXPECT_TRUE(u.has_value());
    return u ? u->mem_limit : 0;
  }
  std::string cpu_quota() {
    std::string f = cgroups_->v2() ? "/sys/fs/cgroup/" + parent_ + "/" + id_ + "/cpu.max"
                                   : "/sys/fs/cgroup/cpu/" + parent_ + "/" + id_ + "/cpu.cfs_quota_us";
    auto s = sys::read_file(f);
    EXPECT_TRUE(s.has_value()) << f;
    return s ? s->substr(0, s->find_first_of(" \n")) : "";
  }
  bool child_alive() {
    int st = 0;
    return ::waitpid(child_, &st, WNOHANG) == 0;
  }

  std::string parent_, id_ = "resizeitest000000001";
  std::optional<ns::CgroupManager> cgroups_;
  pid_t child_ = -1;
};

TEST_F(CgroupResizeTest, LimitsChangeAtOnceAndALimitBelowWhatIsHeldIsRefused) {
  Limits l;
  l.cpu_millicores = 1000;
  l.memory_bytes = 128 * kMiB;
  start(l, 96 * kMiB);
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(mem_limit(), 128 * kMiB);
  EXPECT_EQ(cpu_quota(), "100000");

  // Below the 96 MiB it holds (anonymous, no swap to go to): refused, and
  // nothing changed, the CPU quota included; the process was not OOM-killed.
  auto low = cgroups_->resize(id_, 2000, 64 * kMiB);
  ASSERT_FALSE(low.has_value());
  EXPECT_EQ(low.error().code(), ErrorCode::kFailedPrecondition) << low.error().to_string();
  EXPECT_NE(low.error().message().find("cannot give back"), std::string::npos) << low.error().to_string();
  EXPECT_EQ(mem_limit(), 128 * kMiB);
  EXPECT_EQ(cpu_quota(), "100000");
  EXPECT_TRUE(child_alive());

  // Up: both written.
  ASSERT_TRUE(cgroups_->resize(id_, 2000, 256 * kMiB).has_value());
  EXPECT_EQ(mem_limit(), 256 * kMiB);
  EXPECT_EQ(cpu_quota(), "200000");
  // Down again, still above what it holds.
  ASSERT_TRUE(cgroups_->resize(id_, 500, 112 * kMiB).has_value());
  EXPECT_EQ(mem_limit(), 112 * kMiB);
  EXPECT_EQ(cpu_quota(), "50000");
  EXPECT_TRUE(child_alive());
  if (!cgroups_->v2()) {
    const std::string memsw = "/sys/fs/cgroup/memory/" + parent_ + "/" + id_ + "/memory.memsw.limit_in_bytes";
    if (sys::path_exists(memsw)) {
      EXPECT_EQ(sys::read_file(memsw).value_or(""), std::to_string(112 * kMiB) + "\n");
    }
  } else {
    EXPECT_EQ(sys::read_file("/sys/fs/cgroup/" + parent_ + "/" + id_ + "/memory.high").value_or(""), "max\n");
  }
}

TEST_F(CgroupResizeTest, AFrozenCgroupIsResizedAndStaysFrozen) {
  Limits l;
  l.memory_bytes = 64 * kMiB;
  start(l, 16 * kMiB);
  ASSERT_FALSE(HasFailure());
  ASSERT_TRUE(cgroups_->freeze(id_).has_value());
  ASSERT_TRUE(cgroups_->resize(id_, 3000, 512 * kMiB).has_value());
  EXPECT_TRUE(cgroups_->frozen(id_));
  EXPECT_EQ(mem_limit(), 512 * kMiB);
  EXPECT_EQ(cpu_quota(), "300000");
  auto low = cgroups_->resize(id_, 3000, 8 * kMiB);
  EXPECT_FALSE(low.has_value());
  EXPECT_EQ(mem_limit(), 512 * kMiB);
  ASSERT_TRUE(cgroups_->thaw(id_).has_value());
  EXPECT_TRUE(child_alive());
}

TEST_F(CgroupResizeTest, UnknownSandboxAndBadValues) {
  auto r = cgroups_->resize("resizeitestnothere01", 1000, 64 * kMiB);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(cgroups_->resize(id_, 0, 64 * kMiB).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(cgroups_->resize(id_, 1000, 0).error().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace coppice::sandbox
