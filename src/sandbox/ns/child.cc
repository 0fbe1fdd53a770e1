#include "sandbox/ns/child.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "sys/caps.h"
#include "sys/linux_syscalls.h"
#include "sys/netif.h"
#include "sys/seccomp.h"

namespace coppice::sandbox::ns {

void ChildPlan::seal() {
  argv.clear();
  envp.clear();
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
}

const char* child_step_name(ChildStep step) {
  switch (step) {
    case ChildStep::kFds: return "move fds";
    case ChildStep::kPriority: return "normal scheduling";
    case ChildStep::kRlimits: return "set resource limits";
    case ChildStep::kJoinCgroup: return "join cgroup";
    case ChildStep::kCgroupNs: return "unshare cgroup namespace";
    case ChildStep::kSignals: return "reset signal mask";
    case ChildStep::kNetns: return "enter network namespace";
    case ChildStep::kMount: return "mount";
    case ChildStep::kHostname: return "sethostname";
    case ChildStep::kLoopback: return "bring up loopback";
    case ChildStep::kUserns: return "enter user namespace";
    case ChildStep::kSetIds: return "become root of the user namespace";
    case ChildStep::kCaps: return "drop capabilities";
    case ChildStep::kStdio: return "set up stdio and ready fd";
    case ChildStep::kSeccomp: return "load seccomp filter";
    case ChildStep::kExec: return "exec envd";
    case ChildStep::kPidns: return "make the pid namespace in the user namespace";
  }
  return "child";
}

namespace {

// The checklist's state, per launching thread: a child shares its parent's
// memory (CLONE_VM) and thread pointer, so each launch's child (and a
// restore's PID 1, which runs on after the child has exited) sees the copy of
// the thread that cloned it, and launches on other threads may run at once.
__attribute__((tls_model("initial-exec"))) thread_local int g_report = -1;

[[noreturn]] void fail(ChildStep step, int err, const char* what = nullptr) {
  ChildReport r;
  r.step = static_cast<int>(step);
  r.err = err;
  if (what) {
    size_t n = std::strlen(what);
    if (n >= sizeof r.what) n = sizeof r.what - 1;
    std::memcpy(r.what, what, n);
  }
  ssize_t w = ::write(g_report, &r, sizeof r);
  (void)w;
  _exit(127);
}

__attribute__((tls_model("initial-exec"))) thread_local const ChildPlan* g_plan = nullptr;
__attribute__((tls_model("initial-exec"))) thread_local int g_ready = -1, g_log = -1;  // lifted copies (same numbers in every process of the checklist)

void stamp(ChildStep step) {
  if (!g_plan->step_times) return;
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  g_plan->step_times[static_cast<int>(step)] = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// Moves an fd to >= 10 so that dup2 onto 0..3 cannot clobber it.
int lift(int fd, bool cloexec) {
  if (fd < 0) return fd;
  return ::fcntl(fd, cloexec ? F_DUPFD_CLOEXEC : F_DUPFD, 10);
}

// Enters the slot's user namespace (prepared once, with the sandbox's id
// mapping) and becomes its root: host uid = slot base. setns gives full
// capabilities inside it; setresuid from host uid 0 to the namespace's
// root keeps them (the kernel only clears them when leaving root).
void enter_userns(const ChildPlan& p) {
  stamp(ChildStep::kUserns);
  if (::setns(p.userns_fd, CLONE_NEWUSER) != 0) fail(ChildStep::kUserns, errno);
  if (sys::raw::setgroups_self(0, nullptr) != 0) fail(ChildStep::kSetIds, errno, "setgroups");
  if (sys::raw::setresgid_self(0, 0, 0) != 0) fail(ChildStep::kSetIds, errno, "setresgid");
  if (sys::raw::setresuid_self(0, 0, 0) != 0) fail(ChildStep::kSetIds, errno, "setresuid");
}

// The steps from kStdio on, as the sandbox's root: stdio, seccomp,
// capabilities, signals, exec.
[[noreturn]] void finish(const ChildPlan& p) {
  int ready = g_ready, log = g_log;
  // stdin from /dev/null, stdout/stderr to the log, the ready pipe at fd 3;
  // every other fd is closed by exec (CLOEXEC set on all of them, in case a
  // library in the parent opened one without it).
  stamp(ChildStep::kStdio);
  int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0) fail(ChildStep::kStdio, errno, "/dev/null");
  int out = log >= 0 ? log : null;
  if (::dup2(null, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0 || ::dup2(ready, kReadyFd) < 0) {
    fail(ChildStep::kStdio, errno, "dup2");
  }
  if (sys::raw::close_range(kReadyFd + 1, ~0U, CLOSE_RANGE_CLOEXEC) != 0) fail(ChildStep::kStdio, errno, "close_range");

  // From here on the sandbox's syscall policy applies, to us too. No
  // no_new_privs: set-uid programs (sudo, su) work inside, and can never
  // gain more than the sandbox's root has (an unprivileged host uid, its
  // capabilities bounded below, the filter inherited across every exec).
  // Without no_new_privs the kernel installs a filter only for a caller with
  // CAP_SYS_ADMIN in its user namespace: we still have it here, so the
  // filter goes in before the capabilities are cut. The policy refuses
  // neither prctl, capset nor execve, which the steps below need.
  stamp(ChildStep::kSeccomp);
  if (p.seccomp.len > 0) {
    if (int err = sys::seccomp::load(p.seccomp); err != 0) fail(ChildStep::kSeccomp, err);
  }
  // The bounding set caps what any later exec can give, set-uid root
  // programs and file capabilities included.
  stamp(ChildStep::kCaps);
  if (int err = sys::caps::limit_to(p.capabilities); err != 0) fail(ChildStep::kCaps, err);
  // Signals stay blocked (the parent blocked them all around clone) until
  // here: a handler of the parent must not run on memory shared with it.
  // exec resets every handled signal to its default and keeps the mask, and
  // envd expects an empty one.
  stamp(ChildStep::kSignals);
  sigset_t none;
  sigemptyset(&none);
  if (::sigprocmask(SIG_SETMASK, &none, nullptr) != 0) fail(ChildStep::kSignals, errno);
  stamp(ChildStep::kExec);
  ::execve(p.exec_path.c_str(), p.argv.data(), p.envp.data());
  fail(ChildStep::kExec, errno, p.exec_path.c_str());
}

// PID 1 of a pid namespace of the user namespace (ChildPlan::pidns_of_userns):
// waits for the child's go, then finishes the checklist.
int init_main(void*) {
  const ChildPlan& p = *g_plan;
  ::close(p.go_fd[1]);
  char b;
  ssize_t n;
  do {
    n = ::read(p.go_fd[0], &b, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1) _exit(127);  // the child failed, and said why
  ::close(p.go_fd[0]);
  // pivot_root moved our root, not our working directory.
  if (::chdir("/") != 0) fail(ChildStep::kStdio, errno, "chdir /");
  finish(p);
}

// The helper: in the user namespace, a new pid namespace (which belongs to
// it) and its PID 1, a child of the parent's (CLONE_PARENT), on the shared
// memory (CLONE_VM) and a stack of its own.
int pidns_helper_main(void*) {
  const ChildPlan& p = *g_plan;
  enter_userns(p);
  stamp(ChildStep::kPidns);
  if (::unshare(CLONE_NEWPID) != 0) fail(ChildStep::kPidns, errno, "unshare");
  pid_t init = sys::raw::clone_on_stack(init_main, p.init_stack_top, CLONE_VM | CLONE_PARENT | SIGCHLD, nullptr, nullptr);
  if (init < 0) fail(ChildStep::kPidns, errno, "clone PID 1");
  p.spawned[0] = init;
  _exit(0);
}

// "/proc/<pid>/ns/pid" into `buf` without allocating.
void pidns_path(pid_t pid, char (&buf)[48]) {
  char digits[16];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + pid % 10);
    pid /= 10;
  } while (pid > 0 && n < 15);
  char* o = buf;
  for (const char* s = "/proc/"; *s;) *o++ = *s++;
  while (n > 0) *o++ = digits[--n];
  for (const char* s = "/ns/pid"; *s;) *o++ = *s++;
  *o = '\0';
}

}  // namespace

int child_main(void* arg) { run_child(*static_cast<const ChildPlan*>(arg)); }

[[noreturn]] void run_child(const ChildPlan& p) {
  g_plan = &p;
  stamp(ChildStep::kFds);
  g_report = lift(p.report_fd, true);
  if (g_report < 0) _exit(126);  // nowhere to report to; the parent sees EOF + exit status
  g_ready = lift(p.ready_fd, true);
  g_log = lift(p.log_fd, true);
  if (g_ready < 0 || (p.log_fd >= 0 && g_log < 0)) fail(ChildStep::kFds, errno);

  // Normal scheduling, whatever thread cloned us: a warm pool's sandboxes
  // are made at background priority (sys/background.h), and everything the
  // sandbox runs later inherits from its PID 1. Done while still host root
  // (lowering the nice value needs CAP_SYS_NICE in the host's namespace).
  stamp(ChildStep::kPriority);
  {
    struct sched_param sp {};
    if (::sched_setscheduler(0, SCHED_OTHER, &sp) != 0) fail(ChildStep::kPriority, errno, "sched_setscheduler");
    if (::setpriority(PRIO_PROCESS, 0, 0) != 0) fail(ChildStep::kPriority, errno, "setpriority");
  }

  // Open files per process: a default the sandbox cannot raise past `hard`
  // (lowering a hard limit needs no privilege; it stays lowered).
  if (p.nofile_hard > 0) {
    stamp(ChildStep::kRlimits);
    struct rlimit rl {p.nofile_soft, p.nofile_hard};
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) fail(ChildStep::kRlimits, errno, "RLIMIT_NOFILE");
  }

