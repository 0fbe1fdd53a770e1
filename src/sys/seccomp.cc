#include "sys/seccomp.h"

#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "sys/fd.h"

namespace coppice::sys::seccomp {

namespace {
struct CtxCloser {
  scmp_filter_ctx ctx;
  ~CtxCloser() { seccomp_release(ctx); }
};
}  // namespace

Result<Program> compile(std::span<const Rule> rules) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) return make_error(ErrorCode::kInternal, "seccomp_init failed");
  CtxCloser closer{ctx};
  if (int r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS); r != 0) {
    return errno_error("seccomp_attr_set BADARCH", -r);
  }
  // i386 binaries (int 0x80) keep working under the same deny list.
  if (int r = seccomp_arch_add(ctx, SCMP_ARCH_X86); r != 0 && r != -EEXIST) {
    return errno_error("seccomp_arch_add x86", -r);
  }
  for (const Rule& rule : rules) {
    int nr = seccomp_syscall_resolve_name(rule.syscall);
    if (nr == __NR_SCMP_ERROR) {
      return make_error(ErrorCode::kInvalidArgument, std::string("seccomp policy: unknown syscall ") + rule.syscall);
    }
    uint32_t action = rule.action == Action::kKillProcess ? SCMP_ACT_KILL_PROCESS
                                                          : SCMP_ACT_ERRNO(static_cast<uint32_t>(rule.errno_value));
    int r;
    if (rule.arg < 0) {
      r = seccomp_rule_add(ctx, action, nr, 0);
    } else {
      r = seccomp_rule_add(ctx, action, nr, 1,
                           SCMP_CMP(static_cast<unsigned>(rule.arg), SCMP_CMP_MASKED_EQ, rule.mask, rule.value));
    }
    if (r != 0) return errno_error(std::string("seccomp_rule_add ") + rule.syscall, -r);
  }
  // libseccomp 2.5 exports only to an fd: go through a memfd.
  int mfd = ::memfd_create("coppice-seccomp", MFD_CLOEXEC);
  if (mfd < 0) return errno_error("memfd_create");
  UniqueFd mem(mfd);
  if (int r = seccomp_export_bpf(ctx, mfd); r != 0) return errno_error("seccomp_export_bpf", -r);
  off_t len = ::lseek(mfd, 0, SEEK_END);
  if (len < 0 || len % static_cast<off_t>(sizeof(sock_filter)) != 0) {
    return make_error(ErrorCode::kInternal, "seccomp_export_bpf produced " + std::to_string(len) + " bytes");
  }
  std::vector<sock_filter> insns(static_cast<size_t>(len) / sizeof(sock_filter));
  if (::pread(mfd, insns.data(), static_cast<size_t>(len), 0) != len) return errno_error("read exported filter");
  return Program(std::move(insns));
}

int load(const sock_fprog& prog) {
  return ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) == 0 ? 0 : errno;
}

}  // namespace coppice::sys::seccomp
