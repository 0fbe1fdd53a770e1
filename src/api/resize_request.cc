#include "api/resize_request.h"

#include <cstdint>
#include <string>

namespace coppice::api {

namespace {

using json = nlohmann::json;

Result<std::optional<int>> bounded(const json& body, const char* key, int max, const char* unit) {
  auto it = body.find(key);
  if (it == body.end()) return std::optional<int>{};
  const int64_t top = max > 0 ? max : INT32_MAX;
  const std::string range = std::string(key) + " must be a whole number of " + unit + " from 1 to " +
                            std::to_string(top) + (max > 0 ? " (this gateway's maximum)" : "");
  if (!it->is_number_integer()) return make_error(ErrorCode::kInvalidArgument, range + ", got " + it->dump());
  // is_number_integer holds for unsigned values too; one beyond int64 reads
  // as unsigned and is out of range either way.
  if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(top)) {
    return make_error(ErrorCode::kInvalidArgument, range + ", got " + it->dump());
  }
  const int64_t v = it->get<int64_t>();
  if (v < 1 || v > top) return make_error(ErrorCode::kInvalidArgument, range + ", got " + it->dump());
  return std::optional<int>(static_cast<int>(v));
}

}  // namespace

Result<ResizeRequest> parse_resize(const json& body, int max_cpu_count, int max_memory_mb) {
  if (!body.is_object()) return make_error(ErrorCode::kInvalidArgument, "the body must be a JSON object");
  for (auto it = body.begin(); it != body.end(); ++it) {
    if (it.key() != "cpuCount" && it.key() != "memoryMB") {
      return make_error(ErrorCode::kInvalidArgument,
                        "unknown field \"" + it.key() + "\": a resize takes cpuCount and memoryMB");
    }
  }
  ResizeRequest r;
  COPPICE_ASSIGN_OR_RETURN(r.cpu_count, bounded(body, "cpuCount", max_cpu_count, "CPUs"));
  COPPICE_ASSIGN_OR_RETURN(r.memory_mb, bounded(body, "memoryMB", max_memory_mb, "MiB"));
  if (!r.cpu_count && !r.memory_mb) {
    return make_error(ErrorCode::kInvalidArgument, "a resize needs cpuCount and/or memoryMB");
  }
  return r;
}

}  // namespace coppice::api
