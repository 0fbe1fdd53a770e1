#include "sandbox/ns/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <linux/sched.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <vector>

#include "common/log.h"
#include "sys/fsutil.h"
#include "sys/linux_syscalls.h"
#include "sys/tree_copy.h"

namespace coppice::sandbox::ns {
namespace {

constexpr const char* kDefaultCriu = "/usr/local/lib/coppice/criu/sbin/criu";
constexpr const char* kLoader = "/lib64/ld-linux-x86-64.so.2";
constexpr const char* kLibDir = "/lib/x86_64-linux-gnu";
// The name of the process that starts criu (a fork of the gateway).
constexpr const char* kHelperName = "coppice-criu";
// criu's cache of its kernel probes (criu-patches/kdat-cache-dir.patch):
// on a host tmpfs (criu keeps it only there: gone at reboot), handed over
// by fd. Never the sandbox's /run. /dev/shm: /run is not a tmpfs on every
// host.
constexpr const char* kKdatDir = "/dev/shm/coppice-criu";

// The cache's dir, made if missing: root's own, 0700, not a symlink (anyone
// may create names in /dev/shm). An error when it is not usable.
Result<sys::UniqueFd> open_kdat_dir() {
  if (::mkdir(kKdatDir, 0700) != 0 && errno != EEXIST) return errno_error(std::string("mkdir ") + kKdatDir);
  auto fd = sys::open_file(kKdatDir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (!fd) return std::unexpected(fd.error());
  struct stat st;
  if (::fstat(fd->get(), &st) != 0) return errno_error(std::string("stat ") + kKdatDir);
  if (st.st_uid != 0 || (st.st_mode & 077) != 0) {
    return make_error(ErrorCode::kFailedPrecondition, std::string(kKdatDir) + " is not root's own private dir");
  }
  // A save cut short leaves criu.kdat.tmp, which stops every later save
  // (O_EXCL): drop one that is older than any save in progress.
  if (::fstatat(fd->get(), "criu.kdat.tmp", &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_mtime + 10 < ::time(nullptr)) {
    ::unlinkat(fd->get(), "criu.kdat.tmp", 0);
  }
  return fd;
}
// Beside the images: what the restore needs to know of the tree.
constexpr const char* kSidecar = "coppice-checkpoint";
constexpr const char* kCompleteMarker = "coppice-complete";
// The sandbox's /dev/shm (a tmpfs of its mount namespace, gone with it),
// copied beside the images while the tree is stopped and put back before
// a restore: files there are state as much as memory is.
constexpr const char* kShmCopy = "shm";
constexpr int kEnvdPid = 2;  // envd/pid1.h
constexpr int kRestoreLogFd = 4;
constexpr pid_t kPidMargin = 4096;

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int64_t ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
}

// The innermost pid of host pid `p` (the last NSpid field), 0 if gone.
pid_t ns_pid_of(pid_t p) {
  std::istringstream in(slurp("/proc/" + std::to_string(p) + "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("NSpid:", 0) != 0) continue;
    std::istringstream f(line.substr(6));
    pid_t v = 0, last = 0;
    while (f >> v) last = v;
    return last;
  }
  return 0;
}

// The tail of criu's log, for an error message.
std::string log_tail(const std::string& path) {
  std::string text = slurp(path);
  std::vector<std::string> errs;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find("Error") != std::string::npos && line.find("tun: Unable") == std::string::npos &&
        line.find("RLIMIT_NOFILE for self") == std::string::npos) {
      errs.push_back(line);
    }
  }
  if (errs.empty()) {
    // No error line (criu died, or failed without one): its last lines.
    std::istringstream again(text);
    while (std::getline(again, line)) {
      if (!line.empty()) errs.push_back(line);
    }
  }
  if (errs.size() > 3) errs.erase(errs.begin(), errs.end() - 3);
  std::string out;
  for (const auto& e : errs) out += (out.empty() ? "" : " | ") + e;
  if (out.empty()) return sys::path_exists(path) ? "its log " + path + " is empty" : "it left no log at " + path;
  return out;
}

struct HelperSpec {
  const CgroupManager* cgroups = nullptr;
  std::string id;
  pid_t init = -1;
  int images_fd = -1;
  std::vector<std::string> criu_args;  // after the binary
  pid_t want_pid = 0;                  // 0: any
  // A process whose time namespace criu joins too (0: none): a restored
  // tree lives in a time namespace of its own (criu's, so that its clocks go
  // on from where they were), which a later dump of it must share.
  pid_t time_from = 0;
  std::vector<int> pass_fds;           // kept open across exec (besides images_fd)
  int timeout_ms = 120000;
  std::string log_path;  // host path of criu's log, for errors
  std::string what;      // "checkpoint" | "restore"
};

// Forks the helper described in the header and waits for criu's exit.
Status run_criu(const HelperSpec& h) {
  const std::string ctx = h.what + " of sandbox " + h.id;
  // Everything the child needs, opened and built before fork: after fork
  // only async-signal-safe calls.
  std::vector<sys::UniqueFd> ns;
  std::vector<int> ns_types;
  for (auto [name, type] : {std::pair{"ipc", CLONE_NEWIPC}, {"uts", CLONE_NEWUTS}, {"net", CLONE_NEWNET},
                            {"cgroup", CLONE_NEWCGROUP}, {"pid", CLONE_NEWPID}, {"mnt", CLONE_NEWNS}}) {
    auto fd = sys::open_file("/proc/" + std::to_string(h.init) + "/ns/" + name, O_RDONLY | O_CLOEXEC);
    if (!fd) return std::unexpected(std::move(fd.error()).context(ctx + ": the sandbox is not running"));
    ns.push_back(std::move(*fd));
    ns_types.push_back(type);
  }
  if (h.time_from > 0) {
    auto fd = sys::open_file("/proc/" + std::to_string(h.time_from) + "/ns/time", O_RDONLY | O_CLOEXEC);
    if (!fd) return std::unexpected(std::move(fd.error()).context(ctx + ": the sandbox is not running"));
    ns.push_back(std::move(*fd));
    ns_types.push_back(CLONE_NEWTIME);
  }
  auto loader = sys::open_file(kLoader, O_PATH | O_CLOEXEC);
  if (!loader) return std::unexpected(std::move(loader.error()).context(ctx));
  auto libdir = sys::open_file(kLibDir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (!libdir) return std::unexpected(std::move(libdir.error()).context(ctx));
  auto criu = sys::open_file(criu_path(), O_RDONLY | O_CLOEXEC);
  if (!criu) return std::unexpected(std::move(criu.error()).context(ctx + ": criu"));
  // Without a usable cache dir criu probes afresh each time, keeping its
  // cache (which it never writes off a tmpfs) in the images dir.
  auto kdat = open_kdat_dir();
  if (!kdat) {
    COPPICE_LOG_RATE(warn, 3600) << "criu's probe cache: " << kdat.error().to_string();
  }
  const int kdat_fd = kdat ? kdat->get() : h.images_fd;
  std::vector<int> keep = h.pass_fds;
  keep.push_back(h.images_fd);
  keep.push_back(libdir->get());
  keep.push_back(criu->get());
  keep.push_back(kdat_fd);

  std::vector<std::string> args = {"criu", "--argv0", "criu", "--library-path",
                                   "/proc/self/fd/" + std::to_string(libdir->get()),
                                   "/proc/self/fd/" + std::to_string(criu->get())};
  // criu runs as host root in the sandbox's mount namespace: its config
  // files there (/etc/criu/default.conf, which can name an action script
  // for criu to run) belong to the sandbox and are never read.
  args.push_back(h.criu_args.at(0));
  args.push_back("--no-default-config");
  args.insert(args.end(), h.criu_args.begin() + 1, h.criu_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string env0 = "CRIU_FAULT=130", env1 = "PATH=/usr/sbin:/usr/bin:/sbin:/bin", env2 = "LANG=C",
              env3 = "CRIU_KDAT_DIR=/proc/self/fd/" + std::to_string(kdat_fd);
  char* envp[] = {env0.data(), env1.data(), env2.data(), env3.data(), nullptr};

  int go[2];
  if (::pipe2(go, O_CLOEXEC) != 0) return errno_error(ctx + ": pipe");
  sys::UniqueFd go_r(go[0]), go_w(go[1]);
  // What the helper keeps of our fds: it never execs, and lives as long as
  // criu, so it must not hold the rest (the uid range registry's lock among
  // them: a gateway killed during a checkpoint could not be restarted while
  // criu ran on).
  std::vector<int> helper_fds = keep;
  helper_fds.push_back(go_r.get());
  helper_fds.push_back(loader->get());
  for (auto& f : ns) helper_fds.push_back(f.get());
  std::sort(helper_fds.begin(), helper_fds.end());
  helper_fds.erase(std::unique(helper_fds.begin(), helper_fds.end()), helper_fds.end());
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  // The helper is known by its name from its first instruction on (a
  // restarted gateway waits for it as for criu, see continue_stopped): the
  // name is this thread's for the moment of the fork.
  char thread_name[16] = {};
  (void)::prctl(PR_GET_NAME, thread_name);
  (void)::prctl(PR_SET_NAME, kHelperName);
  pid_t child = ::fork();
  if (child != 0) (void)::prctl(PR_SET_NAME, thread_name);
  if (child == 0) {
    // The helper: wait until it is in the sandbox's cgroups, enter the
    // namespaces, start criu at the wanted pid and pass on its status.
    if (sys::raw::close_all_but(helper_fds.data(), helper_fds.size()) != 0) ::_exit(120);
    char b;
    if (::read(go_r.get(), &b, 1) != 1) ::_exit(120);
    for (size_t i = 0; i < ns.size(); ++i) {
      if (::setns(ns[i].get(), ns_types[i]) != 0) ::_exit(121);
    }
    if (::chdir("/") != 0) ::_exit(122);
    pid_t g;
    if (h.want_pid > 0) {
      pid_t tid[1] = {h.want_pid};
      struct clone_args ca {};
      ca.exit_signal = SIGCHLD;
      ca.set_tid = reinterpret_cast<uint64_t>(tid);
      ca.set_tid_size = 1;
      g = static_cast<pid_t>(::syscall(SYS_clone3, &ca, sizeof ca));
      if (g < 0 && errno == EEXIST) g = ::fork();  // taken: any pid (a clash then fails the restore, not silently)
    } else {
      g = ::fork();
    }
    if (g < 0) ::_exit(123);
    if (g == 0) {
      for (int fd : keep) ::fcntl(fd, F_SETFD, 0);
      ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
      ::syscall(SYS_execveat, loader->get(), "", argv.data(), envp, AT_EMPTY_PATH);
      ::_exit(124);
    }
    int st = 0;
    while (::waitpid(g, &st, 0) < 0 && errno == EINTR) {
    }
    ::_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 125);
  }
  int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (child < 0) return errno_error(ctx + ": fork", fork_errno);
  auto reap = [&](bool kill) {
    if (kill) ::kill(child, SIGKILL);
    int st = 0;
    while (::waitpid(child, &st, 0) < 0 && errno == EINTR) {
    }
    return st;
  };
  go_r.reset();
  if (auto s = h.cgroups->join(h.id, child); !s) {
    reap(true);
    return std::unexpected(std::move(s.error()).context(ctx));
  }
  if (::write(go_w.get(), "g", 1) != 1) {
    reap(true);
    return errno_error(ctx + ": start the helper");
  }
  go_w.reset();
  // Wait with a deadline: a pidfd of the helper.
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, child, 0));
  if (pidfd >= 0) {
    struct pollfd p{pidfd, POLLIN, 0};
    int r;
    do {
      r = ::poll(&p, 1, h.timeout_ms);
    } while (r < 0 && errno == EINTR);
    ::close(pidfd);
    if (r == 0) {
      // criu itself is in the sandbox's cgroups: the caller's kill of the
      // sandbox ends it; the helper goes now.
      reap(true);
      return make_error(ErrorCode::kDeadlineExceeded,
                        ctx + ": criu did not finish in " + std::to_string(h.timeout_ms / 1000) + " s");
    }
  }
  int st = reap(false);
  int code = WIFEXITED(st) ? WEXITSTATUS(st) : 126;
  if (code == 0) return ok();
  static const char* const helper_steps[] = {"wait for its cgroups", "enter the sandbox's namespaces",
                                             "chdir", "fork criu", "exec criu", "criu was killed"};
  if (code >= 120 && code <= 125) {
    return make_error(ErrorCode::kInternal, ctx + ": the helper could not " + helper_steps[code - 120]);
  }
  const std::string tail = log_tail(h.log_path);
  if (h.what == "checkpoint" && tail.find("fsnotify") != std::string::npos) {
    // A watch criu cannot name the file of (on the overlay): the sandbox's
    // doing, not a fault of ours.
    return make_error(ErrorCode::kFailedPrecondition,
                      ctx + ": a process in it watches files (inotify; envd's watchers too) in a way criu cannot "
                            "save here: end the watch and try again (criu: " + tail + ")");
  }
  return make_error(ErrorCode::kInternal, ctx + ": criu failed (" + std::to_string(code) + "): " + tail);
}

// Inodes of the sockets of `pid`'s network namespace, per /proc/<pid>/net.
std::set<std::string> netns_socket_inodes(pid_t pid) {
  std::set<std::string> out;
  for (const char* table : {"unix", "tcp", "tcp6", "udp", "udp6", "raw", "raw6", "netlink", "packet"}) {
    std::istringstream in(slurp("/proc/" + std::to_string(pid) + "/net/" + table));
    std::string line;
    std::getline(in, line);  // header
    // The inode's column: unix 6, packet 8, the rest (tcp, udp, raw, netlink) 9.
    const std::string t = table;
    const int col = t == "unix" ? 6 : t == "packet" ? 8 : 9;
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string v;
      for (int i = 0; i <= col && (f >> v); ++i) {
      }
      if (!v.empty()) out.insert(v);
    }
  }
  return out;
}

