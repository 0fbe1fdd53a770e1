#include "envd/paths.h"

#include <vector>

namespace coppice::envd {

std::string clean_path(std::string_view path) {
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view p = path.substr(i, j - i);
    if (p.empty() || p == ".") {
    } else if (p == "..") {
      if (!parts.empty()) parts.pop_back();
    } else {
      parts.push_back(p);
    }
    i = j + 1;
  }
  std::string out;
  for (auto p : parts) {
    out += '/';
    out += p;
  }
  return out.empty() ? "/" : out;
}

Status check_no_nul(std::string_view path, std::string_view what) {
  if (path.find('\0') != std::string_view::npos) {
    return make_error(ErrorCode::kInvalidArgument, std::string(what) + " contains a NUL byte");
  }
  return ok();
}

Result<std::string> resolve_user_path(std::string_view path, std::string_view home,
                                      std::string_view default_workdir) {
  if (auto s = check_no_nul(path, "path"); !s) return std::unexpected(std::move(s.error()));
  std::string p(path.empty() ? default_workdir : path);
  if (auto s = check_no_nul(p, "default workdir"); !s) return std::unexpected(std::move(s.error()));
  if (!p.empty() && p[0] == '~') {
    if (p.size() > 1 && p[1] != '/') {
      return make_error(ErrorCode::kInvalidArgument,
                        "cannot expand '" + p + "': only the requesting user's own home (~) is expanded");
    }
    p = std::string(home) + "/" + p.substr(1);
  } else if (p.empty() || p[0] != '/') {
    p = std::string(home) + "/" + p;
  }
  return clean_path(p);
}

}  // namespace coppice::envd
