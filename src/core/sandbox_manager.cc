// The owner's control-plane operations: create, get, list, kill, timeouts,
// connect, pause/resume, metrics. Pools are in pools.cc; recovery, the
// reaper and the sampler in upkeep.cc.
#include "core/sandbox_manager.h"

#include <sys/wait.h>

#include <algorithm>
#include <cstring>

#include "common/constants.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/scope_exit.h"
#include "core/offload.h"
#include "core/sandbox_manager_internal.h"

namespace coppice::core {

using asio::use_awaitable;

namespace {
int64_t to_ms(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

std::map<std::string, std::string> merged_env(const Template& tmpl, const std::map<std::string, std::string>& own) {
  auto env = tmpl.env;
  for (const auto& [k, v] : own) env[k] = v;
  return env;
}

// A template's user and working directory, where it names them, are envd's
// defaults in its sandboxes (an image's USER and WORKDIR).
void apply_template_defaults(const Template& tmpl, EnvdInit& init) {
  if (!tmpl.user.empty()) {
    init.default_user = tmpl.user;
    init.default_workdir.clear();  // envd: the user's home
  }
  if (!tmpl.workdir.empty()) init.default_workdir = tmpl.workdir;
}

// A template's service may be slow to come up on a busy host (a Jupyter
// kernel takes seconds): how long create waits for its ready_cmd.
constexpr auto kReadyTimeout = std::chrono::seconds(60);
constexpr auto kReadyInterval = std::chrono::milliseconds(20);
}  // namespace

asio::awaitable<Status> run_template_commands(std::string socket, std::string token, Template tmpl) {
  // Named locals only in the co_await calls below: g++ 12 destroys
  // temporaries made inside a co_await expression twice.
  const http::Endpoint ep{socket, "", 0};
  const std::chrono::milliseconds limit = std::chrono::seconds(10);
  if (!tmpl.start_cmd.empty()) {
    // In the background, its output in the sandbox's run dir (the host can
    // read it at <state_dir>/run/start.log); the shell returns at once.
    // As the template's user in its workdir (an image's USER and WORKDIR),
    // else as root in /. Another user cannot enter the run dir (0700): its
    // output goes to /tmp/coppice-start.log where it can write, else nowhere.
    const std::string user = tmpl.user.empty() ? "root" : tmpl.user;
    std::string cmd = "(" + tmpl.start_cmd + ") </dev/null >/.coppice/run/start.log 2>&1 &";
    if (user != "root")
      cmd = "L=/dev/null; if [ -d /tmp ] && [ -w /tmp ]; then L=/tmp/coppice-start.log; fi; (" + tmpl.start_cmd +
            ") </dev/null >\"$L\" 2>&1 &";
    const std::string cwd = tmpl.workdir.empty() ? "/" : tmpl.workdir;
    auto r = co_await envd_run(ep, token, cmd, tmpl.env, limit, user, cwd);
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

SandboxManager::SandboxManager(const GatewayConfig& cfg, store::Store& store, sandbox::Backend& backend,
                               TemplateRegistry& templates, ManagerExecutors ex, metrics::GatewayMetrics& metrics,
                               net::Network* network)
    : cfg_(cfg), store_(store), backend_(backend), templates_(templates), io_(ex.io), owner_(asio::make_strand(ex.io)),
      workers_(*ex.workers), background_(*ex.background), metrics_(metrics), net_(network), store_q_(store) {}

SandboxManager::~SandboxManager() {
  // Pools must stop (their makes use this object) before members go.
  std::map<std::string, std::unique_ptr<Pool>> pools;
  {
    std::lock_guard lk(pools_mu_);
    pools.swap(pools_);
  }
  for (auto& [name, p] : pools) p->refiller->stop();
}

template <typename T>
asio::awaitable<T> SandboxManager::on_owner(asio::awaitable<T> op) {
  co_return co_await asio::co_spawn(owner_, std::move(op), use_awaitable);
}

// --- public entry points: hand the operation to the owner ---

asio::awaitable<Result<SandboxView>> SandboxManager::create(CreateParams p) {
  // A template name that is no template may be one of the team's snapshots
  // (E2B: Sandbox.create(snapshotID or name), a tag such as ":default" and
  // a "team/" prefix allowed). Looked up here, off the owner.
  if (auto t = templates_.get(p.template_id); !t) {
    std::string ref = p.template_id;
    if (auto colon = ref.find(':'); colon != std::string::npos) ref.resize(colon);
    if (auto slash = ref.find('/'); slash != std::string::npos && ref.substr(0, slash) == p.team) ref = ref.substr(slash + 1);
    auto snap = store_.find_snapshot(p.team, ref);
    if (snap) {
      auto from = start_point_of(*snap);
      auto op = do_create_from(std::move(p), std::move(from));
      co_return co_await on_owner(std::move(op));
    }
    if (snap.error().code() != ErrorCode::kNotFound) co_return std::unexpected(snap.error());
    if (ref != p.template_id || t.error().code() == ErrorCode::kNotFound || valid_sandbox_id(ref)) {
      co_return make_error(ErrorCode::kNotFound, "template or snapshot '" + p.template_id + "' not found");
    }
  }
  auto op = do_create(std::move(p));
  co_return co_await on_owner(std::move(op));
}
asio::awaitable<Result<SandboxView>> SandboxManager::get(std::string id, TeamScope team) {
  auto op = do_get(std::move(id), std::move(team));
  co_return co_await on_owner(std::move(op));
}
asio::awaitable<std::vector<SandboxView>> SandboxManager::list(ListFilter f) {
  auto op = do_list(std::move(f));
  co_return co_await on_owner(std::move(op));
}
asio::awaitable<Status> SandboxManager::kill(std::string id, TeamScope team) {
  std::string reason = "kill";
  auto op = do_kill(std::move(id), std::move(reason), std::move(team));
  co_return co_await on_owner(std::move(op));
}
asio::awaitable<Status> SandboxManager::set_timeout(std::string id, int timeout_s, TeamScope team) {
  auto op = do_set_timeout(std::move(id), timeout_s, false, std::move(team));
  co_return co_await on_owner(std::move(op));
}
asio::awaitable<Status> SandboxManager::refresh(std::string id, int duration_s, TeamScope team) {
  auto op = do_set_timeout(std::move(id), duration_s, true, std::move(team));
  co_return co_await on_owner(std::move(op));
}
asio::awaitable<Result<std::pair<SandboxView, bool>>> SandboxManager::connect(std::string id,
                                                                               std::optional<int> timeout_s,
                                                                               TeamScope team) {
  auto op = do_connect(std::move(id), timeout_s, std::move(team));
  co_return co_await on_owner(std::move(op));
}
asio::awaitable<Status> SandboxManager::pause(std::string id, TeamScope team, bool memory) {
  auto op = do_pause(std::move(id), std::move(team), memory);
  co_return co_await on_owner(std::move(op));
}
asio::awaitable<Status> SandboxManager::update_network(std::string id, json body, TeamScope team) {
  auto op = do_update_network(std::move(id), std::move(body), std::move(team));
  co_return co_await on_owner(std::move(op));
}
asio::awaitable<Result<SandboxView>> SandboxManager::resume(std::string id, std::optional<int> timeout_s,
                                                             TeamScope team) {
  auto op = do_resume(std::move(id), timeout_s, std::move(team));
  co_return co_await on_owner(std::move(op));
}
asio::awaitable<Result<SandboxView>> SandboxManager::resize(std::string id, std::optional<int> cpu_count,
                                                             std::optional<int> memory_mb, TeamScope team) {
  auto op = do_resize(std::move(id), cpu_count, memory_mb, std::move(team));
  co_return co_await on_owner(std::move(op));
}
asio::awaitable<Result<std::vector<MetricSample>>> SandboxManager::metrics(std::string id,
                                                                            std::optional<Clock::time_point> start,
                                                                            std::optional<Clock::time_point> end,
                                                                            TeamScope team) {
  auto op = do_metrics(std::move(id), start, end, std::move(team));
  co_return co_await on_owner(std::move(op));
}
asio::awaitable<Result<PoolView>> SandboxManager::warm_pool(std::string template_id, int count) {
  auto op = do_warm_pool(std::move(template_id), count);
  co_return co_await on_owner(std::move(op));
}
asio::awaitable<Result<PoolView>> SandboxManager::drain_pool(std::string template_id) {
  auto op = do_drain_pool(std::move(template_id));
  co_return co_await on_owner(std::move(op));
}
asio::awaitable<Status> SandboxManager::recover() {
  auto op = do_recover();
  co_return co_await on_owner(std::move(op));
}
asio::awaitable<void> SandboxManager::collect_retired_templates() {
  auto op = do_collect_retired_templates();
  co_await on_owner(std::move(op));
}
asio::awaitable<Status> SandboxManager::start() {
  auto op = do_start();
  co_return co_await on_owner(std::move(op));
}
asio::awaitable<void> SandboxManager::shutdown() {
  auto op = do_shutdown();
  co_await on_owner(std::move(op));
}

std::vector<store::EventRecord> SandboxManager::events(const std::string& id, size_t limit) const {
  auto r = store_.events(id, static_cast<int64_t>(limit));
  return r ? *r : std::vector<store::EventRecord>{};
}

// --- the owner's helpers ---

Result<std::shared_ptr<SandboxManager::Live>> SandboxManager::find(const std::string& id,
                                                                    const TeamScope& team) const {
  auto it = live_.find(id);
  if (it == live_.end() || !visible(it->second->state) || (team && it->second->team != *team))
    return make_error(ErrorCode::kNotFound, "sandbox " + id + " not found");
  return it->second;
}

Status SandboxManager::transition(Live& l, SandboxState to) {
  COPPICE_TRY(check_transition(l.id, l.state, to));
  auto count = [this](SandboxState s, int d) {
    if (!visible(s)) return;
    auto& c = state_name(s) == "paused" ? paused_ : running_;
    if (d > 0) c.fetch_add(1, std::memory_order_relaxed);
    else c.fetch_sub(1, std::memory_order_relaxed);
  };
  count(l.state, -1);
  count(to, +1);
  l.state = to;
  if (visible(to)) {
    routes_.publish(
        Route{l.id, to, l.handle, l.team, l.token, l.traffic_token, l.mask_host, l.https_ports, l.lifecycle.auto_resume});
  } else {
    routes_.remove(l.id);
  }
  return ok();
}

SandboxView SandboxManager::view(const Live& l) const {
  SandboxView v{l.id,       l.template_id, "",          l.state,      l.token, l.traffic_token,
                l.metadata, l.cpu_count,   l.memory_mb, l.disk_mb,    l.started_at,
                l.end_at,   std::string(kEnvdVersion), l.team};
  v.network = l.network;
  v.lifecycle = l.lifecycle;
  v.lineage = l.lineage;
  if (l.handle.net_addr) v.address = net::ipv4_string(l.handle.net_addr);
  return v;
}

store::SandboxRecord SandboxManager::record(const Live& l) const {
  store::SandboxRecord r;
  r.id = l.id;
  r.template_id = l.template_id;
  r.state = (l.state == SandboxState::kPaused || l.state == SandboxState::kResuming) ? store::SandboxState::kPaused
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
  r.template_tree = l.tree;
  r.team = l.team;
  r.extra["network"] = net::to_store_json(l.network);
  if (!l.traffic_token.empty()) r.extra["trafficAccessToken"] = l.traffic_token;
  if (!l.mask_host.empty()) r.extra["maskRequestHost"] = l.mask_host;
  if (!l.https_ports.empty()) r.extra["httpsPorts"] = l.https_ports;
  if (l.on_disk) r.extra["pausedToDisk"] = json{{"memory", l.disk_memory}, {"hostRoot", l.disk_host_root}};
  if (r.state == store::SandboxState::kPaused && l.paused_at != Clock::time_point{}) r.extra["pausedAt"] = to_ms(l.paused_at);
  r.extra["lifecycle"] = to_store_json(l.lifecycle);
  if (!l.lowers.empty()) r.extra["lowerLayers"] = layers_json(l.lowers);
  if (!l.lineage.is_null()) r.extra["lineage"] = l.lineage;
  return r;
}

std::shared_ptr<SandboxManager::Live> SandboxManager::new_live(const Template& tmpl, bool secure) const {
  auto l = std::make_shared<Live>();
  l->id = new_sandbox_id();
  l->token = secure ? new_token() : "";
  l->template_id = tmpl.name;
  const Resources r = resources_of(tmpl);
  l->cpu_count = r.cpu_count;
  l->memory_mb = r.memory_mb;
  l->disk_mb = r.disk_mb;
  l->build = build_of(tmpl);
  l->state_dir = cfg_.state_dir + "/sandboxes/" + l->id;
  return l;
}

SandboxManager::Resources SandboxManager::resources_of(const Template& tmpl) const {
  return {tmpl.cpu_count > 0 ? tmpl.cpu_count : cfg_.default_cpu_count,
          tmpl.memory_mb > 0 ? tmpl.memory_mb : cfg_.default_memory_mb,
          !cfg_.disk_quota ? 0 : tmpl.disk_mb > 0 ? tmpl.disk_mb : cfg_.default_disk_mb};
}

sandbox::SandboxSpec SandboxManager::spec_for(const Live& l, const Template& tmpl, const EnvdInit& init) const {
  sandbox::SandboxSpec spec;
  spec.id = l.id;
  spec.rootfs = tmpl.rootfs;
  spec.ro_binds = tmpl.ro_binds;
  spec.state_dir = l.state_dir;
  spec.envd_path = cfg_.envd_path;
  spec.interp_path = cfg_.interp_path;
  EnvdInit with_defaults = init;
  apply_template_defaults(tmpl, with_defaults);
  spec.init_json = envd_init_body(with_defaults);
  spec.limits.cpu_millicores = l.cpu_count * 1000;
  spec.limits.memory_bytes = static_cast<uint64_t>(l.memory_mb) << 20;
  spec.disk_bytes = static_cast<uint64_t>(l.disk_mb) << 20;
  spec.lower_layers = l.lowers;
  spec.shm_bytes = spec.limits.memory_bytes / 100 * static_cast<uint64_t>(std::clamp(cfg_.shm_percent, 1, 100));
  return spec;
}

asio::awaitable<void> SandboxManager::discard(std::shared_ptr<Live> l) {
  auto id = l->id;
  auto job = [this, id] { return backend_.destroy(id); };
  auto r = co_await run_on(workers_, std::move(job));
  if (!r) {
    COPPICE_LOG_RATE(error, 5).sandbox(id) << "remove failed: " << r.error().to_string();
  }
  if (auto it = live_.find(id); it != live_.end() && it->second == l) live_.erase(it);
  co_await release_volumes(id);  // a failed create's volumes are free again
}

// --- create ---

asio::awaitable<Result<SandboxView>> SandboxManager::hand_out(std::shared_ptr<Live> l, const CreateParams& p,
                                                              bool pool_hit, std::chrono::steady_clock::time_point t0) {
  l->metadata = p.metadata;
  l->env_vars = json(p.env_vars);
  l->team = p.team;  // before the Running transition publishes its route
  l->network = p.network;
  if (!l->network.egress_limit_bps && net_) {
    // The template's cap, unless the create set one.
    if (auto t = templates_.get(l->template_id); t && t->egress_mbps > 0) {
      l->network.egress_limit_bps = static_cast<uint64_t>(t->egress_mbps) * 1000000 / 8;
    }
  }
  l->traffic_token = p.public_traffic ? "" : new_token();
  l->mask_host = p.mask_request_host;
  l->https_ports = p.https_ports;
  l->lifecycle = p.lifecycle;
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
    if (auto t = templates_.get(l->template_id)) apply_template_defaults(*t, init);
    s = co_await envd_init(ep, init);
    if (!s) metrics_.envd_errors.inc();
  }
  // Its egress rules hold before anyone can run code in it.
  if (s) {
    auto applying = apply_network(*l);
    s = co_await std::move(applying);
  }
  auto t2 = std::chrono::steady_clock::now();
  if (s && stopping_) s = make_error(ErrorCode::kUnavailable, "the gateway is shutting down");
  if (s) {
    // Milliseconds, as the store and the API keep them: a time a client
    // read back (startedAt) compares equal to the sandbox's own.
    l->started_at = std::chrono::floor<std::chrono::milliseconds>(Clock::now());
    l->end_at = l->started_at + std::chrono::seconds(p.timeout_s.value_or(cfg_.default_timeout_s));
    s = transition(*l, SandboxState::kRunning);
  }
  if (s) {
    auto rec = record(*l);
    std::string detail = "template " + l->template_id + (pool_hit ? " (pool)" : "");
    auto op = [rec, detail](store::Store& st) { return st.put_sandbox(rec, "created", detail); };
    auto w = co_await store_q_.write(std::move(op));
    if (!w) {
      s = std::unexpected(std::move(w.error()).context("store sandbox"));
      (void)transition(*l, SandboxState::kKilling);
    }
  }
  if (s) {
    // A pidfd_open (and a lookup under the backend's lock): no waiting.
    auto fd = backend_.exit_fd(l->handle);
    if (fd) {
      watch_exit(l, std::move(*fd));
    } else if (fd.error().code() == ErrorCode::kNotFound) {
      // Died between its start and now: the watch fires at once.
      COPPICE_LOG_RATE(warn, 5).sandbox(l->id) << "envd gone right after create: " << fd.error().to_string();
      asio::co_spawn(owner_, on_envd_exit(l->id), asio::detached);
    }
  }
  if (!s) {
    if (l->state == SandboxState::kCreating) (void)transition(*l, SandboxState::kGone);
    co_await discard(l);
    COPPICE_LOG_RATE(warn, 5).sandbox(l->id) << "create failed: " << s.error().to_string();
    co_return std::unexpected(std::move(s.error()));
  }
  auto done = std::chrono::steady_clock::now();
  double secs = std::chrono::duration<double>(done - t0).count();
  (pool_hit ? metrics_.create_seconds_hit : metrics_.create_seconds_miss).observe(secs);
  if (pool_hit) {
    metrics_.checkouts.inc();
    metrics_.checkout_ns_sum.inc(
        static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(done - t0).count()));
  }
  auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
  COPPICE_LOG(info).sandbox(l->id) << "created from " << l->template_id << (pool_hit ? " (pool)" : "") << ", pid "
                                   << l->handle.init_pid << " (start " << ms(t0, t1) << " ms, init " << ms(t1, t2)
                                   << " ms, store " << ms(t2, done) << " ms)";
  co_return view(*l);
}

asio::awaitable<Result<SandboxView>> SandboxManager::do_create(CreateParams p) {
  auto t0 = std::chrono::steady_clock::now();
  if (stopping_) co_return make_error(ErrorCode::kUnavailable, "the gateway is shutting down");
  auto tmpl = templates_.get(p.template_id);
  if (!tmpl) co_return std::unexpected(tmpl.error());
  if (tmpl->backend != "ns")
    co_return make_error(ErrorCode::kUnimplemented, "template '" + p.template_id + "' needs the " + tmpl->backend +
                                                        " backend, which this gateway does not run yet");
  if (!net_ && (p.wants_network || p.network.egress_limit_bps)) {
    co_return make_error(ErrorCode::kInvalidArgument,
                         "this gateway runs sandboxes without a network (" +
                             (cfg_.network_off_reason.empty() ? std::string("--network off") : cfg_.network_off_reason) +
                             "): internet access and egress rules cannot be honoured");
  }
  // Pool hit. One whose envd no longer answers is removed by hand_out; the
  // create then goes on down the cold path. Pooled sandboxes carry a token
  // from the start: one without is made cold. A create with volumes is
  // made cold too (they are mounted before envd starts).
  while (p.secure && p.volumes.empty()) {
    auto l = take_pooled(*tmpl);
    if (!l) break;
    auto v = co_await hand_out(l, p, true, t0);
    if (v) co_return v;
  }
  auto l = new_live(*tmpl, p.secure);
  while (live_.count(l->id)) l->id = new_sandbox_id();
  l->state_dir = cfg_.state_dir + "/sandboxes/" + l->id;
  live_[l->id] = l;  // reserved: invisible until handed out
  EnvdInit init;
  init.access_token = l->token;
  init.env_vars = merged_env(*tmpl, p.env_vars);
  auto spec = spec_for(*l, *tmpl, init);
  // Its volumes are in use from here on (a delete now is a 409).
  if (!p.volumes.empty()) {
    auto reserved = reserve_volumes(l->id, p.volumes, spec);
    if (auto r = co_await std::move(reserved); !r) {
      live_.erase(l->id);
      co_return std::unexpected(std::move(r.error()));
    }
  }
  // The tree's identity is taken before the create mounts it: if a rebuild
  // swaps the template in between, the sandbox names the older tree, which
  // is then kept a little longer than needed, never removed under it.
  auto job = [this, spec]() -> std::pair<std::string, Result<sandbox::SandboxHandle>> {
    std::string tree = templates::tree_key(spec.rootfs);
    return {std::move(tree), backend_.create(spec)};
  };
  auto made = co_await run_on(workers_, std::move(job));
  l->tree = std::move(made.first);
  auto& handle = made.second;
  if (!handle) {
    live_.erase(l->id);
    if (!p.volumes.empty()) co_await release_volumes(l->id);
    metrics_.create_failures.inc();
    COPPICE_LOG_RATE(warn, 5) << "create from " << tmpl->name << " failed: " << handle.error().to_string();
    co_return std::unexpected(std::move(handle.error()).context("create sandbox"));
  }
  l->handle = *handle;
  std::string socket = l->handle.envd_socket, token = l->token;
  Template t = *tmpl;
  auto commands = run_template_commands(std::move(socket), std::move(token), std::move(t));
  auto s = co_await std::move(commands);
  if (!s) {
    (void)transition(*l, SandboxState::kGone);
    co_await discard(l);
    metrics_.create_failures.inc();
    co_return std::unexpected(std::move(s.error()));
  }
  auto v = co_await hand_out(l, p, false, t0);
  if (!v) metrics_.create_failures.inc();
  co_return v;
}

// --- a sandbox that dies on its own ---

void SandboxManager::watch_exit(const std::shared_ptr<Live>& l, sys::UniqueFd fd) {
  if (!fd) return;
  l->exit_watch = std::make_unique<asio::posix::stream_descriptor>(owner_, fd.release());
  std::weak_ptr<Live> weak = l;
  l->exit_watch->async_wait(asio::posix::stream_descriptor::wait_read, [this, weak](const boost::system::error_code& ec) {
    if (ec) return;  // cancelled: killed by us, or the gateway stops
    auto live = weak.lock();
    if (!live) return;
    asio::co_spawn(owner_, on_envd_exit(live->id), asio::detached);
  });
}

asio::awaitable<void> SandboxManager::on_envd_exit(std::string id) {
  // Counted like the timers' loops: shutdown() waits for it (it resumes on
  // this object after the backend's work).
  ++loops_running_;
  ScopeExit done([this] { --loops_running_; });
  auto it = live_.find(id);
  if (it == live_.end() || !visible(it->second->state)) co_return;
  auto l = it->second;
  // How it ended, when we are its parent: peeked (WNOWAIT), the backend reaps.
  std::string how = "exited";
  if (l->exit_watch) {
    siginfo_t si{};
    int rc = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(l->exit_watch->native_handle()), &si,
                      WEXITED | WNOWAIT | WNOHANG);
    if (rc == 0 && si.si_pid == 0) {
      // Our own child, and it has not exited: a wake-up without an exit
      // (seen under heavy create/kill churn, ~1 in 1,000 sandboxes). Never
      // remove a sandbox on that: watch again through a fresh pidfd.
      COPPICE_LOG_RATE(warn, 5).sandbox(id) << "envd's exit watch woke while it runs; watching again";
      metrics_.envd_spurious_wakes.inc();
      l->exit_watch.reset();
      auto again = backend_.exit_fd(l->handle);
      if (again) {
        watch_exit(l, std::move(*again));
        co_return;
      }
    } else if (rc == 0) {
      how = si.si_code == CLD_EXITED ? "exited with status " + std::to_string(si.si_status)
                                     : std::string("was killed by signal ") + ::strsignal(si.si_status);
    }
  }
  l->exit_watch.reset();
  COPPICE_LOG(warn).sandbox(id) << "envd (pid " << l->handle.init_pid << ") " << how << ": removing the sandbox";
  metrics_.envd_errors.inc();
  // A pause or resume in flight finishes first (the kill would be a 409).
  asio::steady_timer wait(owner_);
  for (int tries = 0; tries < 600; ++tries) {
    auto cur = live_.find(id);
    if (cur == live_.end() || cur->second != l || !visible(l->state)) co_return;
    std::string sid = id, reason = "its envd exited";
    TeamScope any_team;  // the gateway's own removal, whoever owns it
    auto op = do_kill(std::move(sid), std::move(reason), std::move(any_team));
    auto r = co_await std::move(op);
    if (r || r.error().code() != ErrorCode::kFailedPrecondition) co_return;
    wait.expires_after(std::chrono::milliseconds(100));
    co_await wait.async_wait(asio::as_tuple(use_awaitable));
  }
  COPPICE_LOG(error).sandbox(id) << "envd exited and the sandbox could not be removed";
}

// --- read ---

asio::awaitable<Result<SandboxView>> SandboxManager::do_get(std::string id, TeamScope team) {
  auto l = find(id, team);
  if (!l) co_return std::unexpected(l.error());
  co_return view(**l);
}

asio::awaitable<std::vector<SandboxView>> SandboxManager::do_list(ListFilter f) {
  std::vector<SandboxView> out;
  for (const auto& [id, l] : live_) {
    if (!visible(l->state)) continue;
    if (f.team && l->team != *f.team) continue;
    if (!f.states.empty()) {
      bool match = false;
      for (auto s : f.states) match |= state_name(s) == state_name(l->state);
      if (!match) continue;
    }
    if (!f.template_id.empty() && l->template_id != f.template_id) continue;
    if (f.started_after && l->started_at < *f.started_after) continue;
    if (f.started_before && l->started_at > *f.started_before) continue;
    bool meta_ok = true;
    for (const auto& [k, v] : f.metadata) {
      auto it = l->metadata.find(k);
      if (it == l->metadata.end() || !it->is_string() || it->get<std::string>() != v) meta_ok = false;
    }
    if (!meta_ok) continue;
    out.push_back(view(*l));
  }
  std::sort(out.begin(), out.end(), [](const SandboxView& a, const SandboxView& b) {
    return std::tie(a.started_at, a.id) < std::tie(b.started_at, b.id);
  });
  co_return out;
}

// --- kill and timeouts ---

asio::awaitable<Status> SandboxManager::do_kill(std::string id, std::string reason, TeamScope team) {
  auto found = find(id, team);
  if (!found) co_return std::unexpected(found.error());
  auto l = *found;
  const SandboxState before = l->state;
  COPPICE_CO_TRY(transition(*l, SandboxState::kKilling));  // 409 while pausing/resuming
  l->exit_watch.reset();  // our own kill: no death to report (a failed one leaves it unwatched)
  auto job = [this, id] { return backend_.destroy(id); };
  auto r = co_await run_on(workers_, std::move(job));
  if (!r) {
    // Still there: the record stays so a later kill (or a restart) tries again.
    COPPICE_LOG_RATE(error, 5).sandbox(id) << "destroy failed: " << r.error().to_string();
    (void)transition(*l, before);
    co_return std::unexpected(std::move(r.error()));
  }
  auto op = [id](store::Store& st) {
    auto d = st.delete_sandbox(id);
    return (d || d.error().code() == ErrorCode::kNotFound) ? ok() : d;
  };
  auto w = co_await store_q_.write(std::move(op));
  if (!w) {
    COPPICE_LOG_RATE(error, 5).sandbox(id) << "store: delete: " << w.error().to_string();
  }
  (void)transition(*l, SandboxState::kGone);
  live_.erase(id);
  if (!l->pool.empty()) {
    std::lock_guard lk(pools_mu_);
    if (auto it = pools_.find(l->pool); it != pools_.end()) it->second->in_use.fetch_sub(1);
  }
  COPPICE_LOG(info).sandbox(id) << "killed (" << reason << ")";
  // The last sandbox on a deleted snapshot's files may just have gone.
  if (!l->lowers.empty()) asio::co_spawn(owner_, collect_layers(), asio::detached);
  // The last sandbox of a replaced template build may just have gone.
  if (auto t = templates_.get(l->template_id); !l->tree.empty() && (!t || t->tree != l->tree)) {
    asio::co_spawn(owner_, do_collect_retired_templates(), asio::detached);
  }
  co_return ok();
}

asio::awaitable<Status> SandboxManager::do_set_timeout(std::string id, int timeout_s, bool only_extend,
                                                       TeamScope team) {
  auto found = find(id, team);
  if (!found) co_return std::unexpected(found.error());
  Live& l = **found;
  auto want = Clock::now() + std::chrono::seconds(timeout_s);
  if (only_extend && want <= l.end_at) co_return ok();
  l.end_at = want;
  int64_t at = to_ms(want);
  store_q_.post([id, at](store::Store& st) { return st.update_end_at(id, at); }, "timeout of " + id);
  co_return ok();
}

// --- connect, pause, resume ---

asio::awaitable<Result<std::pair<SandboxView, bool>>> SandboxManager::do_connect(std::string id,
                                                                                  std::optional<int> timeout_s,
                                                                                  TeamScope team) {
  auto found = find(id, team);
  if (!found) co_return std::unexpected(found.error());
  if ((*found)->state == SandboxState::kPaused) {
    auto v = co_await do_resume(id, timeout_s, team);
    if (!v) co_return std::unexpected(v.error());
    co_return std::make_pair(*v, true);
  }
  if (timeout_s) (void)co_await do_set_timeout(id, *timeout_s, true, team);
  co_return std::make_pair(view(**found), false);
}

asio::awaitable<Status> SandboxManager::apply_network(const Live& l) {
  if (!net_ || !l.handle.net_addr) co_return ok();
  const uint32_t addr = l.handle.net_addr;
  const auto policy = net::compile(l.network);
  const uint64_t limit = l.network.egress_limit_bps;
  const sandbox::SandboxHandle h = l.handle;
  if (net::is_default(policy) && !limit && (l.state == SandboxState::kCreating || l.state == SandboxState::kPooled)) {
    // A new sandbox with E2B's default: no firewall change (Network::apply
    // only records its resolver policy), so a pool hit stays a pool hit.
    co_return net_->apply(addr, policy);
  }
  auto job = [this, addr, policy, limit, h]() -> Status {
    COPPICE_TRY_CTX(net_->apply(addr, policy), "network rules");
    if (limit) COPPICE_TRY(backend_.set_egress_limit(h, limit));
    return ok();
  };
  co_return co_await run_on(workers_, std::move(job));
}

asio::awaitable<Status> SandboxManager::do_update_network(std::string id, json body, TeamScope team) {
  auto found = find(id, team);
  if (!found) co_return std::unexpected(found.error());
  auto l = *found;
  auto next = net::parse_update(l->network, body);
  if (!next) co_return std::unexpected(next.error());
  if (!net_ || !l->handle.net_addr) {
    bool asks = next->internet != true || !next->allow_out.empty() || !next->deny_out.empty();
    if (asks || !net_) {
      co_return make_error(ErrorCode::kInvalidArgument,
                           "sandbox " + id + " has no network on this gateway (" +
                               (cfg_.network_off_reason.empty() ? std::string("--network off") : cfg_.network_off_reason) +
                               "): its rules cannot be changed");
    }
  }
  const net::NetworkConfig before = l->network;
  l->network = *next;
  auto applying = apply_network(*l);
  auto s = co_await std::move(applying);
  if (!s) {
    l->network = before;
    co_return std::unexpected(std::move(s.error()).context("update network of sandbox " + id));
  }
  auto rec = record(*l);
  auto op = [rec](store::Store& st) { return st.put_sandbox(rec, "network", "rules replaced"); };
  auto w = co_await store_q_.write(std::move(op));
  if (!w) co_return std::unexpected(std::move(w.error()).context("store sandbox"));
  co_return ok();
}

asio::awaitable<Status> SandboxManager::do_pause(std::string id, TeamScope team, bool memory) {
  auto found = find(id, team);
  if (!found) co_return std::unexpected(found.error());
  auto l = *found;
  if (!memory && !cfg_.pause_to_disk) {
    co_return make_error(ErrorCode::kInvalidArgument,
                         "pause without memory (files only) needs pause to disk: " + cfg_.pause_to_disk_off_reason);
  }
  COPPICE_CO_TRY(transition(*l, SandboxState::kPausing));
  if (!memory) {
    auto writing = pause_to_disk(l, false);
    co_return co_await std::move(writing);
  }
  std::string how = "frozen (memory held in RAM)";
  if (checkpoints_memory()) {
    // Written to disk with its memory; a checkpoint that fails leaves the
    // sandbox running as it was (criu's rollback), and it is frozen instead.
    auto writing = pause_to_disk(l, true);
    auto written = co_await std::move(writing);
    if (written) co_return ok();
    COPPICE_LOG(warn).sandbox(id) << "checkpoint failed, freezing instead: " << written.error().to_string();
    how = "frozen, the checkpoint failed: " + written.error().message();
    COPPICE_CO_TRY(transition(*l, SandboxState::kPausing));
  }
  auto job = [this, id] { return backend_.freeze(id); };
  auto r = co_await run_on(workers_, std::move(job));
  if (!r) {
    (void)transition(*l, SandboxState::kRunning);
    co_return std::unexpected(std::move(r.error()).context("pause"));
  }
  (void)transition(*l, SandboxState::kPaused);
  l->paused_at = Clock::now();
  auto rec = record(*l);
  auto op = [rec, how](store::Store& st) -> Status { return st.put_sandbox(rec, "paused", how); };
  auto w = co_await store_q_.write(std::move(op));
  if (!w) {
    COPPICE_LOG_RATE(error, 5).sandbox(id) << "store: pause: " << w.error().to_string();
  }
  co_return ok();
}

asio::awaitable<Result<SandboxView>> SandboxManager::do_resume(std::string id, std::optional<int> timeout_s,
                                                               TeamScope team) {
  auto found = find(id, team);
  if (!found) co_return std::unexpected(found.error());
  auto l = *found;
  COPPICE_CO_TRY(transition(*l, SandboxState::kResuming));
  if (l->on_disk) {
    auto starting = resume_from_disk(l);
    auto started = co_await std::move(starting);
    if (!started) {
      (void)transition(*l, SandboxState::kPaused);
      co_return std::unexpected(std::move(started.error()).context("resume"));
    }
  } else {
    auto job = [this, id] { return backend_.thaw(id); };
    auto r = co_await run_on(workers_, std::move(job));
    if (!r) {
      (void)transition(*l, SandboxState::kPaused);
      co_return std::unexpected(std::move(r.error()).context("resume"));
    }
  }
  (void)transition(*l, SandboxState::kRunning);
  auto want = Clock::now() + std::chrono::seconds(timeout_s.value_or(cfg_.default_timeout_s));
  if (want > l->end_at) l->end_at = want;
  int64_t end = to_ms(l->end_at);
  auto op = [id, end](store::Store& st) -> Status {
    COPPICE_TRY(st.update_state(id, store::SandboxState::kRunning));
    COPPICE_TRY(st.update_end_at(id, end));
    return st.append_event(id, "resumed", "");
  };
  auto w = co_await store_q_.write(std::move(op));
  if (!w) {
    COPPICE_LOG_RATE(error, 5).sandbox(id) << "store: resume: " << w.error().to_string();
  }
  co_return view(*l);
}

// --- resize ---

asio::awaitable<Result<SandboxView>> SandboxManager::do_resize(std::string id, std::optional<int> cpu_count,
                                                               std::optional<int> memory_mb, TeamScope team) {
  auto found = find(id, team);
  if (!found) co_return std::unexpected(found.error());
  auto l = *found;
  if (l->state != SandboxState::kRunning && l->state != SandboxState::kPaused) {
    co_return make_error(ErrorCode::kFailedPrecondition,
                         "sandbox " + id + " is " + std::string(state_label(l->state)) + "; try again");
  }
  if (l->resizing) co_return make_error(ErrorCode::kFailedPrecondition, "sandbox " + id + " is being resized; try again");
  const int cpu = cpu_count.value_or(l->cpu_count);
  const int mem = memory_mb.value_or(l->memory_mb);
  l->resizing = true;
  Live* resizing = l.get();  // `l` outlives the guard; a plain pointer keeps the frame simple for g++ 12
  ScopeExit done([resizing] { resizing->resizing = false; });
  // Paused to disk: nothing runs; the new limits apply at its resume.
  const bool on_disk = l->on_disk;
  auto job = [this, id, cpu, mem, on_disk]() -> Status {
    if (on_disk) return ok();
    return backend_.set_limits(id, cpu * 1000, static_cast<uint64_t>(mem) << 20);
  };
  auto r = co_await run_on(workers_, std::move(job));
  // Killed (or gone) while the kernel work ran: its record must not come
  // back, and a failure to write to its vanished cgroups is no error of ours.
  if (auto again = find(id, std::nullopt); !again || *again != l) {
    co_return make_error(ErrorCode::kNotFound, "sandbox " + id + " not found");
  }
  if (!r) co_return std::unexpected(std::move(r.error()).context("resize sandbox " + id));
  l->cpu_count = cpu;
  l->memory_mb = mem;
  auto rec = record(*l);
  std::string detail = "cpu " + std::to_string(cpu) + ", memory " + std::to_string(mem) + " MiB";
  COPPICE_LOG(info).sandbox(id) << "resized: " << detail;
  auto op = [rec, detail](store::Store& st) { return st.put_sandbox(rec, "resized", detail); };
  auto w = co_await store_q_.write(std::move(op));
  if (!w) co_return std::unexpected(std::move(w.error()).context("store sandbox"));
  co_return view(*l);
}

// --- metrics ---

void SandboxManager::sample_into(Live& l, const sandbox::Usage& u, Clock::time_point at) {
  auto now = std::chrono::steady_clock::now();
  double pct = 0;
  if (l.last_cpu_at.time_since_epoch().count() != 0) {
    double wall_ns =
        static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(now - l.last_cpu_at).count());
    if (wall_ns > 0 && u.cpu_ns >= l.last_cpu_ns)
      pct = 100.0 * static_cast<double>(u.cpu_ns - l.last_cpu_ns) / (wall_ns * std::max(1, l.cpu_count));
  } else {
    double life_ns =
        static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(at - l.started_at).count());
    if (life_ns > 0) pct = 100.0 * static_cast<double>(u.cpu_ns) / (life_ns * std::max(1, l.cpu_count));
  }
  l.last_cpu_ns = u.cpu_ns;
  l.last_cpu_at = now;
  if (u.disk_bytes) l.last_disk_bytes = u.disk_bytes;
  l.samples.push_back(MetricSample{at, l.cpu_count, std::clamp(pct, 0.0, 100.0), u.mem_bytes,
                                   u.mem_limit ? u.mem_limit : static_cast<uint64_t>(l.memory_mb) << 20,
                                   l.last_disk_bytes, static_cast<uint64_t>(l.disk_mb) << 20, u.net_rx_bytes,
                                   u.net_tx_bytes, u.net_rx_packets, u.net_tx_packets});
  while (l.samples.size() > kMetricsKept) l.samples.pop_front();
}

