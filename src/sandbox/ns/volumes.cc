#include "sandbox/ns/volumes.h"

#include <fcntl.h>
#include <linux/mount.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <functional>
#include <thread>

#include "common/ids.h"
#include "sandbox/ns/disk_quota.h"
#include "sandbox/ns/rootfs.h"
#include "sandbox/ns/trash.h"
#include "sys/fsutil.h"
#include "sys/linux_syscalls.h"
#include "sys/mount_ops.h"
#include "sys/pidfd_owner.h"

namespace coppice::sandbox::ns {

namespace {

// The volume root's mode: every user of every sandbox may write (files keep
// their creators as owners).
constexpr mode_t kVolumeRootMode = 0777;

Status check_id(const std::string& id) {
  if (!valid_sandbox_id(id)) return make_error(ErrorCode::kInvalidArgument, "malformed volume id \"" + id + "\"");
  return ok();
}

Status path_error(int err, const std::string& path) {
  switch (err) {
    case ELOOP:
      return make_error(ErrorCode::kInvalidArgument, "mount path " + path + " crosses a symlink in the sandbox", err);
    case EXDEV:
      return make_error(ErrorCode::kInvalidArgument,
                        "mount path " + path + " is on or crosses another mount in the sandbox", err);
    case ENOTDIR:
      return make_error(ErrorCode::kInvalidArgument, "mount path " + path + " is not a directory in the sandbox", err);
    case EINVAL:
    case ENAMETOOLONG:
      return make_error(ErrorCode::kInvalidArgument, "bad mount path " + path, err);
    case EROFS:
      return make_error(ErrorCode::kInvalidArgument, "mount path " + path + " is on a read-only file system", err);
    default:
      return errno_error("mount volume at " + path, err);
  }
}

}  // namespace

Status in_mount_ns(int mntns_fd, const std::function<Status()>& fn) {
  Status out = ok();
  std::thread t([&] {
    if (::unshare(CLONE_FS) != 0) {
      out = errno_error("unshare(CLONE_FS)");
      return;
    }
    if (::setns(mntns_fd, CLONE_NEWNS) != 0) {
      out = errno_error("enter the sandbox's mount namespace");
      return;
    }
    out = fn();
  });
  t.join();
  return out;
}

Result<sys::UniqueFd> ns_of(const sys::Pidfd& init, const char* kind) {
  auto fd = sys::open_file("/proc/" + std::to_string(init.pid()) + "/ns/" + kind, O_RDONLY);
  if (!fd) return make_error(ErrorCode::kNotFound, "the sandbox is gone");
  if (sys::raw::pidfd_send_signal(init.get(), 0) != 0) return make_error(ErrorCode::kNotFound, "the sandbox is gone");
  return std::move(*fd);
}


Result<std::string> VolumeStorage::make(const std::string& id, uint64_t quota_bytes) const {
  COPPICE_TRY(check_id(id));
  const std::string dir = path(id);
  const std::string ctx = "make volume " + id;
  // Root only: the volumes' roots are world-writable (for the sandboxes'
  // users, through their mounts); no host user may reach them.
  COPPICE_TRY_CTX(sys::make_dirs(dir_, 0700), ctx);
  if (::chmod(dir_.c_str(), 0700) != 0) return errno_error(ctx + ": chmod " + dir_);
  if (disk_) {
    COPPICE_TRY_CTX(disk_->make_layer(dir), ctx);
  } else if (::mkdir(dir.c_str(), 0700) != 0) {
    return errno_error(ctx);
  }
  auto undo = [&](Error e) -> Result<std::string> {
    (void)remove_state_dir(dir);
    return std::unexpected(std::move(e).context(ctx));
  };
  if (::chown(dir.c_str(), 0, 0) != 0 || ::chmod(dir.c_str(), kVolumeRootMode) != 0) {
    return undo(Error::from_errno(errno, "owner and mode"));
  }
  if (disk_) {
    if (auto s = disk_->set_limit(dir, quota_bytes); !s) return undo(s.error());
  }
  return dir;
}

Status VolumeStorage::remove(const std::string& id) const {
  COPPICE_TRY(check_id(id));
  const std::string dir = path(id);
  if (auto s = move_to_trash(dir); !s) {
    // A dir that cannot be renamed is removed in place.
    COPPICE_TRY_CTX(remove_state_dir(dir), "remove volume " + id);
  }
  return ok();
}

Result<std::vector<std::string>> VolumeStorage::list() const {
  auto names = sys::list_dir(dir_);
  if (!names) {
    if (names.error().sys_errno() == ENOENT) return std::vector<std::string>{};
    return std::unexpected(std::move(names.error()).context("list volumes"));
  }
  std::vector<std::string> out;
  for (auto& n : *names) {
    if (valid_sandbox_id(n)) out.push_back(std::move(n));  // not .trash
  }
  return out;
}

Result<uint64_t> VolumeStorage::used(const std::string& id) const {
  COPPICE_TRY(check_id(id));
  if (!disk_) return make_error(ErrorCode::kFailedPrecondition, "volumes have no quotas on this gateway");
  return disk_->used(path(id));
}

Result<sys::UniqueFd> volume_tree(const std::string& host_dir, int userns_fd) {
  int fd = sys::raw::open_tree(AT_FDCWD, host_dir.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
  if (fd < 0) return errno_error("open volume " + host_dir);
  sys::UniqueFd tree(fd);
  struct mount_attr attr {};
  attr.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_IDMAP;
  attr.userns_fd = static_cast<uint64_t>(userns_fd);
  if (sys::raw::mount_setattr(tree.get(), "", AT_EMPTY_PATH, &attr) != 0) {
    return errno_error("idmap volume " + host_dir);
  }
  return tree;
}

Status mount_volume_in(const sys::Pidfd& init, const std::string& host_dir, const std::string& path) {
  const std::string ctx = "mount volume at " + path;
  auto userns = ns_of(init, "user");
  if (!userns) return std::unexpected(std::move(userns.error()).context(ctx));
  auto mntns = ns_of(init, "mnt");
  if (!mntns) return std::unexpected(std::move(mntns.error()).context(ctx));
  auto tree = volume_tree(host_dir, userns->get());
  if (!tree) return std::unexpected(std::move(tree.error()).context(ctx));
  const int tree_fd = tree->get();
  return in_mount_ns(mntns->get(), [&]() -> Status {
    int root = ::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) return errno_error(ctx + ": open the sandbox's root");
    sys::UniqueFd root_fd(root);
    int err = sys::mnt::attach_beneath(tree_fd, root, path.c_str(), 0755);
    if (err != 0) return path_error(err, path);
    return ok();
  });
}

Status unmount_volume_in(const sys::Pidfd& init, const std::string& host_dir, const std::string& path) {
  const std::string ctx = "unmount volume at " + path;
  struct stat want;
  if (::stat(host_dir.c_str(), &want) != 0) return errno_error(ctx + ": " + host_dir);
  auto mntns = ns_of(init, "mnt");
  if (!mntns) return std::unexpected(std::move(mntns.error()).context(ctx));
  return in_mount_ns(mntns->get(), [&]() -> Status {
    int root = ::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) return errno_error(ctx + ": open the sandbox's root");
    sys::UniqueFd root_fd(root);
    int parent = -1, mnt = -1;
    char name[256];
    int err = sys::mnt::open_mount_beneath(root, path.c_str(), &parent, &mnt, name);
    if (err == ENOENT) return make_error(ErrorCode::kNotFound, "no volume is mounted at " + path);
    if (err != 0) return path_error(err, path);
    sys::UniqueFd parent_fd(parent), mnt_fd(mnt);
    struct stat got;
    if (::fstat(mnt, &got) != 0) return errno_error(ctx);
    if (got.st_dev != want.st_dev || got.st_ino != want.st_ino) {
      return make_error(ErrorCode::kNotFound, "that volume is not mounted at " + path);
    }
    // By name in the directory we hold, never following a symlink: the
    // sandbox cannot swap the mount point (a mount point cannot be renamed
    // or removed from under its mount).
    if (::fchdir(parent) != 0) return errno_error(ctx + ": fchdir");
    if (::umount2(name, UMOUNT_NOFOLLOW | MNT_DETACH) != 0) return errno_error(ctx);
    return ok();
  });
}

}  // namespace coppice::sandbox::ns
