// What sandbox_manager.cc and pools.cc share: the manager's record of one
// sandbox. Private to src/core.
#pragma once

#include "core/sandbox_manager.h"

namespace coppice::core {

struct SandboxManager::Live {
  std::string id;
  std::string template_id;
  SandboxState state = SandboxState::kCreating;
  std::string token;
  json metadata = json::object();
  json env_vars = json::object();
  int cpu_count = 1, memory_mb = 512, disk_mb = 1024;
  Clock::time_point started_at, end_at;
  std::string state_dir;
  sandbox::SandboxHandle handle;
  // Previous CPU sample, for the utilisation between two metric reads.
  uint64_t last_cpu_ns = 0;
  std::chrono::steady_clock::time_point last_cpu_at;
  // The template version it was made from (rootfs, build id, recipe hash), so
  // a pooled sandbox older than its template is never handed out.
  std::string build;
  // The template whose pool it came from; empty for a cold create.
  std::string pool;
};

// Creating, Pooled and Killing sandboxes are nobody's to see or touch.
inline bool visible(SandboxState s) {
  return s != SandboxState::kCreating && s != SandboxState::kPooled && s != SandboxState::kKilling;
}

}  // namespace coppice::core
