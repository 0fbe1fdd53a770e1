#include "sandbox/ns/dir_copy.h"

#include <fcntl.h>

#include <algorithm>
#include <linux/openat2.h>

#include "sandbox/ns/uid_slots.h"
#include "sandbox/ns/volumes.h"
#include "sys/fsutil.h"
#include "sys/linux_syscalls.h"
#include "sys/tree_copy.h"
#include "sys/tree_walk.h"
#include "sys/userns.h"

namespace coppice::sandbox::ns {

namespace {

// The sandbox's root directory, opened while its PID 1 was alive.
Result<sys::UniqueFd> root_of(const sys::Pidfd& init) {
  auto fd = sys::open_file("/proc/" + std::to_string(init.pid()) + "/root", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (!fd) return make_error(ErrorCode::kNotFound, "the sandbox is gone");
  if (sys::raw::pidfd_send_signal(init.get(), 0) != 0) return make_error(ErrorCode::kNotFound, "the sandbox is gone");
  return std::move(*fd);
}

// `path` below `root`, resolved as the sandbox would (its symlinks stay in
// its tree), as an O_PATH directory fd.
Result<sys::UniqueFd> dir_in(int root, const std::string& path) {
  int fd = sys::raw::openat2(root, path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC, 0,
                             RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
  if (fd >= 0) return sys::UniqueFd(fd);
  int err = errno;
  if (err == ENOENT) return make_error(ErrorCode::kNotFound, path + " does not exist in the sandbox", err);
  if (err == ENOTDIR) return make_error(ErrorCode::kInvalidArgument, path + " is not a directory in the sandbox", err);
  return make_error(ErrorCode::kInvalidArgument, "cannot open " + path + " in the sandbox", err);
}

Status check_path(const std::string& path) {
  if (path.empty() || path[0] != '/' || path.size() > 4096 || path.find('\0') != std::string::npos) {
    return make_error(ErrorCode::kInvalidArgument, "path must be absolute (at most 4096 bytes)");
  }
  return ok();
}

std::string fd_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

}  // namespace

Result<uint64_t> save_sandbox_dir(const sys::Pidfd& init, const std::string& path, const std::string& dst,
                                  const DirCopyLimits& limits) {
  COPPICE_TRY(check_path(path));
  COPPICE_ASSIGN_OR_RETURN(auto root, root_of(init));
  COPPICE_ASSIGN_OR_RETURN(auto dir, dir_in(root.get(), path));
  // Its size first (bounded walk): nothing is copied past the limits.
  auto readable = sys::open_file(fd_path(dir.get()), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (!readable) return std::unexpected(std::move(readable.error()).context(path));
  sys::DiskUsageBudget budget;
  budget.max_entries = limits.max_entries;
  auto du = sys::disk_usage_below(readable->get(), budget);
  if (!du) return std::unexpected(std::move(du.error()).context(path));
  if (!du->complete || du->bytes > limits.max_bytes) {
    return make_error(ErrorCode::kTooLarge, path + " holds more than a directory snapshot may (" +
                                                std::to_string(limits.max_bytes >> 20) + " MiB, " +
                                                std::to_string(limits.max_entries) + " entries)");
  }
  const auto slash = dst.find_last_of('/');
  auto dst_parent = sys::open_file(dst.substr(0, slash), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (!dst_parent) return std::unexpected(dst_parent.error());
  auto copied = sys::copy_tree_at(dir.get(), dst_parent->get(), dst.substr(slash + 1));
  if (!copied) {
    auto e = std::move(copied.error()).context("copy " + path);
    if (e.code() == ErrorCode::kFailedPrecondition) return make_error(ErrorCode::kInvalidArgument, e.message());
    return std::unexpected(std::move(e));
  }
  // du sees only what shares the directory's st_dev, and overlayfs shows a
  // file with its layer's: the copy's own count is checked again.
  if (copied->bytes > limits.max_bytes) {
    (void)sys::remove_tree(dst);
    return make_error(ErrorCode::kTooLarge, path + " holds more than a directory snapshot may (" +
                                                std::to_string(limits.max_bytes >> 20) + " MiB)");
  }
  return std::max<uint64_t>(du->bytes, copied->bytes);
}

Status restore_sandbox_dir(const sys::Pidfd& init, uid_t dst_root, const std::string& src, uid_t src_root,
                           const std::string& path) {
  COPPICE_TRY(check_path(path));
  auto slash = path.find_last_of('/');
  const std::string parent = slash == 0 ? "/" : path.substr(0, slash);
  const std::string name = path.substr(slash + 1);
  if (name.empty() || name == "." || name == "..") {
    return make_error(ErrorCode::kInvalidArgument, "path must name a new directory, got " + path);
  }
  COPPICE_ASSIGN_OR_RETURN(auto root, root_of(init));
  COPPICE_ASSIGN_OR_RETURN(auto at, dir_in(root.get(), parent));
  // The copy seen with the target's ids: an idmapped view of it.
  sys::IdRange map{src_root, dst_root, kIdsPerSlot};
  auto userns = sys::make_userns(map, map, 0);
  if (!userns) return std::unexpected(std::move(userns.error()).context("restore " + path));
  auto tree = volume_tree(src, userns->get());
  if (!tree) return std::unexpected(std::move(tree.error()).context("restore " + path));
  auto copied = sys::copy_tree_at(tree->get(), at.get(), name);
  if (!copied) {
    if (copied.error().sys_errno() == EEXIST) {
      return make_error(ErrorCode::kAlreadyExists, path + " exists in the sandbox already", EEXIST);
    }
    return std::unexpected(std::move(copied.error()).context("restore " + path));
  }
  return ok();
}

Result<uint64_t> merge_layer_into(const sys::Pidfd& init, uid_t dst_root, const std::string& layer, uid_t layer_root) {
  const std::string ctx = "merge a layer into the sandbox";
  // The layer seen with the target's ids.
  sys::IdRange map{layer_root, dst_root, kIdsPerSlot};
  auto userns = sys::make_userns(map, map, 0);
  if (!userns) return std::unexpected(std::move(userns.error()).context(ctx));
  auto view = volume_tree(layer, userns->get());
  if (!view) return std::unexpected(std::move(view.error()).context(ctx));
  // The sandbox's root mount alone (a detached copy: none of the mounts on
  // it, /proc, /dev and the like), so what is merged lands in its overlay.
  auto mntns = ns_of(init, "mnt");
  if (!mntns) return std::unexpected(std::move(mntns.error()).context(ctx));
  sys::UniqueFd root;
  COPPICE_TRY_CTX(in_mount_ns(mntns->get(),
                              [&]() -> Status {
                                int fd = sys::raw::open_tree(AT_FDCWD, "/", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
                                if (fd < 0) return errno_error("copy the sandbox's root mount");
                                root = sys::UniqueFd(fd);
                                return ok();
                              }),
                  ctx);
  auto merged = sys::merge_overlay_layer(view->get(), root.get());
  if (!merged) return std::unexpected(std::move(merged.error()).context(ctx));
  return merged->files + merged->dirs + merged->others;
}

}  // namespace coppice::sandbox::ns
