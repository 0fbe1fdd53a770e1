#include "sys/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>

#include "common/log.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace coppice::sys {

Result<UniqueFd> socket_in_netns(int netns_fd, int domain, int type, int protocol) {
  UniqueFd self(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!self) return errno_error("open own network namespace");
  if (::setns(netns_fd, CLONE_NEWNET) != 0) return errno_error("enter network namespace");
  int s = ::socket(domain, type | SOCK_CLOEXEC, protocol);
  int err = errno;
  if (::setns(self.get(), CLONE_NEWNET) != 0) {
    COPPICE_LOG(error) << "cannot return to the gateway's network namespace: aborting";
    std::abort();
  }
  if (s < 0) return errno_error("socket in network namespace", err);
  return UniqueFd(s);
}

Result<uint64_t> netns_cookie_of_socket(int sock) {
  uint64_t cookie = 0;
  socklen_t len = sizeof cookie;
  if (::getsockopt(sock, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0) return errno_error("SO_NETNS_COOKIE");
  return cookie;
}

Result<uint64_t> netns_cookie(int netns_fd) {
  auto s = socket_in_netns(netns_fd, AF_UNIX, SOCK_DGRAM);
  if (!s) return std::unexpected(std::move(s.error()));
  return netns_cookie_of_socket(s->get());
}

Result<UniqueFd> open_netns_of(int pid) {
  UniqueFd fd(::open(("/proc/" + std::to_string(pid) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return errno_error("open network namespace of pid " + std::to_string(pid));
  return fd;
}

}  // namespace coppice::sys
