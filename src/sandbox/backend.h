// The sandbox backend interface: turns a template rootfs into a running,
// isolated sandbox whose PID 1 is coppice-envd, and tears it down.
//
// Implementations are thread-safe: several worker threads may call them at
// once. The caller (core) makes sure one sandbox id is mutated by one caller at
// a time; the backend does not serialise create/destroy of the same id.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <functional>
#include <string>
#include <vector>

#include "common/result.h"
#include "sys/fd.h"

namespace coppice::sandbox {

struct Limits {
  int cpu_millicores = 1000;             // CPU bandwidth: 1000 = one full core
  uint64_t memory_bytes = 512ull << 20;  // memory limit (swap included where the host accounts it)
  int pids_max = 1024;                   // processes + threads
  bool operator==(const Limits&) const = default;
};

// A volume mounted in a sandbox: its directory on the host (made by
// Backend::make_volume) at an absolute path inside the sandbox (checked by
// the caller: core::validate_volume_path).
struct VolumeMount {
  std::string host_dir;
  std::string path;
  bool operator==(const VolumeMount&) const = default;
};

// A read-only layer of files between the template and a sandbox's own
// writable layer: the writable layer of another sandbox, copied when a
// snapshot was taken (Backend::copy_layer). Its files are owned on disk by
// the ids of that sandbox (root = `host_root`); the backend shows them
// owned by the new sandbox's ids (ns: an idmapped mount through a user
// namespace mapping one range onto the other), so no file is rewritten.
struct LowerLayer {
  std::string dir;         // host dir holding the layer's files (a state dir's upper/)
  uint32_t host_root = 0;  // host uid that owned "/" of the sandbox that wrote it
  bool operator==(const LowerLayer&) const = default;
};

struct SandboxSpec {
  std::string id;                     // [a-z0-9]{1,63}; also the hostname and the cgroup name
  std::string rootfs;                 // template rootfs dir (read-only lower layer, never written)
  std::vector<std::string> ro_binds;  // host paths bind-mounted read-only at the same path (e.g. "/usr")
  std::string state_dir;              // per-sandbox host dir, created if missing: upper/, work/, run/ ...
  std::string envd_path;              // host path of the static coppice-envd binary
  // Host path of the code-interpreter server binary; empty: none. When set it
  // is bind-mounted read-only (nosuid, nodev) at /.coppice/interp, like envd
  // at /.coppice/envd. It is dynamically linked: it runs only in templates that
  // hold its libraries. A missing file fails the create.
  std::string interp_path;
  // envd's /init body (JSON: token, env, defaults), handed to it at start
  // through a file in the run dir that only the sandbox's root can read and
  // that envd removes; empty: envd starts uninitialised.
  std::string init_json;
  Limits limits;
  // Cap on what the sandbox's writable layer (its state dir) may hold, when
  // the backend enforces disk quotas: a write past it fails with EDQUOT
  // inside the sandbox. 0: no cap of its own.
  uint64_t disk_bytes = 0;
  // Size of the sandbox's /dev/shm (tmpfs: what is written there is memory
  // charged to the sandbox). 0: a quarter of limits.memory_bytes, so that
  // filling it ends in ENOSPC, not in the sandbox's OOM killer.
  uint64_t shm_bytes = 0;
  // A checkpoint (images dir, sandbox/ns/checkpoint.h) to restore instead of
  // starting envd: the sandbox gets its own new namespaces, cgroups and
  // network as any create does, and the checkpointed tree (envd and its
  // processes, memory included) resumes in them. Empty: a fresh envd.
  std::string restore_from;
  // The boot id it starts with (a fork child without memory keeps its
  // parent's, as a restore keeps the checkpoint's). Empty: a new one, or
  // at a restore the checkpoint's.
  std::string boot_id;
  // Where the restore works (its log): made if missing, removed by the
  // caller. "" means restore_from itself. Set it when several sandboxes
  // restore one checkpoint at once (a fork): restore_from is then only read.
  std::string restore_work_dir;
  // Snapshot layers over the template, topmost first (at most
  // kMaxLowerLayers); the sandbox's own writable layer is above them all.
  std::vector<LowerLayer> lower_layers;
  // The state dir exists already (a sandbox paused to disk, backend.suspend()):
  // its writable layer and run dir are used as they are, and a failed
  // create leaves them in place.
  bool reuse_state_dir = false;
  // Volumes mounted (read-write, nosuid, nodev) before envd starts. A path
  // that crosses a symlink or another mount fails the create
  // (kInvalidArgument).
  std::vector<VolumeMount> volumes;
};

// How many snapshot layers a sandbox may stack (a snapshot of a sandbox made
// from a snapshot adds one): overlayfs takes up to 500 lowers, but each is a
// mount and a user namespace at create.
inline constexpr size_t kMaxLowerLayers = 32;

struct SandboxHandle {
  std::string id;
  pid_t init_pid = -1;      // host pid of the sandbox's PID 1 (envd)
  // Host path of envd's unix socket (state_dir/run/envd.sock). Its directory is
  // writable by the sandbox: connect with sys::connect_unix_nofollow
  // (sys/unix_connect.h), never a plain connect(2) that follows a planted symlink.
  std::string envd_socket;
  std::string state_dir;
  uid_t host_uid = 0;       // host uid that the sandbox's root maps to (never 0)
  // Identity of the sandbox's network namespace (SO_NETNS_COOKIE: never
  // reused while the host runs), taken at create/adopt and checked before
  // every use of the namespace; 0: unknown.
  uint64_t netns_cookie = 0;
  // Its place on the gateway's network (net/network.h): IPv4 address (host
  // byte order) and the host end of its veth; 0/"" when it has loopback only.
  uint32_t net_addr = 0;
  std::string net_link;
};

struct Usage {
  uint64_t cpu_ns = 0;     // CPU time used since create
  uint64_t mem_bytes = 0;  // memory charged now
  uint64_t mem_limit = 0;  // memory limit in force
  uint64_t disk_bytes = 0; // bytes the writable layer holds (its quota's figure, or a bounded walk)
  // Network traffic so far, the sandbox's view (tx: sent by it); all 0
  // without a network.
  uint64_t net_rx_bytes = 0, net_rx_packets = 0, net_tx_bytes = 0, net_tx_packets = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // Starts a sandbox; returns once envd accepts on its socket. A failed create
  // leaves nothing behind (no processes, mounts, cgroups or state files).
  virtual Result<SandboxHandle> create(const SandboxSpec& spec) = 0;

