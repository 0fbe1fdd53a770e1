// Directory creation and recursive removal for filesystem.Filesystem.
//
// envd runs as root; what it creates on a user's behalf must belong to that
// user, as in E2B, so every directory made here is chown'ed to the
// requesting user.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/result.h"

namespace coppice::envd {

// mkdir -p with 0755 directories owned by uid:gid; existing directories are
// left as they are. A component that exists but is no directory is
// kInvalidArgument ("path is a file: ...").
Status ensure_dirs(const std::string& path, uid_t uid, gid_t gid);

// The parent directory of an absolute, clean path ("/" for "/a" and "/").
std::string parent_dir(const std::string& path);

// rm -rf that never follows a symlink (a link is removed, not what it points
// at). A path that does not exist is success, as with Go's os.RemoveAll.
// Works in steps so a caller on an event loop can yield between them.
class TreeRemover {
 public:
  explicit TreeRemover(std::string path) : root_(std::move(path)) {}
  // Removes up to about `budget` names. Returns true while there is more to
  // remove, false once done.
  Result<bool> step(size_t budget);

 private:
  struct Frame {
    std::string dir;
    std::vector<std::string> names;
    size_t next = 0;
  };
  std::string root_;
  std::vector<Frame> stack_;
  bool started_ = false;
};

}  // namespace coppice::envd
