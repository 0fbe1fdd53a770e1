#include "sys/mount_ops.h"

#include <fcntl.h>
#include <linux/openat2.h>
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

int mount_proc_of(int pidns_fd, const char* target, uint64_t attrs) {
  int fs = ::fsopen("proc", FSOPEN_CLOEXEC);
  if (fs < 0) return errno;
  int err = 0, mnt = -1;
  if (::fsconfig(fs, FSCONFIG_SET_FD, "pidns", nullptr, pidns_fd) != 0 ||
      ::fsconfig(fs, FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) {
    err = errno;
  } else if ((mnt = ::fsmount(fs, FSMOUNT_CLOEXEC, static_cast<unsigned int>(attrs))) < 0) {
    err = errno;
  } else if (raw::move_mount(mnt, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) != 0) {
    err = errno;
  }
  if (mnt >= 0) ::close(mnt);
  ::close(fs);
  return err;
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

namespace {

constexpr uint64_t kWalk = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS;

// The next component of *p (skipping '/'s) into `name`: 1 if there is one,
// 0 at the end, -errno for "." / ".." / a too long name.
int next_component(const char** p, char (&name)[256]) {
  const char* s = *p;
  while (*s == '/') ++s;
  if (!*s) return 0;
  size_t n = 0;
  while (s[n] && s[n] != '/') ++n;
  if (n >= sizeof name) return -ENAMETOOLONG;
  if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) return -EINVAL;
  for (size_t i = 0; i < n; ++i) name[i] = s[i];
  name[n] = '\0';
  *p = s + n;
  return 1;
}

// Opens directory `name` in `dir` (O_PATH), made first if missing (owned
// like `dir`).
int open_or_make_dir(int dir, const char* name, mode_t mode, bool make) {
  for (int tries = 0; tries < 2; ++tries) {
    int fd = raw::openat2(dir, name, O_PATH | O_DIRECTORY | O_CLOEXEC, 0, kWalk);
    if (fd >= 0 || errno != ENOENT || !make) return fd;
    struct stat parent;
    if (::fstat(dir, &parent) != 0) return -1;
    const uid_t uid = parent.st_uid;
    const gid_t gid = parent.st_gid;
    if (::mkdirat(dir, name, mode) != 0) {
      if (errno == EEXIST) continue;  // made meanwhile: open it
      return -1;
    }
    // Owner and mode on what we made, not through a path that could change.
    int made = raw::openat2(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0, kWalk);
    if (made < 0) return -1;
    int err = 0;
    if (::fchown(made, uid, gid) != 0 || ::fchmod(made, mode) != 0) err = errno;
    ::close(made);
    if (err) {
      errno = err;
      return -1;
    }
  }
  return -1;
}

}  // namespace

int attach_beneath(int tree_fd, int root_fd, const char* path, mode_t mode) {
  if (!path || path[0] != '/') return EINVAL;
  int dir = ::fcntl(root_fd, F_DUPFD_CLOEXEC, 0);
  if (dir < 0) return errno;
  const char* p = path;
  char name[256];
  int got = 0, steps = 0;
  while ((got = next_component(&p, name)) == 1) {
    int next = open_or_make_dir(dir, name, mode, true);
    int err = errno;
    ::close(dir);
    if (next < 0) return err;
    dir = next;
    ++steps;
  }
  if (got < 0 || steps == 0) {  // a bad component, or the root itself
    ::close(dir);
    return got < 0 ? -got : EINVAL;
  }
  int err = 0;
  if (raw::move_mount(tree_fd, "", dir, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0) err = errno;
  ::close(dir);
  return err;
}

int open_mount_beneath(int root_fd, const char* path, int* parent_fd, int* mount_fd, char (&name)[256]) {
  if (!path || path[0] != '/') return EINVAL;
  int dir = ::fcntl(root_fd, F_DUPFD_CLOEXEC, 0);
  if (dir < 0) return errno;
  const char* p = path;
  int got = next_component(&p, name);
  if (got <= 0) {
    ::close(dir);
    return got < 0 ? -got : EINVAL;
  }
  // Every component but the last stays on the walk's rules.
  char next_name[256];
  const char* q = p;
  while ((got = next_component(&q, next_name)) == 1) {
    int next = open_or_make_dir(dir, name, 0, false);
    int err = errno;
    ::close(dir);
    if (next < 0) return err;
    dir = next;
    for (size_t i = 0; i < sizeof name; ++i) {
      name[i] = next_name[i];
      if (!next_name[i]) break;
    }
    p = q;
  }
  if (got < 0) {
    ::close(dir);
    return -got;
  }
  int fd = raw::openat2(dir, name, O_PATH | O_DIRECTORY | O_CLOEXEC, 0,
                        RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
  if (fd < 0) {
    int err = errno;
    ::close(dir);
    return err;
  }
  *parent_fd = dir;
  *mount_fd = fd;
  return 0;
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
