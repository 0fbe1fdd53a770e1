// EntryInfo of filesystem.Filesystem: what envd reports about one path, and
// the depth-limited listing behind ListDir.
//
// The fields follow E2B's envd exactly, because the SDK's tests compare them:
//  * a symlink is reported with the type and permission bits of its target
//    (FILE or DIRECTORY; UNSPECIFIED when the target is missing or is some
//    other kind of file), its own size and mtime, and symlinkTarget set to the
//    fully resolved target (the link's own path when it cannot be resolved);
//  * `mode` holds only the nine permission bits;
//  * `permissions` is the mode string of Go's os.FileMode ("-rw-r--r--",
//    "drwxr-xr-x", "Lrwxrwxrwx" for a symlink, "dtrwxrwxrwx" for /tmp).
#pragma once

#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/result.h"
#include "envd/users.h"

namespace coppice::envd {

enum class FileType { kUnspecified = 0, kFile = 1, kDirectory = 2, kSymlink = 3 };

// "FILE_TYPE_FILE" and so on.
std::string_view file_type_name(FileType t);

struct EntryInfo {
  std::string name;  // the last path component
  FileType type = FileType::kUnspecified;
  std::string path;  // as the caller named it (absolute)
  int64_t size = 0;  // of the entry itself (lstat), a symlink's being its target's length
  uint32_t mode = 0; // permission bits (0777) of the entry, or of a symlink's target
  std::string permissions;
  uid_t uid = 0;
  gid_t gid = 0;
  struct timespec mtime {};
  std::optional<std::string> symlink_target;
  std::map<std::string, std::string> metadata;  // xattrs user.e2b.<key>, prefix stripped
};

// The mode string Go's os.FileMode.String() gives for a stat(2) st_mode: type
// letters from "dLDpSugct" (or '-' when there are none) then rwxrwxrwx.
std::string go_mode_string(mode_t st_mode);

// Builds an entry from lstat data. `target` is stat(2) of a symlink's target
// (nullptr when the entry is no symlink or the target cannot be reached) and
// `resolved` the link's fully resolved path. Pure: no syscalls.
EntryInfo entry_from_stat(const std::string& path, const struct stat& lst, const struct stat* target,
                          const std::optional<std::string>& resolved);

// lstat's `path` and fills every field, metadata included (best effort: a
// failure to read xattrs leaves metadata empty). kNotFound when `path` does
// not exist.
Result<EntryInfo> stat_entry(const std::string& path);

// The user.e2b.* extended attributes of `path` (following symlinks), prefix
// stripped; entries that are not valid UTF-8 are skipped. Empty when the file
// system has no xattrs.
std::map<std::string, std::string> read_metadata(const std::string& path);

// Owner and group names for uids and gids, looked up once per listing (the
// user database reads /etc/passwd on every lookup).
class OwnerNames {
 public:
  explicit OwnerNames(const UserDb& db) : db_(db) {}
  const std::string& user(uid_t uid);
  const std::string& group(gid_t gid);

 private:
  const UserDb& db_;
  std::unordered_map<uid_t, std::string> users_;
  std::unordered_map<gid_t, std::string> groups_;
};

// The proto3 JSON of an EntryInfo: camelCase, zero values omitted, size as a
// string, modifiedTime in RFC 3339.
nlohmann::json entry_json(const EntryInfo& e, OwnerNames& names);

// "/a" + "b" = "/a/b"; "/" + "b" = "/b".
std::string join_path(std::string_view dir, std::string_view name);

// Lists a directory tree depth-first in lexical order, each directory's
// entries before the next sibling, as envd's ListDir (Go's WalkDir) does:
// level 1 is the directory's own entries; directories at a level below
// `depth` are descended into, symlinks never. Entries report their path under
// `requested` (the path as the caller named it), while the walk reads
// `resolved` (the same directory with symlinks resolved). Entries that vanish
// during the walk are skipped; a subdirectory that cannot be read (the walk
// runs with the requesting user's credentials) is listed but not descended
// into. Works in steps so a caller on an event loop can yield between them.
//
// Bounded whatever the tree: no recursion; names are read (and sorted) one
// directory at a time and count against `max_entries`, past which the walk
// fails with kResourceExhausted (the whole listing is one response, so its
// size is what has to be bounded); a path longer than PATH_MAX fails with
// kInvalidArgument (ENAMETOOLONG), which bounds the depth. One path string is
// kept for the whole stack of directories.
class TreeWalker {
 public:
  static constexpr size_t kMaxEntries = 100000;
  TreeWalker(std::string requested, std::string resolved, int depth, size_t max_entries = kMaxEntries);
  // Appends at most `budget` entries to `out`. Returns true while there is
  // more to list, false once done.
  Result<bool> step(std::vector<EntryInfo>& out, size_t budget);

 private:
  struct Frame {
    size_t rel_len;  // length of this directory's path relative to the root
    int level;       // of the entries in `names`
    std::vector<std::string> names;
    size_t next = 0;
  };
  Status push(size_t rel_len, int level);

  std::string requested_;
  int depth_;
  size_t max_entries_;
  size_t names_read_ = 0;
  std::vector<Frame> stack_;
  std::string rel_;  // the directory being read, relative to the root ("" for the root)
  bool started_ = false;
  std::string root_;
};

// Sorted names in a directory, less "." and ".."; kResourceExhausted when
// there are more than `max` (read in bounded batches up to that point).
Result<std::vector<std::string>> sorted_names(const std::string& dir, size_t max = SIZE_MAX);

}  // namespace coppice::envd
