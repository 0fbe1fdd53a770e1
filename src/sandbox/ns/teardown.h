// Destroying an ns sandbox, with or without its in-memory handle.
#pragma once

#include <string>

#include "common/result.h"
#include "sandbox/ns/cgroup.h"
#include <sys/types.h>

namespace coppice::sandbox::ns {

// Kills every process of sandbox `id` and waits for them to be gone, removes
// its cgroups and its registry record, and moves its state dir into the
// trash beside it (trash.h). `init_pid` is the host pid of its PID 1 when the
// caller knows it (-1: found through the cgroup); `state_dir` may be empty
// (then the registry says where it is). Succeeds when nothing of the sandbox
// exists but, possibly, its state dir in the trash. Idempotent: a teardown
// interrupted at any step (a crash) is finished by the next one.
//
// Cost: bounded whatever the sandbox wrote. The state dir is renamed in O(1);
// its contents (a writable layer a sandbox may have filled with millions of
// files or a directory chain tens of thousands deep) are removed later by
// the trash's reaper thread, so a teardown never holds up the worker thread
// that runs it, nor the creates and kills of other sandboxes, and restart
// recovery never walks a sandbox's tree. Only when the rename is impossible
// (a state dir that is itself a mount point) is the dir removed in place.
//
// The sandbox's mounts live only in its own mount namespace, which the
// kernel frees with its last process.
// With `keep_state`, the state dir and the registry record stay (suspend).
Status teardown(const CgroupManager& cgroups, const std::string& registry_dir, const std::string& id,
                pid_t init_pid, std::string state_dir, bool keep_state = false);

}  // namespace coppice::sandbox::ns
