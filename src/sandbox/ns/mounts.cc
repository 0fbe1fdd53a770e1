#include "sandbox/ns/mounts.h"

#include <sys/stat.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <sys/mount.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "sys/mount_ops.h"

namespace coppice::sandbox::ns {

const char* mount_op_name(const MountOp& op) {
  switch (op.kind) {
    case MountOp::kMakePrivate: return "make rprivate";
    case MountOp::kFs: return op.fstype;
    case MountOp::kBind: return "bind";
    case MountOp::kBindIdmapped: return "idmapped bind";
    case MountOp::kMountpoint: return "mountpoint";
    case MountOp::kDir: return "mkdir";
    case MountOp::kSymlink: return "symlink";
    case MountOp::kWrite: return "write";
    case MountOp::kChdir: return "chdir";
    case MountOp::kPivot: return "pivot_root";
    case MountOp::kAttach: return "volume";
  }
  return "op";
}

namespace {
// `path` without the leading "<dir>/" (StatePaths names its layers so).
std::string relative_to(const std::string& dir, const std::string& path) {
  return path.starts_with(dir + "/") ? path.substr(dir.size() + 1) : path;
}
}  // namespace

const char* MountPlan::keep(std::string s) {
  strings_.push_back(std::move(s));
  return strings_.back().c_str();
}

void MountPlan::mountpoint(const std::string& path, mode_t mode, bool file) {
  MountOp op{MountOp::kMountpoint};
  op.dst = keep(path);
  op.mode = mode;
  op.file = file;
  ops_.push_back(op);
}

void MountPlan::build(const SandboxSpec& spec, const StatePaths& paths, uid_t host_root, const std::string& resolv_conf,
                      const std::vector<int>& layer_userns) {
  host_root_ = host_root;
  const std::string root = paths.rootfs;
  const std::string h = std::to_string(host_root);
  const std::string owner = ",uid=" + h + ",gid=" + h;
  auto fs = [&](const char* type, const std::string& dst, unsigned long flags, const std::string& data) {
    MountOp op{MountOp::kFs};
    op.fstype = type;
    op.dst = keep(dst);
    op.flags = flags;
    op.data = data.empty() ? nullptr : keep(data);
    ops_.push_back(op);
  };
  auto bind = [&](const std::string& src, const std::string& dst, unsigned long flags) {
    MountOp op{MountOp::kBind};
    op.src = keep(src);
    op.dst = keep(dst);
    op.flags = flags;
    ops_.push_back(op);
  };
  auto symlink = [&](const char* target, const std::string& at) {
    MountOp op{MountOp::kSymlink};
    op.src = target;
    op.dst = keep(at);
    ops_.push_back(op);
  };
  auto write = [&](const std::string& file, const char* data) {
    MountOp op{MountOp::kWrite};
    op.src = data;
    op.dst = keep(file);
    ops_.push_back(op);
  };

  // Nothing mounted from here on may propagate to the host.
  ops_.push_back(MountOp{MountOp::kMakePrivate});

  // The template, idmapped so its root-owned files are owned by the sandbox's
  // root, read-only so no sandbox can change it for the others. overlayfs is
  // mounted here, by host root before the child enters its user namespace:
  // mounting it from inside a user namespace whose root is a non-zero host uid
  // fails with EACCES on our kernels.
  {
    MountOp op{MountOp::kBindIdmapped};
    op.src = keep(spec.rootfs);
    op.dst = keep(paths.lower);
    op.attrs = MOUNT_ATTR_RDONLY;
    ops_.push_back(op);
  }
  // "volatile": no syncs to the upper file system. Without it the overlay's
  // last unmount (when the sandbox's mount namespace dies) syncs the whole
  // host file system of the upper dir, which made destroy take 30-150 ms. A
  // sandbox's writable layer need not survive a host crash; the kernel marks
  // work/ so that a volatile upper is never mounted again after one.
  // The layers are named relative to the state dir (the child's working dir
  // for this one mount): overlayfs shows its options as given in the
  // sandbox's /proc/self/mountinfo, and host paths have no business there.
  // Snapshot layers (topmost first), each at <state>/lower<i>, idmapped from
  // the ids of the sandbox that wrote it onto this sandbox's.
  std::string lowers;
  for (size_t i = 0; i < spec.lower_layers.size() && i < layer_userns.size(); ++i) {
    MountOp op{MountOp::kBindIdmapped};
    op.src = keep(spec.lower_layers[i].dir);
    op.dst = keep(paths.lower + std::to_string(i));
    op.attrs = MOUNT_ATTR_RDONLY;
    op.fd = layer_userns[i];
    ops_.push_back(op);
    lowers += relative_to(paths.dir, paths.lower + std::to_string(i)) + ":";
  }
  {
    MountOp op{MountOp::kChdir};
    op.dst = keep(paths.dir);
    ops_.push_back(op);
  }
  fs("overlay", root, MS_NODEV,
     "lowerdir=" + lowers + relative_to(paths.dir, paths.lower) + ",upperdir=" + relative_to(paths.dir, paths.upper) +
         ",workdir=" + relative_to(paths.dir, paths.work) + ",volatile");

  // Host trees shared read-only (e.g. /usr for templates derived from the
  // host), idmapped for the same reason as the template. First, so the
  // sandbox's own /dev, /proc, ... below win over a careless bind. Set-uid
  // programs there (sudo, su) work like the template's: through the id
  // mapping a host-root-owned program runs as the sandbox's root, never as
  // host root, and files of host ids outside the mapping grant nothing.
  for (const std::string& b : spec.ro_binds) {
    mountpoint(root + b, 0755);
    MountOp op{MountOp::kBindIdmapped};
    op.src = keep(b);
    op.dst = keep(root + b);
    op.attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV;
    op.recursive = true;
    ops_.push_back(op);
  }

  mountpoint(root + "/proc", 0555);
  fs("proc", root + "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "");
  // Per network namespace sysctls, written by host root (the sandbox's root
  // has no rights over its host-owned network namespace): ports below 1024
  // without CAP_NET_BIND_SERVICE over the namespace (what docker does), and
  // ICMP echo sockets for every group, so ping works without raw sockets.
  write(root + "/proc/sys/net/ipv4/ip_unprivileged_port_start", "0");
  write(root + "/proc/sys/net/ipv4/ping_group_range", "0 2147483647");

  // Read-only and masked parts of /proc (the OCI runtime spec's defaults,
  // plus the kernel command line, which names the host's disks and boot
  // options). Paths this kernel lacks are skipped.
  for (const char* f : {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/latency_stats",
                        "/proc/timer_stats", "/proc/cmdline"}) {
    bind("/dev/null", root + f, MS_RDONLY | MS_NOSUID | MS_NOEXEC);
    ops_.back().optional = true;
  }
  for (const char* d : {"/proc/acpi", "/proc/asound", "/proc/scsi"}) {
    fs("tmpfs", root + d, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=555,size=4k");
    ops_.back().optional = true;
  }
  for (const char* p : {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}) {
    bind(root + p, root + p, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
    ops_.back().optional = true;
  }
  // The sandbox's own boot id (launch.cc writes it: new at each boot, kept
  // by a restore), not the host's; after the read-only
  // bind of /proc/sys over itself, which would hide it.
  bind(paths.dir + "/boot_id", root + "/proc/sys/kernel/random/boot_id", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
  ops_.back().optional = true;

  mountpoint(root + "/dev", 0755);
  fs("tmpfs", root + "/dev", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k" + owner);
  for (const char* dev : {"null", "zero", "full", "random", "urandom", "tty"}) {
    mountpoint(root + "/dev/" + dev, 0666, true);
    bind(std::string("/dev/") + dev, root + "/dev/" + dev, 0);
  }
  mountpoint(root + "/dev/pts", 0755);
  // A private devpts instance: the sandbox sees only its own terminals. Its
  // gid option is a host gid: the host gid of the sandbox's "tty" group (5).
  fs("devpts", root + "/dev/pts", MS_NOSUID | MS_NOEXEC,
     "newinstance,ptmxmode=0666,mode=0620,gid=" + std::to_string(host_root + 5));
  symlink("pts/ptmx", root + "/dev/ptmx");
  mountpoint(root + "/dev/shm", 01777);
  const uint64_t shm = spec.shm_bytes ? spec.shm_bytes : std::max<uint64_t>(spec.limits.memory_bytes / 4, 1 << 20);
  fs("tmpfs", root + "/dev/shm", MS_NOSUID | MS_NODEV, "mode=1777,size=" + std::to_string(shm) + owner);
  symlink("/proc/self/fd", root + "/dev/fd");
  symlink("/proc/self/fd/0", root + "/dev/stdin");
  symlink("/proc/self/fd/1", root + "/dev/stdout");
  symlink("/proc/self/fd/2", root + "/dev/stderr");

  mountpoint(root + "/sys", 0555);
  fs("sysfs", root + "/sys", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "");
  // sysfs is not namespaced beyond the network: hide firmware tables, power
  // capping and the host's block devices (their /sys/devices/... entries
  // stay reachable by a walk of the device tree, read-only).
  for (const char* d : {"/sys/firmware", "/sys/devices/virtual/powercap", "/sys/block", "/sys/class/block",
                        "/sys/dev/block", "/sys/devices/virtual/block"}) {
    fs("tmpfs", root + d, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=555,size=4k");
    ops_.back().optional = true;
  }

  // /tmp is the template's, in the writable layer like the rest of the
  // root (as on E2B): what a sandbox writes there is disk, not memory, so a
  // large temporary file is not charged to the sandbox's memory limit. A
  // template without one gets it, world-writable and sticky.
  {
    MountOp op{MountOp::kDir};
    op.dst = keep(root + "/tmp");
    op.mode = 01777;
    ops_.push_back(op);
  }

  // Ours, on a tmpfs so nothing of it lands in the writable layer.
  mountpoint(root + "/.coppice", 0755);
  fs("tmpfs", root + "/.coppice", MS_NOSUID | MS_NODEV, "mode=755,size=16k" + owner);
  mountpoint(root + "/.coppice/envd", 0755, true);
  bind(spec.envd_path, root + "/.coppice/envd", MS_RDONLY | MS_NOSUID | MS_NODEV);
  if (!spec.interp_path.empty()) {
    mountpoint(root + "/.coppice/interp", 0755, true);
    bind(spec.interp_path, root + "/.coppice/interp", MS_RDONLY | MS_NOSUID | MS_NODEV);
  }
  if (!resolv_conf.empty()) {
    // The sandbox's resolver is the gateway's (on its bridge address).
    mountpoint(root + "/etc/resolv.conf", 0644, true);
    ops_.back().optional = true;  // a template without /etc
    bind(resolv_conf, root + "/etc/resolv.conf", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
    ops_.back().optional = true;
    ops_.back().regular_only = true;
  }
  mountpoint(root + "/.coppice/run", 0700);
  bind(paths.run, root + "/.coppice/run", MS_NOSUID | MS_NODEV | MS_NOEXEC);

  MountOp pivot{MountOp::kPivot};
  pivot.dst = keep(root);
  ops_.push_back(pivot);
}

void MountPlan::attach(int tree_fd, const std::string& path) {
  MountOp op{MountOp::kAttach};
  op.fd = tree_fd;
  op.dst = keep(path);
  ops_.push_back(op);
}

int MountPlan::run(int userns_fd, const MountOp** failed, uint64_t* op_times, int pidns_fd) const {
  size_t index = 0;
  for (const MountOp& op : ops_) {
    int err = 0;
    switch (op.kind) {
      case MountOp::kMakePrivate:
        err = sys::mnt::make_rprivate();
        break;
      case MountOp::kFs:
        if (pidns_fd >= 0 && std::strcmp(op.fstype, "proc") == 0) {
          uint64_t attrs = ((op.flags & MS_NOSUID) ? MOUNT_ATTR_NOSUID : 0) |
                           ((op.flags & MS_NODEV) ? MOUNT_ATTR_NODEV : 0) |
                           ((op.flags & MS_NOEXEC) ? MOUNT_ATTR_NOEXEC : 0);
          err = sys::mnt::mount_proc_of(pidns_fd, op.dst, attrs);
        } else {
          err = sys::mnt::mount_fs(op.fstype, op.dst, op.flags, op.data);
        }
        break;
      case MountOp::kBind: {
        struct stat st;
        if (op.regular_only && (::lstat(op.dst, &st) != 0 || !S_ISREG(st.st_mode))) break;
        err = sys::mnt::bind(op.src, op.dst, op.flags, op.recursive);
        break;
      }
      case MountOp::kBindIdmapped:
        err = sys::mnt::bind_idmapped(op.src, op.dst, op.fd >= 0 ? op.fd : userns_fd, op.attrs, op.recursive);
        break;
      case MountOp::kMountpoint:
      case MountOp::kDir:
        err = sys::mnt::ensure_mountpoint(op.dst, op.mode, op.file, host_root_, host_root_);
        break;
      case MountOp::kSymlink:
        if (::symlink(op.src, op.dst) != 0 && errno != EEXIST) err = errno;
        if (err == 0 && ::lchown(op.dst, host_root_, host_root_) != 0) err = errno;
        break;
      case MountOp::kWrite: {
        int fd = ::open(op.dst, O_WRONLY | O_CLOEXEC);
        if (fd < 0) {
          err = errno;
          break;
        }
        size_t n = std::strlen(op.src);
        if (::write(fd, op.src, n) != static_cast<ssize_t>(n)) err = errno ? errno : EIO;
        ::close(fd);
        break;
      }
      case MountOp::kChdir:
        if (::chdir(op.dst) != 0) err = errno;
        break;
      case MountOp::kPivot:
        err = sys::mnt::pivot_into(op.dst);
        break;
      case MountOp::kAttach: {
        // After the pivot: "/" is the sandbox's root.
        int root = ::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (root < 0) {
          err = errno;
          break;
        }
        err = sys::mnt::attach_beneath(op.fd, root, op.dst, 0755);
        ::close(root);
        break;
      }
    }
    if (err == ENOENT && op.optional) err = 0;
    if (err != 0) {
      *failed = &op;
      return err;
    }
    if (op_times && index < kMaxTimedOps) {
      struct timespec ts;
      ::clock_gettime(CLOCK_MONOTONIC, &ts);
      op_times[index] = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
    }
    ++index;
  }
  return 0;
}

}  // namespace coppice::sandbox::ns
