// Running the external program a build step needs (mmdebstrap), with its
// output relayed line by line and a way to stop it.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace coppice::builder {

// Receives one line of progress (no trailing newline).
using ProgressFn = std::function<void(std::string_view line)>;

struct ToolRun {
  std::vector<std::string> argv;       // argv[0] is looked up in PATH (of `env` when given)
  std::vector<std::string> env;        // "K=V", the tool's whole environment; empty: ours
  ProgressFn progress;                 // each line of the tool's stdout and stderr; may be empty
  const std::atomic<bool>* cancel = nullptr;  // when it becomes true the tool is stopped
  // How long a stopped tool may take to clean up after SIGTERM before it is
  // killed (mmdebstrap unmounts what it mounted in the tree).
  std::chrono::seconds stop_grace{20};
};

// Runs the tool in its own session (so a terminal's Ctrl-C reaches only us,
// and we decide how it stops) and waits for it. When `cancel` is set it gets
// SIGTERM (its whole process group), then SIGKILL after `stop_grace`, and the result
// is kCanceled once it has exited. A non-zero exit is an error quoting the
// last lines it printed.
Status run_tool(const ToolRun& run);

}  // namespace coppice::builder
