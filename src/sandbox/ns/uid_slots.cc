#include "sandbox/ns/uid_slots.h"

#include <chrono>
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

UidSlots::UidSlots(uint32_t base, uint32_t count, uint32_t warm_ahead)
    : warm_ahead_(warm_ahead), base_(base), used_(count, false), userns_(count) {
  if (warm_ahead_ > 0) warmer_ = std::thread([this] { warm_loop(); });
}

UidSlots::~UidSlots() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  warm_cv_.notify_all();
  if (warmer_.joinable()) warmer_.join();
}

std::vector<uint32_t> UidSlots::want_warm_locked() const {
  // acquire() takes the lowest free slot, so the next ones to be taken are
  // the lowest free slots: keep the first `warm_ahead_` of them prepared.
  std::vector<uint32_t> out;
  uint32_t free_seen = 0;
  for (uint32_t i = 0; i < used_.size() && free_seen < warm_ahead_; ++i) {
    if (used_[i]) continue;
    ++free_seen;
    if (!userns_[i]) out.push_back(i);
  }
  return out;
}

void UidSlots::warm_loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    warm_cv_.wait(lock, [this] { return stopping_ || !want_warm_locked().empty(); });
    if (stopping_) return;
    uint32_t slot = want_warm_locked().front();
    uint32_t host = base_ + slot * kIdsPerSlot;
    // Made outside the lock: creates go on meanwhile.
    lock.unlock();
    sys::IdRange map{0, host, kIdsPerSlot};
    auto fd = sys::make_userns(map, map);
    lock.lock();
    if (!fd) {
      // Leave it to the lazy path in lease_locked, which reports the error;
      // do not spin on a failing kernel.
      warm_cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_; });
      continue;
    }
    if (!userns_[slot]) userns_[slot] = std::move(*fd);
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
      auto l = lease_locked(i);
      warm_cv_.notify_one();
      return l;
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
