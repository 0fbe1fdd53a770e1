#include "sys/btrfs.h"

#include <linux/btrfs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>

#include <charconv>
#include <cstdio>
#include <cstring>

#include "sys/fsutil.h"

namespace coppice::sys::btrfs {

namespace {
// linux/btrfs.h of Debian 12 (6.1) predates simple quotas (6.7).
constexpr uint64_t kQuotaCtlEnableSimple = 4;

std::string sysfs_dir(const std::string& fsid) { return "/sys/fs/btrfs/" + fsid; }
}  // namespace

bool is_btrfs(int fd) {
  struct statfs st;
  return ::fstatfs(fd, &st) == 0 && static_cast<uint64_t>(st.f_type) == BTRFS_SUPER_MAGIC;
}

Result<std::string> fsid(int fd) {
  struct btrfs_ioctl_fs_info_args info;
  std::memset(&info, 0, sizeof info);
  if (::ioctl(fd, BTRFS_IOC_FS_INFO, &info) != 0) return errno_error("BTRFS_IOC_FS_INFO");
  char out[37];
  const uint8_t* u = info.fsid;
  std::snprintf(out, sizeof out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
                u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
  return std::string(out);
}

Result<QuotaMode> quota_mode(int fd) {
  COPPICE_ASSIGN_OR_RETURN(std::string id, fsid(fd));
  const std::string dir = sysfs_dir(id) + "/qgroups";
  if (!path_exists(dir)) return QuotaMode::kOff;
  auto mode = read_file(dir + "/mode");
  // Kernels before 6.8 have no "mode" file: full quota groups.
  if (!mode) return QuotaMode::kQgroup;
  return mode->starts_with("squota") ? QuotaMode::kSimple : QuotaMode::kQgroup;
}

Status enable_simple_quota(int fd) {
  struct btrfs_ioctl_quota_ctl_args a;
  std::memset(&a, 0, sizeof a);
  a.cmd = kQuotaCtlEnableSimple;
  if (::ioctl(fd, BTRFS_IOC_QUOTA_CTL, &a) != 0) return errno_error("enable btrfs simple quotas");
  return ok();
}

Status create_subvolume(int parent_fd, const std::string& name) {
  struct btrfs_ioctl_vol_args a;
  std::memset(&a, 0, sizeof a);
  if (name.empty() || name.size() > BTRFS_PATH_NAME_MAX || name.find('/') != std::string::npos) {
    return make_error(ErrorCode::kInvalidArgument, "bad subvolume name \"" + name + "\"");
  }
  std::memcpy(a.name, name.data(), name.size());
  if (::ioctl(parent_fd, BTRFS_IOC_SUBVOL_CREATE, &a) != 0) return errno_error("create subvolume " + name);
  return ok();
}

Status snapshot_subvolume(int src_fd, int parent_fd, const std::string& name, bool readonly) {
  struct btrfs_ioctl_vol_args_v2 a;
  std::memset(&a, 0, sizeof a);
  if (name.empty() || name.size() > BTRFS_SUBVOL_NAME_MAX || name.find('/') != std::string::npos) {
    return make_error(ErrorCode::kInvalidArgument, "bad subvolume name \"" + name + "\"");
  }
  a.fd = src_fd;
  a.flags = readonly ? BTRFS_SUBVOL_RDONLY : 0;
  std::memcpy(a.name, name.data(), name.size());
  if (::ioctl(parent_fd, BTRFS_IOC_SNAP_CREATE_V2, &a) != 0) return errno_error("snapshot subvolume as " + name);
  return ok();
}

Status make_writable(int fd) {
  uint64_t flags = 0;
  if (::ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, &flags) != 0) return errno_error("BTRFS_IOC_SUBVOL_GETFLAGS");
  if (!(flags & BTRFS_SUBVOL_RDONLY)) return ok();
  flags &= ~static_cast<uint64_t>(BTRFS_SUBVOL_RDONLY);
  if (::ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, &flags) != 0) return errno_error("BTRFS_IOC_SUBVOL_SETFLAGS");
  return ok();
}

Result<uint64_t> subvolume_id(int fd) {
  struct btrfs_ioctl_get_subvol_info_args info;
  std::memset(&info, 0, sizeof info);
  // Succeeds with 1 as well as 0 (a lookup's "not an exact match" leaks out
  // of the kernel's implementation): only a negative answer is a failure.
  if (::ioctl(fd, BTRFS_IOC_GET_SUBVOL_INFO, &info) < 0) return errno_error("BTRFS_IOC_GET_SUBVOL_INFO");
  return static_cast<uint64_t>(info.treeid);
}

Status set_limit(int fd, uint64_t bytes) {
  struct btrfs_ioctl_qgroup_limit_args a;
  std::memset(&a, 0, sizeof a);
  a.qgroupid = 0;  // the subvolume of `fd`
  a.lim.flags = BTRFS_QGROUP_LIMIT_MAX_RFER;
  a.lim.max_rfer = bytes ? bytes : ~0ull;  // all ones: no limit
  if (::ioctl(fd, BTRFS_IOC_QGROUP_LIMIT, &a) != 0) return errno_error("BTRFS_IOC_QGROUP_LIMIT");
  return ok();
}

Status resize_to_device(int fd) {
  struct btrfs_ioctl_vol_args a;
  std::memset(&a, 0, sizeof a);
  std::memcpy(a.name, "max", 3);
  if (::ioctl(fd, BTRFS_IOC_RESIZE, &a) != 0) return errno_error("resize btrfs to its device");
  return ok();
}

Result<uint64_t> charged_bytes(const std::string& fsid, uint64_t subvol) {
  const std::string dir = sysfs_dir(fsid) + "/qgroups/0_" + std::to_string(subvol) + "/";
  uint64_t sum = 0;
  for (const char* name : {"referenced", "rsv_data"}) {
    COPPICE_ASSIGN_OR_RETURN(std::string text, read_file(dir + name));
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc()) return make_error(ErrorCode::kInternal, "unreadable " + dir + name + ": \"" + text + "\"");
    (void)end;
    sum += v;
  }
  return sum;
}

}  // namespace coppice::sys::btrfs
