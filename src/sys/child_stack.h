// Children cloned with CLONE_VM: they run on the caller's memory, so not on
// its stack. Shared by sys::spawn (a command), sys::make_userns (a helper
// holding a user namespace) and the sandbox launcher (a sandbox's first
// process).
//
//  * ChildStack: a stack of their own, mapped once. Under AddressSanitizer a
//    child's frames poison the stack's shadow and never unwind (the child
//    execs or exits): the shadow is cleared before each use and before the
//    mapping goes, or the next use (or the next mapping at that address)
//    inherits stale poison. No-ops without ASan.
//  * thread_child_stack(): one such stack per thread, kept for reuse, for
//    children cloned with CLONE_VFORK as well: the thread waits until the
//    child has exec'd or exited, so the stack is free again when clone
//    returns.
//  * clone_blocking_signals(): clone with every signal blocked around it, so
//    no handler of the caller's runs in the child (on the shared memory)
//    before the child has set its own dispositions and mask.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <cstddef>

#include "common/result.h"

namespace coppice::sys {

class ChildStack {
 public:
  ChildStack() = default;
  ~ChildStack();
  ChildStack(const ChildStack&) = delete;
  ChildStack& operator=(const ChildStack&) = delete;

  // Maps `bytes` (a multiple of the page size); fails only on mmap.
  Status map(size_t bytes);
  bool mapped() const { return base_ != nullptr; }
  size_t size() const { return size_; }
  // The top of the stack (stacks grow down), cleared of poison; carve
  // `offset` bytes down from the top for a second child's stack.
  char* top(size_t offset = 0);

 private:
  void* base_ = nullptr;
  size_t size_ = 0;
};

// This thread's reusable stack for CLONE_VM | CLONE_VFORK children, at least
// `bytes` (remapped when a larger one is asked for); null if it cannot be
// mapped.
ChildStack* thread_child_stack(size_t bytes);

// clone(fn, stack_top, flags, arg, pidfd) with every signal blocked in this
// thread until it returns; the mask the thread had is stored at *old_mask
// before the clone (a child may restore it from there). Returns the pid, or
// -1 with errno set.
pid_t clone_blocking_signals(int (*fn)(void*), char* stack_top, int flags, void* arg, int* pidfd, sigset_t* old_mask);

}  // namespace coppice::sys
