// The namespace sandbox backend: Linux namespaces + cgroups + overlayfs +
// idmapped mounts + seccomp, with coppice-envd as each sandbox's PID 1.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/result.h"
#include "sandbox/backend.h"
#include "sys/background.h"

namespace coppice::net {
class SandboxNetwork;
}

namespace coppice::sandbox {

namespace ns {
class DiskQuota;
}

struct NsOptions {
  // Name of the parent cgroup under each hierarchy (<mount>/<cgroup_parent>/<id>).
  std::string cgroup_parent = "coppice";
  // Host dir (root-only) of the sandbox records, <registry_dir>/<id> -> state dir;
  // created if missing. Must survive a gateway restart, need not survive a reboot.
  std::string registry_dir = "/run/coppice/ns";
  // First host uid/gid given to sandboxes; slot i maps a sandbox's ids
  // 0..65535 to uid_base + i*65536 ... Must not overlap host users.
  uint32_t uid_base = 1000000;
  // Number of 65536-id slots, i.e. of sandboxes that can run at once.
  // uid_base + uid_slots * 65536 must stay below 2^32 - 1 (the default uses
  // ids up to ~1.07e9). A slot costs nothing until used; a used slot holds no
  // fd while its sandbox runs (uid_slots.h).
  uint32_t uid_slots = 16384;
  // How long create waits for envd to listen.
  int ready_timeout_ms = 10000;
  // envd's stdout/stderr go to <state_dir>/envd.log (else /dev/null).
  bool envd_log = true;
  // Host resources kept made ahead of creates (spares.h): this many bundles
  // of cgroups (v1), state dir skeleton and network namespace; 0: none.
  uint32_t spares = 0;
  // Where the state dir skeletons live (root-only; emptied at start): must be
  // on the file system of the sandboxes' state dirs. Empty: no skeletons.
  std::string spare_dir;
  // Limits the spare cgroups get until a create asks for others.
  Limits spare_limits;
  // Per-sandbox disk quotas on the state dirs (ns/disk_quota.h); null: none
  // (the disk figure is then a bounded walk of the upper layer). State dirs
  // and spare_dir must be in its dir. Must outlive the backend.
  const ns::DiskQuota* disk = nullptr;
  // Processes + threads of all sandboxes together (pids.max of the parent
  // cgroup), so that they cannot take the host's last pids however many
  // fork at once. -1: the host's budget less a reserve
  // (ns::default_parent_pids_max()); 0: no cap.
  int64_t total_pids_max = -1;
  // RLIMIT_NOFILE of every sandbox process: soft, and hard (the most a
  // sandbox can raise it to); each capped at the gateway's own hard limit.
  // 0/0: inherited from the gateway.
  uint64_t nofile_soft = 1024;
  uint64_t nofile_hard = 65536;
  // Where ready user namespaces and spares are made (background priority);
  // null: the backend runs a pool of its own. Must outlive the backend.
  sys::BackgroundPool* background = nullptr;
  // The gateway's network (net/network.h): each sandbox gets a veth, an
  // address and the gateway's resolver; null: loopback only. Must outlive
  // the backend.
  coppice::net::SandboxNetwork* network = nullptr;
  // Where volumes live (ns/volumes.h): on `disk`'s file system when there
  // is one (so each gets a quota). Empty: no volumes.
  std::string volume_dir;
};

// Detects the cgroup layout, creates the parent cgroups and the registry dir,
// compiles the seccomp policy. Needs root.
Result<std::unique_ptr<Backend>> make_ns_backend(const NsOptions& options);

}  // namespace coppice::sandbox
