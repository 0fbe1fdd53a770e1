// Cold create of one ns sandbox: the parent-side checklist (launch.cc) around
// the child-side one (child.cc).
#pragma once

#include <string>

#include "common/result.h"
#include "sandbox/backend.h"
#include "sandbox/ns/cgroup.h"
#include "sandbox/ns/disk_quota.h"
#include "sandbox/ns/rootfs.h"
#include "sandbox/ns/spares.h"
#include "sandbox/ns/uid_slots.h"
#include "sys/pidfd_owner.h"
#include "sys/seccomp.h"

namespace coppice::sandbox::ns {

// What launch() needs from the backend, shared by all creates.
struct LaunchContext {
  const CgroupManager* cgroups = nullptr;
  UidSlots* slots = nullptr;
  Spares* spares = nullptr;  // optional: host resources made ahead of time
  const DiskQuota* disk = nullptr;  // optional: state dirs are capped subvolumes
  net::SandboxNetwork* network = nullptr;  // optional: the gateway's network (else loopback only)
  const sys::seccomp::Program* seccomp = nullptr;
  std::string registry_dir;  // <registry_dir>/<id> -> state dir
  int ready_timeout_ms = 10000;
  bool envd_log = true;
  // RLIMIT_NOFILE of every sandbox process (soft, hard), each capped at the
  // gateway's own hard limit; 0/0: inherited.
  uint64_t nofile_soft = 0, nofile_hard = 0;
  // A uid slot the sandbox holds already (a suspended one's): used instead
  // of a new one, and put back here if the launch fails.
  SlotLease* slot = nullptr;
};

// A sandbox launched and ready. Owns its uid slot and the pidfd of its PID 1.
struct Launched {
  SandboxHandle handle;
  SlotLease slot;
  sys::Pidfd init;
};

// Validates the spec, then: uid slot → (spare) → state dir (with its disk
// quota) → registry record
// → cgroups with limits → network (veth, address) → clone into new namespaces → child checklist → exec envd →
// wait for envd's ready byte. Every step is undone if a later one fails.
Result<Launched> launch(const LaunchContext& ctx, const SandboxSpec& spec);

// Checks an id: 1-63 of [a-z0-9-], not starting with '-' nor with "spare-"
// (it becomes a hostname, a cgroup name and a file name).
Status validate_id(const std::string& id);

}  // namespace coppice::sandbox::ns
