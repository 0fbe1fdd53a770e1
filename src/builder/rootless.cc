#include "builder/rootless.h"

#include <pwd.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "builder/run_tool.h"
#include "common/constants.h"
#include "common/strings.h"
#include "sys/fd.h"
#include "sys/fsutil.h"
#include "sys/spawn.h"

namespace coppice::builder {
namespace {

bool parse_u32(const std::string& s, uint32_t* out) {
  if (s.empty() || s.size() > 10) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  unsigned long long v = std::strtoull(s.c_str(), nullptr, 10);
  if (v > UINT32_MAX) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

std::string read_or_empty(const char* path) {
  auto t = sys::read_file(path);
  return t ? *t : std::string();
}

}  // namespace

std::optional<SubIdRange> find_subid_range(std::string_view text, const std::string& name, uint32_t id) {
  for (const auto& line : split_string(std::string(text), '\n')) {
    if (line.empty() || line.front() == '#') continue;
    auto f = split_string(line, ':');
    if (f.size() != 3) continue;
    uint32_t owner = 0;
    const bool match = f[0] == name || (parse_u32(f[0], &owner) && owner == id);
    SubIdRange r;
    if (!match || !parse_u32(f[1], &r.start) || !parse_u32(f[2], &r.count) || r.count == 0) continue;
    if (uint64_t{r.start} + r.count > uint64_t{UINT32_MAX}) continue;
    return r;
  }
  return std::nullopt;
}

std::optional<uint32_t> host_id(uint32_t inside, uint32_t self, SubIdRange range, uint32_t count) {
  if (inside == 0) return self;
  if (inside <= count) return range.start + (inside - 1);
  return std::nullopt;
}

std::optional<uint32_t> inside_id(uint32_t host, uint32_t self, SubIdRange range, uint32_t count) {
  if (host == self) return 0;
  if (host >= range.start && uint64_t{host} < uint64_t{range.start} + count) return host - range.start + 1;
  return std::nullopt;
}

Result<RootlessIds> rootless_ids_for(uid_t uid) {
  RootlessIds ids;
  ids.uid = uid;
  std::vector<char> buf(16384);
  struct passwd pw {};
  struct passwd* found = nullptr;
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) != 0 || !found)
    return make_error(ErrorCode::kFailedPrecondition,
                      "uid " + std::to_string(uid) + " has no account in the passwd database, so no subordinate ids");
  ids.user = pw.pw_name;
  ids.gid = pw.pw_gid;
  const std::string how = "a rootless build maps the template's owners (root, user 1000, the image's accounts) "
                          "to subordinate ids of " + ids.user +
                          ", and a single id cannot hold them all; as root: usermod --add-subuids 100000-165535 "
                          "--add-subgids 100000-165535 " + ids.user + " (any free range of 65536), or build as root";
  auto u = find_subid_range(read_or_empty("/etc/subuid"), ids.user, uid);
  if (!u) return make_error(ErrorCode::kFailedPrecondition, ids.user + " has no range in /etc/subuid: " + how);
  auto g = find_subid_range(read_or_empty("/etc/subgid"), ids.user, ids.gid);
  if (!g) return make_error(ErrorCode::kFailedPrecondition, ids.user + " has no range in /etc/subgid: " + how);
  ids.subuid = *u;
  ids.subgid = *g;
  ids.count = std::min({u->count, g->count, kMaxRootlessIds});
  if (ids.count < 1000)
    return make_error(ErrorCode::kFailedPrecondition,
                      ids.user + "'s subordinate ranges hold " + std::to_string(ids.count) +
                          " ids, too few for the account `user` (uid 1000) every template has: " + how);
  const char* host_path = std::getenv("PATH");
  const std::string path = host_path ? host_path : std::string(kDefaultPath);
  for (const char* tool : {"newuidmap", "newgidmap"}) {
    if (sys::find_in_path(tool, path + ":/usr/bin:/usr/sbin").empty())
      return make_error(ErrorCode::kFailedPrecondition,
                        std::string("a rootless build needs ") + tool + " (Debian's uidmap package) on the host");
  }
  return ids;
}

std::string rootless_templates_root() {
  if (const char* x = std::getenv("XDG_DATA_HOME"); x && x[0] == '/') return std::string(x) + "/coppice/templates";
  // $HOME when it is the user's own (`runuser -u NAME` keeps root's), else
  // the account's home.
  std::string home;
  struct stat st {};
  if (const char* h = std::getenv("HOME"); h && h[0] == '/' && ::stat(h, &st) == 0 && st.st_uid == ::getuid()) home = h;
  if (home.empty()) {
    std::vector<char> buf(16384);
    struct passwd pw {};
    struct passwd* found = nullptr;
    if (::getpwuid_r(::getuid(), &pw, buf.data(), buf.size(), &found) == 0 && found && found->pw_dir) home = found->pw_dir;
  }
  return (home.empty() ? std::string("/nonexistent") : home) + "/.local/share/coppice/templates";
}

