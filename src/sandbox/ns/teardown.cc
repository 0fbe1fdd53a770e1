#include "sandbox/ns/teardown.h"

#include <signal.h>

#include <chrono>

#include "common/log.h"
#include "sandbox/ns/registry.h"
#include "sandbox/ns/rootfs.h"
#include "sandbox/ns/trash.h"
#include "sys/pidfd_owner.h"

namespace coppice::sandbox::ns {

namespace {
constexpr int kExitTimeoutMs = 10000;
}

Status teardown(const CgroupManager& cgroups, const std::string& registry_dir, const std::string& id,
                pid_t init_pid, std::string state_dir, bool keep_state) {
  const std::string ctx = "destroy sandbox " + id;
  using Clock = std::chrono::steady_clock;
  auto us = [](Clock::duration d) { return std::chrono::duration_cast<std::chrono::microseconds>(d).count(); };
  const auto t0 = Clock::now();
  // 1. Kill PID 1: the kernel then kills every other process of its pid
  // namespace, and PID 1's exit completes only after they are all gone.
  // Our own child's pid stays valid until we reap it; for an adopted sandbox
  // the pid comes from the cgroup, and the pidfd pins it from here on.
  if (init_pid <= 0) {
    if (auto pid = cgroups.find_init(id); pid) init_pid = *pid;
  }
  sys::Pidfd init;
  if (init_pid > 0) {
    if (auto fd = sys::Pidfd::open(init_pid); fd) init = std::move(*fd);
  }
  if (init.valid()) {
    COPPICE_TRY_CTX(init.send_signal(SIGKILL), ctx);
    // A v1-frozen task does not act on SIGKILL until thawed.
    if (cgroups.frozen(id)) COPPICE_TRY_CTX(cgroups.thaw(id), ctx);
    COPPICE_TRY_CTX(init.wait_exit(kExitTimeoutMs), ctx);
    init.reap();  // when we are its parent; otherwise its parent reaps it
  }
  const auto t_dead = Clock::now();
  // 2. Anything still in the cgroups (a process that was never in the pid
  // namespace should not exist, but the cgroup is the authority).
  if (auto left = cgroups.pids(id); left && !left->empty()) {
    COPPICE_LOG(warn).sandbox(id) << left->size() << " processes outside the sandbox's init; killing the cgroup";
    COPPICE_TRY_CTX(cgroups.kill_all(id), ctx);
  }
  COPPICE_TRY_CTX(cgroups.remove(id), ctx);
  const auto t_cg = Clock::now();
  if (keep_state) return ok();
  // 3. The state dir, into the trash (its contents are removed in the background).
  if (state_dir.empty()) {
    auto recorded = registry_lookup(registry_dir, id);
    if (recorded) state_dir = *recorded;
    else if (recorded.error().code() != ErrorCode::kNotFound) return std::unexpected(std::move(recorded.error()).context(ctx));
  }
  if (!state_dir.empty()) {
    if (auto moved = move_to_trash(state_dir); !moved) {
      COPPICE_LOG(warn).sandbox(id) << moved.error().to_string() << ": removing it in place";
      COPPICE_TRY_CTX(remove_state_dir(state_dir), ctx);
    }
  }
  COPPICE_TRY_CTX(registry_remove(registry_dir, id), ctx);
  COPPICE_LOG(debug).sandbox(id) << "destroyed in " << us(Clock::now() - t0) << " us: kill+exit " << us(t_dead - t0)
                                 << ", cgroups " << us(t_cg - t_dead) << ", state dir " << us(Clock::now() - t_cg);
  return ok();
}

}  // namespace coppice::sandbox::ns
