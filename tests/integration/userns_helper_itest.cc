// make_userns's helper task (sys/userns.h) dies with the process that made
// it: a gateway killed with SIGKILL while a helper runs must not leave it
// behind, paused forever with the gateway's fd table (its listening socket
// and uid-range lock: no gateway could start on that state dir again).
// A child copy of this program makes user namespaces in a loop with one end
// of a pipe open and is killed at random points; the pipe must then read
// EOF (no task holds the child's fd table any more). Needs root.
#include <gtest/gtest.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "sys/userns.h"

extern char** environ;

namespace coppice::sys {
namespace {

constexpr const char* kLoopEnv = "COPPICE_USERNS_LOOP_FD";

// Runs only as the child of the test below: reports on the pipe once, then
// makes user namespaces (owned by root and by another uid) until killed.
TEST(UsernsHelper, LoopUntilKilled) {
  const char* fd = std::getenv(kLoopEnv);
  if (!fd) GTEST_SKIP() << "runs only as the child of UsernsHelper.DiesWithTheProcessThatMadeIt";
  const IdRange map{0, 3900000000u, 65536};
  if (::write(std::atoi(fd), "r", 1) != 1) std::_Exit(3);
  for (uint64_t i = 0;; ++i) (void)make_userns(map, map, i % 2 ? map.outside : 0);
}

// Pids of the processes with an fd on pipe inode `ino`.
std::vector<pid_t> holders_of_pipe(ino_t ino) {
  std::vector<pid_t> out;
  const std::string want = "pipe:[" + std::to_string(ino) + "]";
  DIR* proc = ::opendir("/proc");
  if (!proc) return out;
  while (auto* e = ::readdir(proc)) {
    pid_t pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::string dir = std::string("/proc/") + e->d_name + "/fd";
    DIR* fds = ::opendir(dir.c_str());
    if (!fds) continue;
    while (auto* f = ::readdir(fds)) {
      char target[64];
      ssize_t n = ::readlink((dir + "/" + f->d_name).c_str(), target, sizeof target - 1);
      if (n > 0 && std::string(target, size_t(n)) == want) {
        out.push_back(pid);
        break;
      }
    }
    ::closedir(fds);
  }
  ::closedir(proc);
  return out;
}

TEST(UsernsHelper, DiesWithTheProcessThatMadeIt) {
  if (::geteuid() != 0) GTEST_SKIP() << "user namespaces owned by another uid need root";
  int leaked_rounds = 0;
  for (int round = 0; round < 20; ++round) {
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 3);  // clears CLOEXEC on the copy
    std::string filter = "--gtest_filter=UsernsHelper.LoopUntilKilled";
    std::vector<char*> argv = {const_cast<char*>("/proc/self/exe"), filter.data(), nullptr};
    std::vector<std::string> env_s;
    for (char** e = environ; *e; ++e) env_s.emplace_back(*e);
    env_s.push_back(std::string(kLoopEnv) + "=3");
    std::vector<char*> env;
    for (auto& s : env_s) env.push_back(s.data());
    env.push_back(nullptr);
    pid_t child = -1;
    ASSERT_EQ(::posix_spawn(&child, "/proc/self/exe", &fa, nullptr, argv.data(), env.data()), 0);
    posix_spawn_file_actions_destroy(&fa);
    ::close(p[1]);
    char c = 0;
    struct pollfd pf{p[0], POLLIN, 0};
    ASSERT_EQ(::poll(&pf, 1, 20000), 1) << "the child did not start";
    ASSERT_EQ(::read(p[0], &c, 1), 1);
    std::this_thread::sleep_for(std::chrono::microseconds(200 + round * 137 % 3000));
    ::kill(child, SIGKILL);
    int st = 0;
    ::waitpid(child, &st, 0);
    // EOF once no task holds the child's fd table.
    pf = {p[0], POLLIN, 0};
    bool eof = ::poll(&pf, 1, 2000) == 1 && ::read(p[0], &c, 1) == 0;
    if (!eof) {
      ++leaked_rounds;
      struct stat sb;
      ASSERT_EQ(::fstat(p[0], &sb), 0);
      for (pid_t h : holders_of_pipe(sb.st_ino)) {
        if (h != ::getpid()) ::kill(h, SIGKILL);  // the leaked helper, orphaned
      }
    }
    ::close(p[0]);
  }
  EXPECT_EQ(leaked_rounds, 0) << "helper tasks outlived the process that made them";
}

}  // namespace
}  // namespace coppice::sys
