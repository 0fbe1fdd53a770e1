#include "sys/uts.h"

#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <thread>

namespace coppice::sys {

Status set_hostname_of(int pidfd, std::string_view name) {
  int err = 0;
  const char* step = "";
  std::string copy(name);
  std::thread([&] {
    if (::setns(pidfd, CLONE_NEWUTS) != 0) {
      err = errno;
      step = "setns uts";
    } else if (::sethostname(copy.data(), copy.size()) != 0) {
      err = errno;
      step = "sethostname";
    }
  }).join();
  if (err != 0) return errno_error(std::string(step) + " " + copy, err);
  return ok();
}

}  // namespace coppice::sys
