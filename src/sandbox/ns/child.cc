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
  }
  return "child";
}

namespace {

int g_report = -1;

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

const ChildPlan* g_plan = nullptr;

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

}  // namespace

int child_main(void* arg) { run_child(*static_cast<const ChildPlan*>(arg)); }

[[noreturn]] void run_child(const ChildPlan& p) {
  g_plan = &p;
  stamp(ChildStep::kFds);
  g_report = lift(p.report_fd, true);
  if (g_report < 0) _exit(126);  // nowhere to report to; the parent sees EOF + exit status
  int ready = lift(p.ready_fd, true);
  int log = lift(p.log_fd, true);
  if (ready < 0 || (p.log_fd >= 0 && log < 0)) fail(ChildStep::kFds, errno);

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

  // Mounts and pivot_root, still as host root in the host's user namespace.
  stamp(ChildStep::kMount);
  const MountOp* failed = nullptr;
  uint64_t* op_times = p.step_times ? p.step_times + kChildStepCount : nullptr;
  if (int err = p.mounts.run(p.userns_fd, &failed, op_times); err != 0) {
    fail(ChildStep::kMount, err, failed && failed->dst ? failed->dst : nullptr);
  }

  // The uts and network namespaces belong to the host's user namespace, so
  // this must happen before entering the sandbox's.
  stamp(ChildStep::kHostname);
  if (::sethostname(p.hostname.data(), p.hostname.size()) != 0) fail(ChildStep::kHostname, errno);
  if (p.netns_fd < 0) {
    stamp(ChildStep::kLoopback);
    if (int err = sys::netif::loopback_up(); err != 0) fail(ChildStep::kLoopback, err);
  }

  // Enter the slot's user namespace (prepared once, with the sandbox's id
  // mapping) and become its root: host uid = slot base. setns gives full
  // capabilities inside it; setresuid from host uid 0 to the namespace's
  // root keeps them (the kernel only clears them when leaving root).
  stamp(ChildStep::kUserns);
  if (::setns(p.userns_fd, CLONE_NEWUSER) != 0) fail(ChildStep::kUserns, errno);
  if (sys::raw::setgroups_self(0, nullptr) != 0) fail(ChildStep::kSetIds, errno, "setgroups");
  if (sys::raw::setresgid_self(0, 0, 0) != 0) fail(ChildStep::kSetIds, errno, "setresgid");
  if (sys::raw::setresuid_self(0, 0, 0) != 0) fail(ChildStep::kSetIds, errno, "setresuid");

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

}  // namespace coppice::sandbox::ns
