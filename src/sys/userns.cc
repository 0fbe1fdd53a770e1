#include "sys/userns.h"

#include "sys/clone_lock.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "sys/fsutil.h"
#include "sys/linux_syscalls.h"

namespace coppice::sys {

Result<UniqueFd> make_userns(IdRange uid_map, IdRange gid_map) {
  // The helper lives until this function returns: hold the clone lock for
  // all of it, so it never holds another launch's in-flight pipes.
  std::lock_guard clone_guard(clone_lock());
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return errno_error("pipe2");
  UniqueFd rd(p[0]), wr(p[1]);
  struct clone_args args{};
  args.flags = CLONE_NEWUSER;
  args.exit_signal = SIGCHLD;
  pid_t pid = raw::clone3(&args);
  if (pid < 0) return errno_error("clone3 CLONE_NEWUSER");
  if (pid == 0) {
    // Child: block until the parent closes the pipe (or kills us).
    char c;
    ::close(p[1]);
    ssize_t r = ::read(p[0], &c, 1);
    (void)r;
    _exit(0);
  }
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      ::kill(pid, SIGKILL);
      int st;
      while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
      }
    }
  } reaper{pid};

  std::string base = "/proc/" + std::to_string(pid);
  char line[64];
  std::snprintf(line, sizeof line, "%u %u %u\n", uid_map.inside, uid_map.outside, uid_map.count);
  COPPICE_TRY_CTX(write_file(base + "/uid_map", line), "write uid_map");
  std::snprintf(line, sizeof line, "%u %u %u\n", gid_map.inside, gid_map.outside, gid_map.count);
  COPPICE_TRY_CTX(write_file(base + "/gid_map", line), "write gid_map");
  int fd = ::open((base + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno_error("open " + base + "/ns/user");
  return UniqueFd(fd);
}

Result<IdRange> read_uid_map(pid_t pid) {
  auto text = read_file("/proc/" + std::to_string(pid) + "/uid_map");
  if (!text) return std::unexpected(text.error());
  IdRange r;
  if (std::sscanf(text->c_str(), "%u %u %u", &r.inside, &r.outside, &r.count) != 3) {
    return make_error(ErrorCode::kInternal, "unexpected uid_map of pid " + std::to_string(pid));
  }
  return r;
}

}  // namespace coppice::sys
