#include "interp/server.h"

#include <sys/stat.h>

#include <algorithm>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <deque>

#include "common/constants.h"
#include "common/log.h"
#include "interp/output.h"
#include "interp/requests.h"

namespace coppice::interp {

using asio::use_awaitable;
using namespace asio::experimental::awaitable_operators;
constexpr auto kTuple = asio::as_tuple(use_awaitable);
using Clock = std::chrono::steady_clock;
// How often a run the kernel aborted without running it is sent again.
constexpr int kMaxResends = 5;

// A run waiting for its turn in a context.
struct Waiter {
  std::shared_ptr<Mailbox> mb;
  bool granted = false;
  bool abandoned = false;
};

struct Context {
  std::string id;
  std::string language;
  std::string cwd;
  uint64_t seq = 0;  // creation order, for listing
  std::shared_ptr<Kernel> kernel;
  bool removed = false;
  bool busy = false;  // a run holds the context
  std::deque<std::shared_ptr<Waiter>> queue;
};

struct Run {
  std::shared_ptr<Context> ctx;
  std::shared_ptr<Mailbox> mb;
  std::shared_ptr<Waiter> waiter;
  ExecuteRequest req;
  std::string access_token;  // the request's X-Access-Token, for envd
  bool client_gone = false;
  bool finished = false;  // stream_run has returned
};

namespace {
std::string context_json(const Context& c) {
  json j{{"id", c.id}, {"language", c.language}, {"cwd", c.cwd}};
  return j.dump();
}

bool is_dir(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
}  // namespace

InterpServer::InterpServer(asio::io_context& io, ZmqContext& zctx, ServerConfig cfg)
    : io_(io), cfg_(std::move(cfg)), zctx_(zctx) {}

InterpServer::~InterpServer() { shutdown(); }

Result<uint16_t> InterpServer::start() {
  auto handler = [this](http::Exchange& ex) { return handle(ex); };
  http_ = std::make_unique<http::Server>(io_, handler);
  auto port = http_->listen_tcp(cfg_.host, static_cast<uint16_t>(cfg_.port));
  if (!port) return std::unexpected(port.error());
  for (const auto& lang : cfg_.default_languages) default_context(lang);
  return port;
}

void InterpServer::shutdown() {
  if (http_) http_->stop();
  for (auto& [id, c] : contexts_) {
    c->removed = true;
    if (c->kernel) c->kernel->retire("the server is shutting down");
  }
  contexts_.clear();
}

std::shared_ptr<Context> InterpServer::new_context(const std::string& language, const std::string& cwd) {
  auto ctx = std::make_shared<Context>();
  ctx->id = uuid4();
  ctx->language = language;
  ctx->cwd = cwd;
  ctx->seq = next_seq_++;
  contexts_[ctx->id] = ctx;
  ensure_kernel(ctx);
  return ctx;
}

void InterpServer::ensure_kernel(const std::shared_ptr<Context>& ctx, bool force) {
  if (!force && ctx->kernel &&
      (ctx->kernel->state() == KernelState::kStarting || ctx->kernel->state() == KernelState::kReady)) {
    return;
  }
  auto k = std::make_shared<Kernel>(io_.get_executor(), zctx_, cfg_.kernel, "k" + std::to_string(++kernel_serial_),
                                    ctx->cwd, ctx->language);
  std::weak_ptr<Context> wctx = ctx;
  k->on_exit = [this, wctx](Kernel& dead) {
    auto c = wctx.lock();
    if (!c || c->removed || c->kernel.get() != &dead) return;
    // A kernel that had been serving is replaced at once, so the next run
    // finds a warm one; one that never started is retried on the next run.
    if (dead.was_ready() && !dead.retired()) {
      COPPICE_LOG(info) << "context " << c->id << ": starting a new kernel";
      ensure_kernel(c, true);
    }
  };
  ctx->kernel = k;
  bool is_default = ctx->id == default_id_;
  auto starter = [this, k, is_default]() -> asio::awaitable<void> {
    auto s = co_await k->start();
    if (!s) {
      COPPICE_LOG(error) << "kernel start failed: " << s.error().to_string();
      if (is_default && !default_ready_once_) default_failure_ = s.error().message();
    } else if (is_default) {
      default_ready_once_ = true;
    }
  };
  asio::co_spawn(io_, starter, asio::detached);
}

std::shared_ptr<Context> InterpServer::default_context(const std::string& language) {
  auto d = default_ids_.find(language);
  if (d != default_ids_.end()) {
    auto it = contexts_.find(d->second);
    if (it != contexts_.end()) return it->second;
  }
  // None yet, or it was removed: the next default run gets a new one.
  auto ctx = std::make_shared<Context>();
  ctx->id = uuid4();
  ctx->language = language;
  ctx->cwd = cfg_.default_cwd;
  ctx->seq = next_seq_++;
  contexts_[ctx->id] = ctx;
  default_ids_[language] = ctx->id;
  if (language == "python") default_id_ = ctx->id;
  ensure_kernel(ctx);
  return ctx;
}

void InterpServer::release(Context& ctx) {
  ctx.busy = false;
  while (!ctx.queue.empty()) {
    auto w = ctx.queue.front();
    ctx.queue.pop_front();
    if (w->abandoned) continue;
    ctx.busy = true;
    w->granted = true;
    w->mb->notify();
    return;
  }
}

asio::awaitable<void> InterpServer::handle(http::Exchange& ex) {
  using http::bhttp::verb;
  std::string path(ex.path());
  if (path.size() > 1 && path.back() == '/') path.pop_back();
  auto v = ex.method();
  const http::Fields cors{{"Access-Control-Allow-Origin", "*"}};
  if (v == verb::options) {
    const http::Fields pre{{"Access-Control-Allow-Origin", "*"},
                           {"Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS"},
                           {"Access-Control-Allow-Headers", "*"}};
    co_await ex.respond(204, "", "", pre);
    co_return;
  }
  if (path == "/health" && (v == verb::get || v == verb::head)) {
    // Ready once the default Python kernel is, and no other default kernel
    // is still on its first start (one that failed does not hold it up).
    std::string waiting;
    for (const auto& lang : cfg_.default_languages) {
      auto d = default_ids_.find(lang);
      auto it = d == default_ids_.end() ? contexts_.end() : contexts_.find(d->second);
      if (lang == "python" || it == contexts_.end() || !it->second->kernel) continue;
      const auto& k = *it->second->kernel;
      if (k.state() == KernelState::kStarting && !k.was_ready()) waiting = lang;
    }
    if (default_ready_once_ && !waiting.empty()) {
      co_await ex.respond(503, "starting: the default " + waiting + " kernel is not ready yet",
                          "text/plain; charset=utf-8", cors);
      co_return;
    }
    if (default_ready_once_) {
      co_await ex.respond_json(200, "\"OK\"", cors);
    } else {
      std::string msg = default_failure_.empty() ? std::string("starting: the default Python kernel is not ready yet")
                                                 : "the default Python kernel failed to start: " + default_failure_;
      co_await ex.respond(503, msg, "text/plain; charset=utf-8", cors);
    }
    co_return;
  }
  if (path == "/execute" && v == verb::post) {
    co_await handle_execute(ex);
    co_return;
  }
  if (path == "/contexts") {
    if (v == verb::get) {
      std::vector<std::shared_ptr<Context>> list;
      for (auto& [id, c] : contexts_) list.push_back(c);
      std::sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a->seq < b->seq; });
      json arr = json::array();
      for (auto& c : list) arr.push_back(json{{"id", c->id}, {"language", c->language}, {"cwd", c->cwd}});
      co_await ex.respond_json(200, arr.dump(), cors);
      co_return;
    }
    if (v == verb::post) {
      co_await handle_create_context(ex);
      co_return;
    }
  }
  constexpr std::string_view kCtx = "/contexts/";
  if (path.starts_with(kCtx)) {
    std::string rest = path.substr(kCtx.size());
    bool restart = false;
    if (rest.ends_with("/restart")) {
      restart = true;
      rest.resize(rest.size() - 8);
    }
    std::string id = http::url_decode(rest);
    if (!id.empty() && id.find('/') == std::string::npos &&
        ((restart && v == verb::post) || (!restart && v == verb::delete_))) {
      auto it = contexts_.find(id);
      if (it == contexts_.end()) {
        co_await ex.respond(404, "Context " + id + " not found", "text/plain; charset=utf-8", cors);
        co_return;
      }
      auto ctx = it->second;
      if (!restart) {
        ctx->removed = true;
        contexts_.erase(it);
        if (ctx->kernel) ctx->kernel->retire("Context was removed");
        COPPICE_LOG(info) << "context " << id << " removed";
        co_await ex.respond(204, "", "", cors);
        co_return;
      }
      auto old = ctx->kernel;
      ensure_kernel(ctx, true);
      auto k = ctx->kernel;
      if (old) old->retire("Context was restarted");
      // Wait for the new kernel: the client's next run should find it ready.
      auto mb = std::make_shared<Mailbox>(ex.executor());
      k->watch(mb);
      while (k->state() == KernelState::kStarting) {
        mb->wake.expires_after(std::chrono::seconds(5));
        co_await mb->wake.async_wait(kTuple);
      }
      if (k->state() != KernelState::kReady) {
        co_await ex.respond(500, "Failed to restart context " + id + ": " + k->failure(), "text/plain; charset=utf-8",
                            cors);
        co_return;
      }
      COPPICE_LOG(info) << "context " << id << " restarted";
      co_await ex.respond(204, "", "", cors);
      co_return;
    }
  }
  co_await ex.respond(404, "Not Found: " + std::string(ex.method_string()) + " " + path, "text/plain; charset=utf-8",
                      cors);
}

