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

Result<StateDir> StateDir::prepare(const std::string& dir, uid_t host_root, const std::string& template_root) {
  if (dir.empty() || dir[0] != '/') return make_error(ErrorCode::kInvalidArgument, "state dir must be absolute: " + dir);
  struct stat tst;
  if (::stat(template_root.c_str(), &tst) != 0) return errno_error("template rootfs " + template_root);
  if (!S_ISDIR(tst.st_mode)) return make_error(ErrorCode::kInvalidArgument, "template rootfs is not a directory: " + template_root);

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
  const StatePaths& p = *s.paths_;
  COPPICE_TRY_CTX(sys::make_dir(p.upper, tst.st_mode & 07777), "state dir");
  COPPICE_TRY_CTX(sys::change_owner(p.upper, host_root, host_root), "state dir");
  COPPICE_TRY_CTX(sys::make_dir(p.work, 0700), "state dir");
  COPPICE_TRY_CTX(sys::make_dir(p.lower, 0755), "state dir");
  COPPICE_TRY_CTX(sys::make_dir(p.rootfs, 0755), "state dir");
  COPPICE_TRY_CTX(sys::make_dir(p.run, 0700), "state dir");
  COPPICE_TRY_CTX(sys::change_owner(p.run, host_root, host_root), "state dir");
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
