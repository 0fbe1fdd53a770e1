#include "envd/fs_entry.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/xattr.h>

#include <algorithm>

#include "envd/protojson.h"
#include "sys/fd.h"
#include "sys/tree_walk.h"

namespace coppice::envd {

using json = nlohmann::json;

namespace {

constexpr std::string_view kMetadataPrefix = "user.e2b.";

FileType type_of(mode_t m) {
  if (S_ISREG(m)) return FileType::kFile;
  if (S_ISDIR(m)) return FileType::kDirectory;
  if (S_ISLNK(m)) return FileType::kSymlink;
  return FileType::kUnspecified;
}

std::string_view base_name(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  if (path == "/") return path;
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; k < n; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 0x2) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += n;
  }
  return true;
}

}  // namespace

std::string_view file_type_name(FileType t) {
  switch (t) {
    case FileType::kFile: return "FILE_TYPE_FILE";
    case FileType::kDirectory: return "FILE_TYPE_DIRECTORY";
    case FileType::kSymlink: return "FILE_TYPE_SYMLINK";
    case FileType::kUnspecified: break;
  }
  return "FILE_TYPE_UNSPECIFIED";
}

std::string go_mode_string(mode_t m) {
  std::string out;
  // Go's order of type and special bits: d a l T L D p S u g c t ?; a, l, T
  // and ? never come from stat(2).
  if (S_ISDIR(m)) out += 'd';
  if (S_ISLNK(m)) out += 'L';
  if (S_ISBLK(m) || S_ISCHR(m)) out += 'D';
  if (S_ISFIFO(m)) out += 'p';
  if (S_ISSOCK(m)) out += 'S';
  if (m & S_ISUID) out += 'u';
  if (m & S_ISGID) out += 'g';
  if (S_ISCHR(m)) out += 'c';
  if (m & S_ISVTX) out += 't';
  if (out.empty()) out += '-';
  static constexpr char kRwx[] = "rwxrwxrwx";
  for (int i = 0; i < 9; ++i) out += (m & (1u << (8 - i))) ? kRwx[i] : '-';
  return out;
}

EntryInfo entry_from_stat(const std::string& path, const struct stat& lst, const struct stat* target,
                          const std::optional<std::string>& resolved) {
  EntryInfo e;
  e.name = std::string(base_name(path));
  e.path = path;
  e.size = static_cast<int64_t>(lst.st_size);
  e.permissions = go_mode_string(lst.st_mode);
  e.uid = lst.st_uid;
  e.gid = lst.st_gid;
  e.mtime = lst.st_mtim;
  if (S_ISLNK(lst.st_mode)) {
    e.symlink_target = resolved.value_or(path);
    if (target) {
      FileType t = type_of(target->st_mode);
      e.type = t == FileType::kSymlink ? FileType::kUnspecified : t;
      e.mode = target->st_mode & 0777;
    }
  } else {
    e.type = type_of(lst.st_mode);
    e.mode = lst.st_mode & 0777;
  }
  return e;
}

Result<EntryInfo> stat_entry(const std::string& path) {
  struct stat lst;
  if (::lstat(path.c_str(), &lst) != 0) return errno_error("lstat " + path);
  struct stat target;
  const struct stat* tp = nullptr;
  std::optional<std::string> resolved;
  if (S_ISLNK(lst.st_mode)) {
    char buf[PATH_MAX];
    if (::realpath(path.c_str(), buf)) resolved = std::string(buf);
    if (::stat(path.c_str(), &target) == 0) tp = &target;
  }
  EntryInfo e = entry_from_stat(path, lst, tp, resolved);
  e.metadata = read_metadata(path);
  return e;
}

std::map<std::string, std::string> read_metadata(const std::string& path) {
  std::map<std::string, std::string> out;
  ssize_t n = ::listxattr(path.c_str(), nullptr, 0);
  if (n <= 0) return out;
  std::string names(static_cast<size_t>(n), '\0');
  n = ::listxattr(path.c_str(), names.data(), names.size());
  if (n <= 0) return out;
  names.resize(static_cast<size_t>(n));
  for (size_t i = 0; i < names.size();) {
    std::string name(names.c_str() + i);
    i += name.size() + 1;
    if (name.size() <= kMetadataPrefix.size() || name.compare(0, kMetadataPrefix.size(), kMetadataPrefix) != 0)
      continue;
    ssize_t vn = ::getxattr(path.c_str(), name.c_str(), nullptr, 0);
    if (vn < 0) continue;
    std::string value(static_cast<size_t>(vn), '\0');
    if (vn > 0) {
      vn = ::getxattr(path.c_str(), name.c_str(), value.data(), value.size());
      if (vn < 0) continue;
      value.resize(static_cast<size_t>(vn));
    }
    std::string key = name.substr(kMetadataPrefix.size());
    // EntryInfo.metadata is a map<string,string>: proto strings must be UTF-8,
    // and a sandbox user may set arbitrary bytes with setfattr.
    if (!valid_utf8(key) || !valid_utf8(value)) continue;
    out.emplace(std::move(key), std::move(value));
  }
  return out;
}

