#include "builder/run_step.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdlib>

#include "common/constants.h"
#include "sys/fd.h"
#include "sys/linux_syscalls.h"
#include "sys/mount_ops.h"
#include "sys/spawn.h"

namespace coppice::builder {

Status enter_private_mount_namespace() {
  if (::unshare(CLONE_NEWNS) != 0) return errno_error("unshare(CLONE_NEWNS)");
  if (int e = sys::mnt::make_rprivate()) return std::unexpected(Error::from_errno(e, "make / private"));
  return ok();
}

namespace {

// <rootfs>/<name> as a directory fd, made when missing, never through a symlink.
Result<sys::UniqueFd> tree_dir(int root, const char* name) {
  int fd = sys::raw::openat2(root, name, O_PATH | O_DIRECTORY | O_CLOEXEC, 0, RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH);
  if (fd < 0 && errno == ENOENT) {
    if (::mkdirat(root, name, 0755) != 0 && errno != EEXIST) return errno_error(std::string("mkdir /") + name);
    fd = sys::raw::openat2(root, name, O_PATH | O_DIRECTORY | O_CLOEXEC, 0, RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH);
  }
  if (fd < 0) return errno_error(std::string("open the tree's /") + name + " (a directory, not a link)");
  return sys::UniqueFd(fd);
}

}  // namespace

Status mount_build_dev(const std::string& rootfs) {
  sys::UniqueFd root(::open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return errno_error("open " + rootfs);
  COPPICE_ASSIGN_OR_RETURN(auto proc, tree_dir(root.get(), "proc"));
  COPPICE_ASSIGN_OR_RETURN(auto dev, tree_dir(root.get(), "dev"));
  const std::string at = "/proc/self/fd/" + std::to_string(dev.get());
  if (int e = sys::mnt::mount_fs("tmpfs", at.c_str(), MS_NOSUID | MS_NOEXEC, "mode=755,size=64k"))
    return std::unexpected(Error::from_errno(e, "mount a tmpfs on the tree's /dev"));
  const std::string d = rootfs + "/dev";
  sys::UniqueFd mounted(::open(d.c_str(), O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!mounted) return errno_error("open " + d);
  struct Node {
    const char* name;
    unsigned major, minor;
  };
  for (const Node& n : {Node{"null", 1, 3}, Node{"zero", 1, 5}, Node{"full", 1, 7}, Node{"random", 1, 8},
                        Node{"urandom", 1, 9}, Node{"tty", 5, 0}}) {
    if (::mknodat(mounted.get(), n.name, S_IFCHR | 0666, makedev(n.major, n.minor)) != 0) {
      // In a rootless build's user namespace mknod is refused: the host's
      // node is bind-mounted on an empty file instead.
      if (errno != EPERM) return errno_error(std::string("mknod /dev/") + n.name);
      sys::UniqueFd file(::openat(mounted.get(), n.name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666));
      if (!file) return errno_error(std::string("create /dev/") + n.name);
      const std::string host = std::string("/dev/") + n.name;
      const std::string target = d + "/" + n.name;
      if (int e = sys::mnt::bind(host.c_str(), target.c_str(), 0, false))
        return std::unexpected(Error::from_errno(e, "bind " + host + " into the tree"));
      continue;
    }
    if (::fchmodat(mounted.get(), n.name, 0666, 0) != 0) return errno_error(std::string("chmod /dev/") + n.name);
  }
  const std::pair<const char*, const char*> links[] = {
      {"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"}};
  for (const auto& [name, target] : links) {
    if (::symlinkat(target, mounted.get(), name) != 0) return errno_error(std::string("symlink /dev/") + name);
  }
  return ok();
}

Status run_step(const RunStep& step) {
  const char* host_path = std::getenv("PATH");
  const std::string unshare = sys::find_in_path("unshare", host_path ? host_path : std::string(kDefaultPath));
  if (unshare.empty()) return make_error(ErrorCode::kNotFound, "RUN needs unshare(1) (util-linux) on the host");
  ToolRun t;
  t.argv = {unshare, "--mount", "--uts", "--ipc", "--pid", "--fork", "--kill-child", "--mount-proc"};
  if (!step.network_host) t.argv.push_back("--net");
  t.argv.push_back("--root=" + step.rootfs);
  t.argv.push_back("--wd=" + step.cwd);
  t.argv.insert(t.argv.end(), {"--setgid", std::to_string(step.gid), "--setuid", std::to_string(step.uid), "--"});
  t.argv.insert(t.argv.end(), step.argv.begin(), step.argv.end());
  t.env = step.env;
  bool has_path = false;
  for (const auto& e : t.env) has_path = has_path || e.starts_with("PATH=");
  if (!has_path) t.env.push_back("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  t.progress = step.progress;
  t.cancel = step.cancel;
  // unshare --fork ignores SIGTERM while it waits, and the step is PID 1 of
  // its namespace, which ignores it too: stop it at once (its tree is thrown
  // away with the build).
  t.stop_grace = std::chrono::seconds(0);
  return run_tool(t);
}

}  // namespace coppice::builder
