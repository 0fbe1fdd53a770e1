// Copies of writable layers (sandbox/ns/layer_copy.h) against the real
// kernel: btrfs snapshots of a layer on a loop-backed image (their own quota
// group, what used() says for each side, read-only ones), and the
// file-by-file copy that hosts without btrfs get (sys/tree_copy.h: owners,
// modes, xattrs, hard links, sparse files, special files, symlinks kept;
// nothing followed or crossed). Prints how long a snapshot of a layer
// holding 1 GiB takes beside a reflinked and a plain copy of it. Needs root;
// skips visibly otherwise. Unmounts and removes everything it made.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>
#include <algorithm>

#include "sandbox/ns/disk_quota.h"
#include "sandbox/ns/layer_copy.h"
#include "sys/btrfs.h"
#include "sys/fsutil.h"
#include "sys/loop.h"
#include "sys/tree_copy.h"

namespace coppice::sandbox {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }
constexpr uint64_t kMiB = 1ull << 20;

std::string tmp_dir(const char* tag) {
  std::string t = std::string("/tmp/coppice-") + tag + "-XXXXXX";
  if (!::mkdtemp(t.data())) return "";
  return t;
}

void write_bytes(const std::string& path, uint64_t bytes, char fill = 'x') {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path;
  std::string block(kMiB, fill);
  for (uint64_t done = 0; done < bytes; done += block.size()) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(block.size(), bytes - done));
    ASSERT_EQ(::write(fd, block.data(), n), static_cast<ssize_t>(n));
  }
  ::close(fd);
}

void sync_fs(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ::syncfs(fd);
  ::close(fd);
}

std::string xattr(const std::string& path, const char* name) {
  char buf[256];
  ssize_t n = ::lgetxattr(path.c_str(), name, buf, sizeof buf);
  return n < 0 ? "<none>" : std::string(buf, size_t(n));
}

// --- btrfs snapshots ---

class LayerSnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "snapshots need root (loop devices, mounts)";
    if (!sys::path_exists("/dev/loop-control")) GTEST_SKIP() << "no loop devices (/dev/loop-control)";
    if (::system("command -v mkfs.btrfs >/dev/null 2>&1") != 0) GTEST_SKIP() << "no mkfs.btrfs (btrfs-progs)";
    tmp_ = tmp_dir("layer-itest");
    ASSERT_FALSE(tmp_.empty());
    dqo_.dir = tmp_ + "/state";
    dqo_.image = tmp_ + "/disk.img";
    dqo_.image_bytes = 3ull << 30;  // sparse: the 1 GiB figure needs room
    auto d = ns::DiskQuota::open(dqo_);
    if (!d && d.error().sys_errno() == EOPNOTSUPP) GTEST_SKIP() << "no btrfs simple quotas: " << d.error().to_string();
    ASSERT_TRUE(d.has_value()) << d.error().to_string();
    disk_ = std::move(*d);
  }

  void TearDown() override {
    if (disk_) {
      EXPECT_TRUE(disk_->unmount().has_value());
      disk_.reset();
    }
    if (!tmp_.empty()) {
      for (int i = 0; i < 100 && sys::loop_find(dqo_.image).value_or("?") != ""; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      EXPECT_EQ(sys::loop_find(dqo_.image).value_or("?"), "") << "loop device still attached";
      EXPECT_TRUE(sys::remove_tree(tmp_).has_value());
    }
  }

  uint64_t used(const std::string& layer) {
    sync_fs(layer);
    auto u = disk_->used(layer);
    EXPECT_TRUE(u.has_value()) << u.error().to_string();
    return u ? *u : 0;
  }
  uint64_t subvol(const std::string& dir) {
    auto fd = sys::open_dir(dir);
    EXPECT_TRUE(fd.has_value());
    return fd ? sys::btrfs::subvolume_id(fd->get()).value_or(0) : 0;
  }

  std::string tmp_;
  ns::DiskQuotaOptions dqo_;
  std::unique_ptr<ns::DiskQuota> disk_;
};

