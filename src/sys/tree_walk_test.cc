#include "sys/tree_walk.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>

#include "sys/fsutil.h"
#include "sys/tree_test_util.h"

namespace coppice::sys {
namespace {

namespace stdfs = std::filesystem;
using test_util::make_chain;
using test_util::make_files;
using test_util::Scratch;

size_t open_fds() {
  size_t n = 0;
  for ([[maybe_unused]] auto& e : stdfs::directory_iterator("/proc/self/fd")) ++n;
  return n - 1;  // the iterator's own
}

// A field of /proc/self/status in KiB ("VmRSS", "VmHWM").
long status_kib(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string want = std::string(key) + ":";
  while (std::getline(in, line)) {
    if (line.rfind(want, 0) == 0) return std::strtol(line.c_str() + want.size(), nullptr, 10);
  }
  return -1;
}

// Resets VmHWM to the current RSS (clear_refs "5", Linux >= 4.0).
bool reset_peak_rss() {
  int fd = ::open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, "5", 1) == 1;
  ::close(fd);
  return ok;
}

// Runs `fn` on a thread with a stack of `bytes`, as a worker thread with a
// small stack would.
void on_small_stack(size_t bytes, const std::function<void()>& fn) {
  pthread_attr_t attr;
  ASSERT_EQ(::pthread_attr_init(&attr), 0);
  ASSERT_EQ(::pthread_attr_setstacksize(&attr, bytes), 0);
  pthread_t t;
  auto trampoline = [](void* arg) -> void* {
    (*static_cast<const std::function<void()>*>(arg))();
    return nullptr;
  };
  ASSERT_EQ(::pthread_create(&t, &attr, trampoline, const_cast<std::function<void()>*>(&fn)), 0);
  ::pthread_join(t, nullptr);
  ::pthread_attr_destroy(&attr);
}

// Lowers the soft fd limit to what is open now plus `extra` while in scope.
class FdLimit {
 public:
  explicit FdLimit(size_t extra) {
    ::getrlimit(RLIMIT_NOFILE, &saved_);
    struct rlimit low = saved_;
    low.rlim_cur = open_fds() + extra + 8;  // + 8: whatever the test framework opens meanwhile
    ::setrlimit(RLIMIT_NOFILE, &low);
  }
  ~FdLimit() { ::setrlimit(RLIMIT_NOFILE, &saved_); }

