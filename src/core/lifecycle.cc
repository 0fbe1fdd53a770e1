#include "core/lifecycle.h"

namespace coppice::core {

using S = SandboxState;

std::string_view state_label(SandboxState s) {
  switch (s) {
    case S::kCreating: return "creating";
    case S::kPooled: return "pooled";
    case S::kRunning: return "running";
    case S::kPausing: return "pausing";
    case S::kPaused: return "paused";
    case S::kResuming: return "resuming";
    case S::kKilling: return "killing";
    case S::kGone: return "gone";
  }
  return "unknown";
}

std::string_view state_name(SandboxState s) {
  return (s == S::kPaused || s == S::kResuming) ? "paused" : "running";
}

bool visible(SandboxState s) {
  return s == S::kRunning || s == S::kPausing || s == S::kPaused || s == S::kResuming;
}

namespace {
bool legal(S from, S to) {
  switch (from) {
    case S::kPooled: return to == S::kCreating || to == S::kGone;
    case S::kCreating: return to == S::kRunning || to == S::kGone;
    case S::kRunning: return to == S::kPausing || to == S::kKilling;
    case S::kPausing: return to == S::kPaused || to == S::kRunning || to == S::kKilling;
    case S::kPaused: return to == S::kResuming || to == S::kKilling;
    case S::kResuming: return to == S::kRunning || to == S::kPaused || to == S::kKilling;
    case S::kKilling: return to == S::kGone || to == S::kRunning || to == S::kPaused;
    case S::kGone: return false;
  }
  return false;
}

bool settled(S s) { return s == S::kRunning || s == S::kPaused; }
}  // namespace

Status check_transition(std::string_view id, SandboxState from, SandboxState to) {
  if (legal(from, to)) return ok();
  std::string who = "sandbox " + std::string(id);
  if (!visible(from)) return make_error(ErrorCode::kNotFound, who + " not found");
  if (!settled(from))
    return make_error(ErrorCode::kFailedPrecondition, who + " is " + std::string(state_label(from)) + "; try again");
  // Settled, and the target is not reachable from here: say what it is.
  std::string what;
  switch (to) {
    case S::kPausing: what = from == S::kPaused ? " is already paused" : " cannot be paused"; break;
    case S::kResuming: what = from == S::kRunning ? " is already running" : " cannot be resumed"; break;
    default:
      what = " is " + std::string(state_label(from)) + " and cannot become " + std::string(state_label(to));
  }
  return make_error(ErrorCode::kFailedPrecondition, who + what);
}

}  // namespace coppice::core
