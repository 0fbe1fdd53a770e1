#include "sys/mount_ops.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "sys/linux_syscalls.h"

namespace coppice::sys::mnt {

int make_rprivate() {
  return ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 ? 0 : errno;
}

int mount_fs(const char* fstype, const char* target, unsigned long flags, const char* data) {
  return ::mount(fstype, target, fstype, flags, data) == 0 ? 0 : errno;
}

int bind(const char* src, const char* dst, unsigned long flags, bool recursive) {
  unsigned long f = MS_BIND | (recursive ? MS_REC : 0);
  if (::mount(src, dst, nullptr, f, nullptr) != 0) return errno;
  if (flags == 0) return 0;
  // A remount must repeat the flags the kernel locked on the source mount
  // (nodev/nosuid/noexec of e.g. /dev): MS_REMOUNT|MS_BIND only sets per-mount
  // flags, so adding ours to those is always allowed.
  if (::mount(nullptr, dst, nullptr, MS_BIND | MS_REMOUNT | flags, nullptr) != 0) return errno;
  return 0;
}

int bind_idmapped(const char* src, const char* dst, int userns_fd, uint64_t attr_set, bool recursive) {
  unsigned rec = recursive ? AT_RECURSIVE : 0;
  int fd = raw::open_tree(AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | rec);
  if (fd < 0) return errno;
  struct mount_attr attr{};
  attr.attr_set = attr_set | MOUNT_ATTR_IDMAP;
  attr.userns_fd = static_cast<uint64_t>(userns_fd);
  int err = 0;
  if (raw::mount_setattr(fd, "", AT_EMPTY_PATH | rec, &attr) != 0) {
    err = errno;
  } else if (raw::move_mount(fd, "", AT_FDCWD, dst, MOVE_MOUNT_F_EMPTY_PATH) != 0) {
    err = errno;
  }
  ::close(fd);
  return err;
}

int pivot_into(const char* new_root) {
  if (::chdir(new_root) != 0) return errno;
  if (raw::pivot_root(".", ".") != 0) return errno;
  // The old root is now mounted on top of "/"; detach it (and everything
  // below it, including host mounts) lazily.
  if (::umount2(".", MNT_DETACH) != 0) return errno;
  if (::chdir("/") != 0) return errno;
  return 0;
}

int ensure_mountpoint(const char* path, mode_t mode, bool file, uid_t uid, gid_t gid) {
  struct stat st;
  if (::lstat(path, &st) == 0) return 0;
  if (errno != ENOENT) return errno;
  if (file) {
    int fd = ::open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) return errno;
    int err = ::fchown(fd, uid, gid) == 0 ? 0 : errno;
    if (err == 0 && ::fchmod(fd, mode) != 0) err = errno;
    ::close(fd);
    return err;
  }
  if (::mkdir(path, mode) != 0) return errno;
  if (::lchown(path, uid, gid) != 0) return errno;
  // After the chown, which clears set-id bits; the umask does not apply.
  if (::chmod(path, mode) != 0) return errno;
  return 0;
}

}  // namespace coppice::sys::mnt