asio::awaitable<void> InterpServer::handle_create_context(http::Exchange& ex) {
  const http::Fields cors{{"Access-Control-Allow-Origin", "*"}};
  auto body = co_await ex.read_body(cfg_.max_body);
  if (!body) {
    co_await ex.respond(400, body.error().message(), "text/plain; charset=utf-8", cors);
    co_return;
  }
  auto req = parse_create_context_request(*body);
  if (!req) {
    co_await ex.respond(400, req.error().message(), "text/plain; charset=utf-8", cors);
    co_return;
  }
  auto lang = normalize_language(req->language.value_or(""));
  if (!lang) {
    co_await ex.respond(400, "Unsupported language '" + *req->language + "': this server runs " +
                                 std::string(kLanguagesServed),
                        "text/plain; charset=utf-8", cors);
    co_return;
  }
  std::string cwd = req->cwd && !req->cwd->empty() ? *req->cwd : cfg_.default_cwd;
  if (cwd.front() != '/' || !is_dir(cwd)) {
    co_await ex.respond(400, "cwd " + cwd + " is not an existing directory", "text/plain; charset=utf-8", cors);
    co_return;
  }
  auto ctx = new_context(*lang, cwd);
  auto k = ctx->kernel;
  auto mb = std::make_shared<Mailbox>(ex.executor());
  k->watch(mb);
  while (k->state() == KernelState::kStarting) {
    mb->wake.expires_after(std::chrono::seconds(5));
    co_await mb->wake.async_wait(kTuple);
  }
  if (k->state() != KernelState::kReady) {
    ctx->removed = true;
    contexts_.erase(ctx->id);
    co_await ex.respond(500, "Failed to create context: " + k->failure(), "text/plain; charset=utf-8", cors);
    co_return;
  }
  COPPICE_LOG(info) << "context " << ctx->id << " created (cwd " << cwd << ")";
  co_await ex.respond_json(200, context_json(*ctx), cors);
}

