#include "core/sandbox_manager.h"
#include "core/sandbox_manager_internal.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <set>

#include "common/log.h"
#include "core/envd_client.h"
#include "core/ids.h"
#include "sys/fd.h"

namespace coppice::core {

namespace fs = std::filesystem;
using asio::use_awaitable;

// The envd protocol version reported to the SDK (see envd/envd.h).
static constexpr std::string_view kEnvdVersion = "0.6.13";


std::string_view state_name(SandboxState s) {
  switch (s) {
    case SandboxState::kPaused:
    case SandboxState::kResuming:
      return "paused";
    default:
      return "running";
  }
}

namespace {
int64_t to_ms(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}
Clock::time_point from_ms(int64_t ms) { return Clock::time_point(std::chrono::milliseconds(ms)); }
}  // namespace

SandboxManager::SandboxManager(const GatewayConfig& cfg, store::Store& store, sandbox::Backend& backend,
                               TemplateRegistry& templates, asio::thread_pool& workers,
                               metrics::GatewayMetrics& metrics, asio::any_io_executor io)
    : cfg_(cfg), store_(store), backend_(backend), templates_(templates), workers_(workers), metrics_(metrics),
      io_(std::move(io)) {
  // Refills take only CPU nobody else wants; what they start is put back to
  // normal priority (see start_sandbox).
  asio::post(refill_, [] {
    sched_param sp{};
    if (::sched_setscheduler(0, SCHED_IDLE, &sp) != 0) {
      COPPICE_LOG(warn) << "pool refill thread: SCHED_IDLE: " << std::strerror(errno);
    }
  });
}

SandboxManager::~SandboxManager() { refill_.join(); }

// Runs f on a thread of `pool` and resumes the caller on its own executor.
// Not a coroutine itself: g++ 12 destroys lambda captures moved into coroutine
// frames twice, so the hand-off is a plain asynchronous operation.
template <typename F>
asio::awaitable<std::invoke_result_t<F>> SandboxManager::on_pool(asio::thread_pool& pool, F f) {
  using R = std::invoke_result_t<F>;
  return asio::async_initiate<const asio::use_awaitable_t<>, void(R)>(
      [&pool](auto handler, F fn) {
        asio::post(pool, [fn = std::move(fn), handler = std::move(handler)]() mutable {
          R r = fn();
          auto ex = asio::get_associated_executor(handler);
          asio::dispatch(ex, [h = std::move(handler), r = std::move(r)]() mutable { std::move(h)(std::move(r)); });
        });
      },
      use_awaitable, std::move(f));
}

size_t SandboxManager::count() const {
  std::lock_guard lk(mu_);
  return live_.size();
}

SandboxManager::StateCounts SandboxManager::count_by_state() const {
  StateCounts c;
  std::lock_guard lk(mu_);
  for (const auto& [id, l] : live_) {
    if (!visible(l->state)) continue;
    if (state_name(l->state) == "paused") ++c.paused;
    else ++c.running;
  }
  return c;
}

Result<std::shared_ptr<SandboxManager::Live>> SandboxManager::find(const std::string& id) const {
  std::lock_guard lk(mu_);
  auto it = live_.find(id);
  if (it == live_.end() || !visible(it->second->state))
    return make_error(ErrorCode::kNotFound, "sandbox " + id + " not found");
  return it->second;
}

SandboxView SandboxManager::view(const Live& l) const {
  return SandboxView{l.id,        l.template_id, "",           l.state,      l.token,
                     l.metadata,  l.cpu_count,   l.memory_mb,  l.disk_mb,    l.started_at,
                     l.end_at,    std::string(kEnvdVersion)};
}

Status SandboxManager::persist(const Live& l, std::string_view event_kind, std::string_view event_detail) {
  store::SandboxRecord r;
  r.id = l.id;
  r.template_id = l.template_id;
  r.state = (l.state == SandboxState::kPaused || l.state == SandboxState::kPausing) ? store::SandboxState::kPaused
                                                                                      : store::SandboxState::kRunning;
  r.envd_access_token = l.token;
  r.metadata = l.metadata;
  r.env_vars = l.env_vars;
  r.cpu_count = l.cpu_count;
  r.memory_mb = l.memory_mb;
  r.disk_size_mb = l.disk_mb;
  r.started_at = to_ms(l.started_at);
  r.end_at = to_ms(l.end_at);
  r.init_pid = l.handle.init_pid;
  r.state_dir = l.state_dir;
  r.envd_version = std::string(kEnvdVersion);
  return store_.put_sandbox(r, event_kind, event_detail);
}

namespace {
// A sandbox started at SCHED_IDLE (a pool refill) gets normal priority back,
// every thread of its PID 1: what runs in it later inherits from there.
void reset_priority(pid_t pid) {
  std::error_code ec;
  for (const auto& t : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    sched_param sp{};
    pid_t tid = std::atoi(t.path().filename().c_str());
    if (tid > 0) (void)::sched_setscheduler(tid, SCHED_OTHER, &sp);
  }
}

std::map<std::string, std::string> merged_env(const Template& tmpl, const std::map<std::string, std::string>& own) {
  auto env = tmpl.env;
  for (const auto& [k, v] : own) env[k] = v;
  return env;
}

// A template's service may be slow to come up on a busy host (a Jupyter
// kernel takes seconds): how long create waits for its ready_cmd.
constexpr auto kReadyTimeout = std::chrono::seconds(60);
constexpr auto kReadyInterval = std::chrono::milliseconds(20);
}  // namespace

asio::awaitable<Status> SandboxManager::run_template_commands(const Live& l, const Template& tmpl) {
  // Named locals only in the co_await calls below: g++ 12 destroys
  // temporaries made inside a co_await expression twice.
  const http::Endpoint ep{l.handle.envd_socket, "", 0};
  const std::string& token = l.token;
  const std::chrono::milliseconds limit = std::chrono::seconds(10);
  if (!tmpl.start_cmd.empty()) {
    // In the background, its output in the sandbox's run dir (the host can
    // read it at <state_dir>/run/start.log); the shell returns at once.
    std::string cmd = "(" + tmpl.start_cmd + ") </dev/null >/.coppice/run/start.log 2>&1 &";
    auto r = co_await envd_run(ep, token, cmd, tmpl.env, limit);
    if (!r) co_return std::unexpected(std::move(r.error()).context("start_cmd"));
    if (*r != 0) co_return make_error(ErrorCode::kInternal, "start_cmd: the shell exited " + std::to_string(*r));
  }
  if (tmpl.ready_cmd.empty()) co_return ok();
  auto until = std::chrono::steady_clock::now() + kReadyTimeout;
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer timer(ex);
  std::string last = "never ran";
  for (;;) {
    auto r = co_await envd_run(ep, token, tmpl.ready_cmd, tmpl.env, limit);
    if (r && *r == 0) co_return ok();
    last = r ? "exit code " + std::to_string(*r) : r.error().to_string();
    if (std::chrono::steady_clock::now() >= until) break;
    timer.expires_after(kReadyInterval);
    co_await timer.async_wait(use_awaitable);
  }
  co_return make_error(ErrorCode::kUnavailable, "template " + tmpl.name + ": ready_cmd did not succeed within " +
                                                    std::to_string(kReadyTimeout.count()) + " s (last: " + last + ")");
}

asio::awaitable<void> SandboxManager::discard(std::shared_ptr<Live> l, asio::thread_pool& pool) {
  auto id = l->id;
  auto job = [this, id] { return backend_.destroy(id); };
  auto r = co_await on_pool(pool, std::move(job));
  if (!r) {
    COPPICE_LOG_RATE(error, 5).sandbox(id) << "remove failed: " << r.error().to_string();
  }
  std::lock_guard lk(mu_);
  live_.erase(id);
}

asio::awaitable<Result<std::shared_ptr<SandboxManager::Live>>> SandboxManager::start_sandbox(const Template& tmpl,
                                                                                            SandboxState as,
                                                                                            asio::thread_pool& pool,
                                                                                            const EnvdInit& init) {
  auto l = std::make_shared<Live>();
  l->token = init.access_token;
  l->template_id = tmpl.name;
  l->state = as;
  l->cpu_count = tmpl.cpu_count > 0 ? tmpl.cpu_count : cfg_.default_cpu_count;
  l->memory_mb = tmpl.memory_mb > 0 ? tmpl.memory_mb : cfg_.default_memory_mb;
  l->disk_mb = cfg_.default_disk_mb;
  l->build = tmpl.rootfs + "\n" + tmpl.build_id + "\n" + tmpl.recipe_hash;
  {
    std::lock_guard lk(mu_);
    if (stopping_) co_return make_error(ErrorCode::kUnavailable, "the gateway is shutting down");
    do l->id = new_sandbox_id();
    while (live_.count(l->id));
    live_[l->id] = l;  // reserved: invisible to lookups until handed out
  }
  l->state_dir = cfg_.state_dir + "/sandboxes/" + l->id;
  sandbox::SandboxSpec spec;
  spec.id = l->id;
  spec.rootfs = tmpl.rootfs;
  spec.ro_binds = tmpl.ro_binds;
  spec.state_dir = l->state_dir;
  spec.envd_path = cfg_.envd_path;
  spec.interp_path = cfg_.interp_path;
  spec.init_json = envd_init_body(init);
  spec.limits.cpu_millicores = l->cpu_count * 1000;
  spec.limits.memory_bytes = static_cast<uint64_t>(l->memory_mb) << 20;
  bool idle = &pool == &refill_;
  auto job = [this, spec, idle] {
    auto h = backend_.create(spec);
    if (h && idle) reset_priority(h->init_pid);
    return h;
  };
  auto handle = co_await on_pool(pool, std::move(job));
  if (!handle) {
    std::lock_guard lk(mu_);
    live_.erase(l->id);
    co_return std::unexpected(std::move(handle.error()).context("create sandbox"));
  }
  l->handle = *handle;
  Status s = co_await run_template_commands(*l, tmpl);
  if (!s) {
    co_await discard(l, pool);
    co_return std::unexpected(std::move(s.error()));
  }
  co_return l;
}

asio::awaitable<Result<SandboxView>> SandboxManager::hand_out(std::shared_ptr<Live> l, const CreateParams& p,
                                                              const Template& tmpl, bool pool_hit,
                                                              std::chrono::steady_clock::time_point t0) {
  l->metadata = p.metadata;
  l->env_vars = json(p.env_vars);
  auto t1 = std::chrono::steady_clock::now();
  // Every sandbox got its token, its environment and defaults from the start
  // (a pooled one the template's environment: nobody could see it since), so
  // only a pool hit's own envVars need a round trip to envd.
  Status s = ok();
  if (pool_hit && !p.env_vars.empty()) {
    const http::Endpoint ep{l->handle.envd_socket, "", 0};
    EnvdInit init;
    init.access_token = l->token;
    init.env_vars = p.env_vars;
    s = co_await envd_init(ep, init);
  }
  if (!s) metrics_.envd_errors.inc();
  auto t2 = std::chrono::steady_clock::now();
  if (s) {
    std::lock_guard lk(mu_);
    if (stopping_) s = make_error(ErrorCode::kUnavailable, "the gateway is shutting down");
    l->started_at = Clock::now();
    l->end_at = l->started_at + std::chrono::seconds(p.timeout_s.value_or(cfg_.default_timeout_s));
    l->state = SandboxState::kRunning;
  }
  if (s) {
    std::string detail = "template " + l->template_id + (pool_hit ? " (pool)" : "");
    if (auto st = persist(*l, "created", detail); !st) s = std::unexpected(std::move(st.error()).context("store sandbox"));
  }
  if (!s) {
    {
      std::lock_guard lk(mu_);
      l->state = SandboxState::kKilling;
    }
    co_await discard(l, workers_);
    COPPICE_LOG_RATE(warn, 5).sandbox(l->id) << "create failed: " << s.error().to_string();
    co_return std::unexpected(std::move(s.error()));
  }
  auto done = std::chrono::steady_clock::now();
  double secs = std::chrono::duration<double>(done - t0).count();
  (pool_hit ? metrics_.create_seconds_hit : metrics_.create_seconds_miss).observe(secs);
  if (pool_hit) {
    metrics_.checkouts.inc();
    metrics_.checkout_ns_sum.inc(static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(done - t0).count()));
  }
  auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
  COPPICE_LOG(info).sandbox(l->id) << "created from " << l->template_id << (pool_hit ? " (pool)" : "") << ", pid "
                                   << l->handle.init_pid << " (start " << ms(t0, t1) << " ms, init " << ms(t1, t2)
                                   << " ms, store " << ms(t2, done) << " ms)";
  std::lock_guard lk(mu_);
  co_return view(*l);
}

