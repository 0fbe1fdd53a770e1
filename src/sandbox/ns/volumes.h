// Volumes on the ns backend: where their files live, and how they appear in
// sandboxes.
//
// Storage: each volume is a directory <volume_dir>/<id> on the sandboxes'
// quota file system (disk_quota.h): a btrfs subvolume with its own simple
// quota, so a write past the volume's cap fails with EDQUOT in whichever
// sandbox writes, and the sandbox's own writable layer and the other
// sandboxes are unaffected. Without quotas (--disk-quota=off) it is a plain
// directory and the cap is not enforced.
//
// Ownership: files are stored with their owners as the sandboxes see them
// (the volume's root is uid 0, mode 0777; a file `user` writes is stored as
// 1000), never as a sandbox's host uids. Each mount is idmapped
// (mount_setattr MOUNT_ATTR_IDMAP) through the user namespace of the
// sandbox it goes into, so every sandbox, whatever host uid range it has,
// sees the same owners, and what it writes is stored canonically. Host uids
// never leak into a volume, so a volume moves between sandboxes, and
// between gateway restarts with other uid ranges, as it is.
//
// Mounts are nosuid, nodev and made by host root in the sandbox's mount
// namespace (which belongs to the host's user namespace), so the sandbox's
// root cannot unmount, move or remount them. Target paths are walked from
// the sandbox's root without following symlinks or entering other mounts
// (sys::mnt::attach_beneath): a symlink the sandbox planted is refused, not
// followed out of its root.
//
// Thread-safe: functions work on paths and the kernel only.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/result.h"
#include "sys/fd.h"
#include "sys/pidfd_owner.h"

namespace coppice::sandbox::ns {

class DiskQuota;

class VolumeStorage {
 public:
  // `dir`: where volumes live (on `disk`'s file system when there is one;
  // made if missing). `disk` may be null: no caps.
  VolumeStorage(std::string dir, const DiskQuota* disk) : dir_(std::move(dir)), disk_(disk) {}

  // Makes volume `id` ([a-z0-9]{20}) capped at `quota_bytes` (0: no cap) and
  // returns its directory. kAlreadyExists if it exists. A failure leaves
  // nothing behind.
  Result<std::string> make(const std::string& id, uint64_t quota_bytes) const;
  // Removes it and everything in it, off the caller's path (the trash);
  // succeeds when it does not exist.
  Status remove(const std::string& id) const;
  // Its directory (whether or not it exists).
  std::string path(const std::string& id) const { return dir_ + "/" + id; }
  // The ids of the volumes here (names of the form of an id; none when the
  // directory does not exist yet).
  Result<std::vector<std::string>> list() const;
  // Bytes charged to it (quota accounting); kFailedPrecondition without quotas.
  Result<uint64_t> used(const std::string& id) const;
  bool enforced() const { return disk_ != nullptr; }

 private:
  std::string dir_;
  const DiskQuota* disk_;
};

// A detached, idmapped (through `userns_fd`), nosuid, nodev clone of the
// volume directory `host_dir`, for attach_beneath.
Result<sys::UniqueFd> volume_tree(const std::string& host_dir, int userns_fd);

// Mounts `host_dir` at `path` in the running sandbox whose PID 1 `init`
// pins (the caller has checked that it is the sandbox's: NsBackend),
// idmapped through the sandbox's user namespace. Missing directories on
// the way are made, owned like their parents. kInvalidArgument for a
// symlink or another mount on the way.
Status mount_volume_in(const sys::Pidfd& init, const std::string& host_dir, const std::string& path);

// Unmounts the volume `host_dir` from `path` in that sandbox. kNotFound when
// that volume is not mounted there.
Status unmount_volume_in(const sys::Pidfd& init, const std::string& host_dir, const std::string& path);

// The namespace `kind` ("mnt", "user") of the process `init` pins, checked
// to be opened while that process was still alive (its pid not reused).
Result<sys::UniqueFd> ns_of(const sys::Pidfd& init, const char* kind);

// Runs `fn` on a thread of its own that has entered the mount namespace
// `mntns_fd` (setns(CLONE_NEWNS) needs a thread that shares no fs_struct:
// unshare(CLONE_FS) first). The thread ends with `fn`; the caller's
// namespace, root and working directory are untouched.
Status in_mount_ns(int mntns_fd, const std::function<Status()>& fn);

}  // namespace coppice::sandbox::ns
