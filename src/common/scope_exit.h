// Runs a callable when the scope ends, unless release()d: the one guard for
// "undo this unless we get to the end".
#pragma once

#include <utility>

namespace coppice {

template <typename F>
class ScopeExit {
 public:
  explicit ScopeExit(F f) : f_(std::move(f)) {}
  ScopeExit(ScopeExit&& o) noexcept : f_(std::move(o.f_)), active_(o.active_) { o.active_ = false; }
  ScopeExit(const ScopeExit&) = delete;
  ScopeExit& operator=(const ScopeExit&) = delete;
  ScopeExit& operator=(ScopeExit&&) = delete;
  ~ScopeExit() {
    if (active_) f_();
  }
  // The callable will not run.
  void release() { active_ = false; }

 private:
  F f_;
  bool active_ = true;
};

}  // namespace coppice
