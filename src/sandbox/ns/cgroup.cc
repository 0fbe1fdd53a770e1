#include "sandbox/ns/cgroup.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "common/log.h"
#include "sys/cgroupfs.h"
#include "sys/fsutil.h"

namespace coppice::sandbox::ns {

namespace {

// v1 hierarchies a sandbox joins: limits (cpu, memory, pids), accounting
// (cpuacct) and pause/resume (freezer).
constexpr const char* kV1Controllers[] = {"cpu", "cpuacct", "memory", "pids", "freezer"};

uint64_t parse_u64(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
  if (s == "max") return UINT64_MAX;
  uint64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

// Reads one "key value" line of a flat-keyed cgroup file (cpu.stat, cgroup.events).
uint64_t keyed_value(const std::string& text, std::string_view key) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    if (line.size() > key.size() && line.starts_with(key) && line[key.size()] == ' ') {
      return parse_u64(line.substr(key.size() + 1));
    }
    pos = eol + 1;
  }
  return 0;
}

Status rmdir_retry(const std::string& dir) {
  // A cgroup whose last task has just exited can report EBUSY for a moment
  // while the kernel finishes unlinking the task; yield and retry briefly.
  for (int i = 0; i < 2000; ++i) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return ok();
    if (errno != EBUSY) return errno_error("rmdir " + dir);
    if (i < 100) {
      ::sched_yield();
    } else {
      ::usleep(1000);
    }
  }
  return errno_error("rmdir " + dir, EBUSY);
}

}  // namespace

SandboxCgroup& SandboxCgroup::operator=(SandboxCgroup&& o) noexcept {
  if (this != &o) {
    for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) (void)rmdir_retry(*it);
    dirs_ = std::move(o.dirs_);
    o.dirs_.clear();
    procs_ = std::move(o.procs_);
  }
  return *this;
}

SandboxCgroup::~SandboxCgroup() {
  close_fds();
  for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
    if (auto s = rmdir_retry(*it); !s) {
      COPPICE_LOG(warn) << "cgroup cleanup: " << s.error().to_string();
    }
  }
}

void SandboxCgroup::close_fds() {
  procs_.clear();
}

Result<CgroupManager> CgroupManager::open(const std::string& parent) {
  if (parent.empty() || parent.find('/') != std::string::npos || parent == "." || parent == "..") {
    return make_error(ErrorCode::kInvalidArgument, "cgroup parent must be a single name: " + parent);
  }
  auto mounts = sys::cgroupfs::discover();
  if (!mounts) return std::unexpected(std::move(mounts.error()).context("discover cgroups"));
  CgroupManager m;
  m.parent_ = parent;
  auto has = [&](std::string_view ctrl) {
    std::string_view all = mounts->v2_controllers;
    size_t i = 0;
    while (i < all.size()) {
      size_t j = all.find(' ', i);
      if (j == std::string_view::npos) j = all.size();
      if (all.substr(i, j - i) == ctrl) return true;
      i = j + 1;
    }
    return false;
  };
  if (!mounts->v2.empty() && has("cpu") && has("memory") && has("pids")) {
    m.v2_ = true;
    std::string root = mounts->v2 + "/" + parent;
    // Children of the root and of our parent get cpu, memory and pids.
    COPPICE_TRY_CTX(sys::write_file(mounts->v2 + "/cgroup.subtree_control", "+cpu +memory +pids"),
                    "enable controllers at the cgroup2 root");
    COPPICE_TRY_CTX(sys::make_dir(root, 0755), "create parent cgroup");
    COPPICE_TRY_CTX(sys::write_file(root + "/cgroup.subtree_control", "+cpu +memory +pids"),
                    "enable controllers in " + root);
    m.roots_.emplace_back("", root);
    COPPICE_LOG(info) << "cgroups: v2 at " << mounts->v2 << ", sandboxes under " << root;
    return m;
  }
  std::set<std::string> seen;
  for (const char* ctrl : kV1Controllers) {
    auto it = mounts->v1.find(ctrl);
    if (it == mounts->v1.end()) {
      return make_error(ErrorCode::kFailedPrecondition,
                        std::string("cgroups: neither a cgroup2 hierarchy with cpu, memory and pids nor a v1 ") +
                            ctrl + " hierarchy is mounted");
    }
    std::string root = it->second + "/" + parent;
    if (seen.insert(it->second).second) {
      COPPICE_TRY_CTX(sys::make_dir(root, 0755), "create parent cgroup");
    }
    m.roots_.emplace_back(ctrl, root);
  }
  COPPICE_LOG(info) << "cgroups: v1 (" << m.roots_.size() << " controllers), sandboxes under <ctrl>/" << parent;
  return m;
}

