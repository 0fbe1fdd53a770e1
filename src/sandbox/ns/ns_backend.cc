#include "sandbox/ns/ns_backend.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <map>
#include <mutex>
#include <set>

#include "common/log.h"
#include "sandbox/ns/cgroup.h"
#include "sandbox/ns/checkpoint.h"
#include "sandbox/ns/dir_copy.h"
#include "sandbox/ns/disk_quota.h"
#include "sandbox/ns/launch.h"
#include "sandbox/ns/layer_copy.h"
#include "sandbox/ns/trash.h"
#include "sandbox/ns/registry.h"
#include "sandbox/ns/rootfs.h"
#include "sandbox/ns/seccomp_policy.h"
#include "sandbox/ns/spares.h"
#include "sandbox/ns/teardown.h"
#include "sandbox/ns/uid_slots.h"
#include "sandbox/ns/volumes.h"
#include "net/network.h"
#include "sys/btrfs.h"
#include "sys/fsutil.h"
#include "sys/netns.h"
#include "sys/pidfd_owner.h"
#include "sys/userns.h"

namespace coppice::sandbox {
namespace {

using namespace ns;

// A running sandbox this process manages. Holds no fd: its PID 1 is our child
// (its pid cannot be reused before we reap it) or was adopted (then teardown
// pins it with a pidfd found through the cgroup).
struct Live {
  SandboxHandle handle;
  SlotLease slot;
  bool own_child = false;  // launched by this process (else adopted)
};

class NsBackend final : public Backend {
 public:
  NsBackend(NsOptions opts, CgroupManager cgroups, sys::seccomp::Program seccomp)
      : opts_(std::move(opts)), cgroups_(std::move(cgroups)),
        own_pool_(opts_.background ? nullptr : std::make_unique<sys::BackgroundPool>(2)),
        slots_(opts_.uid_base, opts_.uid_slots, 64, 256, background()),
        seccomp_(std::move(seccomp)),
        spares_(&cgroups_, opts_.spare_dir, opts_.spares, opts_.spare_limits, background(), opts_.disk,
                opts_.network),
        volumes_(opts_.volume_dir, opts_.disk) {}

  Result<SandboxHandle> create(const SandboxSpec& spec) override {
    LaunchContext ctx;
    ctx.cgroups = &cgroups_;
    ctx.slots = &slots_;
    ctx.spares = &spares_;
    ctx.disk = opts_.disk;
    ctx.network = opts_.network;
    ctx.seccomp = &seccomp_;
    ctx.registry_dir = opts_.registry_dir;
    ctx.ready_timeout_ms = opts_.ready_timeout_ms;
    ctx.envd_log = opts_.envd_log;
    ctx.nofile_soft = opts_.nofile_soft;
    ctx.nofile_hard = opts_.nofile_hard;
    // A suspended sandbox starts again with its own uid range.
    std::shared_ptr<SlotLease> held;
    if (spec.reuse_state_dir) {
      std::lock_guard lock(mu_);
      if (auto it = suspended_.find(spec.id); it != suspended_.end()) held = it->second;
    }
    if (spec.reuse_state_dir && !held) {
      return make_error(ErrorCode::kFailedPrecondition, "create sandbox " + spec.id + ": it is not suspended here");
    }
    ctx.slot = held.get();
    auto launched = launch(ctx, spec);
    if (!launched) return std::unexpected(launched.error());
    if (held) {
      std::lock_guard lock(mu_);
      suspended_.erase(spec.id);
    }
    // The namespace's identity, while the child is ours (unreaped: its pid
    // cannot have been reused).
    if (auto ns = sys::open_netns_of(launched->handle.init_pid); ns) {
      if (auto c = sys::netns_cookie(ns->get()); c) launched->handle.netns_cookie = *c;
    }
    auto live = std::make_shared<Live>(Live{launched->handle, std::move(launched->slot), true});
    std::lock_guard lock(mu_);
    live_[spec.id] = live;
    return live->handle;
  }