asio::awaitable<void> InterpServer::handle_execute(http::Exchange& ex) {
  const http::Fields cors{{"Access-Control-Allow-Origin", "*"}};
  auto body = co_await ex.read_body(cfg_.max_body);
  if (!body) {
    unsigned st = body.error().code() == ErrorCode::kTooLarge ? 413 : 400;
    co_await ex.respond(st, body.error().message(), "text/plain; charset=utf-8", cors);
    co_return;
  }
  auto req = parse_execute_request(*body);
  if (!req) {
    co_await ex.respond(400, req.error().message(), "text/plain; charset=utf-8", cors);
    co_return;
  }
  std::shared_ptr<Context> ctx;
  if (req->context_id && !req->context_id->empty()) {
    auto it = contexts_.find(*req->context_id);
    if (it == contexts_.end()) {
      co_await ex.respond(404, "Context " + *req->context_id + " not found", "text/plain; charset=utf-8", cors);
      co_return;
    }
    ctx = it->second;
  } else {
    auto lang = normalize_language(req->language.value_or(""));
    if (!lang) {
      co_await ex.respond(400, "Unsupported language '" + *req->language + "': this server runs " +
                                   std::string(kLanguagesServed),
                          "text/plain; charset=utf-8", cors);
      co_return;
    }
    ctx = default_context(*lang);
  }
  auto run = std::make_shared<Run>();
  run->ctx = ctx;
  run->mb = std::make_shared<Mailbox>(ex.executor());
  run->waiter = std::make_shared<Waiter>();
  run->waiter->mb = run->mb;
  run->req = std::move(*req);
  run->access_token = ex.header("X-Access-Token");
  const http::Fields head{{"Content-Type", "application/x-ndjson"},
                          {"Cache-Control", "no-store"},
                          {"Access-Control-Allow-Origin", "*"}};
  if (auto s = co_await ex.start(200, head, std::nullopt); !s) {
    ex.set_close();
    co_return;
  }
  auto streaming = stream_run(ex, run);
  auto watcher = watch_peer(ex, run);
  co_await (std::move(streaming) || std::move(watcher));
  if (run->client_gone) {
    ex.set_close();
    co_return;
  }
  if (auto s = co_await ex.finish(); !s) ex.set_close();
}

