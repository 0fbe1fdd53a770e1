#include "interp/assets.h"

#include <unistd.h>

#include "sys/fsutil.h"

namespace coppice::interp {

Status write_kernel_assets(const std::string& dir, std::optional<uid_t> uid, std::optional<gid_t> gid) {
  for (const auto& a : kernel_assets()) {
    std::string path = dir + "/" + std::string(a.name);
    if (auto w = sys::write_new_file(path, a.text, 0644); !w) return w;
    // The directory is private to the server and the kernel user: nobody
    // can swap the file between the write and the chown.
    if (uid && ::lchown(path.c_str(), *uid, gid.value_or(static_cast<gid_t>(-1))) != 0) {
      return errno_error("chown " + path);
    }
  }
  return ok();
}

}  // namespace coppice::interp
