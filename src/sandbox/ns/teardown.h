// Destroying an ns sandbox, with or without its in-memory handle.
#pragma once

#include <string>

#include "common/result.h"
#include "sandbox/ns/cgroup.h"
#include <sys/types.h>

namespace coppice::sandbox::ns {

// Kills every process of sandbox `id` and waits for them to be gone, removes
// its cgroups, its state dir and its registry record. `init_pid` is the host
// pid of its PID 1 when the caller knows it (-1: found through the cgroup);
// `state_dir` may be empty (then the registry says where it is). Succeeds when
// nothing of the sandbox exists. The sandbox's mounts live only in its own
// mount namespace, which the kernel frees with its last process.
Status teardown(const CgroupManager& cgroups, const std::string& registry_dir, const std::string& id,
                pid_t init_pid, std::string state_dir);

}  // namespace coppice::sandbox::ns
