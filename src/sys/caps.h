// Capability sets, for cutting a sandbox's root down before exec.
#pragma once

#include <linux/capability.h>

#include <cstdint>

namespace coppice::sys::caps {

constexpr uint64_t bit(int cap) { return uint64_t{1} << cap; }

// The default set of docker/runc/containerd: what a container's root gets.
// Deliberately absent: CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_SYS_PTRACE,
// CAP_SYS_MODULE, CAP_DAC_READ_SEARCH (open_by_handle_at escapes), CAP_SYS_TIME...
constexpr uint64_t kContainerDefault =
    bit(CAP_CHOWN) | bit(CAP_DAC_OVERRIDE) | bit(CAP_FOWNER) | bit(CAP_FSETID) | bit(CAP_KILL) |
    bit(CAP_SETGID) | bit(CAP_SETUID) | bit(CAP_SETPCAP) | bit(CAP_NET_BIND_SERVICE) | bit(CAP_NET_RAW) |
    bit(CAP_SYS_CHROOT) | bit(CAP_MKNOD) | bit(CAP_AUDIT_WRITE) | bit(CAP_SETFCAP);

// Limits the calling thread to `keep`: drops every other capability from the
// bounding set (so exec of a root process cannot regain it), clears the
// ambient set, and sets effective = permitted = `keep`, inheritable = empty.
// Async-signal-safe; returns 0 or an errno. Needs CAP_SETPCAP in the current
// user namespace (a process that has just entered its user namespace has it).
int limit_to(uint64_t keep);

// Reads the calling thread's bounding set (for tests).
uint64_t bounding_set();

}  // namespace coppice::sys::caps
