#include "sys/cgroupfs.h"

#include <sstream>
#include <vector>

#include "sys/fsutil.h"

namespace coppice::sys::cgroupfs {

namespace {
std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i <= s.size()) {
    size_t j = s.find(sep, i);
    if (j == std::string_view::npos) j = s.size();
    out.push_back(s.substr(i, j - i));
    i = j + 1;
  }
  return out;
}
}  // namespace

Mounts parse_mountinfo(std::string_view text) {
  Mounts m;
  for (std::string_view line : split(text, '\n')) {
    if (line.empty()) continue;
    // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
    auto fields = split(line, ' ');
    size_t dash = 0;
    while (dash < fields.size() && fields[dash] != "-") ++dash;
    if (dash < 5 || dash + 3 > fields.size()) continue;
    std::string_view fstype = fields[dash + 1];
    std::string mountpoint(fields[4]);
    if (fields[3] != "/") continue;  // a bind of a sub-cgroup, not a hierarchy root
    if (fstype == "cgroup2") {
      if (m.v2.empty()) m.v2 = mountpoint;
    } else if (fstype == "cgroup") {
      for (std::string_view opt : split(fields[dash + 3], ',')) {
        if (opt == "rw" || opt == "ro" || opt.empty() || opt.find('=') != std::string_view::npos) continue;
        static constexpr std::string_view kNonControllers[] = {"noprefix", "clone_children", "xattr",
                                                               "cpuset_v2_mode", "favordynmods", "nsdelegate"};
        bool skip = false;
        for (auto n : kNonControllers) skip |= opt == n;
        if (!skip && !m.v1.contains(std::string(opt))) m.v1[std::string(opt)] = mountpoint;
      }
    }
  }
  return m;
}

Result<Mounts> discover() {
  auto text = read_file("/proc/self/mountinfo");
  if (!text) return std::unexpected(text.error());
  Mounts m = parse_mountinfo(*text);
  if (!m.v2.empty()) {
    auto c = read_file(m.v2 + "/cgroup.controllers");
    if (c) {
      while (!c->empty() && (c->back() == '\n' || c->back() == ' ')) c->pop_back();
      m.v2_controllers = *c;
    }
  }
  return m;
}

}  // namespace coppice::sys::cgroupfs
