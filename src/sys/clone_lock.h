// The lock every multi-threaded clone of this process takes.
//
// A child gets a copy of every descriptor open in the parent at the moment of
// clone, close-on-exec or not, and keeps it until it execs or exits. When two
// threads launch sandboxes at once, one sandbox's child could hold the other's
// report pipe (whose EOF says "exec succeeded") and the parent would wait on
// it. Holding this lock from creating a child's pipes until the parent has
// closed its copies of the child's ends keeps every in-flight pipe out of
// every other child.
#pragma once

#include <mutex>

namespace coppice::sys {

inline std::mutex& clone_lock() {
  static std::mutex m;
  return m;
}

}  // namespace coppice::sys
