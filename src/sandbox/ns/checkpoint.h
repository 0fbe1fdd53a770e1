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
// (envd/pid1.h); the tree joins that sandbox's user namespace (our criu
// patch join-ns-not-cloned), so it must map the checkpoint's uids: the same
// uid range, which the caller keeps reserved.
//
// How criu gets in: a helper forks from the caller, joins the sandbox's
// cgroups and namespaces, and starts criu with the host's dynamic loader
// and libraries through file descriptors opened before it entered the
// sandbox's mount namespace (/proc/self/fd/N), so the template needs no
// criu and no libraries of the host. For a restore criu is placed at a pid
// above every pid of the checkpoint (clone3 with set_tid), so none of its own
// processes takes a pid the tree needs.
//
// Not yet: a tree of more than one process. The restored tasks join the
// sandbox's user namespace (--join-ns user) and fork their children at
// their old pids (clone3 set_tid), which needs CAP_CHECKPOINT_RESTORE over
// the pid namespace's owner; a sandbox's pid namespace belongs to the host's
// user namespace, so that fork fails (EPERM). A restore-mode sandbox whose
// pid namespace its user namespace owns needs its /proc mounted from inside
// (a pid namespace cannot be named before its init exists), hence its mount
// namespace owned by that user namespace too: the next step.
//
// This machine's hardware breakpoints do not fire for ptrace (criu's
// parasite would never be seen leaving): criu runs with its documented
// no-breakpoints fault knob (CRIU_FAULT=130), which steps instead.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "sandbox/ns/cgroup.h"

namespace coppice::sandbox::ns {

// The criu binary: $COPPICE_CRIU, else where scripts/criu.sh puts it.
std::string criu_path();

// A boot id as the kernel shows it: 36 characters, lower-case hex and dashes
// (8-4-4-4-12).
bool valid_boot_id(std::string_view id);

// The boot id the checkpointed tree saw ("" if the checkpoint has none):
// a restore keeps it, a cold boot gets a new one.
std::string checkpoint_boot_id(const std::string& images_dir);

// Whether sandbox `id`, whose init is host pid `init`, runs nothing but its
// init (pid 1 in it) and envd (kEnvdPid) and has nothing in its /dev/shm
// (resolved in its root). False when anything cannot be read.
bool runs_only_its_own(const CgroupManager& cgroups, const std::string& id, pid_t init);

// Whether `images_dir` holds a whole checkpoint: criu finished writing it
// and it is on disk (checkpoint_tree marks it so before it ends the tree).
// A gateway killed during a pause decides from this whether the sandbox is
// paused (its processes may be gone) or still running.
bool checkpoint_complete(const std::string& images_dir);

// Processes of sandbox `id` that a checkpoint cut short left stopped (criu
// --leave-stopped, its caller killed before it ended them): waits for a
// criu still at work in the sandbox (at most `wait_ms`), then sends every
// process SIGCONT.
Status continue_stopped(const CgroupManager& cgroups, const std::string& id, int wait_ms = 60000);

// Whether a checkpoint holds sandbox `id`: criu or its helper at work in
// it, or envd left stopped (criu --leave-stopped, its caller gone).
bool held_by_checkpoint(const CgroupManager& cgroups, const std::string& id);

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
  // Whole and on disk before it counts as complete (syncfs, a pause that
  // must outlive a crash). Off for a checkpoint that is only read at once
  // and thrown away (a fork's): its images stay in the page cache.
  bool durable = true;
  // With leave_running: run while the dumped tree is still stopped (criu
  // --leave-stopped), then continue it; what it takes (the files) is of the
  // same instant as the memory. The tasks stopped before the dump stay so.
  std::function<Status()> while_stopped;
  int timeout_ms = 120000;
};

// Dumps envd's tree of sandbox `id` (its init is host pid `init`, in its
// cgroups) into `images_dir` (made if missing; must be empty), with criu's
// log there as dump.log. The gateway must hold no connection to envd then
// (a connection from outside the tree is dumped as closed).
Status checkpoint_tree(const CgroupManager& cgroups, const std::string& id, pid_t init,
                       const std::string& images_dir, const CheckpointOptions& opts = {});

// Restores the tree in `images_dir` into sandbox `id`, whose init (host pid
// `init`) runs --pid1-restore. On success envd is running again at pid 2,
// its listening socket included. Established TCP connections come back
// closed. criu works (restore.log, its stats) in `work_dir`, made if
// missing; "" means `images_dir`. With a work dir of its own a restore only
// reads `images_dir`, so that several restores can share one checkpoint at
// once (a fork's children).
Status restore_tree(const CgroupManager& cgroups, const std::string& id, pid_t init, const std::string& images_dir,
                    const std::string& work_dir = "", int timeout_ms = 120000);

}  // namespace coppice::sandbox::ns
