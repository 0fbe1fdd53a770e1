// The default policy really refuses what it lists: each check runs in a forked
// child that loads the same compiled filter the sandboxes get.
#include "sandbox/ns/seccomp_policy.h"

#include <gtest/gtest.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <functional>
#include <string>

#include "sys/seccomp.h"

namespace coppice::sandbox::ns {
namespace {

// Runs `body` in a child under the default filter; returns what body returned
// (an errno value) or -1 if the child died otherwise.
int under_filter(const std::function<int()>& body, const std::function<void()>& before = {}) {
  static auto prog = compile_default_seccomp_policy();
  EXPECT_TRUE(prog.has_value()) << prog.error().to_string();
  pid_t pid = ::fork();
  if (pid == 0) {
    if (before) before();
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(200);
    if (sys::seccomp::load(prog->fprog()) != 0) _exit(201);
    _exit(body());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int errno_of(long r) { return r == 0 ? 0 : errno; }

TEST(SeccompPolicy, Compiles) {
  auto prog = compile_default_seccomp_policy();
  ASSERT_TRUE(prog.has_value()) << prog.error().to_string();
  EXPECT_GT(prog->size(), 10u);
}

TEST(SeccompPolicy, UnknownSyscallNameIsAnError) {
  sys::seccomp::Rule rules[] = {{"no_such_syscall_xyz"}};
  EXPECT_FALSE(sys::seccomp::compile(rules).has_value());
}

// socket(family, type, 0): 0 if made (and closed), else its errno.
int socket_errno(long family, int type) {
  // Through syscall(2), so the upper half of the family argument is ours to set.
  long fd = ::syscall(SYS_socket, family, type, 0);
  if (fd < 0) return errno;
  ::close(static_cast<int>(fd));
  return 0;
}

TEST(SeccompPolicy, RefusesUnneededSocketFamilies) {
  for (int family : {AF_VSOCK, AF_ALG, AF_KEY, AF_RDS, AF_TIPC, AF_BLUETOOTH, AF_XDP, AF_CAN}) {
    EXPECT_EQ(under_filter([family] { return socket_errno(family, SOCK_STREAM); }), EAFNOSUPPORT) << family;
    EXPECT_EQ(under_filter([family] { return socket_errno(family, SOCK_DGRAM); }), EAFNOSUPPORT) << family;
  }
  // Bits above the int the kernel reads do not slip a family past the rule.
  EXPECT_EQ(under_filter([] { return socket_errno((1L << 32) | AF_VSOCK, SOCK_STREAM); }), EAFNOSUPPORT);
  EXPECT_EQ(under_filter([] {
              int sv[2];
              return ::socketpair(AF_VSOCK, SOCK_STREAM, 0, sv) == 0 ? 0 : errno;
            }),
            EAFNOSUPPORT);
  // What envd, ip and the resolver use still works.
  EXPECT_EQ(under_filter([] { return socket_errno(AF_UNIX, SOCK_STREAM); }), 0);
  EXPECT_EQ(under_filter([] { return socket_errno(AF_INET, SOCK_STREAM); }), 0);
  EXPECT_EQ(under_filter([] { return socket_errno(AF_INET6, SOCK_DGRAM); }), 0);
  EXPECT_EQ(under_filter([] { return socket_errno(AF_NETLINK, SOCK_RAW); }), 0);
}

TEST(SeccompPolicy, AllowsOrdinaryCalls) {
  EXPECT_EQ(under_filter([] { return ::getpid() > 0 && ::access("/", R_OK) == 0 ? 0 : 1; }), 0);
  // unshare(0) is a no-op the kernel accepts from anyone, so EPERM below can
  // only come from the filter.
  EXPECT_EQ(errno_of(::unshare(0)), 0);
}

TEST(SeccompPolicy, RefusesUnshareAndNamespaceClones) {
  EXPECT_EQ(under_filter([] { return errno_of(::unshare(0)); }), EPERM);
  EXPECT_EQ(under_filter([] { return errno_of(::syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)); }), EPERM);
  // clone3 answers ENOSYS so libc falls back to the filtered clone.
  EXPECT_EQ(under_filter([] {
              struct clone_args a{};
              a.exit_signal = SIGCHLD;
              return errno_of(::syscall(SYS_clone3, &a, sizeof a));
            }),
            ENOSYS);
  // A plain fork (clone without namespace flags) still works.
  EXPECT_EQ(under_filter([] {
              pid_t p = ::fork();
              if (p == 0) _exit(0);
              int st;
              return p > 0 && ::waitpid(p, &st, 0) == p ? 0 : 1;
            }),
            0);
}

TEST(SeccompPolicy, RefusesMountEvenForRoot) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to show that mount(2) would otherwise succeed";
  char dir[] = "/tmp/coppice-seccomp-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  // In a private mount namespace (made before the filter) root may mount;
  // under the filter it gets EPERM.
  auto private_ns = [] {
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) _exit(202);
  };
  std::string d = dir;
  EXPECT_EQ(under_filter([&] { return errno_of(::mount("none", d.c_str(), "tmpfs", 0, nullptr)); }, private_ns), EPERM);
  EXPECT_EQ(under_filter([&] { return errno_of(::umount2("/", MNT_DETACH)); }, private_ns), EPERM);
  ::rmdir(dir);
}

// The sandbox child loads the filter first and then still drops its
// capabilities, sets up stdio and execs (child.cc): none of that may be
// refused, whoever edits the list.
TEST(SeccompPolicy, LeavesTheChildsLastStepsAllowed) {
  for (const auto& rule : default_seccomp_policy()) {
    for (const char* needed : {"prctl", "capset", "capget", "execve", "rt_sigprocmask", "openat", "dup2", "dup3",
                               "close_range", "close", "setresuid", "setresgid", "setgroups"}) {
      EXPECT_STRNE(rule.syscall, needed);
    }
  }
  EXPECT_EQ(under_filter([] {
              if (::prctl(PR_CAPBSET_READ, CAP_CHOWN, 0, 0, 0) < 0) return 1;
              if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) return 2;
              sigset_t none;
              sigemptyset(&none);
              if (::sigprocmask(SIG_SETMASK, &none, nullptr) != 0) return 3;
              char* argv[] = {const_cast<char*>("true"), nullptr};
              ::execve("/bin/true", argv, nullptr);
              return 4;
            }),
            0);
}

