#include "api/template_steps.h"

#include <algorithm>
#include <cctype>
#include <set>

#include "common/strings.h"

namespace coppice::api {
namespace {

using json = nlohmann::json;

std::unexpected<Error> step_error(size_t step, const std::string& what) {
  return std::unexpected(Error(ErrorCode::kInvalidArgument, "step " + std::to_string(step) + ": " + what));
}

// One word for the Dockerfile parser (builder/dockerfile.h): every character
// that the parser would read as a quote, an expansion or a separator is
// taken literally through the escape character. Line breaks cannot be
// written in a Dockerfile word: refused.
Result<std::string> dockerfile_word(std::string_view s, const std::string& what) {
  if (s.empty()) return make_error(ErrorCode::kInvalidArgument, what + " is empty");
  std::string out;
  for (char c : s) {
    if (c == '\n' || c == '\r' || c == '\0')
      return make_error(ErrorCode::kInvalidArgument, what + " holds a line break or a NUL");
    if (c == '\\' || c == '"' || c == '\'' || c == '$' || c == ' ' || c == '\t') out += '\\';
    out += c;
  }
  return out;
}

bool env_name(std::string_view s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  return true;
}

// A user as COPY's --chown and USER take it: name or uid, optionally :group.
bool user_spec(std::string_view s) {
  if (s.empty() || s.size() > 64 || s[0] == '-') return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.' && c != ':') return false;
  return true;
}

// A registry reference only: the image builder also reads local images
// (oci-layout:, docker-archive:), which a remote caller must not name.
Result<std::string> base_image(const json& body) {
  if (body.contains("fromTemplate") && !body["fromTemplate"].is_null())
    return make_error(ErrorCode::kInvalidArgument,
                      "fromTemplate: a Coppice template as the base is not supported; use fromImage");
  if (auto r = body.find("fromImageRegistry"); r != body.end() && !r->is_null()) {
    std::string type = r->is_object() ? r->value("type", std::string("?")) : std::string("?");
    return make_error(ErrorCode::kInvalidArgument, "fromImageRegistry: registry credentials (type \"" +
                                                       type.substr(0, 32) +
                                                       "\") are not supported; the gateway pulls with its own "
                                                       "(skopeo's auth files)");
  }
  auto it = body.find("fromImage");
  if (it == body.end() || !it->is_string() || it->get<std::string>().empty())
    return make_error(ErrorCode::kInvalidArgument, "fromImage: the base image is missing");
  std::string ref = it->get<std::string>();
  if (ref.size() > 512) return make_error(ErrorCode::kInvalidArgument, "fromImage: the reference is too long");
  for (char c : ref) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && std::string_view("._-/:@").find(c) == std::string_view::npos)
      return make_error(ErrorCode::kInvalidArgument,
                        "fromImage \"" + ref.substr(0, 128) + "\" is not an image reference");
  }
  if (ref.starts_with("oci-layout:") || ref.starts_with("docker-archive:") || ref.starts_with("docker:") ||
      ref.find("//") != std::string::npos || ref.starts_with("-") || ref == "scratch")
    return make_error(ErrorCode::kInvalidArgument,
                      "fromImage \"" + ref.substr(0, 128) + "\": only images from a registry are accepted");
  return ref;
}

Result<std::vector<std::string>> string_args(const json& step, size_t n) {
  auto it = step.find("args");
  if (it == step.end() || !it->is_array()) return step_error(n, "args must be an array of strings");
  std::vector<std::string> out;
  for (const auto& a : *it) {
    if (!a.is_string()) return step_error(n, "args must be an array of strings");
    out.push_back(a.get<std::string>());
  }
  return out;
}

// A relative path inside the upload: no absolute path, no "..".
bool inside_upload(std::string_view p) {
  if (p.empty() || p.front() == '/') return false;
  for (const auto& part : split_string(p, '/'))
    if (part == "..") return false;
  return true;
}

}  // namespace