  Status suspend(const std::string& id) override {
    COPPICE_TRY_CTX(validate_id(id), "suspend sandbox");
    std::shared_ptr<Live> live;
    {
      std::lock_guard lock(mu_);
      if (auto it = live_.find(id); it != live_.end()) live = it->second;
    }
    if (!live) {
      // Left by an earlier gateway (a resume cut short): what it holds in
      // the kernel goes; its state stays.
      return teardown(cgroups_, opts_.registry_dir, id, -1, std::string(), /*keep_state=*/true);
    }
    pid_t pid = live->own_child ? live->handle.init_pid : -1;
    if (pid > 0) {
      // Its namespace serves its resume (or the slot's next sandbox).
      auto ns = sys::open_file("/proc/" + std::to_string(pid) + "/ns/user", O_RDONLY);
      if (ns && UidSlots::is_slot_userns(ns->get())) live->slot.keep_userns(std::move(*ns));
    }
    COPPICE_TRY(teardown(cgroups_, opts_.registry_dir, id, pid, live->handle.state_dir, /*keep_state=*/true));
    if (live->handle.net_addr && opts_.network) {
      opts_.network->release(net::Attachment{live->handle.net_addr, live->handle.net_link});
    }
    std::lock_guard lock(mu_);
    live_.erase(id);
    suspended_[id] = std::make_shared<SlotLease>(std::move(live->slot));
    return ok();
  }

  Status reserve_suspended(const std::string& id, uint32_t host_root) override {
    COPPICE_TRY_CTX(validate_id(id), "reserve sandbox");
    {
      std::lock_guard lock(mu_);
      if (suspended_.count(id)) return ok();
    }
    auto slot = slots_.claim(host_root);
    if (!slot) return std::unexpected(std::move(slot.error()).context("suspended sandbox " + id));
    std::lock_guard lock(mu_);
    suspended_[id] = std::make_shared<SlotLease>(std::move(*slot));
    return ok();
  }

  Status destroy(const std::string& id) override {
    COPPICE_TRY_CTX(validate_id(id), "destroy sandbox");
    std::shared_ptr<Live> live;
    std::shared_ptr<SlotLease> suspended;
    {
      std::lock_guard lock(mu_);
      if (auto it = suspended_.find(id); it != suspended_.end()) {
        suspended = it->second;
        suspended_.erase(it);
      }
      if (auto it = live_.find(id); it != live_.end()) {
        live = it->second;
        live_.erase(it);
      }
    }
    // Only our own (unreaped) child's pid is sure to be the sandbox's PID 1;
    // an adopted one may have died and its pid been reused: teardown finds it
    // through the cgroup then.
    pid_t pid = live && live->own_child ? live->handle.init_pid : -1;
    std::string state = live ? live->handle.state_dir : std::string();
    if (live && live->own_child && pid > 0) {
      // The slot's user namespace, taken before its last process dies, serves
      // the slot's next sandbox (uid_slots.h). Our unreaped child's pid cannot
      // have been reused.
      auto ns = sys::open_file("/proc/" + std::to_string(pid) + "/ns/user", O_RDONLY);
      if (ns && UidSlots::is_slot_userns(ns->get())) live->slot.keep_userns(std::move(*ns));
    }
    auto s = teardown(cgroups_, opts_.registry_dir, id, pid, state);
    if (!s && live) {
      // Keep managing it (and its uid slot) so a retry can finish the job.
      std::lock_guard lock(mu_);
      live_.emplace(id, live);
    }
    if (!s && suspended) {
      std::lock_guard lock(mu_);
      suspended_.emplace(id, suspended);
    }
    if (s && live && live->handle.net_addr && opts_.network) {
      // Its processes are gone: its namespace (and veth) follow.
      opts_.network->release(net::Attachment{live->handle.net_addr, live->handle.net_link});
    }
    return s;  // the slot returns to the pool with `live`
  }

  Status freeze(const std::string& id) override {
    COPPICE_TRY_CTX(validate_id(id), "freeze sandbox");
    return cgroups_.freeze(id);
  }

  Status checkpoint(const std::string& id, const std::string& images_dir, bool leave_running, bool durable,
                    std::function<Status()> while_stopped) override {
    COPPICE_TRY_CTX(validate_id(id), "checkpoint sandbox");
    auto init = cgroups_.find_init(id);
    if (!init) return std::unexpected(std::move(init.error()).context("checkpoint of sandbox " + id));
    CheckpointOptions o;
    o.leave_running = leave_running;
    o.durable = durable;
    o.while_stopped = std::move(while_stopped);
    return checkpoint_tree(cgroups_, id, *init, images_dir, o);
  }

