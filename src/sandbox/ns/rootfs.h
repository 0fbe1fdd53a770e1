// The host side of a sandbox's root file system: its state directory with the
// overlay's writable layer.
//
//   <state_dir>/upper     overlay upper layer (owned by the sandbox's root uid)
//   <state_dir>/work      overlay work dir
//   <state_dir>/lower     mount point of the idmapped template (child's mount namespace only)
//   <state_dir>/rootfs    mount point of the overlay (child's mount namespace only)
//   <state_dir>/run       bound at /.coppice/run inside; holds envd.sock
//   <state_dir>/envd.log  envd's stdout and stderr
//
// The overlay and every other mount of the sandbox are made by its child in
// its own mount namespace (see mounts.h), so they vanish with its last process
// and the host's mount table never lists them.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <utility>

#include "common/result.h"

namespace coppice::sandbox::ns {

struct StatePaths {
  explicit StatePaths(std::string dir)
      : dir(dir), upper(dir + "/upper"), work(dir + "/work"), lower(dir + "/lower"), rootfs(dir + "/rootfs"),
        run(dir + "/run"), socket(dir + "/run/envd.sock"), log(dir + "/envd.log") {}
  std::string dir, upper, work, lower, rootfs, run, socket, log;
};

// Owner of a sandbox's state directory. prepare() creates the layout; the
// destructor removes the whole directory unless release()d, so a failed create
// leaves nothing behind.
class StateDir {
 public:
  StateDir() = default;
  StateDir(StateDir&& o) noexcept : paths_(std::move(o.paths_)), armed_(std::exchange(o.armed_, false)) {}
  StateDir& operator=(StateDir&&) = delete;
  ~StateDir();

  // Creates `dir` (and missing parents) with the layout above. `host_root` is
  // the host uid/gid of the sandbox's root: the upper layer and run/ belong to
  // it, so files the sandbox creates there are its own. `template_root` lends
  // its mode to the upper layer's root (the merged "/").
  static Result<StateDir> prepare(const std::string& dir, uid_t host_root, const std::string& template_root);

  // The same layout from a skeleton made ahead of time by
  // make_state_layout(StatePaths(skeleton), kSkeletonUpperMode, 0): owners
  // and the upper layer's mode are set, then the skeleton is renamed to `dir`
  // (same file system). A failure before the rename leaves the skeleton where
  // it was (its owner removes it); EXDEV and the like come back as errors for
  // the caller to fall back to prepare().
  static Result<StateDir> adopt(const std::string& skeleton, const std::string& dir, uid_t host_root,
                                const std::string& template_root);

  // An existing state dir (of a suspended sandbox), never removed by this
  // owner.
  static StateDir existing(const std::string& dir) {
    StateDir d;
    d.paths_ = std::make_unique<StatePaths>(dir);
    return d;
  }

  const StatePaths& paths() const { return *paths_; }
  void release() { armed_ = false; }

 private:
  std::unique_ptr<StatePaths> paths_;
  bool armed_ = false;
};

// The mode a skeleton's upper dir is made with (most templates' "/").
constexpr mode_t kSkeletonUpperMode = 0755;

// Makes upper/, work/, lower/, rootfs/ and run/ in an existing `p.dir`; the
// upper layer gets `upper_mode`, and upper/ and run/ belong to `host_root`
// (left to root when 0).
Status make_state_layout(const StatePaths& p, mode_t upper_mode, uid_t host_root);

// Removes a state directory and everything in it (without following links
// the sandbox may have planted in its upper layer) on the calling thread, in
// time that grows with what the sandbox wrote: for a fresh or failed create.
// Teardown moves the dir into the trash instead (trash.h).
Status remove_state_dir(const std::string& dir);

// Bytes allocated to the sandbox's writable layer (its disk metric), bounded
// because it runs on a request path: a walk stops after 200,000 entries or
// 50 ms, whichever comes first (about 15,000 files here; past that the
// figure is what it counted, a lower bound), and its result is served for
// 5 s to every later call for the same state dir. Hard links count once, symlinks are not followed, mounts not
// entered. Quota accounting (project quotas on the state dir's file system)
// is to replace this walk: it knows the figure without looking at any file.
Result<uint64_t> upper_disk_bytes(const std::string& dir);

}  // namespace coppice::sandbox::ns
