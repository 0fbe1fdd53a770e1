#include "builder/tree_edit.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "templates/host_template.h"
#include "common/strings.h"
#include "sys/fd.h"

namespace coppice::builder {
namespace {


// ---- Everything below runs in the confined child: paths are the tree's. ----

Status write_all(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error("write " + path);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return ok();
}

Result<std::string> read_text(const std::string& path) {
  sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return std::string();
    return errno_error("open " + path);
  }
  std::string out;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error("read " + path);
    }
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

bool exists(const std::string& path, struct stat* st = nullptr) {
  struct stat local {};
  return ::lstat(path.c_str(), st ? st : &local) == 0;
}

// Removes whatever non-directory is at `path`.
Status unlink_if_there(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return errno_error("unlink " + path);
  return ok();
}

// Replaces the content of `path` (a regular file keeps its mode and owner; a
// symlink or missing file becomes a new file with `mode`, root's). The new
// content goes to a new inode renamed over the old one: a tree may share
// its files by hard links with others (image_build.h), which must not change.
Status put_file(const std::string& path, std::string_view content, mode_t mode) {
  struct stat st {};
  const bool regular = exists(path, &st) && S_ISREG(st.st_mode);
  const std::string tmp = path + ".coppice-new";
  COPPICE_TRY_CTX(unlink_if_there(tmp), "replace " + path);
  sys::UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, regular ? st.st_mode & 07777 : mode));
  if (!fd) return errno_error("create " + tmp);
  auto s = write_all(fd.get(), content, path);
  if (s && regular && ::fchown(fd.get(), st.st_uid, st.st_gid) != 0) s = errno_error("chown " + tmp);
  if (s && regular && ::fchmod(fd.get(), st.st_mode & 07777) != 0) s = errno_error("chmod " + tmp);
  if (s && ::rename(tmp.c_str(), path.c_str()) != 0) s = errno_error("rename " + tmp + " to " + path);
  if (!s) ::unlink(tmp.c_str());
  return s;
}

Status make_dirs(const std::string& path, mode_t mode) {
  std::string cur;
  for (const auto& part : split_string(path, '/')) {
    if (part.empty()) continue;
    cur += "/" + part;
    if (::mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) return errno_error("mkdir " + cur);
  }
  return ok();
}

Status merge_into(const std::string& path, const std::string& line, int id_field, mode_t mode) {
  auto text = read_text(path);
  if (!text) return std::unexpected(std::move(text.error()));
  auto merged = merge_account(*text, line, id_field);
  if (!merged) return std::unexpected(std::move(merged.error()).context(path));
  if (*merged == *text) return ok();
  return put_file(path, *merged, mode);
}

