// Parsing of the lifecycle options of a create (POST /sandboxes and
// /v2/sandboxes), as the e2b SDKs send them: `autoPause` (bool),
// `autoPauseMemory` (bool, only with autoPause: true) and `autoResume`
// ({"enabled": bool}; a bare bool is taken too), or the SDK's own shape under
// `lifecycle` ({"onTimeout": "kill"|"pause"|{"action", "keepMemory"},
// "autoResume": bool}). Both may be given if they agree.
#pragma once

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "core/lifecycle_policy.h"

namespace coppice::api {

// The policy a create body asks for (the default when it names none).
// kInvalidArgument, with a message naming the field, for a field of the
// wrong type, a value out of range, combinations E2B refuses (autoResume
// without autoPause, autoResume with autoPauseMemory: false, autoPauseMemory
// without autoPause), `lifecycle` disagreeing with the top-level fields, and
// what the gateway cannot do: pausing at the timeout at all unless
// `pause_supported` (pause to disk, files only), pausing with memory (and so
// autoResume) unless `memory_pause_supported`.
Result<core::LifecyclePolicy> parse_lifecycle(const nlohmann::json& body, bool pause_supported,
                                              bool memory_pause_supported = false);

}  // namespace coppice::api
