// File-system helpers for host-side bookkeeping: small files (cgroup knobs,
// sysctls), directories, symlinks and recursive removal that never follows a
// symlink (sandbox-written trees such as an overlay upper dir may hold links
// that point anywhere on the host).
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "sys/fd.h"

namespace coppice::sys {

// Opens `path` (O_CLOEXEC is always added).
Result<UniqueFd> open_file(const std::string& path, int flags, mode_t mode = 0);
Result<UniqueFd> open_dir(const std::string& path);

// Writes `data` to an existing file (O_WRONLY, no O_CREAT, no O_TRUNC) in one
// write(2), as kernel knobs (cgroup files, /proc/sys) expect.
Status write_file(const std::string& path, std::string_view data);
// Same, relative to a directory fd.
Status write_file_at(int dirfd, const char* name, std::string_view data);
// Creates or truncates a regular file with `data`.
Status write_new_file(const std::string& path, std::string_view data, mode_t mode = 0644);

// Reads a whole (small or pseudo) file.
Result<std::string> read_file(const std::string& path);
// Reads `fd` to its end (retrying EINTR), handing each chunk to `sink`, which
// returns false to stop early. `what` names the file in errors.
Status read_chunks(int fd, std::string_view what, const std::function<bool(std::string_view)>& sink);
Result<std::string> read_file_at(int dirfd, const char* name);
// Reads `fd` to its end into a string; kTooLarge once it holds more than
// `max_bytes`.
Result<std::string> read_all_limited(int fd, std::string_view what, size_t max_bytes);
// SHA-256 (lower-case hex) of the regular file at `path`, opened without
// following a final symlink.
Result<std::string> sha256_file_hex(const std::string& path);

// mkdir that succeeds if the directory already exists.
Status make_dir(const std::string& path, mode_t mode);
// mkdir -p.
Status make_dirs(const std::string& path, mode_t mode);
Status change_owner(const std::string& path, uid_t uid, gid_t gid);
bool path_exists(const std::string& path);

Status make_symlink(const std::string& target, const std::string& link);
Result<std::string> read_symlink(const std::string& link);
// unlink that succeeds if `path` does not exist.
Status remove_file(const std::string& path);
// rmdir that succeeds if `path` does not exist.
Status remove_dir(const std::string& path);

// rename(2) that fails with kAlreadyExists instead of replacing `to`
// (renameat2 RENAME_NOREPLACE). Both must be on one file system (else EXDEV).
Status rename_noreplace(const std::string& from, const std::string& to);
// Plain rename(2), for file systems without renameat2 flags (cgroupfs:
// kernfs refuses a rename onto an existing name with EEXIST on its own).
Status rename_path(const std::string& from, const std::string& to);

// Removes `path` and everything below it (a file or symlink at `path` is
// unlinked), as sys::TreeRemover does (tree_walk.h): no recursion, bounded
// memory and fds whatever the depth, symlinks never followed, no other file
// system or mount point entered (a mount inside the tree fails the removal
// with kFailedPrecondition and is left alone). Succeeds if `path` does not
// exist. Runs to completion on the calling thread: a tree a sandbox made can
// be arbitrarily large, so callers that must not wait move it aside first
// (sandbox/ns/trash.h).
Status remove_tree(const std::string& path);

// flock(2) on an open file. lock_file waits for an exclusive lock;
// try_lock_file takes an exclusive or a shared one without waiting and
// returns false when another open file description holds a conflicting one.
// The kernel drops a process's locks when it dies, however it dies.
Status lock_file(int fd, std::string_view what);
Result<bool> try_lock_file(int fd, bool exclusive, std::string_view what);

// Names in a directory, less "." and "..".
Result<std::vector<std::string>> list_dir(const std::string& path);

// fsync(2) of a file, or of a directory with flags O_DIRECTORY (to make a
// rename or a new entry in it durable).
Status fsync_path(const std::string& path, int flags = 0);

// `dir` + "/" + `name`, with exactly one '/' between them.
std::string join_path(std::string_view dir, std::string_view name);

}  // namespace coppice::sys
