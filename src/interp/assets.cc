#include "interp/assets.h"

#include <fcntl.h>
#include <unistd.h>

namespace coppice::interp {

Status write_kernel_assets(const std::string& dir, std::optional<uid_t> uid, std::optional<gid_t> gid) {
  for (const auto& a : kernel_assets()) {
    std::string path = dir + "/" + std::string(a.name);
    ::unlink(path.c_str());
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return errno_error("create " + path);
    size_t off = 0;
    while (off < a.text.size()) {
      ssize_t n = ::write(fd, a.text.data() + off, a.text.size() - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        int e = errno;
        ::close(fd);
        return errno_error("write " + path, e);
      }
      off += static_cast<size_t>(n);
    }
    if (uid && ::fchown(fd, *uid, gid.value_or(static_cast<gid_t>(-1))) != 0) {
      int e = errno;
      ::close(fd);
      return errno_error("chown " + path, e);
    }
    ::close(fd);
  }
  return ok();
}

}  // namespace coppice::interp
