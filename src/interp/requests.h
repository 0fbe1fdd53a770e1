// The code interpreter's request bodies, checked and typed. E2B-facing JSON:
// unknown fields are ignored, null counts as absent.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "interp/languages.h"

namespace coppice::interp {

struct ExecuteRequest {
  std::string code;
  std::optional<std::string> context_id;
  std::optional<std::string> language;  // as sent; normalised by the caller
  std::map<std::string, std::string> env_vars;
};

// kInvalidArgument with a message for the client on a bad body (including
// both context_id and language given).
Result<ExecuteRequest> parse_execute_request(std::string_view body);

struct CreateContextRequest {
  std::optional<std::string> language;
  std::optional<std::string> cwd;
};
Result<CreateContextRequest> parse_create_context_request(std::string_view body);

}  // namespace coppice::interp