uint64_t default_parent_pids_max() {
  uint64_t budget = 0;
  for (const char* f : {"/proc/sys/kernel/pid_max", "/proc/sys/kernel/threads-max"}) {
    auto text = sys::read_file(f);
    if (!text) return 0;
    uint64_t v = std::strtoull(text->c_str(), nullptr, 10);
    if (v == 0) return 0;
    budget = budget == 0 ? v : std::min(budget, v);
  }
  uint64_t reserve = std::clamp<uint64_t>(budget / 8, 2048, 65536);
  return budget > reserve ? budget - reserve : 1;
}

Status CgroupManager::limit_parent_pids(uint64_t max) const {
  const std::string dir = dir_of("pids", "");
  COPPICE_TRY_CTX(sys::write_file(dir + "pids.max", max ? std::to_string(max) : "max"),
                  "limit parent cgroup " + dir + " pids");
  return ok();
}

Result<std::string> CgroupManager::parent_pids_max() const { return pids_max(""); }

Result<std::string> CgroupManager::pids_max(const std::string& id) const {
  auto text = sys::read_file(dir_of("pids", id) + (id.empty() ? "" : "/") + "pids.max");
  if (!text) return std::unexpected(text.error());
  while (!text->empty() && (text->back() == '\n' || text->back() == ' ')) text->pop_back();
  return *text;
}

std::string CgroupManager::dir_of(const std::string& ctrl, const std::string& id) const {
  for (auto& [c, root] : roots_) {
    if (v2_ || c == ctrl) return root + "/" + id;
  }
  return {};
}

std::vector<std::string> CgroupManager::dirs_for(const std::string& id) const {
  std::vector<std::string> out;
  for (auto& [c, root] : roots_) {
    std::string d = root + "/" + id;
    if (std::find(out.begin(), out.end(), d) == out.end()) out.push_back(d);
  }
  return out;
}

Result<SandboxCgroup> CgroupManager::create(const std::string& id, const Limits& limits) const {
  SandboxCgroup cg;
  for (const std::string& d : dirs_for(id)) {
    if (::mkdir(d.c_str(), 0755) != 0) return errno_error("mkdir " + d);
    cg.dirs_.push_back(d);
  }
  COPPICE_TRY_CTX(write_limits(id, limits), "cgroup of " + id);
  COPPICE_TRY_CTX(open_procs(cg), "cgroup of " + id);
  return cg;
}

Result<SandboxCgroup> CgroupManager::take_spare(const std::string& spare, const std::string& id,
                                                const Limits& spare_limits, const Limits& limits) const {
  if (v2_) {
    return make_error(ErrorCode::kUnimplemented, "cgroup2 does not rename cgroup directories: no spare cgroups", EPERM);
  }
  auto from = dirs_for(spare), to = dirs_for(id);
  SandboxCgroup cg;
  for (size_t i = 0; i < from.size(); ++i) {
    if (auto s = sys::rename_path(from[i], to[i]); !s) {
      // Put back what moved: the spare stays whole (its owner removes it).
      for (size_t j = i; j-- > 0;) (void)sys::rename_path(to[j], from[j]);
      cg.dirs_.clear();
      return std::unexpected(std::move(s.error()).context("take spare cgroup " + spare + " for " + id));
    }
    cg.dirs_.push_back(to[i]);
  }
  if (!(spare_limits == limits)) COPPICE_TRY_CTX(write_limits(id, limits), "cgroup of " + id);
  COPPICE_TRY_CTX(open_procs(cg), "cgroup of " + id);
  return cg;
}

