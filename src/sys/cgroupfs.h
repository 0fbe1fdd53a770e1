// Discovery of the host's cgroup hierarchies (v1 controllers, the v2 unified
// hierarchy) from /proc/self/mountinfo.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "common/result.h"

namespace coppice::sys::cgroupfs {

struct Mounts {
  // Mount point of the cgroup2 file system, if one is mounted ("" if not),
  // and the controllers its root offers (cgroup.controllers).
  std::string v2;
  std::string v2_controllers;
  // v1: controller name ("cpu", "memory", "pids", "freezer", ...) to the mount
  // point of the hierarchy that carries it. Co-mounted controllers
  // ("cpu,cpuacct") share one mount point.
  std::map<std::string, std::string> v1;
};

// Parses `mountinfo` text (the format of /proc/self/mountinfo).
Mounts parse_mountinfo(std::string_view mountinfo);

// Reads /proc/self/mountinfo and the v2 root's cgroup.controllers.
Result<Mounts> discover();

}  // namespace coppice::sys::cgroupfs
