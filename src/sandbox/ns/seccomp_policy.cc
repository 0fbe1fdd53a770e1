// Review this list like code: a rule removed here is a kernel interface
// opened to every sandbox.
//
// The sandbox's root is an unprivileged host uid whose capabilities are
// limited to the docker default set, inside namespaces owned by the host: the
// kernel already refuses most of what follows. The filter is a second wall
// that also shrinks the kernel surface reachable by code that finds a bug.
//
// The sandbox child loads the filter before it drops its capabilities and
// execs envd (child.cc): prctl, capset, rt_sigprocmask and execve must stay
// allowed (seccomp_policy_test.cc checks). Set-uid programs in the sandbox
// run under the same filter: it is inherited across every exec.
#include "sandbox/ns/seccomp_policy.h"

#include <cerrno>
#include <sched.h>

namespace coppice::sandbox::ns {

namespace {

using sys::seccomp::Action;
using sys::seccomp::Rule;

constexpr Rule deny(const char* name) { return Rule{name, Action::kErrno, EPERM}; }

// clone(2) creating a namespace: one rule per flag (a rule matches when
// (flags & bit) == bit). clone's flags are its first argument on x86-64 and i386.
constexpr Rule deny_clone_flag(uint64_t bit) { return Rule{"clone", Action::kErrno, EPERM, 0, bit, bit}; }

// socket(2)/socketpair(2) of an address family: EAFNOSUPPORT, as from a
// kernel built without it. The family is an int: only its low 32 bits count
// (the kernel ignores the rest, so must the rule).
constexpr Rule deny_family(const char* call, uint64_t family) {
  return Rule{call, Action::kErrno, EAFNOSUPPORT, 0, 0xffffffffull, family};
}
#define COPPICE_DENY_FAMILY(f) deny_family("socket", f), deny_family("socketpair", f)

constexpr Rule kPolicy[] = {
    // File system topology: mounts would let a process hide or replace files
    // that envd trusts, and expose file systems' parsers.
    deny("mount"), deny("umount2"), deny("pivot_root"),
    deny("move_mount"), deny("open_tree"), deny("fsopen"), deny("fsconfig"), deny("fsmount"), deny("fspick"),
    deny("mount_setattr"),
    // New namespaces: a nested user namespace hands out full capabilities over
    // fresh namespaces, the source of many kernel privilege escalations.
    deny("unshare"), deny("setns"),
    deny_clone_flag(CLONE_NEWNS), deny_clone_flag(CLONE_NEWUSER), deny_clone_flag(CLONE_NEWPID),
    deny_clone_flag(CLONE_NEWNET), deny_clone_flag(CLONE_NEWUTS), deny_clone_flag(CLONE_NEWIPC),
    deny_clone_flag(CLONE_NEWCGROUP),
    // clone3 passes its flags in memory, which seccomp cannot read. ENOSYS
    // makes glibc (2.34+) fall back to clone(2), which the rules above check.
    Rule{"clone3", Action::kErrno, ENOSYS},
    // Kernel code loading and replacement.
    deny("kexec_load"), deny("kexec_file_load"), deny("init_module"), deny("finit_module"), deny("delete_module"),
    deny("create_module"),
    // eBPF programs and perf events: large, frequently exploited interfaces;
    // perf also observes other processes.
    deny("bpf"), deny("perf_event_open"),
    // The kernel keyring is not namespaced: keys would be shared with the host.
    deny("keyctl"), deny("add_key"), deny("request_key"),
    // Whole-machine operations.
    deny("reboot"), deny("swapon"), deny("swapoff"), deny("acct"), deny("quotactl"), deny("quotactl_fd"),
    deny("settimeofday"), deny("clock_settime"), deny("clock_adjtime"), deny("adjtimex"), deny("syslog"),
    deny("vhangup"), deny("nfsservctl"), deny("_sysctl"), deny("sysfs"), deny("uselib"), deny("lookup_dcookie"),
    deny("ioperm"), deny("iopl"), deny("vm86"), deny("vm86old"),
    // open_by_handle_at opens any inode of a file system by its handle,
    // bypassing the mount tree (the "shocker" container escape).
    deny("open_by_handle_at"),
    // userfaultfd stalls kernel page faults under user control, a standard
    // ingredient of race exploits.
    deny("userfaultfd"),
    // io_uring executes syscalls outside seccomp's view and has had a long
    // run of privilege escalations.
    deny("io_uring_setup"), deny("io_uring_enter"), deny("io_uring_register"),
    // fanotify can watch whole mounts; move_pages/migrate_pages move other
    // processes' memory between NUMA nodes (mbind/set_mempolicy, which act
    // on the caller's own memory, stay allowed).
    deny("fanotify_init"), deny("move_pages"), deny("migrate_pages"),
    // Kernel symbol and module queries of old ABIs.
    deny("get_kernel_syms"), deny("query_module"),
    // Socket families a sandbox has no use for. Kept: AF_UNIX, AF_INET,
    // AF_INET6, AF_NETLINK (ip, ss, glibc's getaddrinfo/if_nameindex) and
    // AF_PACKET (tcpdump, dhcp clients: CAP_NET_RAW, own netns only). Refused:
    // AF_VSOCK reaches the hypervisor (a guest transport is loaded on our
    // hosts), AF_ALG/AF_KEY are kernel crypto and IPsec key interfaces, the
    // rest are protocol stacks rarely compiled in and rarely audited
    // (AF_RDS, AF_TIPC, AF_CAN, AF_BLUETOOTH, AF_XDP, ...).
    COPPICE_DENY_FAMILY(3 /* AF_AX25 */), COPPICE_DENY_FAMILY(4 /* AF_IPX */),
    COPPICE_DENY_FAMILY(5 /* AF_APPLETALK */), COPPICE_DENY_FAMILY(6 /* AF_NETROM */),
    COPPICE_DENY_FAMILY(7 /* AF_BRIDGE */), COPPICE_DENY_FAMILY(8 /* AF_ATMPVC */),
    COPPICE_DENY_FAMILY(9 /* AF_X25 */), COPPICE_DENY_FAMILY(11 /* AF_ROSE */),
    COPPICE_DENY_FAMILY(12 /* AF_DECnet */), COPPICE_DENY_FAMILY(13 /* AF_NETBEUI */),
    COPPICE_DENY_FAMILY(14 /* AF_SECURITY */), COPPICE_DENY_FAMILY(15 /* AF_KEY */),
    COPPICE_DENY_FAMILY(18 /* AF_ASH */), COPPICE_DENY_FAMILY(19 /* AF_ECONET */),
    COPPICE_DENY_FAMILY(20 /* AF_ATMSVC */), COPPICE_DENY_FAMILY(21 /* AF_RDS */),
    COPPICE_DENY_FAMILY(22 /* AF_SNA */), COPPICE_DENY_FAMILY(23 /* AF_IRDA */),
    COPPICE_DENY_FAMILY(24 /* AF_PPPOX */), COPPICE_DENY_FAMILY(25 /* AF_WANPIPE */),
    COPPICE_DENY_FAMILY(26 /* AF_LLC */), COPPICE_DENY_FAMILY(27 /* AF_IB */),
    COPPICE_DENY_FAMILY(28 /* AF_MPLS */), COPPICE_DENY_FAMILY(29 /* AF_CAN */),
    COPPICE_DENY_FAMILY(30 /* AF_TIPC */), COPPICE_DENY_FAMILY(31 /* AF_BLUETOOTH */),
    COPPICE_DENY_FAMILY(32 /* AF_IUCV */), COPPICE_DENY_FAMILY(33 /* AF_RXRPC */),
    COPPICE_DENY_FAMILY(34 /* AF_ISDN */), COPPICE_DENY_FAMILY(35 /* AF_PHONET */),
    COPPICE_DENY_FAMILY(36 /* AF_IEEE802154 */), COPPICE_DENY_FAMILY(37 /* AF_CAIF */),
    COPPICE_DENY_FAMILY(38 /* AF_ALG */), COPPICE_DENY_FAMILY(39 /* AF_NFC */),
    COPPICE_DENY_FAMILY(40 /* AF_VSOCK */), COPPICE_DENY_FAMILY(41 /* AF_KCM */),
    COPPICE_DENY_FAMILY(42 /* AF_QIPCRTR */), COPPICE_DENY_FAMILY(43 /* AF_SMC */),
    COPPICE_DENY_FAMILY(44 /* AF_XDP */), COPPICE_DENY_FAMILY(45 /* AF_MCTP */),
    // ptrace is allowed (gdb/strace inside the sandbox): the pid namespace
    // limits it to the sandbox's own processes and the kernel's ptrace checks
    // apply. process_vm_readv/writev and kcmp follow the same access rules.
    // chroot is allowed: CAP_SYS_CHROOT is in the default set, and a chroot
    // cannot leave the sandbox's mount namespace.
};
#undef COPPICE_DENY_FAMILY

}  // namespace

std::span<const Rule> default_seccomp_policy() { return kPolicy; }

Result<sys::seccomp::Program> compile_default_seccomp_policy() { return sys::seccomp::compile(default_seccomp_policy()); }

}  // namespace coppice::sandbox::ns
