#include "api/lifecycle_options.h"

#include <optional>
#include <string>

namespace coppice::api {

namespace {

using json = nlohmann::json;

Error bad(const std::string& message) { return Error(ErrorCode::kInvalidArgument, message); }

// The field `key` of `obj` when present and not null.
const json* field(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

Result<std::optional<bool>> optional_bool(const json& obj, const char* key, const std::string& name) {
  const json* v = field(obj, key);
  if (!v) return std::optional<bool>{};
  if (!v->is_boolean()) return std::unexpected(bad(name + " must be a boolean, got " + v->dump()));
  return std::optional<bool>(v->get<bool>());
}

// What one of the two shapes says; unset fields stay unset.
struct Asked {
  std::optional<bool> pause, keep_memory, auto_resume;
};

Result<Asked> top_level(const json& body) {
  Asked a;
  COPPICE_ASSIGN_OR_RETURN(a.pause, optional_bool(body, "autoPause", "autoPause"));
  COPPICE_ASSIGN_OR_RETURN(a.keep_memory, optional_bool(body, "autoPauseMemory", "autoPauseMemory"));
  if (const json* r = field(body, "autoResume")) {
    if (r->is_boolean()) {
      a.auto_resume = r->get<bool>();
    } else if (r->is_object()) {
      const json* e = field(*r, "enabled");
      if (!e || !e->is_boolean()) {
        return std::unexpected(bad("autoResume.enabled must be a boolean, got " + (e ? e->dump() : "nothing")));
      }
      a.auto_resume = e->get<bool>();
    } else {
      return std::unexpected(bad("autoResume must be an object {\"enabled\": boolean}, got " + r->dump()));
    }
  }
  return a;
}

Result<Asked> sdk_shape(const json& body) {
  Asked a;
  const json* l = field(body, "lifecycle");
  if (!l) return a;
  if (!l->is_object()) return std::unexpected(bad("lifecycle must be an object, got " + l->dump()));
  auto action = [](const json& v, const std::string& name) -> Result<bool> {
    if (!v.is_string() || (v != "kill" && v != "pause")) {
      return std::unexpected(bad(name + " must be \"kill\" or \"pause\", got " + v.dump()));
    }
    return v == "pause";
  };
  if (const json* t = field(*l, "onTimeout")) {
    if (t->is_object()) {
      const json* act = field(*t, "action");
      if (!act) return std::unexpected(bad("lifecycle.onTimeout.action is required"));
      COPPICE_ASSIGN_OR_RETURN(bool pause, action(*act, "lifecycle.onTimeout.action"));
      a.pause = pause;
      COPPICE_ASSIGN_OR_RETURN(a.keep_memory, optional_bool(*t, "keepMemory", "lifecycle.onTimeout.keepMemory"));
      if (a.keep_memory && !pause) {
        return std::unexpected(bad("lifecycle.onTimeout.keepMemory is only allowed with action \"pause\""));
      }
    } else {
      COPPICE_ASSIGN_OR_RETURN(bool pause, action(*t, "lifecycle.onTimeout"));
      a.pause = pause;
    }
  }
  COPPICE_ASSIGN_OR_RETURN(a.auto_resume, optional_bool(*l, "autoResume", "lifecycle.autoResume"));
  return a;
}

// `a` and `b` merged; kInvalidArgument when both set a field differently.
Result<std::optional<bool>> agree(std::optional<bool> a, std::optional<bool> b, const char* top, const char* sdk) {
  if (a && b && *a != *b) {
    return std::unexpected(bad(std::string(top) + " and " + sdk + " disagree; give one or make them agree"));
  }
  return a ? a : b;
}

}  // namespace

Result<core::LifecyclePolicy> parse_lifecycle(const json& body, bool pause_supported, bool memory_pause_supported) {
  COPPICE_ASSIGN_OR_RETURN(Asked top, top_level(body));
  COPPICE_ASSIGN_OR_RETURN(Asked sdk, sdk_shape(body));
  COPPICE_ASSIGN_OR_RETURN(auto pause, agree(top.pause, sdk.pause, "autoPause", "lifecycle.onTimeout"));
  COPPICE_ASSIGN_OR_RETURN(auto keep, agree(top.keep_memory, sdk.keep_memory, "autoPauseMemory",
                                            "lifecycle.onTimeout.keepMemory"));
  COPPICE_ASSIGN_OR_RETURN(auto resume, agree(top.auto_resume, sdk.auto_resume, "autoResume", "lifecycle.autoResume"));
  core::LifecyclePolicy p;
  p.pause = pause.value_or(false);
  p.keep_memory = keep.value_or(true);
  p.auto_resume = resume.value_or(false);
  // E2B's rules: the memory flag is about the pause at the timeout; traffic
  // can wake only a sandbox that paused with its memory.
  if (keep && !p.pause) {
    return std::unexpected(bad("autoPauseMemory applies only to a sandbox that pauses on timeout (autoPause: true)"));
  }
  if (p.auto_resume && !p.pause) {
    return std::unexpected(bad("autoResume can be enabled only for a sandbox that pauses on timeout (autoPause: true)"));
  }
  if (p.auto_resume && !p.keep_memory) {
    return std::unexpected(bad("autoResume cannot be combined with autoPauseMemory: false: a sandbox paused without "
                               "its memory boots again on resume and must be resumed explicitly (connect)"));
  }
  if (!pause_supported && p.pause) {
    return std::unexpected(bad(std::string(p.auto_resume ? "autoResume and " : "") +
                               "autoPause (lifecycle.onTimeout: \"pause\", pause on timeout) is not supported by "
                               "this gateway yet: it needs pause to disk"));
  }
  if (!memory_pause_supported && p.pause && p.keep_memory) {
    return std::unexpected(bad(std::string(p.auto_resume ? "autoResume and " : "") +
                               "autoPause with memory (the default) is not supported by this gateway: it "
                               "cannot checkpoint a sandbox's memory (no criu); autoPauseMemory: false (keepMemory: "
                               "false) pauses the files only"));
  }
  return p;
}

}  // namespace coppice::api
