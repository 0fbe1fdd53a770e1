// Which host uids each gateway on a host hands to its sandboxes, so that two
// gateways (a test beside the real one, two state dirs) never give live
// sandboxes the same host uids.
//
// A host-wide registry: one file per gateway in a directory (default
// /run/coppice/uid-ranges), named after the gateway's state dir and holding
// one line "<base> <slots> <pid> <state dir>\n". The gateway holds an
// exclusive flock(2) on its file while it runs; the kernel drops it when the
// process dies, however it dies, so an entry nobody holds is stale:
//   - a stale entry never blocks a claim: only live entries are refused;
//   - it is still avoided while another free range exists, because the dead
//     gateway's sandboxes may still run (they outlive it, to be adopted by
//     its next start) and its state dir's next gateway takes the same range
//     again;
//   - it is removed once its state dir is gone, or when its gateway exits
//     leaving no sandbox (UidRangeLease::withdraw).
// /run is emptied at boot, as sandboxes are.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/result.h"
#include "sandbox/ns/uid_slots.h"
#include "sys/fd.h"

namespace coppice::sandbox::ns {

// Host ids [base, base + slots * kIdsPerSlot).
struct UidRange {
  uint32_t base = 0;
  uint32_t slots = 0;
  uint64_t end() const { return uint64_t(base) + uint64_t(slots) * kIdsPerSlot; }
  bool overlaps(const UidRange& o) const { return base < o.end() && o.base < end(); }
  // "1000000-1073741823 (16384 slots)", for messages.
  std::string to_string() const;
};

// Chosen ranges lie on the grid kUidFloor + k * kIdsPerSlot, below
// kUidLimit. kUidFloor is the default state dir's base: above the ids of host
// accounts and of the subordinate ranges (/etc/subuid) tools hand out.
constexpr uint32_t kUidFloor = 1000000;
// Ids up to 0xFFFFFFFD: (uid_t)-1 means "no change" to the kernel.
constexpr uint64_t kUidLimit = 0xFFFFFFFEull;
// The default state dir's default range, which other state dirs' preferred
// ranges stay clear of while the id space allows.
constexpr uint32_t kDefaultStateDirSlots = 16384;

// Whether `r` lies within [1, kUidLimit) with at least one slot.
bool uid_range_valid(const UidRange& r);

// Where a gateway with state dir `state_dir` (canonical) looks first for
// `slots` slots: a grid point derived from the path, above the default
// state dir's range when that leaves room; kUidFloor if nothing else fits.
uint32_t preferred_uid_base(std::string_view state_dir, uint32_t slots);

// The first base, from `preferred` on along the grid (wrapping around to
// kUidFloor), whose range of `slots` slots overlaps none of `taken`; nullopt
// if there is none.
std::optional<uint32_t> pick_uid_base(uint32_t preferred, uint32_t slots, std::span<const UidRange> taken);

struct UidRangeClaim {
  // The registry; created (0755) if missing.
  std::string registry_dir = "/run/coppice/uid-ranges";
  // The gateway's state dir, canonical: names the entry (one gateway per
  // state dir at a time).
  std::string state_dir;
  uint32_t slots = 0;
  // A range fixed by the operator (--uid-base): exactly this base, or refuse.
  std::optional<uint32_t> fixed_base;
  // Otherwise where to look first (kUidFloor or preferred_uid_base()). The
  // range this state dir's previous gateway had, if its entry is still
  // there, comes before it, and is then required like a fixed one: the
  // sandboxes that gateway left running use it.
  uint32_t preferred_base = kUidFloor;
};

class UidRangeLease;

// Takes a range for this gateway and registers it. Fails with a one-line
// message when another gateway runs with the same state dir
// (kAlreadyExists), when a fixed or remembered range overlaps a running
// gateway's (kFailedPrecondition), or when no free range is left
// (kResourceExhausted). A failed claim adds no entry.
Result<UidRangeLease> claim_uid_range(const UidRangeClaim& claim);

// This gateway's entry in the registry, locked while the lease lives.
// Dropping the lease (or the process) leaves the entry stale, not removed.
class UidRangeLease {
 public:
  UidRangeLease() = default;
  UidRangeLease(UidRangeLease&&) noexcept = default;
  UidRangeLease& operator=(UidRangeLease&&) noexcept = default;
  UidRangeLease(const UidRangeLease&) = delete;
  UidRangeLease& operator=(const UidRangeLease&) = delete;

  const UidRange& range() const { return range_; }
  // Removes the entry and gives up the range: for a gateway that exits with
  // no sandbox left. Idempotent.
  Status withdraw();

 private:
  friend Result<UidRangeLease> claim_uid_range(const UidRangeClaim&);
  UidRange range_;
  std::string registry_dir_, path_;
  sys::UniqueFd fd_;
};

}  // namespace coppice::sandbox::ns
