#include "sandbox/volume_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <deque>

#include "common/ids.h"
#include "sys/fd.h"
#include "sys/linux_syscalls.h"
#include "sys/tree_walk.h"

namespace coppice::sandbox::volfs {

namespace {

constexpr uint64_t kInRoot = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;

Error path_errno(int err, const std::string& path) {
  if (err == ENOENT) return Error(ErrorCode::kNotFound, "path " + path + " not found", err);
  if (err == ENOTDIR) return Error(ErrorCode::kFailedPrecondition, "a component of " + path + " is not a directory", err);
  if (err == EXDEV) return Error(ErrorCode::kInvalidArgument, "path " + path + " leaves the volume", err);
  if (err == ELOOP) return Error(ErrorCode::kInvalidArgument, "path " + path + " has too many symlinks", err);
  if (err == EEXIST) return Error(ErrorCode::kAlreadyExists, "path " + path + " exists", err);
  if (err == EISDIR) return Error(ErrorCode::kFailedPrecondition, "path " + path + " is a directory", err);
  return Error::from_errno(err, path);
}

Result<sys::UniqueFd> open_root(const std::string& root) {
  int fd = ::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return make_error(ErrorCode::kNotFound, "the volume's storage is missing", errno);
  return sys::UniqueFd(fd);
}

// `path` (clean, absolute) relative to the root: "." for the root.
std::string rel(const std::string& path) { return path == "/" ? "." : path.substr(1); }

Result<sys::UniqueFd> resolve(int root, const std::string& path, uint64_t flags) {
  int fd = sys::raw::openat2(root, rel(path).c_str(), flags | O_CLOEXEC, 0, kInRoot);
  if (fd < 0) return std::unexpected(path_errno(errno, path));
  return sys::UniqueFd(fd);
}

std::pair<std::string, std::string> split(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return {slash == 0 ? "/" : path.substr(0, slash), path.substr(slash + 1)};
}

std::string join(const std::string& dir, const std::string& name) { return dir == "/" ? "/" + name : dir + "/" + name; }

Entry entry_from(const struct stat& st, const std::string& path, const std::string& name) {
  Entry e;
  e.name = name;
  e.path = path;
  e.type = S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "directory" : S_ISLNK(st.st_mode) ? "symlink" : "unknown";
  e.mode = st.st_mode & 07777;
  e.uid = st.st_uid;
  e.gid = st.st_gid;
  e.size = st.st_size;
  e.atime = st.st_atim;
  e.mtime = st.st_mtim;
  e.ctime = st.st_ctim;
  return e;
}

// The entry `name` in directory `dir` (not following a symlink).
Result<Entry> entry_at(int dir, const std::string& name, const std::string& path) {
  struct stat st;
  if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return std::unexpected(path_errno(errno, path));
  Entry e = entry_from(st, path, name);
  if (S_ISLNK(st.st_mode)) {
    char buf[4096];
    ssize_t n = ::readlinkat(dir, name.c_str(), buf, sizeof buf);
    if (n > 0) e.target.assign(buf, static_cast<size_t>(n));
  }
  return e;
}

Status check_meta(const Meta& m) {
  for (auto* id : {&m.uid, &m.gid}) {
    if (*id && **id > 65535) return make_error(ErrorCode::kInvalidArgument, "uid and gid must be between 0 and 65535");
  }
  if (m.mode && *m.mode > 07777) return make_error(ErrorCode::kInvalidArgument, "mode must be at most 07777");
  return ok();
}

// Owner and mode of an fd we just made (or were asked to change).
Status apply_meta(int fd, const Meta& m, uint32_t def_mode, bool defaults, const std::string& path) {
  if (defaults || m.uid || m.gid) {
    uid_t uid = m.uid.value_or(kDefaultOwner);
    gid_t gid = m.gid.value_or(m.uid.value_or(kDefaultOwner));
    if (!defaults) {
      struct stat st;
      if (::fstat(fd, &st) != 0) return std::unexpected(path_errno(errno, path));
      uid = m.uid.value_or(st.st_uid);
      gid = m.gid.value_or(st.st_gid);
    }
    if (::fchown(fd, uid, gid) != 0) return std::unexpected(path_errno(errno, path));
  }
  if (defaults || m.mode) {
    // After the chown, which clears set-id bits. Set-id bits are kept off:
    // volumes are mounted nosuid anyway.
    mode_t mode = static_cast<mode_t>(m.mode.value_or(def_mode)) & 01777;
    if (::fchmod(fd, mode) != 0) return std::unexpected(path_errno(errno, path));
  }
  return ok();
}

// Makes directory `name` in `dir` with the request's owner and mode.
Status mkdir_owned(int dir, const std::string& name, const Meta& meta, const std::string& path) {
  if (::mkdirat(dir, name.c_str(), 0700) != 0) return std::unexpected(path_errno(errno, path));
  int fd = ::openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return std::unexpected(path_errno(errno, path));
  sys::UniqueFd made(fd);
  return apply_meta(fd, meta, 0755, true, path);
}

// Makes the missing directories of `path` (each resolved from the root, so
// a symlink on the way stays inside the volume).
Status make_parents(int root, const std::string& path, const Meta& meta) {
  std::string prefix;
  size_t pos = 1;
  while (pos <= path.size()) {
    size_t next = path.find('/', pos);
    if (next == std::string::npos) next = path.size();
    std::string comp = path.substr(pos, next - pos);
    std::string parent = prefix.empty() ? "/" : prefix;
    prefix += "/" + comp;
    pos = next + 1;
    int fd = sys::raw::openat2(root, rel(prefix).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC, 0, kInRoot);
    if (fd >= 0) {
      ::close(fd);
      continue;
    }
    if (errno != ENOENT) return std::unexpected(path_errno(errno, prefix));
    COPPICE_ASSIGN_OR_RETURN(auto pfd, resolve(root, parent, O_PATH | O_DIRECTORY));
    auto s = mkdir_owned(pfd.get(), comp, meta, prefix);
    if (!s && s.error().sys_errno() != EEXIST) return s;
  }
  return ok();
}

}  // namespace

Result<std::string> clean_path(std::string_view path) {
  if (path.empty() || path[0] != '/') return make_error(ErrorCode::kInvalidArgument, "path must be absolute");
  if (path.size() > 4096) return make_error(ErrorCode::kInvalidArgument, "path is longer than 4096 bytes");
  std::string out;
  size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') ++i;
    size_t j = i;
    while (j < path.size() && path[j] != '/') {
      if (static_cast<unsigned char>(path[j]) < 0x20 || path[j] == 0x7f)
        return make_error(ErrorCode::kInvalidArgument, "path has a control character");
      ++j;
    }
    if (j == i) break;
    std::string_view comp = path.substr(i, j - i);
    if (comp == "." || comp == "..") return make_error(ErrorCode::kInvalidArgument, "path must not have . or .. components");
    if (comp.size() > 255) return make_error(ErrorCode::kInvalidArgument, "a path component is longer than 255 bytes");
    out += "/";
    out += comp;
    i = j;
  }
  return out.empty() ? "/" : out;
}