// envd's fds that are sockets of another network namespace: connections
// the gateway opened to envd's unix socket (the kernel puts the accepted end
// in the connecting side's namespace), which criu cannot see to dump.
std::vector<int> foreign_sockets(pid_t pid) {
  auto local = netns_socket_inodes(pid);
  std::vector<int> out;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  auto names = sys::list_dir(dir);
  if (!names) return out;
  for (const auto& n : *names) {
    auto link = sys::read_symlink(dir + "/" + n);
    if (!link || link->rfind("socket:[", 0) != 0) continue;
    std::string ino = link->substr(8, link->size() - 9);
    if (!local.count(ino)) out.push_back(std::atoi(n.c_str()));
  }
  return out;
}

// Ends those connections (shutdown through a copy of envd's fd: envd sees
// EOF and closes them) and waits up to `ms` for envd to let go of them. A
// connection still in the listener's backlog is not in envd's fd table yet:
// envd accepts it within milliseconds, so only three empty looks 5 ms apart
// count as none left (the gateway opens no new ones to a pausing sandbox).
void end_foreign_connections(pid_t pid, int ms) {
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return;
  std::set<int> ended;
  int empty = 0;
  for (int i = 0; i * 5 < ms && empty < 3; ++i) {
    auto fds = foreign_sockets(pid);
    COPPICE_LOG(debug) << "checkpoint: " << fds.size() << " connections from outside the sandbox to end";
    empty = fds.empty() ? empty + 1 : 0;
    for (int fd : fds) {
      if (!ended.insert(fd).second) continue;
      int copy = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, fd, 0));
      if (copy < 0) continue;
      ::shutdown(copy, SHUT_RDWR);
      ::close(copy);
    }
    if (empty < 3) ::usleep(5000);
  }
  ::close(pidfd);
}

