// What a sandbox asked to happen when its timeout comes, and to traffic that
// reaches it while paused: E2B's `autoPause`, `autoPauseMemory` and
// `autoResume` on create, reported as `lifecycle: {onTimeout, autoResume}` by
// GET /sandboxes/{id}. A plain value, kept in the sandbox record's extra JSON
// under "lifecycle" (so a restart keeps it). The API parses and validates it
// (api/lifecycle_options.h); core stores and reports it. Acting on `pause`
// and `auto_resume` needs pause to disk: until then the API refuses them.
#pragma once

#include <nlohmann/json.hpp>

namespace coppice::core {

struct LifecyclePolicy {
  // At the timeout: pause the sandbox (E2B's onTimeout "pause", autoPause)
  // rather than kill it (the default).
  bool pause = false;
  // A pause at the timeout keeps the sandbox's memory (true, the default), or
  // only its files (autoPauseMemory: false; resuming it boots it again).
  // Meaningful only with `pause`.
  bool keep_memory = true;
  // Traffic to the paused sandbox resumes it (autoResume.enabled). Only with
  // `pause` and `keep_memory`.
  bool auto_resume = false;
  bool operator==(const LifecyclePolicy&) const = default;
};

// {"onTimeout": "kill"|"pause", "keepMemory": bool, "autoResume": bool}.
inline nlohmann::json to_store_json(const LifecyclePolicy& p) {
  return nlohmann::json{{"onTimeout", p.pause ? "pause" : "kill"}, {"keepMemory", p.keep_memory},
                        {"autoResume", p.auto_resume}};
}

// The policy of a stored record; what is missing or malformed (a record from
// before the field existed) reads as the default.
inline LifecyclePolicy lifecycle_from_store_json(const nlohmann::json& j) {
  LifecyclePolicy p;
  if (!j.is_object()) return p;
  if (auto it = j.find("onTimeout"); it != j.end() && it->is_string()) p.pause = *it == "pause";
  if (auto it = j.find("keepMemory"); it != j.end() && it->is_boolean()) p.keep_memory = it->get<bool>();
  if (auto it = j.find("autoResume"); it != j.end() && it->is_boolean()) p.auto_resume = it->get<bool>();
  return p;
}

// E2B's SandboxLifecycle of sandbox info: {"onTimeout", "autoResume"}.
inline nlohmann::json to_e2b_json(const LifecyclePolicy& p) {
  return nlohmann::json{{"onTimeout", p.pause ? "pause" : "kill"}, {"autoResume", p.auto_resume}};
}

}  // namespace coppice::core