Result<Entry> stat(const std::string& root, const std::string& path) {
  COPPICE_ASSIGN_OR_RETURN(auto r, open_root(root));
  if (path == "/") {
    struct stat st;
    if (::fstat(r.get(), &st) != 0) return std::unexpected(path_errno(errno, path));
    return entry_from(st, "/", "");
  }
  auto [parent, name] = split(path);
  COPPICE_ASSIGN_OR_RETURN(auto pfd, resolve(r.get(), parent, O_PATH | O_DIRECTORY));
  return entry_at(pfd.get(), name, path);
}

Result<std::vector<Entry>> list(const std::string& root, const std::string& path, int depth) {
  if (depth < 1 || depth > kMaxDepth)
    return make_error(ErrorCode::kInvalidArgument, "depth must be between 1 and " + std::to_string(kMaxDepth));
  COPPICE_ASSIGN_OR_RETURN(auto r, open_root(root));
  std::vector<Entry> out;
  // Breadth first: (directory path, its depth below `path`).
  std::deque<std::pair<std::string, int>> todo{{path, 1}};
  bool first = true;
  while (!todo.empty()) {
    auto [dir, level] = todo.front();
    todo.pop_front();
    auto fd = resolve(r.get(), dir, O_RDONLY | O_DIRECTORY);
    if (!fd) {
      if (first) return std::unexpected(fd.error());
      continue;  // changed meanwhile: skipped
    }
    first = false;
    DIR* d = ::fdopendir(fd->get());
    if (!d) return errno_error("read " + dir);
    int dfd = fd->release();
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(std::move(n));
      if (out.size() + names.size() > kMaxEntries) break;
    }
    std::sort(names.begin(), names.end());
    for (const auto& n : names) {
      if (out.size() >= kMaxEntries) break;
      auto e = entry_at(dfd, n, join(dir, n));
      if (!e) continue;
      if (e->type == "directory" && level < depth) todo.emplace_back(e->path, level + 1);
      out.push_back(std::move(*e));
    }
    ::closedir(d);
    if (out.size() >= kMaxEntries) break;
  }
  return out;
}

