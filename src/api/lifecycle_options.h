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

// Whether this gateway can pause a sandbox when its timeout comes (and
// resume it on traffic). Pause to disk is what makes that safe to promise;
// until it is in, a create asking for either is refused with a 400 that
// says so. Turning this on is all the API needs.
inline constexpr bool kTimeoutPauseSupported = false;

// The policy a create body asks for (the default when it names none).
// kInvalidArgument, with a message naming the field, for a field of the
// wrong type, a value out of range, combinations E2B refuses (autoResume
// without autoPause, autoResume with autoPauseMemory: false, autoPauseMemory
// without autoPause), `lifecycle` disagreeing with the top-level fields, and
// (unless `pause_supported`) anything that needs pausing at the timeout.
Result<core::LifecyclePolicy> parse_lifecycle(const nlohmann::json& body,
                                              bool pause_supported = kTimeoutPauseSupported);

}  // namespace coppice::api