const std::string& OwnerNames::user(uid_t uid) {
  auto it = users_.find(uid);
  if (it == users_.end()) it = users_.emplace(uid, db_.user_name(uid)).first;
  return it->second;
}

const std::string& OwnerNames::group(gid_t gid) {
  auto it = groups_.find(gid);
  if (it == groups_.end()) it = groups_.emplace(gid, db_.group_name(gid)).first;
  return it->second;
}

json entry_json(const EntryInfo& e, OwnerNames& names) {
  json j = json::object();
  if (!e.name.empty()) j["name"] = e.name;
  if (e.type != FileType::kUnspecified) j["type"] = file_type_name(e.type);
  if (!e.path.empty()) j["path"] = e.path;
  if (e.size != 0) j["size"] = pj::int64(e.size);
  if (e.mode != 0) j["mode"] = e.mode;
  if (!e.permissions.empty()) j["permissions"] = e.permissions;
  if (const auto& o = names.user(e.uid); !o.empty()) j["owner"] = o;
  if (const auto& g = names.group(e.gid); !g.empty()) j["group"] = g;
  if (e.mtime.tv_sec != 0 || e.mtime.tv_nsec != 0) j["modifiedTime"] = pj::timestamp(e.mtime);
  // An optional field: present whenever set, even when empty.
  if (e.symlink_target) j["symlinkTarget"] = *e.symlink_target;
  if (!e.metadata.empty()) j["metadata"] = e.metadata;
  return j;
}

std::string join_path(std::string_view dir, std::string_view name) {
  std::string out(dir);
  if (out.empty() || out.back() != '/') out += '/';
  out += name;
  return out;
}

Result<std::vector<std::string>> sorted_names(const std::string& dir, size_t max) {
  sys::UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return errno_error("open directory " + dir);
  sys::DirReader reader;
  if (auto s = reader.reset(fd.get()); !s) return std::unexpected(std::move(s.error()).context(dir));
  std::vector<std::string> out;
  for (;;) {
    auto e = reader.next();
    if (!e) return std::unexpected(std::move(e.error()).context(dir));
    if (!*e) break;
    if (out.size() >= max) {
      return make_error(ErrorCode::kResourceExhausted, "directory " + dir + " holds too many entries to list (more than " +
                                                           std::to_string(max) + ")");
    }
    out.emplace_back((*e)->name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

TreeWalker::TreeWalker(std::string requested, std::string resolved, int depth, size_t max_entries)
    : requested_(std::move(requested)), depth_(depth), max_entries_(max_entries), root_(std::move(resolved)) {}

Status TreeWalker::push(size_t rel_len, int level) {
  const std::string dir = rel_len == 0 ? root_ : join_path(root_, std::string_view(rel_).substr(0, rel_len));
  auto names = sorted_names(dir, max_entries_ - names_read_);
  if (!names) {
    if (names.error().code() == ErrorCode::kResourceExhausted) {
      return make_error(ErrorCode::kResourceExhausted,
                        "more than " + std::to_string(max_entries_) + " entries to list; ask for a smaller depth");
    }
    return std::unexpected(names.error());
  }
  names_read_ += names->size();
  stack_.push_back(Frame{rel_len, level, std::move(*names), 0});
  return ok();
}

Result<bool> TreeWalker::step(std::vector<EntryInfo>& out, size_t budget) {
  if (!started_) {
    started_ = true;
    if (auto s = push(0, 1); !s) return std::unexpected(s.error());
  }
  size_t added = 0;
  while (!stack_.empty()) {
    if (added >= budget) return true;
    Frame& f = stack_.back();
    if (f.next >= f.names.size()) {
      stack_.pop_back();
      continue;
    }
    // rel_ holds the deepest directory pushed so far; this frame's own path
    // is a prefix of it.
    rel_.resize(f.rel_len);
    if (!rel_.empty()) rel_ += '/';
    rel_ += f.names[f.next++];
    const int level = f.level;
    std::string disk = join_path(root_, rel_);
    if (disk.size() >= PATH_MAX || requested_.size() + 1 + rel_.size() >= PATH_MAX) {
      return make_error(ErrorCode::kInvalidArgument,
                        "an entry at level " + std::to_string(level) + " has a path longer than " +
                            std::to_string(PATH_MAX) + " bytes",
                        ENAMETOOLONG);
    }
    auto e = stat_entry(disk);
    if (!e) {
      if (e.error().code() == ErrorCode::kNotFound) continue;  // removed while we walk
      return std::unexpected(std::move(e.error()));
    }
    e->path = join_path(requested_, rel_);
    // A symlink reports its target's type but is never descended into.
    bool descend = level < depth_ && e->type == FileType::kDirectory && !e->symlink_target;
    out.push_back(std::move(*e));
    ++added;
    if (descend) {
      // `f` may dangle after push_back on the stack.
      if (auto s = push(rel_.size(), level + 1); !s) {
        // Gone meanwhile, or one the requesting user may not read: listed
        // but not descended into (as `ls -R` goes on past it).
        if (s.error().code() == ErrorCode::kNotFound || s.error().code() == ErrorCode::kPermissionDenied) continue;
        return std::unexpected(s.error());
      }
    }
  }
  return false;
}

}  // namespace coppice::envd
