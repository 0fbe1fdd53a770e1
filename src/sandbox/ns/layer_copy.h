// Copies of a sandbox's writable layer (its state dir), for snapshots, pause
// to disk and fork: a btrfs snapshot where the layers are subvolumes
// (DiskQuota, O(1)), otherwise a faithful file-by-file copy
// (sys/tree_copy.h), reflinking each file where the file system can.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"
#include "sandbox/ns/disk_quota.h"

namespace coppice::sandbox::ns {

enum class LayerCopyKind {
  kSnapshot,   // btrfs subvolume snapshot: one ioctl, O(1)
  kReflink,    // file by file, each file's data shared (FICLONE)
  kPlainCopy,  // file by file, data copied (copy_file_range), holes kept
};

// How layers in `dir` (the sandboxes' dir) are copied: kSnapshot when `disk`
// keeps them as subvolumes; else a probe of `dir` for reflinks.
LayerCopyKind layer_copy_kind(const DiskQuota* disk, const std::string& dir);

// One line for the gateway's start-up log.
std::string_view describe(LayerCopyKind kind);

// Makes `dst_state_dir` (which must not exist) a copy of `src_state_dir`:
// DiskQuota::snapshot_layer when `disk` is given (see there for quotas and
// `readonly`), else sys::copy_tree (a failed copy leaves nothing; the copy
// is writable, `readonly` is the caller's promise not to write to it).
// Either way, copy a layer nobody writes to meanwhile (a frozen sandbox's).
Status snapshot_layer(const DiskQuota* disk, const std::string& src_state_dir, const std::string& dst_state_dir,
                      bool readonly);

}  // namespace coppice::sandbox::ns
