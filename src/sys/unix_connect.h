// Connecting to a unix socket whose directory an untrusted party can write to
// (a sandbox's run/ dir holding envd.sock).
#pragma once

#include <string>

#include "common/result.h"
#include "sys/fd.h"

namespace coppice::sys {

// Connects a SOCK_STREAM (CLOEXEC, blocking) to the socket at `path` without
// following a symlink in its last component: a plain connect(2) would follow
// one planted by the sandbox to any socket on the host (docker.sock, ...). The
// file is opened O_PATH|O_NOFOLLOW, checked to be a socket, and connected to
// through /proc/self/fd/N. Earlier components must not be writable by the
// untrusted party.
Result<UniqueFd> connect_unix_nofollow(const std::string& path);

}  // namespace coppice::sys
