#include "sandbox/ns/uid_slots.h"

#include <linux/nsfs.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include "common/log.h"
#include "sys/userns.h"

namespace coppice::sandbox::ns {

SlotLease& SlotLease::operator=(SlotLease&& o) noexcept {
  if (this != &o) {
    if (owner_) owner_->free(slot_, std::move(userns_));
    owner_ = o.owner_;
    slot_ = o.slot_;
    host_id_ = o.host_id_;
    userns_ = std::move(o.userns_);
    o.owner_ = nullptr;
  }
  return *this;
}

SlotLease::~SlotLease() {
  if (owner_) owner_->free(slot_, std::move(userns_));
}

namespace {
RefillPolicy slot_policy(uint32_t prepare, uint32_t cache) {
  RefillPolicy p;
  p.target = prepare;
  p.max_parallel = 1;  // ~0.2 ms each: one at a time keeps up
  p.keep_max = std::max(prepare, cache);
  return p;
}
}  // namespace

UidSlots::UidSlots(uint32_t base, uint32_t count, uint32_t prepare, uint32_t cache, sys::BackgroundPool* background)
    : base_(base),
      used_(count, false),
      own_pool_(background ? nullptr : std::make_unique<sys::BackgroundPool>(1)),
      ready_([pool = background ? background : own_pool_.get()](std::function<void()> job) { pool->post(std::move(job)); },
             slot_policy(std::min(prepare, count), cache), [this] { return make_ready(); },
             [this](Ready& r) { unreserve(r.slot); }) {
  // The first ones now, so the first creates find them ready.
  for (uint32_t i = 0; i < std::min(prepare, count); ++i) {
    auto r = make_ready();
    if (!r) break;  // acquire() makes it on first use and reports the error
    if (!ready_.give(*r)) unreserve(r->slot);
  }
  ready_.start();
}

UidSlots::~UidSlots() { ready_.stop(); }

uint32_t UidSlots::reserve_lowest() {
  std::lock_guard lock(mu_);
  for (uint32_t i = 0; i < used_.size(); ++i) {
    if (!used_[i]) {
      used_[i] = true;
      return i;
    }
  }
  return UINT32_MAX;
}

void UidSlots::unreserve(uint32_t slot) {
  std::lock_guard lock(mu_);
  if (slot < used_.size()) used_[slot] = false;
}

std::optional<UidSlots::Ready> UidSlots::make_ready() {
  uint32_t slot = reserve_lowest();
  if (slot == UINT32_MAX) return std::nullopt;  // all held: nothing to prepare
  sys::IdRange map{0, base_ + slot * kIdsPerSlot, kIdsPerSlot};
  auto fd = sys::make_userns(map, map, map.outside);
  if (!fd) {
    unreserve(slot);
    COPPICE_LOG_RATE(warn, 60) << "user namespace for uid slot " << slot << ": " << fd.error().to_string();
    return std::nullopt;
  }
  return Ready{slot, std::move(*fd)};
}

SlotLease UidSlots::lease(uint32_t slot, sys::UniqueFd userns) {
  SlotLease l;
  l.userns_ = std::move(userns);
  l.owner_ = this;
  l.slot_ = slot;
  l.host_id_ = base_ + slot * kIdsPerSlot;
  return l;
}

Result<SlotLease> UidSlots::acquire() {
  // The lowest ready slot, so the set of slots with a namespace (and of host
  // uids in use) stays small.
  if (auto r = ready_.take_least([](const Ready& a, const Ready& b) { return a.slot < b.slot; })) {
    return lease(r->slot, std::move(r->userns));
  }
  // None ready: the lowest free slot, its namespace made here, outside the lock.
  uint32_t slot = reserve_lowest();
  if (slot == UINT32_MAX) {
    return make_error(ErrorCode::kResourceExhausted, "all " + std::to_string(used_.size()) + " uid slots are in use");
  }
  sys::IdRange map{0, base_ + slot * kIdsPerSlot, kIdsPerSlot};
  auto fd = sys::make_userns(map, map, map.outside);
  if (!fd) {
    unreserve(slot);
    return std::unexpected(std::move(fd.error()).context("user namespace for uid slot " + std::to_string(slot)));
  }
  return lease(slot, std::move(*fd));
}

Result<SlotLease> UidSlots::claim(uint32_t host_uid) {
  if (host_uid < base_ || (host_uid - base_) % kIdsPerSlot != 0 || (host_uid - base_) / kIdsPerSlot >= used_.size()) {
    return make_error(ErrorCode::kInvalidArgument, "host uid " + std::to_string(host_uid) + " is not a uid slot");
  }
  uint32_t slot = (host_uid - base_) / kIdsPerSlot;
  // A slot whose namespace was made ready (e.g. at start, before recovery
  // adopts the sandbox running in it) is taken back from the ready ones.
  if (auto r = ready_.take_matching([slot](const Ready& x) { return x.slot == slot; })) {
    return lease(slot, sys::UniqueFd());
  }
  {
    std::lock_guard lock(mu_);
    if (used_[slot]) return make_error(ErrorCode::kAlreadyExists, "uid slot " + std::to_string(slot) + " is in use");
    used_[slot] = true;
  }
  return lease(slot, sys::UniqueFd());
}

void UidSlots::free(uint32_t slot, sys::UniqueFd userns) {
  if (slot >= used_.size()) return;
  if (userns) {
    // Kept (slot still held, now by the Ready item) for the next acquire.
    Ready r{slot, std::move(userns)};
    if (ready_.give(r)) return;
  }
  unreserve(slot);
}

bool UidSlots::is_slot_userns(int fd) {
  int parent = ::ioctl(fd, NS_GET_PARENT);
  if (parent < 0) return false;
  struct stat p, mine;
  bool good = ::fstat(parent, &p) == 0 && ::stat("/proc/self/ns/user", &mine) == 0 && p.st_dev == mine.st_dev &&
              p.st_ino == mine.st_ino;
  ::close(parent);
  return good;
}

}  // namespace coppice::sandbox::ns