Status CgroupManager::open_procs(SandboxCgroup& cg) const {
  for (const std::string& d : cg.dirs_) {
    auto fd = sys::open_file(d + "/cgroup.procs", O_WRONLY);
    if (!fd) return std::unexpected(std::move(fd.error()).context("cgroup join"));
    cg.procs_.push_back(std::move(*fd));
  }
  return ok();
}

Status CgroupManager::write_limits(const std::string& id, const Limits& limits) const {
  COPPICE_TRY(write_cpu(id, limits.cpu_millicores));
  COPPICE_TRY(write_memory(id, limits.memory_bytes));
  std::string pids = limits.pids_max > 0 ? std::to_string(limits.pids_max) : "max";
  COPPICE_TRY_CTX(sys::write_file(dir_of(v2_ ? "" : "pids", id) + "/pids.max", pids), "cgroup pids limit");
  return ok();
}

Status CgroupManager::write_cpu(const std::string& id, int cpu_millicores) const {
  const uint64_t period = 100000;
  std::string quota = cpu_millicores > 0 ? std::to_string(uint64_t(cpu_millicores) * period / 1000)
                                         : std::string(v2_ ? "max" : "-1");
  if (v2_) {
    COPPICE_TRY_CTX(sys::write_file(dir_of("", id) + "/cpu.max", quota + " " + std::to_string(period)),
                    "cgroup cpu limit");
    return ok();
  }
  const std::string cpu = dir_of("cpu", id);
  COPPICE_TRY_CTX(sys::write_file(cpu + "/cpu.cfs_period_us", std::to_string(period)), "cgroup cpu period");
  COPPICE_TRY_CTX(sys::write_file(cpu + "/cpu.cfs_quota_us", quota), "cgroup cpu limit");
  return ok();
}

Status CgroupManager::write_memory(const std::string& id, uint64_t bytes) const {
  const std::string mem = std::to_string(bytes);
  if (v2_) {
    const std::string d = dir_of("", id);
    COPPICE_TRY_CTX(sys::write_file(d + "/memory.max", mem), "cgroup memory limit");
    // Swap would let a sandbox exceed its memory limit: none.
    if (sys::path_exists(d + "/memory.swap.max")) {
      COPPICE_TRY_CTX(sys::write_file(d + "/memory.swap.max", "0"), "cgroup swap limit");
    }
    return ok();
  }
  const std::string memory = dir_of("memory", id);
  // memory+swap never below memory: lowering both writes memsw after memory,
  // raising them writes it first (the kernel refuses memory > memsw).
  const bool memsw = sys::path_exists(memory + "/memory.memsw.limit_in_bytes");
  auto write_memsw = [&]() -> Status {
    if (!memsw) return ok();
    return sys::write_file(memory + "/memory.memsw.limit_in_bytes", mem);
  };
  bool raised = false;
  std::string before;
  if (memsw) {
    if (auto cur = sys::read_file(memory + "/memory.limit_in_bytes"); cur) {
      before = *cur;
      raised = std::strtoull(cur->c_str(), nullptr, 10) < bytes;
    }
  }
  if (raised) COPPICE_TRY_CTX(write_memsw(), "cgroup memory+swap limit");
  COPPICE_TRY_CTX(sys::write_file(memory + "/memory.limit_in_bytes", mem), "cgroup memory limit");
  // memory+swap no higher than memory: no swapping past the limit (only
  // present when the kernel accounts swap).
  if (!raised) {
    if (auto s = write_memsw(); !s) {
      // Leave memory as it was, so a refused change changes nothing.
      if (!before.empty()) (void)sys::write_file(memory + "/memory.limit_in_bytes", before);
      return std::unexpected(std::move(s.error()).context("cgroup memory+swap limit"));
    }
  }
  return ok();
}

