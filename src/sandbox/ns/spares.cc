#include "sandbox/ns/spares.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "common/log.h"
#include "sandbox/ns/rootfs.h"
#include "sys/fsutil.h"
#include "sys/netif.h"

namespace coppice::sandbox::ns {

namespace {
RefillPolicy spare_policy(uint32_t target) {
  RefillPolicy p;
  p.target = target;
  p.max_parallel = 2;
  return p;
}
}  // namespace

Spares::Spares(const CgroupManager* cgroups, std::string root, uint32_t target, Limits limits,
               sys::BackgroundPool* background, const DiskQuota* disk, net::SandboxNetwork* network)
    : cgroups_(cgroups && !cgroups->v2() ? cgroups : nullptr),
      root_(std::move(root)),
      disk_(disk),
      network_(network),
      limits_(limits),
      own_pool_(background ? nullptr : std::make_unique<sys::BackgroundPool>(1)),
      ready_([pool = background ? background : own_pool_.get()](std::function<void()> job) { pool->post(std::move(job)); },
             spare_policy(target), [this] { return make_one(); }, [this](Spare& s) { discard(s); }) {
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
    remove_root();
    if (auto s = sys::make_dirs(root_, 0700); !s) {
      COPPICE_LOG(warn) << "spare dirs: " << s.error().to_string() << " (creates make their own)";
    }
  }
  ready_.start();
}

Spares::~Spares() {
  ready_.stop();
  if (!root_.empty()) remove_root();
}

void Spares::remove_root() const {
  if (auto names = sys::list_dir(root_); names) {
    for (const auto& n : *names) (void)sys::remove_tree(sys::join_path(root_, n));
  }
  if (auto s = sys::remove_tree(root_); !s) {
    COPPICE_LOG(warn) << "spare dirs leftover: " << s.error().to_string();
  }
}

std::optional<Spare> Spares::take(const Limits& limits) {
  {
    std::lock_guard lk(mu_);
    limits_ = limits;
  }
  return ready_.take();
}

void Spares::discard(Spare& s) const {
  if (!s.cgroup.empty() && cgroups_) {
    if (auto r = cgroups_->remove(s.cgroup); !r) {
      COPPICE_LOG(warn) << "spare cgroup: " << r.error().to_string();
    }
  }
  if (!s.dir.empty()) (void)sys::remove_tree(s.dir);
  s.netns.reset();
  if (s.net.valid() && network_) network_->release(s.net);
  s.net = {};
  s.cgroup.clear();
  s.dir.clear();
}

// Made by this thread: it enters a new network namespace, takes an fd to it
// and goes back to the one it came from (a thread that cannot go back would
// do everything after in the wrong network: that aborts, as in sys/netns.h).
sys::UniqueFd make_netns() {
  sys::UniqueFd home(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!home) {
    COPPICE_LOG_RATE(warn, 60) << "spare network namespace: open own: " << std::strerror(errno);
    return {};
  }
  if (::unshare(CLONE_NEWNET) != 0) {
    COPPICE_LOG_RATE(warn, 60) << "spare network namespace: unshare: " << std::strerror(errno);
    return {};
  }
  sys::UniqueFd fd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  int err = fd.valid() ? 0 : errno;
  int lo = sys::netif::loopback_up();
  if (::setns(home.get(), CLONE_NEWNET) != 0) {
    COPPICE_LOG(error) << "spare network namespaces: cannot return to the host's: " << std::strerror(errno);
    std::abort();
  }
  if (!fd.valid() || lo != 0) {
    COPPICE_LOG_RATE(warn, 60) << "spare network namespace: " << std::strerror(fd.valid() ? lo : err);
    return {};
  }
  return fd;
}

std::optional<Spare> Spares::make_one() {
  uint64_t seq;
  Limits limits;
  {
    std::lock_guard lk(mu_);
    seq = ++seq_;
    limits = limits_;
  }
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
    Status made = disk_ ? disk_->make_layer(dir) : sys::make_dir(dir, 0700);
    if (made) made = make_state_layout(StatePaths(dir), kSkeletonUpperMode, 0);
    if (made) {
      s.dir = std::move(dir);
    } else {
      COPPICE_LOG_RATE(warn, 60) << "spare state dir: " << made.error().to_string();
      (void)sys::remove_tree(dir);
    }
  }
  s.netns = make_netns();
  if (s.netns.valid() && network_) {
    if (auto a = network_->attach(s.netns.get()); a) {
      s.net = *a;
    } else {
      // A create makes its own then (and says why if it cannot either).
      COPPICE_LOG_RATE(warn, 60) << "spare network: " << a.error().to_string();
      s.netns.reset();
    }
  }
  if (s.cgroup.empty() && s.dir.empty() && !s.netns.valid()) return std::nullopt;  // backs off
  return s;
}

}  // namespace coppice::sandbox::ns