asio::awaitable<Result<SandboxView>> SandboxManager::create(CreateParams p) {
  auto t0 = std::chrono::steady_clock::now();
  auto tmpl = templates_.get(p.template_id);
  if (!tmpl) co_return std::unexpected(tmpl.error());
  if (tmpl->backend != "ns")
    co_return make_error(ErrorCode::kUnimplemented, "template '" + p.template_id + "' needs the " + tmpl->backend +
                                                        " backend, which this gateway does not run yet");
  // Pool hit. An entry built from an older version of the template is
  // removed, and so is one whose envd no longer answers /init (hand_out
  // discards it); either way the create goes on down the cold path.
  while (auto l = take_pooled(*tmpl, p.secure)) {
    if (l->build != tmpl->rootfs + "\n" + tmpl->build_id + "\n" + tmpl->recipe_hash) {
      co_await discard(l, refill_);
      continue;
    }
    auto v = co_await hand_out(l, p, *tmpl, true, t0);
    if (v) co_return v;
  }
  EnvdInit init;
  init.access_token = p.secure ? new_token() : "";
  init.env_vars = merged_env(*tmpl, p.env_vars);
  auto l = co_await start_sandbox(*tmpl, SandboxState::kCreating, workers_, init);
  if (!l) {
    metrics_.create_failures.inc();
    COPPICE_LOG_RATE(warn, 5) << "create from " << tmpl->name << " failed: " << l.error().to_string();
    co_return std::unexpected(std::move(l.error()));
  }
  auto v = co_await hand_out(*l, p, *tmpl, false, t0);
  if (!v) metrics_.create_failures.inc();
  co_return v;
}