asio::awaitable<void> InterpServer::watch_peer(http::Exchange& ex, std::shared_ptr<Run> run) {
  co_await ex.wait_peer_closed();
  // Cancelled because the run ended: the client is still there.
  if (run->finished) co_return;
  run->client_gone = true;
  run->mb->notify();
  // Only the end of the run ends this (by cancelling it).
  asio::steady_timer forever(ex.executor(), Clock::time_point::max());
  co_await forever.async_wait(kTuple);
}

asio::awaitable<std::map<std::string, std::string>> InterpServer::sandbox_envs(std::string token) {
  std::map<std::string, std::string> out;
  http::Endpoint ep;
  struct stat st {};
  if (!cfg_.envd_socket.empty() && ::stat(cfg_.envd_socket.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
    ep.unix_path = cfg_.envd_socket;
  } else {
    ep.host = "127.0.0.1";
    ep.port = kEnvdPort;
  }
  http::Fields headers;
  if (!token.empty()) headers.emplace_back("X-Access-Token", token);
  const std::string target = "/envs";
  const std::string no_body;
  const std::chrono::milliseconds timeout = std::chrono::seconds(2);
  auto r = co_await http::fetch(ep, http::bhttp::verb::get, target, headers, no_body, timeout, 1u << 20);
  if (!r || r->status != 200) {
    COPPICE_LOG(debug) << "no sandbox environment from envd at " << ep.to_string() << ": "
                       << (r ? "status " + std::to_string(r->status) : r.error().message());
    co_return out;
  }
  json j = json::parse(r->body, nullptr, false);
  if (!j.is_object()) co_return out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.value().is_string() && !it.key().empty() && it.key().find('=') == std::string::npos) {
      out[it.key()] = it.value().get<std::string>();
    }
  }
  co_return out;
}

