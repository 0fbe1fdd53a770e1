// The files of a volume as the volume content API serves them (E2B's
// /volumecontent/{volumeID}/...): stat, list, mkdir, read, write, chmod/chown
// and remove, on the host, inside one volume's directory.
//
// The volume's contents are shaped by sandboxes, so every path is resolved
// from an fd of the volume's root with RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
// | RESOLVE_NO_XDEV: ".." and absolute symlinks stay inside the volume and
// nothing leads onto another file system. Reads take regular files only
// (never a FIFO a sandbox made, which would block the reader). Listings
// walk breadth-first with bounded depth and entries, never recursing.
//
// Owners are the volume's canonical ids (as sandboxes see them, ns/volumes.h):
// 0-65535. New files belong to kDefaultOwner unless the request names one.
//
// Errors: kNotFound for a missing path, kInvalidArgument for a bad path or
// argument, kAlreadyExists, kFailedPrecondition (not a directory / not a
// file), and EDQUOT/ENOSPC (the volume's cap) kept as errno.
// Blocking: run on a worker thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace coppice::sandbox::volfs {

// Owner of what the API creates without uid/gid: the templates' `user`.
inline constexpr uint32_t kDefaultOwner = 1000;
// Largest file read or written in one request.
inline constexpr uint64_t kMaxFileBytes = 64ull << 20;
// A listing stops at this depth and this many entries.
inline constexpr int kMaxDepth = 16;
inline constexpr size_t kMaxEntries = 10000;

struct Entry {
  std::string name;    // last component ("" for the root)
  std::string path;    // absolute inside the volume
  std::string type;    // "file" | "directory" | "symlink" | "unknown"
  std::string target;  // a symlink's target, as stored
  uint32_t mode = 0;   // permission bits (07777)
  uint32_t uid = 0, gid = 0;
  int64_t size = 0;
  struct timespec atime {}, mtime {}, ctime {};
};

struct Meta {
  std::optional<uint32_t> uid, gid, mode;
};

// Checks a volume path: absolute, at most 4096 bytes, no NUL or control
// characters, no "." or ".." components. Returns it without repeated or
// trailing slashes.
Result<std::string> clean_path(std::string_view path);

Result<Entry> stat(const std::string& root, const std::string& path);
// The entries below a directory, `depth` levels deep (1: its children).
Result<std::vector<Entry>> list(const std::string& root, const std::string& path, int depth);
// `parents`: make missing parents, and an existing directory is no error.
Result<Entry> make_dir(const std::string& root, const std::string& path, const Meta& meta, bool parents);
// At most kMaxFileBytes (kTooLarge beyond).
Result<std::string> read_file(const std::string& root, const std::string& path);
// Creates or replaces the file (missing parents are made, as directories of
// the same owner); written to a temporary file and renamed into place.
Result<Entry> write_file(const std::string& root, const std::string& path, std::string_view data, const Meta& meta);
Result<Entry> update(const std::string& root, const std::string& path, const Meta& meta);
// A file, a symlink (not what it names) or a whole directory tree.
Status remove(const std::string& root, const std::string& path);

}  // namespace coppice::sandbox::volfs