asio::awaitable<Result<std::vector<MetricSample>>> SandboxManager::do_metrics(std::string id,
                                                                              std::optional<Clock::time_point> start,
                                                                              std::optional<Clock::time_point> end,
                                                                              TeamScope team) {
  auto found = find(id, team);
  if (!found) co_return std::unexpected(found.error());
  auto l = *found;
  auto now = Clock::now();
  if (start && end && *start > *end)
    co_return make_error(ErrorCode::kInvalidArgument, "start must not be after end");
  // A range that reaches now gets a fresh sample (the disk figure is
  // measured only here, not by the sampler). It replaces the newest kept one
  // when that is under a second old, so frequent queries do not flood the ring.
  bool reaches_now = !end || *end >= now - std::chrono::seconds(1);
  if (reaches_now && l->state == SandboxState::kRunning) {
    auto job = [this, id] { return backend_.usage(id, true); };
    auto u = co_await run_on(workers_, std::move(job));
    if (!u) co_return std::unexpected(u.error());
    if (auto again = find(id, std::nullopt); again && *again == l) {
      auto at = Clock::now();
      if (!l->samples.empty() && at - l->samples.back().at < std::chrono::seconds(1)) l->samples.pop_back();
      sample_into(*l, *u, at);
    }
  }
  std::vector<MetricSample> out;
  for (const auto& s : l->samples) {
    if (start && s.at < *start) continue;
    if (end && s.at > *end) continue;
    out.push_back(s);
  }
  co_return out;
}

}  // namespace coppice::core