  // Kills every process, removes the cgroups, the writable layer and the state
  // dir. Idempotent: destroying an unknown or already destroyed id succeeds.
  // Works without an in-memory handle (after a restart), from what the kernel
  // and the state registry still hold.
  virtual Status destroy(const std::string& id) = 0;

  // Pause/resume every process of the sandbox (cgroup freezer).
  virtual Status freeze(const std::string& id) = 0;
  virtual Status thaw(const std::string& id) = 0;

  // Writes the sandbox's processes (envd's tree, memory included) to
  // `images_dir` (made; must be empty). Unless `leave_running`, they are
  // killed once written and the sandbox ends as if envd had exited; its
  // writable layer and state dir stay until destroy(). A create whose spec
  // has restore_from = `images_dir` resumes them (ns: checkpoint.h).
  // `durable`: on disk before this returns (a pause, a stored snapshot);
  // else left to the page cache (a fork's checkpoint, read at once and
  // thrown away).
  // `while_stopped` (with leave_running): run after the dump while the tree
  // is still stopped, so that what it takes (the files) is of the same
  // instant as the memory; the tree goes on after it, whatever it returns.
  virtual Status checkpoint(const std::string& id, const std::string& images_dir, bool leave_running, bool durable,
                            std::function<Status()> while_stopped = {}) {
    (void)id;
    (void)images_dir;
    (void)leave_running;
    (void)durable;
    (void)while_stopped;
    return make_error(ErrorCode::kUnimplemented, "this backend cannot checkpoint a sandbox");
  }

  // Whether sandbox `id` (frozen by the caller) runs nothing but its own
  // init and envd and keeps nothing in its /dev/shm: then its files are all
  // there is of it, and a fork needs no image of its memory. False when it
  // cannot tell.
  virtual bool runs_only_its_own(const std::string& id) {
    (void)id;
    return false;
  }

  // Copies sandbox `id`'s writable layer (its state dir) to `dst_dir`
  // (which must not exist), read-only: the layer a snapshot keeps
  // (ns/layer_copy.h: O(1) on btrfs). Take it while the sandbox is frozen
  // for one consistent moment. Returns the host dir holding the copied
  // files (for LowerLayer::dir). A failure leaves nothing at `dst_dir`.
  virtual Result<std::string> copy_layer(const std::string& id, const std::string& dst_dir) {
    (void)id;
    (void)dst_dir;
    return make_error(ErrorCode::kUnimplemented, "this backend cannot copy a sandbox's files");
  }
  // Removes a copy made by copy_layer (possibly in the background).
  // Idempotent: a missing dir is no error.
  virtual Status remove_layer(const std::string& dst_dir) {
    (void)dst_dir;
    return make_error(ErrorCode::kUnimplemented, "this backend cannot copy a sandbox's files");
  }
  // Bytes a sandbox's writable layer holds right now (its quota's figure,
  // else a bounded walk): what a snapshot of it keeps on disk.
  virtual Result<uint64_t> layer_bytes(const std::string& id) {
    (void)id;
    return make_error(ErrorCode::kUnimplemented, "this backend cannot measure a sandbox's files");
  }

