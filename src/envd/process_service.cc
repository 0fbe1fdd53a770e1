#include "envd/process_service.h"

#include <pty.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <list>

#include "common/log.h"
#include "envd/paths.h"
#include "envd/protojson.h"
#include "sys/fsutil.h"
#include "sys/spawn.h"

namespace coppice::envd {

using json = nlohmann::json;
using connect::Code;
using connect::RpcError;
using connect::rpc_error;
using asio::use_awaitable;
using namespace asio::experimental::awaitable_operators;
namespace {
constexpr auto kTuple = asio::as_tuple(use_awaitable);

// oom_score_adj of the processes envd starts: 500 above envd's own, within
// the kernel's range (read once; envd's does not change).
int user_oom_score_adj() {
  static const int adj = [] {
    int own = 0;
    if (auto t = sys::read_file("/proc/self/oom_score_adj"); t) own = std::atoi(t->c_str());
    return std::min(1000, own + 500);
  }();
  return adj;
}
constexpr std::chrono::seconds kDefaultKeepalive{90};
constexpr size_t kReadChunk = 64 * 1024;
}  // namespace

// One subscriber of a process's events: a Start stream or a Connect stream.
// The process pushes events into `queue` and wakes the stream by cancelling
// its timer; the stream sends them in order.
struct Subscriber {
  std::deque<json> queue;
  asio::steady_timer* wake = nullptr;
  void push(const json& ev) {
    queue.push_back(ev);
    if (wake) wake->cancel();
  }
};

// A process envd started. Lives in the table while it runs and, once it
// ended, for a retention period so Connect can replay its end.
struct Proc : std::enable_shared_from_this<Proc> {
  pid_t pid = 0;
  std::optional<std::string> tag;
  json config;  // ProcessConfig as the client sent it (cmd, args, envs, cwd)
  bool is_pty = false;
  std::unique_ptr<asio::posix::stream_descriptor> stdin_w;  // pipe to stdin, or the pty master for input
  std::unique_ptr<asio::posix::stream_descriptor> out, err, pty;
  int open_readers = 0;
  bool exited = false;
  int wait_status = 0;
  bool deadline_hit = false;
  std::optional<json> end_event;
  std::list<std::shared_ptr<Subscriber>> subs;
  std::unique_ptr<asio::steady_timer> deadline;
  std::chrono::steady_clock::time_point ended_at;

  void broadcast(const json& ev) {
    for (auto& s : subs) s->push(ev);
  }
  bool done() const { return end_event.has_value(); }
};

class ProcessTable {
 public:
  explicit ProcessTable(Envd& envd) : envd_(envd) {}

  Envd& envd_;
  std::map<pid_t, std::shared_ptr<Proc>> procs;  // running and recently ended

  std::shared_ptr<Proc> find(const json* selector, RpcError* err) {
    prune();
    if (!selector || !selector->is_object()) {
      *err = {Code::invalid_argument, "process selector (pid or tag) is required"};
      return nullptr;
    }
    auto pid = pj::get_int(*selector, "pid");
    auto tag = pj::get_string(*selector, "tag");
    if (!pid || !tag) {
      *err = {Code::invalid_argument, (!pid ? pid.error() : tag.error()).message()};
      return nullptr;
    }
    if (*pid) {
      auto it = procs.find(static_cast<pid_t>(**pid));
      if (it != procs.end()) return it->second;
      *err = {Code::not_found, "process with pid " + std::to_string(**pid) + " not found"};
      return nullptr;
    }
    if (*tag) {
      for (auto& [p, proc] : procs)
        if (proc->tag == **tag) return proc;
      *err = {Code::not_found, "process with tag " + **tag + " not found"};
      return nullptr;
    }
    *err = {Code::invalid_argument, "process selector needs a pid or a tag"};
    return nullptr;
  }

  // The process named by the request's `process` selector.
  std::expected<std::shared_ptr<Proc>, RpcError> select(const json& req) {
    auto sel = pj::get_message(req, "process");
    if (!sel) return std::unexpected(rpc_error(Code::invalid_argument, sel.error().message()));
    RpcError err;
    auto p = find(*sel, &err);
    if (!p) return std::unexpected(std::move(err));
    return p;
  }

