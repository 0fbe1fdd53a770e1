// Renaming a running ns sandbox: warm pools start sandboxes under a pool name
// and hand them out under a fresh id.
#pragma once

#include <sys/types.h>

#include <set>
#include <string>

#include "common/result.h"
#include "sandbox/ns/cgroup.h"

namespace coppice::sandbox::ns {

struct RenameRequest {
  std::string id, new_id;
  pid_t init_pid = -1;  // host pid of the sandbox's PID 1 (our child, or pinned by the caller)
  std::string state_dir, new_state_dir;
};

// The checklist: reserve new_id's record → journal (registry.h) → move the
// state dir (renameat2 NOREPLACE) → rename the cgroups → set the hostname in
// the sandbox's UTS namespace → drop id's record → drop the journal. A failure
// undoes the steps done and returns the error with nothing changed; if an
// undo fails too, the journal stays and finish_pending_renames() completes
// the rename later (the error says so).
Status rename_sandbox(const CgroupManager& cgroups, const std::string& registry_dir, const RenameRequest& r);

// Completes every rename whose journal is still there (a crash or a failed
// undo interrupted it), except those whose old id is in `in_flight`. Each step
// is skipped when already done; afterwards the sandbox exists only under its
// new id. Problems with one rename are logged and the others still done.
void finish_pending_renames(const CgroupManager& cgroups, const std::string& registry_dir,
                            const std::set<std::string>& in_flight);

}  // namespace coppice::sandbox::ns
