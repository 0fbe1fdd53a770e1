#include "sys/unix_connect.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstdio>

namespace coppice::sys {

Result<UniqueFd> connect_unix_nofollow(const std::string& path) {
  int pfd = ::open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (pfd < 0) return errno_error("open " + path);
  UniqueFd file(pfd);
  struct stat st;
  if (::fstat(pfd, &st) != 0) return errno_error("stat " + path);
  if (!S_ISSOCK(st.st_mode)) {
    return make_error(ErrorCode::kPermissionDenied, path + " is not a socket (" +
                                                        (S_ISLNK(st.st_mode) ? "a symlink" : "another file type") + ")");
  }
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return errno_error("socket");
  UniqueFd sock(s);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "/proc/self/fd/%d", pfd);
  for (;;) {
    if (::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return sock;
    if (errno != EINTR) return errno_error("connect " + path);
  }
}

}  // namespace coppice::sys
