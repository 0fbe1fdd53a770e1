#include "sys/userns.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "sys/child_stack.h"
#include "sys/fsutil.h"
#include "sys/linux_syscalls.h"

namespace coppice::sys {

namespace {
// What the helper is told: the namespace's owner (0: ours), the gateway's
// pid, and the word it reports through (owned helpers only).
struct Helper {
  uid_t owner = 0;
  pid_t parent = 0;
  uint32_t state = 0;  // 0: working; 1: made; 2 + errno: failed
};

// Dies with the thread that made it. The helper shares the gateway's memory
// and fd table; a gateway killed (kill -9) while one runs would otherwise
// leave it paused forever, holding the gateway's listening socket and its
// uid-range lock, so that no gateway could start on that state dir again.
// Set last: a change of credentials (setresuid, a new user namespace)
// clears the parent-death signal.
void die_with_parent(pid_t parent) {
  ::syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (::syscall(SYS_getppid) != parent) ::syscall(SYS_exit, 0);  // already gone
}

// The helper's whole life: wait for SIGKILL. It shares our memory and fd
// table, so it must touch nothing but its own stack (and the Helper it is
// given): every signal is blocked (it inherits the mask set around clone)
// and pause(2) never returns.
int hold_userns(void* arg) {
  die_with_parent(static_cast<Helper*>(arg)->parent);
  for (;;) ::syscall(SYS_pause);
}

// The helper for a namespace owned by another uid: becomes that uid (its own
// credentials only: raw setresuid, no glibc setxid broadcast), makes the
// namespace, reports through the shared word and waits for SIGKILL.
int hold_owned_userns(void* arg) {
  auto* h = static_cast<Helper*>(arg);
  uint32_t result = 1;
  if (raw::setresuid_self(h->owner, h->owner, h->owner) != 0 || raw::unshare_self(CLONE_NEWUSER) != 0) {
    result = 2 + static_cast<uint32_t>(errno);
  }
  die_with_parent(h->parent);
  __atomic_store_n(&h->state, result, __ATOMIC_RELEASE);
  raw::futex_wake(&h->state);
  for (;;) ::syscall(SYS_pause);
}
}  // namespace

Result<UniqueFd> make_userns(IdRange uid_map, IdRange gid_map, uid_t owner) {
  // The helper shares our address space and fd table (CLONE_VM | CLONE_FILES):
  // no page-table copy of the gateway, no copy-on-write faults afterwards,
  // and it holds no copy of any other thread's in-flight descriptors, so the
  // clone lock is not needed.
  // Its stack lives until it is reaped (below): it does not exec.
  constexpr size_t kStack = 16 << 10;
  ChildStack stack;
  COPPICE_TRY_CTX(stack.map(kStack), "userns helper");
  sigset_t old_mask;
  Helper owned{owner, ::getpid(), 0};
  pid_t pid = owner == 0 ? clone_blocking_signals(hold_userns, stack.top(), CLONE_VM | CLONE_FILES | CLONE_NEWUSER | SIGCHLD,
                                                  &owned, nullptr, &old_mask)
                         : clone_blocking_signals(hold_owned_userns, stack.top(), CLONE_VM | CLONE_FILES | SIGCHLD, &owned,
                                                  nullptr, &old_mask);
  int clone_errno = errno;
  if (pid < 0) return errno_error("clone CLONE_NEWUSER", clone_errno);
  // Declared after the stack: the helper is dead and reaped before its stack
  // is unmapped.
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      ::kill(pid, SIGKILL);
      int st;
      while (::waitpid(pid, &st, __WALL) < 0 && errno == EINTR) {
      }
    }
  } reaper{pid};
  if (owner != 0) {
    uint32_t st;
    while ((st = __atomic_load_n(&owned.state, __ATOMIC_ACQUIRE)) == 0) raw::futex_wait(&owned.state, 0);
    if (st != 1) return errno_error("user namespace owned by uid " + std::to_string(owner), static_cast<int>(st - 2));
  }

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