// Puts the entries of `from` (a copy of a /dev/shm) into the directory `to`
// (the new sandbox's /dev/shm, which nothing of the sandbox has run in yet)
// with their owners and modes: a copy inside `to`'s file system, then each
// entry renamed into place.
Status put_back_shm(const std::string& from, const std::string& to) {
  auto names = sys::list_dir(from);
  if (!names) return std::unexpected(names.error());
  if (names->empty()) return ok();
  const std::string stage = to + "/.coppice-restore";
  (void)sys::remove_tree(stage);
  auto c = sys::copy_tree(from, stage);
  if (!c) return std::unexpected(c.error());
  for (const auto& n : *names) {
    if (::rename((stage + "/" + n).c_str(), (to + "/" + n).c_str()) != 0) return errno_error("rename " + n);
  }
  return sys::remove_tree(stage);
}

Result<sys::UniqueFd> open_images(const std::string& dir, bool make, const std::string& ctx) {
  if (make) {
    // 0755, files 0644 (criu's): the restored tree runs as the sandbox's
    // host uids and reads its images (and works in that dir) itself. Keep images inside a private
    // (0700) dir: the gateway's state dir.
    if (auto s = sys::make_dirs(dir, 0755); !s) return std::unexpected(std::move(s.error()).context(ctx));
    if (::chmod(dir.c_str(), 0755) != 0) return errno_error(ctx + ": chmod " + dir);
  }
  auto fd = sys::open_file(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (!fd) return std::unexpected(std::move(fd.error()).context(ctx));
  return fd;
}

}  // namespace