Result<core::TemplateBuildSpec> translate_sdk_build(const json& body) {
  if (!body.is_object()) return make_error(ErrorCode::kInvalidArgument, "the build must be a JSON object");
  core::TemplateBuildSpec out;
  auto base = base_image(body);
  if (!base) return std::unexpected(std::move(base.error()));
  out.dockerfile = "# From the E2B SDK's Template.build()\nFROM " + *base + "\n";
  for (const char* k : {"startCmd", "readyCmd"}) {
    auto it = body.find(k);
    if (it == body.end() || it->is_null()) continue;
    if (!it->is_string()) return make_error(ErrorCode::kInvalidArgument, std::string(k) + " must be a string");
    (std::string_view(k) == "startCmd" ? out.start_cmd : out.ready_cmd) = it->get<std::string>();
  }
  auto steps = body.find("steps");
  if (steps != body.end() && !steps->is_null() && !steps->is_array())
    return make_error(ErrorCode::kInvalidArgument, "steps must be an array");
  // USER as the SDK last set it ("" : never) and as the Dockerfile has it
  // now (a RUN with its own user changes it).
  std::string logical, current;
  bool changed = false;
  auto set_user = [&](const std::string& u) -> Status {
    if (u == current) return ok();
    auto w = dockerfile_word(u, "user");
    if (!w) return std::unexpected(std::move(w.error()));
    out.dockerfile += "USER " + *w + "\n";
    current = u;
    changed = true;
    return ok();
  };
  std::set<std::string> hashes;
  auto note_lines = [&](size_t step) {
    size_t lines = static_cast<size_t>(std::count(out.dockerfile.begin(), out.dockerfile.end(), '\n'));
    while (out.line_steps.size() < lines) out.line_steps.push_back(step);
  };
  note_lines(0);
  size_t n = 0;
  for (const auto& step : (steps == body.end() || steps->is_null()) ? json::array() : *steps) {
    ++n;
    if (!step.is_object() || !step.contains("type") || !step["type"].is_string())
      return step_error(n, "a step must be an object with a string type");
    const std::string type = step["type"].get<std::string>();
    auto args = string_args(step, n);
    if (!args) return std::unexpected(std::move(args.error()));
    const auto& a = *args;
    if (type == "RUN") {
      if (a.empty() || a.size() > 2 || a[0].empty()) return step_error(n, "RUN takes a command and an optional user");
      std::string user = a.size() == 2 && !a[1].empty() ? a[1] : (logical.empty() ? "root" : logical);
      if (!user_spec(user)) return step_error(n, "RUN: \"" + user.substr(0, 64) + "\" is not a user");
      if (auto s = set_user(user); !s) return step_error(n, "RUN: " + s.error().message());
      out.dockerfile += "RUN " + json::array({"/bin/sh", "-c", a[0]}).dump() + "\n";
    } else if (type == "COPY") {
      if (a.size() < 2 || a.size() > 4) return step_error(n, "COPY takes src, dest, user and mode");
      auto h = step.find("filesHash");
      if (h == step.end() || !h->is_string() || !core::valid_files_hash(h->get<std::string>()))
        return step_error(n, "COPY: filesHash must be the 64 hex digits of the upload");
      const std::string hash = h->get<std::string>();
      if (!inside_upload(a[0])) return step_error(n, "COPY: the source \"" + a[0].substr(0, 128) + "\" is not a relative path inside the context");
      if (a[1].empty() || a[1].find('\n') != std::string::npos) return step_error(n, "COPY: a bad destination");
      std::string flags;
      if (a.size() > 2 && !a[2].empty()) {
        if (!user_spec(a[2])) return step_error(n, "COPY: \"" + a[2].substr(0, 64) + "\" is not a user");
        flags += "--chown=" + a[2] + " ";
      }
      if (a.size() > 3 && !a[3].empty()) {
        if (a[3].size() > 4 || a[3].find_first_not_of("01234567") != std::string::npos)
          return step_error(n, "COPY: mode \"" + a[3].substr(0, 16) + "\" is not octal");
        flags += "--chmod=" + a[3] + " ";
      }
      // A COPY runs as root whatever the USER (its --chown decides).
      out.dockerfile += "COPY " + flags + json::array({hash + "/" + a[0], a[1]}).dump() + "\n";
      if (hashes.insert(hash).second) out.file_hashes.push_back(hash);
    } else if (type == "ENV") {
      if (a.empty() || a.size() % 2) return step_error(n, "ENV takes pairs of name and value");
      std::string line = "ENV";
      for (size_t i = 0; i < a.size(); i += 2) {
        if (!env_name(a[i])) return step_error(n, "ENV: \"" + a[i].substr(0, 64) + "\" is not a variable name");
        std::string v;
        if (!a[i + 1].empty()) {
          auto w = dockerfile_word(a[i + 1], "the value of " + a[i]);
          if (!w) return step_error(n, "ENV: " + w.error().message());
          v = *w;
        } else {
          v = "\"\"";
        }
        line += " " + a[i] + "=" + v;
      }
      out.dockerfile += line + "\n";
    } else if (type == "WORKDIR") {
      if (a.size() != 1) return step_error(n, "WORKDIR takes one path");
      auto w = dockerfile_word(a[0], "the path");
      if (!w) return step_error(n, "WORKDIR: " + w.error().message());
      out.dockerfile += "WORKDIR " + *w + "\n";
    } else if (type == "USER") {
      if (a.size() != 1 || !user_spec(a[0])) return step_error(n, "USER takes one user name or uid");
      logical = a[0];
      if (auto s = set_user(a[0]); !s) return step_error(n, "USER: " + s.error().message());
    } else {
      return step_error(n, "the step type \"" + type.substr(0, 32) +
                               "\" is not supported (Coppice builds RUN, COPY, ENV, WORKDIR and USER steps)");
    }
    note_lines(n);
  }
  // The sandbox's default user: the SDK's last setUser, else E2B's `user`
  // when a step with its own user changed USER (without one, the image's).
  if (!logical.empty()) {
    if (auto s = set_user(logical); !s) return std::unexpected(std::move(s.error()));
  } else if (changed) {
    out.dockerfile += "USER user\n";
  }
  note_lines(0);
  return out;
}

}  // namespace coppice::api