  // Drops ended processes past their retention.
  void prune() {
    auto now = std::chrono::steady_clock::now();
    for (auto it = procs.begin(); it != procs.end();) {
      if (it->second->done() && now - it->second->ended_at > envd_.config().exited_retention) {
        it = procs.erase(it);
      } else {
        ++it;
      }
    }
  }

  void on_exit(const std::shared_ptr<Proc>& p, int status) {
    p->exited = true;
    p->wait_status = status;
    if (p->deadline) p->deadline->cancel();
    // Output written before the exit is still in the pipes: the readers
    // drain it without blocking and then finish the process.
    for (auto* d : {p->out.get(), p->err.get(), p->pty.get()}) {
      if (d && d->is_open()) {
        boost::system::error_code ec;
        d->cancel(ec);
      }
    }
    maybe_finish(p);
  }

  void maybe_finish(const std::shared_ptr<Proc>& p) {
    if (!p->exited || p->open_readers > 0 || p->done()) return;
    json end = json::object();
    int st = p->wait_status;
    if (WIFEXITED(st)) {
      int code = WEXITSTATUS(st);
      if (code != 0) end["exitCode"] = code;
      end["exited"] = true;
      end["status"] = "exit status " + std::to_string(code);
      if (code != 0) end["error"] = end["status"];
    } else if (WIFSIGNALED(st)) {
      std::string name = strsignal(WTERMSIG(st));
      for (auto& c : name) c = static_cast<char>(tolower(c));
      end["exitCode"] = -1;
      end["status"] = "signal: " + name;
      end["error"] = end["status"];
    }
    json ev{{"event", {{"end", end}}}};
    p->end_event = ev;
    p->ended_at = std::chrono::steady_clock::now();
    p->stdin_w.reset();
    p->broadcast(ev);
  }
};

namespace {

json data_event(std::string_view kind, std::string_view bytes) {
  return json{{"event", {{"data", {{kind, pj::base64_encode(bytes)}}}}}};
}

// Reads one output stream of a process until EOF (or until the process has
// exited, then drains what is left without blocking) and broadcasts it.
asio::awaitable<void> read_output(std::shared_ptr<ProcessTable> table, std::shared_ptr<Proc> p,
                                  asio::posix::stream_descriptor* d, std::string kind) {
  // Not zero-filled: clearing 64 KiB per stream was most of envd's own cost
  // of a short command.
  auto buf = std::make_unique_for_overwrite<char[]>(kReadChunk);
  for (;;) {
    auto [ec, n] = co_await d->async_read_some(asio::buffer(buf.get(), kReadChunk), kTuple);
    if (n > 0) p->broadcast(data_event(kind, std::string_view(buf.get(), n)));
    if (!ec) continue;
    if (ec == asio::error::operation_aborted && p->exited) {
      for (;;) {
        ssize_t r = ::read(d->native_handle(), buf.get(), kReadChunk);
        if (r <= 0) break;
        p->broadcast(data_event(kind, std::string_view(buf.get(), static_cast<size_t>(r))));
      }
    }
    break;  // EOF, EIO (pty slave closed), or drained
  }
  boost::system::error_code ignore;
  d->close(ignore);
  --p->open_readers;
  table->maybe_finish(p);
}

// Streams a process's events to one client until the end event, the client
// going away, or the stream's own deadline.
asio::awaitable<std::optional<RpcError>> pump(connect::CallContext& ctx, connect::StreamWriter& w,
                                              std::shared_ptr<Proc> p, bool is_start) {
  auto sub = std::make_shared<Subscriber>();
  asio::steady_timer wake(ctx.ex.executor());
  sub->wake = &wake;
  p->subs.push_back(sub);
  struct Unsub {
    std::shared_ptr<Proc> p;
    std::shared_ptr<Subscriber> s;
    ~Unsub() {
      s->wake = nullptr;
      p->subs.remove(s);
    }
  } unsub{p, sub};

  json start{{"event", {{"start", {{"pid", p->pid}}}}}};
  if (auto s = co_await w.send(start); !s) co_return std::nullopt;
  if (p->done()) {
    if (auto s = co_await w.send(*p->end_event); !s) co_return std::nullopt;
    co_return std::nullopt;
  }
  auto keepalive = ctx.keepalive.value_or(kDefaultKeepalive);
  bool watch_peer = true;
  // Start streams end when the process ends (its deadline kills it);
  // Connect streams may have their own deadline.
  std::optional<std::chrono::steady_clock::time_point> stream_deadline;
  if (!is_start && ctx.timeout) stream_deadline = std::chrono::steady_clock::now() + *ctx.timeout;
  for (;;) {
    while (!sub->queue.empty()) {
      json ev = std::move(sub->queue.front());
      sub->queue.pop_front();
      bool is_end = ev["event"].contains("end");
      if (is_end && is_start && p->deadline_hit) {
        co_return rpc_error(Code::deadline_exceeded, "process was killed at the request's deadline");
      }
      if (auto s = co_await w.send(ev); !s) co_return std::nullopt;  // client gone; process lives on
      if (is_end) co_return std::nullopt;
    }
    auto next = std::chrono::steady_clock::now() + keepalive;
    if (stream_deadline && *stream_deadline < next) next = *stream_deadline;
    wake.expires_at(next);
    boost::system::error_code ec;
    if (watch_peer) {
      // Also wake when the client goes: its connection must not outlive it
      // (a checkpoint ends the gateway's connections this way, and a stream
      // of a quiet process would otherwise notice only at its keepalive).
      auto& sock = ctx.ex.socket();
      auto r = co_await (wake.async_wait(kTuple) || sock.async_wait(asio::socket_base::wait_read, kTuple));
      if (r.index() == 1) {
        char c;
        ssize_t n = ::recv(sock.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
          co_return std::nullopt;  // client gone; process lives on
        }
        watch_peer = false;  // bytes of a next request: leave them to the server
        continue;
      }
      ec = std::get<0>(std::get<0>(r));
    } else {
      std::tie(ec) = co_await wake.async_wait(kTuple);
    }
    if (ec == asio::error::operation_aborted) continue;  // new events
    if (stream_deadline && std::chrono::steady_clock::now() >= *stream_deadline)
      co_return rpc_error(Code::deadline_exceeded, "stream deadline exceeded");
    json ka{{"event", {{"keepalive", json::object()}}}};
    if (auto s = co_await w.send(ka); !s) co_return std::nullopt;
  }
}

json config_json(const json& process) {
  json c = json::object();
  if (auto* v = pj::field(process, "cmd")) c["cmd"] = *v;
  if (auto* v = pj::field(process, "args"); v && v->is_array() && !v->empty()) c["args"] = *v;
  if (auto* v = pj::field(process, "envs"); v && v->is_object() && !v->empty()) c["envs"] = *v;
  if (auto* v = pj::field(process, "cwd")) c["cwd"] = *v;
  return c;
}

const std::vector<std::pair<std::string_view, int>> kSignals = {
    {"SIGNAL_UNSPECIFIED", 0}, {"SIGNAL_SIGTERM", SIGTERM}, {"SIGNAL_SIGKILL", SIGKILL}};

}  // namespace

ProcessService::ProcessService(Envd& envd) : envd_(envd), table_(std::make_shared<ProcessTable>(envd)) {}
ProcessService::~ProcessService() = default;

void ProcessService::kill_all() {
  for (auto& [pid, p] : table_->procs)
    if (!p->exited) ::kill(-pid, SIGKILL), ::kill(pid, SIGKILL);
}

void ProcessService::register_routes(connect::Router& rpc) {
  auto table = table_;
  Envd* envd = &envd_;

  rpc.stream("/process.Process/Start", [table, envd](connect::CallContext& ctx, const json& req,
                                                     connect::StreamWriter& w)
                                           -> asio::awaitable<std::optional<RpcError>> {
    auto user = envd->request_user(ctx.ex);
    if (!user) co_return rpc_error(Code::unauthenticated, user.error().message());
    auto proc_msg = pj::get_message(req, "process");
    if (!proc_msg) co_return rpc_error(Code::invalid_argument, proc_msg.error().message());
    if (!*proc_msg) co_return rpc_error(Code::invalid_argument, "field process is required");
    const json& pm = **proc_msg;
    auto cmd = pj::get_string(pm, "cmd");
    auto args = pj::get_string_list(pm, "args");
    auto envs = pj::get_string_map(pm, "envs");
    auto cwd = pj::get_string(pm, "cwd");
    auto tag = pj::get_string(req, "tag");
    auto stdin_flag = pj::get_bool(req, "stdin");
    auto pty_msg = pj::get_message(req, "pty");
    for (const Error* e : {cmd ? nullptr : &cmd.error(), args ? nullptr : &args.error(),
                           envs ? nullptr : &envs.error(), cwd ? nullptr : &cwd.error(), tag ? nullptr : &tag.error(),
                           stdin_flag ? nullptr : &stdin_flag.error(), pty_msg ? nullptr : &pty_msg.error()}) {
      if (e) co_return rpc_error(Code::invalid_argument, e->message());
    }
    if (!*cmd || (*cmd)->empty()) co_return rpc_error(Code::invalid_argument, "field process.cmd is required");
    // execve reads each string up to its first NUL: a NUL would run a
    // different command line or environment than the one asked for.
    {
      Status clean = check_no_nul(**cmd, "process.cmd");
      for (size_t i = 0; clean && i < args->size(); ++i) clean = check_no_nul((*args)[i], "process.args");
      for (auto it = envs->begin(); clean && it != envs->end(); ++it) {
        clean = check_no_nul(it->first, "process.envs");
        if (clean) clean = check_no_nul(it->second, "process.envs");
      }
      if (!clean) co_return rpc_error(Code::invalid_argument, clean.error().message());
    }
    // As E2B: an empty cwd is the default workdir, a relative one is under
    // the user's home; an explicit cwd must be an existing directory.
    const bool explicit_cwd = *cwd && !(*cwd)->empty();
    auto resolved_cwd = envd->resolve_path(explicit_cwd ? **cwd : std::string(), *user);
    if (!resolved_cwd) co_return rpc_error(Code::invalid_argument, "cwd: " + resolved_cwd.error().message());
    bool cwd_is_dir = false;
    {
      struct stat st;
      cwd_is_dir = ::stat(resolved_cwd->c_str(), &st) == 0 && S_ISDIR(st.st_mode);
    }
    if (explicit_cwd && !cwd_is_dir) {
      co_return rpc_error(Code::invalid_argument, "cwd '" + *resolved_cwd + "' does not exist or is not a directory");
    }

    sys::SpawnOptions so;
    so.path = **cmd;
    so.argv.push_back(**cmd);
    for (auto& a : *args) so.argv.push_back(a);
    std::map<std::string, std::string> extra = *envs;
    so.uid = user->uid;
    so.gid = user->gid;
    so.groups = user->groups;
    // A default workdir that does not exist (a template without the user's
    // home) starts the process in "/" rather than refusing every command.
    so.cwd = cwd_is_dir ? std::move(*resolved_cwd) : std::string("/");
    if (!extra.count("PWD")) extra["PWD"] = so.cwd;

    auto p = std::make_shared<Proc>();
    p->config = config_json(pm);
    if (*tag) p->tag = **tag;
    auto ex = ctx.ex.executor();
    sys::UniqueFd child_in, child_out, child_err, slave;
    if (*pty_msg) {
      unsigned cols = 80, rows = 24;
      if (auto size = pj::get_message(**pty_msg, "size"); size && *size) {
        if (auto c = pj::get_int(**size, "cols"); c && *c && **c > 0) cols = static_cast<unsigned>(**c);
        if (auto r = pj::get_int(**size, "rows"); r && *r && **r > 0) rows = static_cast<unsigned>(**r);
      }
      struct winsize ws {};
      ws.ws_col = static_cast<unsigned short>(cols);
      ws.ws_row = static_cast<unsigned short>(rows);
      int master = -1, sl = -1;
      if (::openpty(&master, &sl, nullptr, nullptr, &ws) != 0)
        co_return rpc_error(Code::internal, "openpty: " + std::string(strerror(errno)));
      sys::UniqueFd m(master);
      slave.reset(sl);
      ::fcntl(master, F_SETFD, FD_CLOEXEC);
      ::fcntl(sl, F_SETFD, FD_CLOEXEC);
      (void)sys::set_nonblocking(master, true);
      int mdup = ::fcntl(master, F_DUPFD_CLOEXEC, 3);
      p->is_pty = true;
      p->pty = std::make_unique<asio::posix::stream_descriptor>(ex, m.release());
      p->stdin_w = std::make_unique<asio::posix::stream_descriptor>(ex, mdup);
      so.stdin_fd = so.stdout_fd = so.stderr_fd = slave.get();
      so.controlling_tty = true;
    } else {
      auto out = sys::make_pipe(true, false);
      auto err = sys::make_pipe(true, false);
      if (!out || !err) co_return rpc_error(Code::internal, "pipe: " + (!out ? out.error() : err.error()).message());
      p->out = std::make_unique<asio::posix::stream_descriptor>(ex, out->first.release());
      p->err = std::make_unique<asio::posix::stream_descriptor>(ex, err->first.release());
      child_out = std::move(out->second);
      child_err = std::move(err->second);
      so.stdout_fd = child_out.get();
      so.stderr_fd = child_err.get();
      // Older clients do not send the flag and expect stdin to stay open.
      if (stdin_flag->value_or(true)) {
        auto in = sys::make_pipe(false, true);
        if (!in) co_return rpc_error(Code::internal, in.error().message());
        child_in = std::move(in->first);
        p->stdin_w = std::make_unique<asio::posix::stream_descriptor>(ex, in->second.release());
        so.stdin_fd = child_in.get();
      }
    }
    so.env = envd->process_env(*user, extra);
    // Under memory pressure the kernel kills the user's processes before
    // envd, which the sandbox cannot be used without (they may lower theirs
    // back to envd's level, never below: that takes CAP_SYS_RESOURCE).
    so.oom_score_adj = user_oom_score_adj();
    // A tree restored by criu comes back not dumpable (its credentials were
    // set anew) with its memory owned by the host's user namespace, so the
    // /proc/self of a child sharing that memory until exec (sys::spawn) is
    // the host root's, and the child could not set its oom_score_adj.
    // Started normally, envd is dumpable: after a restore it is made so again.
    if (::prctl(PR_GET_DUMPABLE) != 1) (void)::prctl(PR_SET_DUMPABLE, 1);
    auto pid = sys::spawn(so);
    if (!pid) {
      auto code = pid.error().code() == ErrorCode::kNotFound ? Code::not_found : Code::invalid_argument;
      co_return rpc_error(code, "failed to start process: " + pid.error().message());
    }
    // The child holds its ends now.
    child_in.reset();
    child_out.reset();
    child_err.reset();
    slave.reset();
    p->pid = *pid;
    table->procs[p->pid] = p;
    std::weak_ptr<Proc> weak = p;
    envd->reaper().watch(p->pid, [table, weak](int status) {
      if (auto sp = weak.lock()) table->on_exit(sp, status);
    });
    for (auto& [d, kind] : {std::pair{p->out.get(), "stdout"}, std::pair{p->err.get(), "stderr"},
                            std::pair{p->pty.get(), "pty"}}) {
      if (!d) continue;
      ++p->open_readers;
      asio::co_spawn(ex, read_output(table, p, d, kind), asio::detached);
    }
    if (ctx.timeout) {
      // Connect-Timeout-Ms bounds the life of the process itself.
      p->deadline = std::make_unique<asio::steady_timer>(ex, *ctx.timeout);
      p->deadline->async_wait([weak](const boost::system::error_code& ec) {
        auto sp = weak.lock();
        if (ec || !sp || sp->exited) return;
        sp->deadline_hit = true;
        ::kill(-sp->pid, SIGKILL);
        ::kill(sp->pid, SIGKILL);
      });
    }
    COPPICE_LOG(debug) << "started pid " << p->pid << " " << **cmd;
    co_return co_await pump(ctx, w, p, true);
  });

  rpc.stream("/process.Process/Connect", [table](connect::CallContext& ctx, const json& req,
                                                 connect::StreamWriter& w)
                                             -> asio::awaitable<std::optional<RpcError>> {
    auto p = table->select(req);
    if (!p) co_return std::move(p.error());
    co_return co_await pump(ctx, w, *p, false);
  });

  rpc.unary("/process.Process/List", [table](connect::CallContext&, const json&)
                                         -> asio::awaitable<std::expected<json, RpcError>> {
    table->prune();
    json list = json::array();
    for (auto& [pid, p] : table->procs) {
      if (p->exited) continue;
      json e{{"config", p->config}, {"pid", pid}};
      if (p->tag) e["tag"] = *p->tag;
      list.push_back(std::move(e));
    }
    json out{{"processes", std::move(list)}};
    co_return out;
  });

  rpc.unary("/process.Process/SendInput", [table](connect::CallContext&, const json& req)
                                              -> asio::awaitable<std::expected<json, RpcError>> {
    auto selected = table->select(req);
    if (!selected) co_return std::unexpected(std::move(selected.error()));
    auto p = *selected;
    auto input = pj::get_message(req, "input");
    if (!input || !*input) co_return std::unexpected(rpc_error(Code::invalid_argument, "field input is required"));
    auto stdin_data = pj::get_bytes(**input, "stdin");
    auto pty_data = pj::get_bytes(**input, "pty");
    if (!stdin_data || !pty_data)
      co_return std::unexpected(rpc_error(Code::invalid_argument, (!stdin_data ? stdin_data : pty_data).error().message()));
    std::string data = stdin_data->value_or(pty_data->value_or(""));
    if (p->exited) co_return std::unexpected(rpc_error(Code::failed_precondition, "process has exited"));
    if (!p->stdin_w || !p->stdin_w->is_open())
      co_return std::unexpected(rpc_error(Code::failed_precondition, "process stdin is closed or was not requested"));
    auto keep = p;
    auto [ec, n] = co_await asio::async_write(*keep->stdin_w, asio::buffer(data), kTuple);
    if (ec) co_return std::unexpected(rpc_error(Code::failed_precondition, "write stdin: " + ec.message()));
    co_return json::object();
  });

  rpc.unary("/process.Process/CloseStdin", [table](connect::CallContext&, const json& req)
                                               -> asio::awaitable<std::expected<json, RpcError>> {
    auto selected = table->select(req);
    if (!selected) co_return std::unexpected(std::move(selected.error()));
    auto p = *selected;
    if (p->is_pty) co_return std::unexpected(rpc_error(Code::failed_precondition, "a pty process has no stdin to close"));
    p->stdin_w.reset();
    co_return json::object();
  });

  rpc.unary("/process.Process/SendSignal", [table](connect::CallContext&, const json& req)
                                               -> asio::awaitable<std::expected<json, RpcError>> {
    auto selected = table->select(req);
    if (!selected) co_return std::unexpected(std::move(selected.error()));
    auto p = *selected;
    auto sig = pj::get_enum(req, "signal", kSignals);
    if (!sig) co_return std::unexpected(rpc_error(Code::invalid_argument, sig.error().message()));
    if (!*sig || **sig == 0) co_return std::unexpected(rpc_error(Code::invalid_argument, "field signal is required"));
    if (**sig != SIGKILL && **sig != SIGTERM)
      co_return std::unexpected(rpc_error(Code::invalid_argument, "only SIGTERM and SIGKILL can be sent"));
    if (p->exited) co_return std::unexpected(rpc_error(Code::not_found, "process " + std::to_string(p->pid) + " has exited"));
    // The process leads its own session and group: signal the whole group so
    // its children go too, then the leader in case it left the group.
    ::kill(-p->pid, **sig);
    ::kill(p->pid, **sig);
    co_return json::object();
  });

  rpc.unary("/process.Process/Update", [table](connect::CallContext&, const json& req)
                                           -> asio::awaitable<std::expected<json, RpcError>> {
    auto selected = table->select(req);
    if (!selected) co_return std::unexpected(std::move(selected.error()));
    auto p = *selected;
    auto pty_msg = pj::get_message(req, "pty");
    if (!pty_msg) co_return std::unexpected(rpc_error(Code::invalid_argument, pty_msg.error().message()));
    if (!*pty_msg) co_return json::object();
    if (!p->is_pty || !p->pty) co_return std::unexpected(rpc_error(Code::failed_precondition, "process has no pty"));
    auto size = pj::get_message(**pty_msg, "size");
    if (!size || !*size) co_return std::unexpected(rpc_error(Code::invalid_argument, "field pty.size is required"));
    auto cols = pj::get_int(**size, "cols");
    auto rows = pj::get_int(**size, "rows");
    if (!cols || !rows || !*cols || !*rows || **cols <= 0 || **rows <= 0 || **cols > 65535 || **rows > 65535)
      co_return std::unexpected(rpc_error(Code::invalid_argument, "pty.size needs cols and rows between 1 and 65535"));
    struct winsize ws {};
    ws.ws_col = static_cast<unsigned short>(**cols);
    ws.ws_row = static_cast<unsigned short>(**rows);
    int fd = p->stdin_w ? p->stdin_w->native_handle() : -1;
    if (fd < 0 || ::ioctl(fd, TIOCSWINSZ, &ws) != 0)
      co_return std::unexpected(rpc_error(Code::failed_precondition, "resize pty: " + std::string(strerror(errno))));
    co_return json::object();
  });
}

}  // namespace coppice::envd
