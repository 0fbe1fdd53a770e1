// Host resources made ahead of creates: a cold create takes a ready bundle
// instead of making its cgroups, its state dir layout and its network
// namespace on its own critical path.
//
// A spare is three independent pieces, each of which may be missing (a
// create makes a missing piece itself):
//   - cgroups "spare-<n>" under the backend's parent, limited like the last
//     create asked (cgroup v1 only: cgroup2 cannot rename a cgroup dir);
//   - a state dir skeleton <root>/<n> (make_state_layout), renamed into place;
//   - a network namespace with loopback up, owned by the host's user
//     namespace like one the child would make, handed to the child by fd;
//     with a gateway network, on it already (veth, address, route).
// Nothing in a spare belongs to any sandbox until taken, and each piece is
// handed out once. A Refiller (common/refiller.h) keeps `target` of them at
// background priority; the destructor removes what is left, and a new Spares
// removes the leftovers of a process that died (names starting "spare-", the
// whole root).
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/refiller.h"
#include "net/network.h"
#include "sandbox/backend.h"
#include "sandbox/ns/cgroup.h"
#include "sandbox/ns/disk_quota.h"
#include "sys/background.h"
#include "sys/fd.h"

namespace coppice::sandbox::ns {

// Cgroup names of spares; never a sandbox id (validate_id refuses them).
constexpr std::string_view kSparePrefix = "spare-";
inline bool is_spare_name(std::string_view name) { return name.starts_with(kSparePrefix); }

struct Spare {
  std::string cgroup;  // spare cgroup name, empty if none
  Limits limits;       // what the spare cgroup is limited to
  std::string dir;     // state dir skeleton, empty if none
  sys::UniqueFd netns; // network namespace (loopback up), invalid if none
  net::Attachment net; // its place on the gateway's network, if any (with netns only)
};

// A new network namespace with loopback up, owned by the host's user
// namespace; invalid (and a warning logged) on failure. Blocking, ~0.6 ms.
sys::UniqueFd make_netns();

class Spares {
 public:
  // `cgroups` may be null (no spare cgroups; also on cgroup2), `root` empty
  // (no state dir skeletons; else a root-only dir on the same file system as
  // the sandboxes' state dirs, emptied now). `target` 0 makes nothing.
  // Refills run on `background` (or on a thread of its own when null).
  // With `disk`, each skeleton is a subvolume of its own (disk_quota.h), so a
  // create only sets its cap.
  // With `network`, each spare's namespace is attached to it.
  Spares(const CgroupManager* cgroups, std::string root, uint32_t target, Limits limits,
         sys::BackgroundPool* background = nullptr, const DiskQuota* disk = nullptr,
         net::SandboxNetwork* network = nullptr);
  ~Spares();
  Spares(const Spares&) = delete;
  Spares& operator=(const Spares&) = delete;

  // A ready spare, or nullopt when none is (then the caller makes every
  // piece itself). O(1); starts a refill. `limits` become the limits of
  // the spares made from now on.
  std::optional<Spare> take(const Limits& limits);

  // Removes the pieces of a spare the caller did not use.
  void discard(Spare& s) const;

  size_t ready() const { return ready_.ready(); }

  // Blocks until `n` spares are ready or `timeout_ms` passed (tests).
  bool wait_ready(size_t n, int timeout_ms) const {
    return ready_.wait_ready(n, std::chrono::milliseconds(timeout_ms));
  }

 private:
  std::optional<Spare> make_one();

  // Removes the root and what is in it, entry by entry (a subvolume is
  // another file system to a tree walk from its parent).
  void remove_root() const;

  const CgroupManager* cgroups_;
  const std::string root_;
  const DiskQuota* disk_;
  net::SandboxNetwork* network_;
  mutable std::mutex mu_;  // limits_ and seq_
  Limits limits_;
  uint64_t seq_ = 0;
  std::unique_ptr<sys::BackgroundPool> own_pool_;
  Refiller<Spare> ready_;  // last: stopped before the rest goes
};

}  // namespace coppice::sandbox::ns
