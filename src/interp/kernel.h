// One Jupyter kernel process (IPython, IRkernel, or coppice_kernel.py for
// the other languages: see languages.h)
// and the two ZeroMQ channels coppice-interp uses on it: shell (requests and
// their replies) and iopub (everything the kernel publishes). Its endpoints
// are unix sockets in the server's private runtime directory, so no TCP port
// is opened in the sandbox and no other user can reach them.
//
// Every kernel message that answers a request is routed by its parent
// msg_id to the Mailbox of whoever sent the request. A kernel's life:
// starting -> ready -> exited, or starting -> failed. Exiting is noticed on
// the process's pidfd, so a kernel killed by anyone ends the runs waiting
// on it instead of leaving them hanging.
#pragma once

#include <sys/types.h>

#include <boost/asio.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "interp/wire.h"
#include "interp/zmq_socket.h"
#include "sys/pidfd_owner.h"

namespace coppice::interp {

struct KernelOptions {
  std::string python = "python3";        // interpreter with ipykernel; looked up in PATH of `env`
  std::string r = "R";                    // R with IRkernel, for R contexts
  std::string assets_dir;                 // where write_kernel_assets() put the kernels' files
  std::string runtime_dir;                // private dir for connection files and ipc endpoints
  std::vector<std::string> env;           // the kernel's whole environment, "K=V"
  std::optional<uid_t> uid;               // credentials to run as; unset: ours
  std::optional<gid_t> gid;
  std::vector<gid_t> groups;
  std::chrono::milliseconds start_timeout{60000};
};

// Where a kernel delivers what concerns one waiter: messages answering its
// requests, and (by a wake-up) any change of the kernel's state.
struct Mailbox {
  explicit Mailbox(asio::any_io_executor ex) : wake(ex) {}
  std::deque<Message> msgs;
  asio::steady_timer wake;  // cancelled to wake the waiter
  void notify() { wake.cancel(); }
};

enum class KernelState { kStarting, kReady, kFailed, kExited };

class Kernel : public std::enable_shared_from_this<Kernel> {
 public:
  // `name` makes the kernel's file names unique in the runtime dir;
  // `language` is a canonical name from languages.h.
  Kernel(asio::any_io_executor ex, ZmqContext& zctx, const KernelOptions& opts, std::string name, std::string cwd,
         std::string language = "python");
  ~Kernel();

  // Spawns the process, connects, and completes once the kernel has
  // answered kernel_info on shell and been heard on iopub (so nothing it
  // publishes later is lost to a late subscription).
  asio::awaitable<Status> start();

  KernelState state() const { return state_; }
  // Why the kernel failed or exited ("" otherwise).
  const std::string& failure() const { return failure_; }
  pid_t pid() const { return pidfd_.pid(); }
  const std::string& cwd() const { return cwd_; }
  const std::string& language() const { return language_; }

  // Wakes `mb` on every state change of this kernel.
  void watch(const std::shared_ptr<Mailbox>& mb);
  // Sends an execute_request (stop_on_error off: an error in one request
  // never gets a later one aborted); its answers go to `mb` until unroute().
  Result<std::string> execute(const std::string& code, bool silent, const std::shared_ptr<Mailbox>& mb);
  void unroute(const std::string& msg_id) { routes_.erase(msg_id); }
  // SIGINT to the kernel's process group: KeyboardInterrupt in the cell.
  void interrupt();
  // Ends the kernel on purpose (SIGKILL to its process group); waiters see
  // `reason` as the failure.
  void retire(std::string reason);
  bool retired() const { return retired_; }
  // The kernel reached kReady at some point of its life.
  bool was_ready() const { return was_ready_; }
  // The sandbox's environment has been applied in this kernel.
  bool globals_applied = false;

  // Called once, on the executor, when the process has exited.
  std::function<void(Kernel&)> on_exit;

 private:
  asio::awaitable<void> read_loop(std::shared_ptr<Kernel> self, ZmqSocket* sock, bool iopub);
  asio::awaitable<void> watch_exit(std::shared_ptr<Kernel> self);
  void dispatch(Message m, bool iopub);
  void set_state(KernelState s, std::string why = {});
  Status send_kernel_info();
  void remove_files();

  asio::any_io_executor ex_;
  ZmqContext& zctx_;
  KernelOptions opts_;
  std::string name_;
  std::string cwd_;
  std::string language_;
  std::string key_;
  std::string session_;
  std::string conn_file_;
  std::string ipc_prefix_;
  KernelState state_ = KernelState::kStarting;
  std::string failure_;
  bool retired_ = false;
  bool was_ready_ = false;
  bool got_info_ = false;
  bool heard_iopub_ = false;
  sys::Pidfd pidfd_;
  std::unique_ptr<ZmqSocket> shell_;
  std::unique_ptr<ZmqSocket> iopub_;
  asio::steady_timer start_wake_;
  std::map<std::string, std::weak_ptr<Mailbox>> routes_;
  std::vector<std::weak_ptr<Mailbox>> watchers_;
};

}  // namespace coppice::interp
