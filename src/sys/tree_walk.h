// Walks over directory trees whose shape someone else chose (a sandbox's
// writable layer, a template built from a recipe, a path an SDK user names):
// no recursion on the C stack, memory and open file descriptors bounded
// whatever the depth or the width of the tree.
//
//  * Directories are read in fixed-size getdents64 batches (DirReader), so a
//    directory with millions of entries costs one buffer, never a list of its
//    names.
//  * Descent is by openat(O_NOFOLLOW | O_DIRECTORY) relative to the parent:
//    no path strings, so no PATH_MAX limit and no symlink is ever followed.
//  * Only the deepest kMaxOpenDirs directories stay open. Going back up past
//    them re-opens the parent through ".." and checks its st_dev/st_ino
//    against what was recorded on the way down: a directory renamed out of
//    the tree during the walk makes the walk fail, never escape the tree.
//    Memory is 32 bytes per level of depth (a 1,000,000-deep chain costs
//    32 MB, the kernel's inodes for it far more) plus one read buffer.
//  * Nothing crosses into another file system or a mount point: a directory
//    whose st_dev or mount id differs from the root's is never entered.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "sys/fd.h"

namespace coppice::sys {

// Directories a walk keeps open at most (besides one transient fd while it
// re-opens a parent).
inline constexpr size_t kMaxOpenDirs = 16;

// One directory read in fixed-size getdents64 batches. Does not own the fd;
// it moves the fd's file offset.
class DirReader {
 public:
  static constexpr size_t kBatchBytes = 32 * 1024;
  struct Entry {
    std::string_view name;  // valid until the next call to next() or reset()
    ino_t ino;
    unsigned char type;  // DT_*; DT_UNKNOWN where the file system does not say
    off_t pos;           // where the entry starts: reset(fd, pos) reads it again
    off_t next;          // where the entry after it starts
  };

  DirReader();
  // Starts reading `fd` at `pos` (0, or an Entry's pos/next from this fd).
  Status reset(int fd, off_t pos = 0);
  // The next entry other than "." and "..", or nullopt at the end.
  Result<std::optional<Entry>> next();

 private:
  int fd_ = -1;
  off_t pos_ = 0;  // where the next entry to hand out starts
  std::unique_ptr<char[]> buf_;
  size_t len_ = 0;
  size_t at_ = 0;
};

// rm -rf of one path in steps, so an event loop can yield between them and a
// background thread can stop between them. Never follows a symlink (a link is
// removed, not what it names), never enters another file system or a mount
// point (the removal fails there with kFailedPrecondition, leaving the mount
// alone), and removes entries as it reads them. Directories the caller owns
// but cannot read, search or write (mode 0000, 0500) are chmod'ed to 0700 so
// their contents can go; root never needs that. If the tree changes under
// the walk, the removal fails rather than touch anything outside the tree;
// a part of it removed meanwhile by someone else (two removals of one tree)
// makes it start again from `path`.
class TreeRemover {
 public:
  explicit TreeRemover(std::string path);
  ~TreeRemover();
  TreeRemover(TreeRemover&&) noexcept;
  TreeRemover& operator=(TreeRemover&&) noexcept;

  // Removes about `budget` entries. True while there is more to remove, false
  // once `path` is gone (also when it never existed). After an error the
  // remover must not be stepped again.
  Result<bool> step(size_t budget);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

struct DiskUsage {
  uint64_t bytes = 0;    // allocated blocks * 512
  uint64_t entries = 0;  // entries looked at
  bool complete = true;  // false when the budget ran out first (then `bytes` is a lower bound)
};

struct DiskUsageBudget {
  uint64_t max_entries = UINT64_MAX;
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

// Bytes allocated to everything below the directory `root_fd` (not the root
// itself), `du -sx` style: symlinks not followed, other file systems and
// mount points neither counted nor entered, files with several links counted
// once (up to a bounded number of such files; past it every link counts).
// Entries that vanish or cannot be read are skipped. Stops early, with
// complete == false, when the budget runs out. Fails only when `root_fd`
// cannot be read.
Result<DiskUsage> disk_usage_below(int root_fd, const DiskUsageBudget& budget = {});

}  // namespace coppice::sys
