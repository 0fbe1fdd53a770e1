// A Dockerfile's RUN step, run in the tree being built (image_build.h says
// how it is isolated and what it may reach).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <string>
#include <vector>

#include "builder/run_tool.h"
#include "common/result.h"

namespace coppice::builder {

// Moves the calling (single-threaded) process into a mount namespace of its
// own whose mounts do not propagate back: whatever a build mounts goes
// with its process, however it ends.
Status enter_private_mount_namespace();

// Mounts a small tmpfs on <rootfs>/dev with the device nodes a build step
// needs (null, zero, full, random, urandom, tty; fd, stdin, stdout, stderr
// links) and makes <rootfs>/proc if the tree lacks it. <rootfs>/dev must be
// a directory or missing (it is made), never a symlink. Undo with
// unmount_under(<rootfs>/dev) (mounts.h).
Status mount_build_dev(const std::string& rootfs);

struct RunStep {
  std::string rootfs;
  std::vector<std::string> argv;  // argv[0] is found in the tree's PATH (from `env`)
  std::vector<std::string> env;   // "K=V"; a PATH is added when missing
  std::string cwd = "/";          // in the tree; must exist
  uid_t uid = 0;
  gid_t gid = 0;
  bool network_host = false;      // share the host's network instead of loopback only
  ProgressFn progress;            // each line of the command's output
  const std::atomic<bool>* cancel = nullptr;
};

// Runs the step to its end. A non-zero exit is an error quoting the last
// lines it printed (run_tool.h).
Status run_step(const RunStep& step);

}  // namespace coppice::builder
