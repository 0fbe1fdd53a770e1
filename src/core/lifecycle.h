// A sandbox's lifecycle: its states and the one function that decides which
// changes are legal. Every change of a sandbox's state in core goes through
// check_transition (SandboxManager::transition), so an action that is wrong
// for the state is refused the same way everywhere: kFailedPrecondition (the
// API's 409) with a message that says what the sandbox is doing.
//
//                 taken from a pool
//   Pooled ─────────────────────────┐
//     │                             ▼
//     │            Creating ──► Running ──► Pausing ──► Paused
//     │               │          ▲  │ ▲        │          │ ▲
//     │               │          │  │ └────────┘(failed)   │ │(failed)
//     │               │          │  │                     ▼ │
//     │               │          │  │                  Resuming
//     │               │          └──┼─────────────────────┘
//     ▼               ▼             ▼
//    Gone ◄──────── (failed)     Killing ──► Gone   (Paused ─► Killing too;
//                                                   a failed teardown returns
//                                                   to the state it left)
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace coppice::core {

enum class SandboxState {
  kCreating,  // being made (cold) or finished after a pool checkout; invisible
  kPooled,    // started ahead of demand in a warm pool; invisible
  kRunning,
  kPausing,
  kPaused,
  kResuming,
  kKilling,   // being torn down; invisible
  kGone,      // removed; the record is about to be dropped
};

// Lower-case name of a state ("running", "pausing", ...).
std::string_view state_label(SandboxState s);
// What E2B reports: "running" or "paused" (a transitional state as the state
// it is leaving, so a sandbox being paused still lists as running).
std::string_view state_name(SandboxState s);
// Whether clients can see (get, list, route to) a sandbox in this state.
bool visible(SandboxState s);

// ok() if a sandbox may go from `from` to `to`; otherwise
// kFailedPrecondition naming the sandbox `id` and what it is doing, e.g.
// "sandbox X is already paused" or "sandbox X is pausing; try again".
Status check_transition(std::string_view id, SandboxState from, SandboxState to);

}  // namespace coppice::core
