// Host uid ranges for sandboxes: slot i maps sandbox ids [0, 65536) to host
// ids [base + i*65536, base + (i+1)*65536). A slot is held by one running
// sandbox at a time, so no two live sandboxes share a host uid, and the
// sandbox's root is never host uid 0.
//
// Each slot's user namespace (with that mapping) is created once, on first
// use, and its fd cached: a create then costs no helper process. The fd is
// what the child setns(2)es into and what idmapped mounts take their mapping
// from.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <mutex>
#include <vector>

#include "common/result.h"
#include "sys/fd.h"

namespace coppice::sandbox::ns {

constexpr uint32_t kIdsPerSlot = 65536;

class UidSlots;

// A slot held by one sandbox; returns it to the pool when destroyed unless
// release()d (then UidSlots::free must be called later).
class SlotLease {
 public:
  SlotLease() = default;
  SlotLease(SlotLease&& o) noexcept : owner_(o.owner_), slot_(o.slot_), host_id_(o.host_id_), userns_fd_(o.userns_fd_) {
    o.owner_ = nullptr;
  }
  SlotLease& operator=(SlotLease&& o) noexcept;
  SlotLease(const SlotLease&) = delete;
  SlotLease& operator=(const SlotLease&) = delete;
  ~SlotLease();

  uint32_t slot() const { return slot_; }
  uint32_t host_id() const { return host_id_; }  // host uid/gid of the sandbox's 0
  int userns_fd() const { return userns_fd_; }   // owned by UidSlots, valid while held
  uint32_t release() {
    owner_ = nullptr;
    return slot_;
  }

 private:
  friend class UidSlots;
  UidSlots* owner_ = nullptr;
  uint32_t slot_ = 0;
  uint32_t host_id_ = 0;
  int userns_fd_ = -1;
};

class UidSlots {
 public:
  // The first `prepare` slots get their user namespace made here, at start,
  // so the first creates neither pay for one (~3 ms, a helper process) nor
  // queue behind one under the lock. Later slots are made on first use.
  // (Making them from a background thread while creates run let a helper's
  // clone race a sandbox's clone and hang the sandbox child: do it up front.)
  UidSlots(uint32_t base, uint32_t count, uint32_t prepare = 64);
  UidSlots(const UidSlots&) = delete;
  UidSlots& operator=(const UidSlots&) = delete;

  // Takes a free slot (the lowest, so the set of cached namespaces stays small).
  Result<SlotLease> acquire();
  // Marks the slot that maps root to `host_uid` as held (for an adopted
  // sandbox); kInvalidArgument if it is not a slot start of this allocator.
  Result<SlotLease> claim(uint32_t host_uid);
  void free(uint32_t slot);

  uint32_t base() const { return base_; }

 private:
  Result<SlotLease> lease_locked(uint32_t slot);
  std::mutex mu_;
  uint32_t base_;
  std::vector<bool> used_;
  std::vector<sys::UniqueFd> userns_;  // per slot, created lazily
};

}  // namespace coppice::sandbox::ns