asio::awaitable<bool> InterpServer::run_silent(std::shared_ptr<Run> run, std::shared_ptr<Kernel> k, std::string code) {
  auto id = k->execute(code, true, run->mb);
  if (!id) co_return false;
  ExecutionTranslator tr;
  std::vector<ojson> lines;
  auto deadline = Clock::now() + cfg_.interrupt_grace;
  bool ok_run = true;
  for (;;) {
    while (!run->mb->msgs.empty()) {
      Message m = std::move(run->mb->msgs.front());
      run->mb->msgs.pop_front();
      if (m.parent_id() != *id) continue;
      tr.feed(m, lines);
    }
    if (tr.done() || k->state() != KernelState::kReady) break;
    if (Clock::now() >= deadline) {
      ok_run = false;
      break;
    }
    run->mb->wake.expires_at(deadline);
    co_await run->mb->wake.async_wait(kTuple);
  }
  k->unroute(*id);
  for (auto& l : lines) {
    if (l["type"] == "error") {
      COPPICE_LOG_RATE(warn, 2) << "context " << run->ctx->id << ": setup code failed: " << l.dump();
      ok_run = false;
    }
  }
  co_return ok_run && tr.done();
}

asio::awaitable<void> InterpServer::stream_run(http::Exchange& ex, std::shared_ptr<Run> run) {
  struct Finished {
    Run& r;
    ~Finished() { r.finished = true; }
  } finished_guard{*run};
  auto& mb = *run->mb;
  auto ctx = run->ctx;
  // Every line goes through here; once the client is gone nothing is written.
  auto emit = [&ex, run](const ojson& line) -> asio::awaitable<void> {
    if (run->client_gone) co_return;
    std::string s = ndjson(line);
    if (auto w = co_await ex.write(s); !w) {
      run->client_gone = true;
    }
  };
  // Waits for a wake-up or `d`; true when `d` passed.
  auto wait_for = [&mb](Clock::duration d) -> asio::awaitable<bool> {
    mb.wake.expires_after(d);
    auto [ec] = co_await mb.wake.async_wait(kTuple);
    co_return !ec;
  };
  const ojson keepalive = keepalive_line();

  // 1. Our turn in the context.
  if (!ctx->busy && ctx->queue.empty()) {
    ctx->busy = true;
    run->waiter->granted = true;
  } else {
    ctx->queue.push_back(run->waiter);
  }
  while (!run->waiter->granted) {
    if (run->client_gone) {
      run->waiter->abandoned = true;
      co_return;
    }
    bool timed_out = co_await wait_for(cfg_.keepalive);
    if (timed_out) co_await emit(keepalive);
  }
  struct Release {
    InterpServer* s;
    std::shared_ptr<Context> c;
    ~Release() { s->release(*c); }
  } release_guard{this, ctx};

  // 2. A kernel that is ready (one that died or failed is replaced here).
  if (!ctx->removed) ensure_kernel(ctx);
  auto k = ctx->kernel;
  k->watch(run->mb);
  while (k->state() == KernelState::kStarting) {
    if (run->client_gone) co_return;
    bool timed_out = co_await wait_for(cfg_.keepalive);
    if (timed_out) co_await emit(keepalive);
  }
  if (k->state() != KernelState::kReady) {
    const ojson err = error_line("ContextRestarting", "The kernel is not running: " + k->failure(), "");
    co_await emit(err);
    const ojson end = end_of_execution_line();
    co_await emit(end);
    co_return;
  }

  // 3. The sandbox's environment, once per kernel; then this run's own.
  if (!k->globals_applied) {
    k->globals_applied = true;
    auto envs = co_await sandbox_envs(run->access_token);
    if (!envs.empty()) {
      std::string code = global_env_code(ctx->language, envs);
      bool applied = co_await run_silent(run, k, code);
      if (!applied) {
        COPPICE_LOG(warn) << "context " << ctx->id << ": could not apply the sandbox environment";
      }
    }
  }
  bool env_set = false;
  if (!run->req.env_vars.empty()) {
    std::string code = set_env_code(ctx->language, run->req.env_vars);
    env_set = co_await run_silent(run, k, code);
    if (!env_set) {
      const ojson err = error_line("EnvironmentError", "could not set env_vars for this run", "");
      co_await emit(err);
      const ojson end = end_of_execution_line();
      co_await emit(end);
      co_return;
    }
  }

  // 4. The code.
  auto id = k->execute(run->req.code, false, run->mb);
  if (!id) {
    const ojson err = error_line("ContextRestarting", "The kernel is not running: " + id.error().message(), "");
    co_await emit(err);
  } else {
    ExecutionTranslator tr;
    std::vector<ojson> lines;
    bool interrupted = false;
    bool emitted = false;
    int resent = 0;
    Clock::time_point kill_at = Clock::time_point::max();
    for (;;) {
      while (!mb.msgs.empty()) {
        Message m = std::move(mb.msgs.front());
        mb.msgs.pop_front();
        if (m.parent_id() != *id) continue;
        // IRkernel aborts every request that reaches it shortly after an
        // error or an interrupt, whatever stop_on_error says. An aborted
        // request never ran, so it is sent again (a few times, a moment
        // later); an abort after output, or the last retry, is reported.
        if (!emitted && !interrupted && resent < kMaxResends && m.msg_type() == "execute_reply" &&
            m.content.is_object() && m.content.value("status", "") == "aborted") {
          ++resent;
          k->unroute(*id);
          asio::steady_timer pause(ex.executor(), std::chrono::milliseconds(200 * resent));
          co_await pause.async_wait(kTuple);
          auto again = k->execute(run->req.code, false, run->mb);
          if (!again) break;
          id = std::move(again);
          tr = ExecutionTranslator{};
          COPPICE_LOG(debug) << "context " << ctx->id << ": the kernel aborted a run it never started; sent again";
          continue;
        }
        tr.feed(m, lines);
        if (!lines.empty()) emitted = true;
        for (auto& l : lines) co_await emit(l);
        lines.clear();
      }
      if (tr.done()) break;
      if (k->state() != KernelState::kReady) {
        std::string why = k->failure().empty() ? std::string("the kernel stopped") : k->failure();
        const ojson err = error_line("ContextRestarting", why, "");
        co_await emit(err);
        break;
      }
      auto now = Clock::now();
      if (run->client_gone && !interrupted) {
        interrupted = true;
        COPPICE_LOG(info) << "context " << ctx->id << ": client went away, interrupting the kernel";
        k->interrupt();
        kill_at = now + cfg_.interrupt_grace;
      }
      if (now >= kill_at) {
        COPPICE_LOG(warn) << "context " << ctx->id << ": the kernel ignored an interrupt; killing it";
        k->retire("The kernel did not stop after an interrupt and was restarted");
        kill_at = Clock::time_point::max();
        if (!ctx->removed) ensure_kernel(ctx, true);
        continue;
      }
      auto wait = interrupted ? std::min<Clock::duration>(cfg_.keepalive, kill_at - now) : Clock::duration(cfg_.keepalive);
      bool timed_out = co_await wait_for(wait);
      if (timed_out && !interrupted) co_await emit(keepalive);
    }
    k->unroute(*id);
  }

  // 5. The environment as it was.
  if (env_set && k->state() == KernelState::kReady) {
    std::string code = restore_env_code(ctx->language);
    co_await run_silent(run, k, code);
  }
  const ojson end = end_of_execution_line();
  co_await emit(end);
}

}  // namespace coppice::interp
