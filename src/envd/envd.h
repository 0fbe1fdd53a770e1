// The in-sandbox agent: its configuration, its shared state and the services
// it serves. Everything runs on one io_context thread, so the state needs no
// locks; blocking work is kept short or done in chunks.
#pragma once

#include <nlohmann/json.hpp>

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/constants.h"
#include "common/result.h"
#include "envd/paths.h"
#include "envd/users.h"
#include "http/connect.h"
#include "http/server.h"

namespace coppice::envd {

namespace asio = http::asio;

// The version the E2B SDK sees: semver, gates SDK features (every one is on
// from 0.6.4). Coppice's own version is COPPICE_VERSION.
using coppice::kEnvdVersion;  // common/constants.h

struct Config {
  std::string host = "0.0.0.0";          // TCP listen address
  int port = kEnvdPort;                      // TCP port; -1 disables TCP
  std::string socket_path;               // unix socket; empty disables
  std::string etc_dir = "/etc";          // where passwd and group are read
  std::string default_user = "root";     // until /init names another
  int ready_fd = -1;                     // written to ("1") and closed once listening
  // How long the end of an exited process is kept for Process/Connect.
  std::chrono::seconds exited_retention{60};
};

// State set through /init.
struct InitState {
  std::optional<std::string> access_token;
  std::string default_user;
  std::string default_workdir;  // as /init gave it, resolved per request; empty: the user's home
  std::map<std::string, std::string> env_vars;
  int64_t last_init_ns = 0;     // the newest /init timestamp applied
};

// Calls back when a child of envd exits. envd reaps every child (it is PID 1
// of the sandbox, or a subreaper); exits of pids nobody watches are orphans
// and are simply collected.
class Reaper {
 public:
  using Callback = std::function<void(int wait_status)>;
  void watch(pid_t pid, Callback cb) { watched_[pid] = std::move(cb); }
  // Collects every exited child (called on SIGCHLD).
  void reap();

 private:
  std::unordered_map<pid_t, Callback> watched_;
};

class ProcessService;
class FilesystemService;

class Envd {
 public:
  Envd(asio::io_context& io, Config cfg);
  ~Envd();

  // Starts listening and serving; returns once the listeners are up.
  Status start();
  // Stops listening and kills every process envd started.
  void shutdown();

  asio::io_context& io() { return io_; }
  const Config& config() const { return cfg_; }
  InitState& init() { return init_; }
  // Applies an /init body (accessToken, defaultUser, defaultWorkdir, envVars,
  // timestamp); kInvalidArgument naming what is wrong.
  Status apply_init(const nlohmann::json& req);
  // The same from a file, which is then removed (--init-file: a sandbox's
  // launcher hands envd its /init before it starts, saving a round trip).
  Status apply_init_file(const std::string& path);
  const UserDb& users() const { return users_; }
  Reaper& reaper() { return reaper_; }

  // The user a request acts as: `Authorization: Basic base64(user:)` if
  // present, else the default user.
  Result<User> request_user(const http::Exchange& ex) const;
  // The named user, or the default user when `name` is empty.
  Result<User> user_or_default(std::string_view name) const;
  // The absolute, clean path a request's `path` names for `user`, by E2B's
  // rules (envd/paths.h): "" is the default workdir, "~" and a relative path
  // are the user's own home. kInvalidArgument for a NUL byte or "~name".
  Result<std::string> resolve_path(std::string_view path, const User& user) const;
  // The environment of a process started for `user`: base variables, /init's
  // env vars, then `extra`.
  std::vector<std::string> process_env(const User& user, const std::map<std::string, std::string>& extra) const;

  // True when the request carries the access token (or none is set).
  bool token_ok(const http::Exchange& ex) const;

  // What envd holds for its users besides their processes: polling
  // watchers, alive and ever made (GET /coppice/held). The gateway forks a
  // sandbox without an image of its memory only when envd holds none, and
  // none was made while it copied the files.
  struct Held {
    size_t watchers = 0;
    uint64_t watchers_made = 0;
  };
  Held& held() { return held_; }

 private:
  asio::awaitable<void> handle(http::Exchange& ex);
  asio::awaitable<void> handle_init(http::Exchange& ex);

  asio::io_context& io_;
  Config cfg_;
  InitState init_;
  Held held_;
  UserDb users_;
  Reaper reaper_;
  connect::Router rpc_;
  std::unique_ptr<http::Server> server_;
  std::unique_ptr<ProcessService> process_;
  std::unique_ptr<FilesystemService> filesystem_;
};

// JSON error body {"code":<status>,"message":...} for envd's REST endpoints.
std::string rest_error(unsigned status, std::string_view message);

}  // namespace coppice::envd
