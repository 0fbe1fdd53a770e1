// The lock a launch takes when it must wait for its report pipe's EOF.
//
// A child gets a copy of every descriptor open in the parent at the moment of
// clone, close-on-exec or not, and keeps it until it execs or exits. When two
// threads launch sandboxes at once, one sandbox's child could hold the other's
// report pipe (whose EOF says "exec succeeded") and the parent would wait on
// it. A launch whose verdict is that EOF (a restore: its PID 1 execs after
// clone has returned) holds this lock from creating its pipes until it has
// closed its copies of the child's ends. Other launches need no EOF (a
// CLONE_VFORK clone returns once the child has exec'd or exited, see
// launch.cc) and run side by side; a copy of their pipes in another child
// only lives until that child's exec.
#pragma once

#include <mutex>

namespace coppice::sys {

inline std::mutex& clone_lock() {
  static std::mutex m;
  return m;
}

}  // namespace coppice::sys
