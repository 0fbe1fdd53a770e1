#include "sys/pidfd_owner.h"

#include <poll.h>
#include <sys/wait.h>

#include <cerrno>
#include <chrono>

#include "sys/linux_syscalls.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace coppice::sys {

Result<Pidfd> Pidfd::open(pid_t pid) {
  int fd = raw::pidfd_open(pid, 0);
  if (fd < 0) return errno_error("pidfd_open " + std::to_string(pid));
  return Pidfd(UniqueFd(fd), pid);
}

Status Pidfd::send_signal(int sig) const {
  if (raw::pidfd_send_signal(fd_.get(), sig) != 0 && errno != ESRCH) {
    return errno_error("pidfd_send_signal " + std::to_string(pid_));
  }
  return ok();
}

Status Pidfd::wait_exit(int timeout_ms) const {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int left = timeout_ms;
    if (timeout_ms >= 0) {
      auto rem = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      left = rem.count() < 0 ? 0 : static_cast<int>(rem.count());
    }
    struct pollfd p{fd_.get(), POLLIN, 0};
    int r = ::poll(&p, 1, left);
    if (r > 0) return ok();
    if (r == 0) return make_error(ErrorCode::kDeadlineExceeded, "process " + std::to_string(pid_) + " did not exit");
    if (errno != EINTR) return errno_error("poll pidfd");
  }
}

int Pidfd::reap() const {
  siginfo_t info{};
  for (;;) {
    if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(fd_.get()), &info, WEXITED | WNOHANG) == 0) {
      return info.si_status;
    }
    if (errno != EINTR) return -1;
  }
}

}  // namespace coppice::sys
