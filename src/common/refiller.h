// Refiller<T>: keeps a number of T made ahead of demand, so that whoever
// needs one takes it in O(1) instead of making it on its critical path. The
// one "keep N ready" mechanism of the gateway: user namespaces per uid slot,
// host-resource spares and warm pools of sandboxes all use it, with one
// refill policy:
//
//   - while at least `low_mark` items are ready or being made, one make runs
//     at a time (and `gate` may hold it back, e.g. until requests pause);
//   - below the low mark, up to `max_parallel` makes run at once, ungated, so
//     a steady stream of takes is kept up with as long as there is CPU;
//   - a failed make backs off (250 ms doubling to 30 s) before the next try,
//     so something that cannot be made does not spin;
//   - makes run on the executor given (the gateway's BackgroundPool, whose
//     threads run at the background priority of sys/background.h).
//
// Threading: every method may be called from any thread. A mutex guards the
// queue and the counters only; it is never held across make, discard or
// gate. take() never waits for a make.
//
// Lifetime: stop() (also run by the destructor) stops new makes, waits for
// those in flight and discards every ready item; the makes' jobs capture
// `this`, so a Refiller must be stopped before anything `make` uses goes.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace coppice {

struct RefillPolicy {
  size_t target = 0;        // items kept ready
  size_t max_parallel = 1;  // makes at once below the low mark
  size_t low_mark = 0;      // 0: half the target (at least 1)
  size_t keep_max = 0;      // ready items accepted from give(); 0: the target
};

template <typename T>
class Refiller {
 public:
  using Post = std::function<void(std::function<void()>)>;
  // Makes one item; blocking. nullopt: could not (the make logs why).
  using Make = std::function<std::optional<T>()>;
  // Gets rid of an item nobody will take (blocking allowed).
  using Discard = std::function<void(T&)>;
  // Runs before a make that is not urgent; may block to defer it.
  using Gate = std::function<void()>;

  Refiller(Post post, RefillPolicy policy, Make make, Discard discard, Gate gate = {})
      : post_(std::move(post)), policy_(policy), make_(std::move(make)), discard_(std::move(discard)),
        gate_(std::move(gate)) {}
  ~Refiller() { stop(); }
  Refiller(const Refiller&) = delete;
  Refiller& operator=(const Refiller&) = delete;

  // Starts making up to the target (call once the things `make` uses exist).
  void start() {
    std::lock_guard lk(mu_);
    started_ = true;
    kick_locked();
  }

  // A ready item (the oldest), or nullopt when none is ready.
  std::optional<T> take() {
    std::lock_guard lk(mu_);
    if (ready_.empty()) {
      ++misses_;
      kick_locked();
      return std::nullopt;
    }
    std::optional<T> out(std::move(ready_.front()));
    ready_.pop_front();
    ++hits_;
    kick_locked();
    return out;
  }

  // The ready item that orders first by less(const T&, const T&) (instead
  // of the oldest); nullopt when none is ready. Counted like take().
  template <typename Less>
  std::optional<T> take_least(Less&& less) {
    std::lock_guard lk(mu_);
    if (ready_.empty()) {
      ++misses_;
      kick_locked();
      return std::nullopt;
    }
    auto best = ready_.begin();
    for (auto it = std::next(best); it != ready_.end(); ++it)
      if (less(*it, *best)) best = it;
    std::optional<T> out(std::move(*best));
    ready_.erase(best);
    ++hits_;
    kick_locked();
    return out;
  }

  // The first ready item for which pred(const T&) holds, removed; nullopt
  // if none. Not counted as a hit or a miss; starts a refill.
  template <typename Pred>
  std::optional<T> take_matching(Pred&& pred) {
    std::lock_guard lk(mu_);
    for (auto it = ready_.begin(); it != ready_.end(); ++it) {
      if (!pred(*it)) continue;
      std::optional<T> out(std::move(*it));
      ready_.erase(it);
      kick_locked();
      return out;
    }
    return std::nullopt;
  }

  // Offers an item made elsewhere (e.g. handed back by a user). Kept if
  // fewer than keep_max are ready and not stopping; otherwise false and the
  // caller keeps it.
  bool give(T& item) {
    std::lock_guard lk(mu_);
    size_t cap = policy_.keep_max ? policy_.keep_max : policy_.target;
    if (stopping_ || ready_.size() >= cap) return false;
    ready_.push_back(std::move(item));
    ready_cv_.notify_all();
    return true;
  }

