#include "sys/rlimit.h"

#include <sys/resource.h>

namespace coppice::sys {

Result<uint64_t> raise_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return errno_error("getrlimit(RLIMIT_NOFILE)");
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
  }
  return static_cast<uint64_t>(rl.rlim_cur);
}

}  // namespace coppice::sys
