// Proto3 JSON mapping helpers (the rules protobuf-es applies): fields are read
// under their camelCase or snake_case name, int64 may arrive as a string or a
// number, bytes are base64, enums are names (numbers accepted), and unknown
// fields are ignored. Type mismatches are kInvalidArgument errors naming the
// field.
#pragma once

#include <sys/stat.h>
#include <time.h>

#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/base64.h"
#include "common/result.h"

namespace coppice::pj {

using json = nlohmann::json;

// "exit_code" for "exitCode".
std::string snake_case(std::string_view camel);
// The field under its camelCase or snake_case name; nullptr when absent or null.
const json* field(const json& msg, std::string_view camel);

Result<std::optional<std::string>> get_string(const json& msg, std::string_view name);
Result<std::optional<int64_t>> get_int(const json& msg, std::string_view name);
Result<std::optional<bool>> get_bool(const json& msg, std::string_view name);
// A bytes field, base64-decoded (standard or URL-safe alphabet, padding optional).
Result<std::optional<std::string>> get_bytes(const json& msg, std::string_view name);
// An enum given by name or number; `names` lists (name, number).
Result<std::optional<int>> get_enum(const json& msg, std::string_view name,
                                    const std::vector<std::pair<std::string_view, int>>& names);
Result<std::map<std::string, std::string>> get_string_map(const json& msg, std::string_view name);
Result<std::vector<std::string>> get_string_list(const json& msg, std::string_view name);
// A sub-message; nullptr when absent. Not an object -> error.
Result<const json*> get_message(const json& msg, std::string_view name);

using coppice::base64_decode;  // common/base64.h
using coppice::base64_encode;

// RFC 3339 with nanoseconds trimmed to 0, 3, 6 or 9 digits, as protobuf's Timestamp.
std::string timestamp(const struct timespec& ts);
// int64 values go out as strings.
inline json int64(int64_t v) { return std::to_string(v); }

}  // namespace coppice::pj