Status CgroupManager::resize(const std::string& id, int cpu_millicores, uint64_t memory_bytes) const {
  const std::string ctx = "resize cgroup of " + id;
  if (cpu_millicores <= 0 || memory_bytes == 0) {
    return make_error(ErrorCode::kInvalidArgument, ctx + ": CPU and memory must be positive");
  }
  if (!exists(id)) return make_error(ErrorCode::kNotFound, ctx + ": no such cgroup");
  auto before = usage(id);
  if (!before) return std::unexpected(std::move(before.error()).context(ctx));
  auto refused = [&](uint64_t held) {
    return make_error(ErrorCode::kFailedPrecondition,
                      "sandbox " + id + " holds " + std::to_string(held >> 20) +
                          " MiB of memory it cannot give back now; its memory limit cannot go below that (asked " +
                          std::to_string(memory_bytes >> 20) + " MiB)");
  };
  if (v2_ && memory_bytes < before->mem_limit) {
    // memory.high reclaims down to it (or tries to) and at worst throttles;
    // memory.max below what cannot be reclaimed would call the OOM killer.
    const std::string d = dir_of("", id);
    COPPICE_TRY_CTX(sys::write_file(d + "/memory.high", std::to_string(memory_bytes)), ctx);
    auto cur = sys::read_file(d + "/memory.current");
    const uint64_t held = cur ? parse_u64(*cur) : UINT64_MAX;
    if (held > memory_bytes) {
      (void)sys::write_file(d + "/memory.high", "max");
      if (!cur) return std::unexpected(std::move(cur.error()).context(ctx));
      return refused(held);
    }
  }
  Status mem = write_memory(id, memory_bytes);
  if (v2_) (void)sys::write_file(dir_of("", id) + "/memory.high", "max");
  if (!mem) {
    if (mem.error().sys_errno() == EBUSY) {
      auto now = usage(id);
      return refused(now ? now->mem_bytes : before->mem_bytes);
    }
    return std::unexpected(std::move(mem.error()).context(ctx));
  }
  if (auto s = write_cpu(id, cpu_millicores); !s) {
    (void)write_memory(id, before->mem_limit);  // all or nothing
    return std::unexpected(std::move(s.error()).context(ctx));
  }
  return ok();
}

Status CgroupManager::freeze(const std::string& id) const {
  if (v2_) {
    std::string d = dir_of("", id);
    COPPICE_TRY_CTX(sys::write_file(d + "/cgroup.freeze", "1"), "freeze " + id);
    // Freezing is asynchronous on v2: wait for cgroup.events to say frozen.
    auto fd = sys::open_file(d + "/cgroup.events", O_RDONLY);
    if (!fd) return std::unexpected(std::move(fd.error()).context("freeze " + id));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (;;) {
      char buf[256];
      ssize_t n = ::pread(fd->get(), buf, sizeof buf - 1, 0);
      if (n < 0) return errno_error("read cgroup.events");
      if (keyed_value(std::string(buf, size_t(n)), "frozen") == 1) return ok();
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return make_error(ErrorCode::kDeadlineExceeded, "freeze " + id + ": not frozen in 5 s");
      struct pollfd p{fd->get(), POLLPRI, 0};
      ::poll(&p, 1, static_cast<int>(left.count()));
    }
  }
  std::string d = dir_of("freezer", id);
  COPPICE_TRY_CTX(sys::write_file(d + "/freezer.state", "FROZEN"), "freeze " + id);
  // v1 freezing completes when a read of freezer.state finds every task
  // frozen; the write above normally does it in one go.
  for (int i = 0; i < 10000; ++i) {
    auto s = sys::read_file(d + "/freezer.state");
    if (!s) return std::unexpected(std::move(s.error()).context("freeze " + id));
    if (s->starts_with("FROZEN")) return ok();
    if (i > 100) ::usleep(500);
    else ::sched_yield();
  }
  return make_error(ErrorCode::kDeadlineExceeded, "freeze " + id + ": still FREEZING");
}

Status CgroupManager::thaw(const std::string& id) const {
  if (v2_) {
    COPPICE_TRY_CTX(sys::write_file(dir_of("", id) + "/cgroup.freeze", "0"), "thaw " + id);
  } else {
    COPPICE_TRY_CTX(sys::write_file(dir_of("freezer", id) + "/freezer.state", "THAWED"), "thaw " + id);
  }
  return ok();
}

