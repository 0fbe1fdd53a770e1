#include "interp/requests.h"

#include <algorithm>
#include <cctype>
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

std::optional<std::string> normalize_language(std::string_view language) {
  size_t b = 0, e = language.size();
  while (b < e && std::isspace(static_cast<unsigned char>(language[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(language[e - 1]))) --e;
  std::string l(language.substr(b, e - b));
  std::transform(l.begin(), l.end(), l.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (l.empty() || l == "python" || l == "python3" || l == "py" || l == "ipython") return std::string("python");
  return std::nullopt;
}

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

// A JSON object of strings is also a Python dict literal: JSON's string
// escapes are a subset of Python's, and non-ASCII text stays UTF-8.
std::string set_env_code(const std::map<std::string, std::string>& env) {
  std::string dict = json(env).dump(-1, ' ', false, json::error_handler_t::replace);
  return "(lambda o, e: (setattr(o, '_coppice_saved_env', {k: o.environ.get(k) for k in e}), o.environ.update(e)))"
         "(__import__('os'), " + dict + ")";
}

std::string global_env_code(const std::map<std::string, std::string>& env) {
  return "__import__('os').environ.update(" + json(env).dump(-1, ' ', false, json::error_handler_t::replace) + ")";
}

std::string restore_env_code() {
  return "(lambda o: [o.environ.__setitem__(k, v) if v is not None else o.environ.pop(k, None) "
         "for k, v in o.__dict__.pop('_coppice_saved_env', {}).items()])(__import__('os'))";
}

}  // namespace coppice::interp
