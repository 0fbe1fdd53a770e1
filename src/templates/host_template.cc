#include "templates/host_template.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "common/constants.h"
#include "common/log.h"
#include "common/sha256.h"
#include "templates/template_toml.h"
#include "templates/templates.h"
#include "sys/fd.h"
#include "sys/fsutil.h"

namespace coppice::templates {
namespace {

namespace fs = std::filesystem;

// The unprivileged user every sandbox runs its commands as (E2B's "user").
constexpr uid_t kUserUid = 1000;
constexpr gid_t kUserGid = 1000;

// Host files larger than this are not copied: nothing on the list below comes
// near it, and a surprise multi-gigabyte file must not fill the state disk.
constexpr off_t kMaxCopySize = 16 << 20;
// Deepest directory nesting copied from the host.
constexpr int kMaxCopyDepth = 8;

// Host /etc entries copied into the template because programs need them and
// they say nothing secret about the host. Directories are copied recursively,
// through the same filters as files (see copy_entry). Missing entries are
// skipped. `python3*` directories and the JDKs' `java-*` (security
// providers, jvm.cfg: jshell will not start without them) are added at run
// time.
constexpr const char* kHostEtcCopies[] = {
    "ld.so.cache",           // the dynamic loader's library index
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",          // symlinks such as editor -> /usr/bin/vim.basic
    "ssl/certs",             // public CA certificates (symlinks into /usr/share)
    "ssl/openssl.cnf",
    "ca-certificates.conf",
    "environment",
    "locale.alias",
    "localtime",
    "timezone",
    "mime.types",
    "protocols",
    "services",
    "networks",
    "host.conf",
    "gai.conf",
    "shells",
    "inputrc",
    "debian_version",
    "os-release",
    "profile",
    "bash.bashrc",
    "matplotlibrc",          // Debian's matplotlib refuses to import without it
    "R",                     // R's Renviron and ldpaths (/usr/lib/R/etc links here): R will not start without them
};

// Top-level names that merged-usr systems make symlinks into /usr.
constexpr const char* kMergedUsrNames[] = {"bin", "sbin", "lib", "lib32", "lib64", "libx32"};

constexpr const char* kPasswd =
    "root:x:0:0:root:/root:/bin/bash\n"
    "user:x:1000:1000::/home/user:/bin/bash\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";

// Debian's static system groups, without the ones that grant privilege on a
// real host (sudo, shadow, wheel, admin).
constexpr const char* kGroup =
    "root:x:0:\n"
    "daemon:x:1:\n"
    "bin:x:2:\n"
    "sys:x:3:\n"
    "adm:x:4:\n"
    "tty:x:5:\n"
    "disk:x:6:\n"
    "lp:x:7:\n"
    "mail:x:8:\n"
    "news:x:9:\n"
    "uucp:x:10:\n"
    "man:x:12:\n"
    "proxy:x:13:\n"
    "kmem:x:15:\n"
    "dialout:x:20:\n"
    "fax:x:21:\n"
    "voice:x:22:\n"
    "cdrom:x:24:\n"
    "floppy:x:25:\n"
    "tape:x:26:\n"
    "audio:x:29:\n"
    "dip:x:30:\n"
    "www-data:x:33:\n"
    "backup:x:34:\n"
    "operator:x:37:\n"
    "list:x:38:\n"
    "irc:x:39:\n"
    "src:x:40:\n"
    "utmp:x:43:\n"
    "video:x:44:\n"
    "sasl:x:45:\n"
    "plugdev:x:46:\n"
    "staff:x:50:\n"
    "games:x:60:\n"
    "users:x:100:user\n"
    "nogroup:x:65534:\n"
    "user:x:1000:\n";


// Local files only: no systemd, LDAP, SSS or mDNS modules that would talk to
// host services. `dns` is glibc's built-in resolver, which reads only
// /etc/resolv.conf above; it is listed so that name lookups work unchanged
// once a sandbox has a resolver.
constexpr const char* kNsswitch =
    "passwd:    files\n"
    "group:     files\n"
    "shadow:    files\n"
    "gshadow:   files\n"
    "hosts:     files dns\n"
    "networks:  files\n"
    "protocols: files\n"
    "services:  files\n"
    "ethers:    files\n"
    "rpc:       files\n"
    "netgroup:  files\n";

// sudo for `user` without a password, as on E2B's base template: the
// sandbox's root is an unprivileged host uid in the sandbox's own user
// namespace, so this grants nothing that commands run as root through the
// API do not have already. The host's own sudoers are never copied.
// !fqdn: sudo does not look the host name up (the sandbox's id, in no
// /etc/hosts, and no resolver to ask), which it would warn about on every
// call; no rule here names a host.
constexpr const char* kSudoers =
    "Defaults\tenv_reset\n"
    "Defaults\t!fqdn\n"
    "Defaults\tsecure_path=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\n"
    "root\tALL=(ALL:ALL) ALL\n"
    "@includedir /etc/sudoers.d\n";
constexpr const char* kSudoersUser = "user ALL=(ALL:ALL) NOPASSWD: ALL\n";

// The template's only PAM policy: every service (sudo, su, runuser, ...)
// falls back to "other". No account has a password, so nobody authenticates
// with one; root switches users without one (su, runuser); sudo's NOPASSWD
// rule above needs no authentication step. Only modules of libpam-modules,
// which sudo and login depend on, and nothing that talks to host services.
constexpr const char* kPamOther =
    "auth\tsufficient\tpam_rootok.so\n"
    "auth\trequired\tpam_deny.so\n"
    "account\trequired\tpam_permit.so\n"
    "password\trequired\tpam_deny.so\n"
    "session\trequired\tpam_permit.so\n";

// Used when the host has no /etc/profile of its own.
constexpr const char* kFallbackProfile =
    "PATH=\"" COPPICE_DEFAULT_PATH "\"\n"
    "export PATH\n"
    "if [ \"${PS1-}\" ] && [ \"${BASH-}\" ] && [ \"$BASH\" != \"/bin/sh\" ] && [ -f /etc/bash.bashrc ]; then\n"
    "  . /etc/bash.bashrc\n"
    "fi\n";


std::string base_name(std::string_view path) {
  size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

// mkdir with an exact mode (the umask is undone by chmod). An existing
// directory is accepted and given the mode.
Status make_dir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) return errno_error("mkdir " + path);
  if (::chmod(path.c_str(), mode) != 0) return errno_error("chmod " + path);
  return ok();
}

Status make_symlink(const std::string& target, const std::string& path) {
  if (::symlink(target.c_str(), path.c_str()) != 0) return errno_error("symlink " + path);
  return ok();
}

Status write_all(int fd, const char* data, size_t len, const std::string& path) {
  while (len > 0) {
    ssize_t n = ::write(fd, data, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error("write " + path);
    }
    data += n;
    len -= static_cast<size_t>(n);
  }
  return ok();
}

// Creates `path` (which must not exist) with exactly `content` and `mode`.
Status write_file(const std::string& path, std::string_view content, mode_t mode) {
  sys::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
  if (!fd) return errno_error("create " + path);
  COPPICE_TRY_CTX(write_all(fd.get(), content.data(), content.size(), path), "write file");
  if (::fchmod(fd.get(), mode) != 0) return errno_error("chmod " + path);
  return ok();
}

// Copies one regular host file, deciding on the opened descriptor (not on an
// earlier lstat) so a file swapped in between cannot slip through.
Status copy_file(const std::string& src, const std::string& dst) {
  sys::UniqueFd in(::open(src.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!in) {
    if (errno == ENOENT || errno == EACCES || errno == ELOOP) return ok();  // gone or not ours
    return errno_error("open " + src);
  }
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) return errno_error("stat " + src);
  if (!S_ISREG(st.st_mode) || !(st.st_mode & S_IROTH)) return ok();
  if (st.st_size > kMaxCopySize) {
    COPPICE_LOG(warn) << "host template: not copying " << src << ": larger than "
                      << (kMaxCopySize >> 20) << " MiB";
    return ok();
  }
  // Never carry set-id bits or write access for others into the template.
  const mode_t mode = st.st_mode & 0755;
  sys::UniqueFd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
  if (!out) return errno_error("create " + dst);
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(in.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error("read " + src);
    }
    if (n == 0) break;
    COPPICE_TRY_CTX(write_all(out.get(), buf, static_cast<size_t>(n), dst), "copy " + src);
  }
  if (::fchmod(out.get(), mode) != 0) return errno_error("chmod " + dst);
  return ok();
}

