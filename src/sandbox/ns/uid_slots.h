// Host uid ranges for sandboxes: slot i maps sandbox ids [0, 65536) to host
// ids [base + i*65536, base + (i+1)*65536). A slot is held by one running
// sandbox at a time, so no two live sandboxes share a host uid, and the
// sandbox's root is never host uid 0.
//
// Each slot's user namespace (with that mapping) is made once and reused by
// the slot's next sandboxes, so a create costs no helper process. Only free
// slots hold its fd here, at most `cache` of them: a running sandbox's own
// processes keep its namespace alive, and the backend keeps no fd per idle
// sandbox. destroy() hands the namespace back from the dying sandbox
// (SlotLease::keep_userns). The fd is what the child setns(2)es into and what
// idmapped mounts take their mapping from.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "common/refiller.h"
#include "common/result.h"
#include "sys/background.h"
#include "sys/fd.h"

namespace coppice::sandbox::ns {

constexpr uint32_t kIdsPerSlot = 65536;

class UidSlots;

// A slot held by one sandbox; returns it to the pool when destroyed unless
// release()d (then UidSlots::free must be called later).
class SlotLease {
 public:
  SlotLease() = default;
  SlotLease(SlotLease&& o) noexcept
      : owner_(o.owner_), slot_(o.slot_), host_id_(o.host_id_), userns_(std::move(o.userns_)) {
    o.owner_ = nullptr;
  }
  SlotLease& operator=(SlotLease&& o) noexcept;
  SlotLease(const SlotLease&) = delete;
  SlotLease& operator=(const SlotLease&) = delete;
  ~SlotLease();

  uint32_t slot() const { return slot_; }
  uint32_t host_id() const { return host_id_; }  // host uid/gid of the sandbox's 0
  // The slot's user namespace; -1 for a claimed (adopted) slot or after
  // drop_userns().
  int userns_fd() const { return userns_.get(); }
  // Closes the namespace fd once the sandbox runs (its processes pin it).
  void drop_userns() { userns_.reset(); }
  // Hands the slot's namespace back (opened from the sandbox before it is
  // killed) so that the slot's next sandbox reuses it. The caller has checked
  // that it is the slot's namespace (UidSlots::is_slot_userns).
  void keep_userns(sys::UniqueFd fd) { userns_ = std::move(fd); }
  uint32_t release() {
    owner_ = nullptr;
    return slot_;
  }

 private:
  friend class UidSlots;
  UidSlots* owner_ = nullptr;
  uint32_t slot_ = 0;
  uint32_t host_id_ = 0;
  sys::UniqueFd userns_;
};

class UidSlots {
 public:
  // The first `prepare` slots get their user namespace made here, at start,
  // so the first creates neither pay for one (a helper process) nor queue
  // behind one. Then a Refiller (common/refiller.h) keeps `prepare` free
  // slots ready as creates take them, on `background` (or on a thread of its
  // own when null). A slot taken when none is ready gets its namespace made
  // by the create itself, outside the lock. At most max(prepare, cache)
  // namespace fds are held for free slots.
  UidSlots(uint32_t base, uint32_t count, uint32_t prepare = 64, uint32_t cache = 256,
           sys::BackgroundPool* background = nullptr);
  ~UidSlots();
  UidSlots(const UidSlots&) = delete;
  UidSlots& operator=(const UidSlots&) = delete;

  // Takes a free slot, one whose namespace is ready when there is one (else
  // the lowest free slot).
  Result<SlotLease> acquire();
  // Marks the slot that maps root to `host_uid` as held (for an adopted
  // sandbox); kInvalidArgument if it is not a slot start of this allocator.
  Result<SlotLease> claim(uint32_t host_uid);
  // Returns a slot; `userns` (may be empty) is kept for its next use.
  void free(uint32_t slot, sys::UniqueFd userns);

  // Whether `fd` is a user namespace whose parent is ours: a sandbox's
  // processes can only ever be in their slot's namespace or in namespaces
  // nested below it, so for a namespace taken from a sandbox of a slot this
  // says it is the slot's own and not one its tenant made.
  static bool is_slot_userns(int fd);

  uint32_t base() const { return base_; }
  // Free slots whose namespace is ready now.
  uint32_t ready() const { return static_cast<uint32_t>(ready_.ready()); }

 private:
  struct Ready {
    uint32_t slot = 0;
    sys::UniqueFd userns;
  };
  // The lowest slot nobody holds, marked held; UINT32_MAX when all are.
  uint32_t reserve_lowest();
  void unreserve(uint32_t slot);
  std::optional<Ready> make_ready();
  SlotLease lease(uint32_t slot, sys::UniqueFd userns);

  uint32_t base_;
  std::mutex mu_;
  std::vector<bool> used_;  // held by a sandbox, or by a Ready item
  std::unique_ptr<sys::BackgroundPool> own_pool_;
  Refiller<Ready> ready_;  // last: stopped before the rest goes
};

}  // namespace coppice::sandbox::ns
