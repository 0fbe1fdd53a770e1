// Background work: the one priority policy for everything that keeps
// resources ready ahead of demand (user namespaces, host-resource spares,
// warm pools), and a small thread pool whose threads run at it.
//
// The policy is SCHED_OTHER at nice 19: such a thread gets ~1.5% of a CPU
// while anything at normal priority wants it, so it takes only the CPU that
// requests leave free, yet it is never starved outright (SCHED_IDLE can be):
// a background thread preempted while holding a kernel lock that a request
// needs (cgroup_mutex, the mount lock) gets the CPU back within a time slice.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace coppice::sys {

// Puts the calling thread at the background priority (best effort: logs once
// on failure).
void set_background_priority();

// A fixed set of threads at the background priority running posted jobs in
// FIFO order. Jobs may block (a make of a sandbox takes milliseconds). The
// destructor waits for the jobs already posted, then stops.
class BackgroundPool {
 public:
  explicit BackgroundPool(size_t threads);
  ~BackgroundPool();
  BackgroundPool(const BackgroundPool&) = delete;
  BackgroundPool& operator=(const BackgroundPool&) = delete;

  void post(std::function<void()> job);
  size_t threads() const { return threads_.size(); }

 private:
  void run();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace coppice::sys