bool runs_only_its_own(const CgroupManager& cgroups, const std::string& id, pid_t init) {
  auto pids = cgroups.pids(id);
  if (!pids || pids->empty() || pids->size() > 2) return false;
  for (pid_t p : *pids) {
    const pid_t inner = ns_pid_of(p);
    if (inner != 1 && inner != kEnvdPid) return false;
    if (inner == 1 && p != init) return false;
  }
  // Its /dev/shm, resolved in its root (a symlink there cannot lead out):
  // empty but for "." and "..".
  auto root = sys::open_file("/proc/" + std::to_string(init) + "/root", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (!root) return false;
  const int fd = sys::raw::openat2(root->get(), "dev/shm", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW, 0,
                                   RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
  if (fd < 0) return false;
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    return false;
  }
  bool empty = true;
  while (auto* e = ::readdir(d)) {
    if (std::string_view n = e->d_name; n != "." && n != "..") {
      empty = false;
      break;
    }
  }
  ::closedir(d);
  return empty;
}

bool checkpoint_complete(const std::string& images_dir) {
  return sys::path_exists(images_dir + "/" + kCompleteMarker);
}

namespace {

// criu runs through the dynamic loader with argv[0] "criu" (its comm is the
// loader's fd): known by its command line; its helper (which may not have
// started it yet) by its name.
bool criu_at_work(pid_t p) {
  const std::string proc = "/proc/" + std::to_string(p);
  auto cmd = sys::read_file(proc + "/cmdline");
  if (cmd && cmd->rfind(std::string("criu\0", 5), 0) == 0) return true;
  auto comm = sys::read_file(proc + "/comm");
  return comm && *comm == std::string(kHelperName) + "\n";
}

// Whether `p` is stopped by a signal (state 'T' in /proc/<pid>/stat).
bool job_stopped(pid_t p) {
  auto stat = sys::read_file("/proc/" + std::to_string(p) + "/stat");
  auto close = stat ? stat->rfind(')') : std::string::npos;
  return close != std::string::npos && close + 2 < stat->size() && (*stat)[close + 2] == 'T';
}

}  // namespace

bool held_by_checkpoint(const CgroupManager& cgroups, const std::string& id) {
  auto list = cgroups.pids(id);
  if (!list) return false;
  for (pid_t p : *list) {
    if (criu_at_work(p) || (ns_pid_of(p) == kEnvdPid && job_stopped(p))) return true;
  }
  return false;
}

Status continue_stopped(const CgroupManager& cgroups, const std::string& id, int wait_ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  for (;;) {
    auto list = cgroups.pids(id);
    if (!list) return std::unexpected(std::move(list.error()).context("continue sandbox " + id));
    const bool criu = std::any_of(list->begin(), list->end(), criu_at_work);
    if (!criu || std::chrono::steady_clock::now() > until) {
      for (pid_t p : *list) ::kill(p, SIGCONT);
      if (criu) return make_error(ErrorCode::kDeadlineExceeded, "continue sandbox " + id + ": criu is still at work");
      return ok();
    }
    ::usleep(20000);
  }
}

bool valid_boot_id(std::string_view id) {
  if (id.size() != 36) return false;
  for (size_t i = 0; i < id.size(); ++i) {
    const char c = id[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

std::string checkpoint_boot_id(const std::string& images_dir) {
  auto side = sys::read_file(images_dir + "/" + kSidecar);
  if (!side) return {};
  std::istringstream in(*side);
  std::string key, value;
  while (in >> key >> value) {
    if (key == "bootid" && valid_boot_id(value)) return value;
  }
  return {};
}

std::string criu_path() {
  const char* env = std::getenv("COPPICE_CRIU");
  return env && *env ? std::string(env) : std::string(kDefaultCriu);
}

std::string checkpoint_unavailable_reason() {
  static std::once_flag once;
  static std::string reason;
  std::call_once(once, [] {
    const std::string criu = criu_path();
    if (::access(criu.c_str(), X_OK) != 0) {
      reason = "no criu at " + criu + " (scripts/criu.sh installs it)";
    } else if (::access(kLoader, R_OK) != 0 || ::access(kLibDir, R_OK) != 0) {
      reason = std::string("no dynamic loader at ") + kLoader;
    } else if (::geteuid() != 0) {
      reason = "checkpoints need root";
    }
  });
  return reason;
}

Status checkpoint_tree(const CgroupManager& cgroups, const std::string& id, pid_t init, const std::string& images_dir,
                       const CheckpointOptions& opts) {
  const std::string ctx = "checkpoint of sandbox " + id;
  if (auto why = checkpoint_unavailable_reason(); !why.empty()) {
    return make_error(ErrorCode::kFailedPrecondition, ctx + ": " + why);
  }
  auto dir = open_images(images_dir, true, ctx);
  if (!dir) return std::unexpected(dir.error());
  // The tree's pids (for the restore's choice of criu's own) and envd's log
  // pipe (which the restore connects to the new init's).
  auto pids = cgroups.pids(id);
  if (!pids) return std::unexpected(std::move(pids.error()).context(ctx));
  pid_t max_pid = 0, envd_host = 0;
  for (pid_t p : *pids) {
    pid_t n = ns_pid_of(p);
    max_pid = std::max(max_pid, n);
    if (n == kEnvdPid) envd_host = p;
  }
  if (envd_host == 0) return make_error(ErrorCode::kFailedPrecondition, ctx + ": envd is not running");
  auto pipe = sys::read_symlink("/proc/" + std::to_string(envd_host) + "/fd/1");
  std::string sidecar = "maxpid " + std::to_string(max_pid) + "\n";
  if (pipe && pipe->rfind("pipe:[", 0) == 0) sidecar += "logpipe " + *pipe + "\n";
  // The boot id the tree has seen, which its restore keeps.
  if (auto boot = sys::read_file("/proc/" + std::to_string(init) + "/root/proc/sys/kernel/random/boot_id");
      boot && valid_boot_id(boot->substr(0, boot->find('\n')))) {
    sidecar += "bootid " + boot->substr(0, boot->find('\n')) + "\n";
  }
  COPPICE_TRY_CTX(sys::write_new_file(images_dir + "/" + kSidecar, sidecar, 0600), ctx);

  end_foreign_connections(envd_host, 2000);

  HelperSpec h;
  h.cgroups = &cgroups;
  h.id = id;
  h.init = init;
  h.images_fd = dir->get();
  h.timeout_ms = opts.timeout_ms;
  h.log_path = images_dir + "/dump.log";
  h.what = "checkpoint";
  h.time_from = envd_host;
  const std::string d = "/proc/self/fd/" + std::to_string(dir->get());
  h.criu_args = {"dump", "-t", std::to_string(kEnvdPid), "-D", d, "-W", d, "-o", "dump.log", "-v4",
                 "--manage-cgroups=ignore", "--ext-unix-sk", "--file-locks", "--link-remap", "--network-lock", "skip"};
  if (opts.tcp_established) h.criu_args.push_back("--tcp-established");
  // Not killed by criu: once envd dies the init exits and the kernel kills
  // what is left in the pid namespace, criu included, maybe before it is
  // done. Stopped, then killed here once criu has exited.
  const bool hold = opts.leave_running && opts.while_stopped;
  h.criu_args.push_back(opts.leave_running && !hold ? "--leave-running" : "--leave-stopped");
  // The tasks already stopped (by a job control signal) before the dump:
  // not continued after it.
  std::set<pid_t> stopped_before;
  if (hold) {
    for (pid_t p : *pids) {
      if (job_stopped(p)) stopped_before.insert(p);
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  COPPICE_TRY(run_criu(h));
  // criu left the tree stopped (unless it runs on): the rest of it goes on
  // once the work of this instant is done, also when that failed.
  auto go_on = [&] {
    if (auto now = cgroups.pids(id); now) {
      for (pid_t p : *now) {
        if (!stopped_before.count(p)) ::kill(p, SIGCONT);
      }
    }
  };
  if (!opts.leave_running || hold) {
    // Stopped (--leave-stopped): nothing writes to it now.
    auto copied = sys::copy_tree("/proc/" + std::to_string(init) + "/root/dev/shm", images_dir + "/" + kShmCopy);
    if (!copied) {
      if (hold) go_on();
      else (void)cgroups.kill_all(id);
      return std::unexpected(std::move(copied.error()).context(ctx + ": /dev/shm"));
    }
  }
  if (hold) {
    auto done = opts.while_stopped();
    go_on();
    if (!done) return std::unexpected(std::move(done.error()).context(ctx));
  }
  // Whole and on disk (images and their dir entries), before the tree ends.
  if (opts.durable && ::syncfs(dir->get()) != 0) return errno_error(ctx + ": syncfs");
  COPPICE_TRY_CTX(sys::write_new_file(images_dir + "/" + kCompleteMarker, "", 0600), ctx);
  if (opts.durable && ::fsync(dir->get()) != 0) return errno_error(ctx + ": fsync");
  if (!opts.leave_running) COPPICE_TRY_CTX(cgroups.kill_all(id), ctx);
  COPPICE_LOG(info).sandbox(id) << "checkpoint written in " << ms_since(t0) << " ms";
  return ok();
}

Status restore_tree(const CgroupManager& cgroups, const std::string& id, pid_t init, const std::string& images_dir,
                    const std::string& work_dir, int timeout_ms) {
  const std::string ctx = "restore of sandbox " + id;
  if (auto why = checkpoint_unavailable_reason(); !why.empty()) {
    return make_error(ErrorCode::kFailedPrecondition, ctx + ": " + why);
  }
  auto dir = open_images(images_dir, false, ctx);
  if (!dir) return std::unexpected(dir.error());
  auto side = sys::read_file(images_dir + "/" + kSidecar);
  if (!side) return std::unexpected(std::move(side.error()).context(ctx + ": not a checkpoint"));
  pid_t max_pid = 0;
  std::string pipe;
  {
    std::istringstream in(*side);
    std::string key, value;
    while (in >> key >> value) {
      if (key == "maxpid") std::from_chars(value.data(), value.data() + value.size(), max_pid);
      if (key == "logpipe") pipe = value;
    }
  }
  sys::UniqueFd work;
  if (!work_dir.empty()) {
    // As the images dir: the restored tasks work in it as the sandbox's uids
    // (criu's cwd is theirs while they restore their sockets).
    auto w = open_images(work_dir, true, ctx);
    if (!w) return std::unexpected(w.error());
    work = std::move(*w);
  }
  HelperSpec h;
  h.cgroups = &cgroups;
  h.id = id;
  h.init = init;
  h.images_fd = dir->get();
  if (work) h.pass_fds.push_back(work.get());
  h.timeout_ms = timeout_ms;
  h.log_path = (work_dir.empty() ? images_dir : work_dir) + "/restore.log";
  h.what = "restore";
  // Above every pid of the tree: the pids were listed before the dump, and
  // a tree left running (a snapshot, a fork) may have forked meanwhile.
  h.want_pid = max_pid + 1 + kPidMargin;
  if (auto pm = sys::read_file("/proc/sys/kernel/pid_max"); pm && h.want_pid >= std::atoi(pm->c_str())) {
    h.want_pid = max_pid + 1;
  }
  const std::string d = "/proc/self/fd/" + std::to_string(dir->get());
  const std::string w = work ? "/proc/self/fd/" + std::to_string(work.get()) : d;
  h.criu_args = {"restore", "-D", d, "-W", w, "-o", "restore.log", "-v4", "--restore-detached",
                 "--manage-cgroups=ignore", "--ext-unix-sk", "--file-locks", "--link-remap", "--tcp-close"};
  // The tree goes into the sandbox's own user namespace (the init's): the
  // one that owns nothing criu has to make, so that its tasks can still
  // fork at their pids.
  auto userns = sys::open_file("/proc/" + std::to_string(init) + "/ns/user", O_RDONLY | O_CLOEXEC);
  if (!userns) return std::unexpected(std::move(userns.error()).context(ctx));
  h.pass_fds.push_back(userns->get());
  h.criu_args.push_back("--join-ns");
  h.criu_args.push_back("user:/proc/self/fd/" + std::to_string(userns->get()) + ",0,0");
  // envd's stdout and stderr: the new init's log pipe in place of the old.
  sys::UniqueFd log;
  if (!pipe.empty()) {
    auto fd = sys::open_file("/proc/" + std::to_string(init) + "/fd/" + std::to_string(kRestoreLogFd),
                             O_WRONLY | O_CLOEXEC);
    if (fd) {
      log = std::move(*fd);
      h.pass_fds.push_back(log.get());
      h.criu_args.push_back("--inherit-fd");
      h.criu_args.push_back("fd[" + std::to_string(log.get()) + "]:" + pipe);
    }
  }
  // /dev/shm's files first: the restored tree may hold some open.
  if (const std::string shm = images_dir + "/" + kShmCopy; sys::path_exists(shm)) {
    COPPICE_TRY_CTX(put_back_shm(shm, "/proc/" + std::to_string(init) + "/root/dev/shm"), ctx + ": /dev/shm");
  }
  const auto t0 = std::chrono::steady_clock::now();
  COPPICE_TRY(run_criu(h));
  COPPICE_LOG(info).sandbox(id) << "restored in " << ms_since(t0) << " ms";
  return ok();
}

}  // namespace coppice::sandbox::ns
