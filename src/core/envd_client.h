// The gateway's calls to a sandbox's envd over its unix socket: /init, which
// hands a sandbox its token, environment and defaults, and running a shell
// command to completion (a template's start and readiness commands).
#pragma once

#include <chrono>
#include <map>
#include <string>

#include "common/result.h"
#include "http/client.h"

namespace coppice::core {

namespace asio = http::asio;

struct EnvdInit {
  std::string access_token;                       // empty: the sandbox is not secured
  std::map<std::string, std::string> env_vars;
  std::string default_user = "user";
  std::string default_workdir = "/home/user";
};

// The /init body for `init` (also what envd reads from --init-file).
std::string envd_init_body(const EnvdInit& init);

// POST /init. envd takes the first /init from anyone; later ones need the
// token the first set, which is sent along (X-Access-Token) when given.
// Environment variables add to those set before.
asio::awaitable<Status> envd_init(const http::Endpoint& ep, const EnvdInit& init);

// What envd holds for its users besides processes (GET /coppice/held).
struct EnvdHeld {
  uint64_t watchers = 0;
  uint64_t watchers_made = 0;
};
asio::awaitable<Result<EnvdHeld>> envd_held(const http::Endpoint& ep, const std::string& token);

// Runs `/bin/sh -c <command>` as `user` in `cwd` through Process/Start and waits for it
// to end; returns its exit code (-1 when killed by a signal). envd kills the
// command at `timeout` (Connect-Timeout-Ms); that is an error, not an exit code.
// `access_token`: the sandbox's, once /init has set one.
asio::awaitable<Result<int>> envd_run(const http::Endpoint& ep, const std::string& access_token,
                                      const std::string& command, const std::map<std::string, std::string>& envs,
                                      std::chrono::milliseconds timeout, const std::string& user = "root",
                                      const std::string& cwd = "/");

// The exit code in a Process/Start response stream (enveloped JSON events,
// closed by an end-stream frame): kNotFound when it has no end event, the
// stream's error when the end-stream frame carries one.
Result<int> exit_code_of_stream(std::string_view body);

}  // namespace coppice::core
