#include "interp/kernel.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "common/log.h"
#include "common/sha256.h"
#include "interp/languages.h"
#include "sys/spawn.h"

namespace coppice::interp {

using asio::use_awaitable;
constexpr auto kTuple = asio::as_tuple(use_awaitable);

namespace {
std::string random_hex(size_t bytes) {
  // Two UUIDs give 32 random bytes minus the version bits: ample for a key.
  std::string out;
  while (out.size() < bytes * 2) {
    std::string u = uuid4();
    for (char c : u)
      if (c != '-') out += c;
  }
  return out.substr(0, bytes * 2);
}

Status write_private_file(const std::string& path, const std::string& data, std::optional<uid_t> uid,
                          std::optional<gid_t> gid) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return errno_error("create " + path);
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      return errno_error("write " + path, e);
    }
    off += static_cast<size_t>(n);
  }
  if (uid && ::fchown(fd, *uid, gid.value_or(static_cast<gid_t>(-1))) != 0) {
    int e = errno;
    ::close(fd);
    return errno_error("chown " + path, e);
  }
  ::close(fd);
  return ok();
}
}  // namespace

Kernel::Kernel(asio::any_io_executor ex, ZmqContext& zctx, const KernelOptions& opts, std::string name,
               std::string cwd, std::string language)
    : ex_(ex),
      zctx_(zctx),
      opts_(opts),
      name_(std::move(name)),
      cwd_(std::move(cwd)),
      language_(std::move(language)),
      key_(random_hex(32)),
      session_(uuid4()),
      start_wake_(ex) {
  conn_file_ = opts_.runtime_dir + "/" + name_ + ".json";
  ipc_prefix_ = opts_.runtime_dir + "/" + name_;
}

Kernel::~Kernel() {
  if (pidfd_.valid() && state_ != KernelState::kExited) {
    pidfd_.send_signal(SIGKILL);
    ::kill(-pidfd_.pid(), SIGKILL);
    pidfd_.reap();
  }
  remove_files();
}

void Kernel::remove_files() {
  ::unlink(conn_file_.c_str());
  for (int port = 1; port <= 5; ++port) ::unlink((ipc_prefix_ + "-" + std::to_string(port)).c_str());
}

asio::awaitable<Status> Kernel::start() {
  auto self = shared_from_this();
  json conn{{"shell_port", 1},       {"iopub_port", 2}, {"stdin_port", 3},
            {"control_port", 4},     {"hb_port", 5},    {"ip", ipc_prefix_},
            {"key", key_},           {"transport", "ipc"},
            {"signature_scheme", "hmac-sha256"}, {"kernel_name", "python3"}};
  if (auto s = write_private_file(conn_file_, conn.dump(), opts_.uid, opts_.gid); !s) {
    set_state(KernelState::kFailed, s.error().to_string());
    co_return std::unexpected(s.error());
  }
  sys::SpawnOptions so;
  KernelCommand cmd{opts_.python, opts_.r, opts_.assets_dir};
  so.argv = kernel_argv(language_, cmd, conn_file_);
  so.path = so.argv[0];
  so.env = opts_.env;
  // The kernel exits by itself when it is orphaned (ipykernel's parent poller).
  so.env.push_back("JPY_PARENT_PID=" + std::to_string(::getpid()));
  so.cwd = cwd_;
  so.uid = opts_.uid;
  so.gid = opts_.gid;
  so.groups = opts_.groups;
  // Whatever the kernel logs before it captures its own streams goes to ours.
  so.stdout_fd = STDERR_FILENO;
  so.stderr_fd = STDERR_FILENO;
  so.new_session = true;
  auto pid = sys::spawn(so);
  if (!pid) {
    std::string why = "start the " + language_ + " kernel (" + so.argv[0] + "): " + pid.error().message();
    set_state(KernelState::kFailed, why);
    remove_files();
    co_return make_error(pid.error().code(), why);
  }
  auto pfd = sys::Pidfd::open(*pid);
  if (!pfd) {
    ::kill(*pid, SIGKILL);
    set_state(KernelState::kFailed, "pidfd_open: " + pfd.error().message());
    co_return std::unexpected(pfd.error());
  }
  pidfd_ = std::move(*pfd);
  asio::co_spawn(ex_, watch_exit(self), asio::detached);

  auto shell = ZmqSocket::open(zctx_, ZMQ_DEALER, ex_);
  auto iopub = ZmqSocket::open(zctx_, ZMQ_SUB, ex_);
  Status st = ok();
  if (!shell) st = std::unexpected(shell.error());
  if (st && !iopub) st = std::unexpected(iopub.error());
  if (st) {
    shell_ = std::move(*shell);
    iopub_ = std::move(*iopub);
    st = iopub_->subscribe_all();
  }
  if (st) st = shell_->connect("ipc://" + ipc_prefix_ + "-1");
  if (st) st = iopub_->connect("ipc://" + ipc_prefix_ + "-2");
  if (!st) {
    retire("kernel channels: " + st.error().message());
    co_return std::unexpected(st.error());
  }
  asio::co_spawn(ex_, read_loop(self, shell_.get(), false), asio::detached);
  asio::co_spawn(ex_, read_loop(self, iopub_.get(), true), asio::detached);

  auto deadline = std::chrono::steady_clock::now() + opts_.start_timeout;
  auto next_info = std::chrono::steady_clock::now();
  while (state_ == KernelState::kStarting) {
    if (got_info_ && heard_iopub_) {
      set_state(KernelState::kReady);
      break;
    }
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      retire("the kernel did not answer within " + std::to_string(opts_.start_timeout.count() / 1000) + " s");
      break;
    }
    // Until iopub has been heard, ask again: a kernel_info sent before the
    // subscription took effect is answered on iopub unseen.
    if (now >= next_info) {
      if (auto s = send_kernel_info(); !s) {
        COPPICE_LOG(warn) << "kernel " << name_ << ": " << s.error().to_string();
      }
      next_info = now + std::chrono::milliseconds(got_info_ ? 50 : 250);
    }
    start_wake_.expires_at(std::min(next_info, deadline));
    co_await start_wake_.async_wait(kTuple);
  }
  if (state_ == KernelState::kReady) {
    COPPICE_LOG(info) << "kernel " << name_ << " ready (pid " << pidfd_.pid() << ", cwd " << cwd_ << ")";
    co_return ok();
  }
  co_return make_error(ErrorCode::kUnavailable, failure_);
}

