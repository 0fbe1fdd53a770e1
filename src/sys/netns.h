// Network namespaces from the host's side: sockets made inside one, and the
// namespace's identity. The calling thread enters the namespace and comes
// back before returning; a thread that could not come back would serve
// requests in a sandbox's network, so that aborts the process (it cannot
// happen short of a kernel bug: the host's namespace is pinned by this
// process's own fd).
#pragma once

#include <cstdint>
#include <string>

#include "common/result.h"
#include "sys/fd.h"

namespace coppice::sys {

// A socket(domain, type | SOCK_CLOEXEC, protocol) created inside the network
// namespace `netns_fd`. It stays bound to that namespace wherever it is used.
Result<UniqueFd> socket_in_netns(int netns_fd, int domain, int type, int protocol = 0);

// The namespace cookie of the network namespace `sock` was created in
// (SO_NETNS_COOKIE: a 64-bit id the kernel never reuses while it runs).
Result<uint64_t> netns_cookie_of_socket(int sock);

// The cookie of the network namespace `netns_fd` (makes a socket there).
Result<uint64_t> netns_cookie(int netns_fd);

// An fd of the network namespace of process `pid` (/proc/<pid>/ns/net).
Result<UniqueFd> open_netns_of(int pid);

}  // namespace coppice::sys
