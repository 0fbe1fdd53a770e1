// Directory creation for filesystem.Filesystem.
//
// envd runs as root; what it creates on a user's behalf must belong to that
// user, as in E2B. Callers run these with the user's credentials
// (sys/run_as.h), so the kernel checks each step and makes the user the owner.
#pragma once

#include <sys/types.h>

#include <string>

#include "common/result.h"

namespace coppice::envd {

// mkdir -p with 0755 directories (less the umask), owned by whoever runs it;
// existing directories are left as they are. A component that exists but is
// no directory is kInvalidArgument ("path is a file: ...", ENOTDIR).
Status ensure_dirs(const std::string& path);

// The parent directory of an absolute, clean path ("/" for "/a" and "/").
std::string parent_dir(const std::string& path);

// Recursive removal (the Remove RPC) is sys::TreeRemover (sys/tree_walk.h):
// never follows a symlink, bounded memory and fds at any depth, works in
// steps so the event loop can yield between them.

}  // namespace coppice::envd