bool in_child_user_namespace() {
  std::string map = read_or_empty("/proc/self/uid_map");
  auto f = split_string(map, ' ');
  std::vector<std::string> words;
  for (auto& w : f) {
    while (!w.empty() && (w.back() == '\n')) w.pop_back();
    if (!w.empty()) words.push_back(w);
  }
  return !(words.size() == 3 && words[0] == "0" && words[1] == "0" && words[2] == "4294967295");
}

Status enter_build_userns(const RootlessIds& ids) {
  const char* host_path = std::getenv("PATH");
  const std::string path = (host_path ? std::string(host_path) : std::string(kDefaultPath)) + ":/usr/bin:/usr/sbin";
  const std::string newuidmap = sys::find_in_path("newuidmap", path);
  const std::string newgidmap = sys::find_in_path("newgidmap", path);
  if (newuidmap.empty() || newgidmap.empty())
    return make_error(ErrorCode::kFailedPrecondition, "a rootless build needs newuidmap and newgidmap (Debian's uidmap)");
  const pid_t self = ::getpid();
  auto go = sys::make_pipe();
  if (!go) return std::unexpected(std::move(go.error()).context("user namespace"));
  auto report = sys::make_pipe();
  if (!report) return std::unexpected(std::move(report.error()).context("user namespace"));
  const std::vector<std::string> uid_argv = {newuidmap, std::to_string(self), "0", std::to_string(ids.uid), "1", "1",
                                             std::to_string(ids.subuid.start), std::to_string(ids.count)};
  const std::vector<std::string> gid_argv = {newgidmap, std::to_string(self), "0", std::to_string(ids.gid), "1", "1",
                                             std::to_string(ids.subgid.start), std::to_string(ids.count)};
  const pid_t helper = ::fork();
  if (helper < 0) return errno_error("fork the id-mapping helper");
  if (helper == 0) {
    // The helper: stays in our user namespace and maps the new one once the
    // parent has made it. Its outcome goes back as text on `report`.
    go->second.reset();
    report->first.reset();
    char c = 0;
    ssize_t n;
    do n = ::read(go->first.get(), &c, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1) ::_exit(1);
    for (const auto* argv : {&uid_argv, &gid_argv}) {
      ToolRun t;
      t.argv = *argv;
      std::string out;
      t.progress = [&](std::string_view line) { out.append(line).append("\n"); };
      if (auto s = run_tool(t); !s) {
        const std::string msg = s.error().message();
        (void)!::write(report->second.get(), msg.data(), msg.size());
        ::_exit(1);
      }
    }
    ::_exit(0);
  }
  go->first.reset();
  report->second.reset();
  Status made = ok();
  if (::unshare(CLONE_NEWUSER) != 0) {
    const int e = errno;
    made = make_error(ErrorCode::kFailedPrecondition,
                      std::string("this kernel does not let ") + ids.user +
                          " make a user namespace (unshare(CLONE_NEWUSER): " + std::strerror(e) +
                          "; see user.max_user_namespaces), which a rootless build needs",
                      e);
  } else {
    (void)!::write(go->second.get(), "g", 1);
  }
  go->second.reset();
  std::string msg;
  char buf[512];
  for (;;) {
    ssize_t n = ::read(report->first.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    msg.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  while (::waitpid(helper, &status, 0) < 0 && errno == EINTR) {
  }
  if (!made) return made;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return make_error(ErrorCode::kFailedPrecondition,
                      "map the build's user namespace (" + ids.user + "'s uid and its /etc/subuid range): " +
                          (msg.empty() ? std::string("the helper failed") : msg));
  if (::getuid() != 0 || ::getgid() != 0)
    return make_error(ErrorCode::kInternal, "the build's user namespace is mapped, but this process is not its root");
  // skopeo (containers/image) takes a euid of 0 for host root and reads
  // root's files (/var/lib/containers/sigstore, /run/containers/0); these
  // are how podman tells it that it runs rootless in a namespace of its own,
  // so it uses the user's configuration instead.
  ::setenv("_CONTAINERS_USERNS_CONFIGURED", "done", 1);
  ::setenv("_CONTAINERS_ROOTLESS_UID", std::to_string(ids.uid).c_str(), 1);
  ::setenv("_CONTAINERS_ROOTLESS_GID", std::to_string(ids.gid).c_str(), 1);
  return ok();
}

}  // namespace coppice::builder
