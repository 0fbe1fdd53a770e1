#include "sys/background.h"

#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace coppice::sys {

void set_background_priority() {
  sched_param sp{};
  int err = 0;
  if (::sched_setscheduler(0, SCHED_OTHER, &sp) != 0) err = errno;
  if (::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 19) != 0) err = errno;
  if (err != 0) {
    COPPICE_LOG_RATE(warn, 3600) << "background priority (nice 19): " << std::strerror(err);
  }
}

BackgroundPool::BackgroundPool(size_t threads) {
  if (threads == 0) threads = 1;
  threads_.reserve(threads);
  for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

BackgroundPool::~BackgroundPool() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void BackgroundPool::post(std::function<void()> job) {
  {
    std::lock_guard lk(mu_);
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void BackgroundPool::run() {
  set_background_priority();
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || !jobs_.empty(); });
    if (jobs_.empty()) return;  // stopping and nothing left
    auto job = std::move(jobs_.front());
    jobs_.pop_front();
    lk.unlock();
    job();
    lk.lock();
  }
}

}  // namespace coppice::sys