Result<SandboxView> SandboxManager::get(const std::string& id) const {
  auto l = find(id);
  if (!l) return std::unexpected(l.error());
  std::lock_guard lk(mu_);
  return view(**l);
}

std::vector<SandboxView> SandboxManager::list(const ListFilter& f) const {
  std::vector<SandboxView> out;
  std::lock_guard lk(mu_);
  for (const auto& [id, l] : live_) {
    if (!visible(l->state)) continue;
    if (!f.states.empty()) {
      bool match = false;
      for (auto s : f.states) match |= state_name(s) == state_name(l->state);
      if (!match) continue;
    }
    bool meta_ok = true;
    for (const auto& [k, v] : f.metadata) {
      auto it = l->metadata.find(k);
      if (it == l->metadata.end() || !it->is_string() || it->get<std::string>() != v) meta_ok = false;
    }
    if (!meta_ok) continue;
    out.push_back(view(*l));
  }
  return out;
}

asio::awaitable<Status> SandboxManager::destroy(std::shared_ptr<Live> l, std::string_view reason) {
  auto id = l->id;
  auto job3 = [this, id] { return backend_.destroy(id); };
  auto r = co_await on_worker(std::move(job3));
  if (!r) {
    // The record stays so a restart (or the next reaper pass) tries again.
    COPPICE_LOG_RATE(error, 5).sandbox(id) << "destroy failed: " << r.error().to_string();
    std::lock_guard lk(mu_);
    l->state = SandboxState::kRunning;
    co_return std::unexpected(std::move(r.error()));
  }
  (void)store_.delete_sandbox(id);
  {
    std::lock_guard lk(mu_);
    live_.erase(id);
  }
  COPPICE_LOG(info).sandbox(id) << "killed (" << reason << ")";
  co_return ok();
}

