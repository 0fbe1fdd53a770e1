#include "envd/fs_ops.h"

#include <sys/stat.h>
#include <unistd.h>

#include "envd/fs_entry.h"

namespace coppice::envd {

std::string parent_dir(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return "/";
  return path.substr(0, slash);
}

Status ensure_dirs(const std::string& path, uid_t uid, gid_t gid) {
  // Every prefix, outermost first: "/a", "/a/b", "/a/b/c".
  std::vector<std::string> prefixes;
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') prefixes.push_back(path.substr(0, i));
  }
  for (const auto& p : prefixes) {
    struct stat st;
    if (::stat(p.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) return make_error(ErrorCode::kInvalidArgument, "path is a file: " + p);
      continue;
    }
    if (errno != ENOENT) return errno_error("stat " + p);
    if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST) return errno_error("create directory " + p);
    // Also when another process made it first (EEXIST): it may not have
    // chown'ed it yet, and chown is idempotent.
    if (::chown(p.c_str(), uid, gid) != 0) return errno_error("chown " + p);
  }
  return ok();
}

Result<bool> TreeRemover::step(size_t budget) {
  if (!started_) {
    started_ = true;
    struct stat st;
    if (::lstat(root_.c_str(), &st) != 0) {
      if (errno == ENOENT) return false;
      return errno_error("lstat " + root_);
    }
    if (!S_ISDIR(st.st_mode)) {
      if (::unlink(root_.c_str()) != 0 && errno != ENOENT) return errno_error("remove " + root_);
      return false;
    }
    auto names = sorted_names(root_);
    if (!names) return std::unexpected(names.error());
    stack_.push_back(Frame{root_, std::move(*names), 0});
  }
  size_t done = 0;
  while (!stack_.empty()) {
    if (done >= budget) return true;
    Frame& f = stack_.back();
    ++done;
    if (f.next >= f.names.size()) {
      if (::rmdir(f.dir.c_str()) != 0 && errno != ENOENT) return errno_error("remove directory " + f.dir);
      stack_.pop_back();
      continue;
    }
    std::string child = join_path(f.dir, f.names[f.next++]);
    struct stat st;
    if (::lstat(child.c_str(), &st) != 0) {
      if (errno == ENOENT) continue;
      return errno_error("lstat " + child);
    }
    if (S_ISDIR(st.st_mode)) {
      auto names = sorted_names(child);
      if (!names) {
        if (names.error().code() == ErrorCode::kNotFound) continue;
        return std::unexpected(names.error());
      }
      stack_.push_back(Frame{std::move(child), std::move(*names), 0});  // `f` dangles from here
      continue;
    }
    if (::unlink(child.c_str()) != 0 && errno != ENOENT) return errno_error("remove " + child);
  }
  return false;
}

}  // namespace coppice::envd
