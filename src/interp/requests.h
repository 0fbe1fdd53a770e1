// The code interpreter's request bodies, checked and typed, and the small
// pieces of Python the server runs around a user's code. E2B-facing JSON:
// unknown fields are ignored, null counts as absent.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace coppice::interp {

// The languages this server runs, as one line for error messages.
inline constexpr std::string_view kLanguagesServed = "python (also accepted as python3, py, ipython)";

// "python" for any spelling of Python (case and surrounding blanks ignored;
// absent or empty means Python too); nullopt for a language not served.
std::optional<std::string> normalize_language(std::string_view language);

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

// Python that saves the current values of env's names and sets them, and
// Python that puts the saved values back (removing names that were unset).
// Both are run silently around one execution.
std::string set_env_code(const std::map<std::string, std::string>& env);
std::string restore_env_code();
// Python that sets env's names for good (the sandbox's own environment).
std::string global_env_code(const std::map<std::string, std::string>& env);

}  // namespace coppice::interp
