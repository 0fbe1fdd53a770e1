// btrfs through its ioctls: subvolumes and quota groups, for the sandboxes'
// writable layers (sandbox/ns/disk_quota.h). Every function takes an fd of a
// directory on the btrfs file system in question and fails with the errno of
// its ioctl (ENOTTY on another file system).
#pragma once

#include <cstdint>
#include <string>

#include "common/result.h"

namespace coppice::sys::btrfs {

// Whether the file system of `fd` is btrfs.
bool is_btrfs(int fd);

// The file system's id as sysfs names it (/sys/fs/btrfs/<fsid>), "xxxxxxxx-xxxx-…".
Result<std::string> fsid(int fd);

enum class QuotaMode { kOff, kQgroup, kSimple };
// How the file system accounts space per subvolume: not at all, full quota
// groups (`btrfs quota enable`), or simple quotas (kernel 6.7+: usage charged
// to the subvolume that wrote an extent, no back-reference walks).
Result<QuotaMode> quota_mode(int fd);

// Turns simple quotas on (BTRFS_IOC_QUOTA_CTL); needs CAP_SYS_ADMIN. Existing
// subvolumes' usage is not known to simple quotas: enable them on a new file
// system. Idempotent.
Status enable_simple_quota(int fd);

// Creates subvolume `name` (one path component) in directory `parent_fd`,
// owned by root with mode 0755; EEXIST if the name is taken.
Status create_subvolume(int parent_fd, const std::string& name);

// Makes `name` (one path component) in directory `parent_fd` a snapshot of
// the subvolume whose root is `src_fd` (BTRFS_IOC_SNAP_CREATE_V2): O(1),
// every extent shared until either side writes; read-only when `readonly`.
// The snapshot is a subvolume of its own (a quota group of its own when
// quotas are on). Data the source has not yet written back is flushed
// first. EEXIST if the name is taken; EXDEV across file systems.
Status snapshot_subvolume(int src_fd, int parent_fd, const std::string& name, bool readonly);

// Id of the subvolume holding `fd` (5 for the top level).
Result<uint64_t> subvolume_id(int fd);

// Clears the read-only flag of the subvolume `fd` is the root of (so its
// files can be removed). A subvolume that is writable already is no error.
Status make_writable(int fd);

// Caps the bytes the subvolume holding `fd` refers to (its own quota group,
// 0/<id>); a write past it fails with EDQUOT. 0 removes the cap.
Status set_limit(int fd, uint64_t bytes);

// Grows the (single-device) file system of `fd` to the whole of its device,
// after the device grew (BTRFS_IOC_RESIZE "max").
Status resize_to_device(int fd);

// Bytes charged to the quota group 0/`subvol`, from sysfs: what it refers to
// as of the last transaction commit plus the data reserved for writes since
// (the same sum the limit is checked against), so a write shows at once.
// Between an extent's writeback and the next commit it is in neither.
Result<uint64_t> charged_bytes(const std::string& fsid, uint64_t subvol);

}  // namespace coppice::sys::btrfs