  // Directory snapshots (ns/dir_copy.h): copies directory `path` of a
  // running sandbox (resolved inside its root) to the host dir `dst`, at
  // most `max_bytes`; returns what it holds. kTooLarge past the limit.
  virtual Result<uint64_t> save_dir(const SandboxHandle& h, const std::string& path, const std::string& dst,
                                    uint64_t max_bytes) {
    (void)h;
    (void)path;
    (void)dst;
    (void)max_bytes;
    return make_error(ErrorCode::kUnimplemented, "this backend cannot copy a sandbox's directories");
  }
  // A fork onto a spare (core/snapshots.cc): the running sandbox `h`, which
  // nobody has used yet, takes the fork parent's files (`layer`, a frozen
  // copy of its writable layer, whose root was host uid `layer_root`,
  // checked with sys::scan_overlay_layer) and its boot id. Returns the
  // entries applied. On failure the sandbox is half changed: discard it.
  virtual Result<uint64_t> adopt_fork(const SandboxHandle& h, const std::string& layer, uint32_t layer_root,
                                      const std::string& boot_id) {
    (void)h;
    (void)layer;
    (void)layer_root;
    (void)boot_id;
    return make_error(ErrorCode::kUnimplemented, "this backend cannot give a sandbox another's files");
  }
  // Copies such a copy (taken from a sandbox whose root was `src_root`) to
  // `path` (must not exist) in a running sandbox, owned by its users.
  virtual Status restore_dir(const SandboxHandle& h, const std::string& src, uint32_t src_root,
                             const std::string& path) {
    (void)h;
    (void)src;
    (void)src_root;
    (void)path;
    return make_error(ErrorCode::kUnimplemented, "this backend cannot copy a sandbox's directories");
  }

  // After checkpoint(): removes what the sandbox holds in the kernel
  // (processes, cgroups, network) but keeps its state dir (writable layer,
  // checkpoint) and its uid range, for a create with reuse_state_dir (and
  // restore_from) under the same id. destroy() removes the rest. After a
  // restart (the sandbox not ours): its processes and cgroups are removed,
  // its state dir and record kept (reserve_suspended() takes the uid range).
  virtual Status suspend(const std::string& id) {
    (void)id;
    return make_error(ErrorCode::kUnimplemented, "this backend cannot suspend a sandbox");
  }

  // Whether `images_dir` holds a whole checkpoint written by checkpoint()
  // (criu done and on disk), though its sandbox may still be running.
  virtual bool checkpoint_complete(const std::string& images_dir) {
    (void)images_dir;
    return false;
  }

  // After a gateway restart, for a sandbox whose checkpoint (a pause) was
  // cut short: its processes go on (any left stopped are continued).
  // `only_if_held`: only if a checkpoint holds it (criu at work, or envd
  // left stopped by one, as a snapshot cut short leaves it).
  virtual Status continue_after_checkpoint(const std::string& id, bool only_if_held = false) {
    (void)id;
    (void)only_if_held;
    return make_error(ErrorCode::kUnimplemented, "this backend cannot checkpoint a sandbox");
  }

  // After a gateway restart: keeps the uid range that maps root to
  // `host_root` for suspended sandbox `id` (whose state dir is `state_dir`).
  virtual Status reserve_suspended(const std::string& id, uint32_t host_root) {
    (void)id;
    (void)host_root;
    return make_error(ErrorCode::kUnimplemented, "this backend cannot suspend a sandbox");
  }

  // CPU and memory from the sandbox's cgroups; with `with_disk`, also the
  // bytes its writable layer holds (which may cost a walk of its files).
  virtual Result<Usage> usage(const std::string& id, bool with_disk) = 0;

  // Ids that have something left on this host (a cgroup or a state record),
  // for reconciliation after a gateway restart: adopt or destroy each.
  virtual Result<std::vector<std::string>> list_existing() = 0;

