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

// As E2B's envd does for a write: the missing directories of `path` made
// by envd (root) and given to `uid`:`gid`, so a user can write a file into
// a new directory anywhere (E2B's "write to /0/x" as the default user).
// Never through a symlink or another non-directory: at the first one it
// stops and returns ok, leaving the rest to ensure_dirs() run with the
// user's own credentials (a link a sandbox user planted must not let root
// make directories for them where they could not).
Status ensure_dirs_for(const std::string& path, uid_t uid, gid_t gid);

// The parent directory of an absolute, clean path ("/" for "/a" and "/").
std::string parent_dir(const std::string& path);

// Recursive removal (the Remove RPC) is sys::TreeRemover (sys/tree_walk.h):
// never follows a symlink, bounded memory and fds at any depth, works in
// steps so the event loop can yield between them.

}  // namespace coppice::envd
