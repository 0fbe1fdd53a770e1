// File-system work done with another user's credentials.
//
// envd runs as root but acts on files for the user a request names. The
// kernel, not envd, must decide what that user may open, create, follow or
// remove: a symlink the user planted (~/x -> /etc/shadow) then leads nowhere
// the user could not go anyway, and what is created belongs to the user from
// the start. Credentials are per thread in Linux; glibc's setuid family
// changes them in every thread of the process, the raw syscalls
// (sys/linux_syscalls.h) only in the calling one. run_as() therefore starts a
// short-lived thread, gives it the user's ids (real, effective, saved and
// file-system uid and gid, and the supplementary groups; leaving uid 0 drops
// every capability), runs the work there and joins it. The caller blocks
// until the work is done, so a single-threaded caller never has two threads
// running at once (nothing can fork while a user's thread lives), and no
// thread but the short-lived one ever carries the user's ids.
//
// What the work may do: plain syscalls and allocation. It must not touch
// state another thread uses concurrently (there is none while the caller
// waits), nor start threads. A file descriptor it opens stays usable by the
// caller afterwards: permissions are checked at open, so reads and writes
// through it need no credentials.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/result.h"

namespace coppice::sys {

struct Credentials {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups (the primary may be among them)
};

// The effective ids of the process (groups left empty): run_as with them
// always runs inline.
Credentials own_credentials();

// Runs `fn` with `creds` and returns once it has returned. Runs it inline,
// on the calling thread, when no change is needed or possible: the process
// already has that effective uid and gid (root acting as root), the calling
// thread is itself run_as work for the same ids, or the process is not root
// (an unprivileged envd, in tests, can only act as itself; the kernel still
// checks everything as its own user). Fails, without running `fn`, when the
// thread cannot be started (kResourceExhausted) or the ids cannot be taken
// (kPermissionDenied: an id not mapped in the user namespace, say).
Status run_with_credentials(const Credentials& creds, const std::function<void()>& fn);

// The same for work that returns a Result<T> (or Status), which is passed
// through; a failure to run the work becomes that Result's error.
template <typename F>
std::invoke_result_t<F&> run_as(const Credentials& creds, F&& fn) {
  using R = std::invoke_result_t<F&>;
  std::optional<R> out;
  Status s = run_with_credentials(creds, [&] { out.emplace(fn()); });
  if (!s) return std::unexpected(std::move(s.error()));
  return std::move(*out);
}

}  // namespace coppice::sys
