// The hostname of another process's UTS namespace.
#pragma once

#include <string_view>

#include "common/result.h"

namespace coppice::sys {

// Sets the hostname in the UTS namespace of the process behind `pidfd`.
// setns(2) changes the namespace of the calling thread only, and a thread of a
// multi-threaded process may join a UTS namespace; so a short-lived thread
// joins it, calls sethostname(2) and exits, and no thread of the caller is
// left in the sandbox's namespace. Needs CAP_SYS_ADMIN over the namespace's
// owning user namespace (the host's, for ns sandboxes).
Status set_hostname_of(int pidfd, std::string_view name);

}  // namespace coppice::sys
