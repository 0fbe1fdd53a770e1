// The process's file descriptor limit (RLIMIT_NOFILE).
#pragma once

#include <cstdint>

#include "common/result.h"

namespace coppice::sys {

// Raises the soft RLIMIT_NOFILE to the hard one (raising the hard limit
// needs CAP_SYS_RESOURCE, which a daemon cannot count on) and returns the
// soft limit in force afterwards. Fails only when the limit cannot be read;
// when it cannot be raised, the current one is returned.
Result<uint64_t> raise_fd_limit();

}  // namespace coppice::sys
