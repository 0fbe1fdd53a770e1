// The sandbox's first process between clone and exec: the checklist that turns
// a freshly cloned child (host root, in new mount, pid, uts, ipc and network
// namespaces) into envd running as the sandbox's root.
//
// Everything here is async-signal-safe: the plan is built by the parent before
// clone and only read here. Failures are reported to the parent as a
// ChildReport on `report_fd` (CLOEXEC: EOF there means exec succeeded).
//
// The child shares the parent's memory (CLONE_VM | CLONE_VFORK, as
// posix_spawn does): no page tables are copied and no copy-on-write faults
// are taken on either side, which for a large multi-threaded gateway is most
// of what a fork costs. The cloning thread is suspended until the child has
// exec'd or exited, and it holds the clone lock meanwhile, so one such child
// runs at a time per process; the child writes only its own stack, the
// step_times page and the globals of child.cc. It starts with every signal
// blocked and unblocks them just before exec: no handler of the parent ever
// runs on the shared memory.
#pragma once

#include <linux/filter.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sandbox/ns/mounts.h"

namespace coppice::sandbox::ns {

// The fd number envd gets for --ready-fd.
constexpr int kReadyFd = 3;

struct ChildPlan {
  MountPlan mounts;
  std::string hostname;
  int userns_fd = -1;                 // the sandbox's user namespace (uid slot)
  // A ready network namespace (loopback up) to enter instead of the one clone
  // made; -1: the parent cloned with CLONE_NEWNET and the child brings lo up.
  int netns_fd = -1;
  std::vector<int> cgroup_procs_fds;  // cgroup.procs of each hierarchy, to write "0" to
  sock_fprog seccomp{};               // compiled filter; loaded last before exec
  uint64_t capabilities = 0;          // what the sandbox's root keeps
  // RLIMIT_NOFILE of envd and so of everything the sandbox starts (hard: the
  // most any of them can raise the soft one to); 0/0: inherited.
  uint64_t nofile_soft = 0, nofile_hard = 0;
  int report_fd = -1;                 // write end of the report pipe
  int ready_fd = -1;                  // write end of the readiness pipe; becomes kReadyFd
  int log_fd = -1;                    // becomes stdout and stderr
  std::string exec_path;              // path inside the sandbox
  std::vector<std::string> args, env;
  std::vector<char*> argv, envp;      // point into args/env, null-terminated
  // A pid namespace that belongs to the sandbox's user namespace, for a
  // restore (its tasks, inside that user namespace, must be allowed to pick
  // their pids: clone3 set_tid wants CAP_CHECKPOINT_RESTORE over the pid
  // namespace's owner). The parent clones without CLONE_NEWPID; the child
  // (host root) clones a helper (CLONE_PARENT) that enters the user
  // namespace, unshares the pid namespace and clones PID 1 (CLONE_PARENT:
  // the parent's child too) and exits. The child mounts that namespace's
  // /proc (proc's pidns option) and the rest, sets the hostname, tells PID
  // 1 to go on (go_fd) and exits; PID 1 does the steps from kStdio on.
  bool pidns_of_userns = false;
  char* helper_stack_top = nullptr;  // both on memory shared with the parent (CLONE_VM)
  char* init_stack_top = nullptr;
  pid_t* spawned = nullptr;          // [0]: PID 1's host pid (by the helper), [1]: the helper's (by the child)
  int go_fd[2] = {-1, -1};           // pipe (CLOEXEC): the child's byte lets PID 1 go on
  // Optional (debug): a MAP_SHARED array of kChildStepCount CLOCK_MONOTONIC ns
  // values; the child stamps the start of each step into it.
  uint64_t* step_times = nullptr;

  void seal();  // fills argv/envp from args/env
};

enum class ChildStep : int {
  kFds = 1, kPriority, kRlimits, kJoinCgroup, kCgroupNs, kNetns, kMount, kHostname, kLoopback, kUserns, kSetIds, kStdio,
  kSeccomp, kCaps, kSignals, kExec, kPidns,
};
constexpr int kChildStepCount = static_cast<int>(ChildStep::kPidns) + 1;
const char* child_step_name(ChildStep step);

struct ChildReport {
  int step = 0;
  int err = 0;
  char what[200] = {};  // the object (e.g. the mount target), NUL-terminated
};

// Runs the checklist and execs; never returns.
[[noreturn]] void run_child(const ChildPlan& plan);

// clone(2) entry point: `arg` is the ChildPlan.
int child_main(void* arg);

}  // namespace coppice::sandbox::ns