TEST_F(LayerSnapshotTest, ASnapshotIsALayerOfItsOwnWithItsOwnQuota) {
  const std::string a = dqo_.dir + "/layera", b = dqo_.dir + "/layerb", c = dqo_.dir + "/layerc";
  ASSERT_TRUE(disk_->make_layer(a).has_value());
  ASSERT_TRUE(sys::make_dirs(a + "/upper/home", 0755).has_value());
  write_bytes(a + "/upper/home/big", 8 * kMiB);
  ASSERT_TRUE(sys::write_new_file(a + "/upper/home/note", "hello").has_value());
  const uint64_t a_before = used(a);
  EXPECT_GE(a_before, 8 * kMiB);

  auto t0 = Clock::now();
  ASSERT_TRUE(ns::snapshot_layer(disk_.get(), a, b, false).has_value());
  std::printf("[ figures  ] snapshot of a layer holding 8 MiB: %.2f ms\n", ms_since(t0));
  EXPECT_NE(subvol(b), subvol(a));
  EXPECT_EQ(sys::read_file(b + "/upper/home/note").value_or(""), "hello");
  EXPECT_EQ(sys::read_file(b + "/upper/home/big").value_or("").size(), 8 * kMiB);
  struct stat st;
  ASSERT_EQ(::stat(b.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);

  // Simple quotas charge an extent to the subvolume that wrote it: the copy
  // starts near 0 and then counts its own writes only.
  const uint64_t b_start = used(b);
  std::printf("[ figures  ] used() right after the snapshot: source %llu KiB, copy %llu KiB\n",
              (unsigned long long)(a_before >> 10), (unsigned long long)(b_start >> 10));
  EXPECT_LT(b_start, 1 * kMiB);
  write_bytes(b + "/upper/home/own", 4 * kMiB);
  const uint64_t b_after = used(b);
  EXPECT_GE(b_after, 4 * kMiB);
  EXPECT_LT(b_after, 5 * kMiB);
  EXPECT_EQ(used(a), a_before) << "the source's figure does not move for the copy's writes";

  // Its own cap, its own EDQUOT; the source writes on.
  ASSERT_TRUE(disk_->set_limit(b, 6 * kMiB).has_value());
  int fd = ::open((b + "/upper/home/more").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  std::string block(kMiB, 'y');
  int err = 0;
  for (int i = 0; i < 8 && !err; ++i) {
    if (::write(fd, block.data(), block.size()) < 0) err = errno;
    if (!err && ::fsync(fd) != 0) err = errno;
  }
  ::close(fd);
  EXPECT_EQ(err, EDQUOT);
  write_bytes(a + "/upper/home/big2", 4 * kMiB);

  // The source removes the file the copy still shares: its charge stays
  // until no copy refers to those extents.
  ASSERT_EQ(::unlink((a + "/upper/home/big").c_str()), 0);
  const uint64_t a_shared_gone = used(a);
  std::printf("[ figures  ] used() after the source deletes 8 MiB the copy shares: source %llu KiB\n",
              (unsigned long long)(a_shared_gone >> 10));
  EXPECT_GE(a_shared_gone, 12 * kMiB - kMiB);

  // Once the copy is gone, so is the charge for what only it still held
  // (the kernel frees the extents in the background, then commits).
  ASSERT_TRUE(sys::remove_tree(b).has_value());
  uint64_t a_alone = used(a);
  for (int i = 0; i < 300 && a_alone > 6 * kMiB; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    a_alone = used(a);
  }
  std::printf("[ figures  ] used() of the source once the copy is removed: %llu KiB\n",
              (unsigned long long)(a_alone >> 10));
  EXPECT_LT(a_alone, 6 * kMiB);

  // A read-only snapshot refuses writes.
  ASSERT_TRUE(disk_->snapshot_layer(a, c, true).has_value());
  EXPECT_EQ(::open((c + "/upper/x").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(sys::read_file(c + "/upper/home/note").value_or(""), "hello");

  // Refused: a taken name; a directory that is not a layer's root.
  auto taken = disk_->snapshot_layer(a, c, false);
  ASSERT_FALSE(taken.has_value());
  EXPECT_EQ(taken.error().sys_errno(), EEXIST);
  auto inner = disk_->snapshot_layer(a + "/upper", dqo_.dir + "/layerd", false);
  ASSERT_FALSE(inner.has_value());
  EXPECT_EQ(inner.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_FALSE(sys::path_exists(dqo_.dir + "/layerd"));
}

TEST_F(LayerSnapshotTest, FiguresForALayerHolding1GiB) {
  const std::string a = dqo_.dir + "/layerbig";
  ASSERT_TRUE(disk_->make_layer(a).has_value());
  ASSERT_TRUE(sys::make_dirs(a + "/upper/data", 0755).has_value());
  for (int i = 0; i < 256; ++i) write_bytes(a + "/upper/data/f" + std::to_string(i), 4 * kMiB, char('a' + i % 26));
  sync_fs(a);
  auto t0 = Clock::now();
  ASSERT_TRUE(disk_->snapshot_layer(a, dqo_.dir + "/snap", false).has_value());
  const double snap_ms = ms_since(t0);
  t0 = Clock::now();
  auto reflinked = sys::copy_tree(a, dqo_.dir + "/reflinked");
  const double reflink_ms = ms_since(t0);
  ASSERT_TRUE(reflinked.has_value()) << reflinked.error().to_string();
  EXPECT_EQ(reflinked->reflinked, reflinked->files);
  // A plain copy: onto the host's own file system (no reflinks across).
  const std::string plain = tmp_ + "/plain";
  t0 = Clock::now();
  auto copied = sys::copy_tree(a, plain);
  sync_fs(tmp_);
  const double plain_ms = ms_since(t0);
  ASSERT_TRUE(copied.has_value()) << copied.error().to_string();
  EXPECT_EQ(copied->files, 256u);
  EXPECT_EQ(copied->bytes, 1ull << 30);
  std::printf("[ figures  ] a layer holding 1 GiB in 256 files: btrfs snapshot %.2f ms, reflinked copy %.0f ms, "
              "plain copy to %s (incl. syncfs) %.0f ms\n",
              snap_ms, reflink_ms, "the host's ext4", plain_ms);
  EXPECT_TRUE(sys::remove_tree(plain).has_value());
}

// --- the file-by-file copy ---

class TreeCopyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "copying owners and device nodes needs root";
    tmp_ = tmp_dir("tree-copy-itest");
    ASSERT_FALSE(tmp_.empty());
    src_ = tmp_ + "/src";
    dst_ = tmp_ + "/dst";
  }
  void TearDown() override {
    if (!mounted_.empty()) ::umount2(mounted_.c_str(), MNT_DETACH);
    if (!tmp_.empty()) {
      EXPECT_TRUE(sys::remove_tree(tmp_).has_value());
    }
  }
  std::string tmp_, src_, dst_, mounted_;
};

TEST_F(TreeCopyTest, OwnersModesXattrsLinksHolesAndSpecialFilesAreKept) {
  ASSERT_EQ(::mkdir(src_.c_str(), 0750), 0);
  ASSERT_EQ(::mkdir((src_ + "/dir").c_str(), 0711), 0);
  ASSERT_TRUE(sys::write_new_file(src_ + "/dir/file", "content").has_value());
  ASSERT_EQ(::chown((src_ + "/dir/file").c_str(), 1234, 5678), 0);
  ASSERT_EQ(::chmod((src_ + "/dir/file").c_str(), 04755), 0);  // after chown, which clears set-id bits
  ASSERT_EQ(::link((src_ + "/dir/file").c_str(), (src_ + "/hardlink").c_str()), 0);
  // 1 GiB apparent, two 4 KiB blocks of data.
  {
    int fd = ::open((src_ + "/sparse").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "head", 4, 0), 4);
    ASSERT_EQ(::pwrite(fd, "tail", 4, (1ll << 30) - 4), 4);
    ::close(fd);
  }
  ASSERT_EQ(::symlink("/etc/passwd", (src_ + "/abs-link").c_str()), 0);
  ASSERT_EQ(::symlink("nowhere", (src_ + "/dangling").c_str()), 0);
  ASSERT_EQ(::lchown((src_ + "/dangling").c_str(), 42, 43), 0);
  ASSERT_EQ(::mkfifo((src_ + "/fifo").c_str(), 0640), 0);
  ASSERT_EQ(::mknod((src_ + "/whiteout").c_str(), S_IFCHR | 0000, makedev(0, 0)), 0);  // overlayfs's
  ASSERT_EQ(::mknod((src_ + "/sock").c_str(), S_IFSOCK | 0600, 0), 0);
  ASSERT_EQ(::setxattr((src_ + "/dir").c_str(), "trusted.overlay.opaque", "y", 1, 0), 0);
  ASSERT_EQ(::setxattr((src_ + "/dir/file").c_str(), "user.note", "kept", 4, 0), 0);
  ASSERT_EQ(::setxattr((src_ + "/whiteout").c_str(), "trusted.overlay.x", "w", 1, 0), 0);
  std::string deep = src_;
  for (int i = 0; i < 60; ++i) {
    deep += "/d";
    ASSERT_EQ(::mkdir(deep.c_str(), 0755), 0);
  }
  ASSERT_TRUE(sys::write_new_file(deep + "/leaf", "deep").has_value());
  const struct timespec old_times[2] = {{1000000000, 0}, {1100000000, 5}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (src_ + "/dir/file").c_str(), old_times, 0), 0);
  ASSERT_EQ(::utimensat(AT_FDCWD, (src_ + "/dir").c_str(), old_times, 0), 0);

  auto r = sys::copy_tree(src_, dst_);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_EQ(r->hardlinks, 1u);

  struct stat a, b;
  ASSERT_EQ(::stat(dst_.c_str(), &a), 0);
  EXPECT_EQ(a.st_mode & 07777, 0750u);
  ASSERT_EQ(::stat((dst_ + "/dir").c_str(), &a), 0);
  EXPECT_EQ(a.st_mode & 07777, 0711u);
  EXPECT_EQ(a.st_mtim.tv_sec, 1100000000);
  EXPECT_EQ(xattr(dst_ + "/dir", "trusted.overlay.opaque"), "y");
  ASSERT_EQ(::stat((dst_ + "/dir/file").c_str(), &a), 0);
  EXPECT_EQ(a.st_uid, 1234u);
  EXPECT_EQ(a.st_gid, 5678u);
  EXPECT_EQ(a.st_mode & 07777, 04755u);
  EXPECT_EQ(a.st_mtim.tv_sec, 1100000000);
  EXPECT_EQ(a.st_mtim.tv_nsec, 5);
  EXPECT_EQ(a.st_nlink, 2u);
  EXPECT_EQ(xattr(dst_ + "/dir/file", "user.note"), "kept");
  EXPECT_EQ(sys::read_file(dst_ + "/dir/file").value_or(""), "content");
  ASSERT_EQ(::stat((dst_ + "/hardlink").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino) << "hard links stay links";
  ASSERT_EQ(::stat((dst_ + "/sparse").c_str(), &a), 0);
  EXPECT_EQ(a.st_size, 1ll << 30);
  EXPECT_LT(a.st_blocks * 512, 1ll << 20) << "holes stay holes";
  {
    int fd = ::open((dst_ + "/sparse").c_str(), O_RDONLY | O_CLOEXEC);
    char buf[4];
    ASSERT_EQ(::pread(fd, buf, 4, (1ll << 30) - 4), 4);
    EXPECT_EQ(std::string(buf, 4), "tail");
    ::close(fd);
  }
  char target[64] = {};
  ASSERT_GT(::readlink((dst_ + "/abs-link").c_str(), target, sizeof target - 1), 0);
  EXPECT_STREQ(target, "/etc/passwd");
  ASSERT_EQ(::lstat((dst_ + "/abs-link").c_str(), &a), 0);
  EXPECT_TRUE(S_ISLNK(a.st_mode)) << "a symlink is copied, never followed";
  ASSERT_EQ(::lstat((dst_ + "/dangling").c_str(), &a), 0);
  EXPECT_TRUE(S_ISLNK(a.st_mode));
  EXPECT_EQ(a.st_uid, 42u);
  ASSERT_EQ(::lstat((dst_ + "/fifo").c_str(), &a), 0);
  EXPECT_TRUE(S_ISFIFO(a.st_mode));
  EXPECT_EQ(a.st_mode & 07777, 0640u);
  ASSERT_EQ(::lstat((dst_ + "/whiteout").c_str(), &a), 0);
  EXPECT_TRUE(S_ISCHR(a.st_mode));
  EXPECT_EQ(a.st_rdev, makedev(0, 0));
  EXPECT_EQ(a.st_mode & 07777, 0u);
  EXPECT_EQ(xattr(dst_ + "/whiteout", "trusted.overlay.x"), "w");
  ASSERT_EQ(::lstat((dst_ + "/sock").c_str(), &a), 0);
  EXPECT_TRUE(S_ISSOCK(a.st_mode));
  EXPECT_EQ(sys::read_file(dst_ + deep.substr(src_.size()) + "/leaf").value_or(""), "deep");

  // The destination must be new.
  auto again = sys::copy_tree(src_, dst_);
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().sys_errno(), EEXIST);
  // Through the layer API (no DiskQuota: the file-by-file copy).
  ASSERT_TRUE(ns::snapshot_layer(nullptr, src_, tmp_ + "/via-layer", false).has_value());
  EXPECT_EQ(sys::read_file(tmp_ + "/via-layer/dir/file").value_or(""), "content");
  std::printf("[ figures  ] layer copies on this host's %s: %s\n", "ext4",
              std::string(ns::describe(ns::layer_copy_kind(nullptr, tmp_))).c_str());
}

TEST_F(TreeCopyTest, TooDeepOrAMountPointIsRefusedAndLeavesNothing) {
  ASSERT_EQ(::mkdir(src_.c_str(), 0755), 0);
  std::string deep = src_;
  for (size_t i = 0; i < sys::kMaxCopyDepth + 1; ++i) {
    deep += "/d";
    ASSERT_EQ(::mkdir(deep.c_str(), 0755), 0);
  }
  auto r = sys::copy_tree(src_, dst_);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("deeper than"), std::string::npos) << r.error().to_string();
  EXPECT_FALSE(sys::path_exists(dst_));
  ASSERT_TRUE(sys::remove_tree(src_ + "/d").has_value());

  ASSERT_EQ(::mkdir((src_ + "/mnt").c_str(), 0755), 0);
  ASSERT_EQ(::mount("tmpfs", (src_ + "/mnt").c_str(), "tmpfs", 0, "size=1m"), 0);
  mounted_ = src_ + "/mnt";
  ASSERT_TRUE(sys::write_new_file(src_ + "/mnt/secret", "other fs").has_value());
  r = sys::copy_tree(src_, dst_);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("another file system"), std::string::npos) << r.error().to_string();
  EXPECT_FALSE(sys::path_exists(dst_));
  ASSERT_EQ(::umount2(mounted_.c_str(), 0), 0);
  mounted_.clear();
}