asio::awaitable<Status> SandboxManager::kill(const std::string& id) {
  std::shared_ptr<Live> l;
  {
    std::lock_guard lk(mu_);
    auto it = live_.find(id);
    if (it == live_.end() || !visible(it->second->state))
      co_return make_error(ErrorCode::kNotFound, "sandbox " + id + " not found");
    if (it->second->state == SandboxState::kPausing || it->second->state == SandboxState::kResuming)
      co_return make_error(ErrorCode::kFailedPrecondition, "sandbox " + id + " is changing state; try again");
    l = it->second;
    l->state = SandboxState::kKilling;
  }
  co_return co_await destroy(l, "kill");
}

Status SandboxManager::set_timeout(const std::string& id, int timeout_s) {
  auto l = find(id);
  if (!l) return std::unexpected(l.error());
  std::lock_guard lk(mu_);
  (*l)->end_at = Clock::now() + std::chrono::seconds(timeout_s);
  return store_.update_end_at(id, to_ms((*l)->end_at));
}

Status SandboxManager::refresh(const std::string& id, int duration_s) {
  auto l = find(id);
  if (!l) return std::unexpected(l.error());
  std::lock_guard lk(mu_);
  auto want = Clock::now() + std::chrono::seconds(duration_s);
  if (want > (*l)->end_at) (*l)->end_at = want;
  return store_.update_end_at(id, to_ms((*l)->end_at));
}

