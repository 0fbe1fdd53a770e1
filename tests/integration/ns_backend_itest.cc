// The ns backend against the real kernel and the real coppice-envd: create,
// isolation, limits, freeze/thaw, destroy, failed creates and recovery all
// leave the host clean. Needs root; skips visibly otherwise.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <poll.h>
#include <sched.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/log.h"
#include "sandbox/backend.h"
#include "sandbox/ns/cgroup.h"
#include "sandbox/ns/checkpoint.h"
#include "sandbox/ns/ns_backend.h"
#include "sandbox/ns/trash.h"
#include "sys/caps.h"
#include "sys/fsutil.h"
#include "sys/tree_test_util.h"
#include "http/connect.h"
#include "sys/unix_connect.h"

namespace coppice::sandbox {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The value of "Key:\t..." in /proc/<pid>/status.
std::string status_field(pid_t pid, const std::string& key) {
  std::istringstream in(slurp("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) {
      std::string v = line.substr(key.size() + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      return v;
    }
  }
  return {};
}

// GET `path` over envd's unix socket; returns the HTTP status (or -errno).
int http_get(const std::string& socket_path, const std::string& path, int timeout_ms = 5000) {
  auto conn = sys::connect_unix_nofollow(socket_path);
  if (!conn) return -(conn.error().sys_errno() ? conn.error().sys_errno() : EPERM);
  int fd = conn->release();
  struct timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: sandbox\r\nConnection: close\r\n\r\n";
  if (::write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return -EIO;
  }
  std::string resp;
  char buf[1024];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) {
    resp.append(buf, static_cast<size_t>(n));
    if (resp.find("\r\n") != std::string::npos) break;
  }
  int e = n < 0 ? errno : 0;
  ::close(fd);
  if (resp.rfind("HTTP/1.1 ", 0) != 0) return e ? -e : -EPROTO;
  return std::atoi(resp.c_str() + 9);
}

std::vector<std::string> mountinfo_lines_with(const std::string& needle) {
  std::istringstream in(slurp("/proc/self/mountinfo"));
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(needle) != std::string::npos) out.push_back(line);
  }
  return out;
}

bool process_alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

// The hostname inside the UTS namespace of `pid` (read from a thread that
// joins it, so the test's own threads stay where they are).
std::string hostname_of(pid_t pid) {
  std::string hostname;
  std::thread([&] {
    int fd = ::open(("/proc/" + std::to_string(pid) + "/ns/uts").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0 && ::setns(fd, CLONE_NEWUTS) == 0) {
      struct utsname u;
      ::uname(&u);
      hostname = u.nodename;
    }
    if (fd >= 0) ::close(fd);
  }).join();
  return hostname;
}

// The line of /proc/<pid>/mountinfo whose mount point is `target`.
std::string mountinfo_of(pid_t pid, const std::string& target) {
  std::istringstream in(slurp("/proc/" + std::to_string(pid) + "/mountinfo"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(" " + target + " ") != std::string::npos) return line;
  }
  return {};
}

class NsBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "the ns backend needs root (namespaces, cgroups, mounts)";
    if (std::getenv("COPPICE_NS_DEBUG")) log::set_level(log::Level::debug);
    envd_ = COPPICE_BUILD_DIR "/coppice-envd";
    if (::access(envd_.c_str(), X_OK) != 0) GTEST_SKIP() << "no coppice-envd at " << envd_;
    char tmpl[] = "/tmp/coppice-ns-itest-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    tmp_ = tmpl;
    make_rootfs(tmp_ + "/rootfs");
    opts_.cgroup_parent = "coppice-itest-" + std::to_string(::getpid());
    opts_.registry_dir = tmp_ + "/registry";
    opts_.uid_base = 1000000;
    opts_.uid_slots = 64;
    auto b = make_ns_backend(opts_);
    if (!b && (b.error().code() == ErrorCode::kFailedPrecondition || b.error().sys_errno() == EPERM)) {
      GTEST_SKIP() << "ns backend unavailable here: " << b.error().to_string();
    }
    ASSERT_TRUE(b.has_value()) << b.error().to_string();
    backend_ = std::move(*b);
    auto cg = ns::CgroupManager::open(opts_.cgroup_parent);
    ASSERT_TRUE(cg.has_value());
    cgroups_ = std::make_unique<ns::CgroupManager>(std::move(*cg));
  }

  void TearDown() override {
    if (backend_) {
      auto ids = backend_->list_existing();
      if (ids) {
        for (auto& id : *ids) EXPECT_TRUE(backend_->destroy(id).has_value()) << id;
      }
      backend_.reset();
    }
    if (cgroups_) {
      EXPECT_TRUE(cgroups_->remove_parent().has_value());
    }
    if (!tmp_.empty()) {
      EXPECT_TRUE(trash_settled());
      EXPECT_TRUE(sys::remove_tree(tmp_).has_value());
    }
  }

  // Destroyed sandboxes' state dirs are removed by a background thread
  // (sandbox/ns/trash.h): waits until it has nothing left to do.
  bool trash_settled() {
    return ns::wait_trash_idle(ns::trash_dir_for(tmp_ + "/state/x"), std::chrono::seconds(120)) ||
           !sys::path_exists(tmp_ + "/state/.trash");
  }

  // A tiny template: empty dirs the host's /usr is bound over, the usual
  // merged-/usr symlinks and an /etc/passwd with root and user.
  static void make_rootfs(const std::string& r) {
    // No /tmp: the sandbox makes one in its writable layer.
    for (const char* d : {"", "/usr", "/etc", "/proc", "/dev", "/sys", "/root", "/home", "/home/user", "/var"}) {
      ASSERT_EQ(::mkdir((r + d).c_str(), 0755), 0) << d;
    }
    for (auto [link, target] : {std::pair{"bin", "usr/bin"}, {"lib", "usr/lib"}, {"lib64", "usr/lib64"}, {"sbin", "usr/sbin"}}) {
      ASSERT_EQ(::symlink(target, (r + "/" + link).c_str()), 0);
    }
    ASSERT_TRUE(sys::write_new_file(r + "/etc/passwd",
                                    "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000:user:/home/user:/bin/bash\n")
                    .has_value());
    ASSERT_TRUE(sys::write_new_file(r + "/etc/group", "root:x:0:\ntty:x:5:\nuser:x:1000:\n").has_value());
    ASSERT_EQ(::chown((r + "/home/user").c_str(), 1000, 1000), 0);
  }

  SandboxSpec spec(const std::string& id) {
    SandboxSpec s;
    s.id = id;
    s.rootfs = tmp_ + "/rootfs";
    s.ro_binds = {"/usr"};
    s.state_dir = tmp_ + "/state/" + id;
    s.envd_path = envd_;
    s.limits.memory_bytes = 256ull << 20;
    s.limits.pids_max = 256;
    s.limits.cpu_millicores = 500;
    return s;
  }

  // `threads` threads each create, check (/health) and destroy `each`
  // sandboxes at once. With half_without_envd, every other one has no envd
  // binary to bind: its child fails at its mounts, and must say so.
  struct ConcurrentRun {
    int good = 0, failed_in_mount = 0;
    std::vector<std::string> errors;
  };
  ConcurrentRun create_concurrently(const char* prefix, int threads, int each, bool half_without_envd) {
    std::vector<std::thread> workers;
    std::atomic<int> good{0}, failed_in_mount{0};
    std::vector<std::string> errors(static_cast<size_t>(threads));
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        std::string& error = errors[static_cast<size_t>(t)];
        for (int i = 0; i < each; ++i) {
          char id[32];
          std::snprintf(id, sizeof id, "%s%02d%09d", prefix, t, i);
          auto s = spec(id);
          const bool bad = half_without_envd && (t + i) % 2 == 1;
          if (bad) s.envd_path = tmp_ + "/no-such-envd";
          auto h = backend_->create(s);
          if (bad) {
            if (h) {
              error = std::string(id) + ": a create without envd succeeded";
              (void)backend_->destroy(id);
              return;
            }
            if (h.error().message().find("mount") != std::string::npos) ++failed_in_mount;
            continue;
          }
          if (!h) {
            error = h.error().to_string();
            return;
          }
          if (http_get(h->envd_socket, "/health") == 204) ++good;
          if (auto d = backend_->destroy(id); !d) {
            error = d.error().to_string();
            return;
          }
        }
      });
    }
    for (auto& w : workers) w.join();
    return ConcurrentRun{good.load(), failed_in_mount.load(), std::move(errors)};
  }

  // The cgroup limits of spec() are in force for sandbox `id` and its PID 1 is in it.
  void expect_spec_limits(const std::string& id, pid_t pid) {
    if (cgroups_->v2()) return;
    std::string base = "/sys/fs/cgroup/";
    EXPECT_EQ(slurp(base + "memory/" + opts_.cgroup_parent + "/" + id + "/memory.limit_in_bytes"),
              std::to_string(256ull << 20) + "\n");
    EXPECT_EQ(slurp(base + "pids/" + opts_.cgroup_parent + "/" + id + "/pids.max"), "256\n");
    EXPECT_EQ(slurp(base + "cpu/" + opts_.cgroup_parent + "/" + id + "/cpu.cfs_quota_us"), "50000\n");
    for (const char* ctrl : {"memory", "pids"}) {
      EXPECT_NE(slurp(base + ctrl + "/" + opts_.cgroup_parent + "/" + id + "/cgroup.procs").find(std::to_string(pid)),
                std::string::npos)
          << ctrl;
    }
  }

  // The sandbox's /sys shows one interface, lo, and it is up.
  static void expect_loopback_only(pid_t pid) {
    auto nets = sys::list_dir("/proc/" + std::to_string(pid) + "/root/sys/class/net");
    ASSERT_TRUE(nets.has_value());
    EXPECT_EQ(*nets, std::vector<std::string>{"lo"});
    unsigned flags = 0;
    std::sscanf(slurp("/proc/" + std::to_string(pid) + "/root/sys/class/net/lo/flags").c_str(), "%x", &flags);
    EXPECT_TRUE(flags & 1) << "lo is down";
  }

  // Nothing of sandbox `id` remains on the host.
  void expect_gone(const std::string& id, pid_t pid) {
    EXPECT_TRUE(mountinfo_lines_with(id).empty()) << mountinfo_lines_with(id).front();
    EXPECT_TRUE(mountinfo_lines_with(tmp_).empty()) << mountinfo_lines_with(tmp_).front();
    for (const char* ctrl : {"cpu", "cpuacct", "memory", "pids", "freezer", "unified", ""}) {
      std::string d = std::string("/sys/fs/cgroup/") + ctrl + (*ctrl ? "/" : "") + opts_.cgroup_parent + "/" + id;
      EXPECT_FALSE(sys::path_exists(d)) << d;
    }
    if (pid > 0) {
      EXPECT_FALSE(process_alive(pid)) << pid;
    }
    EXPECT_FALSE(sys::path_exists(tmp_ + "/state/" + id));
    EXPECT_FALSE(sys::path_exists(opts_.registry_dir + "/" + id));
  }

  std::string envd_;
  std::string tmp_;
  NsOptions opts_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<ns::CgroupManager> cgroups_;
};

