#include "sys/spawn.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "common/test_temp_dir.h"

namespace coppice::sys {
namespace {

// Runs `opts` with stdout on a pipe; returns what the child wrote and its
// exit status.
struct Ran {
  std::string out;
  int status = -1;
};
Ran run(SpawnOptions opts) {
  Ran r;
  auto p = make_pipe();
  EXPECT_TRUE(p.has_value());
  if (!p) return r;
  opts.stdout_fd = p->second.get();
  auto pid = spawn(opts);
  EXPECT_TRUE(pid.has_value()) << (pid ? "" : pid.error().to_string());
  p->second.reset();
  if (!pid) return r;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(p->first.get(), buf, sizeof buf)) > 0) r.out.append(buf, static_cast<size_t>(n));
  int st = 0;
  EXPECT_EQ(::waitpid(*pid, &st, 0), *pid);
  r.status = st;
  return r;
}

// The hex mask of `field` (SigIgn, SigBlk, ...) in a /proc status text.
unsigned long long mask_of(const std::string& status, const std::string& field) {
  std::istringstream in(status);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoull(line.substr(field.size() + 1), nullptr, 16);
  }
  ADD_FAILURE() << field << " not in " << status;
  return 0;
}
constexpr unsigned long long bit(int sig) { return 1ULL << (sig - 1); }

TEST(Spawn, RunsWithItsArgumentsEnvironmentAndDirectory) {
  test_util::TempDir dir;
  SpawnOptions o;
  o.path = "sh";  // looked up in the PATH of env
  o.argv = {"sh", "-c", "printf '%s %s ' \"$1\" \"$GREETING\"; pwd", "sh", "arg one"};
  o.env = {"PATH=/usr/bin:/bin", "GREETING=hello"};
  o.cwd = dir.path();
  Ran r = run(o);
  EXPECT_EQ(r.out, "arg one hello " + std::filesystem::canonical(dir.path()).string() + "\n");
  EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0);
}

TEST(Spawn, AFailureBeforeExecNamesItsStep) {
  SpawnOptions o;
  o.path = "/bin/true";
  o.cwd = "/nonexistent/dir";
  auto pid = spawn(o);
  ASSERT_FALSE(pid.has_value());
  EXPECT_NE(pid.error().message().find("chdir /nonexistent/dir"), std::string::npos) << pid.error().message();
  EXPECT_EQ(pid.error().sys_errno(), ENOENT);
  // The failed child is ours to reap (it exited with 127).
  int st = 0;
  pid_t reaped = ::waitpid(-1, &st, 0);
  EXPECT_GT(reaped, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 127);

  SpawnOptions missing;
  missing.path = "/nonexistent/program";
  auto m = spawn(missing);
  ASSERT_FALSE(m.has_value());
  EXPECT_NE(m.error().message().find("exec /nonexistent/program"), std::string::npos) << m.error().message();
  (void)::waitpid(-1, &st, 0);

  SpawnOptions unknown;
  unknown.path = "no-such-program-anywhere";
  unknown.env = {"PATH=/usr/bin:/bin"};
  auto u = spawn(unknown);
  ASSERT_FALSE(u.has_value());
  EXPECT_EQ(u.error().code(), ErrorCode::kNotFound);
}

// The child runs on the caller's memory until it execs: none of the
// caller's signal handlers may reach it, what the caller ignores stays
// ignored unless defaults are asked for, and the mask is the caller's or
// empty.
TEST(Spawn, SignalDispositionsAndMaskAreWhatExecWouldGiveOrTheDefaults) {
  struct sigaction handled {}, ignored {}, old_usr1 {}, old_usr2 {};
  handled.sa_handler = [](int) {};
  ignored.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGUSR1, &handled, &old_usr1), 0);
  ASSERT_EQ(::sigaction(SIGUSR2, &ignored, &old_usr2), 0);
  sigset_t block, old_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGWINCH);
  ASSERT_EQ(::pthread_sigmask(SIG_BLOCK, &block, &old_mask), 0);

  SpawnOptions o;
  o.path = "/bin/cat";
  o.argv = {"cat", "/proc/self/status"};
  o.reset_signals = false;
  Ran kept = run(o);
  o.reset_signals = true;
  Ran reset = run(o);

  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::sigaction(SIGUSR1, &old_usr1, nullptr);
  ::sigaction(SIGUSR2, &old_usr2, nullptr);

  EXPECT_EQ(mask_of(kept.out, "SigCgt") & bit(SIGUSR1), 0u);
  EXPECT_NE(mask_of(kept.out, "SigIgn") & bit(SIGUSR2), 0u) << "an ignored signal stays ignored";
  EXPECT_NE(mask_of(kept.out, "SigBlk") & bit(SIGWINCH), 0u) << "the caller's mask is kept";
  EXPECT_EQ(mask_of(reset.out, "SigIgn") & bit(SIGUSR2), 0u) << "reset_signals gives defaults";
  EXPECT_EQ(mask_of(reset.out, "SigBlk"), 0u) << "reset_signals gives an empty mask";
}

// Spawning from a thread of a multi-threaded process (the gateway is one)
// with other credentials changes the child's only, never those of a thread
// of the caller's, whose memory the child shares until it execs.
TEST(Spawn, CredentialsChangeInTheChildOnly) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to take another user's ids";
  std::atomic<bool> stop{false};
  std::thread other([&] {
    while (!stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  SpawnOptions o;
  o.path = "/bin/sh";
  o.argv = {"sh", "-c", "id -u; id -g; id -G"};
  o.env = {"PATH=/usr/bin:/bin"};
  o.uid = 65534;
  o.gid = 65534;
  o.groups = {65534, 100};
  Ran r = run(o);
  stop = true;
  other.join();
  EXPECT_EQ(r.out, "65534\n65534\n65534 100\n");
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream in(task.path() / "status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("Uid:", 0) == 0 || line.rfind("Gid:", 0) == 0) {
        EXPECT_EQ(line.find("65534"), std::string::npos) << task.path() << ": " << line;
      }
    }
  }
  EXPECT_EQ(::geteuid(), 0u);
}

}  // namespace
}  // namespace coppice::sys
