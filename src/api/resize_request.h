// The body of PATCH /sandboxes/{id} (an extension of E2B's API): a live
// change of a sandbox's CPU and memory limits, {"cpuCount": N, "memoryMB": M},
// either or both.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>

#include "common/result.h"

namespace coppice::api {

struct ResizeRequest {
  std::optional<int> cpu_count;
  std::optional<int> memory_mb;
};

// kInvalidArgument with a message naming the field when the body is not an
// object holding only cpuCount and/or memoryMB (at least one), each a whole
// number from 1 to its maximum (`max_cpu_count` CPUs, `max_memory_mb` MiB;
// 0: only the int32 range bounds it).
Result<ResizeRequest> parse_resize(const nlohmann::json& body, int max_cpu_count, int max_memory_mb);

}  // namespace coppice::api