  // Move into the sandbox's cgroups before doing anything that allocates
  // kernel memory (the memory we use until exec is the parent's).
  stamp(ChildStep::kJoinCgroup);
  for (int fd : p.cgroup_procs_fds) {
    if (::write(fd, "0", 1) != 1) fail(ChildStep::kJoinCgroup, errno);
  }
  // The cgroup namespace is created now, not by clone3, so that its root is
  // the sandbox's cgroup: on v1 we have only just moved into it.
  stamp(ChildStep::kCgroupNs);
  if (::unshare(CLONE_NEWCGROUP) != 0) fail(ChildStep::kCgroupNs, errno);

  ::umask(022);

  // A network namespace made ahead of time, entered before the mounts: the
  // /sys mounted below shows the interfaces of the mounter's namespace.
  if (p.netns_fd >= 0) {
    stamp(ChildStep::kNetns);
    if (::setns(p.netns_fd, CLONE_NEWNET) != 0) fail(ChildStep::kNetns, errno);
  }

  // With a pid namespace of the user namespace (see ChildPlan): its PID 1
  // first, which waits; from here on a failure kills it too.
  pid_t init = 0;
  int pidns = -1;
  auto fail_here = [&](ChildStep step, int err, const char* what = nullptr) {
    if (init > 0) ::kill(init, SIGKILL);
    fail(step, err, what);
  };
  if (p.pidns_of_userns) {
    // CLONE_VFORK: we go on once the helper has exited.
    pid_t helper = sys::raw::clone_on_stack(pidns_helper_main, p.helper_stack_top,
                                            CLONE_VM | CLONE_VFORK | CLONE_PARENT, nullptr, nullptr);
    if (helper < 0) fail(ChildStep::kPidns, errno, "clone helper");
    p.spawned[1] = helper;
    init = p.spawned[0];
    if (init <= 0) _exit(127);  // the helper said why
    char path[48];
    pidns_path(init, path);
    pidns = ::open(path, O_RDONLY | O_CLOEXEC);
    if (pidns < 0) fail_here(ChildStep::kPidns, errno, "open the pid namespace");
  }

  // Mounts and pivot_root, still as host root in the host's user namespace.
  stamp(ChildStep::kMount);
  const MountOp* failed = nullptr;
  uint64_t* op_times = p.step_times ? p.step_times + kChildStepCount : nullptr;
  if (int err = p.mounts.run(p.userns_fd, &failed, op_times, pidns); err != 0) {
    fail_here(ChildStep::kMount, err, failed && failed->dst ? failed->dst : nullptr);
  }

  // The uts and network namespaces belong to the host's user namespace, so
  // this must happen before entering the sandbox's.
  stamp(ChildStep::kHostname);
  if (::sethostname(p.hostname.data(), p.hostname.size()) != 0) fail_here(ChildStep::kHostname, errno);
  if (p.netns_fd < 0) {
    stamp(ChildStep::kLoopback);
    if (int err = sys::netif::loopback_up(); err != 0) fail_here(ChildStep::kLoopback, err);
  }

  if (p.pidns_of_userns) {
    // PID 1 goes on from kStdio; we are done.
    if (::write(p.go_fd[1], "g", 1) != 1) fail_here(ChildStep::kPidns, errno, "start PID 1");
    _exit(0);
  }
  enter_userns(p);
  finish(p);
}

}  // namespace coppice::sandbox::ns
