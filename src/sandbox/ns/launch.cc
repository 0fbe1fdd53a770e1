#include "sandbox/ns/launch.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>

#include "common/constants.h"
#include "common/ids.h"
#include "common/log.h"
#include "sandbox/ns/checkpoint.h"
#include "sys/userns.h"
#include "sandbox/ns/child.h"
#include "sandbox/ns/registry.h"
#include "sandbox/ns/spares.h"
#include "sandbox/ns/volumes.h"
#include "sys/caps.h"
#include "sys/child_stack.h"
#include "sys/clone_lock.h"
#include "sys/fsutil.h"
#include "sys/linux_syscalls.h"
#include "sys/spawn.h"

namespace coppice::sandbox::ns {

namespace {

// Kills and reaps the child unless disarmed: a create that fails after clone
// leaves no process behind. Killing PID 1 of a pid namespace kills the rest.
struct ChildGuard {
  sys::Pidfd* pidfd;
  bool armed = true;
  ~ChildGuard() {
    if (!armed || !pidfd->valid()) return;
    (void)pidfd->send_signal(SIGKILL);
    (void)pidfd->wait_exit(-1);
    pidfd->reap();
  }
};

// Waits for readability of `fd`, at most until `deadline`.
Status wait_readable(int fd, std::chrono::steady_clock::time_point deadline, const char* what) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() < 0) left = std::chrono::milliseconds(0);
    struct pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r > 0) return ok();
    if (r == 0) return make_error(ErrorCode::kDeadlineExceeded, std::string("timed out waiting for ") + what);
    if (errno != EINTR) return errno_error("poll");
  }
}

