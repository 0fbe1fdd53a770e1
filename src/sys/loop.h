// Loop devices: a regular file seen as a block device, for a file system
// image mounted by the gateway (sandbox/ns/disk_quota.h).
#pragma once

#include <string>

#include "common/result.h"
#include "sys/fd.h"

namespace coppice::sys {

// An attached loop device and the fd that holds it. Attached with
// LO_FLAGS_AUTOCLEAR: the kernel detaches it once the last user is gone,
// i.e. once this fd is closed and nothing mounts it any more. So a caller
// mounts the device and then simply drops the LoopDevice; closing the fd
// without mounting detaches the device again (a failed mount leaves nothing).
struct LoopDevice {
  UniqueFd fd;       // the open /dev/loopN
  std::string path;  // "/dev/loopN"
};

// Attaches `image` (a regular file, opened read-write) to a free loop device
// (LOOP_CTL_GET_FREE + LOOP_CONFIGURE). Retries when another process takes
// the free device first. Fails with the errno of the failing step.
Result<LoopDevice> loop_attach(const std::string& image);

// The loop device ("/dev/loopN") whose backing file is `image` (compared by
// device and inode, so any path to it matches), or "" when none is. Reads
// /sys/block/loop*/loop/backing_file and stats the backing file it names.
Result<std::string> loop_find(const std::string& image);

}  // namespace coppice::sys
