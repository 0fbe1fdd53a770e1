#include "sys/child_stack.h"

#include <sanitizer/asan_interface.h>
#include <sys/mman.h>

#include <cerrno>
#include <memory>

#include "sys/linux_syscalls.h"

namespace coppice::sys {

ChildStack::~ChildStack() {
  if (!base_) return;
  ASAN_UNPOISON_MEMORY_REGION(base_, size_);
  ::munmap(base_, size_);
}

Status ChildStack::map(size_t bytes) {
  void* m = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (m == MAP_FAILED) return errno_error("child stack");
  if (base_) {
    ASAN_UNPOISON_MEMORY_REGION(base_, size_);
    ::munmap(base_, size_);
  }
  base_ = m;
  size_ = bytes;
  return ok();
}

char* ChildStack::top(size_t offset) {
  ASAN_UNPOISON_MEMORY_REGION(base_, size_);
  return static_cast<char*>(base_) + size_ - offset;
}

ChildStack* thread_child_stack(size_t bytes) {
  thread_local std::unique_ptr<ChildStack> stack;
  if (!stack) stack = std::make_unique<ChildStack>();
  if (stack->size() < bytes && !stack->map(bytes)) return nullptr;
  return stack.get();
}

pid_t clone_blocking_signals(int (*fn)(void*), char* stack_top, int flags, void* arg, int* pidfd, sigset_t* old_mask) {
  sigset_t all;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, old_mask);
  pid_t pid = raw::clone_on_stack(fn, stack_top, flags, arg, pidfd);
  int err = errno;
  ::pthread_sigmask(SIG_SETMASK, old_mask, nullptr);
  errno = err;
  return pid;
}

}  // namespace coppice::sys
