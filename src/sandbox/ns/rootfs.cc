#include "sandbox/ns/rootfs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "sys/fd.h"
#include "sys/fsutil.h"

namespace coppice::sandbox::ns {

StateDir::~StateDir() {
  if (armed_ && paths_) {
    if (auto s = remove_state_dir(paths_->dir); !s) {
      COPPICE_LOG(warn) << "state dir cleanup: " << s.error().to_string();
    }
  }
}

Status make_state_layout(const StatePaths& p, mode_t upper_mode, uid_t host_root) {
  COPPICE_TRY_CTX(sys::make_dir(p.upper, upper_mode), "state dir");
  COPPICE_TRY_CTX(sys::make_dir(p.work, 0700), "state dir");
  COPPICE_TRY_CTX(sys::make_dir(p.lower, 0755), "state dir");
  COPPICE_TRY_CTX(sys::make_dir(p.rootfs, 0755), "state dir");
  COPPICE_TRY_CTX(sys::make_dir(p.run, 0700), "state dir");
  if (host_root != 0) {
    COPPICE_TRY_CTX(sys::change_owner(p.upper, host_root, host_root), "state dir");
    COPPICE_TRY_CTX(sys::change_owner(p.run, host_root, host_root), "state dir");
  }
  return ok();
}

namespace {
Result<mode_t> template_root_mode(const std::string& template_root) {
  struct stat tst;
  if (::stat(template_root.c_str(), &tst) != 0) return errno_error("template rootfs " + template_root);
  if (!S_ISDIR(tst.st_mode)) return make_error(ErrorCode::kInvalidArgument, "template rootfs is not a directory: " + template_root);
  return tst.st_mode & 07777;
}

Status check_absolute(const std::string& dir) {
  if (dir.empty() || dir[0] != '/') return make_error(ErrorCode::kInvalidArgument, "state dir must be absolute: " + dir);
  return ok();
}
}  // namespace

Result<StateDir> StateDir::prepare(const std::string& dir, uid_t host_root, const std::string& template_root) {
  COPPICE_TRY_CTX(check_absolute(dir), "state dir");
  auto mode = template_root_mode(template_root);
  if (!mode) return std::unexpected(mode.error());

  size_t slash = dir.find_last_of('/');
  if (slash > 0) COPPICE_TRY_CTX(sys::make_dirs(dir.substr(0, slash), 0755), "state dir parent");
  if (::mkdir(dir.c_str(), 0700) != 0) {
    if (errno != EEXIST) return errno_error("mkdir " + dir);
    // An empty directory made by the caller is taken over; anything else may
    // belong to another sandbox.
    auto names = sys::list_dir(dir);
    if (!names || !names->empty()) {
      return make_error(ErrorCode::kAlreadyExists, "state dir exists and is not empty: " + dir, EEXIST);
    }
  }
  StateDir s;
  s.paths_ = std::make_unique<StatePaths>(dir);
  s.armed_ = true;
  COPPICE_TRY_CTX(make_state_layout(*s.paths_, *mode, host_root), dir);
  return s;
}

Result<StateDir> StateDir::adopt(const std::string& skeleton, const std::string& dir, uid_t host_root,
                                 const std::string& template_root) {
  COPPICE_TRY_CTX(check_absolute(dir), "state dir");
  auto mode = template_root_mode(template_root);
  if (!mode) return std::unexpected(mode.error());
  const StatePaths from(skeleton);
  if (*mode != kSkeletonUpperMode) {
    if (::chmod(from.upper.c_str(), *mode) != 0) return errno_error("chmod " + from.upper);
  }
  COPPICE_TRY_CTX(sys::change_owner(from.upper, host_root, host_root), "state dir");
  COPPICE_TRY_CTX(sys::change_owner(from.run, host_root, host_root), "state dir");
  // rename(2) replaces an empty directory made by the caller and refuses
  // anything else (ENOTEMPTY/EEXIST); a missing parent is made once.
  int r = ::rename(skeleton.c_str(), dir.c_str());
  if (r != 0 && errno == ENOENT) {
    size_t slash = dir.find_last_of('/');
    if (slash > 0) COPPICE_TRY_CTX(sys::make_dirs(dir.substr(0, slash), 0755), "state dir parent");
    r = ::rename(skeleton.c_str(), dir.c_str());
  }
  if (r != 0) {
    if (errno == ENOTEMPTY || errno == EEXIST) {
      return make_error(ErrorCode::kAlreadyExists, "state dir exists and is not empty: " + dir, EEXIST);
    }
    return errno_error("move spare state dir " + skeleton + " to " + dir);
  }
  StateDir s;
  s.paths_ = std::make_unique<StatePaths>(dir);
  s.armed_ = true;
  return s;
}

Status remove_state_dir(const std::string& dir) { return sys::remove_tree(dir); }

namespace {
uint64_t du_fd(int dfd, int depth) {
  DIR* d = ::fdopendir(dfd);
  if (!d) {
    ::close(dfd);
    return 0;
  }
  uint64_t total = 0;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view n(e->d_name);
    if (n == "." || n == "..") continue;
    struct stat st;
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    total += static_cast<uint64_t>(st.st_blocks) * 512;
    if (S_ISDIR(st.st_mode) && depth < 256) {
      int sub = ::openat(::dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub >= 0) total += du_fd(sub, depth + 1);
    }
  }
  ::closedir(d);
  return total;
}
}  // namespace

Result<uint64_t> upper_disk_bytes(const std::string& dir) {
  std::string upper = dir + "/upper";
  int fd = ::open(upper.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno_error("open " + upper);
  return du_fd(fd, 0);
}

}  // namespace coppice::sandbox::ns