Result<std::shared_ptr<SandboxManager::Live>> SandboxManager::begin_transition(const std::string& id,
                                                                              SandboxState from, SandboxState during) {
  std::lock_guard lk(mu_);
  auto it = live_.find(id);
  if (it == live_.end() || !visible(it->second->state))
    return make_error(ErrorCode::kNotFound, "sandbox " + id + " not found");
  if (it->second->state != from) {
    bool settled = it->second->state == SandboxState::kRunning || it->second->state == SandboxState::kPaused;
    return make_error(ErrorCode::kFailedPrecondition,
                      "sandbox " + id + (settled ? " is not " + std::string(state_name(from))
                                                 : " is changing state; try again"));
  }
  it->second->state = during;
  return it->second;
}

asio::awaitable<Status> SandboxManager::pause(const std::string& id) {
  auto begun = begin_transition(id, SandboxState::kRunning, SandboxState::kPausing);
  if (!begun) co_return std::unexpected(std::move(begun.error()));
  auto l = *begun;
  auto job4 = [this, id] { return backend_.freeze(id); };
  auto r = co_await on_worker(std::move(job4));
  std::lock_guard lk(mu_);
  if (!r) {
    l->state = SandboxState::kRunning;
    co_return std::unexpected(std::move(r.error()).context("pause"));
  }
  l->state = SandboxState::kPaused;
  (void)store_.update_state(id, store::SandboxState::kPaused);
  (void)store_.append_event(id, "paused", "");
  co_return ok();
}

asio::awaitable<Result<SandboxView>> SandboxManager::resume(const std::string& id, std::optional<int> timeout_s) {
  auto begun = begin_transition(id, SandboxState::kPaused, SandboxState::kResuming);
  if (!begun) co_return std::unexpected(std::move(begun.error()));
  auto l = *begun;
  auto job5 = [this, id] { return backend_.thaw(id); };
  auto r = co_await on_worker(std::move(job5));
  std::lock_guard lk(mu_);
  if (!r) {
    l->state = SandboxState::kPaused;
    co_return std::unexpected(std::move(r.error()).context("resume"));
  }
  l->state = SandboxState::kRunning;
  auto want = Clock::now() + std::chrono::seconds(timeout_s.value_or(cfg_.default_timeout_s));
  if (want > l->end_at) l->end_at = want;
  (void)store_.update_state(id, store::SandboxState::kRunning);
  (void)store_.update_end_at(id, to_ms(l->end_at));
  (void)store_.append_event(id, "resumed", "");
  co_return view(*l);
}

asio::awaitable<Result<std::pair<SandboxView, bool>>> SandboxManager::connect(const std::string& id,
                                                                               std::optional<int> timeout_s) {
  auto l = find(id);
  if (!l) co_return std::unexpected(l.error());
  SandboxState st;
  {
    std::lock_guard lk(mu_);
    st = (*l)->state;
  }
  if (st == SandboxState::kPaused) {
    auto v = co_await resume(id, timeout_s);
    if (!v) co_return std::unexpected(v.error());
    co_return std::make_pair(*v, true);
  }
  std::lock_guard lk(mu_);
  if (timeout_s) {
    auto want = Clock::now() + std::chrono::seconds(*timeout_s);
    if (want > (*l)->end_at) {
      (*l)->end_at = want;
      (void)store_.update_end_at(id, to_ms(want));
    }
  }
  co_return std::make_pair(view(**l), false);
}