// Without no_new_privs (which the sandbox does not set, so that set-uid
// programs work) the kernel takes a filter only from a caller with
// CAP_SYS_ADMIN: the child has it in its user namespace when it loads it.
TEST(SeccompPolicy, LoadsWithoutNoNewPrivsOnlyWithCapSysAdmin) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to hold CAP_SYS_ADMIN";
  auto prog = compile_default_seccomp_policy();
  ASSERT_TRUE(prog.has_value()) << prog.error().to_string();
  auto load_in_child = [&](bool drop_sys_admin) {
    pid_t pid = ::fork();
    if (pid == 0) {
      if (drop_sys_admin && ::prctl(PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0) != 0) _exit(200);
      if (drop_sys_admin && ::setresuid(65534, 65534, 65534) != 0) _exit(201);  // drops every capability
      if (::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 0) _exit(202);
      _exit(sys::seccomp::load(prog->fprog()));
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  EXPECT_EQ(load_in_child(false), 0);
  EXPECT_EQ(load_in_child(true), EACCES);
}

TEST(SeccompPolicy, RefusesKeyringsBpfAndHandles) {
  EXPECT_EQ(under_filter([] { return errno_of(::syscall(SYS_keyctl, 0 /*KEYCTL_GET_KEYRING_ID*/, -3, 0)); }), EPERM);
  EXPECT_EQ(under_filter([] { return errno_of(::syscall(SYS_bpf, 0, nullptr, 0)); }), EPERM);
  EXPECT_EQ(under_filter([] { return errno_of(::syscall(SYS_open_by_handle_at, -1, nullptr, 0)); }), EPERM);
  EXPECT_EQ(under_filter([] { return errno_of(::syscall(SYS_io_uring_setup, 1, nullptr)); }), EPERM);
}

}  // namespace
}  // namespace coppice::sandbox::ns