std::vector<std::string> sorted_entries(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    names.push_back(it->path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Copies the host entry `src` to `dst`, recursively for directories.
// Filters, in order: names that are secrets by convention are skipped;
// symlinks are recreated with the same target (they resolve inside the
// sandbox, where only the template's own files exist); directories and files
// that other users may not read are skipped, because a host keeps its secrets
// exactly that way; anything but a directory, file or symlink is skipped.
Status copy_entry(const std::string& src, const std::string& dst, int depth) {
  if (is_host_secret_name(base_name(src))) return ok();
  struct stat st {};
  if (::lstat(src.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == EACCES) return ok();
    return errno_error("lstat " + src);
  }
  if (S_ISLNK(st.st_mode)) {
    std::string target(static_cast<size_t>(st.st_size > 0 ? st.st_size : PATH_MAX), '\0');
    ssize_t n = ::readlink(src.c_str(), target.data(), target.size());
    if (n < 0) return errno_error("readlink " + src);
    target.resize(static_cast<size_t>(n));
    return make_symlink(target, dst);
  }
  if (S_ISDIR(st.st_mode)) {
    if ((st.st_mode & (S_IROTH | S_IXOTH)) != (S_IROTH | S_IXOTH)) return ok();
    if (depth >= kMaxCopyDepth) return ok();
    COPPICE_TRY_CTX(make_dir(dst, st.st_mode & 0755), "copy " + src);
    for (const auto& name : sorted_entries(src)) {
      COPPICE_TRY_CTX(copy_entry(sys::join_path(src, name), sys::join_path(dst, name), depth + 1), "copy " + src);
    }
    return ok();
  }
  if (S_ISREG(st.st_mode)) return copy_file(src, dst);
  return ok();
}

// A directory that is removed with its contents unless release()d: a failed
// build leaves nothing behind.
class TreeOwner {
 public:
  explicit TreeOwner(std::string path) : path_(std::move(path)) {}
  ~TreeOwner() {
    if (path_.empty()) return;
    std::error_code ec;
    fs::remove_all(path_, ec);  // does not follow symlinks
    if (ec) {
      COPPICE_LOG(warn) << "host template: remove " << path_ << ": " << ec.message();
    }
  }
  TreeOwner(const TreeOwner&) = delete;
  TreeOwner& operator=(const TreeOwner&) = delete;
  void release() { path_.clear(); }

 private:
  std::string path_;
};

// Removes .base.tmp-<pid> directories whose builder is gone (a crash
// mid-build), and our own pid's leftover from an earlier failed call.
void remove_stale_builds(const std::string& root) {
  const std::string prefix = ".base.tmp-";
  for (const auto& name : sorted_entries(root)) {
    if (!name.starts_with(prefix)) continue;
    char* end = nullptr;
    long pid = std::strtol(name.c_str() + prefix.size(), &end, 10);
    if (end == name.c_str() + prefix.size() || *end != '\0' || pid <= 0) continue;
    bool dead = pid == ::getpid() || (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH);
    if (!dead) continue;
    std::error_code ec;
    fs::remove_all(sys::join_path(root, name), ec);
  }
}

// Appends one line per entry under `dir` (sorted, recursive) to `out`: path,
// type, permissions, owner and the SHA-256 of a file's content or a link's
// target. Times are left out so the same content gives the same id.
Status describe_tree(const std::string& dir, const std::string& rel, std::string& out) {
  for (const auto& name : sorted_entries(dir)) {
    const std::string path = sys::join_path(dir, name);
    const std::string rel_path = rel + "/" + name;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return errno_error("lstat " + path);
    std::string kind;
    std::string digest = "-";
    if (S_ISLNK(st.st_mode)) {
      kind = "l";
      char target[PATH_MAX];
      ssize_t n = ::readlink(path.c_str(), target, sizeof target);
      if (n < 0) return errno_error("readlink " + path);
      digest = sha256_hex(std::string_view(target, static_cast<size_t>(n)));
    } else if (S_ISDIR(st.st_mode)) {
      kind = "d";
    } else if (S_ISREG(st.st_mode)) {
      kind = "f";
      auto d = sys::sha256_file_hex(path);
      if (!d) return std::unexpected(std::move(d.error()));
      digest = std::move(*d);
    } else {
      kind = "?";
    }
    char mode[16];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    out += rel_path + "\t" + kind + "\t" + mode + "\t" + std::to_string(st.st_uid) + ":" +
           std::to_string(st.st_gid) + "\t" + digest + "\n";
    if (S_ISDIR(st.st_mode)) COPPICE_TRY_CTX(describe_tree(path, rel_path, out), "describe");
  }
  return ok();
}

struct TreeLayout {
  std::vector<std::string> ro_binds;  // host paths bound read-only at the same path
};

// Mount points, merged-usr symlinks and the home directory.
Result<TreeLayout> build_skeleton(const std::string& rootfs, const std::string& host_root) {
  TreeLayout layout;
  layout.ro_binds.push_back("/usr");

  struct Dir {
    const char* path;
    mode_t mode;
  };
  static constexpr Dir kDirs[] = {
      {"usr", 0755},     {"proc", 0555},    {"sys", 0555},     {"dev", 0755},
      {"tmp", 01777},    {"run", 0755},     {"mnt", 0755},     {"opt", 0755},
      {"srv", 0755},     {"var", 0755},     {"var/tmp", 01777}, {"var/log", 0755},
      {"var/cache", 0755}, {"var/lib", 0755}, {"root", 0700},    {"home", 0755},
      {"home/user", 0755}, {"etc", 0755},
  };
  for (const auto& d : kDirs) COPPICE_TRY_CTX(make_dir(sys::join_path(rootfs, d.path), d.mode), "skeleton");
  // Debian's compatibility links; both resolve inside the sandbox.
  COPPICE_TRY_CTX(make_symlink("../run", sys::join_path(rootfs, "var/run")), "skeleton");
  COPPICE_TRY_CTX(make_symlink("../run/lock", sys::join_path(rootfs, "var/lock")), "skeleton");

  const std::string home = sys::join_path(rootfs, "home/user");
  if (::chown(home.c_str(), kUserUid, kUserGid) != 0) {
    if (errno == EPERM && ::geteuid() != 0) {
      COPPICE_LOG(warn) << "host template: not root, leaving " << home
                        << " owned by uid " << ::geteuid() << " instead of 1000";
    } else {
      return errno_error("chown " + home);
    }
  }

  // Merged /usr: recreate the host's /bin -> usr/bin style links. A host that
  // still has real /bin, /lib... gets them bound read-only instead.
  for (const char* name : kMergedUsrNames) {
    const std::string host_path = sys::join_path(host_root, name);
    struct stat st {};
    if (::lstat(host_path.c_str(), &st) != 0) continue;  // absent on this host
    if (S_ISLNK(st.st_mode)) {
      char target[PATH_MAX];
      ssize_t n = ::readlink(host_path.c_str(), target, sizeof target);
      if (n < 0) return errno_error("readlink " + host_path);
      std::string_view t(target, static_cast<size_t>(n));
      const std::string want = std::string("usr/") + name;
      if (t == want || t == "/" + want) {
        COPPICE_TRY_CTX(make_symlink(want, sys::join_path(rootfs, name)), "skeleton");
      } else {
        COPPICE_LOG(warn) << "host template: /" << name << " -> " << t
                          << " is not a merged-usr link; leaving it out";
      }
    } else if (S_ISDIR(st.st_mode)) {
      COPPICE_TRY_CTX(make_dir(sys::join_path(rootfs, name), 0755), "skeleton");
      layout.ro_binds.push_back(std::string("/") + name);
    }
  }
  return layout;
}

// The template's own /etc: identity files written here, harmless host
// configuration copied through copy_entry's filters.
Status build_etc(const std::string& rootfs, const std::string& host_root) {
  const std::string etc = sys::join_path(rootfs, "etc");
  const std::string host_etc = sys::join_path(host_root, "etc");
  struct Generated {
    const char* name;
    const char* content;
    mode_t mode;
  };
  const Generated generated[] = {
      {"passwd", kPasswd, 0644},          {"group", kGroup, 0644},
      {"hosts", kSandboxHosts, 0644},            {"resolv.conf", kSandboxResolvConf, 0644},
      {"hostname", kSandboxHostname, 0644},      {"nsswitch.conf", kNsswitch, 0644},
      // A fresh, empty id: systemd-style tools treat it as "not yet set",
      // and no sandbox learns (or shares) the host's.
      {"machine-id", "", 0444},
      // sudo refuses sudoers files that others may write; 0440 is what it
      // installs.
      {"sudoers", kSudoers, 0440},              {"sudoers.d/user", kSudoersUser, 0440},
      {"pam.d/other", kPamOther, 0644},
  };
  for (const char* dir : {"sudoers.d", "pam.d"}) COPPICE_TRY_CTX(make_dir(sys::join_path(etc, dir), 0755), "write /etc");
  for (const auto& g : generated) {
    COPPICE_TRY_CTX(write_file(sys::join_path(etc, g.name), g.content, g.mode), "write /etc");
  }
  COPPICE_TRY_CTX(make_symlink("../proc/self/mounts", sys::join_path(etc, "mtab")), "write /etc");

  std::vector<std::string> copies(std::begin(kHostEtcCopies), std::end(kHostEtcCopies));
  for (const auto& name : sorted_entries(host_etc)) {
    if (name.starts_with("python3") || name.starts_with("java-")) copies.push_back(name);
  }
  for (const auto& rel : copies) {
    // Parents of nested entries (etc/ssl for ssl/certs).
    for (size_t slash = rel.find('/'); slash != std::string::npos; slash = rel.find('/', slash + 1)) {
      COPPICE_TRY_CTX(make_dir(sys::join_path(etc, rel.substr(0, slash)), 0755), "write /etc");
    }
    COPPICE_TRY_CTX(copy_entry(sys::join_path(host_etc, rel), sys::join_path(etc, rel), 0), "write /etc");
  }

  for (const char* name : {"profile", "bash.bashrc"}) {
    struct stat st {};
    if (::lstat(sys::join_path(etc, name).c_str(), &st) == 0) continue;
    COPPICE_TRY_CTX(write_file(sys::join_path(etc, name), name == std::string_view("profile") ? kFallbackProfile : "",
                               0644),
                    "write /etc");
  }
  return ok();
}



// True if `dir` holds a finished template.
bool is_complete(const std::string& dir) {
  struct stat st {};
  return ::lstat(sys::join_path(dir, "template.toml").c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Whether a complete `base` is a host template generated by an older
// coppiced (no `generation` key, or a smaller one). A `base` built from a
// recipe, or one whose description cannot be read, is never touched.
bool generated_by_older(const std::string& dir) {
  auto doc = parse_toml_file(sys::join_path(dir, "template.toml"));
  if (!doc) return false;
  auto source = doc->get_string("source");
  if (!source || *source != "host") return false;
  auto g = doc->get_int("generation");
  return (g ? *g : 1) < kHostTemplateGeneration;
}

}  // namespace

bool is_host_secret_name(std::string_view name) {
  return name.starts_with("shadow") || name.starts_with("gshadow") || name.starts_with("sudoers") ||
         name.starts_with("ssh") || name == "private" || name == "machine-id" ||
         name.ends_with(".key") || name.ends_with("_key") || name.starts_with("opasswd") ||
         name == "credstore" || name == "credstore.encrypted";
}

Result<std::string> ensure_host_template(const std::string& templates_root,
                                         const HostTemplateOptions& opts) {
  // Builds share the name .base.tmp-<pid>, so two threads of one process
  // must take turns; other processes are kept apart by the final rename.
  static std::mutex build_mu;
  std::lock_guard lock(build_mu);

  const std::string step = "create host template in " + templates_root;
  const std::string final_dir = sys::join_path(templates_root, kHostTemplateName);
  // A template generated by an older coppiced (without sudo for `user`,
  // say) is generated again; the old tree is retired, not removed, since
  // sandboxes that outlived the restart may run on it.
  bool replace = false;
  if (is_complete(final_dir)) {
    if (!generated_by_older(final_dir)) return final_dir;
    replace = true;
  }
  if (!replace) {
    struct stat st {};
    if (::lstat(final_dir.c_str(), &st) == 0) {
      return make_error(ErrorCode::kFailedPrecondition,
                        step + ": " + final_dir + " exists but holds no template.toml");
    }
  }

  COPPICE_TRY_CTX(make_templates_root(templates_root), step);
  remove_stale_builds(templates_root);

  const std::string tmp = sys::join_path(templates_root, ".base.tmp-" + std::to_string(::getpid()));
  if (::mkdir(tmp.c_str(), 0755) != 0) return std::unexpected(Error::from_errno(errno, "mkdir " + tmp).context(step));
  TreeOwner owner(tmp);
  COPPICE_TRY_CTX(make_dir(tmp, 0755), step);
  const std::string rootfs = sys::join_path(tmp, "rootfs");
  COPPICE_TRY_CTX(make_dir(rootfs, 0755), step);

  auto layout = build_skeleton(rootfs, opts.host_root);
  if (!layout) return std::unexpected(std::move(layout.error()).context(step));
  COPPICE_TRY_CTX(build_etc(rootfs, opts.host_root), step);

  // The build id names exactly what was generated: the tree and the settings.
  std::string description = "ro_binds " + toml_array(layout->ro_binds) + "\n";
  COPPICE_TRY_CTX(describe_tree(rootfs, "", description), step);
  const std::string build_id = sha256_hex(description);

  const std::string toml =
      "# The zero-build template: the host's own programs (read-only binds)\n"
      "# under a private root with its own /etc. Remove this directory to have\n"
      "# it rebuilt from the host.\n"
      "backend = \"ns\"\n"
      "ro_binds = " + toml_array(layout->ro_binds) + "\n"
      "cpu_count = 1\n"
      "memory_mb = 512\n"
      "source = \"host\"\n"
      "generation = " + std::to_string(kHostTemplateGeneration) + "\n"
      "build_id = " + toml_quote(build_id) + "\n";
  const std::string toml_path = sys::join_path(tmp, "template.toml");
  COPPICE_TRY_CTX(write_file(toml_path, toml, 0644), step);
  // The tree is derived and can be rebuilt, so only the description that
  // marks it complete is forced to disk before the rename publishes it.
  COPPICE_TRY_CTX(sys::fsync_path(toml_path, 0), step);

  if (replace) {
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) != 0)
      return std::unexpected(Error::from_errno(errno, "swap " + tmp + " with " + final_dir).context(step));
    owner.release();  // tmp now holds the old tree
    COPPICE_TRY_CTX(sys::make_dirs(retired_root(templates_root), 0700), step);
    const std::string old = retired_path(templates_root, std::string(kHostTemplateName));
    if (::rename(tmp.c_str(), old.c_str()) != 0)
      return std::unexpected(Error::from_errno(errno, "move the replaced tree to " + old).context(step));
    COPPICE_LOG(info) << "host template generated again (it came from an older coppiced); the old tree waits in "
                      << old << " for its last sandbox";
  } else if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
    int err = errno;
    if ((err == EEXIST || err == ENOTEMPTY) && is_complete(final_dir)) {
      return final_dir;  // another process finished first; ours is discarded
    }
    return std::unexpected(Error::from_errno(err, "rename to " + final_dir).context(step));
  }
  owner.release();
  if (auto r = sys::fsync_path(templates_root, O_DIRECTORY); !r) {
    COPPICE_LOG(warn) << "host template: " << r.error().to_string();
  }
  COPPICE_LOG(info) << "host template ready at " << final_dir << " (build " << build_id.substr(0, 12)
                    << ", binds " << toml_array(layout->ro_binds) << ")";
  return final_dir;
}

}  // namespace coppice::templates
