// Starting a child process with a precise environment: its own session,
// standard streams, optional controlling terminal, credentials and working
// directory. Failures between fork and exec come back to the parent as data
// over a CLOEXEC pipe (the step and errno); EOF on that pipe means exec
// succeeded.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "sys/fd.h"

namespace coppice::sys {

struct SpawnOptions {
  std::string path;                 // program; if it has no '/', searched in PATH of `env`
  std::vector<std::string> argv;    // argv[0] included
  std::vector<std::string> env;     // "K=V" entries, the whole environment
  std::string cwd;                  // empty: inherit
  // Credentials to switch to; unset leaves them as they are.
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::vector<gid_t> groups;        // supplementary groups (used when gid is set)
  int stdin_fd = -1;                // -1: /dev/null
  int stdout_fd = -1;               // -1: /dev/null
  int stderr_fd = -1;               // -1: /dev/null
  bool new_session = true;          // setsid()
  bool controlling_tty = false;     // make stdin (a pty slave) the controlling terminal
  bool reset_signals = true;        // default dispositions and an empty mask in the child
  // /proc/self/oom_score_adj of the child, if set and above the caller's
  // (raising needs no privilege; the child cannot go back below the caller's).
  std::optional<int> oom_score_adj;
};

// Starts the child and returns its pid once exec has succeeded; an exec or
// set-up failure is returned as an error naming the step.
Result<pid_t> spawn(const SpawnOptions& opts);

// Looks `name` up in the colon-separated `path_var`; returns it unchanged if it
// contains a '/'. Returns an empty string if nothing executable was found.
std::string find_in_path(const std::string& name, const std::string& path_var);

// A pipe with both ends O_CLOEXEC.
Result<std::pair<UniqueFd, UniqueFd>> make_pipe(bool nonblock_read = false, bool nonblock_write = false);

Status set_nonblocking(int fd, bool on);

}  // namespace coppice::sys
