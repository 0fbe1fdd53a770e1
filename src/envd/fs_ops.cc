#include "envd/fs_ops.h"

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

}  // namespace coppice::envd
