// Pidfd: the owner of a pidfd, a stable handle on a process that cannot be
// confused with a later process reusing the pid.
#pragma once

#include <sys/types.h>

#include "common/result.h"
#include "sys/fd.h"

namespace coppice::sys {

class Pidfd {
 public:
  Pidfd() = default;
  Pidfd(UniqueFd fd, pid_t pid) : fd_(std::move(fd)), pid_(pid) {}

  // pidfd_open(2) on a running process (ours or not).
  static Result<Pidfd> open(pid_t pid);

  int get() const { return fd_.get(); }
  // Gives up the fd (for an event loop to own); the Pidfd is empty after.
  int release_fd() { return fd_.release(); }
  pid_t pid() const { return pid_; }
  bool valid() const { return fd_.valid(); }

  // Sends `sig`; ESRCH (already gone) counts as success.
  Status send_signal(int sig) const;

  // Waits until the process has exited, at most `timeout_ms` (-1: forever).
  // Returns kDeadlineExceeded on timeout. Works for processes that are not our
  // children (the pidfd becomes readable on exit).
  Status wait_exit(int timeout_ms) const;

  // Reaps the process if it is our child (waitid P_PIDFD, non-blocking once it
  // has exited); returns its wait status, or -1 when it is not our child.
  int reap() const;

 private:
  UniqueFd fd_;
  pid_t pid_ = -1;
};

}  // namespace coppice::sys
