#include "sandbox/ns/rootfs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "common/log.h"
#include "sandbox/ns/trash.h"
#include "sys/fd.h"
#include "sys/fsutil.h"
#include "sys/tree_walk.h"

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

// Whether `dir` is a directory with no entries (false when it cannot be read).
bool dir_is_empty(const std::string& dir) {
  sys::UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return false;
  sys::DirReader r;
  if (!r.reset(fd.get())) return false;
  auto e = r.next();
  return e && !*e;
}

Status check_absolute(const std::string& dir) {
  if (dir.empty() || dir[0] != '/') return make_error(ErrorCode::kInvalidArgument, "state dir must be absolute: " + dir);
  return ok();
}
}  // namespace

Result<StateDir> StateDir::prepare(const std::string& dir, uid_t host_root, const std::string& template_root) {
  COPPICE_TRY_CTX(check_absolute(dir), "state dir");
  start_trash_reaper(dir);
  auto mode = template_root_mode(template_root);
  if (!mode) return std::unexpected(mode.error());

  size_t slash = dir.find_last_of('/');
  if (slash > 0) COPPICE_TRY_CTX(sys::make_dirs(dir.substr(0, slash), 0755), "state dir parent");
  if (::mkdir(dir.c_str(), 0700) != 0) {
    if (errno != EEXIST) return errno_error("mkdir " + dir);
    // An empty directory made by the caller is taken over; anything else may
    // belong to another sandbox.
    if (!dir_is_empty(dir)) {
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
  start_trash_reaper(dir);
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

// A walk of the writable layer stops after this many entries or this long,
// and its figure serves every request for the same state dir for a while.
constexpr uint64_t kUpperWalkEntries = 200000;
constexpr auto kUpperWalkTime = std::chrono::milliseconds(50);
constexpr auto kUpperCacheTtl = std::chrono::seconds(5);
// State dirs remembered at most; expired ones go first.
constexpr size_t kUpperCacheMax = 4096;

// Figures by state dir. Process-wide like the trash (trash.h): the backend
// interface asks usage() by id and holds no per-sandbox cache of its own.
class UpperUsageCache {
 public:
  using Clock = std::chrono::steady_clock;
  std::optional<uint64_t> get(const std::string& dir, Clock::time_point now) {
    std::lock_guard lk(mu_);
    auto it = by_dir_.find(dir);
    if (it == by_dir_.end() || now - it->second.at >= kUpperCacheTtl) return std::nullopt;
    return it->second.bytes;
  }
  void put(const std::string& dir, uint64_t bytes, Clock::time_point now) {
    std::lock_guard lk(mu_);
    if (by_dir_.size() >= kUpperCacheMax) {
      std::erase_if(by_dir_, [&](const auto& kv) { return now - kv.second.at >= kUpperCacheTtl; });
      if (by_dir_.size() >= kUpperCacheMax) by_dir_.clear();
    }
    by_dir_[dir] = Figure{bytes, now};
  }

 private:
  struct Figure {
    uint64_t bytes;
    Clock::time_point at;
  };
  std::mutex mu_;
  std::unordered_map<std::string, Figure> by_dir_;
};

UpperUsageCache& upper_cache() {
  static UpperUsageCache c;
  return c;
}

}  // namespace

Result<uint64_t> upper_disk_bytes(const std::string& dir) {
  const auto now = std::chrono::steady_clock::now();
  if (auto cached = upper_cache().get(dir, now)) return *cached;
  std::string upper = dir + "/upper";
  sys::UniqueFd fd(::open(upper.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return errno_error("open " + upper);
  sys::DiskUsageBudget budget;
  budget.max_entries = kUpperWalkEntries;
  budget.deadline = now + kUpperWalkTime;
  auto du = sys::disk_usage_below(fd.get(), budget);
  if (!du) return std::unexpected(std::move(du.error()).context(upper));
  upper_cache().put(dir, du->bytes, now);
  return du->bytes;
}

}  // namespace coppice::sandbox::ns
