#include "interp/requests.h"

#include <nlohmann/json.hpp>

namespace coppice::interp {

using json = nlohmann::json;

namespace {
// A string field: absent or null -> nullopt; another type is an error.
Result<std::optional<std::string>> opt_string(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<std::string>{};
  if (!it->is_string()) return make_error(ErrorCode::kInvalidArgument, std::string(key) + " must be a string");
  return std::optional<std::string>(it->get<std::string>());
}

Result<json> parse_object(std::string_view body) {
  json j = json::parse(body.empty() ? std::string_view("{}") : body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return make_error(ErrorCode::kInvalidArgument, "the body must be a JSON object");
  return j;
}
}  // namespace

Result<ExecuteRequest> parse_execute_request(std::string_view body) {
  auto j = parse_object(body);
  if (!j) return std::unexpected(j.error());
  ExecuteRequest r;
  auto code = j->find("code");
  if (code == j->end() || !code->is_string()) return make_error(ErrorCode::kInvalidArgument, "code must be a string");
  r.code = code->get<std::string>();
  auto ctx = opt_string(*j, "context_id");
  if (!ctx) return std::unexpected(ctx.error());
  auto lang = opt_string(*j, "language");
  if (!lang) return std::unexpected(lang.error());
  r.context_id = *ctx;
  r.language = *lang;
  if (r.context_id && r.language) {
    return make_error(ErrorCode::kInvalidArgument, "Only one of context_id or language can be provided");
  }
  auto envs = j->find("env_vars");
  if (envs != j->end() && !envs->is_null()) {
    if (!envs->is_object()) return make_error(ErrorCode::kInvalidArgument, "env_vars must be an object of strings");
    for (auto it = envs->begin(); it != envs->end(); ++it) {
      const std::string& k = it.key();
      if (!it.value().is_string()) {
        return make_error(ErrorCode::kInvalidArgument, "env_vars." + k + " must be a string");
      }
      if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos) {
        return make_error(ErrorCode::kInvalidArgument, "env_vars: invalid variable name '" + k + "'");
      }
      std::string v = it.value().get<std::string>();
      if (v.find('\0') != std::string::npos) {
        return make_error(ErrorCode::kInvalidArgument, "env_vars." + k + " contains a NUL byte");
      }
      r.env_vars[k] = std::move(v);
    }
  }
  return r;
}

Result<CreateContextRequest> parse_create_context_request(std::string_view body) {
  auto j = parse_object(body);
  if (!j) return std::unexpected(j.error());
  CreateContextRequest r;
  auto lang = opt_string(*j, "language");
  if (!lang) return std::unexpected(lang.error());
  auto cwd = opt_string(*j, "cwd");
  if (!cwd) return std::unexpected(cwd.error());
  r.language = *lang;
  r.cwd = *cwd;
  return r;
}

}  // namespace coppice::interp