Status Kernel::send_kernel_info() {
  Message m = make_message("kernel_info_request", session_, json::object());
  return shell_->send(serialize(m, key_));
}

void Kernel::watch(const std::shared_ptr<Mailbox>& mb) {
  std::erase_if(watchers_, [](const std::weak_ptr<Mailbox>& w) { return w.expired(); });
  watchers_.push_back(mb);
}

Result<std::string> Kernel::execute(const std::string& code, bool silent, const std::shared_ptr<Mailbox>& mb) {
  if (state_ != KernelState::kReady) return make_error(ErrorCode::kUnavailable, "the kernel is not running");
  // stop_on_error is off: after an error in a request that has it on (the
  // KeyboardInterrupt ending an interrupted run included), ipykernel answers
  // "aborted" to every execute_request reaching it until its
  // stop_on_error_timeout has passed and its event loop comes round. Runs are
  // sent one at a time per kernel, so nothing of the failed run's client is
  // queued behind it to protect, and what comes next (the next client's run,
  // the silent run restoring env_vars) is sent the moment the failed run ends:
  // with the flag on it would race that window and be aborted.
  json content{{"code", code},
               {"silent", silent},
               {"store_history", !silent},
               {"user_expressions", json::object()},
               {"allow_stdin", false},
               {"stop_on_error", false}};
  Message m = make_message("execute_request", session_, std::move(content));
  std::string id = m.msg_id();
  routes_[id] = mb;
  if (auto s = shell_->send(serialize(m, key_)); !s) {
    routes_.erase(id);
    return std::unexpected(s.error());
  }
  return id;
}

void Kernel::interrupt() {
  if (!pidfd_.valid() || state_ == KernelState::kExited) return;
  ::kill(-pidfd_.pid(), SIGINT);
}

void Kernel::retire(std::string reason) {
  if (state_ == KernelState::kExited) return;
  if (!retired_) {
    retired_ = true;
    failure_ = std::move(reason);
  }
  if (pidfd_.valid()) {
    ::kill(-pidfd_.pid(), SIGKILL);
    pidfd_.send_signal(SIGKILL);
  } else {
    set_state(KernelState::kFailed, failure_);
  }
}

void Kernel::set_state(KernelState s, std::string why) {
  state_ = s;
  if (s == KernelState::kReady) was_ready_ = true;
  if (!why.empty()) failure_ = std::move(why);
  start_wake_.cancel();
  for (auto& w : watchers_)
    if (auto mb = w.lock()) mb->notify();
  for (auto& [id, w] : routes_)
    if (auto mb = w.lock()) mb->notify();
}

asio::awaitable<void> Kernel::read_loop(std::shared_ptr<Kernel> self, ZmqSocket* sock, bool iopub) {
  std::vector<std::string> frames;
  while (co_await sock->wait_readable()) {
    for (;;) {
      auto got = sock->try_recv(frames);
      if (!got) {
        COPPICE_LOG_RATE(warn, 1) << "kernel " << name_ << ": " << got.error().to_string();
        break;
      }
      if (!*got) break;
      auto m = parse(frames, key_);
      if (!m) {
        COPPICE_LOG_RATE(warn, 1) << "kernel " << name_ << ": dropped a message: " << m.error().message();
        continue;
      }
      dispatch(std::move(*m), iopub);
    }
  }
}

void Kernel::dispatch(Message m, bool iopub) {
  if (state_ == KernelState::kStarting) {
    if (iopub) heard_iopub_ = true;
    if (!iopub && m.msg_type() == "kernel_info_reply") got_info_ = true;
    start_wake_.cancel();
  }
  auto it = routes_.find(m.parent_id());
  if (it == routes_.end()) return;
  auto mb = it->second.lock();
  if (!mb) {
    routes_.erase(it);
    return;
  }
  mb->msgs.push_back(std::move(m));
  mb->notify();
}

asio::awaitable<void> Kernel::watch_exit(std::shared_ptr<Kernel> self) {
  asio::posix::stream_descriptor d(ex_, pidfd_.get());
  co_await d.async_wait(asio::posix::stream_descriptor::wait_read, kTuple);
  d.release();
  int status = pidfd_.reap();
  std::string why = retired_ ? failure_ : "the kernel process ended (status " + std::to_string(status) + ")";
  if (!retired_) {
    COPPICE_LOG(warn) << "kernel " << name_ << " (pid " << pidfd_.pid() << "): " << why;
  }
  set_state(KernelState::kExited, why);
  if (shell_) shell_->close();
  if (iopub_) iopub_->close();
  remove_files();
  if (on_exit) {
    auto cb = std::move(on_exit);
    cb(*this);
  }
}

}  // namespace coppice::interp
