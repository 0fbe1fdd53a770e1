// Seccomp filters compiled once (with libseccomp) into a BPF program that a
// child loads between clone and exec without allocating.
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <span>
#include <vector>

#include "common/result.h"

namespace coppice::sys::seccomp {

// What a matching syscall gets.
enum class Action { kErrno, kKillProcess };

// One entry of a deny list. Unconditional when `arg` < 0; otherwise it
// matches when (argument[arg] & mask) == value.
struct Rule {
  const char* syscall;    // name as libseccomp knows it ("mount")
  Action action = Action::kErrno;
  int errno_value = 1;    // EPERM unless said otherwise (ENOSYS makes libc fall back)
  int arg = -1;
  uint64_t mask = 0;
  uint64_t value = 0;
};

// A compiled filter. Everything not matched by a rule is allowed; syscalls of
// an architecture other than x86-64/i386 (x32 numbers included) kill the process.
class Program {
 public:
  Program() = default;
  explicit Program(std::vector<sock_filter> insns) : insns_(std::move(insns)) {}
  bool empty() const { return insns_.empty(); }
  size_t size() const { return insns_.size(); }
  // The program in the form prctl/seccomp(2) take; valid while *this lives.
  sock_fprog fprog() const {
    return sock_fprog{static_cast<unsigned short>(insns_.size()), const_cast<sock_filter*>(insns_.data())};
  }

 private:
  std::vector<sock_filter> insns_;
};

// Compiles a deny list. A syscall name the running libseccomp does not know is
// an error (a typo in a policy must not silently allow the call).
Result<Program> compile(std::span<const Rule> rules);

// Installs `prog` on the calling thread (needs PR_SET_NO_NEW_PRIVS or
// CAP_SYS_ADMIN). Async-signal-safe; returns 0 or an errno.
int load(const sock_fprog& prog);

}  // namespace coppice::sys::seccomp
