#include "sandbox/ns/spares.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "common/log.h"
#include "sandbox/ns/rootfs.h"
#include "sys/fsutil.h"
#include "sys/netif.h"

namespace coppice::sandbox::ns {

Spares::Spares(const CgroupManager* cgroups, std::string root, uint32_t target, Limits limits)
    : cgroups_(cgroups && !cgroups->v2() ? cgroups : nullptr), root_(std::move(root)), target_(target),
      limits_(limits) {
  // Whatever a process before us left: spares belong to nobody.
  if (cgroups_) {
    if (auto names = cgroups_->list(); names) {
      for (const auto& n : *names) {
        if (!is_spare_name(n)) continue;
        if (auto s = cgroups_->remove(n); !s) {
          COPPICE_LOG(warn) << "spare cgroup leftover: " << s.error().to_string();
        }
      }
    }
  }
  if (!root_.empty()) {
    if (auto s = sys::remove_tree(root_); !s) {
      COPPICE_LOG(warn) << "spare dirs leftover: " << s.error().to_string();
    }
    if (auto s = sys::make_dirs(root_, 0700); !s) {
      COPPICE_LOG(warn) << "spare dirs: " << s.error().to_string() << " (creates make their own)";
    }
  }
  if (target_ > 0) refiller_ = std::thread([this] { refill_loop(); });
}

Spares::~Spares() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (refiller_.joinable()) refiller_.join();
  for (auto& s : ready_) discard(s);
  ready_.clear();
  if (!root_.empty()) (void)sys::remove_tree(root_);
}

std::optional<Spare> Spares::take(const Limits& limits) {
  std::optional<Spare> out;
  {
    std::lock_guard lk(mu_);
    limits_ = limits;
    if (!ready_.empty()) {
      out = std::move(ready_.front());
      ready_.pop_front();
    }
  }
  cv_.notify_one();
  return out;
}

void Spares::discard(Spare& s) const {
  if (!s.cgroup.empty() && cgroups_) {
    if (auto r = cgroups_->remove(s.cgroup); !r) {
      COPPICE_LOG(warn) << "spare cgroup: " << r.error().to_string();
    }
  }
  if (!s.dir.empty()) (void)sys::remove_tree(s.dir);
  s.netns.reset();
  s.cgroup.clear();
  s.dir.clear();
}

size_t Spares::ready() const {
  std::lock_guard lk(mu_);
  return ready_.size();
}

bool Spares::wait_ready(size_t n, int timeout_ms) const {
  std::unique_lock lk(mu_);
  return ready_cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms), [&] { return ready_.size() >= n; });
}

namespace {
// A network namespace with loopback up, made by this thread: it enters a new
// one, takes an fd to it and goes back to `home`. If it cannot go back, the
// thread is in the wrong namespace for good: *stuck is set.
sys::UniqueFd make_netns(int home, bool* stuck) {
  if (::unshare(CLONE_NEWNET) != 0) {
    COPPICE_LOG_RATE(warn, 60) << "spare network namespace: unshare: " << std::strerror(errno);
    return {};
  }
  sys::UniqueFd fd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  int lo = sys::netif::loopback_up();
  if (::setns(home, CLONE_NEWNET) != 0) {
    COPPICE_LOG(error) << "spare network namespaces: cannot return to the host's: " << std::strerror(errno);
    *stuck = true;
    return {};
  }
  if (!fd.valid() || lo != 0) {
    COPPICE_LOG_RATE(warn, 60) << "spare network namespace: "
                               << std::strerror(fd.valid() ? lo : errno);
    return {};
  }
  return fd;
}
}  // namespace

Spare Spares::make_one(uint64_t seq, const Limits& limits) const {
  Spare s;
  if (cgroups_) {
    std::string name = std::string(kSparePrefix) + std::to_string(seq);
    if (auto cg = cgroups_->create(name, limits); cg) {
      cg->close_fds();
      cg->release();
      s.cgroup = std::move(name);
      s.limits = limits;
    } else {
      COPPICE_LOG_RATE(warn, 60) << "spare cgroup: " << cg.error().to_string();
    }
  }
  if (!root_.empty()) {
    std::string dir = root_ + "/" + std::to_string(seq);
    Status made = sys::make_dir(dir, 0700);
    if (made) made = make_state_layout(StatePaths(dir), kSkeletonUpperMode, 0);
    if (made) {
      s.dir = std::move(dir);
    } else {
      COPPICE_LOG_RATE(warn, 60) << "spare state dir: " << made.error().to_string();
      (void)sys::remove_tree(dir);
    }
  }
  return s;
}

void Spares::refill_loop() {
  // Below the creates it serves, above nothing: a preempted holder of a
  // kernel lock (cgroup_mutex) must still get the CPU back soon.
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);
  sys::UniqueFd home(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  bool netns_stuck = !home.valid();
  std::unique_lock lk(mu_);
  while (!stop_) {
    if (ready_.size() >= target_) {
      cv_.wait(lk);
      continue;
    }
    const uint64_t seq = ++seq_;
    const Limits limits = limits_;
    lk.unlock();
    Spare s = make_one(seq, limits);
    if (!netns_stuck) s.netns = make_netns(home.get(), &netns_stuck);
    const bool any = !s.cgroup.empty() || !s.dir.empty() || s.netns.valid();
    lk.lock();
    if (stop_) {
      lk.unlock();
      discard(s);
      lk.lock();
      break;
    }
    if (!any) {
      // Nothing can be made now; creates make their own. Try again later.
      cv_.wait_for(lk, std::chrono::seconds(5), [&] { return stop_; });
      continue;
    }
    ready_.push_back(std::move(s));
    ready_cv_.notify_all();
  }
}

}  // namespace coppice::sandbox::ns
