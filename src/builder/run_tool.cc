#include "builder/run_tool.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <deque>

#include "common/constants.h"
#include "sys/spawn.h"

extern char** environ;

namespace coppice::builder {
namespace {

// Lines of the tool's output quoted in the error when it fails.
constexpr size_t kTailLines = 15;

std::vector<std::string> our_environment() {
  std::vector<std::string> env;
  bool has_path = false;
  for (char** e = environ; e && *e; ++e) {
    env.emplace_back(*e);
    has_path = has_path || env.back().starts_with("PATH=");
  }
  if (!has_path) env.emplace_back("PATH=" + std::string(kDefaultPath));
  return env;
}

}  // namespace

Status run_tool(const ToolRun& run) {
  const std::string& tool = run.argv.at(0);
  auto pipe = sys::make_pipe(true, false);
  if (!pipe) return std::unexpected(std::move(pipe.error()).context("run " + tool));
  auto& [rd, wr] = *pipe;
  sys::SpawnOptions so;
  so.path = tool;
  so.argv = run.argv;
  so.env = run.env.empty() ? our_environment() : run.env;
  so.stdout_fd = wr.get();
  so.stderr_fd = wr.get();
  so.new_session = true;
  auto pid = sys::spawn(so);
  if (!pid) return std::unexpected(std::move(pid.error()).context("run " + tool));
  wr.reset();

  std::deque<std::string> tail;
  std::string partial;
  auto emit = [&](std::string line) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    // Progress redraws ("\r") keep only their last state.
    if (size_t cr = line.rfind('\r'); cr != std::string::npos) line.erase(0, cr + 1);
    if (run.progress) run.progress(line);
    tail.push_back(std::move(line));
    if (tail.size() > kTailLines) tail.pop_front();
  };

  bool stopping = false;
  bool killed = false;
  auto stop_deadline = std::chrono::steady_clock::now();
  for (bool eof = false; !eof;) {
    if (run.cancel && run.cancel->load() && !stopping) {
      stopping = true;
      stop_deadline = std::chrono::steady_clock::now() + run.stop_grace;
      ::kill(-*pid, SIGTERM);
    }
    if (stopping && !killed && std::chrono::steady_clock::now() >= stop_deadline) {
      killed = true;
      ::kill(-*pid, SIGKILL);
    }
    pollfd p{rd.get(), POLLIN, 0};
    int n = ::poll(&p, 1, 200);
    if (n < 0 && errno != EINTR) return errno_error("poll " + tool + " output");
    if (n <= 0) continue;
    char buf[8192];
    ssize_t got = ::read(rd.get(), buf, sizeof buf);
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return errno_error("read " + tool + " output");
    }
    if (got == 0) {
      eof = true;
      break;
    }
    partial.append(buf, static_cast<size_t>(got));
    for (size_t nl; (nl = partial.find('\n')) != std::string::npos;) {
      emit(partial.substr(0, nl));
      partial.erase(0, nl + 1);
    }
  }
  if (!partial.empty()) emit(partial);

  int status = 0;
  while (::waitpid(*pid, &status, 0) < 0) {
    if (errno != EINTR) return errno_error("wait for " + tool);
    if (run.cancel && run.cancel->load() && !stopping) {
      stopping = true;
      ::kill(-*pid, SIGTERM);
    }
  }
  // Helpers it started and left behind go with it.
  ::kill(-*pid, SIGKILL);
  if (stopping) return make_error(ErrorCode::kCanceled, tool + " stopped: the build was interrupted");
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return ok();
  std::string msg = tool + (WIFEXITED(status) ? " exited with status " + std::to_string(WEXITSTATUS(status))
                                              : " was killed by signal " + std::to_string(WTERMSIG(status)));
  if (!tail.empty()) {
    msg += "; its last lines:";
    for (const auto& l : tail) msg += "\n  " + l;
  }
  return make_error(ErrorCode::kInternal, msg);
}

}  // namespace coppice::builder
