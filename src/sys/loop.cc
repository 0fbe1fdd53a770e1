#include "sys/loop.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <cstring>

#include "sys/fsutil.h"

namespace coppice::sys {

namespace {
// Attempts at taking a free device that another process may take first.
constexpr int kAttachAttempts = 8;
}  // namespace

Result<LoopDevice> loop_attach(const std::string& image) {
  auto file = open_file(image, O_RDWR);
  if (!file) return std::unexpected(std::move(file.error()).context("loop image"));
  auto ctl = open_file("/dev/loop-control", O_RDWR);
  if (!ctl) return std::unexpected(std::move(ctl.error()).context("loop devices"));
  for (int attempt = 0;; ++attempt) {
    int n = ::ioctl(ctl->get(), LOOP_CTL_GET_FREE);
    if (n < 0) return errno_error("LOOP_CTL_GET_FREE");
    std::string path = "/dev/loop" + std::to_string(n);
    auto dev = open_file(path, O_RDWR);
    if (!dev) return std::unexpected(std::move(dev.error()).context("loop device"));
    struct loop_config cfg;
    std::memset(&cfg, 0, sizeof cfg);
    cfg.fd = static_cast<uint32_t>(file->get());
    cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
    std::strncpy(reinterpret_cast<char*>(cfg.info.lo_file_name), image.c_str(), LO_NAME_SIZE - 1);
    if (::ioctl(dev->get(), LOOP_CONFIGURE, &cfg) == 0) return LoopDevice{std::move(*dev), std::move(path)};
    // EBUSY: someone configured it between GET_FREE and now.
    if (errno != EBUSY || attempt + 1 >= kAttachAttempts) return errno_error("LOOP_CONFIGURE " + path + " with " + image);
  }
}

Result<std::string> loop_find(const std::string& image) {
  struct stat want;
  if (::stat(image.c_str(), &want) != 0) return errno_error("stat " + image);
  auto names = list_dir("/sys/block");
  if (!names) return std::unexpected(std::move(names.error()).context("loop devices"));
  for (const auto& n : *names) {
    if (!n.starts_with("loop")) continue;
    auto backing = read_file("/sys/block/" + n + "/loop/backing_file");
    if (!backing) continue;  // not attached
    std::string p = *backing;
    while (!p.empty() && p.back() == '\n') p.pop_back();
    struct stat st;
    if (p.empty() || ::stat(p.c_str(), &st) != 0) continue;
    if (st.st_dev == want.st_dev && st.st_ino == want.st_ino) return "/dev/" + n;
  }
  return std::string();
}

}  // namespace coppice::sys