asio::awaitable<Result<std::vector<MetricSample>>> SandboxManager::metrics(const std::string& id) {
  auto l = find(id);
  if (!l) co_return std::unexpected(l.error());
  auto job6 = [this, id] { return backend_.usage(id); };
  auto u = co_await on_worker(std::move(job6));
  if (!u) co_return std::unexpected(u.error());
  std::lock_guard lk(mu_);
  auto now = std::chrono::steady_clock::now();
  Live& lv = **l;
  double pct = 0;
  if (lv.last_cpu_at.time_since_epoch().count() != 0) {
    double wall_ns = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(now - lv.last_cpu_at).count());
    if (wall_ns > 0)
      pct = 100.0 * static_cast<double>(u->cpu_ns - lv.last_cpu_ns) / (wall_ns * std::max(1, lv.cpu_count));
  } else {
    double life_ns = static_cast<double>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - lv.started_at).count());
    if (life_ns > 0) pct = 100.0 * static_cast<double>(u->cpu_ns) / (life_ns * std::max(1, lv.cpu_count));
  }
  lv.last_cpu_ns = u->cpu_ns;
  lv.last_cpu_at = now;
  MetricSample m{Clock::now(),
                 lv.cpu_count,
                 std::clamp(pct, 0.0, 100.0),
                 u->mem_bytes,
                 u->mem_limit ? u->mem_limit : static_cast<uint64_t>(lv.memory_mb) << 20,
                 u->disk_bytes,
                 static_cast<uint64_t>(lv.disk_mb) << 20};
  std::vector<MetricSample> out{m};
  co_return out;
}

std::vector<store::EventRecord> SandboxManager::events(const std::string& id, size_t limit) const {
  auto r = store_.events(id, static_cast<int64_t>(limit));
  return r ? *r : std::vector<store::EventRecord>{};
}

Result<http::Endpoint> SandboxManager::envd_endpoint(const std::string& id) const {
  std::lock_guard lk(mu_);
  auto it = live_.find(id);
  if (it == live_.end() || it->second->state != SandboxState::kRunning)
    return make_error(ErrorCode::kNotFound, "sandbox " + id + " is not running");
  return http::Endpoint{it->second->handle.envd_socket, "", 0};
}

