#include "envd/pid1.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace coppice::envd {
namespace {

void write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;  // the log is best effort: never block envd's exit on it
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// Copies what is in the pipe now to stdout: kCopied, kNothingNow (EAGAIN),
// or kClosed at EOF or on an error.
enum Relayed { kCopied, kNothingNow, kClosed };
Relayed relay(int from) {
  char buf[16384];
  ssize_t n = ::read(from, buf, sizeof buf);
  if (n > 0) {
    write_all(STDOUT_FILENO, buf, static_cast<size_t>(n));
    return kCopied;
  }
  return n < 0 && (errno == EAGAIN || errno == EINTR) ? kNothingNow : kClosed;
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

int run_pid1(int argc, char** argv, EnvdMain envd_main) {
  const bool restore = std::strcmp(argv[1], "--pid1-restore") == 0;
  std::vector<char*> args;
  if (!restore) {
    if (argc < 4 || std::strcmp(argv[2], "--") != 0) {
      std::fprintf(stderr, "usage: %s --pid1 -- ENVD [ARGS...] | --pid1-restore\n", argv[0]);
      return 2;
    }
    for (int i = 3; i < argc; ++i) args.push_back(argv[i]);
    args.push_back(nullptr);
  } else if (argc != 2) {
    std::fprintf(stderr, "usage: %s --pid1-restore\n", argv[0]);
    return 2;
  }

  sigset_t all, old;
  sigfillset(&all);
  ::sigprocmask(SIG_SETMASK, &all, &old);
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) {
    std::perror("pid1: pipe");
    return 1;
  }
  pid_t envd = kEnvdPid;
  if (!restore) {
    envd = ::fork();
    if (envd < 0) {
      std::perror("pid1: fork");
      return 1;
    }
    if (envd == 0) {
      // A session of its own inside the sandbox (the init's is the
      // gateway's, outside it): a checkpoint needs the tree's session
      // leader in the tree.
      ::setsid();
      ::sigprocmask(SIG_SETMASK, &old, nullptr);
      ::dup2(pipefd[1], STDOUT_FILENO);
      ::dup2(pipefd[1], STDERR_FILENO);
      if (std::strcmp(args[0], argv[0]) == 0) {
        // envd is this binary: run it here (the exec would only load the
        // same image again). The init's only other fds are the pipe's.
        ::close(pipefd[0]);
        ::close(pipefd[1]);
        std::exit(envd_main(static_cast<int>(args.size()) - 1, args.data()));
      }
      ::execv(args[0], args.data());
      std::perror("pid1: exec envd");
      ::_exit(127);
    }
    ::close(3);  // the readiness fd is envd's
    ::close(pipefd[1]);
  } else {
    // The write end goes to kRestoreLogFd (criu hands it to the restored
    // envd). The read end must not be there already: with 0-3 taken, pipe2
    // returns fds 4 and 5, and a dup2 of the write end onto 4 would leave us
    // polling the write end (POLLERR at once, for ever: a busy loop).
    if (pipefd[0] == kRestoreLogFd) {
      int moved = ::fcntl(pipefd[0], F_DUPFD_CLOEXEC, kRestoreLogFd + 1);
      if (moved < 0) {
        std::perror("pid1: move the log pipe");
        return 1;
      }
      ::close(pipefd[0]);
      pipefd[0] = moved;
    }
    if (pipefd[1] != kRestoreLogFd) {
      if (::dup2(pipefd[1], kRestoreLogFd) < 0) {
        std::perror("pid1: dup2");
        return 1;
      }
      ::close(pipefd[1]);
    }
    const char byte = 1;
    write_all(3, &byte, 1);
    ::close(3);
  }
  ::fcntl(pipefd[0], F_SETFL, O_NONBLOCK);

  sigset_t wanted;
  sigemptyset(&wanted);
  for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) sigaddset(&wanted, s);
  int sfd = ::signalfd(-1, &wanted, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) {
    std::perror("pid1: signalfd");
    return 1;
  }
  bool pipe_open = true;
  for (;;) {
    struct pollfd p[2] = {{sfd, POLLIN, 0}, {pipefd[0], POLLIN, 0}};
    if (::poll(p, pipe_open ? 2 : 1, -1) < 0 && errno != EINTR) return 1;
    // An error on the pipe ends the relay (relay() fails on it): never a
    // poll that returns at once again.
    if (pipe_open && (p[1].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL))) pipe_open = relay(pipefd[0]) != kClosed;
    if (!(p[0].revents & POLLIN)) continue;
    struct signalfd_siginfo si;
    while (::read(sfd, &si, sizeof si) == sizeof si) {
      if (si.ssi_signo != SIGCHLD) ::kill(envd, static_cast<int>(si.ssi_signo));
    }
    for (;;) {
      int status = 0;
      pid_t r = ::waitpid(-1, &status, WNOHANG);
      if (r <= 0) break;
      if (r == envd) {
        // What envd wrote last, then out. Up to what is there now, not to
        // EOF: after a restore this init holds the pipe's write end itself
        // (kRestoreLogFd), so the pipe never ends.
        while (pipe_open && relay(pipefd[0]) == kCopied) {
        }
        ::_exit(exit_code(status));
      }
    }
  }
}

}  // namespace coppice::envd