bool CgroupManager::frozen(const std::string& id) const {
  if (v2_) {
    auto s = sys::read_file(dir_of("", id) + "/cgroup.freeze");
    return s && s->starts_with("1");
  }
  auto s = sys::read_file(dir_of("freezer", id) + "/freezer.state");
  return s && !s->starts_with("THAWED");
}

Result<std::vector<pid_t>> CgroupManager::pids(const std::string& id) const {
  // pids and freezer hold every process of the sandbox on v1.
  auto text = sys::read_file(dir_of(v2_ ? "" : "pids", id) + "/cgroup.procs");
  if (!text) return std::unexpected(text.error());
  std::vector<pid_t> out;
  size_t pos = 0;
  while (pos < text->size()) {
    size_t eol = text->find('\n', pos);
    if (eol == std::string::npos) eol = text->size();
    pid_t p = 0;
    std::from_chars(text->data() + pos, text->data() + eol, p);
    if (p > 0) out.push_back(p);
    pos = eol + 1;
  }
  return out;
}

Status CgroupManager::kill_all(const std::string& id) const {
  if (v2_) {
    std::string f = dir_of("", id) + "/cgroup.kill";
    if (sys::path_exists(f)) {
      COPPICE_TRY_CTX(sys::write_file(f, "1"), "kill cgroup " + id);
      return ok();
    }
  }
  // No cgroup.kill: freeze so nothing can fork while we walk the list, kill
  // each pid, thaw so the signals are delivered.
  auto frozen = freeze(id);
  auto list = pids(id);
  if (list) {
    for (pid_t p : *list) ::kill(p, SIGKILL);
  }
  COPPICE_TRY_CTX(thaw(id), "kill cgroup " + id);
  if (!list) return std::unexpected(std::move(list.error()).context("kill cgroup " + id));
  if (frozen) return ok();
  // The freezer did not settle (seen right after criu let go of a tree it
  // left stopped): kill what is listed until nothing is. A task forked
  // meanwhile dies with its pid namespace's init, which is in the list.
  for (int i = 0; i < 200; ++i) {
    auto left = pids(id);
    if (!left || left->empty()) return ok();
    for (pid_t p : *left) ::kill(p, SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return make_error(ErrorCode::kDeadlineExceeded, "kill cgroup " + id + ": processes left after 1 s");
}

Result<pid_t> CgroupManager::find_init(const std::string& id) const {
  auto list = pids(id);
  if (!list) {
    if (list.error().sys_errno() == ENOENT) return make_error(ErrorCode::kNotFound, "no cgroup for sandbox " + id);
    return std::unexpected(list.error());
  }
  for (pid_t p : *list) {
    auto status = sys::read_file("/proc/" + std::to_string(p) + "/status");
    if (!status) continue;
    size_t at = status->find("\nNSpid:");
    if (at == std::string::npos) continue;
    size_t eol = status->find('\n', at + 1);
    std::string_view line(status->data() + at + 7, (eol == std::string::npos ? status->size() : eol) - at - 7);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    size_t sp = line.find_last_of(" \t");
    std::string_view last = sp == std::string_view::npos ? line : line.substr(sp + 1);
    if (last == "1" && line.find_first_of(" \t", line.find_first_not_of(" \t")) != std::string_view::npos) return p;
  }
  return make_error(ErrorCode::kNotFound, "sandbox " + id + " has no running init");
}

Result<CgroupUsage> CgroupManager::usage(const std::string& id) const {
  CgroupUsage u;
  if (v2_) {
    std::string d = dir_of("", id);
    auto cpu = sys::read_file(d + "/cpu.stat");
    if (!cpu) return std::unexpected(std::move(cpu.error()).context("usage of " + id));
    u.cpu_ns = keyed_value(*cpu, "usage_usec") * 1000;
    auto cur = sys::read_file(d + "/memory.current");
    if (!cur) return std::unexpected(std::move(cur.error()).context("usage of " + id));
    u.mem_bytes = parse_u64(*cur);
    auto max = sys::read_file(d + "/memory.max");
    if (!max) return std::unexpected(std::move(max.error()).context("usage of " + id));
    u.mem_limit = parse_u64(*max);
    return u;
  }
  auto cpu = sys::read_file(dir_of("cpuacct", id) + "/cpuacct.usage");
  if (!cpu) return std::unexpected(std::move(cpu.error()).context("usage of " + id));
  u.cpu_ns = parse_u64(*cpu);
  std::string m = dir_of("memory", id);
  auto cur = sys::read_file(m + "/memory.usage_in_bytes");
  if (!cur) return std::unexpected(std::move(cur.error()).context("usage of " + id));
  u.mem_bytes = parse_u64(*cur);
  auto max = sys::read_file(m + "/memory.limit_in_bytes");
  if (!max) return std::unexpected(std::move(max.error()).context("usage of " + id));
  u.mem_limit = parse_u64(*max);
  return u;
}

Status CgroupManager::join(const std::string& id, pid_t pid) const {
  for (const auto& d : dirs_for(id)) {
    COPPICE_TRY_CTX(sys::write_file(d + "/cgroup.procs", std::to_string(pid)), "join cgroup of " + id);
  }
  return ok();
}

Status CgroupManager::remove(const std::string& id) const {
  auto dirs = dirs_for(id);
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) COPPICE_TRY_CTX(rmdir_retry(*it), "remove cgroup of " + id);
  return ok();
}

Status CgroupManager::rename(const std::string& id, const std::string& new_id) const {
  if (v2_) {
    return make_error(ErrorCode::kUnimplemented,
                      "rename cgroup of " + id + ": cgroup2 does not rename cgroup directories", EPERM);
  }
  auto from = dirs_for(id), to = dirs_for(new_id);
  std::vector<size_t> done;
  for (size_t i = 0; i < from.size(); ++i) {
    if (!sys::path_exists(from[i]) && sys::path_exists(to[i])) continue;
    if (auto s = sys::rename_path(from[i], to[i]); !s) {
      for (auto it = done.rbegin(); it != done.rend(); ++it) (void)sys::rename_path(to[*it], from[*it]);
      return std::unexpected(std::move(s.error()).context("rename cgroup of " + id));
    }
    done.push_back(i);
  }
  return ok();
}

bool CgroupManager::exists(const std::string& id) const {
  for (const std::string& d : dirs_for(id)) {
    if (sys::path_exists(d)) return true;
  }
  return false;
}

Result<std::vector<std::string>> CgroupManager::list() const {
  std::set<std::string> ids;
  for (auto& [c, root] : roots_) {
    auto names = sys::list_dir(root);
    if (!names) return std::unexpected(std::move(names.error()).context("list cgroups"));
    for (auto& n : *names) {
      struct stat st;
      if (::stat((root + "/" + n).c_str(), &st) == 0 && S_ISDIR(st.st_mode)) ids.insert(n);
    }
  }
  return std::vector<std::string>(ids.begin(), ids.end());
}

Status CgroupManager::remove_parent_if_empty(const std::string& parent) {
  if (parent.empty() || parent.find('/') != std::string::npos || parent == "." || parent == "..") {
    return make_error(ErrorCode::kInvalidArgument, "cgroup parent must be a single name: " + parent);
  }
  auto mounts = sys::cgroupfs::discover();
  if (!mounts) return std::unexpected(std::move(mounts.error()).context("remove parent cgroups"));
  std::set<std::string> roots;
  if (!mounts->v2.empty()) roots.insert(mounts->v2);
  for (const auto& [ctrl, mount] : mounts->v1) roots.insert(mount);
  for (const std::string& root : roots) {
    const std::string dir = root + "/" + parent;
    // rmdir removes a cgroup only when no cgroup is below it (EBUSY on v1
    // and v2 otherwise) and none of its own processes is left.
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT || errno == EBUSY || errno == ENOTEMPTY) continue;
    return errno_error("remove parent cgroup " + dir);
  }
  return ok();
}

Status CgroupManager::remove_parent() const {
  std::set<std::string> done;
  for (auto& [c, root] : roots_) {
    if (done.insert(root).second) COPPICE_TRY_CTX(sys::remove_dir(root), "remove parent cgroup");
  }
  return ok();
}

}  // namespace coppice::sandbox::ns
