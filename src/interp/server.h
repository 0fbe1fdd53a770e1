// coppice-interp's HTTP side: E2B's code-interpreter API on one port
// (e2b-protocol.md §4), over contexts that each own one Jupyter kernel of
// their language (languages.h).
//
//   GET    /health                 "OK" once the default Python context is ready and the other
//                                  default contexts' kernels have started or failed (503 before)
//   POST   /execute                {code, context_id?, language?, env_vars?} -> NDJSON stream
//                                  (no context_id: the language's default context)
//   GET    /contexts               [{id, language, cwd}]
//   POST   /contexts               {language?, cwd?} -> {id, language, cwd}, its kernel ready
//   DELETE /contexts/{id}          kills its kernel
//   POST   /contexts/{id}/restart  a fresh kernel, same id and cwd
//
// Runs in one context are served one at a time, in arrival order; runs in
// different contexts run side by side. A client that goes away (or whose
// timeout fires) interrupts its run; a kernel that does not stop within the
// grace period is killed and replaced. A kernel that dies is replaced, and the
// run that was on it ends with a ContextRestarting error.
#pragma once

#include <boost/asio.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "http/client.h"
#include "http/server.h"
#include "interp/kernel.h"
#include "interp/zmq_socket.h"

namespace coppice::interp {

struct ServerConfig {
  std::string host = "0.0.0.0";             // the sandbox's own network namespace
  int port = 49999;                         // E2B's code-interpreter port
  std::string default_cwd = "/home/user";   // cwd of the default context and of contexts created without one
  // Languages whose default context is made at start (E2B lists python's
  // and javascript's); the first is python, whose readiness /health reports.
  // A run in another language without a context makes that language's
  // default context on first use.
  std::vector<std::string> default_languages{"python", "javascript"};
  KernelOptions kernel;                     // how kernels are started
  std::chrono::milliseconds keepalive{5000};        // a keepalive line after this long without output
  std::chrono::milliseconds interrupt_grace{10000}; // after an interrupt, how long before the kernel is killed
  size_t max_body = 32u << 20;              // request body limit
  // Where envd answers GET /envs: the sandbox's environment (a create's
  // envVars included), applied to each kernel before its first run, as E2B
  // does. A unix socket path, else 127.0.0.1:49983.
  std::string envd_socket = "/.coppice/run/envd.sock";
};

struct Context;
struct Run;

class InterpServer {
 public:
  // `zctx` must outlive `io`: kernels still held by pending handlers close
  // their sockets when `io` is destroyed, and a zmq context waits for that.
  InterpServer(asio::io_context& io, ZmqContext& zctx, ServerConfig cfg);
  ~InterpServer();

  // Listens, then starts the default Python context in the background.
  Result<uint16_t> start();
  // Stops listening and kills every kernel.
  void shutdown();

 private:
  asio::awaitable<void> handle(http::Exchange& ex);
  asio::awaitable<void> handle_execute(http::Exchange& ex);
  asio::awaitable<void> handle_create_context(http::Exchange& ex);
  asio::awaitable<void> stream_run(http::Exchange& ex, std::shared_ptr<Run> run);
  asio::awaitable<void> watch_peer(http::Exchange& ex, std::shared_ptr<Run> run);
  // The sandbox's environment from envd (empty when envd cannot be asked).
  asio::awaitable<std::map<std::string, std::string>> sandbox_envs(std::string token);
  asio::awaitable<bool> run_silent(std::shared_ptr<Run> run, std::shared_ptr<Kernel> k, std::string code);

  std::shared_ptr<Context> new_context(const std::string& language, const std::string& cwd);
  // Gives the context a new kernel (starting in the background) unless its
  // current one is starting or ready.
  void ensure_kernel(const std::shared_ptr<Context>& ctx, bool force = false);
  // The default context of canonical `language`, made if there is none.
  std::shared_ptr<Context> default_context(const std::string& language);
  void release(Context& ctx);

  asio::io_context& io_;
  ServerConfig cfg_;
  ZmqContext& zctx_;
  std::unique_ptr<http::Server> http_;
  std::map<std::string, std::shared_ptr<Context>> contexts_;
  std::string default_id_;                          // the default Python context
  std::map<std::string, std::string> default_ids_;  // language -> its default context
  bool default_ready_once_ = false;
  std::string default_failure_;
  uint64_t next_seq_ = 0;
  uint64_t kernel_serial_ = 0;
};

}  // namespace coppice::interp
