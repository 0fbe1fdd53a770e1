#include "envd/fs_ops.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vector>

namespace coppice::envd {

std::string parent_dir(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return "/";
  return path.substr(0, slash);
}

Status ensure_dirs(const std::string& path) {
  // Every prefix, outermost first: "/a", "/a/b", "/a/b/c".
  std::vector<std::string> prefixes;
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') prefixes.push_back(path.substr(0, i));
  }
  for (const auto& p : prefixes) {
    struct stat st;
    if (::stat(p.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) return make_error(ErrorCode::kInvalidArgument, "path is a file: " + p, ENOTDIR);
      continue;
    }
    if (errno != ENOENT) return errno_error("stat " + p);
    if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST) return errno_error("create directory " + p);
  }
  return ok();
}

Status ensure_dirs_for(const std::string& path, uid_t uid, gid_t gid) {
  if (path.empty() || path[0] != '/') return make_error(ErrorCode::kInvalidArgument, "not an absolute path: " + path);
  int fd = ::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno_error("open /");
  size_t pos = 1;
  Status result = ok();
  while (pos < path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string::npos) end = path.size();
    const std::string name = path.substr(pos, end - pos);
    pos = end + 1;
    if (name.empty() || name == ".") continue;
    if (name == "..") break;  // left to the user's own walk
    int next = ::openat(fd, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0 && errno == ENOENT) {
      if (::mkdirat(fd, name.c_str(), 0755) != 0 && errno != EEXIST) {
        result = errno_error("create directory " + path.substr(0, end));
        break;
      }
      if (::fchownat(fd, name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
        result = errno_error("chown directory " + path.substr(0, end));
        break;
      }
      next = ::openat(fd, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (next < 0) break;  // a symlink, a file, no permission: the user's walk decides
    ::close(fd);
    fd = next;
  }
  ::close(fd);
  return result;
}

}  // namespace coppice::envd
