// Directory snapshots: one subtree of a running sandbox copied out to the
// host, and such a copy copied into a sandbox (the same or another).
//
// Paths are resolved inside the sandbox's root (openat2 RESOLVE_IN_ROOT on
// /proc/<init>/root): a symlink the sandbox planted resolves within its own
// tree, never to the host's; magic links (/proc/self/...) are refused. The
// copy (sys::copy_tree) follows no symlink and enters no mount below.
// Owners: the copy keeps the host ids the source sandbox's files have; a
// restore reads it through an idmapped mount whose user namespace maps the
// source's range onto the target's, so the files land owned by the
// target's users without a walk to chown them.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "common/result.h"
#include "sys/pidfd_owner.h"

namespace coppice::sandbox::ns {

struct DirCopyLimits {
  uint64_t max_bytes = 1ull << 30;  // what the subtree may hold (allocated bytes)
  uint64_t max_entries = 100000;    // files, directories and links in it
};

// Copies directory `path` (absolute, inside the sandbox whose PID 1 `init`
// pins) to the host dir `dst` (must not exist; its parent must). Returns
// the bytes it holds. kInvalidArgument for a path that is not a directory
// there or escapes through a magic link; kTooLarge past `limits` (nothing
// is copied then); kNotFound when the path or the sandbox is gone.
Result<uint64_t> save_sandbox_dir(const sys::Pidfd& init, const std::string& path, const std::string& dst,
                                  const DirCopyLimits& limits = {});

// Copies the host dir `src` (made by save_sandbox_dir from a sandbox whose
// root was host uid `src_root`) to `path` in the sandbox whose PID 1
// `init` pins and whose root is `dst_root`. `path` must not exist
// (kAlreadyExists) and its parent must be a directory (kNotFound).
Status restore_sandbox_dir(const sys::Pidfd& init, uid_t dst_root, const std::string& src, uid_t src_root,
                           const std::string& path);

// Applies the overlayfs writable layer `layer` (a frozen copy of the upper
// dir of a sandbox whose root was host uid `layer_root`; checked with
// sys::scan_overlay_layer) to the root of the sandbox whose PID 1 `init`
// pins and whose root is `dst_root`, through a detached copy of its root
// mount: deletions, replaced directories and new or changed files land in
// its own writable layer, owned by its users (sys::merge_overlay_layer).
// Returns the entries applied. For a sandbox nobody has run code in yet
// (what a fork gives a spare): one in use could see the merge half done.
Result<uint64_t> merge_layer_into(const sys::Pidfd& init, uid_t dst_root, const std::string& layer, uid_t layer_root);

}  // namespace coppice::sandbox::ns