TEST_F(NsBackendTest, CreateIsIsolatedAndDestroyLeavesNothing) {
  const std::string id = "itestcreate000000001";
  auto t0 = std::chrono::steady_clock::now();
  auto h = backend_->create(spec(id));
  auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(h.has_value()) << h.error().to_string();
  std::printf("[ns] cold create (until envd is ready): %.2f ms\n", ms);
  const pid_t pid = h->init_pid;

  // envd answers on its socket at once: create waited for its ready byte.
  EXPECT_EQ(http_get(h->envd_socket, "/health"), 204);

  // PID 1 of its own pid namespace, and envd.
  EXPECT_EQ(status_field(pid, "NSpid"), std::to_string(pid) + "\t1");
  auto exe = sys::read_symlink("/proc/" + std::to_string(pid) + "/exe");
  ASSERT_TRUE(exe.has_value());
  EXPECT_EQ(*exe, "/.coppice/envd");
  // Its /proc shows its own processes only.
  int procs = 0;
  auto names = sys::list_dir("/proc/" + std::to_string(pid) + "/root/proc");
  ASSERT_TRUE(names.has_value());
  for (auto& n : *names) procs += std::all_of(n.begin(), n.end(), ::isdigit) ? 1 : 0;
  EXPECT_GE(procs, 1);
  EXPECT_LE(procs, 3);

  // Root inside is an unprivileged host uid.
  unsigned in = 99, out = 0, count = 0;
  ASSERT_EQ(std::sscanf(slurp("/proc/" + std::to_string(pid) + "/uid_map").c_str(), "%u %u %u", &in, &out, &count), 3);
  EXPECT_EQ(in, 0u);
  EXPECT_GE(out, opts_.uid_base);
  EXPECT_EQ(count, 65536u);
  EXPECT_EQ(h->host_uid, out);
  EXPECT_EQ(status_field(pid, "Uid"), std::to_string(out) + "\t" + std::to_string(out) + "\t" + std::to_string(out) +
                                          "\t" + std::to_string(out));

  // Container-default capabilities and a seccomp filter; no no_new_privs,
  // so that set-uid programs (sudo) work inside.
  char capbnd[32];
  std::snprintf(capbnd, sizeof capbnd, "%016llx", static_cast<unsigned long long>(sys::caps::kContainerDefault));
  EXPECT_EQ(status_field(pid, "CapBnd"), capbnd);
  EXPECT_EQ(status_field(pid, "CapEff"), capbnd);
  EXPECT_EQ(status_field(pid, "NoNewPrivs"), "0");
  EXPECT_EQ(status_field(pid, "Seccomp"), "2");

  // Hostname is the id (read from inside its uts namespace).
  EXPECT_EQ(hostname_of(pid), id);

  // Its network: loopback only, and up.
  expect_loopback_only(pid);

  // Template files appear root-owned inside (idmapped lower layer) ...
  struct stat st;
  const std::string root = "/proc/" + std::to_string(pid) + "/root";
  ASSERT_EQ(::stat((root + "/etc/passwd").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, out);  // host view of the sandbox's uid 0
  ASSERT_EQ(::stat((root + "/usr/bin").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, out);
  // ... and writes through the merged root land in the upper layer, never in
  // the template.
  ASSERT_TRUE(sys::write_new_file(root + "/etc/written-by-test", "x").has_value());
  EXPECT_TRUE(sys::path_exists(h->state_dir + "/upper/etc/written-by-test"));
  EXPECT_FALSE(sys::path_exists(tmp_ + "/rootfs/etc/written-by-test"));
  {
    std::ofstream f(root + "/etc/passwd", std::ios::app);
    f << "extra:x:5000:5000::/:/bin/false\n";
  }
  EXPECT_EQ(slurp(tmp_ + "/rootfs/etc/passwd").find("extra"), std::string::npos);
  // /usr is read-only inside; its set-uid programs (sudo) work, as the
  // sandbox's root.
  EXPECT_NE(::mkdir((root + "/usr/coppice-test").c_str(), 0755), 0);
  EXPECT_EQ(errno, EROFS);
  const std::string usr = mountinfo_of(pid, "/usr");
  ASSERT_FALSE(usr.empty());
  EXPECT_EQ(usr.find("nosuid"), std::string::npos) << usr;
  // /tmp is no mount of its own but part of the writable layer: the
  // template has none, so the sandbox got one, world-writable and sticky.
  EXPECT_EQ(mountinfo_of(pid, "/tmp"), "");
  ASSERT_EQ(::stat((root + "/tmp").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 01777u);
  EXPECT_EQ(st.st_uid, out);
  ASSERT_TRUE(sys::write_new_file(root + "/tmp/written-by-test", "x").has_value());
  EXPECT_TRUE(sys::path_exists(h->state_dir + "/upper/tmp/written-by-test"));

  // A symlink planted in run/ (writable by the sandbox) is not followed.
  ASSERT_EQ(::symlink(h->envd_socket.c_str(), (h->state_dir + "/run/evil.sock").c_str()), 0);
  auto evil = sys::connect_unix_nofollow(h->state_dir + "/run/evil.sock");
  EXPECT_FALSE(evil.has_value());

  // The host's mount table does not list any of the sandbox's mounts.
  EXPECT_TRUE(mountinfo_lines_with(tmp_).empty());

  // Limits are in the cgroup.
  expect_spec_limits(id, pid);
  auto u = backend_->usage(id, true);
  ASSERT_TRUE(u.has_value()) << u.error().to_string();
  EXPECT_GT(u->cpu_ns, 0u);
  EXPECT_GT(u->mem_bytes, 0u);
  EXPECT_EQ(u->mem_limit, 256ull << 20);
  EXPECT_GT(u->disk_bytes, 0u);

  auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE(backend_->destroy(id).has_value());
  std::printf("[ns] destroy: %.2f ms\n",
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count());
  expect_gone(id, pid);
  // Idempotent.
  EXPECT_TRUE(backend_->destroy(id).has_value());
}

// GET `path` with envd's access token; returns the status line's code and
// the body.
std::pair<int, std::string> envd_get(const std::string& socket_path, const std::string& path,
                                     const std::string& token) {
  auto conn = sys::connect_unix_nofollow(socket_path);
  if (!conn) return {-1, conn.error().to_string()};
  int fd = conn->release();
  struct timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: sandbox\r\nX-Access-Token: " + token +
                    "\r\nConnection: close\r\n\r\n";
  if (::write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return {-1, "write"};
  }
  std::string resp;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) resp.append(buf, static_cast<size_t>(n));
  ::close(fd);
  if (resp.rfind("HTTP/1.1 ", 0) != 0) return {-1, resp};
  size_t body = resp.find("\r\n\r\n");
  return {std::atoi(resp.c_str() + 9), body == std::string::npos ? "" : resp.substr(body + 4)};
}

// Checkpoint → the sandbox ends → restore into a new sandbox: envd comes
// back at pid 2 with what only its memory held (the access token and env
// vars of its init file, which it deleted), answering on the new sandbox's
// socket; the images hold its memory; both sandboxes go away cleanly.
TEST_F(NsBackendTest, CheckpointAndRestoreEnvdsTreeIntoANewSandbox) {
  if (auto why = ns::checkpoint_unavailable_reason(); !why.empty()) GTEST_SKIP() << why;
  const std::string a = "itestckpta0000000001", b = "itestckptb0000000001";
  const std::string token = "tok-" + std::to_string(::getpid());
  auto sa = spec(a);
  sa.init_json = R"({"accessToken":")" + token + R"(","envVars":{"KEPT":"in-memory"}})";
  auto h = backend_->create(sa);
  ASSERT_TRUE(h.has_value()) << h.error().to_string();
  ASSERT_EQ(envd_get(h->envd_socket, "/envs", token).first, 200);
  // PID 1 is the init, envd its child.
  auto members = cgroups_->pids(a);
  ASSERT_TRUE(members.has_value());
  EXPECT_EQ(members->size(), 2u);
  // A connection from the host held open across the checkpoint (as the
  // gateway's are): it lives in the host's network namespace, out of criu's
  // sight; the checkpoint ends it rather than failing on it.
  auto held = sys::connect_unix_nofollow(h->envd_socket);
  ASSERT_TRUE(held.has_value());
  // Accepted by envd (one exchange on it, kept alive), not still in its
  // listener's backlog, where criu would find a connection from outside.
  {
    const std::string req = "GET /health HTTP/1.1\r\nHost: sandbox\r\n\r\n";
    ASSERT_EQ(::write(held->get(), req.data(), req.size()), static_cast<ssize_t>(req.size()));
    struct timeval tv{5, 0};
    ::setsockopt(held->get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char head[64];
    ASSERT_GT(::read(held->get(), head, sizeof head), 0);
  }
  const std::string images = tmp_ + "/images-" + a;
  auto t0 = std::chrono::steady_clock::now();
  auto c = backend_->checkpoint(a, images, /*leave_running=*/false, /*durable=*/true);
  ASSERT_TRUE(c.has_value()) << c.error().to_string();
  double dump_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  // The tree was killed once written: the init follows envd.
  for (int i = 0; i < 200 && process_alive(h->init_pid) && status_field(h->init_pid, "State")[0] != 'Z'; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(!process_alive(h->init_pid) || status_field(h->init_pid, "State")[0] == 'Z');
  EXPECT_TRUE(sys::path_exists(images + "/pstree.img"));
  char byte[4096];
  ssize_t got;
  while ((got = ::read(held->get(), byte, sizeof byte)) > 0) {
  }
  EXPECT_EQ(got, 0) << "the held connection was ended";
  ASSERT_TRUE(backend_->destroy(a).has_value());

  auto sb = spec(b);
  sb.restore_from = images;
  t0 = std::chrono::steady_clock::now();
  auto hb = backend_->create(sb);
  ASSERT_TRUE(hb.has_value()) << hb.error().to_string() << "\n" << slurp(images + "/restore.log").substr(0, 200000);
  double restore_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ns] checkpoint %.1f ms, restore (create included) %.1f ms\n", dump_ms, restore_ms);
  auto [code, body] = envd_get(hb->envd_socket, "/envs", token);
  EXPECT_EQ(code, 200) << body;
  EXPECT_NE(body.find("in-memory"), std::string::npos) << body;
  EXPECT_EQ(envd_get(hb->envd_socket, "/envs", "wrong").first, 401);
  EXPECT_EQ(hostname_of(hb->init_pid), b);
  // The restored envd dies: its init ends too (it holds the log pipe's write
  // end itself after a restore, and must not wait for an EOF that never
  // comes, nor spin on it).
  auto fd = backend_->exit_fd(*hb);
  ASSERT_TRUE(fd.has_value()) << fd.error().to_string();
  auto restored = cgroups_->pids(b);
  ASSERT_TRUE(restored.has_value());
  pid_t envd = 0;
  for (pid_t p : *restored)
    if (p != hb->init_pid) envd = p;
  ASSERT_GT(envd, 0);
  ASSERT_EQ(::kill(envd, SIGKILL), 0);
  struct pollfd pf{fd->get(), POLLIN, 0};
  EXPECT_EQ(::poll(&pf, 1, 5000), 1) << "the init of a restored sandbox outlived its envd";
  ASSERT_TRUE(backend_->destroy(b).has_value());
  expect_gone(b, hb->init_pid);
  sys::remove_tree(images);
}

// CPU clock ticks (user + system) process `pid` has used so far; -1 if gone.
long cpu_ticks(pid_t pid) {
  std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream in(stat.substr(close + 2));
  std::string f;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && (in >> f); ++i) {
    if (i == 14) utime = std::atol(f.c_str());
    if (i == 15) stime = std::atol(f.c_str());
  }
  return utime + stime;
}

// A fork's way: one checkpoint of a running sandbox (left running, not
// synced), restored into three new sandboxes at once from three threads,
// each working in a dir of its own: all three come back, the images dir is
// only read (no log of theirs in it), and each restored init is idle (it
// once polled its log pipe's write end, a CPU for ever).
TEST_F(NsBackendTest, ThreeRestoresOfOneCheckpointAtOnce) {
  if (auto why = ns::checkpoint_unavailable_reason(); !why.empty()) GTEST_SKIP() << why;
  const std::string a = "itestshareda00000001";
  const std::string token = "tok-" + std::to_string(::getpid());
  auto sa = spec(a);
  sa.init_json = R"({"accessToken":")" + token + R"(","envVars":{"KEPT":"in-memory"}})";
  auto h = backend_->create(sa);
  ASSERT_TRUE(h.has_value()) << h.error().to_string();
  ASSERT_EQ(envd_get(h->envd_socket, "/envs", token).first, 200);
  const std::string images = tmp_ + "/images-" + a;
  auto c = backend_->checkpoint(a, images, /*leave_running=*/true, /*durable=*/false);
  ASSERT_TRUE(c.has_value()) << c.error().to_string();
  EXPECT_EQ(envd_get(h->envd_socket, "/envs", token).first, 200) << "the source runs on";

  const std::vector<std::string> ids = {"itestshared000000001", "itestshared000000002", "itestshared000000003"};
  std::vector<Result<sandbox::SandboxHandle>> made(ids.size(), make_error(ErrorCode::kInternal, "not run"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < ids.size(); ++i) {
    threads.emplace_back([&, i] {
      auto s = spec(ids[i]);
      s.restore_from = images;
      s.restore_work_dir = images + ".work-" + ids[i];
      made[i] = backend_->create(s);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_FALSE(sys::path_exists(images + "/restore.log")) << "the shared images are only read";
  for (size_t i = 0; i < ids.size(); ++i) {
    ASSERT_TRUE(made[i].has_value()) << made[i].error().to_string() << "\n"
                                     << slurp(images + ".work-" + ids[i] + "/restore.log").substr(0, 100000);
    EXPECT_TRUE(sys::path_exists(images + ".work-" + ids[i] + "/restore.log"));
    auto [code, body] = envd_get(made[i]->envd_socket, "/envs", token);
    EXPECT_EQ(code, 200) << body;
    EXPECT_NE(body.find("in-memory"), std::string::npos) << body;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  for (size_t i = 0; i < ids.size(); ++i) {
    long t0 = cpu_ticks(made[i]->init_pid);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    long used = cpu_ticks(made[i]->init_pid) - t0;
    EXPECT_LT(used, 5) << ids[i] << "'s init used " << used << " clock ticks in 0.5 s while idle";
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    ASSERT_TRUE(backend_->destroy(ids[i]).has_value());
    expect_gone(ids[i], made[i]->init_pid);
    sys::remove_tree(images + ".work-" + ids[i]);
  }
  ASSERT_TRUE(backend_->destroy(a).has_value());
  expect_gone(a, h->init_pid);
  sys::remove_tree(images);
}

// Runs `command` with /bin/sh through envd's Process/Start and returns once
// its stream has ended (the command has exited); the HTTP status, or -1.
int envd_run_sh(const std::string& socket_path, const std::string& token, const std::string& command) {
  auto conn = sys::connect_unix_nofollow(socket_path);
  if (!conn) return -1;
  int fd = conn->release();
  struct timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string json = R"({"process":{"cmd":"/bin/sh","args":["-c",")" + command + R"("],"cwd":"/"}})";
  std::string body = connect::envelope(json);
  std::string req = "POST /process.Process/Start HTTP/1.1\r\nHost: sandbox\r\nX-Access-Token: " + token +
                    "\r\nContent-Type: application/connect+json\r\nConnect-Protocol-Version: 1\r\n"
                    "Authorization: Basic cm9vdDo=\r\nContent-Length: " + std::to_string(body.size()) +
                    "\r\nConnection: close\r\n\r\n" + body;
  if (::write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return -1;
  }
  std::string resp;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) resp.append(buf, static_cast<size_t>(n));
  ::close(fd);
  if (resp.rfind("HTTP/1.1 ", 0) != 0) return -1;
  return std::atoi(resp.c_str() + 9);
}

// A tree of several processes (envd, a shell loop it adopted, the loop's
// sleep) checkpoints and restores into a new sandbox at the same pids, the
// loop going on from the count it held in memory.
// A gateway restarted while its criu helper (a fork of the gateway that has
// joined the sandbox's cgroups but not yet started criu) is about to dump the
// tree: the tree is continued only once that helper is gone, not before
// (criu would then leave it stopped behind the new gateway's back).
TEST_F(NsBackendTest, ContinueAfterACheckpointWaitsForCriusHelper) {
  const std::string a = "itestckpthelper00001";
  auto h = backend_->create(spec(a));
  ASSERT_TRUE(h.has_value()) << h.error().to_string();
  int named[2];
  ASSERT_EQ(::pipe(named), 0);
  pid_t helper = ::fork();
  if (helper == 0) {
    ::prctl(PR_SET_NAME, "coppice-criu");
    (void)!::write(named[1], "n", 1);
    ::pause();
    _exit(0);
  }
  ::close(named[1]);
  char b;
  ASSERT_EQ(::read(named[0], &b, 1), 1);
  ::close(named[0]);
  ASSERT_TRUE(cgroups_->join(a, helper).has_value());
  ::kill(h->init_pid, SIGSTOP);
  auto waited = ns::continue_stopped(*cgroups_, a, 300);
  ASSERT_FALSE(waited.has_value()) << "went on while the helper was there";
  EXPECT_EQ(waited.error().code(), ErrorCode::kDeadlineExceeded) << waited.error().to_string();
  ::kill(helper, SIGKILL);
  int st;
  ASSERT_EQ(::waitpid(helper, &st, 0), helper);
  ::kill(h->init_pid, SIGSTOP);
  auto went = ns::continue_stopped(*cgroups_, a, 300);
  EXPECT_TRUE(went.has_value()) << went.error().to_string();
  EXPECT_NE(status_field(h->init_pid, "State").rfind("T", 0), 0u) << "continued";
  ASSERT_TRUE(backend_->destroy(a).has_value());
}

// A snapshot cut short by a gateway restart may leave envd's tree stopped
// (criu --leave-stopped while the files were copied): the restart continues
// a tree whose envd is stopped, and leaves alone one whose envd runs (a
// process the user stopped stays stopped).
TEST_F(NsBackendTest, ARestartContinuesATreeASnapshotLeftStopped) {
  const std::string a = "itestckptheld0000001";
  auto h = backend_->create(spec(a));
  ASSERT_TRUE(h.has_value()) << h.error().to_string();
  auto members = cgroups_->pids(a);
  ASSERT_TRUE(members.has_value());
  pid_t envd = 0;
  for (pid_t p : *members) {
    if (p != h->init_pid && std::atoi(status_field(p, "PPid").c_str()) == h->init_pid) envd = p;
  }
  ASSERT_GT(envd, 0);
  auto state = [](pid_t p) { return status_field(p, "State").substr(0, 1); };
  // envd runs: nothing is continued.
  ::kill(h->init_pid, SIGSTOP);
  for (int i = 0; i < 100 && state(h->init_pid) != "T"; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(backend_->continue_after_checkpoint(a, /*only_if_held=*/true).has_value());
  EXPECT_EQ(state(h->init_pid), "T") << "a stopped process of a tree not held stays stopped";
  // envd stopped, as criu leaves it: the tree goes on.
  ::kill(envd, SIGSTOP);
  for (int i = 0; i < 100 && state(envd) != "T"; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(backend_->continue_after_checkpoint(a, /*only_if_held=*/true).has_value());
  for (int i = 0; i < 100 && state(envd) == "T"; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_NE(state(envd), "T");
  ASSERT_TRUE(backend_->destroy(a).has_value());
}

TEST_F(NsBackendTest, CheckpointAndRestoreAProcessTree) {
  if (auto why = ns::checkpoint_unavailable_reason(); !why.empty()) GTEST_SKIP() << why;
  const std::string a = "itestckpttreea000001", b = "itestckpttreeb000001";
  const std::string token = "tok-" + std::to_string(::getpid());
  auto sa = spec(a);
  sa.init_json = R"({"accessToken":")" + token + R"("})";
  auto h = backend_->create(sa);
  ASSERT_TRUE(h.has_value()) << h.error().to_string();
  ASSERT_EQ(envd_run_sh(h->envd_socket, token,
                        "i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done "
                        "</dev/null >/dev/null 2>&1 &"),
            200);
  auto count_in = [](const std::string& upper) {
    std::string v = slurp(upper + "/tmp/count");
    return v.empty() ? 0 : std::atoi(v.c_str());
  };
  for (int i = 0; i < 100 && count_in(h->state_dir + "/upper") < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto members = cgroups_->pids(a);
  ASSERT_TRUE(members.has_value());
  ASSERT_GE(members->size(), 3u) << "init, envd and the loop";
  const std::string images = tmp_ + "/images-" + a;
  auto c = backend_->checkpoint(a, images, /*leave_running=*/false, /*durable=*/true);
  ASSERT_TRUE(c.has_value()) << c.error().to_string();
  const int before = count_in(h->state_dir + "/upper");
  ASSERT_GE(before, 5);
  ASSERT_TRUE(backend_->destroy(a).has_value());

  auto sb = spec(b);
  sb.restore_from = images;
  auto t0 = std::chrono::steady_clock::now();
  auto hb = backend_->create(sb);
  ASSERT_TRUE(hb.has_value()) << hb.error().to_string();
  std::printf("[ns] restore of a %zu-process tree (create included) %.1f ms\n", members->size() - 1,
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  // The loop runs on in the new sandbox, from its count.
  int after = 0;
  for (int i = 0; i < 100 && (after = count_in(hb->state_dir + "/upper")) <= before; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_GT(after, before);
  EXPECT_LT(after, before + 60) << "counted on from memory, not from 1";
  auto restored = cgroups_->pids(b);
  ASSERT_TRUE(restored.has_value());
  EXPECT_GE(restored->size(), 3u);
  EXPECT_EQ(envd_get(hb->envd_socket, "/health", token).first, 204);

  // A restored tree (in a time namespace of criu's making, its pid
  // namespace its user namespace's) checkpoints and restores again.
  const std::string idc = "itestckpttreec000001", images2 = tmp_ + "/images-" + b;
  // Orphans of envd (a subreaper: the loop, whose session leader is gone)
  // are envd's again, not the init's, so that the next checkpoint of envd's
  // tree takes them.
  int init_children = 0;
  for (pid_t p : *restored) {
    if (p != hb->init_pid && std::atoi(status_field(p, "PPid").c_str()) == hb->init_pid) ++init_children;
  }
  EXPECT_EQ(init_children, 1) << "envd alone is the init's child";
  auto c2 = backend_->checkpoint(b, images2, /*leave_running=*/false, /*durable=*/true);
  ASSERT_TRUE(c2.has_value()) << c2.error().to_string();
  const int before2 = count_in(hb->state_dir + "/upper");
  ASSERT_TRUE(backend_->destroy(b).has_value());
  expect_gone(b, hb->init_pid);
  auto sc = spec(idc);
  sc.restore_from = images2;
  auto hc = backend_->create(sc);
  ASSERT_TRUE(hc.has_value()) << hc.error().to_string();
  int after2 = 0;
  for (int i = 0; i < 100 && (after2 = count_in(hc->state_dir + "/upper")) <= before2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_GT(after2, before2);
  EXPECT_LT(after2, before2 + 60);
  ASSERT_TRUE(backend_->destroy(idc).has_value());
  expect_gone(idc, hc->init_pid);
  sys::remove_tree(images);
  sys::remove_tree(images2);
}

// A restore from something that is not a checkpoint fails and leaves
// nothing behind.
TEST_F(NsBackendTest, RestoreFromANonCheckpointFailsCleanly) {
  if (auto why = ns::checkpoint_unavailable_reason(); !why.empty()) GTEST_SKIP() << why;
  const std::string id = "itestckptbad00000001";
  const std::string images = tmp_ + "/not-images";
  ASSERT_TRUE(sys::make_dirs(images, 0700).has_value());
  auto sp = spec(id);
  sp.restore_from = images;
  auto h = backend_->create(sp);
  ASSERT_FALSE(h.has_value());
  EXPECT_NE(h.error().to_string().find("not a checkpoint"), std::string::npos) << h.error().to_string();
  EXPECT_FALSE(cgroups_->exists(id));
  EXPECT_FALSE(sys::path_exists(tmp_ + "/state/" + id));
}

TEST_F(NsBackendTest, FreezeAndThaw) {
  const std::string id = "itestfreeze000000001";
  auto h = backend_->create(spec(id));
  ASSERT_TRUE(h.has_value()) << h.error().to_string();
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(backend_->freeze(id).has_value());
  double freeze_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  // A frozen envd does not answer.
  EXPECT_LT(http_get(h->envd_socket, "/health", 300), 0);
  t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(backend_->thaw(id).has_value());
  double thaw_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ns] freeze %.2f ms, thaw %.2f ms\n", freeze_ms, thaw_ms);
  EXPECT_EQ(http_get(h->envd_socket, "/health"), 204);
  // Destroying a frozen sandbox works too.
  ASSERT_TRUE(backend_->freeze(id).has_value());
  ASSERT_TRUE(backend_->destroy(id).has_value());
  expect_gone(id, h->init_pid);
}

TEST_F(NsBackendTest, FailedCreatesLeaveNothing) {
  // Before clone: no template.
  auto s = spec("itestfail00000000001");
  s.rootfs = tmp_ + "/no-such-rootfs";
  auto h = backend_->create(s);
  ASSERT_FALSE(h.has_value());
  std::printf("[ns] missing rootfs: %s\n", h.error().to_string().c_str());
  expect_gone(s.id, -1);

  // In the child: no envd binary to bind.
  s = spec("itestfail00000000002");
  s.envd_path = tmp_ + "/no-such-envd";
  h = backend_->create(s);
  ASSERT_FALSE(h.has_value());
  std::printf("[ns] missing envd: %s\n", h.error().to_string().c_str());
  EXPECT_NE(h.error().message().find("mount"), std::string::npos);
  expect_gone(s.id, -1);

  // After exec: the "envd" exits without ever saying it is ready.
  s = spec("itestfail00000000003");
  s.envd_path = "/bin/false";
  h = backend_->create(s);
  ASSERT_FALSE(h.has_value());
  std::printf("[ns] envd exits: %s\n", h.error().to_string().c_str());
  expect_gone(s.id, -1);

  // Bad ids and duplicate ids.
  EXPECT_FALSE(backend_->create(spec("../etc")).has_value());
  auto ok1 = backend_->create(spec("itestdup000000000001"));
  ASSERT_TRUE(ok1.has_value()) << ok1.error().to_string();
  auto dup = spec("itestdup000000000001");
  dup.state_dir = tmp_ + "/state/other";
  auto h2 = backend_->create(dup);
  EXPECT_FALSE(h2.has_value());
  EXPECT_FALSE(sys::path_exists(dup.state_dir));
  EXPECT_EQ(http_get(ok1->envd_socket, "/health"), 204);  // the first one is untouched
  ASSERT_TRUE(backend_->destroy(ok1->id).has_value());
  expect_gone(ok1->id, ok1->init_pid);
}

TEST_F(NsBackendTest, RecoveryListsAdoptsAndDestroysWithoutHandle) {
  const std::string id = "itestadopt0000000001";
  auto h = backend_->create(spec(id));
  ASSERT_TRUE(h.has_value()) << h.error().to_string();
  // A second backend stands for the gateway after a restart.
  auto b2 = make_ns_backend(opts_);
  ASSERT_TRUE(b2.has_value()) << b2.error().to_string();
  auto ids = (*b2)->list_existing();
  ASSERT_TRUE(ids.has_value());
  EXPECT_NE(std::find(ids->begin(), ids->end(), id), ids->end());
  auto adopted = (*b2)->adopt(id, h->state_dir);
  ASSERT_TRUE(adopted.has_value()) << adopted.error().to_string();
  EXPECT_EQ(adopted->init_pid, h->init_pid);
  EXPECT_EQ(adopted->host_uid, h->host_uid);
  EXPECT_EQ(adopted->envd_socket, h->envd_socket);
  EXPECT_EQ(http_get(adopted->envd_socket, "/health"), 204);
  ASSERT_TRUE((*b2)->destroy(id).has_value());
  // The process was the first backend's child: it is dead (a zombie until
  // that parent reaps it, which its own idempotent destroy does).
  ASSERT_TRUE(backend_->destroy(id).has_value());
  expect_gone(id, h->init_pid);
  // adopt of something not running is kNotFound.
  auto none = (*b2)->adopt("itestnothere00000001", tmp_ + "/state/x");
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code(), ErrorCode::kNotFound);
}

TEST_F(NsBackendTest, InterpreterIsBoundReadOnly) {
  const std::string id = "itestinterp000000001";
  auto s = spec(id);
  s.interp_path = envd_;  // any host file will do
  auto h = backend_->create(s);
  ASSERT_TRUE(h.has_value()) << h.error().to_string();
  const std::string root = "/proc/" + std::to_string(h->init_pid) + "/root";
  struct stat st;
  ASSERT_EQ(::stat((root + "/.coppice/interp").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  std::string line = mountinfo_of(h->init_pid, "/.coppice/interp");
  ASSERT_FALSE(line.empty());
  std::istringstream fields(line);
  std::string f, opts;
  for (int i = 0; i < 6 && fields >> f; ++i) opts = f;  // field 6: per-mount options
  EXPECT_TRUE(opts.starts_with("ro,")) << line;
  EXPECT_NE(opts.find("nosuid"), std::string::npos) << line;
  EXPECT_NE(opts.find("nodev"), std::string::npos) << line;
  EXPECT_EQ(::open((root + "/.coppice/interp").c_str(), O_WRONLY | O_CLOEXEC), -1);
  ASSERT_TRUE(backend_->destroy(id).has_value());
  expect_gone(id, h->init_pid);

  // Without one there is nothing at /.coppice/interp.
  auto plain = backend_->create(spec(id));
  ASSERT_TRUE(plain.has_value()) << plain.error().to_string();
  EXPECT_FALSE(sys::path_exists("/proc/" + std::to_string(plain->init_pid) + "/root/.coppice/interp"));
  ASSERT_TRUE(backend_->destroy(id).has_value());

  // A missing binary is a clear error, and leaves nothing.
  s.interp_path = tmp_ + "/no-such-interp";
  auto bad = backend_->create(s);
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message().find(s.interp_path), std::string::npos) << bad.error().to_string();
  expect_gone(id, -1);
}

TEST_F(NsBackendTest, IdleSandboxesHoldNoFdsAndSlotsReuseTheirNamespace) {
  auto fds = [] { return sys::list_dir("/proc/self/fd")->size(); };
  const size_t before = fds();
  std::vector<SandboxHandle> hs;
  for (int i = 0; i < 5; ++i) {
    auto h = backend_->create(spec("itestfds00000000000" + std::to_string(i)));
    ASSERT_TRUE(h.has_value()) << h.error().to_string();
    hs.push_back(*h);
  }
  // A running sandbox costs the backend no fd (the ready user namespaces of
  // the free slots are fds, and the 5 creates took 5 of them).
  EXPECT_LE(fds(), before);
  const uid_t first = hs[0].host_uid;
  for (auto& h : hs) ASSERT_TRUE(backend_->destroy(h.id).has_value());
  ASSERT_TRUE(trash_settled());  // its removals use fds for a while
  // Their namespaces came back to the cache.
  EXPECT_EQ(fds(), before);
  // The slot's next sandbox is in the same, correctly mapped namespace.
  auto again = backend_->create(spec("itestfdsagain0000001"));
  ASSERT_TRUE(again.has_value()) << again.error().to_string();
  EXPECT_EQ(again->host_uid, first);
  unsigned in = 99, out = 0, count = 0;
  ASSERT_EQ(std::sscanf(slurp("/proc/" + std::to_string(again->init_pid) + "/uid_map").c_str(), "%u %u %u", &in, &out,
                        &count),
            3);
  EXPECT_EQ(in, 0u);
  EXPECT_EQ(out, first);
  EXPECT_EQ(count, 65536u);
  EXPECT_EQ(http_get(again->envd_socket, "/health"), 204);
  ASSERT_TRUE(backend_->destroy(again->id).has_value());
  ASSERT_TRUE(trash_settled());
  EXPECT_EQ(fds(), before);
}

// A sandbox that filled its writable layer with a 20,000-deep chain and a
// wide directory is destroyed in constant time; its tree is removed in the
// background.
TEST_F(NsBackendTest, DestroyOfADeepTreeIsQuickAndTheTreeIsReaped) {
  auto h = backend_->create(spec("itestdeep00000000001"));
  ASSERT_TRUE(h.has_value()) << h.error().to_string();
  const std::string upper = h->state_dir + "/upper";
  ASSERT_EQ(::mkdir((upper + "/deep").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((upper + "/wide").c_str(), 0755), 0);
  test_util::make_chain(upper + "/deep", 20000);
  test_util::make_files(upper + "/wide", 20000);
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(backend_->destroy(h->id).has_value());
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(ms, 2000) << "destroy took " << ms << " ms";
  expect_gone(h->id, h->init_pid);
  ASSERT_TRUE(trash_settled());
  EXPECT_TRUE(sys::list_dir(tmp_ + "/state/.trash")->empty());
  std::printf("[ figures  ] destroy with a 20,000-deep chain and 20,000 files in its upper layer: %lld ms\n",
              static_cast<long long>(ms));
}

TEST_F(NsBackendTest, TwentyCreatesAndDestroysStayClean) {
  std::vector<double> times;
  for (int i = 0; i < 20; ++i) {
    char id[32];
    std::snprintf(id, sizeof id, "itestloop%011d", i);
    auto t0 = std::chrono::steady_clock::now();
    auto h = backend_->create(spec(id));
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    ASSERT_TRUE(h.has_value()) << h.error().to_string();
    ASSERT_EQ(http_get(h->envd_socket, "/health"), 204);
    ASSERT_TRUE(backend_->destroy(id).has_value());
    expect_gone(id, h->init_pid);
  }
  std::sort(times.begin(), times.end());
  std::printf("[ns] cold create until envd ready: median %.2f ms, min %.2f ms, max %.2f ms (n=20)\n", times[10],
              times.front(), times.back());
  auto left = backend_->list_existing();
  ASSERT_TRUE(left.has_value());
  EXPECT_TRUE(left->empty());
}

TEST_F(NsBackendTest, ConcurrentCreatesFromSeveralThreads) {
  constexpr int kThreads = 4, kEach = 5;
  auto t0 = std::chrono::steady_clock::now();
  auto run = create_concurrently("itestconc", kThreads, kEach, /*half_without_envd=*/false);
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  for (auto& e : run.errors) EXPECT_EQ(e, "");
  EXPECT_EQ(run.good, kThreads * kEach);
  std::printf("[ns] %d create+health+destroy cycles on %d threads: %.1f ms (%.0f/s)\n", kThreads * kEach, kThreads, ms,
              kThreads * kEach * 1000.0 / ms);
  auto left = backend_->list_existing();
  ASSERT_TRUE(left.has_value());
  EXPECT_TRUE(left->empty());
  EXPECT_TRUE(mountinfo_lines_with(tmp_).empty());
}


// Launches run their children side by side (no lock across a child's set-up,
// launch.cc): a child that fails in its set-up is reported as such, with its
// step, while other launches' children (holding copies of every pipe open
// at their clone) are still setting up; the good ones start.
TEST_F(NsBackendTest, ConcurrentCreatesReportEachChildsOwnFailure) {
  constexpr int kThreads = 4, kEach = 4;
  auto run = create_concurrently("itestmixd", kThreads, kEach, /*half_without_envd=*/true);
  for (auto& e : run.errors) EXPECT_EQ(e, "");
  EXPECT_EQ(run.good, kThreads * kEach / 2);
  EXPECT_EQ(run.failed_in_mount, kThreads * kEach / 2);
  auto left = backend_->list_existing();
  ASSERT_TRUE(left.has_value());
  EXPECT_TRUE(left->empty());
  EXPECT_TRUE(mountinfo_lines_with(tmp_).empty());
}

// Host resources made ahead (spares.h): a new backend removes the leftovers
// of a dead one, keeps `spares` bundles ready, a create takes the oldest
// (its cgroup renamed to the sandbox's and limited as the spec says, its
// skeleton renamed into the state dir, its network namespace entered), the
// bundle is made again, and the backend's end removes the rest.
TEST_F(NsBackendTest, SparesAreTakenRefilledAndRemoved) {
  backend_.reset();
  const std::string spare_dir = tmp_ + "/spare";
  // Leftovers of a backend killed before it could clean up.
  ASSERT_TRUE(sys::make_dirs(spare_dir + "/77/upper", 0700).has_value());
  Limits small;
  small.memory_bytes = 64ull << 20;
  if (!cgroups_->v2()) {
    ASSERT_TRUE(cgroups_->create("spare-77", small).has_value());
  }
  {
    auto c = cgroups_->create("spare-77x", small);  // ...released, not removed
    if (c) c->release();
  }
  opts_.spares = 3;
  opts_.spare_dir = spare_dir;
  auto b = make_ns_backend(opts_);
  ASSERT_TRUE(b.has_value()) << b.error().to_string();
  backend_ = std::move(*b);
  EXPECT_FALSE(cgroups_->exists("spare-77"));
  EXPECT_FALSE(cgroups_->exists("spare-77x"));
  EXPECT_FALSE(sys::path_exists(spare_dir + "/77"));

  auto wait_ready = [&](size_t n) {
    for (int i = 0; i < 500 && backend_->spares_ready() < n; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return backend_->spares_ready();
  };
  ASSERT_EQ(wait_ready(3), 3u);
  EXPECT_TRUE(sys::path_exists(spare_dir + "/1/upper"));
  if (!cgroups_->v2()) {
    EXPECT_TRUE(cgroups_->exists("spare-1"));
  }
  // Spares are not sandboxes: not listed for recovery, not a valid id.
  auto listed = backend_->list_existing();
  ASSERT_TRUE(listed.has_value());
  EXPECT_TRUE(listed->empty());
  auto bad = backend_->create(spec("spare-1"));
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), ErrorCode::kInvalidArgument);

  // The first create takes spare 1 (its cgroup had the default limits, the
  // spec asks for less).
  const std::string id = "itestspare0000000001";
  auto h = backend_->create(spec(id));
  ASSERT_TRUE(h.has_value()) << h.error().to_string();
  const pid_t pid = h->init_pid;
  EXPECT_FALSE(sys::path_exists(spare_dir + "/1"));
  struct stat st;
  ASSERT_EQ(::stat((h->state_dir + "/upper").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, h->host_uid);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  ASSERT_EQ(::stat((h->state_dir + "/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, h->host_uid);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  if (!cgroups_->v2()) {
    EXPECT_FALSE(cgroups_->exists("spare-1"));
  }
  expect_spec_limits(id, pid);
  EXPECT_EQ(http_get(h->envd_socket, "/health"), 204);
  EXPECT_EQ(hostname_of(pid), id);
  // Its own network namespace, loopback only and up, shown by its /sys.
  auto netns_of = [](pid_t p) {
    struct stat s{};
    ::stat(("/proc/" + std::to_string(p) + "/ns/net").c_str(), &s);
    return s.st_ino;
  };
  EXPECT_NE(netns_of(pid), netns_of(::getpid()));
  expect_loopback_only(pid);
  // envd got no fd of the spare: only its own.
  auto envd_fds = sys::list_dir("/proc/" + std::to_string(pid) + "/fd");
  ASSERT_TRUE(envd_fds.has_value());
  for (const auto& fd : *envd_fds) {
    auto target = sys::read_symlink("/proc/" + std::to_string(pid) + "/fd/" + fd);
    if (target) {
      EXPECT_EQ(target->find("net:["), std::string::npos) << *target;
    }
  }

  // A second one gets another namespace; the spares are made again.
  auto h2 = backend_->create(spec("itestspare0000000002"));
  ASSERT_TRUE(h2.has_value()) << h2.error().to_string();
  EXPECT_NE(netns_of(h2->init_pid), netns_of(pid));
  EXPECT_EQ(wait_ready(3), 3u);

  for (auto* x : {&*h, &*h2}) {
    ASSERT_TRUE(backend_->destroy(x->id).has_value());
    expect_gone(x->id, x->init_pid);
  }
  // The backend's end removes every spare.
  backend_.reset();
  auto left = cgroups_->list();
  ASSERT_TRUE(left.has_value());
  EXPECT_TRUE(left->empty()) << left->front();
  EXPECT_FALSE(sys::path_exists(spare_dir));
}


TEST_F(NsBackendTest, AllSandboxesTogetherHaveAPidsCapBelowTheHosts) {
  auto host = [](const char* f) { return std::strtoull(slurp(f).c_str(), nullptr, 10); };
  const uint64_t budget = std::min(host("/proc/sys/kernel/pid_max"), host("/proc/sys/kernel/threads-max"));
  auto parent = cgroups_->parent_pids_max();
  ASSERT_TRUE(parent.has_value()) << parent.error().to_string();
  ASSERT_NE(*parent, "max") << "the sandboxes' parent cgroup has no pids cap";
  const uint64_t cap = std::strtoull(parent->c_str(), nullptr, 10);
  EXPECT_GT(cap, 0u);
  EXPECT_LT(cap, budget) << "no reserve left for the host";
  EXPECT_EQ(cap, ns::default_parent_pids_max());

  // Each sandbox has its own cap below that.
  const std::string id = "itestpids00000000001";
  auto h = backend_->create(spec(id));
  ASSERT_TRUE(h.has_value()) << h.error().to_string();
  auto own = cgroups_->pids_max(id);
  ASSERT_TRUE(own.has_value()) << own.error().to_string();
  EXPECT_EQ(*own, "256");
  ASSERT_TRUE(backend_->destroy(id).has_value());

  // The flag's value wins; 0 lifts the cap.
  NsOptions o = opts_;
  o.total_pids_max = 5000;
  auto b2 = make_ns_backend(o);
  ASSERT_TRUE(b2.has_value()) << b2.error().to_string();
  EXPECT_EQ(*cgroups_->parent_pids_max(), "5000");
  b2->reset();
  o.total_pids_max = 0;
  auto b3 = make_ns_backend(o);
  ASSERT_TRUE(b3.has_value()) << b3.error().to_string();
  EXPECT_EQ(*cgroups_->parent_pids_max(), "max");
}

TEST_F(NsBackendTest, ExitFdFiresWhenEnvdDiesAndDestroyStillCleansUp) {
  const std::string id = "itestexit00000000001";
  auto h = backend_->create(spec(id));
  ASSERT_TRUE(h.has_value()) << h.error().to_string();
  auto fd = backend_->exit_fd(*h);
  ASSERT_TRUE(fd.has_value()) << fd.error().to_string();
  struct pollfd p{fd->get(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 100), 0) << "readable while envd runs";
  ASSERT_EQ(::kill(h->init_pid, SIGKILL), 0);
  EXPECT_EQ(::poll(&p, 1, 2000), 1) << "not readable after envd was killed";
  // Once dead, no new watch: kNotFound... or one that fires at once (a zombie).
  if (auto again = backend_->exit_fd(*h); again) {
    struct pollfd q{again->get(), POLLIN, 0};
    EXPECT_EQ(::poll(&q, 1, 1000), 1);
  } else {
    EXPECT_EQ(again.error().code(), ErrorCode::kNotFound);
  }
  ASSERT_TRUE(backend_->destroy(id).has_value());
  expect_gone(id, h->init_pid);
}

TEST_F(NsBackendTest, PortSocketNeverEntersTheNetworkOfAProcessThatReusedThePid) {
  const std::string id = "itestportreuse000001";
  auto h = backend_->create(spec(id));
  ASSERT_TRUE(h.has_value()) << h.error().to_string();
  ASSERT_NE(h->netns_cookie, 0u);
  auto good = backend_->port_socket(*h, 8080);
  ASSERT_TRUE(good.has_value()) << good.error().to_string();

  // The sandbox's pid now names another process: the test itself (the host's
  // network) ...
  SandboxHandle reused = *h;
  reused.init_pid = ::getpid();
  auto r = backend_->port_socket(reused, 8080);
  ASSERT_FALSE(r.has_value()) << "a socket in the host's network namespace";
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound);

  // ... or a process in a network namespace of its own.
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    char c = ::unshare(CLONE_NEWNET) == 0 ? 'y' : 'n';
    (void)!::write(ready[1], &c, 1);
    ::pause();
    _exit(0);
  }
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  EXPECT_EQ(c, 'y');
  reused.init_pid = child;
  auto r2 = backend_->port_socket(reused, 8080);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ASSERT_FALSE(r2.has_value()) << "a socket in another process's network namespace";
  EXPECT_EQ(r2.error().code(), ErrorCode::kNotFound);

  ASSERT_TRUE(backend_->destroy(id).has_value());
  expect_gone(id, h->init_pid);
}

}  // namespace
}  // namespace coppice::sandbox