asio::awaitable<Result<http::Socket>> SandboxManager::connect_port(const std::string& id, uint16_t port) {
  pid_t pid;
  {
    std::lock_guard lk(mu_);
    auto it = live_.find(id);
    if (it == live_.end() || it->second->state != SandboxState::kRunning)
      co_return make_error(ErrorCode::kNotFound, "sandbox " + id + " is not running");
    pid = it->second->handle.init_pid;
  }
  // The socket is made inside the sandbox's network namespace (on a worker
  // thread, which enters the namespace and returns); it stays bound to that
  // namespace wherever it is used afterwards.
  auto open_in_netns = [pid]() -> Result<int> {
    sys::UniqueFd target(::open(("/proc/" + std::to_string(pid) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
    if (!target) return errno_error("open sandbox netns");
    sys::UniqueFd self(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!self) return errno_error("open own netns");
    if (::setns(target.get(), CLONE_NEWNET) != 0) return errno_error("setns into sandbox netns");
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int err = errno;
    if (::setns(self.get(), CLONE_NEWNET) != 0) std::abort();  // a worker stuck in a sandbox netns is unsafe
    if (s < 0) return errno_error("socket in sandbox netns", err);
    return s;
  };
  auto fd = co_await on_worker(std::move(open_in_netns));
  if (!fd) co_return std::unexpected(fd.error());
  auto ex = co_await asio::this_coro::executor;
  asio::ip::tcp::socket tcp(ex, asio::ip::tcp::v4(), *fd);
  asio::steady_timer timer(ex, std::chrono::seconds(5));
  auto [ec] = co_await tcp.async_connect(asio::ip::tcp::endpoint(asio::ip::address_v4::loopback(), port),
                                        asio::as_tuple(use_awaitable));
  if (ec)
    co_return make_error(ErrorCode::kUnavailable,
                         "connect to port " + std::to_string(port) + " in sandbox " + id + ": " + ec.message());
  boost::system::error_code ig;
  tcp.set_option(asio::ip::tcp::no_delay(true), ig);
  co_return http::Socket(std::move(tcp));
}

asio::awaitable<Status> SandboxManager::recover() {
  auto records = store_.list_sandboxes(true);
  if (!records) co_return std::unexpected(std::move(records.error()).context("recover: list sandboxes"));
  auto job7 = [this] { return backend_.list_existing(); };
  auto existing = co_await on_worker(std::move(job7));
  std::vector<std::string> kernel_ids = existing ? *existing : std::vector<std::string>{};
  std::set<std::string> adopted;
  auto now = Clock::now();
  for (auto& r : *records) {
    bool expired = r.state == store::SandboxState::kRunning && from_ms(r.end_at) <= now;
    bool killed = r.state == store::SandboxState::kKilled;
    if (!expired && !killed) {
      auto id = r.id;
      auto dir = r.state_dir;
      auto job8 = [this, id, dir] { return backend_.adopt(id, dir); };
      auto h = co_await on_worker(std::move(job8));
      if (h) {
        auto l = std::make_shared<Live>();
        l->id = r.id;
        l->template_id = r.template_id;
        l->state = r.state == store::SandboxState::kPaused ? SandboxState::kPaused : SandboxState::kRunning;
        l->token = r.envd_access_token;
        l->metadata = r.metadata;
        l->env_vars = r.env_vars;
        l->cpu_count = static_cast<int>(r.cpu_count);
        l->memory_mb = static_cast<int>(r.memory_mb);
        l->disk_mb = static_cast<int>(r.disk_size_mb);
        l->started_at = from_ms(r.started_at);
        l->end_at = from_ms(r.end_at);
        l->state_dir = r.state_dir;
        l->handle = *h;
        std::lock_guard lk(mu_);
        live_[l->id] = l;
        adopted.insert(l->id);
        COPPICE_LOG(info).sandbox(l->id) << "adopted after restart (" << state_name(l->state) << ")";
        continue;
      }
      COPPICE_LOG(warn).sandbox(r.id) << "not adopted, cleaning up: " << h.error().to_string();
    }
    auto id = r.id;
    auto job9 = [this, id] { return backend_.destroy(id); };
    (void)co_await on_worker(std::move(job9));
    (void)store_.delete_sandbox(r.id);
    COPPICE_LOG(info).sandbox(r.id) << (expired ? "expired while the gateway was down: removed" : "removed");
  }
  for (const auto& id : kernel_ids) {
    if (adopted.count(id)) continue;
    COPPICE_LOG(info).sandbox(id) << "orphaned kernel resources: cleaning up";
    auto job10 = [this, id] { return backend_.destroy(id); };
    (void)co_await on_worker(std::move(job10));
  }
  co_return ok();
}

asio::awaitable<void> SandboxManager::reaper_loop() {
  auto ex = co_await asio::this_coro::executor;
  reaper_timer_ = std::make_unique<asio::steady_timer>(ex);
  for (;;) {
    reaper_timer_->expires_after(std::chrono::milliseconds(250));
    auto [ec] = co_await reaper_timer_->async_wait(asio::as_tuple(use_awaitable));
    {
      std::lock_guard lk(mu_);
      if (stopping_) co_return;
    }
    std::vector<std::shared_ptr<Live>> due;
    {
      std::lock_guard lk(mu_);
      auto now = Clock::now();
      for (auto& [id, l] : live_) {
        if (l->state == SandboxState::kRunning && l->end_at <= now) {
          l->state = SandboxState::kKilling;
          due.push_back(l);
        }
      }
    }
    for (auto& l : due) (void)co_await destroy(l, "timeout");
  }
}

void SandboxManager::stop() {
  std::lock_guard lk(mu_);
  stopping_ = true;
  if (reaper_timer_) reaper_timer_->cancel();
}

}  // namespace coppice::core