 private:
  struct rlimit saved_ {};
};

// Removes `root` with remove_tree on a 256 KiB stack under a soft fd limit
// just above what is open, and expects it gone with no fd left behind and
// peak RSS grown by less than 4 MiB (when peak RSS can be reset here).
void expect_bounded_removal(const std::string& root, const char* what) {
  const size_t fds_before = open_fds();
  const bool peak = reset_peak_rss();
  const long rss_before = status_kib("VmRSS");
  Status result;
  auto t0 = std::chrono::steady_clock::now();
  {
    FdLimit limit(kMaxOpenDirs + 4);
    on_small_stack(256 * 1024, [&] { result = remove_tree(root); });
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  const long growth = peak ? status_kib("VmHWM") - rss_before : -1;
  ASSERT_TRUE(result) << result.error().to_string();
  EXPECT_FALSE(path_exists(root));
  EXPECT_EQ(open_fds(), fds_before);
  if (growth >= 0) {
    EXPECT_LT(growth, 4096) << "peak RSS grew by " << growth << " KiB";
  }
  std::printf("[ figures  ] %s removed in %lld ms, peak RSS +%ld KiB\n", what, static_cast<long long>(ms), growth);
}

TEST(RemoveTree, ChainTwentyThousandDeepOnSmallStackWithBoundedFdsAndMemory) {
  Scratch s;
  const std::string root = s / "deep";
  ASSERT_EQ(::mkdir(root.c_str(), 0755), 0);
  make_chain(root, 20000);
  expect_bounded_removal(root, "20,000-deep chain");
}

TEST(RemoveTree, DirectoryWithTwoHundredThousandEntries) {
  Scratch s;
  const std::string root = s / "wide";
  ASSERT_EQ(::mkdir(root.c_str(), 0755), 0);
  make_files(root, 200000);
  expect_bounded_removal(root, "200,000 files");
}

TEST(RemoveTree, ChainWithFilesAndManyEmptyDirsAtEveryLevel) {
  Scratch s;
  const std::string root = s / "mixed";
  ASSERT_EQ(::mkdir(root.c_str(), 0755), 0);
  make_chain(root, 300, true);
  for (int i = 0; i < 2000; ++i) ASSERT_EQ(::mkdir((root + "/e" + std::to_string(i)).c_str(), 0700), 0);
  ASSERT_TRUE(remove_tree(root));
  EXPECT_FALSE(path_exists(root));
}

TEST(RemoveTree, SymlinksAreRemovedNotFollowed) {
  Scratch s;
  const std::string outside = s / "outside";
  ASSERT_EQ(::mkdir(outside.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((outside + "/sub").c_str(), 0755), 0);
  std::ofstream(outside + "/precious") << "keep";
  std::ofstream(outside + "/sub/also") << "keep";
  const std::string tree = s / "tree";
  ASSERT_EQ(::mkdir(tree.c_str(), 0755), 0);
  make_chain(tree, 40);
  ASSERT_EQ(::symlink(outside.c_str(), (tree + "/to-dir").c_str()), 0);
  ASSERT_EQ(::symlink((outside + "/precious").c_str(), (tree + "/d/d/to-file").c_str()), 0);
  ASSERT_EQ(::symlink("/", (tree + "/d/d/d/to-root").c_str()), 0);
  ASSERT_TRUE(remove_tree(tree));
  EXPECT_FALSE(path_exists(tree));
  EXPECT_TRUE(path_exists(outside + "/precious"));
  EXPECT_TRUE(path_exists(outside + "/sub/also"));

  // A symlink as the root is removed itself.
  const std::string link = s / "link";
  ASSERT_EQ(::symlink(outside.c_str(), link.c_str()), 0);
  ASSERT_TRUE(remove_tree(link));
  EXPECT_FALSE(path_exists(link));
  EXPECT_TRUE(path_exists(outside + "/precious"));
  // So is a file, and a missing path is success.
  ASSERT_TRUE(remove_tree(outside + "/precious"));
  EXPECT_FALSE(path_exists(outside + "/precious"));
  EXPECT_TRUE(remove_tree(s / "never-existed"));
}

// Builds a tree with unreadable, unwritable and unsearchable directories
// (as a sandbox may leave them) and removes it; "" on success.
std::string odd_modes_round_trip(const std::string& base) {
  const std::string tree = base + "/odd";
  if (::mkdir(tree.c_str(), 0755) != 0) return "mkdir";
  for (const char* d : {"a", "a/sub", "b", "c"}) {
    if (::mkdir((tree + "/" + d).c_str(), 0755) != 0) return std::string("mkdir ") + d;
  }
  for (const char* f : {"a/f", "a/sub/g", "b/f", "c/f"}) std::ofstream(tree + "/" + f) << "x";
  ::chmod((tree + "/a/sub").c_str(), 0);
  ::chmod((tree + "/a").c_str(), 0);     // no access at all
  ::chmod((tree + "/b").c_str(), 0500);  // read-only
  ::chmod((tree + "/c").c_str(), 0100);  // search only
  if (auto r = remove_tree(tree); !r) return r.error().to_string();
  return path_exists(tree) ? "still there" : "";
}

TEST(RemoveTree, DirectoriesWithOddModes) {
  Scratch s;
  if (::geteuid() != 0) {
    EXPECT_EQ(odd_modes_round_trip(s.path()), "");
    return;
  }
  // Root would need no chmod: check the owner's path as an unprivileged uid.
  const uid_t nobody = 65534;
  ASSERT_EQ(::chown(s.path().c_str(), nobody, nobody), 0);
  int pipefd[2];
  ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::string err;
    if (::setresgid(nobody, nobody, nobody) != 0 || ::setresuid(nobody, nobody, nobody) != 0) err = "setresuid";
    if (err.empty()) err = odd_modes_round_trip(s.path());
    (void)!::write(pipefd[1], err.data(), err.size());
    ::_exit(0);
  }
  ::close(pipefd[1]);
  char buf[512];
  ssize_t n = ::read(pipefd[0], buf, sizeof buf);
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(std::string(buf, n > 0 ? static_cast<size_t>(n) : 0), "");
}

TEST(RemoveTree, NeverEntersABindMount) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to bind-mount";
  Scratch s;
  const std::string outside = s / "outside";
  ASSERT_EQ(::mkdir(outside.c_str(), 0755), 0);
  std::ofstream(outside + "/precious") << "keep";
  const std::string tree = s / "tree";
  ASSERT_TRUE(make_dirs(tree + "/sub/mnt", 0755));
  make_chain(tree + "/sub", 30);
  ASSERT_EQ(::mount(outside.c_str(), (tree + "/sub/mnt").c_str(), nullptr, MS_BIND, nullptr), 0)
      << std::strerror(errno);
  struct Unmount {
    std::string at;
    ~Unmount() { ::umount2(at.c_str(), MNT_DETACH); }
  } unmount{tree + "/sub/mnt"};

  auto r = remove_tree(tree);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kFailedPrecondition) << r.error().to_string();
  EXPECT_TRUE(path_exists(outside + "/precious"));
  // A mount point as the root is refused before anything is removed.
  auto at_root = remove_tree(tree + "/sub/mnt");
  ASSERT_FALSE(at_root);
  EXPECT_EQ(at_root.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_TRUE(path_exists(outside + "/precious"));

  ASSERT_EQ(::umount2((tree + "/sub/mnt").c_str(), 0), 0);
  ASSERT_TRUE(remove_tree(tree));
  EXPECT_FALSE(path_exists(tree));
  EXPECT_TRUE(path_exists(outside + "/precious"));
}

// A directory renamed out of the tree while the removal is below it: going
// back up through ".." would land outside; the removal fails instead.
TEST(TreeRemover, ADirectoryMovedOutDuringTheWalkIsNotFollowedOut) {
  Scratch s;
  const std::string tree = s / "tree";
  const std::string outside = s / "outside";
  ASSERT_EQ(::mkdir(tree.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(outside.c_str(), 0755), 0);
  std::ofstream(outside + "/precious") << "keep";
  make_chain(tree, 100);
  TreeRemover r(tree);
  // One entry per step: 100 steps take it to the bottom of the chain.
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(r.step(1));
  ASSERT_EQ(::rename((tree + "/d/d/d").c_str(), (outside + "/moved").c_str()), 0);
  Result<bool> more = true;
  for (int i = 0; i < 1000 && more && *more; ++i) more = r.step(1);
  ASSERT_FALSE(more);
  EXPECT_EQ(more.error().code(), ErrorCode::kFailedPrecondition) << more.error().to_string();
  EXPECT_TRUE(path_exists(outside + "/precious"));
  EXPECT_TRUE(path_exists(outside + "/moved"));
}

// Two removals of one tree, stepped in turns (as two Remove RPCs, or a
// fixture and the trash reaper): both end, and the tree is gone.
TEST(TreeRemover, TwoRemovalsOfOneTreeBothSucceed) {
  Scratch s;
  const std::string tree = s / "tree";
  ASSERT_EQ(::mkdir(tree.c_str(), 0755), 0);
  make_chain(tree, 200, true);
  TreeRemover a(tree), b(tree);
  Result<bool> more_a = true, more_b = true;
  for (int i = 0; i < 100000 && ((more_a && *more_a) || (more_b && *more_b)); ++i) {
    if (more_a && *more_a) more_a = a.step(7);
    if (more_b && *more_b) more_b = b.step(5);
  }
  ASSERT_TRUE(more_a) << more_a.error().to_string();
  ASSERT_TRUE(more_b) << more_b.error().to_string();
  EXPECT_FALSE(*more_a);
  EXPECT_FALSE(*more_b);
  EXPECT_FALSE(path_exists(tree));
}

TEST(DirReader, ResumesWhereAnEntryEnded) {
  Scratch s;
  make_files(s.path(), 3000);
  int fd = ::open(s.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  DirReader r;
  ASSERT_TRUE(r.reset(fd));
  std::set<std::string> seen;
  off_t resume = 0;
  for (int i = 0; i < 1000; ++i) {
    auto e = r.next();
    ASSERT_TRUE(e && *e);
    seen.emplace((*e)->name);
    resume = (*e)->next;
  }
  DirReader again;  // another reader, as after going down and back up
  ASSERT_TRUE(again.reset(fd, resume));
  for (;;) {
    auto e = again.next();
    ASSERT_TRUE(e);
    if (!*e) break;
    EXPECT_TRUE(seen.emplace((*e)->name).second) << "seen twice: " << (*e)->name;
  }
  EXPECT_EQ(seen.size(), 3000u);
  ::close(fd);
}

uint64_t blocks_of(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::lstat(path.c_str(), &st), 0);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

TEST(DiskUsage, CountsOnceFollowsNothingAndHonoursTheBudget) {
  Scratch s;
  const std::string tree = s / "tree";
  const std::string outside = s / "outside";
  ASSERT_EQ(::mkdir(tree.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(outside.c_str(), 0755), 0);
  std::ofstream(tree + "/data") << std::string(64 * 1024, 'x');
  std::ofstream(outside + "/big") << std::string(1 << 20, 'y');
  ASSERT_EQ(::link((tree + "/data").c_str(), (tree + "/data-link").c_str()), 0);
  ASSERT_EQ(::symlink(outside.c_str(), (tree + "/to-outside").c_str()), 0);
  const uint64_t want = blocks_of(tree + "/data") + blocks_of(tree + "/to-outside");
  int fd = ::open(tree.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto du = disk_usage_below(fd);
  ASSERT_TRUE(du);
  EXPECT_TRUE(du->complete);
  EXPECT_EQ(du->bytes, want);
  EXPECT_EQ(du->entries, 3u);
  DiskUsageBudget small;
  small.max_entries = 2;
  auto cut = disk_usage_below(fd, small);
  ASSERT_TRUE(cut);
  EXPECT_FALSE(cut->complete);
  EXPECT_EQ(cut->entries, 2u);
  ::close(fd);
}

TEST(DiskUsage, DeepChainWithBoundedFds) {
  Scratch s;
  const std::string root = s / "deep";
  ASSERT_EQ(::mkdir(root.c_str(), 0755), 0);
  make_chain(root, 5000);
  int fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  Result<DiskUsage> du = DiskUsage{};
  {
    FdLimit limit(kMaxOpenDirs + 4);
    on_small_stack(256 * 1024, [&] { du = disk_usage_below(fd); });
  }
  ::close(fd);
  ASSERT_TRUE(du) << du.error().to_string();
  EXPECT_TRUE(du->complete);
  EXPECT_EQ(du->entries, 5000u);
  EXPECT_GE(du->bytes, 5000u * 512);
}

}  // namespace
}  // namespace coppice::sys
