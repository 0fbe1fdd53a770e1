#include "envd/users.h"

#include <charconv>
#include <fstream>
#include <sstream>

namespace coppice::envd {
namespace {

std::vector<std::string_view> split(std::string_view line, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    size_t p = line.find(sep, start);
    out.push_back(line.substr(start, p - start));
    if (p == std::string_view::npos) break;
    start = p + 1;
  }
  return out;
}

bool to_id(std::string_view s, unsigned* out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size() && !s.empty();
}

// Calls fn(fields) for each well-formed line of an /etc database file.
template <typename Fn>
void each_line(const std::string& path, size_t min_fields, Fn fn) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    auto f = split(line, ':');
    if (f.size() < min_fields) continue;
    if (fn(f)) return;
  }
}

}  // namespace

Result<User> UserDb::lookup(std::string_view name) const {
  if (name.empty()) return make_error(ErrorCode::kInvalidArgument, "empty user name");
  unsigned numeric = 0;
  bool by_id = to_id(name, &numeric);
  User u;
  bool found = false;
  each_line(etc_ + "/passwd", 7, [&](const std::vector<std::string_view>& f) {
    unsigned uid, gid;
    if (!to_id(f[2], &uid) || !to_id(f[3], &gid)) return false;
    if (f[0] == name || (by_id && uid == numeric)) {
      u.name = f[0];
      u.uid = uid;
      u.gid = gid;
      u.home = f[5].empty() ? "/" : std::string(f[5]);
      u.shell = f[6].empty() ? "/bin/sh" : std::string(f[6]);
      found = true;
      return true;
    }
    return false;
  });
  if (!found) return make_error(ErrorCode::kNotFound, "user " + std::string(name) + " does not exist");
  u.groups.push_back(u.gid);
  each_line(etc_ + "/group", 4, [&](const std::vector<std::string_view>& f) {
    unsigned gid;
    if (!to_id(f[2], &gid) || gid == u.gid) return false;
    for (auto member : split(f[3], ','))
      if (member == u.name) {
        u.groups.push_back(gid);
        break;
      }
    return false;
  });
  return u;
}

std::string UserDb::user_name(uid_t uid) const {
  std::string out;
  each_line(etc_ + "/passwd", 3, [&](const std::vector<std::string_view>& f) {
    unsigned id;
    if (to_id(f[2], &id) && id == uid) {
      out = f[0];
      return true;
    }
    return false;
  });
  return out.empty() ? std::to_string(uid) : out;
}

std::string UserDb::group_name(gid_t gid) const {
  std::string out;
  each_line(etc_ + "/group", 3, [&](const std::vector<std::string_view>& f) {
    unsigned id;
    if (to_id(f[2], &id) && id == gid) {
      out = f[0];
      return true;
    }
    return false;
  });
  return out.empty() ? std::to_string(gid) : out;
}

}  // namespace coppice::envd
