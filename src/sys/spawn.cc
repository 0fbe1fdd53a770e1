#include "sys/spawn.h"

#include <cstdio>

#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "common/constants.h"
#include "sys/child_stack.h"
#include "sys/linux_syscalls.h"

namespace coppice::sys {
namespace {

struct ChildFailure {
  int step;
  int err;
};

enum Step { kOpenNull = 1, kDup, kSetsid, kCtty, kOomScore, kGroups, kGid, kUid, kChdir, kExec };

const char* step_name(int step) {
  switch (step) {
    case kOpenNull: return "open /dev/null";
    case kDup: return "dup2 standard streams";
    case kSetsid: return "setsid";
    case kCtty: return "set controlling terminal";
    case kOomScore: return "set oom_score_adj";
    case kGroups: return "setgroups";
    case kGid: return "setgid";
    case kUid: return "setuid";
    case kChdir: return "chdir";
    case kExec: return "exec";
  }
  return "spawn";
}

[[noreturn]] void fail(int report_fd, int step) {
  ChildFailure f{step, errno};
  ssize_t r = ::write(report_fd, &f, sizeof f);
  (void)r;
  _exit(127);
}

// What the child of spawn() works from, all prepared before clone.
struct VforkChild {
  const SpawnOptions* opts = nullptr;
  const char* path = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  int report_fd = -1;
  char oom[16] = {};
  size_t oom_len = 0;
  sigset_t old_mask;
};

// The child: async-signal-safe calls only, and raw syscalls for the
// credentials (glibc's setuid would signal the threads it shares memory
// with, ours). Signals are blocked on entry.
int vfork_child(void* arg) {
  const VforkChild& c = *static_cast<const VforkChild*>(arg);
  const SpawnOptions& opts = *c.opts;
  const int rfd = c.report_fd;
  // A handler of ours must never run here: each goes back to the default
  // (what exec would do anyway); ignored signals stay ignored unless the
  // caller asked for defaults.
  for (int s = 1; s < NSIG; ++s) {
    struct sigaction sa;
    if (::sigaction(s, nullptr, &sa) != 0) continue;
    bool handled = (sa.sa_flags & SA_SIGINFO) || (sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN);
    if (handled || (opts.reset_signals && sa.sa_handler == SIG_IGN)) ::signal(s, SIG_DFL);
  }
  int in = opts.stdin_fd, out = opts.stdout_fd, err = opts.stderr_fd;
  if (in < 0 || out < 0 || err < 0) {
    int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd < 0) fail(rfd, kOpenNull);
    if (in < 0) in = null_fd;
    if (out < 0) out = null_fd;
    if (err < 0) err = null_fd;
  }
  // dup2 clears O_CLOEXEC on the targets; copies first so a source that is
  // itself 0..2 is not clobbered.
  int tin = ::fcntl(in, F_DUPFD_CLOEXEC, 3), tout = ::fcntl(out, F_DUPFD_CLOEXEC, 3),
      terr = ::fcntl(err, F_DUPFD_CLOEXEC, 3);
  if (tin < 0 || tout < 0 || terr < 0) fail(rfd, kDup);
  if (::dup2(tin, 0) < 0 || ::dup2(tout, 1) < 0 || ::dup2(terr, 2) < 0) fail(rfd, kDup);
  if (opts.new_session && ::setsid() < 0) fail(rfd, kSetsid);
  if (opts.controlling_tty && ::ioctl(0, TIOCSCTTY, 0) < 0) fail(rfd, kCtty);
  if (c.oom_len > 0) {
    int fd = ::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ::write(fd, c.oom, c.oom_len) != static_cast<ssize_t>(c.oom_len)) fail(rfd, kOomScore);
    ::close(fd);
  }
  if (opts.gid) {
    if (raw::setgroups_self(opts.groups.size(), opts.groups.data()) < 0) fail(rfd, kGroups);
    if (raw::setresgid_self(*opts.gid, *opts.gid, *opts.gid) < 0) fail(rfd, kGid);
  }
  if (opts.uid && raw::setresuid_self(*opts.uid, *opts.uid, *opts.uid) < 0) fail(rfd, kUid);
  if (!opts.cwd.empty() && ::chdir(opts.cwd.c_str()) < 0) fail(rfd, kChdir);
  // Every other descriptor the child might have inherited goes at exec.
  raw::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
  if (opts.reset_signals) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
  } else {
    ::sigprocmask(SIG_SETMASK, &c.old_mask, nullptr);
  }
  ::execve(c.path, c.argv, c.envp);
  fail(rfd, kExec);
}

}  // namespace

