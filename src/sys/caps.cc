#include "sys/caps.h"

#include <sys/prctl.h>

#include <cerrno>

#include "sys/linux_syscalls.h"

namespace coppice::sys::caps {

int limit_to(uint64_t keep) {
  // Walk up until the kernel says the capability does not exist, so newer
  // kernels' capabilities are dropped too.
  for (int cap = 0; cap < 64; ++cap) {
    if (keep & bit(cap)) continue;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
      if (errno == EINVAL) break;
      return errno;
    }
  }
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) return errno;
  if (raw::capset_v3(keep, keep, 0) != 0) return errno;
  return 0;
}

uint64_t bounding_set() {
  uint64_t out = 0;
  for (int cap = 0; cap < 64; ++cap) {
    int r = ::prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
    if (r < 0) break;
    if (r == 1) out |= bit(cap);
  }
  return out;
}

}  // namespace coppice::sys::caps
