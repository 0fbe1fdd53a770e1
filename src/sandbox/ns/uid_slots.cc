#include "sandbox/ns/uid_slots.h"

#include <algorithm>
#include <string>

#include "sys/userns.h"

namespace coppice::sandbox::ns {

SlotLease& SlotLease::operator=(SlotLease&& o) noexcept {
  if (this != &o) {
    if (owner_) owner_->free(slot_);
    owner_ = o.owner_;
    slot_ = o.slot_;
    host_id_ = o.host_id_;
    userns_fd_ = o.userns_fd_;
    o.owner_ = nullptr;
  }
  return *this;
}

SlotLease::~SlotLease() {
  if (owner_) owner_->free(slot_);
}

UidSlots::UidSlots(uint32_t base, uint32_t count, uint32_t prepare) : base_(base), used_(count, false), userns_(count) {
  for (uint32_t slot = 0; slot < std::min(prepare, count); ++slot) {
    sys::IdRange map{0, base_ + slot * kIdsPerSlot, kIdsPerSlot};
    auto fd = sys::make_userns(map, map);
    if (!fd) break;  // lease_locked() makes it on first use and reports the error
    userns_[slot] = std::move(*fd);
  }
}

Result<SlotLease> UidSlots::lease_locked(uint32_t slot) {
  uint32_t host = base_ + slot * kIdsPerSlot;
  if (!userns_[slot]) {
    sys::IdRange map{0, host, kIdsPerSlot};
    auto fd = sys::make_userns(map, map);
    if (!fd) return std::unexpected(std::move(fd.error()).context("user namespace for uid slot " + std::to_string(slot)));
    userns_[slot] = std::move(*fd);
  }
  used_[slot] = true;
  SlotLease l;
  l.owner_ = this;
  l.slot_ = slot;
  l.host_id_ = host;
  l.userns_fd_ = userns_[slot].get();
  return l;
}

Result<SlotLease> UidSlots::acquire() {
  std::lock_guard lock(mu_);
  for (uint32_t i = 0; i < used_.size(); ++i) {
    if (!used_[i]) {
      return lease_locked(i);
    }
  }
  return make_error(ErrorCode::kResourceExhausted, "all " + std::to_string(used_.size()) + " uid slots are in use");
}

Result<SlotLease> UidSlots::claim(uint32_t host_uid) {
  std::lock_guard lock(mu_);
  if (host_uid < base_ || (host_uid - base_) % kIdsPerSlot != 0 || (host_uid - base_) / kIdsPerSlot >= used_.size()) {
    return make_error(ErrorCode::kInvalidArgument, "host uid " + std::to_string(host_uid) + " is not a uid slot");
  }
  uint32_t slot = (host_uid - base_) / kIdsPerSlot;
  if (used_[slot]) return make_error(ErrorCode::kAlreadyExists, "uid slot " + std::to_string(slot) + " is in use");
  return lease_locked(slot);
}

void UidSlots::free(uint32_t slot) {
  std::lock_guard lock(mu_);
  if (slot < used_.size()) used_[slot] = false;
}

}  // namespace coppice::sandbox::ns