// The error a child reported, or ok() on EOF (exec succeeded).
Status read_child_report(int fd, const sys::Pidfd& child) {
  ChildReport r;
  size_t got = 0;
  while (got < sizeof r) {
    ssize_t n = ::read(fd, reinterpret_cast<char*>(&r) + got, sizeof r - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error("read child report");
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (got == 0) return ok();
  if (got != sizeof r) return make_error(ErrorCode::kInternal, "short child report");
  r.what[sizeof r.what - 1] = '\0';
  std::string msg = child_step_name(static_cast<ChildStep>(r.step));
  if (r.what[0]) msg += std::string(" ") + r.what;
  return errno_error(msg, r.err);
}

// The verdict of a CLONE_VFORK child once clone has returned: it has
// exec'd or exited by then. A failing child writes its report (one write,
// atomic) before it exits, so the report is there now or never; a child
// killed before it could write one has exited. Never waits: another
// launch's child may still hold a copy of the report pipe's write end
// (until its own exec), so its EOF can come later.
Status child_verdict_after_vfork(int fd, const sys::Pidfd& child) {
  struct pollfd p{fd, POLLIN, 0};
  int r;
  do {
    r = ::poll(&p, 1, 0);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return errno_error("poll child report");
  if (r > 0 && (p.revents & POLLIN)) COPPICE_TRY(read_child_report(fd, child));
  siginfo_t info{};
  if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(child.get()), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
      info.si_pid != 0) {
    return make_error(ErrorCode::kInternal, info.si_code == CLD_EXITED
                                                ? "the sandbox child exited with status " + std::to_string(info.si_status) +
                                                      " before exec, without a report"
                                                : "the sandbox child was killed by signal " +
                                                      std::to_string(info.si_status) + " before exec");
  }
  return ok();
}

// For each of spec.lower_layers: its mount point in the state dir and a
// user namespace mapping the range its files are owned by onto the
// sandbox's (kept open by the caller until after clone).
Status layer_mappings(const SandboxSpec& spec, const StatePaths& paths, uid_t host_root,
                      std::vector<sys::UniqueFd>& owners, std::vector<int>& fds) {
  if (spec.lower_layers.size() > kMaxLowerLayers) {
    return make_error(ErrorCode::kInvalidArgument, "more than " + std::to_string(kMaxLowerLayers) + " snapshot layers");
  }
  for (size_t i = 0; i < spec.lower_layers.size(); ++i) {
    const LowerLayer& l = spec.lower_layers[i];
    if (l.dir.empty() || l.dir[0] != '/' || l.dir.find_first_of(",:") != std::string::npos || l.host_root == 0) {
      return make_error(ErrorCode::kInvalidArgument, "bad snapshot layer \"" + l.dir + "\"");
    }
    const std::string at = paths.lower + std::to_string(i);
    if (auto m = sys::make_dir(at, 0755); !m && m.error().sys_errno() != EEXIST) {
      return std::unexpected(std::move(m.error()).context("snapshot layer mount point"));
    }
    sys::IdRange map{l.host_root, host_root, kIdsPerSlot};
    auto ns = sys::make_userns(map, map, 0);
    if (!ns) return std::unexpected(std::move(ns.error()).context("user namespace of snapshot layer " + l.dir));
    fds.push_back(ns->get());
    owners.push_back(std::move(*ns));
  }
  return ok();
}

}  // namespace

Status validate_id(const std::string& id) {
  // Spare names ("spare-N") never pass: a sandbox id has no '-'.
  if (!valid_sandbox_id(id)) return make_error(ErrorCode::kInvalidArgument, "invalid sandbox id \"" + id + "\"");
  return ok();
}

Result<Launched> launch(const LaunchContext& ctx, const SandboxSpec& spec) {
  // 0. Check the spec: ids become names, paths must be absolute.
  COPPICE_TRY_CTX(validate_id(spec.id), "create sandbox");
  for (const std::string* p : {&spec.rootfs, &spec.state_dir, &spec.envd_path}) {
    if (p->empty() || (*p)[0] != '/') {
      return make_error(ErrorCode::kInvalidArgument, "create sandbox " + spec.id + ": path must be absolute: \"" + *p + "\"");
    }
  }
  for (const std::string& b : spec.ro_binds) {
    if (b.size() < 2 || b[0] != '/' || b.find("/..") != std::string::npos || b.find(',') != std::string::npos) {
      return make_error(ErrorCode::kInvalidArgument, "create sandbox " + spec.id + ": bad ro_bind \"" + b + "\"");
    }
  }
  if (!spec.interp_path.empty()) {
    // Checked here so that a missing binary is a clear error, not a failed
    // bind mount reported from the child.
    struct stat st;
    if (spec.interp_path[0] != '/') {
      return make_error(ErrorCode::kInvalidArgument,
                        "create sandbox " + spec.id + ": interp path must be absolute: \"" + spec.interp_path + "\"");
    }
    if (::stat(spec.interp_path.c_str(), &st) != 0) {
      return errno_error("create sandbox " + spec.id + ": code interpreter binary " + spec.interp_path);
    }
    if (!S_ISREG(st.st_mode)) {
      return make_error(ErrorCode::kInvalidArgument,
                        "create sandbox " + spec.id + ": code interpreter binary is not a file: " + spec.interp_path);
    }
  }
  if (spec.state_dir.find(',') != std::string::npos || spec.state_dir.find(':') != std::string::npos) {
    // The state dir's paths go into overlayfs' comma/colon separated options.
    return make_error(ErrorCode::kInvalidArgument, "create sandbox " + spec.id + ": state dir has ',' or ':'");
  }
  const std::string ctxmsg = "create sandbox " + spec.id;
  using Clock = std::chrono::steady_clock;
  const auto t_start = Clock::now();

  // 1. A host uid range for the sandbox's users (root = the slot's base).
  Result<SlotLease> slot = ctx.slot ? Result<SlotLease>(std::move(*ctx.slot)) : ctx.slots->acquire();
  if (!slot) return std::unexpected(std::move(slot.error()).context(ctxmsg));
  struct SlotBack {
    SlotLease* to;
    Result<SlotLease>* from;
    ~SlotBack() {
      if (to && *from) *to = std::move(**from);
    }
  } slot_back{ctx.slot, &slot};
  const uid_t host_root = slot->host_id();
  if (slot->userns_fd() < 0) {
    // A slot held across a suspend: its namespace went with its processes.
    sys::IdRange map{0, host_root, kIdsPerSlot};
    auto ns = sys::make_userns(map, map, map.outside);
    if (!ns) return std::unexpected(std::move(ns.error()).context(ctxmsg + ": user namespace"));
    slot->keep_userns(std::move(*ns));
  }
  // A full disk is said as such here, not as a failed mount in the child.
  if (ctx.disk) COPPICE_TRY_CTX(ctx.disk->check_room(), ctxmsg);
  const auto t_slot = Clock::now();

  // Host resources made ahead of time, when some are ready (spares.h); the
  // pieces not used here are removed on return.
  std::optional<Spare> spare;
  if (ctx.spares && !spec.reuse_state_dir) spare = ctx.spares->take(spec.limits);
  struct SpareGuard {
    Spares* owner;
    std::optional<Spare>* spare;
    ~SpareGuard() {
      if (owner && *spare) owner->discard(**spare);
    }
  } spare_guard{ctx.spares, &spare};

  // 2. The state dir: overlay upper/work, run/ for envd's socket.
  auto make_state = [&]() -> Result<StateDir> {
    if (spec.reuse_state_dir) {
      if (!sys::path_exists(spec.state_dir + "/upper")) {
        return make_error(ErrorCode::kNotFound, "no writable layer at " + spec.state_dir);
      }
      auto d = StateDir::existing(spec.state_dir);
      // overlayfs refuses a "volatile" upper whose work dir a previous mount
      // marked; the work dir holds nothing else worth keeping.
      COPPICE_TRY(remove_state_dir(d.paths().work));
      COPPICE_TRY(sys::make_dir(d.paths().work, 0700));
      return d;
    }
    if (spare && !spare->dir.empty()) {
      auto adopted = StateDir::adopt(spare->dir, spec.state_dir, host_root, spec.rootfs);
      if (adopted) {
        spare->dir.clear();
        return adopted;
      }
      if (adopted.error().code() == ErrorCode::kAlreadyExists) return adopted;
      COPPICE_LOG_RATE(warn, 60) << "spare state dir not usable, making one: " << adopted.error().to_string();
    }
    if (!ctx.disk) return StateDir::prepare(spec.state_dir, host_root, spec.rootfs);
    // A subvolume of its own, which prepare() takes over (it is empty).
    COPPICE_TRY(ctx.disk->make_layer(spec.state_dir));
    auto made = StateDir::prepare(spec.state_dir, host_root, spec.rootfs);
    if (!made) (void)remove_state_dir(spec.state_dir);
    return made;
  };
  auto state = make_state();
  if (!state) return std::unexpected(std::move(state.error()).context(ctxmsg + ": state dir"));
  const StatePaths& paths = state->paths();
  if (ctx.disk) COPPICE_TRY_CTX(ctx.disk->set_limit(spec.state_dir, spec.disk_bytes), ctxmsg);
  const auto t_state = Clock::now();

  // envd's /init, if the caller has it already: no round trip after start.
  if (!spec.init_json.empty()) {
    const std::string init_file = paths.run + "/init.json";
    COPPICE_TRY_CTX(sys::write_new_file(init_file, spec.init_json, 0600), ctxmsg + ": init file");
    COPPICE_TRY_CTX(sys::change_owner(init_file, host_root, host_root), ctxmsg + ": init file");
  }

  // The sandbox's boot id (its /proc/sys/kernel/random/boot_id): new at each
  // boot, the checkpoint's at a restore (the tree goes on where it was).
  {
    std::string boot = spec.restore_from.empty() ? std::string() : checkpoint_boot_id(spec.restore_from);
    if (boot.empty() && valid_boot_id(spec.boot_id)) boot = spec.boot_id;
    if (boot.empty()) {
      std::string hex = new_token(16);
      hex[12] = '4';                                               // version 4: random
      hex[16] = "89ab"[std::string_view("0123456789abcdef").find(hex[16]) & 3];  // RFC 4122 variant
      boot = hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" + hex.substr(16, 4) + "-" +
             hex.substr(20);
    }
    COPPICE_TRY_CTX(sys::write_new_file(paths.dir + "/boot_id", boot + "\n", 0444), ctxmsg + ": boot id");
  }

  // 3. The registry record, so the sandbox can be found after a restart.
  std::optional<RegistryEntry> record;
  if (spec.reuse_state_dir) {
    COPPICE_TRY_CTX(registry_put(ctx.registry_dir, spec.id, spec.state_dir), ctxmsg);
  } else {
    auto r = RegistryEntry::create(ctx.registry_dir, spec.id, spec.state_dir);
    if (!r) return std::unexpected(std::move(r.error()).context(ctxmsg));
    record.emplace(std::move(*r));
  }

  // 4. cgroups with cpu, memory and pids limits.
  const auto t_record = Clock::now();
  auto make_cgroup = [&]() -> Result<SandboxCgroup> {
    if (spare && !spare->cgroup.empty()) {
      auto taken = ctx.cgroups->take_spare(spare->cgroup, spec.id, spare->limits, spec.limits);
      if (taken) {
        spare->cgroup.clear();
        return taken;
      }
      COPPICE_LOG_RATE(warn, 60) << "spare cgroup not usable, making one: " << taken.error().to_string();
    }
    return ctx.cgroups->create(spec.id, spec.limits);
  };
  auto cg = make_cgroup();
  if (!cg) return std::unexpected(std::move(cg.error()).context(ctxmsg + ": cgroup"));
  const auto t_cg = Clock::now();

  // 4b. Its network: the spare's namespace already on the gateway's bridge,
  // or one made now. The address is the sandbox's (durably) from here on;
  // on failure it is released once the namespace is gone.
  sys::UniqueFd own_netns;
  net::Attachment att;
  struct NetGuard {
    net::SandboxNetwork* network;
    net::Attachment* att;
    bool armed = true;
    ~NetGuard() {
      if (armed && network && att->valid()) network->release(*att);
    }
  } net_guard{ctx.network, &att};
  if (ctx.network) {
    if (spare && spare->netns.valid() && spare->net.valid()) {
      att = std::exchange(spare->net, net::Attachment{});
    } else {
      own_netns = make_netns();
      if (!own_netns) return make_error(ErrorCode::kInternal, ctxmsg + ": cannot make a network namespace (see the log)");
      auto a = ctx.network->attach(own_netns.get());
      if (!a) return std::unexpected(std::move(a.error()).context(ctxmsg));
      att = *a;
    }
    COPPICE_TRY_CTX(ctx.network->claim(att, spec.id), ctxmsg);
  }
  const auto t_net = Clock::now();

  // 5. The child's plan, built here because the child must not allocate.
  // 5a. Snapshot layers: each shown with this sandbox's ids through a user
  // namespace mapping its writer's range onto ours (no file rewritten).
  std::vector<sys::UniqueFd> layer_userns;
  std::vector<int> layer_fds;
  COPPICE_TRY_CTX(layer_mappings(spec, paths, host_root, layer_userns, layer_fds), ctxmsg);
  auto plan = std::make_unique<ChildPlan>();
  plan->mounts.build(spec, paths, host_root, ctx.network ? ctx.network->resolv_conf() : std::string(), layer_fds);
  // Volumes: detached idmapped trees made here, attached by the child after
  // its pivot_root (their fds are closed by its exec, ours on return).
  std::vector<sys::UniqueFd> volume_trees;
  for (const VolumeMount& v : spec.volumes) {
    auto tree = volume_tree(v.host_dir, slot->userns_fd());
    if (!tree) return std::unexpected(std::move(tree.error()).context(ctxmsg));
    plan->mounts.attach(tree->get(), v.path);
    volume_trees.push_back(std::move(*tree));
  }
  plan->hostname = spec.id;
  plan->userns_fd = slot->userns_fd();
  if (own_netns) {
    plan->netns_fd = own_netns.get();
  } else if (spare && spare->netns.valid()) {
    plan->netns_fd = spare->netns.get();
  }
  for (const auto& fd : cg->procs_fds()) plan->cgroup_procs_fds.push_back(fd.get());
  if (ctx.seccomp && !ctx.seccomp->empty()) plan->seccomp = ctx.seccomp->fprog();
  plan->capabilities = sys::caps::kContainerDefault;
  if (ctx.nofile_hard > 0) {
    struct rlimit own {};
    ::getrlimit(RLIMIT_NOFILE, &own);
    plan->nofile_hard = std::min<uint64_t>(ctx.nofile_hard, own.rlim_max);
    plan->nofile_soft = std::min<uint64_t>(ctx.nofile_soft, plan->nofile_hard);
  }
  // PID 1 is envd's init (envd/pid1.h), envd its first child: a checkpoint
  // takes envd's tree, a restore puts it back under a fresh init.
  plan->exec_path = "/.coppice/envd";
  if (!spec.restore_from.empty()) {
    plan->args = {"/.coppice/envd", "--pid1-restore"};
  } else {
    plan->args = {"/.coppice/envd", "--pid1", "--", "/.coppice/envd", "--no-tcp", "--socket", "/.coppice/run/envd.sock",
                  "--ready-fd", std::to_string(kReadyFd)};
    if (!spec.init_json.empty()) {
      plan->args.push_back("--init-file");
      plan->args.push_back("/.coppice/run/init.json");
    }
  }
  plan->env = {"PATH=" + std::string(kDefaultPath), "HOME=/root", "LANG=C.UTF-8"};
  plan->seal();

  // A restore gets a pid namespace of the sandbox's user namespace, made
  // by the child's helper (ChildPlan::pidns_of_userns), whose stacks and
  // the pids it reports live here.
  const bool pidns_of_userns = !spec.restore_from.empty();
  // A restore's PID 1 goes on after clone returns, and its report pipe's
  // EOF is what says it exec'd: from here until the parent has closed its
  // copies of the child's ends, no other thread may clone (see
  // sys/clone_lock.h). Any other launch knows its verdict the moment clone
  // returns (CLONE_VFORK: the child has exec'd or exited), so it neither
  // waits for an EOF that another launch's child could hold up nor takes
  // the lock: launches run their children side by side.
  std::unique_lock clone_guard(sys::clone_lock(), std::defer_lock);
  if (pidns_of_userns) clone_guard.lock();
  auto report = sys::make_pipe();
  if (!report) return std::unexpected(std::move(report.error()).context(ctxmsg));
  auto ready = sys::make_pipe();
  if (!ready) return std::unexpected(std::move(ready.error()).context(ctxmsg));
  sys::UniqueFd log;
  if (ctx.envd_log) {
    auto f = sys::open_file(paths.log, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0640);
    if (!f) return std::unexpected(std::move(f.error()).context(ctxmsg));
    log = std::move(*f);
  }
  // Debug: per-step timestamps from the child, in a page shared across clone.
  // Then the end of each mount operation (MountPlan::run).
  constexpr size_t kTimes = kChildStepCount + MountPlan::kMaxTimedOps;
  uint64_t* step_times = nullptr;
  if (log::level() <= log::Level::debug) {
    void* m = ::mmap(nullptr, kTimes * sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m != MAP_FAILED) step_times = static_cast<uint64_t*>(m);
  }
  struct Unmap {
    uint64_t* p;
    ~Unmap() {
      if (p) ::munmap(p, kTimes * sizeof(uint64_t));
    }
  } unmap{step_times};
  plan->step_times = step_times;
  plan->report_fd = report->second.get();
  plan->ready_fd = ready->second.get();
  plan->log_fd = log.get();

  // 6. clone into new mount, pid, uts, ipc and network namespaces (or enter
  // a spare network namespace in the child), owned by
  // the host's user namespace: the child must still be host root to mount
  // overlayfs (see mounts.cc). The cgroup namespace comes later (child.cc).
  // The child shares our memory until it execs and this thread waits for
  // that (CLONE_VM | CLONE_VFORK, see child.h), on a stack of its own, with
  // every signal blocked.
  constexpr size_t kChildStack = 256 << 10;
  sys::ChildStack* stack = sys::thread_child_stack(kChildStack);
  if (!stack) return errno_error(ctxmsg + ": child stack");
  // A restore's child makes a helper and PID 1 on stacks of their own (PID
  // 1 runs on after the child has exited, until it execs: below).
  constexpr size_t kAuxStack = 64 << 10;
  sys::ChildStack aux;
  pid_t spawned[2] = {0, 0};
  std::optional<std::pair<sys::UniqueFd, sys::UniqueFd>> go;
  if (pidns_of_userns) {
    COPPICE_TRY_CTX(aux.map(2 * kAuxStack), ctxmsg);
    plan->pidns_of_userns = true;
    plan->helper_stack_top = aux.top(kAuxStack);
    plan->init_stack_top = aux.top();
    plan->spawned = spawned;
    auto p = sys::make_pipe();
    if (!p) return std::unexpected(std::move(p.error()).context(ctxmsg));
    go.emplace(std::move(*p));
    plan->go_fd[0] = go->first.get();
    plan->go_fd[1] = go->second.get();
  }
  int pidfd = -1;
  const int flags = CLONE_VM | CLONE_VFORK | CLONE_NEWNS | (pidns_of_userns ? 0 : CLONE_NEWPID) | CLONE_NEWUTS |
                    CLONE_NEWIPC | (plan->netns_fd < 0 ? CLONE_NEWNET : 0) | CLONE_PIDFD | SIGCHLD;
  sigset_t old_mask;
  const auto t_clone = Clock::now();
  pid_t pid = sys::clone_blocking_signals(child_main, stack->top(), flags, plan.get(), &pidfd, &old_mask);
  int clone_errno = errno;
  if (pid < 0) return errno_error(ctxmsg + ": clone", clone_errno);

  sys::Pidfd init(sys::UniqueFd(pidfd), pid);
  if (pidns_of_userns) {
    // The child has exited (CLONE_VFORK), its helper too: reap both. PID 1
    // (our child by CLONE_PARENT), if made, is the sandbox's from here on.
    go.reset();
    if (spawned[1] > 0) {
      while (::waitpid(spawned[1], nullptr, __WALL) < 0 && errno == EINTR) {
      }
    }
    (void)init.wait_exit(-1);
    (void)init.reap();
    init = sys::Pidfd();
    if (spawned[0] > 0) {
      auto opened = sys::Pidfd::open(spawned[0]);
      if (opened) {
        init = std::move(*opened);
      } else {
        ::kill(spawned[0], SIGKILL);
        while (::waitpid(spawned[0], nullptr, 0) < 0 && errno == EINTR) {
        }
      }
    }
  }
  ChildGuard guard{&init};
  report->second.reset();
  ready->second.reset();
  log.reset();
  cg->close_fds();
  // Our copies of the child's ends are closed: other launches may clone. A
  // restore's PID 1 goes on after the child has exited, on our memory and
  // this thread's copy of the checklist's state (child.cc), while this
  // thread waits below.
  if (clone_guard.owns_lock()) clone_guard.unlock();
  // The child has exec'd (vfork): it is in its network namespace already.
  if (spare) spare->netns.reset();
  own_netns.reset();

  // 7. Wait for the child's verdict: a report on failure, EOF once exec succeeded.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ctx.ready_timeout_ms);
  if (pidns_of_userns) {
    COPPICE_TRY_CTX(wait_readable(report->first.get(), deadline, "the sandbox child"), ctxmsg);
    COPPICE_TRY_CTX(read_child_report(report->first.get(), init), ctxmsg);
  } else {
    COPPICE_TRY_CTX(child_verdict_after_vfork(report->first.get(), init), ctxmsg);
  }
  const auto t_exec = Clock::now();

  // 8. Wait for envd: one byte on the ready pipe once it listens; EOF means
  // it died first (its log has why).
  COPPICE_TRY_CTX(wait_readable(ready->first.get(), deadline, "envd to listen"), ctxmsg);
  char byte;
  ssize_t n;
  do {
    n = ::read(ready->first.get(), &byte, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1) {
    return make_error(ErrorCode::kInternal, ctxmsg + ": envd exited before it was ready (see " + paths.log + ")");
  }
  if (!spec.restore_from.empty()) {
    // 9. The init waits; put envd's tree back (checkpoint.h). A socket file
    // left by the checkpointed envd in this run dir would stop its bind.
    (void)::unlink(paths.socket.c_str());
    COPPICE_TRY_CTX(restore_tree(*ctx.cgroups, spec.id, init.pid(), spec.restore_from, spec.restore_work_dir), ctxmsg);
  }

  auto us = [](Clock::duration d) { return std::chrono::duration_cast<std::chrono::microseconds>(d).count(); };
  COPPICE_LOG(debug).sandbox(spec.id) << "created in " << us(Clock::now() - t_start) << " us: prepare "
                                      << us(t_clone - t_start) << ", clone..exec " << us(t_exec - t_clone)
                                      << ", envd start " << us(Clock::now() - t_exec) << " [slot " << us(t_slot - t_start) << " state " << us(t_state - t_slot) << " record " << us(t_record - t_state) << " cg " << us(t_cg - t_record) << " net " << us(t_net - t_cg) << " plan+pipes " << us(t_clone - t_net) << "]";
  if (step_times) {
    std::string steps;
    uint64_t clone_ns = uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(t_clone.time_since_epoch()).count());
    for (int i = 1; i < kChildStepCount; ++i) {
      if (!step_times[i]) continue;
      steps += std::string(steps.empty() ? "" : ", ") + child_step_name(static_cast<ChildStep>(i)) + " @" +
               std::to_string((step_times[i] - clone_ns) / 1000);
    }
    COPPICE_LOG(debug).sandbox(spec.id) << "child steps (us after clone): " << steps;
    // Each mount operation's time, the slow ones (>= 50 us) by name.
    const uint64_t* op_end = step_times + kChildStepCount;
    uint64_t prev = step_times[static_cast<int>(ChildStep::kMount)];
    std::string ops;
    const auto& plan_ops = plan->mounts.ops();
    for (size_t i = 0; i < plan_ops.size() && i < MountPlan::kMaxTimedOps && op_end[i] && prev; ++i) {
      uint64_t took = (op_end[i] - prev) / 1000;
      prev = op_end[i];
      if (took < 50) continue;
      const MountOp& op = plan_ops[i];
      std::string dst = op.dst ? op.dst : "";
      if (dst.starts_with(paths.rootfs)) dst = dst.substr(paths.rootfs.size());
      ops += (ops.empty() ? "" : ", ") + std::string(mount_op_name(op)) + " " + dst + " " + std::to_string(took);
    }
    COPPICE_LOG(debug).sandbox(spec.id) << "slow mount ops (us): " << ops;
  }

  // Ready: hand every resource over to the running sandbox.
  guard.armed = false;
  net_guard.armed = false;
  cg->release();
  state->release();
  if (record) record->release();
  Launched out;
  out.handle.id = spec.id;
  out.handle.init_pid = init.pid();
  out.handle.envd_socket = paths.socket;
  out.handle.state_dir = spec.state_dir;
  out.handle.host_uid = host_root;
  out.handle.net_addr = att.addr;
  out.handle.net_link = att.link;
  slot->drop_userns();  // the sandbox's processes keep its user namespace alive now
  slot_back.to = nullptr;
  out.slot = std::move(*slot);
  out.init = std::move(init);
  return out;
}

}  // namespace coppice::sandbox::ns