// --- a layer merged into another overlay (fork onto a spare sandbox) ---

// Every entry below `root` as "path type mode uid:gid [content|target] [user xattrs]", sorted.
std::vector<std::string> describe_tree(const std::string& root) {
  std::vector<std::string> out;
  std::vector<std::string> todo{""};
  while (!todo.empty()) {
    std::string rel = todo.back();
    todo.pop_back();
    auto names = sys::list_dir(root + rel);
    if (!names) {
      out.push_back(rel + " unreadable");
      continue;
    }
    for (const auto& n : *names) {
      const std::string p = rel + "/" + n;
      struct stat st;
      if (::lstat((root + p).c_str(), &st) != 0) {
        out.push_back(p + " gone");
        continue;
      }
      std::string line = p + " " + std::to_string(st.st_mode) + " " + std::to_string(st.st_uid) + ":" +
                         std::to_string(st.st_gid);
      if (S_ISREG(st.st_mode)) line += " " + sys::read_file(root + p).value_or("?");
      if (S_ISLNK(st.st_mode)) {
        char t[256];
        ssize_t k = ::readlink((root + p).c_str(), t, sizeof t);
        line += " -> " + std::string(t, k > 0 ? static_cast<size_t>(k) : 0);
      } else {
        char v[64];
        ssize_t k = ::getxattr((root + p).c_str(), "user.tag", v, sizeof v);
        if (k > 0) line += " user.tag=" + std::string(v, static_cast<size_t>(k));
      }
      out.push_back(line);
      if (S_ISDIR(st.st_mode)) todo.push_back(p);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

class LayerMergeTest : public TreeCopyTest {
 protected:
  void mount_overlay(const std::string& upper, const std::string& work, const std::string& at) {
    for (const auto& d : {upper, work, at}) ASSERT_EQ(::mkdir(d.c_str(), 0755), 0) << d;
    const std::string opts = "lowerdir=" + tmp_ + "/lower,upperdir=" + upper + ",workdir=" + work;
    ASSERT_EQ(::mount("overlay", at.c_str(), "overlay", 0, opts.c_str()), 0) << std::strerror(errno);
    mounts_.push_back(at);
  }
  void TearDown() override {
    for (auto it = mounts_.rbegin(); it != mounts_.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
    TreeCopyTest::TearDown();
  }
  std::vector<std::string> mounts_;
};

TEST_F(LayerMergeTest, AParentsLayerMergedIntoAnotherOverlayShowsTheParentsTree) {
  const std::string lower = tmp_ + "/lower";
  ASSERT_EQ(::mkdir(lower.c_str(), 0755), 0);
  for (const char* d : {"/etc", "/keep", "/replaced", "/replaced/sub", "/was_dir"}) {
    ASSERT_EQ(::mkdir((lower + d).c_str(), 0755), 0);
  }
  for (const char* f : {"/etc/hosts", "/etc/deleted", "/keep/a", "/replaced/old", "/replaced/sub/deep", "/was_dir/x",
                        "/was_file", "/edited"}) {
    ASSERT_TRUE(sys::write_new_file(lower + f, std::string("lower") + f).has_value());
  }
  // The parent: a real overlay, changed the ways a sandbox changes its files.
  const std::string parent = tmp_ + "/parent";
  mount_overlay(tmp_ + "/upperP", tmp_ + "/workP", parent);
  ASSERT_TRUE(sys::write_new_file(parent + "/new", "new file").has_value());
  ASSERT_EQ(::chown((parent + "/new").c_str(), 1000, 1001), 0);
  ASSERT_EQ(::setxattr((parent + "/new").c_str(), "user.tag", "v1", 2, 0), 0);
  ASSERT_TRUE(sys::write_file(parent + "/edited", "edited").has_value());
  ASSERT_EQ(::unlink((parent + "/etc/deleted").c_str()), 0);                  // a whiteout
  ASSERT_TRUE(sys::remove_tree(parent + "/replaced").has_value());             // whiteouts, then
  ASSERT_EQ(::mkdir((parent + "/replaced").c_str(), 0700), 0);                 // an opaque dir
  ASSERT_TRUE(sys::write_new_file(parent + "/replaced/fresh", "fresh").has_value());
  ASSERT_TRUE(sys::remove_tree(parent + "/was_dir").has_value());
  ASSERT_TRUE(sys::write_new_file(parent + "/was_dir", "now a file").has_value());
  ASSERT_EQ(::unlink((parent + "/was_file").c_str()), 0);
  ASSERT_EQ(::mkdir((parent + "/was_file").c_str(), 0750), 0);
  ASSERT_EQ(::symlink("/etc/hosts", (parent + "/link").c_str()), 0);
  ASSERT_EQ(::mkfifo((parent + "/fifo").c_str(), 0640), 0);
  ASSERT_EQ(::chmod((parent + "/keep").c_str(), 0700), 0);  // copied up, attributes only
  const auto want = describe_tree(parent);

  // A child that is a fresh overlay on the same lower layer, the parent's
  // changes merged into it through its mount.
  const std::string child = tmp_ + "/child";
  mount_overlay(tmp_ + "/upperC", tmp_ + "/workC", child);
  ASSERT_TRUE(sys::write_new_file(child + "/replaced/spare_was_here", "x").has_value());  // hidden by the opaque dir
  int layer = ::open((tmp_ + "/upperP").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int dst = ::open(child.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(layer, 0);
  ASSERT_GE(dst, 0);
  auto scan = sys::scan_overlay_layer(layer, 1000);
  ASSERT_TRUE(scan.has_value()) << scan.error().to_string();
  EXPECT_EQ(scan->refused, "");
  EXPECT_GE(scan->entries, 10u);
  auto merged = sys::merge_overlay_layer(layer, dst);
  ::close(dst);
  ASSERT_TRUE(merged.has_value()) << merged.error().to_string();
  EXPECT_EQ(describe_tree(child), want);

  // What a merge cannot apply faithfully is refused by the scan.
  auto too_many = sys::scan_overlay_layer(layer, 3);
  ASSERT_TRUE(too_many.has_value());
  EXPECT_NE(too_many->refused.find("more than 3 entries"), std::string::npos) << too_many->refused;
  ::close(layer);
  const std::string other = tmp_ + "/other";
  ASSERT_EQ(::mkdir(other.c_str(), 0755), 0);
  ASSERT_TRUE(sys::write_new_file(other + "/a", "a").has_value());
  ASSERT_EQ(::link((other + "/a").c_str(), (other + "/b").c_str()), 0);
  layer = ::open(other.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  auto linked = sys::scan_overlay_layer(layer, 1000);
  ASSERT_TRUE(linked.has_value());
  EXPECT_NE(linked->refused.find("hard links"), std::string::npos) << linked->refused;
  ASSERT_EQ(::unlink((other + "/b").c_str()), 0);
  ASSERT_EQ(::mkdir((other + "/moved").c_str(), 0755), 0);
  ASSERT_EQ(::setxattr((other + "/moved").c_str(), "trusted.overlay.redirect", "/elsewhere", 10, 0), 0);
  auto redirected = sys::scan_overlay_layer(layer, 1000);
  ASSERT_TRUE(redirected.has_value());
  EXPECT_NE(redirected->refused.find("trusted.overlay.redirect"), std::string::npos) << redirected->refused;
  ASSERT_TRUE(sys::remove_tree(other + "/moved").has_value());
  ASSERT_EQ(::mknod((other + "/null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
  auto device = sys::scan_overlay_layer(layer, 1000);
  ::close(layer);
  ASSERT_TRUE(device.has_value());
  EXPECT_NE(device->refused.find("device node"), std::string::npos) << device->refused;
}

}  // namespace
}  // namespace coppice::sandbox