Result<Entry> make_dir(const std::string& root, const std::string& path, const Meta& meta, bool parents) {
  COPPICE_TRY(check_meta(meta));
  if (path == "/") {
    if (parents) return stat(root, path);
    return make_error(ErrorCode::kAlreadyExists, "path / exists");
  }
  COPPICE_ASSIGN_OR_RETURN(auto r, open_root(root));
  auto [parent, name] = split(path);
  if (parents) {
    COPPICE_TRY(make_parents(r.get(), path, meta));
    auto e = stat(root, path);
    if (e && e->type != "directory") return make_error(ErrorCode::kAlreadyExists, "path " + path + " exists and is not a directory");
    return e;
  }
  COPPICE_ASSIGN_OR_RETURN(auto pfd, resolve(r.get(), parent, O_PATH | O_DIRECTORY));
  COPPICE_TRY(mkdir_owned(pfd.get(), name, meta, path));
  return entry_at(pfd.get(), name, path);
}

Result<std::string> read_file(const std::string& root, const std::string& path) {
  COPPICE_ASSIGN_OR_RETURN(auto r, open_root(root));
  // O_NONBLOCK: a FIFO opens without waiting for a writer (and is refused below).
  COPPICE_ASSIGN_OR_RETURN(auto fd, resolve(r.get(), path, O_RDONLY | O_NONBLOCK | O_NOCTTY));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return std::unexpected(path_errno(errno, path));
  if (S_ISDIR(st.st_mode)) return make_error(ErrorCode::kInvalidArgument, "path " + path + " is a directory");
  if (!S_ISREG(st.st_mode)) return make_error(ErrorCode::kInvalidArgument, "path " + path + " is not a regular file");
  if (static_cast<uint64_t>(st.st_size) > kMaxFileBytes)
    return make_error(ErrorCode::kTooLarge, "file " + path + " is larger than " + std::to_string(kMaxFileBytes >> 20) +
                                                " MiB, the most one request reads");
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::unexpected(path_errno(errno, path));
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > kMaxFileBytes)
      return make_error(ErrorCode::kTooLarge, "file " + path + " grew past the most one request reads");
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Result<Entry> write_file(const std::string& root, const std::string& path, std::string_view data, const Meta& meta) {
  COPPICE_TRY(check_meta(meta));
  if (path == "/") return make_error(ErrorCode::kInvalidArgument, "cannot write the volume's root");
  if (data.size() > kMaxFileBytes)
    return make_error(ErrorCode::kTooLarge, "at most " + std::to_string(kMaxFileBytes >> 20) + " MiB per write");
  COPPICE_ASSIGN_OR_RETURN(auto r, open_root(root));
  auto [parent, name] = split(path);
  Meta dir_meta{meta.uid, meta.gid, std::nullopt};
  COPPICE_TRY(make_parents(r.get(), parent, dir_meta));
  COPPICE_ASSIGN_OR_RETURN(auto pfd, resolve(r.get(), parent, O_PATH | O_DIRECTORY));
  const std::string tmp = "." + name.substr(0, 200) + ".coppice-" + new_token(6);
  int fd = ::openat(pfd.get(), tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return std::unexpected(path_errno(errno, path));
  sys::UniqueFd f(fd);
  auto fail = [&](Error e) -> Result<Entry> {
    ::unlinkat(pfd.get(), tmp.c_str(), 0);
    return std::unexpected(std::move(e));
  };
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(Error::from_errno(errno, "write " + path));
    }
    done += static_cast<size_t>(n);
  }
  if (auto s = apply_meta(fd, meta, 0644, true, path); !s) return fail(s.error());
  if (::renameat(pfd.get(), tmp.c_str(), pfd.get(), name.c_str()) != 0) return fail(path_errno(errno, path));
  return entry_at(pfd.get(), name, path);
}

