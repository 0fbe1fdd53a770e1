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

// An overlayfs writable layer (an upper dir, or a copy of one) read as the
// changes it makes to the layers below it: whiteouts (0/0 character
// devices) delete, an opaque directory (trusted.overlay.opaque "y")
// replaces what it hides, anything else is added or replaced.
struct LayerScan {
  uint64_t entries = 0;  // everything below the layer's root
  uint64_t bytes = 0;    // regular file bytes (apparent sizes)
  std::string refused;   // why merge_overlay_layer cannot apply it; empty: it can
};

// Looks at the layer `layer_dir` (an fd) without changing it. Refused, with
// the reason: more than `max_entries` entries; a file with several hard
// links (a merge would split it); a device node other than a whiteout
// (no sandbox can make one); a mark a merge cannot express (a renamed
// directory's redirect, a metacopy-only file, an "x" opaque mark).
Result<LayerScan> scan_overlay_layer(int layer_dir, uint64_t max_entries);

// Applies the layer `layer_dir` to the directory tree `dst_dir` (the root of
// a mounted overlay, say, whose own writable layer then takes the changes):
// a whiteout removes what is there (a whole directory too); an opaque
// directory's old contents go first; directories are merged; every other
// entry replaces what is there (a directory in its way too). Entries keep
// owners, modes, times and extended attributes, overlayfs's own marks
// excepted. Scan the layer first: what scan_overlay_layer refuses is not
// applied faithfully. Not atomic: on failure part of the layer is applied.
Result<TreeCopyStats> merge_overlay_layer(int layer_dir, int dst_dir);

// Whether files in directory `dir` can be reflinked to each other (a probe:
// two temporary files made and removed there).
bool can_reflink(const std::string& dir);

}  // namespace coppice::sys
