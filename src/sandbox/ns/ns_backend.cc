#include "sandbox/ns/ns_backend.h"

#include <fcntl.h>

#include <map>
#include <mutex>
#include <set>

#include "common/log.h"
#include "sandbox/ns/cgroup.h"
#include "sandbox/ns/launch.h"
#include "sandbox/ns/registry.h"
#include "sandbox/ns/rename.h"
#include "sandbox/ns/rootfs.h"
#include "sandbox/ns/seccomp_policy.h"
#include "sandbox/ns/spares.h"
#include "sandbox/ns/teardown.h"
#include "sandbox/ns/uid_slots.h"
#include "sys/fsutil.h"
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
      : opts_(std::move(opts)), cgroups_(std::move(cgroups)), slots_(opts_.uid_base, opts_.uid_slots),
        seccomp_(std::move(seccomp)),
        spares_(&cgroups_, opts_.spare_dir, opts_.spares, opts_.spare_limits) {}

  Result<SandboxHandle> create(const SandboxSpec& spec) override {
    LaunchContext ctx;
    ctx.cgroups = &cgroups_;
    ctx.slots = &slots_;
    ctx.spares = &spares_;
    ctx.seccomp = &seccomp_;
    ctx.registry_dir = opts_.registry_dir;
    ctx.ready_timeout_ms = opts_.ready_timeout_ms;
    ctx.envd_log = opts_.envd_log;
    auto launched = launch(ctx, spec);
    if (!launched) return std::unexpected(launched.error());
    auto live = std::make_shared<Live>(Live{launched->handle, std::move(launched->slot), true});
    std::lock_guard lock(mu_);
    live_[spec.id] = live;
    return live->handle;
  }

  Status destroy(const std::string& id) override {
    COPPICE_TRY_CTX(validate_id(id), "destroy sandbox");
    std::shared_ptr<Live> live;
    {
      std::lock_guard lock(mu_);
      if (auto it = live_.find(id); it != live_.end()) {
        live = it->second;
        live_.erase(it);
      }
    }
    pid_t pid = live ? live->handle.init_pid : -1;
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
    return s;  // the slot returns to the pool with `live`
  }

  Status freeze(const std::string& id) override {
    COPPICE_TRY_CTX(validate_id(id), "freeze sandbox");
    return cgroups_.freeze(id);
  }

  Status thaw(const std::string& id) override {
    COPPICE_TRY_CTX(validate_id(id), "thaw sandbox");
    return cgroups_.thaw(id);
  }

  Result<Usage> usage(const std::string& id) override {
    COPPICE_TRY_CTX(validate_id(id), "usage of sandbox");
    auto cg = cgroups_.usage(id);
    if (!cg) return std::unexpected(cg.error());
    Usage u{cg->cpu_ns, cg->mem_bytes, cg->mem_limit, 0};
    std::string state;
    {
      std::lock_guard lock(mu_);
      if (auto it = live_.find(id); it != live_.end()) state = it->second->handle.state_dir;
    }
    if (state.empty()) {
      if (auto r = registry_lookup(opts_.registry_dir, id); r) state = *r;
    }
    if (!state.empty()) {
      if (auto d = upper_disk_bytes(state); d) u.disk_bytes = *d;
    }
    return u;
  }

  Result<SandboxHandle> rename(const std::string& id, const std::string& new_id,
                               const std::string& new_state_dir) override {
    const std::string ctx = "rename sandbox " + id;
    COPPICE_TRY_CTX(validate_id(id), "rename sandbox");
    std::shared_ptr<Live> live;
    {
      std::lock_guard lock(mu_);
      auto it = live_.find(id);
      if (it == live_.end()) return make_error(ErrorCode::kNotFound, ctx + ": not running here");
      if (live_.contains(new_id)) return make_error(ErrorCode::kAlreadyExists, ctx + ": " + new_id + " exists", EEXIST);
      live = it->second;
      renaming_.insert(id);
    }
    RenameRequest req{id, new_id, live->handle.init_pid, live->handle.state_dir, new_state_dir};
    auto s = rename_sandbox(cgroups_, opts_.registry_dir, req);
    std::lock_guard lock(mu_);
    renaming_.erase(id);
    if (!s) return std::unexpected(s.error());
    live->handle.id = new_id;
    live->handle.state_dir = new_state_dir;
    live->handle.envd_socket = StatePaths(new_state_dir).socket;
    live_.erase(id);
    live_[new_id] = live;
    return live->handle;
  }

  size_t spares_ready() const override { return spares_.ready(); }

  Result<std::vector<std::string>> list_existing() override {
    {
      std::lock_guard lock(mu_);
      finish_pending_renames(cgroups_, opts_.registry_dir, renaming_);
    }
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
    live->slot = std::move(*slot);
    std::lock_guard lock(mu_);
    live_[id] = live;
    return live->handle;
  }

 private:
  const NsOptions opts_;
  const CgroupManager cgroups_;
  UidSlots slots_;
  const sys::seccomp::Program seccomp_;
  Spares spares_;  // uses cgroups_: declared after it
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Live>> live_;
  std::set<std::string> renaming_;  // old ids of renames under way (their journal is live)
};

}  // namespace

Result<std::unique_ptr<Backend>> make_ns_backend(const NsOptions& options) {
  if (options.uid_base == 0 || options.uid_slots == 0 ||
      uint64_t(options.uid_base) + uint64_t(options.uid_slots) * kIdsPerSlot > 0xFFFFFFFEull) {
    return make_error(ErrorCode::kInvalidArgument, "ns backend: uid_base/uid_slots out of range");
  }
  auto cgroups = CgroupManager::open(options.cgroup_parent);
  if (!cgroups) return std::unexpected(std::move(cgroups.error()).context("ns backend"));
  COPPICE_TRY_CTX(sys::make_dirs(options.registry_dir, 0700), "ns backend: registry dir");
  // Renames a crash interrupted are completed before anyone looks.
  finish_pending_renames(*cgroups, options.registry_dir, {});
  auto seccomp = compile_default_seccomp_policy();
  if (!seccomp) return std::unexpected(std::move(seccomp.error()).context("ns backend"));
  COPPICE_LOG(info) << "ns backend: uids from " << options.uid_base << " (" << options.uid_slots
                    << " slots), seccomp filter of " << seccomp->size() << " instructions";
  return std::unique_ptr<Backend>(new NsBackend(options, std::move(*cgroups), std::move(*seccomp)));
}

}  // namespace coppice::sandbox
