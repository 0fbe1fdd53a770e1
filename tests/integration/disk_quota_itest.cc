// Per-sandbox disk quotas (sandbox/ns/disk_quota.h) against the real kernel:
// a btrfs image on a loop device mounted on the sandboxes' dir, a capped
// subvolume per sandbox, writes past the cap refused inside that sandbox
// only, usage from quota accounting, and nothing left behind (mount, loop
// device, quota group). Needs root; skips visibly otherwise.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "common/log.h"
#include "sandbox/backend.h"
#include "sandbox/ns/cgroup.h"
#include "sandbox/ns/disk_quota.h"
#include "sandbox/ns/ns_backend.h"
#include "sandbox/ns/trash.h"
#include "sys/btrfs.h"
#include "sys/fsutil.h"
#include "sys/loop.h"

namespace coppice::sandbox {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// Runs `cmd` through /bin/sh; returns its exit status and output (stdout and stderr).
std::pair<int, std::string> run(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, "popen failed"};
  char buf[512];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

// A shell command run as root inside sandbox `pid` (its user and mount namespaces).
std::pair<int, std::string> run_inside(pid_t pid, const std::string& cmd) {
  return run("nsenter -t " + std::to_string(pid) + " -U -m -- /bin/sh -c '" + cmd + "'");
}

class DiskQuotaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "disk quotas need root (loop devices, mounts, namespaces)";
    if (std::getenv("COPPICE_NS_DEBUG")) log::set_level(log::Level::debug);
    envd_ = COPPICE_BUILD_DIR "/coppice-envd";
    if (::access(envd_.c_str(), X_OK) != 0) GTEST_SKIP() << "no coppice-envd at " << envd_;
    if (!sys::path_exists("/dev/loop-control")) GTEST_SKIP() << "no loop devices (/dev/loop-control)";
    if (run("command -v mkfs.btrfs").first != 0) GTEST_SKIP() << "no mkfs.btrfs (btrfs-progs)";
    if (run("command -v nsenter").first != 0) GTEST_SKIP() << "no nsenter (util-linux)";
    char tmpl[] = "/tmp/coppice-dq-itest-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    tmp_ = tmpl;
    dqo_.dir = tmp_ + "/state";
    dqo_.image = tmp_ + "/disk.img";
    dqo_.image_bytes = 256ull << 20;
    auto t0 = Clock::now();
    auto d = ns::DiskQuota::open(dqo_);
    if (!d && d.error().sys_errno() == EOPNOTSUPP) GTEST_SKIP() << "no btrfs simple quotas: " << d.error().to_string();
    ASSERT_TRUE(d.has_value()) << d.error().to_string();
    std::printf("[ figures  ] make + attach + mount a 256 MiB image: %.1f ms\n", ms_since(t0));
    disk_ = std::move(*d);
    make_rootfs(tmp_ + "/rootfs");
    opts_.cgroup_parent = "coppice-dqtest-" + std::to_string(::getpid());
    opts_.registry_dir = tmp_ + "/registry";
    opts_.uid_base = 1000000;
    opts_.uid_slots = 16;
    opts_.disk = disk_.get();
    auto b = make_ns_backend(opts_);
    if (!b && (b.error().code() == ErrorCode::kFailedPrecondition || b.error().sys_errno() == EPERM)) {
      GTEST_SKIP() << "ns backend unavailable here: " << b.error().to_string();
    }
    ASSERT_TRUE(b.has_value()) << b.error().to_string();
    backend_ = std::move(*b);
  }

  void TearDown() override {
    if (backend_) {
      if (auto ids = backend_->list_existing(); ids) {
        for (auto& id : *ids) EXPECT_TRUE(backend_->destroy(id).has_value()) << id;
      }
      backend_.reset();
    }
    {
      // The spares' cgroups may still be going away in the background.
      bool removed = false;
      for (int i = 0; i < 100 && !removed; ++i) {
        auto cg = ns::CgroupManager::open(opts_.cgroup_parent);
        removed = cg && cg->remove_parent().has_value();
        if (!removed) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      EXPECT_TRUE(removed) << "the test's parent cgroups " << opts_.cgroup_parent << " are left behind";
    }
    if (disk_) {
      EXPECT_TRUE(ns::wait_trash_idle(ns::trash_dir_for(dqo_.dir + "/x"), std::chrono::seconds(60)) ||
                  !sys::path_exists(dqo_.dir + "/.trash"));
      EXPECT_TRUE(disk_->unmount().has_value());
      disk_.reset();
    }
    if (!tmp_.empty()) {
      // Nothing mounted, no loop device on the image any more.
      EXPECT_EQ(run("grep -c " + tmp_ + " /proc/self/mountinfo").second, "0\n");
      if (sys::path_exists(dqo_.image)) {
        auto dev = wait_detached();
        EXPECT_EQ(dev, "") << "loop device still attached";
      }
      EXPECT_TRUE(sys::remove_tree(tmp_).has_value());
    }
  }

  // The loop device of the image once autoclear had time to detach it ("" then).
  std::string wait_detached() {
    std::string dev;
    for (int i = 0; i < 100; ++i) {
      auto d = sys::loop_find(dqo_.image);
      dev = d ? *d : "?";
      if (dev.empty()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return dev;
  }

  static void make_rootfs(const std::string& r) {
    for (const char* d : {"", "/usr", "/etc", "/proc", "/dev", "/sys", "/root", "/home", "/var"}) {
      ASSERT_EQ(::mkdir((r + d).c_str(), 0755), 0) << d;
    }
    for (auto [link, target] : {std::pair{"bin", "usr/bin"}, {"lib", "usr/lib"}, {"lib64", "usr/lib64"}, {"sbin", "usr/sbin"}}) {
      ASSERT_EQ(::symlink(target, (r + "/" + link).c_str()), 0);
    }
    ASSERT_TRUE(sys::write_new_file(r + "/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n").has_value());
    ASSERT_TRUE(sys::write_new_file(r + "/etc/group", "root:x:0:\n").has_value());
  }

  SandboxSpec spec(const std::string& id, uint64_t disk_bytes) {
    SandboxSpec s;
    s.id = id;
    s.rootfs = tmp_ + "/rootfs";
    s.ro_binds = {"/usr"};
    s.state_dir = dqo_.dir + "/" + id;
    s.envd_path = envd_;
    s.limits.memory_bytes = 256ull << 20;
    s.disk_bytes = disk_bytes;
    return s;
  }

  std::string qgroup_dir(const std::string& state_dir) {
    auto fd = sys::open_dir(state_dir);
    EXPECT_TRUE(fd.has_value());
    auto id = sys::btrfs::subvolume_id(fd->get());
    auto fsid = sys::btrfs::fsid(fd->get());
    EXPECT_TRUE(id) << id.error().to_string();
    EXPECT_TRUE(fsid) << fsid.error().to_string();
    if (!id || !fsid) return "";
    return "/sys/fs/btrfs/" + *fsid + "/qgroups/0_" + std::to_string(*id);
  }

  std::string envd_, tmp_;
  ns::DiskQuotaOptions dqo_;
  std::unique_ptr<ns::DiskQuota> disk_;
  NsOptions opts_;
  std::unique_ptr<Backend> backend_;
};

TEST_F(DiskQuotaTest, AWritePastTheCapFailsInThatSandboxOnly) {
  auto t0 = Clock::now();
  auto a = backend_->create(spec("dqitesta000000000001", 20ull << 20));
  ASSERT_TRUE(a.has_value()) << a.error().to_string();
  std::printf("[ figures  ] create with a disk quota (cold, no spare): %.1f ms\n", ms_since(t0));
  auto b = backend_->create(spec("dqitestb000000000001", 64ull << 20));
  ASSERT_TRUE(b.has_value()) << b.error().to_string();
  const std::string qa = qgroup_dir(a->state_dir);
  EXPECT_EQ(sys::read_file(qa + "/max_referenced").value_or(""), std::to_string(20ull << 20) + "\n");

  // 40 MiB into a 20 MiB sandbox: refused inside, past about 20 MiB.
  auto [rc, out] = run_inside(a->init_pid, "dd if=/dev/zero of=/root/fill bs=1M count=40");
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("Disk quota exceeded"), std::string::npos) << out;
  // The other sandbox still writes, and so does the host beside the state dirs.
  auto [rc2, out2] = run_inside(b->init_pid, "dd if=/dev/zero of=/root/fill bs=1M count=30 && sync");
  EXPECT_EQ(rc2, 0) << out2;
  EXPECT_TRUE(sys::write_new_file(tmp_ + "/beside-the-store", std::string(1 << 20, 'x')).has_value());
  EXPECT_TRUE(disk_->check_room().has_value());

  // Usage comes from the quota group (after a commit).
  (void)run_inside(a->init_pid, "sync");
  auto ua = backend_->usage(a->id, true);
  ASSERT_TRUE(ua.has_value()) << ua.error().to_string();
  EXPECT_GT(ua->disk_bytes, 18ull << 20);
  EXPECT_LE(ua->disk_bytes, 21ull << 20);
  auto ub = backend_->usage(b->id, true);
  ASSERT_TRUE(ub.has_value());
  EXPECT_GE(ub->disk_bytes, 30ull << 20);

  // Space freed inside can be written again.
  auto [rc3, out3] = run_inside(a->init_pid, "rm /root/fill && dd if=/dev/zero of=/root/again bs=1M count=10");
  EXPECT_EQ(rc3, 0) << out3;

  // Teardown releases the quota group once the trash has removed the layer.
  ASSERT_TRUE(backend_->destroy(a->id).has_value());
  ASSERT_TRUE(backend_->destroy(b->id).has_value());
  EXPECT_FALSE(sys::path_exists(a->state_dir));
  ASSERT_TRUE(ns::wait_trash_idle(ns::trash_dir_for(a->state_dir), std::chrono::seconds(60)));
  bool gone = false;
  for (int i = 0; i < 200 && !gone; ++i) {  // the kernel drops it after a commit (commit=5)
    gone = !sys::path_exists(qa);
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(gone) << qa << " is still there";
}

TEST_F(DiskQuotaTest, SparesAreSubvolumesAndGetTheirCapWhenTaken) {
  backend_.reset();
  opts_.spares = 2;
  opts_.spare_dir = dqo_.dir + "/.spare";
  auto nb = make_ns_backend(opts_);
  ASSERT_TRUE(nb.has_value()) << nb.error().to_string();
  backend_ = std::move(*nb);
  for (int i = 0; i < 500 && backend_->spares_ready() < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(backend_->spares_ready(), 2u);
  auto t0 = Clock::now();
  auto a = backend_->create(spec("dqitestspare00000001", 24ull << 20));
  ASSERT_TRUE(a.has_value()) << a.error().to_string();
  std::printf("[ figures  ] create with a disk quota from a spare: %.1f ms\n", ms_since(t0));
  EXPECT_EQ(sys::read_file(qgroup_dir(a->state_dir) + "/max_referenced").value_or(""),
            std::to_string(24ull << 20) + "\n");
  auto [rc, out] = run_inside(a->init_pid, "dd if=/dev/zero of=/root/fill bs=1M count=40");
  EXPECT_NE(out.find("Disk quota exceeded"), std::string::npos) << out;
  ASSERT_TRUE(backend_->destroy(a->id).has_value());
  backend_.reset();
  EXPECT_FALSE(sys::path_exists(opts_.spare_dir));
}

TEST_F(DiskQuotaTest, ReopenKeepsTheMountOrMountsTheImageAgain) {
  // A restart while mounted (sandboxes running): the mount is kept as it is.
  ASSERT_TRUE(sys::write_new_file(dqo_.dir + "/.keep", "x").has_value());
  auto again = ns::DiskQuota::open(dqo_);
  ASSERT_TRUE(again.has_value()) << again.error().to_string();
  EXPECT_NE((*again)->describe().find("already mounted"), std::string::npos) << (*again)->describe();
  EXPECT_TRUE(sys::path_exists(dqo_.dir + "/.keep"));
  EXPECT_EQ(run("grep -c ' " + dqo_.dir + " ' /proc/self/mountinfo").second, "1\n");

  // Growing works (mounted too); shrinking is refused with a message.
  auto bigger = dqo_;
  bigger.image_bytes = 384ull << 20;
  auto grown = ns::DiskQuota::open(bigger);
  ASSERT_TRUE(grown.has_value()) << grown.error().to_string();
  struct statvfs v;
  ASSERT_EQ(::statvfs(dqo_.dir.c_str(), &v), 0);
  EXPECT_GT(uint64_t(v.f_blocks) * v.f_frsize, 300ull << 20);
  auto smaller = ns::DiskQuota::open(dqo_);  // 256 MiB
  ASSERT_FALSE(smaller.has_value());
  EXPECT_NE(smaller.error().message().find("cannot shrink"), std::string::npos) << smaller.error().to_string();
  auto tiny = dqo_;
  tiny.image_bytes = ns::kMinImageBytes - 1;
  EXPECT_EQ(ns::DiskQuota::open(tiny).error().code(), ErrorCode::kInvalidArgument);

  // After a clean stop: the same image is mounted again (not made anew).
  backend_.reset();
  ASSERT_TRUE(disk_->unmount().has_value());
  EXPECT_EQ(wait_detached(), "");
  EXPECT_FALSE(sys::path_exists(dqo_.dir + "/.keep"));
  auto t0 = Clock::now();
  auto remounted = ns::DiskQuota::open(bigger);
  ASSERT_TRUE(remounted.has_value()) << remounted.error().to_string();
  std::printf("[ figures  ] attach + mount an existing image: %.1f ms\n", ms_since(t0));
  EXPECT_TRUE(sys::path_exists(dqo_.dir + "/.keep"));
  disk_ = std::move(*remounted);
  ASSERT_TRUE(sys::remove_file(dqo_.dir + "/.keep").has_value());
}

TEST_F(DiskQuotaTest, StateLeftWithoutQuotasIsNotHidden) {
  backend_.reset();
  ASSERT_TRUE(disk_->unmount().has_value());
  disk_.reset();
  EXPECT_EQ(wait_detached(), "");
  ASSERT_TRUE(sys::make_dirs(dqo_.dir + "/someoldsandbox/upper", 0700).has_value());
  ASSERT_TRUE(sys::make_dirs(dqo_.dir + "/.trash/x.1", 0700).has_value());
  auto d = ns::DiskQuota::open(dqo_);
  ASSERT_FALSE(d.has_value());
  EXPECT_NE(d.error().message().find("someoldsandbox"), std::string::npos) << d.error().to_string();
  EXPECT_EQ(run("grep -c ' " + dqo_.dir + " ' /proc/self/mountinfo").second, "0\n");
  EXPECT_EQ(wait_detached(), "");
  // Once it is gone, the trash left beside it is cleared and the image mounted.
  ASSERT_TRUE(sys::remove_tree(dqo_.dir + "/someoldsandbox").has_value());
  auto ok = ns::DiskQuota::open(dqo_);
  ASSERT_TRUE(ok.has_value()) << ok.error().to_string();
  disk_ = std::move(*ok);
  EXPECT_FALSE(sys::path_exists(dqo_.dir + "/.trash/x.1"));
}

}  // namespace
}  // namespace coppice::sandbox
