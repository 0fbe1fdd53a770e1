#include "core/sandbox_manager.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "common/log.h"
#include "core/ids.h"
#include "sys/fd.h"

namespace coppice::core {

namespace fs = std::filesystem;
using asio::use_awaitable;

// The envd protocol version reported to the SDK (see envd/envd.h).
static constexpr std::string_view kEnvdVersion = "0.6.13";

struct SandboxManager::Live {
  std::string id;
  std::string template_id;
  SandboxState state = SandboxState::kCreating;
  std::string token;
  json metadata = json::object();
  json env_vars = json::object();
  int cpu_count = 1, memory_mb = 512, disk_mb = 1024;
  Clock::time_point started_at, end_at;
  std::string state_dir;
  sandbox::SandboxHandle handle;
  // Previous CPU sample, for the utilisation between two metric reads.
  uint64_t last_cpu_ns = 0;
  std::chrono::steady_clock::time_point last_cpu_at;
};

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
                               metrics::GatewayMetrics& metrics)
    : cfg_(cfg), store_(store), backend_(backend), templates_(templates), workers_(workers), metrics_(metrics) {}

SandboxManager::~SandboxManager() = default;

// Runs f on a worker thread and resumes the caller on its own executor. Not a
// coroutine itself: g++ 12 destroys lambda captures moved into coroutine
// frames twice, so the hand-off is a plain asynchronous operation.
template <typename F>
asio::awaitable<std::invoke_result_t<F>> SandboxManager::on_worker(F f) {
  using R = std::invoke_result_t<F>;
  return asio::async_initiate<const asio::use_awaitable_t<>, void(R)>(
      [this](auto handler, F fn) {
        asio::post(workers_, [fn = std::move(fn), handler = std::move(handler)]() mutable {
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
    if (l->state == SandboxState::kCreating || l->state == SandboxState::kKilling) continue;
    if (state_name(l->state) == "paused") ++c.paused;
    else ++c.running;
  }
  return c;
}

Result<std::shared_ptr<SandboxManager::Live>> SandboxManager::find(const std::string& id) const {
  std::lock_guard lk(mu_);
  auto it = live_.find(id);
  if (it == live_.end() || it->second->state == SandboxState::kCreating || it->second->state == SandboxState::kKilling)
    return make_error(ErrorCode::kNotFound, "sandbox " + id + " not found");
  return it->second;
}

SandboxView SandboxManager::view(const Live& l) const {
  return SandboxView{l.id,        l.template_id, "",           l.state,      l.token,
                     l.metadata,  l.cpu_count,   l.memory_mb,  l.disk_mb,    l.started_at,
                     l.end_at,    std::string(kEnvdVersion)};
}

Status SandboxManager::persist(const Live& l) {
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
  return store_.put_sandbox(r);
}

asio::awaitable<Status> SandboxManager::init_envd(const Live& l, const std::map<std::string, std::string>& env_vars) {
  json body{{"envVars", env_vars}, {"defaultUser", "user"}, {"defaultWorkdir", "/home/user"}};
  if (!l.token.empty()) body["accessToken"] = l.token;
  http::Endpoint ep{l.handle.envd_socket, "", 0};
  const http::Fields headers{{"Content-Type", "application/json"}};
  auto r = co_await http::fetch(ep, http::bhttp::verb::post, "/init", headers, body.dump(), std::chrono::seconds(5));
  if (!r) co_return std::unexpected(std::move(r.error()).context("envd /init"));
  if (r->status != 204 && r->status != 200)
    co_return make_error(ErrorCode::kInternal, "envd /init answered " + std::to_string(r->status) + ": " + r->body);
  co_return ok();
}

asio::awaitable<Result<SandboxView>> SandboxManager::create(CreateParams p) {
  auto tmpl = templates_.get(p.template_id);
  if (!tmpl) co_return std::unexpected(tmpl.error());
  if (tmpl->backend != "ns")
    co_return make_error(ErrorCode::kUnimplemented, "template '" + p.template_id + "' needs the " + tmpl->backend +
                                                        " backend, which this gateway does not run yet");
  int timeout = p.timeout_s.value_or(cfg_.default_timeout_s);
  auto l = std::make_shared<Live>();
  l->template_id = p.template_id;
  l->token = p.secure ? new_token() : "";
  l->metadata = p.metadata;
  l->env_vars = json(p.env_vars);
  l->cpu_count = tmpl->cpu_count > 0 ? tmpl->cpu_count : cfg_.default_cpu_count;
  l->memory_mb = tmpl->memory_mb > 0 ? tmpl->memory_mb : cfg_.default_memory_mb;
  l->disk_mb = cfg_.default_disk_mb;
  {
    std::lock_guard lk(mu_);
    if (stopping_) co_return make_error(ErrorCode::kUnavailable, "the gateway is shutting down");
    do l->id = new_sandbox_id();
    while (live_.count(l->id));
    live_[l->id] = l;  // reserved while Creating: invisible to lookups
  }
  l->state_dir = cfg_.state_dir + "/sandboxes/" + l->id;
  sandbox::SandboxSpec spec;
  spec.id = l->id;
  spec.rootfs = tmpl->rootfs;
  spec.ro_binds = tmpl->ro_binds;
  spec.state_dir = l->state_dir;
  spec.envd_path = cfg_.envd_path;
  spec.limits.cpu_millicores = l->cpu_count * 1000;
  spec.limits.memory_bytes = static_cast<uint64_t>(l->memory_mb) << 20;
  auto unreserve = [&] {
    std::lock_guard lk(mu_);
    live_.erase(l->id);
  };
  auto t0 = std::chrono::steady_clock::now();
  auto job1 = [this, spec] { return backend_.create(spec); };
  auto handle = co_await on_worker(std::move(job1));
  if (!handle) {
    unreserve();
    metrics_.create_failures.inc();
    COPPICE_LOG_RATE(warn, 5).sandbox(l->id) << "create failed: " << handle.error().to_string();
    co_return std::unexpected(std::move(handle.error()).context("create sandbox"));
  }
  l->handle = *handle;
  auto fail = [&](Error e) -> asio::awaitable<Result<SandboxView>> {
    auto id = l->id;
    auto job2 = [this, id] { return backend_.destroy(id); };
    co_await on_worker(std::move(job2));
    unreserve();
    metrics_.create_failures.inc();
    COPPICE_LOG_RATE(warn, 5).sandbox(id) << "create failed: " << e.to_string();
    co_return std::unexpected(std::move(e));
  };
  auto t1 = std::chrono::steady_clock::now();
  if (auto s = co_await init_envd(*l, p.env_vars); !s) {
    metrics_.envd_errors.inc();
    co_return co_await fail(std::move(s.error()));
  }
  auto t2 = std::chrono::steady_clock::now();
  l->started_at = Clock::now();
  l->end_at = l->started_at + std::chrono::seconds(timeout);
  l->state = SandboxState::kRunning;
  if (auto s = persist(*l); !s) co_return co_await fail(std::move(s.error()).context("store sandbox"));
  (void)store_.append_event(l->id, "created", "template " + l->template_id);
  // Every create builds a sandbox from scratch: a pool miss (see GatewayMetrics).
  metrics_.create_seconds_miss.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
  COPPICE_LOG(info).sandbox(l->id) << "created from " << l->template_id << ", pid " << l->handle.init_pid
                                   << " (backend " << ms(t0, t1) << " ms, init " << ms(t1, t2) << " ms, store "
                                   << ms(t2, std::chrono::steady_clock::now()) << " ms)";
  std::lock_guard lk(mu_);
  co_return view(*l);
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
    if (l->state == SandboxState::kCreating || l->state == SandboxState::kKilling) continue;
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
    if (it == live_.end() || it->second->state == SandboxState::kCreating ||
        it->second->state == SandboxState::kKilling)
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
  if (it == live_.end() || it->second->state == SandboxState::kCreating || it->second->state == SandboxState::kKilling)
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
