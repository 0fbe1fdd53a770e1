// Thin typed wrappers for the Linux syscalls that glibc 2.36 does not wrap, or
// wraps only in headers that clash with <linux/mount.h>.
//
// Each behaves like a libc function: the result on success, -1 with errno set
// on failure. They allocate nothing and take no locks, so they are safe to call
// between clone and exec in a child of a multi-threaded process (where malloc
// may be locked by a thread that no longer exists). Code outside the child uses
// the Result-returning wrappers in mount.h, process.h, etc.
#pragma once

#include <linux/mount.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdint>

namespace coppice::sys::raw {

// clone3(2): returns the child's pid in the parent, 0 in the child.
inline pid_t clone3(struct clone_args* args) {
  return static_cast<pid_t>(::syscall(SYS_clone3, args, sizeof(struct clone_args)));
}

// clone(2) through glibc's wrapper, which runs `fn(arg)` on `stack_top` in
// the child: needed for CLONE_VM, where the child must not share the caller's
// stack. With CLONE_PIDFD the pidfd is stored at `*pidfd`.
inline pid_t clone_on_stack(int (*fn)(void*), void* stack_top, int flags, void* arg, int* pidfd) {
  return static_cast<pid_t>(::clone(fn, stack_top, flags, arg, pidfd));
}

inline int pidfd_open(pid_t pid, unsigned flags = 0) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, flags));
}

inline int pidfd_send_signal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

inline int open_tree(int dfd, const char* path, unsigned flags) {
  return static_cast<int>(::syscall(SYS_open_tree, dfd, path, flags));
}

inline int move_mount(int from_dfd, const char* from_path, int to_dfd, const char* to_path, unsigned flags) {
  return static_cast<int>(::syscall(SYS_move_mount, from_dfd, from_path, to_dfd, to_path, flags));
}

inline int mount_setattr(int dfd, const char* path, unsigned flags, struct mount_attr* attr) {
  return static_cast<int>(::syscall(SYS_mount_setattr, dfd, path, flags, attr, sizeof(struct mount_attr)));
}

// openat2(2) with a struct open_how (RESOLVE_* in `resolve`).
inline int openat2(int dfd, const char* path, uint64_t flags, uint64_t mode, uint64_t resolve) {
  struct {
    uint64_t flags, mode, resolve;
  } how{flags, mode, resolve};
  return static_cast<int>(::syscall(SYS_openat2, dfd, path, &how, sizeof how));
}

inline int pivot_root(const char* new_root, const char* put_old) {
  return static_cast<int>(::syscall(SYS_pivot_root, new_root, put_old));
}

// Credential changes as bare syscalls. glibc's setgroups/setresuid/setresgid
// in a multi-threaded process broadcast the change to every thread and wait
// for them (the "setxid" protocol); in a child cloned by raw clone3 those
// threads do not exist, and the wait never ends. The child changes only its
// own credentials, which is exactly what the raw syscall does.
inline int setgroups_self(size_t n, const gid_t* groups) {
  return static_cast<int>(::syscall(SYS_setgroups, n, groups));
}
inline int setresgid_self(gid_t r, gid_t e, gid_t s) { return static_cast<int>(::syscall(SYS_setresgid, r, e, s)); }
inline int setresuid_self(uid_t r, uid_t e, uid_t s) { return static_cast<int>(::syscall(SYS_setresuid, r, e, s)); }

// futex(2) on a word shared with a CLONE_VM child: wait while *word == expected
// (returns at once otherwise); wake every waiter.
inline int futex_wait(uint32_t* word, uint32_t expected) {
  return static_cast<int>(::syscall(SYS_futex, word, 0 /* FUTEX_WAIT */, expected, nullptr, nullptr, 0));
}
inline int futex_wake(uint32_t* word) {
  return static_cast<int>(::syscall(SYS_futex, word, 1 /* FUTEX_WAKE */, 0x7fffffff, nullptr, nullptr, 0));
}

inline int unshare_self(int flags) { return static_cast<int>(::syscall(SYS_unshare, flags)); }

inline int close_range(unsigned first, unsigned last, unsigned flags) {
  return static_cast<int>(::syscall(SYS_close_range, first, last, flags));
}

// Closes every fd from 3 up except those in `keep` (sorted ascending, no
// duplicates): for a forked child that never execs and must not hold on to
// the parent's files (a lock held by fd stays held while any copy is open).
// Async-signal-safe.
inline int close_all_but(const int* keep, size_t n) {
  unsigned from = 3;
  for (size_t i = 0; i < n; ++i) {
    if (keep[i] < 0 || static_cast<unsigned>(keep[i]) < from) continue;
    if (static_cast<unsigned>(keep[i]) > from && close_range(from, static_cast<unsigned>(keep[i]) - 1, 0) != 0) return -1;
    from = static_cast<unsigned>(keep[i]) + 1;
  }
  return close_range(from, ~0U, 0);
}

// capget/capset with the v3 (64-bit) layout: data[0] holds bits 0-31, data[1] bits 32-63.
struct CapData {
  uint32_t effective, permitted, inheritable;
};
inline int capset_v3(uint64_t effective, uint64_t permitted, uint64_t inheritable) {
  struct {
    uint32_t version;
    int pid;
  } hdr{0x20080522 /* _LINUX_CAPABILITY_VERSION_3 */, 0};
  CapData data[2] = {
      {static_cast<uint32_t>(effective), static_cast<uint32_t>(permitted), static_cast<uint32_t>(inheritable)},
      {static_cast<uint32_t>(effective >> 32), static_cast<uint32_t>(permitted >> 32),
       static_cast<uint32_t>(inheritable >> 32)}};
  return static_cast<int>(::syscall(SYS_capset, &hdr, data));
}

}  // namespace coppice::sys::raw