Result<std::pair<UniqueFd, UniqueFd>> make_pipe(bool nonblock_read, bool nonblock_write) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return errno_error("pipe2");
  UniqueFd r(fds[0]), w(fds[1]);
  if (nonblock_read) {
    if (auto s = set_nonblocking(r.get(), true); !s) return std::unexpected(s.error());
  }
  if (nonblock_write) {
    if (auto s = set_nonblocking(w.get(), true); !s) return std::unexpected(s.error());
  }
  return std::make_pair(std::move(r), std::move(w));
}

Status set_nonblocking(int fd, bool on) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0) return errno_error("fcntl F_GETFL");
  fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
  if (::fcntl(fd, F_SETFL, fl) != 0) return errno_error("fcntl F_SETFL");
  return ok();
}

std::string find_in_path(const std::string& name, const std::string& path_var) {
  if (name.find('/') != std::string::npos) return name;
  size_t start = 0;
  while (start <= path_var.size()) {
    size_t end = path_var.find(':', start);
    if (end == std::string::npos) end = path_var.size();
    // Appended piece by piece: g++ 12 warns (-Wrestrict, a false positive,
    // PR 105651) on the operator+ chain.
    std::string cand = end > start ? path_var.substr(start, end - start) : std::string(".");
    cand.append("/").append(name);
    struct stat st;
    if (::stat(cand.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(cand.c_str(), X_OK) == 0) return cand;
    start = end + 1;
  }
  return {};
}

Result<pid_t> spawn(const SpawnOptions& opts) {
  // Everything the child needs is prepared before clone: the child only
  // makes async-signal-safe calls.
  std::string path = opts.path;
  if (path.find('/') == std::string::npos) {
    std::string path_var(kDefaultPath);
    for (const auto& e : opts.env)
      if (e.rfind("PATH=", 0) == 0) path_var = e.substr(5);
    std::string found = find_in_path(path, path_var);
    if (found.empty()) return make_error(ErrorCode::kNotFound, "exec " + opts.path + ": executable not found in PATH", ENOENT);
    path = found;
  }
  std::vector<char*> argv, envp;
  for (const auto& a : opts.argv) argv.push_back(const_cast<char*>(a.c_str()));
  if (argv.empty()) argv.push_back(const_cast<char*>(path.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : opts.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  // Formatted here: the child must not allocate.
  VforkChild c;
  if (opts.oom_score_adj)
    c.oom_len = static_cast<size_t>(std::snprintf(c.oom, sizeof c.oom, "%d", *opts.oom_score_adj));

  auto report = make_pipe();
  if (!report) return std::unexpected(report.error());
  auto& [rd, wr] = *report;
  c.opts = &opts;
  c.path = path.c_str();
  c.argv = argv.data();
  c.envp = envp.data();
  c.report_fd = wr.get();

  // The child runs on our memory, on a stack of its own, until it execs
  // (CLONE_VM | CLONE_VFORK: this thread waits until then), so no page
  // table is copied: on these VMs a fork of a few MB costs as much again
  // as the exec. Every signal is blocked around it: no handler of ours may
  // run in the child (child_stack.h).
  constexpr size_t kStack = 64 << 10;
  ChildStack* stack = thread_child_stack(kStack);
  if (!stack) return errno_error("spawn: child stack");
  pid_t pid = clone_blocking_signals(vfork_child, stack->top(), CLONE_VM | CLONE_VFORK | SIGCHLD, &c, nullptr,
                                     &c.old_mask);
  int clone_errno = errno;
  if (pid < 0) return errno_error("clone", clone_errno);
  wr.reset();
  ChildFailure f{};
  ssize_t n;
  do n = ::read(rd.get(), &f, sizeof f);
  while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof f)) {
    // The child failed before exec and exits with 127; the caller reaps it.
    std::string step = step_name(f.step);
    if (f.step == kExec) step += " " + path;
    if (f.step == kChdir) step += " " + opts.cwd;
    auto e = Error::from_errno(f.err, step);
    return std::unexpected(Error(e.code(), e.message(), f.err));
  }
  return pid;
}

}  // namespace coppice::sys
