#include "sys/fsutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "common/sha256.h"
#include "sys/tree_walk.h"

namespace coppice::sys {

Result<UniqueFd> open_file(const std::string& path, int flags, mode_t mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) return errno_error("open " + path);
  return UniqueFd(fd);
}

Result<UniqueFd> open_dir(const std::string& path) {
  return open_file(path, O_RDONLY | O_DIRECTORY);
}

namespace {
Status write_all(int fd, std::string_view data, const char* what) {
  ssize_t n = ::write(fd, data.data(), data.size());
  if (n < 0) return errno_error(std::string("write ") + what);
  if (static_cast<size_t>(n) != data.size()) return make_error(ErrorCode::kInternal, std::string("short write to ") + what);
  return ok();
}

Result<std::string> read_all(int fd, const char* what) {
  std::string out;
  auto append = [&out](std::string_view chunk) {
    out.append(chunk);
    return true;
  };
  if (auto s = read_chunks(fd, what, append); !s) return std::unexpected(std::move(s.error()));
  return out;
}
}  // namespace

Status read_chunks(int fd, std::string_view what, const std::function<bool(std::string_view)>& sink) {
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error("read " + std::string(what));
    }
    if (n == 0) return ok();
    if (!sink(std::string_view(buf, static_cast<size_t>(n)))) return ok();
  }
}

Result<std::string> read_all_limited(int fd, std::string_view what, size_t max_bytes) {
  std::string text;
  bool too_large = false;
  auto append = [&](std::string_view chunk) {
    text.append(chunk);
    too_large = text.size() > max_bytes;
    return !too_large;
  };
  COPPICE_TRY_CTX(read_chunks(fd, what, append), std::string(what));
  if (too_large) {
    return make_error(ErrorCode::kTooLarge, std::string(what) + " is over " + std::to_string(max_bytes) + " bytes");
  }
  return text;
}

Result<std::string> sha256_file_hex(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return errno_error("open " + path);
  Sha256 h;
  auto hash = [&h](std::string_view chunk) {
    h.update(chunk.data(), chunk.size());
    return true;
  };
  COPPICE_TRY_CTX(read_chunks(fd.get(), path, hash), "hash " + path);
  return to_hex(h.final());
}

Status write_file(const std::string& path, std::string_view data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno_error("open " + path);
  UniqueFd f(fd);
  return write_all(fd, data, path.c_str());
}

Status write_file_at(int dirfd, const char* name, std::string_view data) {
  int fd = ::openat(dirfd, name, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno_error(std::string("open ") + name);
  UniqueFd f(fd);
  return write_all(fd, data, name);
}

Status write_new_file(const std::string& path, std::string_view data, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) return errno_error("create " + path);
  UniqueFd f(fd);
  return write_all(fd, data, path.c_str());
}

Status rename_noreplace(const std::string& from, const std::string& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) != 0) {
    return errno_error("rename " + from + " to " + to);
  }
  return ok();
}

Status rename_path(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) return errno_error("rename " + from + " to " + to);
  return ok();
}

Result<std::string> read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno_error("open " + path);
  UniqueFd f(fd);
  return read_all(fd, path.c_str());
}

Result<std::string> read_file_at(int dirfd, const char* name) {
  int fd = ::openat(dirfd, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno_error(std::string("open ") + name);
  UniqueFd f(fd);
  return read_all(fd, name);
}

Status make_dir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) return errno_error("mkdir " + path);
  return ok();
}

Status make_dirs(const std::string& path, mode_t mode) {
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      std::string part = path.substr(0, i);
      if (::mkdir(part.c_str(), mode) != 0 && errno != EEXIST) return errno_error("mkdir " + part);
    }
  }
  return ok();
}

Status change_owner(const std::string& path, uid_t uid, gid_t gid) {
  if (::lchown(path.c_str(), uid, gid) != 0) return errno_error("chown " + path);
  return ok();
}

bool path_exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

Status make_symlink(const std::string& target, const std::string& link) {
  if (::symlink(target.c_str(), link.c_str()) != 0) return errno_error("symlink " + link);
  return ok();
}

Result<std::string> read_symlink(const std::string& link) {
  char buf[4096];
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf);
  if (n < 0) return errno_error("readlink " + link);
  if (static_cast<size_t>(n) == sizeof buf) return make_error(ErrorCode::kTooLarge, "readlink " + link + ": too long");
  return std::string(buf, static_cast<size_t>(n));
}

Status remove_file(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return errno_error("unlink " + path);
  return ok();
}

Status remove_dir(const std::string& path) {
  if (::rmdir(path.c_str()) != 0 && errno != ENOENT) return errno_error("rmdir " + path);
  return ok();
}

Status remove_tree(const std::string& path) {
  TreeRemover remover(path);
  for (;;) {
    auto more = remover.step(4096);
    if (!more) return std::unexpected(std::move(more.error()));
    if (!*more) return ok();
  }
}

Status lock_file(int fd, std::string_view what) {
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) return errno_error("lock " + std::string(what));
  }
  return ok();
}

Result<bool> try_lock_file(int fd, bool exclusive, std::string_view what) {
  if (::flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0) return true;
  if (errno == EWOULDBLOCK) return false;
  return errno_error("lock " + std::string(what));
}

Result<std::vector<std::string>> list_dir(const std::string& path) {
  DIR* d = ::opendir(path.c_str());
  if (!d) return errno_error("opendir " + path);
  std::vector<std::string> out;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view n(e->d_name);
    if (n == "." || n == "..") continue;
    out.emplace_back(n);
  }
  ::closedir(d);
  return out;
}

Status fsync_path(const std::string& path, int flags) {
  UniqueFd fd(::open(path.c_str(), flags | O_RDONLY | O_CLOEXEC));
  if (!fd) return errno_error("open " + path);
  if (::fsync(fd.get()) != 0) return errno_error("fsync " + path);
  return ok();
}

std::string join_path(std::string_view dir, std::string_view name) {
  std::string out(dir);
  if (out.empty() || out.back() != '/') out += '/';
  while (!name.empty() && name.front() == '/') name.remove_prefix(1);
  out += name;
  return out;
}

}  // namespace coppice::sys
