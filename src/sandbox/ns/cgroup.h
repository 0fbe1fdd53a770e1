// Per-sandbox cgroups: cpu, memory and pids limits, freeze/thaw, kill, usage.
//
// Works on pure cgroup v2 hosts and on v1/hybrid hosts (v1 controllers under
// /sys/fs/cgroup/<ctrl>, a controller-less cgroup2 at /sys/fs/cgroup/unified):
// v2 is used when the unified hierarchy offers cpu, memory and pids, v1
// otherwise. Every sandbox gets <hierarchy>/<parent>/<id> in each hierarchy
// used (v2: one; v1: cpu, cpuacct, memory, pids, freezer, deduplicated when
// co-mounted).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "sandbox/backend.h"
#include "sys/fd.h"

namespace coppice::sandbox::ns {

class CgroupManager;

// The host's task budget: min(kernel.pid_max, kernel.threads-max), minus a
// reserve for the gateway and the rest of the host (an eighth, at least
// 2048, at most 65536): what all sandboxes together may hold. 0 when the
// limits cannot be read.
uint64_t default_parent_pids_max();

// The cgroups of one sandbox being created. Removes its directories when
// destroyed unless release()d: a failed create leaves no cgroup behind.
class SandboxCgroup {
 public:
  SandboxCgroup() = default;
  SandboxCgroup(SandboxCgroup&&) noexcept = default;
  SandboxCgroup& operator=(SandboxCgroup&&) noexcept;
  ~SandboxCgroup();

  // Write-only fds of each hierarchy's cgroup.procs (v2: one); the child
  // writes "0" to each to move itself in before it does anything else.
  const std::vector<sys::UniqueFd>& procs_fds() const { return procs_; }
  // Closes the fds the child needed (after clone) without removing anything.
  void close_fds();
  // Gives up removal: the cgroups now belong to a running sandbox.
  void release() { dirs_.clear(); }

 private:
  friend class CgroupManager;
  std::vector<std::string> dirs_;
  std::vector<sys::UniqueFd> procs_;
};

struct CgroupUsage {
  uint64_t cpu_ns = 0;
  uint64_t mem_bytes = 0;
  uint64_t mem_limit = 0;
};

class CgroupManager {
 public:
  // Detects the layout and creates <hierarchy>/<parent> (enabling cpu, memory
  // and pids for children on v2). Logs what it found.
  static Result<CgroupManager> open(const std::string& parent);

  bool v2() const { return v2_; }

  // Creates the sandbox's cgroups and writes the limits.
  Result<SandboxCgroup> create(const std::string& id, const Limits& limits) const;

  // Turns the spare cgroups `spare` (made by create() ahead of time, limited
  // to `spare_limits`, no process in them) into sandbox `id`'s: renamed in
  // every hierarchy, limits rewritten only if they differ. v1 only (cgroup2
  // does not rename: kUnimplemented). On failure the spare is left whole.
  Result<SandboxCgroup> take_spare(const std::string& spare, const std::string& id, const Limits& spare_limits,
                                   const Limits& limits) const;

  // Writes cpu, memory and pids limits to the sandbox's cgroups.
  Status write_limits(const std::string& id, const Limits& limits) const;

  // Changes the CPU bandwidth (millicores, > 0) and memory limit of a
  // sandbox's cgroups, running or frozen, effective at once; pids.max stays.
  // Memory goes first, as it is the step the kernel may refuse: lowering the
  // limit reclaims what the sandbox can give back (page cache; never an OOM
  // kill: on v2 through memory.high before memory.max, on v1 the limit write
  // itself, which fails with EBUSY), and when it still holds more than
  // `memory_bytes` the answer is kFailedPrecondition saying how much it
  // holds, with nothing changed. kNotFound when the sandbox has no cgroup.
  Status resize(const std::string& id, int cpu_millicores, uint64_t memory_bytes) const;

  Status freeze(const std::string& id) const;
  Status thaw(const std::string& id) const;
  bool frozen(const std::string& id) const;

  // Kills every process in the sandbox's cgroups (v2 cgroup.kill; v1 freeze,
  // SIGKILL each pid, thaw). Does not wait for them to exit.
  Status kill_all(const std::string& id) const;

  // Moves process `pid` (host pid) into the sandbox's cgroups, in every
  // hierarchy: e.g. a helper whose children must be charged to the sandbox.
  Status join(const std::string& id, pid_t pid) const;

  // Pids in the sandbox's cgroup (host pids).
  Result<std::vector<pid_t>> pids(const std::string& id) const;

  // The host pid of the sandbox's PID 1: the member whose innermost pid is 1.
  Result<pid_t> find_init(const std::string& id) const;

  Result<CgroupUsage> usage(const std::string& id) const;

  // Removes the sandbox's cgroup directories (they must be empty); succeeds
  // if they do not exist.
  Status remove(const std::string& id) const;

  // Renames the sandbox's cgroup directories from `id` to `new_id` in every
  // hierarchy (rename(2) within the parent: the processes, limits, charges and
  // the sandbox's cgroup namespace root stay as they are). A hierarchy where
  // only `new_id` exists counts as done, so a half-done rename can be run
  // again. On failure the hierarchies renamed by this call are renamed back.
  // cgroup2 refuses to rename cgroup directories (EPERM): kUnimplemented there.
  Status rename(const std::string& id, const std::string& new_id) const;

  // Whether `id` has a cgroup directory in any hierarchy.
  bool exists(const std::string& id) const;

  // Sandbox ids with a cgroup directory under the parent, in any hierarchy.
  Result<std::vector<std::string>> list() const;

  // Caps the processes + threads of all sandboxes together: pids.max of the
  // parent cgroup. 0 writes "max". Idempotent.
  Status limit_parent_pids(uint64_t max) const;
  // pids.max of the parent cgroup ("max" or a number) and of sandbox `id`'s.
  Result<std::string> parent_pids_max() const;
  Result<std::string> pids_max(const std::string& id) const;

  // Removes the parent cgroups if empty (for tests that use their own parent).
  Status remove_parent() const;

  // Removes <hierarchy>/<parent> in every mounted cgroup hierarchy (v1 and
  // v2) where it exists and holds no cgroup; one that still holds sandboxes'
  // cgroups stays, as does any that the kernel says is busy. For a gateway's
  // exit: a parent the next start needs is made again by open(). Errors only
  // for an invalid name or an unexpected kernel answer.
  static Status remove_parent_if_empty(const std::string& parent);

 private:
  std::vector<std::string> dirs_for(const std::string& id) const;
  Status open_procs(SandboxCgroup& cg) const;
  std::string dir_of(const std::string& ctrl_or_v2, const std::string& id) const;
  // The pieces of write_limits().
  Status write_cpu(const std::string& id, int cpu_millicores) const;
  Status write_memory(const std::string& id, uint64_t bytes) const;

  bool v2_ = false;
  std::string parent_;
  // v2: {"" -> <mount>/<parent>}; v1: controller -> <mount>/<parent>.
  std::vector<std::pair<std::string, std::string>> roots_;
};

}  // namespace coppice::sandbox::ns
