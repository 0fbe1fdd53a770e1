// What is mounted in and over the builder's directories: mmdebstrap mounts
// /proc, /sys and /dev in a tree it builds as root, and sandboxes keep a
// template's tree mounted while they run. Nothing may be deleted through a
// mount point, and a tree a sandbox still uses must not be deleted at all.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace coppice::builder {

// Mount points at `dir` or below it in `mountinfo` (the text of
// /proc/<pid>/mountinfo), deepest first.
std::vector<std::string> mount_points_under(std::string_view mountinfo, const std::string& dir);

// Detaches every mount at or below `dir` in our mount namespace.
Status unmount_under(const std::string& dir);


// Removes a build's tree: first what is mounted in it, then the files,
// without following symlinks. Refuses when something stays mounted there.
Status remove_build_tree(const std::string& dir);

}  // namespace coppice::builder
