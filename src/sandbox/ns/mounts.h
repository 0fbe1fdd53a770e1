// The sandbox's mount table, planned in the parent and carried out by the
// child between clone and exec.
//
// Planning allocates (paths, option strings); running does not, because the
// child of a multi-threaded process must not call malloc. The plan is a list of
// plain operations over C strings owned by the plan.
//
// What the sandbox sees:
//   /            overlay: template rootfs (idmapped, read-only) below, then the snapshot layers
//                (each idmapped from its writer's ids, read-only), state_dir/upper above
//   /proc        proc of the sandbox's pid namespace
//   /dev         tmpfs: null zero full random urandom tty (binds of the host's),
//                pts (devpts newinstance), ptmx -> pts/ptmx, shm (tmpfs 1777, spec.shm_bytes), fd/std* links
//   /sys         sysfs, read-only (shows only the sandbox's network namespace)
//   masked       what OCI runtimes hide by default: /proc/{kcore,keys,timer_list,
//                sched_debug,latency_stats,timer_stats,cmdline} read as /dev/null,
//                /proc/{acpi,asound,scsi}, /sys/firmware, powercap and the host's block
//                devices (/sys/block, /sys/class/block, /sys/dev/block) are empty;
//                /proc/{bus,fs,irq,sys,sysrq-trigger} are read-only
//   /tmp         the template's, in the overlay (made 1777 if the template has none)
//   /.coppice    tmpfs: envd (read-only bind of the host binary), interp (the same, when the
//                spec names one), run/ (bind of state_dir/run)
//   <ro_binds>   each host path idmapped and read-only at the same path
//   <volumes>    after pivot_root: each volume's tree (ns/volumes.h) at its path,
//                walked from the new root without following symlinks
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "sandbox/backend.h"
#include "sandbox/ns/rootfs.h"

namespace coppice::sandbox::ns {

struct MountOp {
  // kMountpoint: a directory or file to mount on; kDir: a directory the
  // sandbox needs, made (with exactly `mode`) only if the template lacks it.
  enum Kind { kMakePrivate, kFs, kBind, kBindIdmapped, kMountpoint, kDir, kSymlink, kWrite, kChdir, kPivot, kAttach };
  Kind kind;
  const char* src = nullptr;     // bind source; symlink target; data for kWrite
  const char* dst = nullptr;     // target path (absolute, in the child's mount namespace); kChdir: the dir
  const char* fstype = nullptr;  // kFs
  const char* data = nullptr;    // kFs mount options
  unsigned long flags = 0;       // kFs: MS_*; kBind: MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC
  uint64_t attrs = 0;            // kBindIdmapped: MOUNT_ATTR_*
  bool recursive = false;        // kBind, kBindIdmapped
  bool file = false;             // kMountpoint: a file rather than a directory
  mode_t mode = 0755;            // kMountpoint, kDir
  bool optional = false;         // kFs, kBind: a missing target (ENOENT) is skipped
  bool regular_only = false;     // kBind: skipped unless the target is a regular file (never a symlink)
  int fd = -1;                   // kAttach: the detached tree (sys::mnt::attach_beneath); dst is a sandbox path
                                 // kBindIdmapped: the user namespace of the mapping (-1: the sandbox's own)
};

// What an operation does, for logs: its file system type, or "bind", "pivot_root", ...
const char* mount_op_name(const MountOp& op);

class MountPlan {
 public:
  MountPlan() = default;
  MountPlan(const MountPlan&) = delete;
  MountPlan& operator=(const MountPlan&) = delete;

  // Plans the sandbox's mounts (see above). `host_root` is the host uid/gid of
  // the sandbox's root: owner of the tmpfs roots and mount points created.
  // With `resolv_conf` (a host file), it is bound read-only over the
  // template's /etc/resolv.conf (made if missing; left alone when the
  // template's is a symlink).
  // `layer_userns[i]` (one per spec.lower_layers[i], open until after clone)
  // maps that layer's on-disk ids onto the sandbox's.
  void build(const SandboxSpec& spec, const StatePaths& paths, uid_t host_root, const std::string& resolv_conf = {},
             const std::vector<int>& layer_userns = {});

  // Plans attaching the detached tree `tree_fd` (owned by the caller, open
  // until after clone) at `path` inside the sandbox, after pivot_root.
  void attach(int tree_fd, const std::string& path);

  // Runs the plan. Async-signal-safe. Returns 0, or the errno of the failing
  // operation and sets *failed to it. With `op_times` (debug), the
  // CLOCK_MONOTONIC ns at the end of op i goes to op_times[i], for the first
  // kMaxTimedOps ops. With `pidns_fd`, /proc is that pid namespace's (the
  // caller is outside it), not the caller's.
  int run(int userns_fd, const MountOp** failed, uint64_t* op_times = nullptr, int pidns_fd = -1) const;
  static constexpr size_t kMaxTimedOps = 64;

  const std::vector<MountOp>& ops() const { return ops_; }

 private:
  const char* keep(std::string s);
  void mountpoint(const std::string& path, mode_t mode, bool file = false);

  std::deque<std::string> strings_;  // deque: element addresses are stable
  std::vector<MountOp> ops_;
  uid_t host_root_ = 0;
};

}  // namespace coppice::sandbox::ns
