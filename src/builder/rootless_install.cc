#include "builder/rootless_install.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <memory>
#include <unordered_set>
#include <vector>

#include "builder/build_dir.h"
#include "builder/rootless.h"
#include "sys/fd.h"
#include "sys/fsutil.h"
#include "sys/tree_copy.h"
#include "sys/tree_walk.h"
#include "templates/template_toml.h"
#include "templates/templates.h"

namespace coppice::builder {
namespace {

using Clock = std::chrono::steady_clock;

struct Shift {
  uint32_t uid = 0, gid = 0;
  SubIdRange subuid, subgid;
  uint32_t count = 0;
};

// The keys an image or Dockerfile build writes (image_build.cc), the only
// ones taken from the user's template.toml.
Result<std::string> settings_from(int from_dir, const std::string& owner) {
  sys::UniqueFd fd(::openat(from_dir, "template.toml", O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return errno_error("open template.toml");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
    return make_error(ErrorCode::kInvalidArgument, "template.toml is not a regular file");
  COPPICE_ASSIGN_OR_RETURN(auto text, sys::read_all_limited(fd.get(), "template.toml", 1 << 20));
  auto doc = templates::parse_toml(text);
  if (!doc) return std::unexpected(std::move(doc.error()).context("template.toml"));
  std::string out = "# Built rootless by " + owner + " (`coppice template build` from an image or a Dockerfile),\n"
                    "# installed with owners shifted back by `coppice template install`.\n"
                    "backend = \"ns\"\n";
  for (const char* key : {"source", "build_id", "recipe_hash", "image_digest", "user", "workdir", "start_cmd"}) {
    if (!doc->has(key)) continue;
    auto v = doc->get_string(key);
    if (!v) return std::unexpected(std::move(v.error()).context(std::string("template.toml: ") + key));
    out += std::string(key) + " = " + templates::toml_quote(*v) + "\n";
  }
  if (doc->has("env")) {
    auto env = doc->get_strings("env");
    if (!env) return std::unexpected(std::move(env.error()).context("template.toml: env"));
    out += "env = " + templates::toml_array(*env) + "\n";
  }
  return out;
}

std::string ids_text(const struct stat& st) {
  return "uid " + std::to_string(st.st_uid) + ", gid " + std::to_string(st.st_gid);
}

// A file capability as the build left it, for the file once shifted: the
// build's root made it in its namespace (version 3, root id the builder's
// uid), and it becomes the plain version 2 a build as root makes. Capabilities
// of another namespace root are dropped. nullopt: none to set.
constexpr uint32_t kCapRevisionMask = 0xFF000000;
constexpr uint32_t kCapRevision2 = 0x02000000;
constexpr uint32_t kCapRevision3 = 0x03000000;
constexpr size_t kCapV2Size = 20, kCapV3Size = 24;

uint32_t le32(const unsigned char* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

std::optional<std::string> shifted_caps(int fd, uint32_t builder_uid) {
  unsigned char b[kCapV3Size + 8];
  ssize_t n = ::fgetxattr(fd, "security.capability", b, sizeof b);
  if (n < 4) return std::nullopt;
  const uint32_t magic = le32(b);
  if ((magic & kCapRevisionMask) == kCapRevision2 && n == kCapV2Size)
    return std::string(reinterpret_cast<char*>(b), kCapV2Size);
  if ((magic & kCapRevisionMask) != kCapRevision3 || n != kCapV3Size || le32(b + 20) != builder_uid) return std::nullopt;
  const uint32_t v2 = kCapRevision2 | (magic & ~kCapRevisionMask);
  b[0] = v2 & 0xff;
  b[1] = (v2 >> 8) & 0xff;
  b[2] = (v2 >> 16) & 0xff;
  b[3] = v2 >> 24;
  return std::string(reinterpret_cast<char*>(b), kCapV2Size);
}

// Gives one entry its owner inside the build's namespace. `path` names it in
// errors. Set-id bits, which chown clears, are put back.
Status shift_entry(int dir, const char* name, const std::string& path, const Shift& s,
                   std::unordered_set<ino_t>& linked, uint64_t* count) {
  struct stat st {};
  if (::fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return errno_error("stat " + path);
  if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
    // One inode, several names: shifted once.
    if (!linked.insert(st.st_ino).second) return ok();
  }
  if ((S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) && !(S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)))
    return make_error(ErrorCode::kInvalidArgument, path + " is a device node, which a rootless build cannot have made");
  auto uid = inside_id(st.st_uid, s.uid, s.subuid, s.count);
  auto gid = inside_id(st.st_gid, s.gid, s.subgid, s.count);
  if (!uid || !gid)
    return make_error(ErrorCode::kPermissionDenied,
                      path + " is owned by " + ids_text(st) +
                          ", neither the builder's nor in its subordinate range: not the build's own file");
  if (S_ISREG(st.st_mode)) {
    // By fd: chown drops the file's capability, which is set again after.
    sys::UniqueFd f(::openat(dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!f) return errno_error("open " + path);
    const auto caps = shifted_caps(f.get(), s.uid);
    if (::fchown(f.get(), *uid, *gid) != 0) return errno_error("chown " + path);
    if ((st.st_mode & 06000) && ::fchmod(f.get(), st.st_mode & 07777) != 0) return errno_error("chmod " + path);
    if (caps && ::fsetxattr(f.get(), "security.capability", caps->data(), caps->size(), 0) != 0)
      return errno_error("set the file capability of " + path);
  } else {
    if (::fchownat(dir, name, *uid, *gid, AT_SYMLINK_NOFOLLOW) != 0) return errno_error("chown " + path);
    if (!S_ISLNK(st.st_mode) && (st.st_mode & 06000) && ::fchmodat(dir, name, st.st_mode & 07777, 0) != 0)
      return errno_error("chmod " + path);
  }
  ++*count;
  return ok();
}

// Shifts every entry of the tree `root` (root's own copy: nobody else
// writes in it while this runs), without recursion.
Result<uint64_t> shift_tree(const std::string& root, const Shift& s) {
  std::unordered_set<ino_t> linked;
  uint64_t count = 0;
  {
    const std::string parent = root.substr(0, root.rfind('/'));
    sys::UniqueFd p(::open(parent.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!p) return errno_error("open " + parent);
    const std::string name = root.substr(root.rfind('/') + 1);
    COPPICE_TRY(shift_entry(p.get(), name.c_str(), "/", s, linked, &count));
  }
  struct Frame {
    sys::UniqueFd fd;
    sys::DirReader reader;
    std::string path;
  };
  std::vector<std::unique_ptr<Frame>> stack;
  auto push = [&](int parent, const char* name, std::string path) -> Status {
    if (stack.size() >= sys::kMaxCopyDepth)
      return make_error(ErrorCode::kInvalidArgument, path + ": deeper than " + std::to_string(sys::kMaxCopyDepth));
    auto f = std::make_unique<Frame>();
    f->fd.reset(::openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!f->fd) return errno_error("open " + path);
    COPPICE_TRY(f->reader.reset(f->fd.get()));
    f->path = std::move(path);
    stack.push_back(std::move(f));
    return ok();
  };
  COPPICE_TRY(push(AT_FDCWD, root.c_str(), ""));
  while (!stack.empty()) {
    Frame& top = *stack.back();
    auto e = top.reader.next();
    if (!e) return std::unexpected(std::move(e.error()).context("read " + (top.path.empty() ? "/" : top.path)));
    if (!*e) {
      stack.pop_back();
      continue;
    }
    const std::string name((*e)->name);
    const std::string path = top.path + "/" + name;
    COPPICE_TRY(shift_entry(top.fd.get(), name.c_str(), path, s, linked, &count));
    struct stat st {};
    if (::fstatat(top.fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return errno_error("stat " + path);
    if (S_ISDIR(st.st_mode)) COPPICE_TRY(push(top.fd.get(), name.c_str(), path));
  }
  return count;
}

}  // namespace

Result<RootlessInstallResult> install_rootless_template(const RootlessInstallOptions& o) {
  const auto t0 = Clock::now();
  auto say = [&](const std::string& s) {
    if (o.progress) o.progress(s);
  };
  std::string from = o.from;
  while (from.size() > 1 && from.back() == '/') from.pop_back();
  RootlessInstallResult res;
  res.name = o.name.empty() ? from.substr(from.rfind('/') + 1) : o.name;
  if (!templates::valid_template_name(res.name))
    return make_error(ErrorCode::kInvalidArgument, "\"" + res.name + "\" is not a template name (--name)");
  const std::string step = "install " + from + " as template " + res.name;
  if (::geteuid() != 0 || in_child_user_namespace())
    return make_error(ErrorCode::kPermissionDenied, step + ": needs root (it makes files of every owner)");

  sys::UniqueFd from_fd(::open(from.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!from_fd) return std::unexpected(Error::from_errno(errno, "open " + from).context(step));
  struct stat st {};
  if (::fstat(from_fd.get(), &st) != 0) return std::unexpected(Error::from_errno(errno, "stat " + from).context(step));
  if (st.st_uid == 0)
    return make_error(ErrorCode::kInvalidArgument,
                      step + ": " + from + " is root's, not a rootless build (a build as root goes to the templates "
                             "root itself)");
  auto ids = rootless_ids_for(st.st_uid);
  if (!ids) return std::unexpected(std::move(ids.error()).context(step + ": the owner of " + from));
  if (st.st_gid != ids->gid)
    return make_error(ErrorCode::kInvalidArgument, step + ": " + from + "'s group (" + std::to_string(st.st_gid) +
                                                       ") is not " + ids->user + "'s primary group, which a rootless "
                                                       "build maps to 0");
  res.owner = ids->user;
  Shift shift{ids->uid, ids->gid, ids->subuid, ids->subgid, ids->count};
  sys::UniqueFd rootfs_fd(::openat(from_fd.get(), "rootfs", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!rootfs_fd) return std::unexpected(Error::from_errno(errno, "open " + from + "/rootfs").context(step));
  auto settings = settings_from(from_fd.get(), ids->user);
  if (!settings) return std::unexpected(std::move(settings.error()).context(step));

  res.path = sys::join_path(o.templates_root, res.name);
  COPPICE_TRY_CTX(templates::make_templates_root(o.templates_root), step);
  auto made = make_build_dir(o.templates_root, res.name, o.progress);
  if (!made) return std::unexpected(std::move(made.error()).context(step));
  const std::string tmp = *made;
  BuildDir owner(tmp);
  owner.on_error([&](std::string_view s) { say("warning: " + std::string(s)); });
  // Root's alone before anything is in it: the user shaped its set-id files.
  if (::chmod(tmp.c_str(), 0700) != 0) return std::unexpected(Error::from_errno(errno, "chmod " + tmp).context(step));
  sys::UniqueFd tmp_fd(::open(tmp.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!tmp_fd) return std::unexpected(Error::from_errno(errno, "open " + tmp).context(step));

  say("==> copying " + from + "/rootfs");
  auto copied = sys::copy_tree_at(rootfs_fd.get(), tmp_fd.get(), "rootfs");
  if (!copied) return std::unexpected(std::move(copied.error()).context(step));
  say("==> shifting owners: " + ids->user + " (" + std::to_string(ids->uid) + ") to root, " +
      std::to_string(ids->subuid.start) + ".." + std::to_string(ids->subuid.start + ids->count - 1) + " to 1.." +
      std::to_string(ids->count));
  auto shifted = shift_tree(sys::join_path(tmp, "rootfs"), shift);
  if (!shifted) return std::unexpected(std::move(shifted.error()).context(step));
  res.entries = *shifted;
  const std::string toml_path = sys::join_path(tmp, "template.toml");
  COPPICE_TRY_CTX(sys::write_new_file(toml_path, *settings, 0644), step);
  COPPICE_TRY_CTX(sys::fsync_path(toml_path, 0), step);

  say("==> installing as " + res.path);
  auto kept = install_build(tmp, o.templates_root, res.name);
  if (!kept) return std::unexpected(std::move(kept.error()).context(step));
  owner.release();
  if (auto s = sys::fsync_path(o.templates_root, O_DIRECTORY); !s) say("warning: " + s.error().to_string());
  res.replaced_tree = *kept;
  res.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return res;
}

}  // namespace coppice::builder
