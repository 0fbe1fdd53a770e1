// PID 1 of a sandbox: a small init in front of envd.
//
// envd is not PID 1 so that a checkpoint can take envd's whole tree (envd
// and everything it started) from inside the sandbox's pid namespace and a
// restore can put it back, at its own pids, into a fresh sandbox whose PID 1
// is already there (sandbox/ns/checkpoint.h). The init:
//   --pid1 -- ENVD ARGS...   starts envd (its first child, so pid 2) with fd
//                            3 (readiness) passed on and its stdout/stderr
//                            on a pipe that the init copies to its own
//                            stdout (the sandbox's log). When ENVD is this
//                            very binary (argv[0]) the child runs envd's
//                            main in the forked copy instead of exec'ing it
//                            again: one process creation less per sandbox;
//   --pid1-restore           starts nothing: writes its readiness byte on fd
//                            3 at once and waits for a restored envd (pid 2);
//                            the pipe's write end stays open as fd 4 for the
//                            restorer to hand to the restored envd.
// Both reap every child, pass SIGTERM/SIGINT/SIGHUP on to envd and exit
// with envd's exit status once envd (pid 2) is gone, which ends the
// sandbox as envd's exit did when it was PID 1.
#pragma once

namespace coppice::envd {

// The pid envd has in its sandbox: the init's first child.
constexpr int kEnvdPid = 2;
// In --pid1-restore, the fd of the log pipe's write end.
constexpr int kRestoreLogFd = 4;

// envd's own main, for the forked child to run without an exec.
using EnvdMain = int (*)(int argc, char** argv);

// Runs the init; argv[1] is --pid1 or --pid1-restore. Returns only an exit
// status for main() on a usage error; otherwise it exits with envd's.
int run_pid1(int argc, char** argv, EnvdMain envd_main);

}  // namespace coppice::envd
