// Mount operations for building a sandbox's file system tree.
//
// These run in the sandbox's child between clone and exec, so they are
// async-signal-safe: no allocation, no locks. Each returns 0 on success or the
// errno of the failing syscall; the caller reports (step, errno) to the parent.
#pragma once

#include <sys/types.h>

#include <cstdint>

namespace coppice::sys::mnt {

// Marks every mount below "/" private, so nothing mounted afterwards in this
// mount namespace propagates back to the host (whose "/" is often shared).
int make_rprivate();

// mount(2) for a fresh file system instance (tmpfs, proc, sysfs, devpts, overlay).
int mount_fs(const char* fstype, const char* target, unsigned long flags, const char* data);

// A proc instance for the pid namespace `pidns_fd` (proc's "pidns" option,
// Linux 6.15+), mounted by the caller at `target` with MOUNT_ATTR_* `attrs`:
// a mounter outside that pid namespace shows what a process inside it sees.
int mount_proc_of(int pidns_fd, const char* target, uint64_t attrs);

// Bind-mounts `src` at `dst` (recursively when `recursive`), then, if any of
// `flags` (MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC) are given, remounts the
// bind with them: a bind mount ignores those flags on its first mount(2).
int bind(const char* src, const char* dst, unsigned long flags, bool recursive);

// Clones the tree at `src` as a detached mount, applies `attr_set`
// (MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, ...) and an id mapping taken from the
// user namespace `userns_fd` (files owned by host uid u appear owned by the
// uid that u maps from inside the namespace), and attaches it at `dst`.
// Needs a file system that supports idmapped mounts (ext4, xfs, btrfs, tmpfs, ...).
int bind_idmapped(const char* src, const char* dst, int userns_fd, uint64_t attr_set, bool recursive);

// Attaches the detached mount `tree_fd` (open_tree(OPEN_TREE_CLONE)) at
// `path` (absolute) below the directory `root_fd`, which must be in the
// caller's mount namespace. The path is walked one component at a time and
// never follows a symlink, never leaves `root_fd` and never enters another
// mount (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV): a symlink
// planted on the way is ELOOP, a mount on the way (or at the target) EXDEV,
// "." or ".." components EINVAL. Missing directories are made with `mode`,
// owned like the directory they are made in (mkdir -p by that owner). The
// mount lands on the directory found, by fd, so nothing renamed meanwhile
// can redirect it. Async-signal-safe.
int attach_beneath(int tree_fd, int root_fd, const char* path, mode_t mode);

// Opens (O_PATH) the root of the mount at `path` below `root_fd`, walking the
// way as attach_beneath does (the last step enters the mount); *parent_fd
// gets the directory holding it (O_PATH) and `name` its last component
// (at most 255 bytes + NUL). ENOENT when missing.
int open_mount_beneath(int root_fd, const char* path, int* parent_fd, int* mount_fd, char (&name)[256]);

// pivot_root into `new_root` and detach the old root, leaving the caller at "/".
// Uses pivot_root(".", "."), which stacks the old root on top of the new one,
// so no put_old directory is needed in the template.
int pivot_into(const char* new_root);

// Ensures a directory (or, with `file`, an empty regular file) exists at
// `path`; returns 0 if something already exists there (left as it is). One it
// creates is owned by uid/gid and has exactly `mode` (the umask does not
// apply, so 01777 stays world-writable).
int ensure_mountpoint(const char* path, mode_t mode, bool file, uid_t uid, gid_t gid);

}  // namespace coppice::sys::mnt
