#include "builder/image_config.h"

#include <sys/utsname.h>

#include <nlohmann/json.hpp>

#include "builder/dockerfile.h"

namespace coppice::builder {
namespace {

using json = nlohmann::json;

Result<std::vector<std::string>> strings(const json& c, const char* key) {
  auto it = c.find(key);
  if (it == c.end() || it->is_null()) return std::vector<std::string>{};
  if (!it->is_array()) return make_error(ErrorCode::kInvalidArgument, std::string("config.") + key + " is not an array");
  std::vector<std::string> out;
  for (const auto& e : *it) {
    if (!e.is_string())
      return make_error(ErrorCode::kInvalidArgument, std::string("config.") + key + " holds a non-string");
    out.push_back(e.get<std::string>());
  }
  return out;
}

Result<std::string> string_field(const json& c, const char* key, const char* where) {
  auto it = c.find(key);
  if (it == c.end() || it->is_null()) return std::string();
  if (!it->is_string()) return make_error(ErrorCode::kInvalidArgument, std::string(where) + key + " is not a string");
  return it->get<std::string>();
}

}  // namespace

Result<ImageConfig> parse_image_config(std::string_view json_text) {
  json j = json::parse(json_text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return make_error(ErrorCode::kInvalidArgument, "the image config is not a JSON object");
  ImageConfig out;
  COPPICE_ASSIGN_OR_RETURN(out.architecture, string_field(j, "architecture", ""));
  COPPICE_ASSIGN_OR_RETURN(out.os, string_field(j, "os", ""));
  auto c = j.find("config");
  if (c == j.end() || c->is_null()) return out;
  if (!c->is_object()) return make_error(ErrorCode::kInvalidArgument, "config is not an object");
  COPPICE_ASSIGN_OR_RETURN(auto env, strings(*c, "Env"));
  for (const auto& e : env) {
    size_t eq = e.find('=');
    if (eq == std::string::npos || eq == 0)
      return make_error(ErrorCode::kInvalidArgument, "config.Env entry \"" + e + "\" is not NAME=value");
    set_env(out.env, e.substr(0, eq), e.substr(eq + 1));
  }
  COPPICE_ASSIGN_OR_RETURN(out.workdir, string_field(*c, "WorkingDir", "config."));
  if (!out.workdir.empty() && out.workdir[0] != '/')
    return make_error(ErrorCode::kInvalidArgument, "config.WorkingDir \"" + out.workdir + "\" is not absolute");
  COPPICE_ASSIGN_OR_RETURN(out.user, string_field(*c, "User", "config."));
  COPPICE_ASSIGN_OR_RETURN(out.entrypoint, strings(*c, "Entrypoint"));
  COPPICE_ASSIGN_OR_RETURN(out.cmd, strings(*c, "Cmd"));
  return out;
}

std::string start_command(const std::vector<std::string>& entrypoint, const std::vector<std::string>& cmd) {
  std::vector<std::string> argv = entrypoint;
  argv.insert(argv.end(), cmd.begin(), cmd.end());
  return shell_join(argv);
}

std::string host_architecture() {
  struct utsname u {};
  if (::uname(&u) != 0) return "";
  std::string m = u.machine;
  if (m == "x86_64") return "amd64";
  if (m == "aarch64") return "arm64";
  if (m == "i686" || m == "i386") return "386";
  return m;
}

void set_env(std::vector<std::string>& env, const std::string& name, const std::string& value) {
  for (auto& e : env) {
    if (e.size() > name.size() && e.compare(0, name.size(), name) == 0 && e[name.size()] == '=') {
      e = name + "=" + value;
      return;
    }
  }
  env.push_back(name + "=" + value);
}

}  // namespace coppice::builder
