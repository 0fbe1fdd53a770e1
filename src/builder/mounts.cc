#include "builder/mounts.h"

#include <dirent.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <set>

#include "sys/fsutil.h"

namespace coppice::builder {
namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3') {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Field `n` (0-based) of each line of a mountinfo text.
std::vector<std::string> field(std::string_view mountinfo, size_t n) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < mountinfo.size()) {
    size_t e = mountinfo.find('\n', i);
    if (e == std::string_view::npos) e = mountinfo.size();
    std::string_view line = mountinfo.substr(i, e - i);
    i = e + 1;
    size_t pos = 0;
    for (size_t k = 0; k < n && pos != std::string_view::npos; ++k) {
      pos = line.find(' ', pos);
      if (pos != std::string_view::npos) ++pos;
    }
    if (pos == std::string_view::npos) continue;
    size_t end = line.find(' ', pos);
    out.push_back(unescape(line.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos)));
  }
  return out;
}

bool at_or_below(const std::string& path, const std::string& dir) {
  return path == dir || (path.starts_with(dir) && path[dir.size()] == '/');
}


}  // namespace

std::vector<std::string> mount_points_under(std::string_view mountinfo, const std::string& dir) {
  std::vector<std::string> out;
  for (auto& mp : field(mountinfo, 4)) {
    if (at_or_below(mp, dir)) out.push_back(std::move(mp));
  }
  std::sort(out.begin(), out.end(), [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return out;
}

Status unmount_under(const std::string& dir) {
  auto info = sys::read_file("/proc/self/mountinfo");
  if (!info) return std::unexpected(std::move(info.error()));
  for (const auto& mp : mount_points_under(*info, dir)) {
    if (::umount2(mp.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0 && errno != EINVAL && errno != ENOENT)
      return errno_error("unmount " + mp);
  }
  return ok();
}

Status remove_build_tree(const std::string& dir) {
  COPPICE_TRY_CTX(unmount_under(dir), "remove " + dir);
  auto info = sys::read_file("/proc/self/mountinfo");
  if (!info) return std::unexpected(std::move(info.error()).context("remove " + dir));
  auto left = mount_points_under(*info, dir);
  if (!left.empty())
    return make_error(ErrorCode::kFailedPrecondition, "remove " + dir + ": " + left.front() + " is still mounted");
  return sys::remove_tree(dir);
}

}  // namespace coppice::builder
