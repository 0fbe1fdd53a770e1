// Volumes in core: the checks the API and the manager share. The
// operations themselves are SandboxManager's (volumes.cc); the store keeps
// the volumes and which sandbox has which mounted (store.h).
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace coppice::core {

// A volume to mount in a sandbox: which (id and name, from the store) and
// where (a path checked by clean_mount_path).
struct VolumeMountParam {
  std::string volume_id;
  std::string name;
  std::string path;
};

// Checks a mount path inside a sandbox and returns it without repeated or
// trailing slashes: absolute, at most 1024 bytes, no control characters, no
// "." or ".." components, not "/" itself and not in /proc, /sys, /dev or
// /.coppice (the sandbox's kernel views and Coppice's own). kInvalidArgument
// naming what is wrong.
Result<std::string> clean_mount_path(std::string_view path);

// Largest volume cap a create may ask for (MiB): 16 TiB.
inline constexpr int64_t kMaxVolumeMb = int64_t(1) << 24;

}  // namespace coppice::core
