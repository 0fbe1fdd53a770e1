// Checkpoint and restore of a sandbox's processes with CRIU (4.x, installed
// by scripts/criu.sh with our patches).
//
// What is taken: envd's tree (envd, pid 2 of the sandbox, and everything it
// started), memory, registers, open files, pipes, PTYs, unix and TCP
// sockets (listening and, optionally, established), timers, seccomp
// filters, credentials. What is not: the namespaces, mounts, cgroups and
// network. A sandbox's mount, pid, network, uts and ipc namespaces belong to
// the host's user namespace (so that its root has no CAP_SYS_ADMIN or
// CAP_NET_ADMIN over them), which CRIU's whole-container mode refuses to
// dump ("namespaces don't belong to the target user namespace"). So criu
// runs *inside* the sandbox's namespaces (all but its user namespace), as
// host root, charged to its cgroups, and sees them as its own: it dumps and
// restores the tree, not the namespaces. A restore goes into a fresh
// sandbox made by launch() (new namespaces, cgroups, veth, the same or
// another writable layer) whose PID 1 waits in --pid1-restore
// (envd/pid1.h); the tree gets a user namespace of its own with the
// checkpoint's uid map (the sandbox's uid range, which the caller keeps
// reserved).
//
// How criu gets in: a helper forks from the caller, joins the sandbox's
// cgroups and namespaces, and starts criu with the host's dynamic loader
// and libraries through file descriptors opened before it entered the
// sandbox's mount namespace (/proc/self/fd/N), so the template needs no
// criu and no libraries of the host. For a restore criu is placed at a pid
// above every pid of the checkpoint (clone3 with set_tid), so none of its own
// processes takes a pid the tree needs.
//
// This machine's hardware breakpoints do not fire for ptrace (criu's
// parasite would never be seen leaving): criu runs with its documented
// no-breakpoints fault knob (CRIU_FAULT=130), which steps instead.
#pragma once

#include <sys/types.h>

#include <string>

#include "common/result.h"
#include "sandbox/ns/cgroup.h"

namespace coppice::sandbox::ns {

// The criu binary: $COPPICE_CRIU, else where scripts/criu.sh puts it.
std::string criu_path();

// Why checkpoints cannot be taken on this host (no criu, too old, no
// dynamic loader...), or "" when they can. Cheap after the first call.
std::string checkpoint_unavailable_reason();

struct CheckpointOptions {
  // Leave the tree running after the dump (a snapshot); else criu kills it
  // once the images are complete, and the sandbox's init exits with it.
  bool leave_running = false;
  // Established TCP connections are dumped (their state, for a restore at
  // the same address) rather than refused.
  bool tcp_established = true;
  int timeout_ms = 120000;
};

// Dumps envd's tree of sandbox `id` (its init is host pid `init`, in its
// cgroups) into `images_dir` (made if missing; must be empty), with criu's
// log there as dump.log. The gateway must hold no connection to envd then
// (a connection from outside the tree is dumped as closed).
Status checkpoint_tree(const CgroupManager& cgroups, const std::string& id, pid_t init,
                       const std::string& images_dir, const CheckpointOptions& opts = {});

// Restores the tree in `images_dir` into sandbox `id`, whose init (host pid
// `init`) runs --pid1-restore; criu's log goes to restore.log there. On
// success envd is running again at pid 2, its listening socket included.
// Established TCP connections come back closed.
Status restore_tree(const CgroupManager& cgroups, const std::string& id, pid_t init, const std::string& images_dir,
                    int timeout_ms = 120000);

}  // namespace coppice::sandbox::ns