Result<Entry> update(const std::string& root, const std::string& path, const Meta& meta) {
  COPPICE_TRY(check_meta(meta));
  COPPICE_ASSIGN_OR_RETURN(auto r, open_root(root));
  if (path == "/") return make_error(ErrorCode::kInvalidArgument, "the volume's root keeps its owner and mode");
  auto [parent, name] = split(path);
  COPPICE_ASSIGN_OR_RETURN(auto pfd, resolve(r.get(), parent, O_PATH | O_DIRECTORY));
  COPPICE_ASSIGN_OR_RETURN(auto e, entry_at(pfd.get(), name, path));
  if (e.type == "symlink") {
    if (meta.mode) return make_error(ErrorCode::kInvalidArgument, "a symlink has no mode of its own");
    if (meta.uid || meta.gid) {
      if (::fchownat(pfd.get(), name.c_str(), meta.uid.value_or(e.uid), meta.gid.value_or(e.gid), AT_SYMLINK_NOFOLLOW) != 0)
        return std::unexpected(path_errno(errno, path));
    }
    return entry_at(pfd.get(), name, path);
  }
  int fd = ::openat(pfd.get(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) return std::unexpected(path_errno(errno, path));
  sys::UniqueFd f(fd);
  COPPICE_TRY(apply_meta(fd, meta, 0, false, path));
  return entry_at(pfd.get(), name, path);
}

Status remove(const std::string& root, const std::string& path) {
  if (path == "/") return make_error(ErrorCode::kInvalidArgument, "cannot remove the volume's root");
  COPPICE_ASSIGN_OR_RETURN(auto r, open_root(root));
  auto [parent, name] = split(path);
  COPPICE_ASSIGN_OR_RETURN(auto pfd, resolve(r.get(), parent, O_PATH | O_DIRECTORY));
  struct stat st;
  if (::fstatat(pfd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return std::unexpected(path_errno(errno, path));
  if (!S_ISDIR(st.st_mode)) {
    if (::unlinkat(pfd.get(), name.c_str(), 0) != 0) return std::unexpected(path_errno(errno, path));
    return ok();
  }
  // A tree: through the directory fd we hold (its magic link names that
  // directory exactly), so no path string is resolved again; the remover
  // follows no symlink and enters no mount.
  sys::TreeRemover rm("/proc/self/fd/" + std::to_string(pfd.get()) + "/" + name);
  for (;;) {
    auto more = rm.step(4096);
    if (!more) return std::unexpected(std::move(more.error()).context("remove " + path));
    if (!*more) return ok();
  }
}

}  // namespace coppice::sandbox::volfs
