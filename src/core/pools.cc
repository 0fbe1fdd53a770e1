// Warm pools: per template, sandboxes started ahead of demand (state
// kPooled, invisible), kept by a Refiller (common/refiller.h: the refill
// policy shared with the backend's user namespaces and host spares), taken
// by create() in O(1).
#include <future>
#include <set>
#include <thread>

#include "common/log.h"
#include "core/offload.h"
#include "core/sandbox_manager.h"
#include "core/sandbox_manager_internal.h"

namespace coppice::core {

using asio::use_awaitable;

void SandboxManager::wait_quiet() const {
  // A burst of creates empties a pool; it fills again in the gaps (no
  // control-plane request under way, none for kQuiet). Under
  // unbroken load a refill still starts within kMaxDefer (and below the
  // low mark refills are urgent and do not wait at all).
  constexpr auto kQuiet = std::chrono::milliseconds(10);
  constexpr auto kMaxDefer = std::chrono::milliseconds(250);
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    const auto last = std::chrono::steady_clock::time_point(
        std::chrono::steady_clock::duration(last_activity_ns_.load(std::memory_order_relaxed)));
    const bool busy = control_in_flight_.load(std::memory_order_relaxed) > 0;
    if ((!busy && now - last >= kQuiet) || now - start >= kMaxDefer) return;
    const auto left = busy ? std::chrono::steady_clock::duration(kQuiet) : kQuiet - (now - last);
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(left, kMaxDefer - (now - start)));
  }
}

std::optional<SandboxManager::Pooled> SandboxManager::make_pooled(const std::string& template_id) {
  auto tmpl = templates_.get(template_id);
  if (!tmpl) {
    COPPICE_LOG_RATE(warn, 5) << "pool " << template_id << ": " << tmpl.error().to_string();
    return std::nullopt;
  }
  auto l = new_live(*tmpl, true);
  l->state = SandboxState::kPooled;
  l->pool = template_id;
  EnvdInit init;
  init.access_token = l->token;
  init.env_vars = tmpl->env;
  l->tree = templates::tree_key(tmpl->rootfs);
  auto h = backend_.create(spec_for(*l, *tmpl, init));
  if (!h) {
    COPPICE_LOG_RATE(warn, 5) << "pool " << template_id << ": " << h.error().to_string();
    return std::nullopt;
  }
  l->handle = *h;
  // The template's commands talk to envd asynchronously, on the io threads;
  // this background thread waits for them.
  auto fut = asio::co_spawn(io_, run_template_commands(l->handle.envd_socket, l->token, *tmpl), asio::use_future);
  Status s = make_error(ErrorCode::kDeadlineExceeded, "template commands did not finish");
  if (fut.wait_for(std::chrono::seconds(90)) == std::future_status::ready) {
    try {
      s = fut.get();
    } catch (const std::exception& e) {
      s = make_error(ErrorCode::kInternal, std::string("template commands: ") + e.what());
    }
  }
  if (!s) {
    COPPICE_LOG_RATE(warn, 5) << "pool " << template_id << ": " << s.error().to_string();
    if (auto d = backend_.destroy(l->id); !d) {
      COPPICE_LOG_RATE(error, 5).sandbox(l->id) << "remove failed: " << d.error().to_string();
    }
    return std::nullopt;
  }
  return Pooled{std::move(l)};
}

void SandboxManager::discard_pooled(Pooled& p) {
  if (!p.live) return;
  if (auto d = backend_.destroy(p.live->id); !d) {
    COPPICE_LOG_RATE(error, 5).sandbox(p.live->id) << "remove failed: " << d.error().to_string();
  }
  p.live.reset();
}

SandboxManager::Pool& SandboxManager::pool_for(const std::string& template_id) {
  std::lock_guard lk(pools_mu_);
  auto& slot = pools_[template_id];
  if (slot) return *slot;
  slot = std::make_unique<Pool>();
  slot->template_id = template_id;
  RefillPolicy policy;
  policy.target = 0;
  policy.max_parallel = std::max<size_t>(1, cfg_.pool_refill_parallel);
  auto post = [this](std::function<void()> job) { background_.post(std::move(job)); };
  auto make = [this, template_id] { return make_pooled(template_id); };
  auto discard = [this](Pooled& p) { discard_pooled(p); };
  auto gate = [this] { wait_quiet(); };
  slot->refiller = std::make_unique<Refiller<Pooled>>(post, policy, make, discard, gate);
  slot->refiller->start();
  return *slot;
}

