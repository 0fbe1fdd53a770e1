// A faithful copy of a directory tree someone else shaped (a sandbox's
// writable layer) on file systems without snapshots: what a btrfs snapshot
// gives in O(1), made file by file.
//
//  * Regular files are reflinked whole (FICLONE: O(1) per file, blocks shared
//    until either side writes) where the file system can (btrfs, XFS with
//    reflink=1, bcachefs); elsewhere their data segments are copied with
//    copy_file_range (in the kernel, no user-space buffer), holes skipped
//    (SEEK_DATA/SEEK_HOLE), so sparse files stay sparse.
//  * Owners, modes (set-id bits included), timestamps (atime, mtime) and
//    extended attributes (user.*, trusted.* — overlayfs's opaque and
//    redirect marks —, security.* such as file capabilities) are kept on
//    files, directories and special files; symlinks keep their target, owner
//    and times (not their xattrs).
//  * Hard links inside the tree stay hard links (up to kMaxLinkedFiles such
//    files; past it they are copied as separate files).
//  * Character and block devices (overlayfs whiteouts are 0/0 character
//    devices), FIFOs and sockets are made again with mknod.
//  * Never follows a symlink, never crosses into another file system or a
//    mount point (fails there), walks without recursion on the C stack; a
//    tree deeper than kMaxCopyDepth directories is refused rather than held
//    open level by level.
// Needs root to keep owners and device nodes (CAP_CHOWN, CAP_MKNOD,
// CAP_SYS_ADMIN for trusted.* xattrs). Not atomic: copy a tree nobody writes
// to meanwhile (a frozen sandbox's), or the copy mixes moments.
#pragma once

#include <cstdint>
#include <string>

#include "common/result.h"

namespace coppice::sys {

inline constexpr size_t kMaxCopyDepth = 256;
inline constexpr size_t kMaxLinkedFiles = 1 << 16;

struct TreeCopyStats {
  uint64_t files = 0;       // regular files
  uint64_t reflinked = 0;   // of which made with FICLONE
  uint64_t bytes = 0;       // regular file bytes (apparent sizes)
  uint64_t dirs = 0;
  uint64_t others = 0;      // symlinks, devices, FIFOs, sockets
  uint64_t hardlinks = 0;   // entries made as links to an earlier copy
};

// Copies the directory `src` to `dst`, which must not exist (EEXIST) and
// whose parent must; `dst` gets `src`'s owner, mode, xattrs and times. On
// failure what was copied so far is removed. Errors name the entry.
Result<TreeCopyStats> copy_tree(const std::string& src, const std::string& dst);

// The same from the directory `src_dir` (an fd, O_PATH will do) to a new
// directory `dst_name` in the directory `dst_parent` (an fd): for trees
// reached through a sandbox's root, where a path string would be resolved
// again (and could be swapped under the copy).
Result<TreeCopyStats> copy_tree_at(int src_dir, int dst_parent, const std::string& dst_name);

// Whether files in directory `dir` can be reflinked to each other (a probe:
// two temporary files made and removed there).
bool can_reflink(const std::string& dir);

}  // namespace coppice::sys