  // Takes a running sandbox left by an earlier gateway process back under
  // management (finds its PID 1 from its cgroup). kNotFound if it is not running.
  virtual Result<SandboxHandle> adopt(const std::string& id, const std::string& state_dir) = 0;

  // An fd that becomes readable once the sandbox's PID 1 (its envd) has
  // exited, for the caller to register with its event loop (ns: a pidfd,
  // checked to be the sandbox's PID 1 and not a process that reused its
  // pid). The caller owns it; it holds no other resource. kNotFound when the
  // sandbox is not running; kUnimplemented when the backend cannot tell.
  // Quick (a few syscalls, no waiting).
  virtual Result<sys::UniqueFd> exit_fd(const SandboxHandle& h) {
    (void)h;
    return make_error(ErrorCode::kUnimplemented, "this backend does not report a sandbox's exit");
  }

  // Changes the CPU bandwidth (millicores) and memory limit of a running or
  // paused sandbox, effective at once (pids_max and the disk cap stay).
  // kFailedPrecondition, with nothing changed, when the sandbox holds more
  // memory than `memory_bytes` and cannot give it back; kNotFound when it is
  // gone. Blocking kernel work (it may reclaim memory): call on a worker.
  virtual Status set_limits(const std::string& id, int cpu_millicores, uint64_t memory_bytes) {
    (void)id;
    (void)cpu_millicores;
    (void)memory_bytes;
    return make_error(ErrorCode::kUnimplemented, "this backend cannot change a sandbox's limits");
  }

  // Caps what the sandbox sends to `bytes_per_s` (0 removes the cap), in the
  // kernel, effective at once. kFailedPrecondition without a network.
  virtual Status set_egress_limit(const SandboxHandle& h, uint64_t bytes_per_s) {
    (void)h;
    (void)bytes_per_s;
    return make_error(ErrorCode::kUnimplemented, "this backend cannot limit a sandbox's bandwidth");
  }

  // --- volumes (persistent directories mounted into sandboxes) ---
  // Makes volume `id` ([a-z0-9]{20}) with a cap of `quota_bytes` (0: none)
  // and returns its host directory. A failure leaves nothing behind.
  virtual Result<std::string> make_volume(const std::string& id, uint64_t quota_bytes) {
    (void)id;
    (void)quota_bytes;
    return make_error(ErrorCode::kUnimplemented, "this backend has no volumes");
  }
  // Removes it and its files (possibly in the background). Idempotent.
  virtual Status remove_volume(const std::string& id) {
    (void)id;
    return make_error(ErrorCode::kUnimplemented, "this backend has no volumes");
  }
  // Its host directory; "" when the backend has no volumes.
  virtual std::string volume_dir(const std::string& id) const {
    (void)id;
    return "";
  }
  // Ids of the volumes whose directories exist here, for reconciliation at
  // start (a directory no stored volume names is removed).
  virtual Result<std::vector<std::string>> list_volumes() { return std::vector<std::string>{}; }
  // Whether volume caps are enforced (a quota file system).
  virtual bool volume_quotas() const { return false; }
  // Mounts / unmounts a volume in a running sandbox. mount: kInvalidArgument
  // for a path that crosses a symlink or another mount; unmount: kNotFound
  // when that volume is not at that path.
  virtual Status mount_volume(const SandboxHandle& h, const VolumeMount& m) {
    (void)h;
    (void)m;
    return make_error(ErrorCode::kUnimplemented, "this backend cannot mount volumes");
  }
  virtual Status unmount_volume(const SandboxHandle& h, const VolumeMount& m) {
    (void)h;
    (void)m;
    return make_error(ErrorCode::kUnimplemented, "this backend cannot mount volumes");
  }

  // Host-resource bundles ready for cold creates (spares); 0 if the backend
  // keeps none.
  virtual size_t spares_ready() const { return 0; }

  // A stream socket from which `port` of the sandbox's own loopback is
  // reached: connect `fd` (unconnected, non-blocking, CLOEXEC) to
  // `host`:`port` of the answer. For ns sandboxes it is made inside the
  // sandbox's network namespace, checked to be the namespace the sandbox was
  // made with (a reused PID must never route into someone else's network).
  // Called on data-plane threads: quick, no lock the control plane holds
  // across blocking work. kNotFound when the sandbox (or its network) is gone.
  struct PortSocket {
    sys::UniqueFd fd;
    std::string host = "127.0.0.1";
    uint16_t port = 0;
  };
  virtual Result<PortSocket> port_socket(const SandboxHandle& h, uint16_t port) = 0;
};

}  // namespace coppice::sandbox
