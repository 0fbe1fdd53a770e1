// Where destroyed sandboxes' state dirs go to be removed off everyone's
// critical path.
//
// A sandbox's writable layer is a tree the sandbox shaped: millions of files
// or a chain of directories tens of thousands deep take seconds to remove.
// Teardown therefore only renames the state dir into the trash beside it,
//   <dirname(state_dir)>/.trash/<basename>.<n>      (e.g. <state>/sandboxes/.trash/)
// which is O(1) on the same file system, and one reaper thread per trash dir
// empties the trash in the background (nice 10), one entry at a time, with
// sys::TreeRemover (bounded memory and fds, no symlink followed, no mount
// entered). Sandbox ids never start with '.', so the trash is never a
// sandbox's state dir.
//
// Crash behaviour: the trash is plain directories, so whatever a killed
// gateway left there is emptied by the next process's reaper, which starts
// (and first empties what it finds) at the first create or teardown that
// touches that trash. An entry that cannot be removed (a mount inside it) is
// logged and retried at the next wake-up, not in a loop.
#pragma once

#include <chrono>
#include <string>

#include "common/result.h"

namespace coppice::sandbox::ns {

// The trash dir for state dirs in the parent of `state_dir`.
std::string trash_dir_for(const std::string& state_dir);

// Renames `state_dir` into its trash (made if missing) and wakes the trash's
// reaper. Succeeds when `state_dir` does not exist. Fails (and leaves
// `state_dir` where it was) when the rename cannot be done, e.g. EXDEV for a
// state dir that is a mount point: the caller then removes it in place.
Status move_to_trash(const std::string& state_dir);

// Starts the reaper of the trash beside `state_dir` unless it runs already,
// so leftovers of an earlier process are emptied. Cheap after the first call.
void start_trash_reaper(const std::string& state_dir);

// For tests: waits until the reaper of `trash_dir` has nothing left to do
// (true) or `timeout` passed (false). False as well when no reaper runs there.
bool wait_trash_idle(const std::string& trash_dir, std::chrono::milliseconds timeout);

}  // namespace coppice::sandbox::ns