  void set_target(size_t n) {
    std::vector<T> extra;
    {
      std::lock_guard lk(mu_);
      policy_.target = n;
      size_t cap = std::max(n, policy_.keep_max);
      while (ready_.size() > cap) {
        extra.push_back(std::move(ready_.back()));
        ready_.pop_back();
      }
      kick_locked();
    }
    for (auto& x : extra) discard_(x);
  }

  // Target 0; returns every ready item for the caller to dispose of. Makes in
  // flight discard what they make.
  std::vector<T> drain() {
    std::lock_guard lk(mu_);
    policy_.target = 0;
    std::vector<T> out;
    for (auto& x : ready_) out.push_back(std::move(x));
    ready_.clear();
    return out;
  }

  // No more makes; waits for those in flight; discards every ready item.
  void stop() {
    std::deque<T> left;
    {
      std::unique_lock lk(mu_);
      stopping_ = true;
      stop_cv_.notify_all();
      idle_cv_.wait(lk, [&] { return in_flight_ == 0; });
      left.swap(ready_);
    }
    for (auto& x : left) discard_(x);
  }

  size_t ready() const {
    std::lock_guard lk(mu_);
    return ready_.size();
  }
  size_t in_flight() const {
    std::lock_guard lk(mu_);
    return in_flight_;
  }
  size_t target() const {
    std::lock_guard lk(mu_);
    return policy_.target;
  }
  // take() calls that found an item / found none.
  std::pair<uint64_t, uint64_t> hits_misses() const {
    std::lock_guard lk(mu_);
    return {hits_, misses_};
  }
  // Blocks until `n` items are ready or `timeout` passed.
  bool wait_ready(size_t n, std::chrono::milliseconds timeout) const {
    std::unique_lock lk(mu_);
    return ready_cv_.wait_for(lk, timeout, [&] { return ready_.size() >= n; });
  }
  // Calls f(const T&) for each ready item, under the lock: keep f cheap.
  template <typename F>
  void for_each_ready(F&& f) const {
    std::lock_guard lk(mu_);
    for (const auto& x : ready_) f(x);
  }

 private:
  size_t low_mark_locked() const {
    if (policy_.low_mark) return policy_.low_mark;
    return std::max<size_t>(1, policy_.target / 2);
  }

  // Starts as many makes as the policy allows now.
  void kick_locked() {
    if (!started_ || stopping_ || std::chrono::steady_clock::now() < backoff_until_) return;
    for (;;) {
      size_t have = ready_.size() + in_flight_;
      if (have >= policy_.target) return;
      bool urgent = have < low_mark_locked();
      size_t cap = urgent ? std::max<size_t>(1, policy_.max_parallel) : 1;
      if (in_flight_ >= cap) return;
      ++in_flight_;
      post_([this, urgent] { run_one(urgent); });
    }
  }

  void run_one(bool urgent) {
    if (!urgent && gate_) gate_();
    bool go;
    {
      // The target may have dropped since the job was posted (this job is
      // one of in_flight_).
      std::lock_guard lk(mu_);
      go = !stopping_ && ready_.size() + in_flight_ <= policy_.target;
    }
    std::optional<T> item;
    if (go) item = make_();
    std::unique_lock lk(mu_);
    if (item) {
      failures_ = 0;
      if (!stopping_ && ready_.size() < policy_.target) {
        ready_.push_back(std::move(*item));
        ready_cv_.notify_all();
      } else {
        // Nobody wants it now: discarded before this job stops counting as
        // in flight, so stop() returns only once it is gone.
        lk.unlock();
        discard_(*item);
        lk.lock();
      }
    } else if (go) {
      // Back off before the next make: this job waits it out (it still
      // counts as in flight).
      failures_ = std::min(failures_ + 1, 7);
      auto delay = std::chrono::milliseconds(std::min(30000, 250 << (failures_ - 1)));
      backoff_until_ = std::chrono::steady_clock::now() + delay;
      stop_cv_.wait_for(lk, delay, [&] { return stopping_; });
    }
    --in_flight_;
    if (in_flight_ == 0) idle_cv_.notify_all();
    kick_locked();
  }

  const Post post_;
  RefillPolicy policy_;
  const Make make_;
  const Discard discard_;
  const Gate gate_;
  mutable std::mutex mu_;
  mutable std::condition_variable ready_cv_, idle_cv_, stop_cv_;
  std::deque<T> ready_;
  size_t in_flight_ = 0;
  bool started_ = false;
  bool stopping_ = false;
  int failures_ = 0;
  std::chrono::steady_clock::time_point backoff_until_{};
  uint64_t hits_ = 0, misses_ = 0;
};

}  // namespace coppice