Status add_accounts() {
  const std::string shell = ::access("/bin/bash", X_OK) == 0 ? "/bin/bash" : "/bin/sh";
  COPPICE_TRY_CTX(make_dirs("/etc", 0755), "accounts");
  COPPICE_TRY_CTX(merge_into("/etc/passwd", "root:x:0:0:root:/root:" + shell, 2, 0644), "accounts");
  COPPICE_TRY_CTX(merge_into("/etc/passwd", "user:x:1000:1000::/home/user:" + shell, 2, 0644), "accounts");
  COPPICE_TRY_CTX(merge_into("/etc/group", "root:x:0:", 2, 0644), "accounts");
  COPPICE_TRY_CTX(merge_into("/etc/group", "user:x:1000:", 2, 0644), "accounts");
  // Shadow files only where the packages made them (their owner and mode,
  // root:shadow 0640, are kept): no password, so no password login.
  if (exists("/etc/shadow")) {
    COPPICE_TRY_CTX(merge_into("/etc/shadow", "root:*::0:99999:7:::", -1, 0640), "accounts");
    COPPICE_TRY_CTX(merge_into("/etc/shadow", "user:*::0:99999:7:::", -1, 0640), "accounts");
  }
  if (exists("/etc/gshadow")) {
    COPPICE_TRY_CTX(merge_into("/etc/gshadow", "root:*::", -1, 0640), "accounts");
    COPPICE_TRY_CTX(merge_into("/etc/gshadow", "user:!::", -1, 0640), "accounts");
  }

  COPPICE_TRY_CTX(make_dirs("/root", 0700), "accounts");
  COPPICE_TRY_CTX(make_dirs("/home/user", 0755), "accounts");
  if (::chown("/home/user", kUserUid, kUserGid) != 0) return errno_error("chown /home/user");
  // What useradd -m would copy: /etc/skel's files (.bashrc, .profile, ...).
  if (DIR* d = ::opendir("/etc/skel")) {
    while (struct dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      const std::string src = "/etc/skel/" + name, dst = "/home/user/" + name;
      struct stat st {};
      if (::lstat(src.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || exists(dst)) continue;
      auto text = read_text(src);
      if (!text) {
        ::closedir(d);
        return std::unexpected(std::move(text.error()).context("accounts"));
      }
      auto s = put_file(dst, *text, st.st_mode & 0755);
      if (s && ::chown(dst.c_str(), kUserUid, kUserGid) != 0) s = errno_error("chown " + dst);
      if (!s) {
        ::closedir(d);
        return std::unexpected(std::move(s.error()).context("accounts"));
      }
    }
    ::closedir(d);
  }
  return ok();
}

Status set_identity() {
  COPPICE_TRY_CTX(put_file("/etc/hostname", templates::kSandboxHostname, 0644), "identity");
  COPPICE_TRY_CTX(put_file("/etc/hosts", templates::kSandboxHosts, 0644), "identity");
  COPPICE_TRY_CTX(put_file("/etc/resolv.conf", templates::kSandboxResolvConf, 0644), "identity");
  // A fresh, empty id, as systemd expects of an image: no sandbox shares one.
  COPPICE_TRY_CTX(put_file("/etc/machine-id", "", 0444), "identity");
  return ok();
}

bool under_home(const std::string& dst) { return dst == "/home/user" || dst.starts_with("/home/user/"); }

// Copies one entry. Sources are read through `host` (the host's root,
// opened before the chroot) at their symlink-free absolute paths.
Status add_entry(int host, const AddedEntry& e) {
  const uid_t uid = e.uid >= 0 ? static_cast<uid_t>(e.uid) : under_home(e.dst) ? kUserUid : 0;
  const gid_t gid = e.gid >= 0 ? static_cast<gid_t>(e.gid) : under_home(e.dst) ? kUserGid : 0;
  const std::string parent = e.dst.substr(0, e.dst.rfind('/'));
  if (!parent.empty()) COPPICE_TRY_CTX(make_dirs(parent, 0755), "files");
  struct stat st {};
  bool there = exists(e.dst, &st);
  switch (e.kind) {
    case AddedEntry::kDir:
      if (there && !S_ISDIR(st.st_mode)) COPPICE_TRY_CTX(unlink_if_there(e.dst), "files");
      if ((!there || !S_ISDIR(st.st_mode)) && ::mkdir(e.dst.c_str(), e.mode) != 0)
        return errno_error("mkdir " + e.dst);
      if (::chmod(e.dst.c_str(), e.mode) != 0) return errno_error("chmod " + e.dst);
      if (::lchown(e.dst.c_str(), uid, gid) != 0) return errno_error("chown " + e.dst);
      return ok();
    case AddedEntry::kSymlink:
      if (there && S_ISDIR(st.st_mode)) return make_error(ErrorCode::kAlreadyExists, e.dst + " is a directory");
      COPPICE_TRY_CTX(unlink_if_there(e.dst), "files");
      if (::symlink(e.target.c_str(), e.dst.c_str()) != 0) return errno_error("symlink " + e.dst);
      if (::lchown(e.dst.c_str(), uid, gid) != 0) return errno_error("chown " + e.dst);
      return ok();
    case AddedEntry::kFile: {
      if (there && S_ISDIR(st.st_mode)) return make_error(ErrorCode::kAlreadyExists, e.dst + " is a directory");
      sys::UniqueFd in(::openat(host, e.src.c_str() + 1, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      if (!in) return errno_error("open " + e.src);
      COPPICE_TRY_CTX(unlink_if_there(e.dst), "files");
      sys::UniqueFd out(::open(e.dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, e.mode));
      if (!out) return errno_error("create " + e.dst);
      char buf[65536];
      for (;;) {
        ssize_t n = ::read(in.get(), buf, sizeof buf);
        if (n < 0) {
          if (errno == EINTR) continue;
          return errno_error("read " + e.src);
        }
        if (n == 0) break;
        COPPICE_TRY_CTX(write_all(out.get(), std::string_view(buf, static_cast<size_t>(n)), e.dst), "files");
      }
      if (::fchmod(out.get(), e.mode) != 0) return errno_error("chmod " + e.dst);
      if (::fchown(out.get(), uid, gid) != 0) return errno_error("chown " + e.dst);
      return ok();
    }
  }
  return ok();
}

Status edit_confined(const std::string& rootfs, const std::vector<AddedEntry>& entries, bool accounts) {
  sys::UniqueFd host(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!host) return errno_error("open /");
  if (::chroot(rootfs.c_str()) != 0) return errno_error("chroot " + rootfs);
  if (::chdir("/") != 0) return errno_error("chdir /");
  ::umask(022);
  if (accounts) {
    COPPICE_TRY_CTX(add_accounts(), "in " + rootfs);
    COPPICE_TRY_CTX(set_identity(), "in " + rootfs);
  }
  for (const auto& e : entries) COPPICE_TRY_CTX(add_entry(host.get(), e), "in " + rootfs);
  return ok();
}

Status run_confined(const std::string& rootfs, const std::vector<AddedEntry>& entries, bool accounts) {
  for (const auto& e : entries) {
    if (e.kind == AddedEntry::kFile && !e.src.starts_with("/"))
      return make_error(ErrorCode::kInvalidArgument, "files: source " + e.src + " is not an absolute path");
  }
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return errno_error("pipe");
  sys::UniqueFd rd(pipefd[0]), wr(pipefd[1]);
  // A plain fork: the builder runs in a single-threaded process (the CLI),
  // and the child only does file work before _exit.
  pid_t pid = ::fork();
  if (pid < 0) return errno_error("fork");
  if (pid == 0) {
    rd.reset();
    auto s = edit_confined(rootfs, entries, accounts);
    if (s) ::_exit(0);
    std::string msg = s.error().to_string();
    (void)!::write(wr.get(), msg.data(), msg.size());
    ::_exit(1);
  }
  wr.reset();
  std::string msg;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(rd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    msg.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return errno_error("wait for the tree editor");
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return ok();
  if (msg.empty()) msg = "the tree editor died (status " + std::to_string(status) + ")";
  return make_error(ErrorCode::kInternal, msg);
}

}  // namespace

Result<std::string> merge_account(const std::string& text, const std::string& line, int id_field) {
  const auto want = split_string(line, ':');
  for (const auto& l : split_string(text, '\n')) {
    if (l.empty() || l[0] == '#') continue;
    const auto f = split_string(l, ':');
    const bool same_name = f[0] == want[0];
    const bool with_ids = id_field >= 0 && f.size() > static_cast<size_t>(id_field);
    const bool same_id = with_ids && f[id_field] == want[id_field];
    if (same_name && (id_field < 0 || same_id)) return text;
    if (same_name)
      return make_error(ErrorCode::kAlreadyExists,
                        "account " + want[0] + " exists with id " + f[id_field] + ", not " + want[id_field]);
    if (same_id)
      return make_error(ErrorCode::kAlreadyExists, "id " + want[id_field] + " belongs to " + f[0] + ", not " + want[0]);
  }
  std::string out = text;
  if (!out.empty() && out.back() != '\n') out += '\n';
  return out + line + "\n";
}

Status edit_tree(const std::string& rootfs, const std::vector<AddedEntry>& entries) {
  return run_confined(rootfs, entries, true);
}

Status add_entries(const std::string& rootfs, const std::vector<AddedEntry>& entries) {
  return run_confined(rootfs, entries, false);
}

}  // namespace coppice::builder