  bool runs_only_its_own(const std::string& id) override {
    if (!validate_id(id)) return false;
    auto init = cgroups_.find_init(id);
    return init && sandbox::ns::runs_only_its_own(cgroups_, id, *init);
  }

  Result<std::string> copy_layer(const std::string& id, const std::string& dst_dir) override {
    COPPICE_TRY_CTX(validate_id(id), "copy files of sandbox");
    auto state = state_dir_of(id);
    if (state.empty()) return make_error(ErrorCode::kNotFound, "copy files of sandbox " + id + ": not known here");
    COPPICE_TRY_CTX(snapshot_layer(opts_.disk, state, dst_dir, /*readonly=*/true), "copy files of sandbox " + id);
    return StatePaths(dst_dir).upper;
  }

  Status remove_layer(const std::string& dst_dir) override {
    if (!sys::path_exists(dst_dir)) return ok();
    // A read-only subvolume's files cannot be unlinked: writable first.
    struct stat st;
    if (auto fd = sys::open_file(dst_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        fd && sys::btrfs::is_btrfs(fd->get()) && ::fstat(fd->get(), &st) == 0 && st.st_ino == 256) {
      // (Inode 256 is a subvolume's root: a plain directory has no flags.)
      COPPICE_TRY_CTX(sys::btrfs::make_writable(fd->get()), "remove layer " + dst_dir);
    }
    if (move_to_trash(dst_dir)) return ok();
    return remove_state_dir(dst_dir);
  }

  Result<uint64_t> layer_bytes(const std::string& id) override {
    COPPICE_TRY_CTX(validate_id(id), "files of sandbox");
    auto state = state_dir_of(id);
    if (state.empty()) return make_error(ErrorCode::kNotFound, "files of sandbox " + id + ": not known here");
    return opts_.disk ? opts_.disk->used(state) : upper_disk_bytes(state);
  }

  bool checkpoint_complete(const std::string& images_dir) override { return ns::checkpoint_complete(images_dir); }

  Status continue_after_checkpoint(const std::string& id, bool only_if_held) override {
    COPPICE_TRY_CTX(validate_id(id), "continue sandbox");
    if (only_if_held && !held_by_checkpoint(cgroups_, id)) return ok();
    return continue_stopped(cgroups_, id);
  }

  Status thaw(const std::string& id) override {
    COPPICE_TRY_CTX(validate_id(id), "thaw sandbox");
    return cgroups_.thaw(id);
  }

  Status set_limits(const std::string& id, int cpu_millicores, uint64_t memory_bytes) override {
    COPPICE_TRY_CTX(validate_id(id), "resize sandbox");
    return cgroups_.resize(id, cpu_millicores, memory_bytes);
  }

  Result<Usage> usage(const std::string& id, bool with_disk) override {
    COPPICE_TRY_CTX(validate_id(id), "usage of sandbox");
    auto cg = cgroups_.usage(id);
    if (!cg) return std::unexpected(cg.error());
    Usage u{cg->cpu_ns, cg->mem_bytes, cg->mem_limit, 0};
    std::string state;
    net::Attachment att;
    {
      std::lock_guard lock(mu_);
      if (auto it = live_.find(id); it != live_.end()) {
        state = it->second->handle.state_dir;
        att = net::Attachment{it->second->handle.net_addr, it->second->handle.net_link};
      }
    }
    if (att.valid() && opts_.network) {
      if (auto c = opts_.network->counters(att); c) {
        u.net_rx_bytes = c->rx_bytes;
        u.net_rx_packets = c->rx_packets;
        u.net_tx_bytes = c->tx_bytes;
        u.net_tx_packets = c->tx_packets;
      }
    }
    if (!with_disk) return u;
    if (state.empty()) {
      if (auto r = registry_lookup(opts_.registry_dir, id); r) state = *r;
    }
    if (!state.empty()) {
      // From the quota's accounting when there is one: no walk of the files.
      auto d = opts_.disk ? opts_.disk->used(state) : upper_disk_bytes(state);
      if (d) {
        u.disk_bytes = *d;
      } else {
        COPPICE_LOG_RATE(warn, 60).sandbox(id) << "disk usage: " << d.error().to_string();
      }
    }
    return u;
  }

  Result<PortSocket> port_socket(const SandboxHandle& h, uint16_t port) override {
    const std::string ctx = "port " + std::to_string(port) + " of sandbox " + h.id;
    if (h.init_pid <= 0 || h.netns_cookie == 0) {
      return make_error(ErrorCode::kNotFound, ctx + ": its network namespace is not known");
    }
    auto ns = sys::open_netns_of(h.init_pid);
    if (!ns) return make_error(ErrorCode::kNotFound, ctx + ": the sandbox is gone");
    auto sock = sys::socket_in_netns(ns->get(), AF_INET, SOCK_STREAM | SOCK_NONBLOCK);
    if (!sock) return std::unexpected(std::move(sock.error()).context(ctx));
    // The pid may have been reused by a process of another network (the
    // sandbox's PID 1 died): only the namespace it was made with will do.
    auto cookie = sys::netns_cookie_of_socket(sock->get());
    if (!cookie || *cookie != h.netns_cookie) {
      return make_error(ErrorCode::kNotFound, ctx + ": the sandbox's network namespace is gone");
    }
    PortSocket out;
    out.fd = std::move(*sock);
    out.port = port;
    return out;
  }

  Status set_egress_limit(const SandboxHandle& h, uint64_t bytes_per_s) override {
    const std::string ctx = "bandwidth of sandbox " + h.id;
    if (!opts_.network || !h.net_addr) {
      return make_error(ErrorCode::kFailedPrecondition, ctx + ": the sandbox has no network");
    }
    auto ns = open_checked_netns(h);
    if (!ns) return std::unexpected(std::move(ns.error()).context(ctx));
    return opts_.network->set_egress_limit(ns->get(), bytes_per_s);
  }

  Result<sys::UniqueFd> exit_fd(const SandboxHandle& h) override {
    auto init = pinned_init(h);
    if (!init) return std::unexpected(std::move(init.error()).context("watch sandbox " + h.id));
    return sys::UniqueFd(init->release_fd());
  }

  size_t spares_ready() const override { return spares_.ready(); }

  Result<std::string> make_volume(const std::string& id, uint64_t quota_bytes) override {
    if (opts_.volume_dir.empty()) return make_error(ErrorCode::kUnimplemented, "this gateway has no volume storage");
    return volumes_.make(id, quota_bytes);
  }
  Status remove_volume(const std::string& id) override {
    if (opts_.volume_dir.empty()) return ok();
    return volumes_.remove(id);
  }
  std::string volume_dir(const std::string& id) const override {
    return opts_.volume_dir.empty() ? std::string() : volumes_.path(id);
  }
  bool volume_quotas() const override { return volumes_.enforced(); }
  Result<std::vector<std::string>> list_volumes() override {
    if (opts_.volume_dir.empty()) return std::vector<std::string>{};
    return volumes_.list();
  }

  Result<uint64_t> save_dir(const SandboxHandle& h, const std::string& path, const std::string& dst,
                            uint64_t max_bytes) override {
    auto init = pinned_init(h);
    if (!init) return std::unexpected(std::move(init.error()).context("copy from sandbox " + h.id));
    DirCopyLimits limits;
    limits.max_bytes = max_bytes;
    return save_sandbox_dir(*init, path, dst, limits);
  }
  Status restore_dir(const SandboxHandle& h, const std::string& src, uint32_t src_root,
                     const std::string& path) override {
    auto init = pinned_init(h);
    if (!init) return std::unexpected(std::move(init.error()).context("copy into sandbox " + h.id));
    return restore_sandbox_dir(*init, h.host_uid, src, src_root, path);
  }

  Result<uint64_t> adopt_fork(const SandboxHandle& h, const std::string& layer, uint32_t layer_root,
                              const std::string& boot_id) override {
    auto init = pinned_init(h);
    if (!init) return std::unexpected(std::move(init.error()).context("fork onto sandbox " + h.id));
    auto n = merge_layer_into(*init, h.host_uid, layer, layer_root);
    if (!n) return std::unexpected(std::move(n.error()).context("fork onto sandbox " + h.id));
    if (valid_boot_id(boot_id)) {
      // Its /proc/sys/kernel/random/boot_id is a bind of this file: written
      // in place, the same inode.
      auto f = sys::open_file(h.state_dir + "/boot_id", O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC);
      if (!f) return std::unexpected(std::move(f.error()).context("fork onto sandbox " + h.id + ": boot id"));
      const std::string line = boot_id + "\n";
      if (::write(f->get(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
        return errno_error("fork onto sandbox " + h.id + ": write its boot id");
      }
    }
    return n;
  }

  Status mount_volume(const SandboxHandle& h, const VolumeMount& m) override {
    auto init = pinned_init(h);
    if (!init) return std::unexpected(std::move(init.error()).context("mount volume in sandbox " + h.id));
    return mount_volume_in(*init, m.host_dir, m.path);
  }
  Status unmount_volume(const SandboxHandle& h, const VolumeMount& m) override {
    auto init = pinned_init(h);
    if (!init) return std::unexpected(std::move(init.error()).context("unmount volume in sandbox " + h.id));
    return unmount_volume_in(*init, m.host_dir, m.path);
  }

  Result<std::vector<std::string>> list_existing() override {
    std::set<std::string> ids;
    auto cg = cgroups_.list();
    if (!cg) return std::unexpected(cg.error());
    for (auto& n : *cg) {
      if (!is_spare_name(n)) ids.insert(std::move(n));  // the spares' own, not a sandbox's
    }
    auto rec = registry_list(opts_.registry_dir);
    if (!rec) return std::unexpected(rec.error());
    ids.insert(rec->begin(), rec->end());
    return std::vector<std::string>(ids.begin(), ids.end());
  }

  Result<SandboxHandle> adopt(const std::string& id, const std::string& state_dir) override {
    const std::string ctx = "adopt sandbox " + id;
    COPPICE_TRY_CTX(validate_id(id), "adopt sandbox");
    {
      std::lock_guard lock(mu_);
      if (auto it = live_.find(id); it != live_.end()) return it->second->handle;
    }
    auto pid = cgroups_.find_init(id);
    if (!pid) return std::unexpected(std::move(pid.error()).context(ctx));
    auto map = sys::read_uid_map(*pid);
    if (!map) return std::unexpected(std::move(map.error()).context(ctx));
    if (map->inside != 0 || map->outside == 0) {
      return make_error(ErrorCode::kFailedPrecondition, ctx + ": its PID 1 is not in a sandbox user namespace");
    }
    auto slot = slots_.claim(map->outside);
    if (!slot) return std::unexpected(std::move(slot.error()).context(ctx));
    COPPICE_TRY_CTX(registry_put(opts_.registry_dir, id, state_dir), ctx);
    auto live = std::make_shared<Live>();
    live->handle.id = id;
    live->handle.init_pid = *pid;
    live->handle.state_dir = state_dir;
    live->handle.envd_socket = StatePaths(state_dir).socket;
    live->handle.host_uid = map->outside;
    // Taken now, from the PID 1 found in the sandbox's own cgroup, and checked
    // before every later use of the namespace.
    if (auto ns = sys::open_netns_of(*pid); ns) {
      if (auto c = sys::netns_cookie(ns->get()); c) live->handle.netns_cookie = *c;
      if (opts_.network) {
        // Its address and veth, as the kernel has them.
        if (auto a = opts_.network->adopt(ns->get(), id); a) {
          live->handle.net_addr = a->addr;
          live->handle.net_link = a->link;
        } else {
          COPPICE_LOG(warn).sandbox(id) << "adopt: no network: " << a.error().to_string();
        }
      }
    }
    live->slot = std::move(*slot);
    std::lock_guard lock(mu_);
    live_[id] = live;
    return live->handle;
  }

 private:
  // The sandbox's network namespace, checked to be the one it was made with.
  Result<sys::UniqueFd> open_checked_netns(const SandboxHandle& h) {
    if (h.init_pid <= 0 || h.netns_cookie == 0) return make_error(ErrorCode::kNotFound, "its network namespace is not known");
    auto ns = sys::open_netns_of(h.init_pid);
    if (!ns) return make_error(ErrorCode::kNotFound, "the sandbox is gone");
    auto c = sys::netns_cookie(ns->get());
    if (!c || *c != h.netns_cookie) return make_error(ErrorCode::kNotFound, "the sandbox's network namespace is gone");
    return std::move(*ns);
  }

  // A pidfd of the sandbox's PID 1. Our own child cannot have been reaped
  // (so its pid cannot be reused) before destroy(). An adopted PID 1 is
  // reaped by someone else: the process the pidfd names must be the one the
  // sandbox's cgroup holds, checked after the pidfd pins it.
  Result<sys::Pidfd> pinned_init(const SandboxHandle& h) {
    COPPICE_TRY(validate_id(h.id));
    bool own = false;
    pid_t pid = -1;
    {
      std::lock_guard lock(mu_);
      if (auto it = live_.find(h.id); it != live_.end()) {
        own = it->second->own_child;
        pid = it->second->handle.init_pid;
      }
    }
    if (pid <= 0) return make_error(ErrorCode::kNotFound, "not running here");
    auto fd = sys::Pidfd::open(pid);
    if (!fd) return make_error(ErrorCode::kNotFound, "its PID 1 is gone");
    if (!own) {
      auto init = cgroups_.find_init(h.id);
      if (!init || *init != pid) return make_error(ErrorCode::kNotFound, "its PID 1 is gone");
    }
    return std::move(*fd);
  }

  // The state dir of a sandbox this process runs, else its registry record's.
  std::string state_dir_of(const std::string& id) {
    {
      std::lock_guard lock(mu_);
      if (auto it = live_.find(id); it != live_.end()) return it->second->handle.state_dir;
    }
    auto r = registry_lookup(opts_.registry_dir, id);
    return r ? *r : std::string();
  }

  sys::BackgroundPool* background() const { return opts_.background ? opts_.background : own_pool_.get(); }

  const NsOptions opts_;
  const CgroupManager cgroups_;
  std::unique_ptr<sys::BackgroundPool> own_pool_;  // when the options give none
  UidSlots slots_;
  const sys::seccomp::Program seccomp_;
  Spares spares_;  // uses cgroups_: declared after it
  const VolumeStorage volumes_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Live>> live_;
  // Suspended sandboxes (no processes; state dir kept): their uid slots.
  std::map<std::string, std::shared_ptr<SlotLease>> suspended_;
};

}  // namespace

Result<std::unique_ptr<Backend>> make_ns_backend(const NsOptions& options) {
  if (options.uid_base == 0 || options.uid_slots == 0 ||
      uint64_t(options.uid_base) + uint64_t(options.uid_slots) * kIdsPerSlot > 0xFFFFFFFEull) {
    return make_error(ErrorCode::kInvalidArgument, "ns backend: uid_base/uid_slots out of range");
  }
  auto cgroups = CgroupManager::open(options.cgroup_parent);
  if (!cgroups) return std::unexpected(std::move(cgroups.error()).context("ns backend"));
  const uint64_t total_pids =
      options.total_pids_max < 0 ? default_parent_pids_max() : static_cast<uint64_t>(options.total_pids_max);
  COPPICE_TRY_CTX(cgroups->limit_parent_pids(total_pids), "ns backend");
  COPPICE_TRY_CTX(sys::make_dirs(options.registry_dir, 0700), "ns backend: registry dir");
  auto seccomp = compile_default_seccomp_policy();
  if (!seccomp) return std::unexpected(std::move(seccomp.error()).context("ns backend"));
  COPPICE_LOG(info) << "ns backend: uids from " << options.uid_base << " (" << options.uid_slots
                    << " slots), seccomp filter of " << seccomp->size() << " instructions, all sandboxes together "
                    << (total_pids ? "at most " + std::to_string(total_pids) + " tasks" : "without a task cap");
  return std::unique_ptr<Backend>(new NsBackend(options, std::move(*cgroups), std::move(*seccomp)));
}

}  // namespace coppice::sandbox
