#include "sandbox/ns/disk_quota.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <vector>

#include "common/log.h"
#include "sys/btrfs.h"
#include "sys/fsutil.h"
#include "sys/loop.h"
#include "sys/spawn.h"

namespace coppice::sandbox::ns {

namespace {

namespace btrfs = sys::btrfs;

// Mount options of the image: usage figures (and the quota groups of removed
// subvolumes) move at each commit, so commit every 5 s rather than 30; free
// space goes back to the host (holes punched in the image) in the background.
constexpr const char* kMountOptions = "commit=5,discard=async";

// Entries of the sandboxes' dir that are not sandboxes' state: the trash and
// the spare skeletons (ids never start with '.'). Removed before the image is
// mounted over them.
bool is_housekeeping(const std::string& name) { return name == ".trash" || name == ".spare"; }

// Undoes octal escapes (\040 for a space) of a /proc/self/mountinfo field.
std::string unescape_mountinfo(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\') {
      int v = 0;
      bool octal = true;
      for (size_t k = 1; k <= 3; ++k) {
        if (i + k >= s.size() || s[i + k] < '0' || s[i + k] > '7') {
          octal = false;
          break;
        }
        v = v * 8 + (s[i + k] - '0');
      }
      if (octal) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

// The source (e.g. "/dev/loop3") of the topmost mount at `dir`, "" if none.
std::string mount_source_at(const std::string& dir) {
  auto info = sys::read_file("/proc/self/mountinfo");
  if (!info) return "";
  std::string source;
  std::string_view all(*info);
  while (!all.empty()) {
    size_t nl = all.find('\n');
    std::string_view line = all.substr(0, nl);
    all.remove_prefix(nl == std::string_view::npos ? all.size() : nl + 1);
    // id parent major:minor root mountpoint options [optional...] - fstype source superopts
    std::vector<std::string_view> f;
    size_t pos = 0;
    while (pos <= line.size()) {
      size_t sp = line.find(' ', pos);
      if (sp == std::string_view::npos) sp = line.size();
      f.push_back(line.substr(pos, sp - pos));
      pos = sp + 1;
    }
    if (f.size() < 5 || unescape_mountinfo(f[4]) != dir) continue;
    for (size_t i = 5; i + 2 < f.size(); ++i) {
      if (f[i] == "-") {
        source = unescape_mountinfo(f[i + 2]);
        break;
      }
    }
  }
  return source;
}

// Runs `argv` (argv[0] from the usual sbin/bin dirs) and waits for it; a
// failure quotes what it printed.
Status run_program(const std::vector<std::string>& argv) {
  auto pipe = sys::make_pipe();
  if (!pipe) return std::unexpected(pipe.error());
  sys::SpawnOptions o;
  o.path = argv[0];
  o.argv = argv;
  o.env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"};
  o.stdout_fd = pipe->second.get();
  o.stderr_fd = pipe->second.get();
  auto pid = sys::spawn(o);
  if (!pid) return std::unexpected(std::move(pid.error()).context(argv[0]));
  pipe->second.reset();
  auto out = sys::read_all_limited(pipe->first.get(), argv[0], 64 << 10);
  int status = 0;
  while (::waitpid(*pid, &status, 0) < 0) {
    if (errno != EINTR) return errno_error("wait for " + argv[0]);
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return ok();
  std::string text = out ? *out : std::string();
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return make_error(ErrorCode::kInternal, argv[0] + " failed" + (text.empty() ? "" : ": " + text));
}

// A new image at `image`: made under a temporary name, formatted, then renamed,
// so a crash never leaves a half-made image under the real name.
Status make_image(const std::string& image, uint64_t bytes) {
  const std::string tmp = image + ".new";
  (void)sys::remove_file(tmp);
  {
    auto f = sys::open_file(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (!f) return std::unexpected(std::move(f.error()).context("disk image"));
    if (::ftruncate(f->get(), static_cast<off_t>(bytes)) != 0) {
      int err = errno;
      (void)sys::remove_file(tmp);
      return errno_error("size disk image " + tmp, err);
    }
  }
  if (auto s = run_program({"mkfs.btrfs", "-q", "-f", tmp}); !s) {
    (void)sys::remove_file(tmp);
    return std::unexpected(std::move(s.error()).context("format disk image " + tmp));
  }
  if (::rename(tmp.c_str(), image.c_str()) != 0) {
    int err = errno;
    (void)sys::remove_file(tmp);
    return errno_error("rename " + tmp, err);
  }
  return ok();
}

// The default size of a new image: a quarter of what is free beside it.
uint64_t default_image_bytes(const std::string& image) {
  std::string parent = image.substr(0, image.find_last_of('/'));
  struct statvfs v;
  uint64_t free = 0;
  if (::statvfs(parent.empty() ? "/" : parent.c_str(), &v) == 0) free = uint64_t(v.f_bavail) * v.f_frsize;
  return std::max<uint64_t>(free / 4, 1ull << 30);
}

// Grows the image file (and the loop device over it, if attached) to `bytes`.
Status grow_image(const std::string& image, uint64_t bytes, const std::string& loop_dev) {
  auto f = sys::open_file(image, O_WRONLY);
  if (!f) return std::unexpected(std::move(f.error()).context("grow disk image"));
  if (::ftruncate(f->get(), static_cast<off_t>(bytes)) != 0) return errno_error("grow disk image " + image);
  if (!loop_dev.empty()) {
    auto d = sys::open_file(loop_dev, O_RDWR);
    if (!d) return std::unexpected(std::move(d.error()).context("grow disk image"));
    if (::ioctl(d->get(), LOOP_SET_CAPACITY, 0) != 0) return errno_error("LOOP_SET_CAPACITY " + loop_dev);
  }
  return ok();
}

// Removes the housekeeping entries of `dir` (a quota-less run's trash and
// spares); fails if anything else is there.
Status clear_for_mount(const std::string& dir) {
  COPPICE_ASSIGN_OR_RETURN(auto names, sys::list_dir(dir));
  for (const auto& n : names) {
    if (!is_housekeeping(n)) {
      return make_error(ErrorCode::kFailedPrecondition,
                        dir + " holds sandbox state made without disk quotas (" + n +
                            "): stop those sandboxes first, or run with --disk-quota=off");
    }
  }
  for (const auto& n : names) COPPICE_TRY(sys::remove_tree(sys::join_path(dir, n)));
  return ok();
}

std::string mib(uint64_t b) { return std::to_string(b >> 20) + " MiB"; }

}  // namespace

Result<std::unique_ptr<DiskQuota>> DiskQuota::open(const DiskQuotaOptions& opts) {
  if (opts.dir.empty() || opts.dir[0] != '/' || opts.image.empty() || opts.image[0] != '/') {
    return make_error(ErrorCode::kInvalidArgument, "disk quota: dir and image must be absolute paths");
  }
  if (opts.image_bytes != 0 && opts.image_bytes < kMinImageBytes) {
    return make_error(ErrorCode::kInvalidArgument,
                      "disk quota: the image must have at least " + mib(kMinImageBytes) + " (asked " +
                          std::to_string(opts.image_bytes) + " bytes)");
  }
  COPPICE_TRY_CTX(sys::make_dirs(opts.dir, 0711), "disk quota");
  char real[PATH_MAX];
  if (!::realpath(opts.dir.c_str(), real)) return errno_error("disk quota: realpath " + opts.dir);
  std::unique_ptr<DiskQuota> q(new DiskQuota());
  q->dir_ = real;

  // Whether the image is (still) attached, and whether it is what `dir` mounts.
  auto image_dev = [&]() -> std::string {
    if (!sys::path_exists(opts.image)) return "";
    auto d = sys::loop_find(opts.image);
    return d ? *d : "";
  };
  std::string dev = image_dev();
  const bool ours_mounted = !dev.empty() && mount_source_at(q->dir_) == dev;

  COPPICE_ASSIGN_OR_RETURN(auto dfd, sys::open_dir(q->dir_));
  if (!ours_mounted && btrfs::is_btrfs(dfd.get())) {
    auto mode = btrfs::quota_mode(dfd.get());
    if (mode && *mode != btrfs::QuotaMode::kOff) {
      COPPICE_ASSIGN_OR_RETURN(q->fsid_, btrfs::fsid(dfd.get()));
      q->describe_ = "btrfs quotas in place on " + q->dir_;
      return q;
    }
  }

  uint64_t grow_to = 0;
  if (!sys::path_exists(opts.image)) {
    const uint64_t bytes = opts.image_bytes ? opts.image_bytes : default_image_bytes(opts.image);
    COPPICE_TRY_CTX(make_image(opts.image, bytes), "disk quota");
    COPPICE_LOG(info) << "disk quota: made " << opts.image << " (" << mib(bytes) << ", sparse, btrfs)";
  } else if (opts.image_bytes) {
    struct stat st;
    if (::stat(opts.image.c_str(), &st) != 0) return errno_error("disk quota: stat " + opts.image);
    const uint64_t have = static_cast<uint64_t>(st.st_size);
    if (opts.image_bytes < have) {
      return make_error(ErrorCode::kInvalidArgument, "disk quota: " + opts.image + " has " + mib(have) +
                                                         " and cannot shrink to " + mib(opts.image_bytes) +
                                                         " (ask for at least its size)");
    }
    if (opts.image_bytes > have) {
      COPPICE_TRY_CTX(grow_image(opts.image, opts.image_bytes, dev), "disk quota");
      grow_to = opts.image_bytes;
    }
  }

  if (!ours_mounted) {
    COPPICE_TRY_CTX(clear_for_mount(q->dir_), "disk quota");
    // A device still attached to the image (mounted elsewhere, or being
    // released) is mounted again rather than a second one attached: two
    // devices over one btrfs image would corrupt it.
    sys::LoopDevice attached;
    for (int attempt = 0;; ++attempt) {
      dev = image_dev();
      if (dev.empty()) {
        auto a = sys::loop_attach(opts.image);
        if (!a) return std::unexpected(std::move(a.error()).context("disk quota"));
        attached = std::move(*a);
        dev = attached.path;
      }
      if (::mount(dev.c_str(), q->dir_.c_str(), "btrfs", 0, kMountOptions) == 0) break;
      int err = errno;
      // ENXIO/ENODEV: the device found was detached meanwhile (autoclear).
      if (attached.fd || attempt >= 2 || (err != ENXIO && err != ENODEV && err != ENOENT)) {
        return errno_error("disk quota: mount " + dev + " (" + opts.image + ") on " + q->dir_, err);
      }
    }
    // The mount holds the device now; autoclear detaches it at unmount.
  }
  q->image_mounted_ = true;
  COPPICE_ASSIGN_OR_RETURN(auto mfd, sys::open_dir(q->dir_));
  auto fail = [&](Error e) -> Result<std::unique_ptr<DiskQuota>> {
    if (!ours_mounted) (void)::umount2(q->dir_.c_str(), MNT_DETACH);
    return std::unexpected(std::move(e).context("disk quota"));
  };
  if (!btrfs::is_btrfs(mfd.get())) return fail(Error(ErrorCode::kInternal, q->dir_ + " is not btrfs after mount"));
  // The file system's root holds every sandbox's layer (set-uid files the
  // sandboxes made among them): its owner's alone.
  if (::fchmod(mfd.get(), 0700) != 0) return fail(Error::from_errno(errno, "chmod " + q->dir_));
  if (grow_to) {
    if (auto s = btrfs::resize_to_device(mfd.get()); !s) return fail(s.error());
    COPPICE_LOG(info) << "disk quota: grew " << opts.image << " to " << mib(grow_to);
  }
  auto mode = btrfs::quota_mode(mfd.get());
  if (!mode) return fail(mode.error());
  if (*mode == btrfs::QuotaMode::kOff) {
    if (auto s = btrfs::enable_simple_quota(mfd.get()); !s) return fail(s.error());
  }
  auto id = btrfs::fsid(mfd.get());
  if (!id) return fail(id.error());
  q->fsid_ = *id;
  q->describe_ = "btrfs image " + opts.image + " on " + dev + " mounted at " + q->dir_ +
                 (ours_mounted ? " (already mounted)" : "");
  return q;
}

Status DiskQuota::make_layer(const std::string& state_dir) const {
  size_t slash = state_dir.find_last_of('/');
  if (slash == std::string::npos || slash + 1 >= state_dir.size()) {
    return make_error(ErrorCode::kInvalidArgument, "bad state dir " + state_dir);
  }
  const std::string parent = slash ? state_dir.substr(0, slash) : "/";
  COPPICE_TRY_CTX(sys::make_dirs(parent, 0711), "state dir parent");
  COPPICE_ASSIGN_OR_RETURN(auto pfd, sys::open_dir(parent));
  COPPICE_TRY_CTX(btrfs::create_subvolume(pfd.get(), state_dir.substr(slash + 1)), parent);
  if (::fchmodat(pfd.get(), state_dir.c_str() + slash + 1, 0700, 0) != 0) {
    int err = errno;
    (void)sys::remove_dir(state_dir);
    return errno_error("chmod " + state_dir, err);
  }
  return ok();
}

Status DiskQuota::snapshot_layer(const std::string& src_state_dir, const std::string& dst_state_dir,
                                 bool readonly) const {
  const std::string ctx = "snapshot " + src_state_dir + " as " + dst_state_dir;
  size_t slash = dst_state_dir.find_last_of('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 >= dst_state_dir.size()) {
    return make_error(ErrorCode::kInvalidArgument, ctx + ": bad state dir");
  }
  COPPICE_ASSIGN_OR_RETURN(auto src, sys::open_dir(src_state_dir));
  COPPICE_ASSIGN_OR_RETURN(uint64_t id, btrfs::subvolume_id(src.get()));
  struct stat st;
  if (::fstat(src.get(), &st) != 0) return errno_error(ctx + ": stat");
  // A subvolume's root directory is inode 256 (BTRFS_FIRST_FREE_OBJECTID);
  // the ioctl would snapshot the whole subvolume around any other directory.
  if (id == 5 || st.st_ino != 256) {
    return make_error(ErrorCode::kFailedPrecondition, ctx + ": the source is not a layer of its own");
  }
  COPPICE_ASSIGN_OR_RETURN(auto parent, sys::open_dir(dst_state_dir.substr(0, slash)));
  COPPICE_TRY_CTX(btrfs::snapshot_subvolume(src.get(), parent.get(), dst_state_dir.substr(slash + 1), readonly), ctx);
  return ok();
}

Status DiskQuota::set_limit(const std::string& state_dir, uint64_t bytes) const {
  COPPICE_ASSIGN_OR_RETURN(auto fd, sys::open_dir(state_dir));
  COPPICE_TRY_CTX(btrfs::set_limit(fd.get(), bytes), "disk quota of " + state_dir);
  return ok();
}

Result<uint64_t> DiskQuota::used(const std::string& state_dir) const {
  COPPICE_ASSIGN_OR_RETURN(auto fd, sys::open_dir(state_dir));
  COPPICE_ASSIGN_OR_RETURN(uint64_t id, btrfs::subvolume_id(fd.get()));
  if (id == 5) return make_error(ErrorCode::kFailedPrecondition, state_dir + " is not a subvolume of its own");
  auto b = btrfs::charged_bytes(fsid_, id);
  if (!b) return std::unexpected(std::move(b.error()).context("disk usage of " + state_dir));
  return *b;
}

Status DiskQuota::check_room(uint64_t min_free) const {
  struct statvfs v;
  if (::statvfs(dir_.c_str(), &v) != 0) return errno_error("statvfs " + dir_);
  const uint64_t free = uint64_t(v.f_bavail) * v.f_frsize;
  if (free < min_free) {
    return make_error(ErrorCode::kResourceExhausted,
                      "the sandboxes' storage is full (" + mib(free) + " free of " +
                          mib(uint64_t(v.f_blocks) * v.f_frsize) + " at " + dir_ + ")",
                      ENOSPC);
  }
  return ok();
}

Status DiskQuota::unmount() const {
  if (!image_mounted_) return ok();
  if (::umount2(dir_.c_str(), 0) == 0) return ok();
  if (errno != EBUSY) return errno_error("unmount " + dir_);
  if (::umount2(dir_.c_str(), MNT_DETACH) != 0) return errno_error("unmount (lazily) " + dir_);
  COPPICE_LOG(info) << "disk quota: " << dir_ << " was busy; detached (the image is released once unused)";
  return ok();
}

Result<uint64_t> parse_size(std::string_view s) {
  auto bad = [&] {
    return make_error(ErrorCode::kInvalidArgument,
                      "size \"" + std::string(s) + "\": want digits with an optional K, M, G or T suffix");
  };
  if (s.empty()) return bad();
  uint64_t mult = 1;
  switch (s.back()) {
    case 'K': case 'k': mult = 1ull << 10; break;
    case 'M': case 'm': mult = 1ull << 20; break;
    case 'G': case 'g': mult = 1ull << 30; break;
    case 'T': case 't': mult = 1ull << 40; break;
    default: break;
  }
  if (mult != 1) s.remove_suffix(1);
  if (s.empty() || s.size() > 15) return bad();
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return bad();
    v = v * 10 + uint64_t(c - '0');
  }
  if (v > (~0ull) / mult) return bad();
  return v * mult;
}

}  // namespace coppice::sandbox::ns