std::shared_ptr<SandboxManager::Live> SandboxManager::take_pooled(const Template& tmpl) {
  Pool* pool = nullptr;
  {
    std::lock_guard lk(pools_mu_);
    auto it = pools_.find(tmpl.name);
    if (it == pools_.end()) return nullptr;
    pool = it->second.get();
  }
  const std::string build = build_of(tmpl);
  for (;;) {
    auto p = pool->refiller->take();
    if (!p) return nullptr;
    auto l = std::move(p->live);
    // Made from an older build of the template (it was rebuilt since), or an
    // id that a create took meanwhile (never seen: 36^20 of them): removed.
    if (l->build != build || live_.count(l->id)) {
      auto stale = std::make_shared<Pooled>(Pooled{std::move(l)});
      background_.post([this, stale] { discard_pooled(*stale); });
      continue;
    }
    (void)transition(*l, SandboxState::kCreating);
    live_[l->id] = l;
    pool->in_use.fetch_add(1);
    return l;
  }
}

PoolView SandboxManager::pool_view(const Pool& p) const {
  PoolView v;
  v.template_id = p.template_id;
  v.target = static_cast<int>(p.refiller->target());
  v.available = static_cast<int>(p.refiller->ready());
  v.filling = static_cast<int>(p.refiller->in_flight());
  v.in_use = p.in_use.load();
  std::tie(v.hits, v.misses) = p.refiller->hits_misses();
  return v;
}

asio::awaitable<Result<PoolView>> SandboxManager::do_warm_pool(std::string template_id, int count) {
  if (count < 0 || count > kMaxPoolTarget)
    co_return make_error(ErrorCode::kInvalidArgument, "count must be between 0 and " + std::to_string(kMaxPoolTarget) +
                                                          ", got " + std::to_string(count));
  auto tmpl = templates_.get(template_id);
  if (!tmpl) co_return std::unexpected(tmpl.error());
  if (tmpl->backend != "ns")
    co_return make_error(ErrorCode::kInvalidArgument, "template '" + template_id + "' needs the " + tmpl->backend +
                                                          " backend, which this gateway does not run");
  if (stopping_) co_return make_error(ErrorCode::kUnavailable, "the gateway is shutting down");
  Pool& p = pool_for(template_id);
  // set_target discards surplus ready sandboxes itself: off the owner.
  Refiller<Pooled>* r = p.refiller.get();
  auto job = [r, count] {
    r->set_target(static_cast<size_t>(count));
    return 0;
  };
  co_await run_on(workers_, std::move(job));
  co_return pool_view(p);
}

asio::awaitable<Result<PoolView>> SandboxManager::do_drain_pool(std::string template_id) {
  Pool* pool = nullptr;
  {
    std::lock_guard lk(pools_mu_);
    if (auto it = pools_.find(template_id); it != pools_.end()) pool = it->second.get();
  }
  if (!pool) {
    auto t = templates_.get(template_id);
    if (!t) co_return std::unexpected(t.error());
    PoolView v;
    v.template_id = template_id;
    co_return v;
  }
  auto out = std::make_shared<std::vector<Pooled>>(pool->refiller->drain());
  auto job = [this, out] {
    for (auto& p : *out) discard_pooled(p);
    return out->size();
  };
  size_t n = co_await run_on(workers_, std::move(job));
  COPPICE_LOG(info) << "pool " << template_id << ": drained " << n << " sandboxes";
  co_return pool_view(*pool);
}

std::vector<PoolView> SandboxManager::pools() const {
  std::vector<PoolView> out;
  std::lock_guard lk(pools_mu_);
  for (const auto& [name, p] : pools_) out.push_back(pool_view(*p));
  return out;
}

}  // namespace coppice::core
