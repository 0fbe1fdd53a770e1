#include "sandbox/ns/uid_slots.h"

#include <linux/nsfs.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <string>

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

UidSlots::UidSlots(uint32_t base, uint32_t count, uint32_t prepare, uint32_t cache)
    : prepare_(std::min(prepare, count)), base_(base), used_(count, false), userns_(count),
      cache_max_(std::max(prepare, cache)) {
  for (uint32_t slot = 0; slot < prepare_; ++slot) {
    sys::IdRange map{0, base_ + slot * kIdsPerSlot, kIdsPerSlot};
    auto fd = sys::make_userns(map, map);
    if (!fd) break;  // acquire() makes it on first use and reports the error
    userns_[slot] = std::move(*fd);
    ++cached_;
  }
  if (prepare_ > 0) refiller_ = std::thread([this] { refill_loop(); });
}

UidSlots::~UidSlots() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (refiller_.joinable()) refiller_.join();
}

// Keeps `prepare_` free slots with a ready namespace. The slot being prepared
// is marked used meanwhile, so no create takes it half-made.
void UidSlots::refill_loop() {
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);
  std::unique_lock lock(mu_);
  for (;;) {
    uint32_t slot = UINT32_MAX;
    cv_.wait(lock, [&] {
      if (stop_) return true;
      if (cached_ >= prepare_) return false;
      for (uint32_t i = 0; i < used_.size(); ++i) {
        if (!used_[i] && !userns_[i]) {
          slot = i;
          return true;
        }
      }
      return false;
    });
    if (stop_) return;
    used_[slot] = true;
    lock.unlock();
    sys::IdRange map{0, base_ + slot * kIdsPerSlot, kIdsPerSlot};
    auto fd = sys::make_userns(map, map);
    lock.lock();
    used_[slot] = false;
    if (!fd) {
      // Creates will make their own and report why; try again later.
      cv_.wait_for(lock, std::chrono::seconds(5), [&] { return stop_; });
      continue;
    }
    if (!userns_[slot]) {
      userns_[slot] = std::move(*fd);
      ++cached_;
    }
  }
}

Result<SlotLease> UidSlots::lease_locked(uint32_t slot, bool want_userns) {
  uint32_t host = base_ + slot * kIdsPerSlot;
  SlotLease l;
  if (userns_[slot]) {
    l.userns_ = std::move(userns_[slot]);
    --cached_;
  } else if (want_userns) {
    sys::IdRange map{0, host, kIdsPerSlot};
    auto fd = sys::make_userns(map, map);
    if (!fd) return std::unexpected(std::move(fd.error()).context("user namespace for uid slot " + std::to_string(slot)));
    l.userns_ = std::move(*fd);
  }
  if (!want_userns) l.userns_.reset();
  used_[slot] = true;
  l.owner_ = this;
  l.slot_ = slot;
  l.host_id_ = host;
  return l;
}

Result<SlotLease> UidSlots::acquire() {
  std::unique_lock lock(mu_);
  uint32_t pick = UINT32_MAX;
  for (uint32_t i = 0; i < used_.size(); ++i) {
    if (used_[i]) continue;
    if (userns_[i]) {
      pick = i;
      break;
    }
    if (pick == UINT32_MAX) pick = i;
    if (cached_ == 0) break;  // no ready one anywhere: the lowest free slot
  }
  if (pick == UINT32_MAX) {
    return make_error(ErrorCode::kResourceExhausted, "all " + std::to_string(used_.size()) + " uid slots are in use");
  }
  if (userns_[pick]) {
    auto l = lease_locked(pick, true);
    lock.unlock();
    cv_.notify_one();  // one fewer ready: the refiller makes another
    return l;
  }
  // None ready: make this slot's namespace here, without holding the lock.
  used_[pick] = true;
  lock.unlock();
  cv_.notify_one();
  sys::IdRange map{0, base_ + pick * kIdsPerSlot, kIdsPerSlot};
  auto fd = sys::make_userns(map, map);
  if (!fd) {
    std::lock_guard relock(mu_);
    used_[pick] = false;
    return std::unexpected(std::move(fd.error()).context("user namespace for uid slot " + std::to_string(pick)));
  }
  SlotLease l;
  l.userns_ = std::move(*fd);
  l.owner_ = this;
  l.slot_ = pick;
  l.host_id_ = base_ + pick * kIdsPerSlot;
  return l;
}

Result<SlotLease> UidSlots::claim(uint32_t host_uid) {
  std::lock_guard lock(mu_);
  if (host_uid < base_ || (host_uid - base_) % kIdsPerSlot != 0 || (host_uid - base_) / kIdsPerSlot >= used_.size()) {
    return make_error(ErrorCode::kInvalidArgument, "host uid " + std::to_string(host_uid) + " is not a uid slot");
  }
  uint32_t slot = (host_uid - base_) / kIdsPerSlot;
  if (used_[slot]) return make_error(ErrorCode::kAlreadyExists, "uid slot " + std::to_string(slot) + " is in use");
  return lease_locked(slot, false);
}

void UidSlots::free(uint32_t slot, sys::UniqueFd userns) {
  std::lock_guard lock(mu_);
  if (slot >= used_.size()) return;
  used_[slot] = false;
  if (userns && !userns_[slot] && cached_ < cache_max_) {
    userns_[slot] = std::move(userns);
    ++cached_;
  }
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
