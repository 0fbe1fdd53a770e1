// Warm pools: per template, sandboxes started ahead of demand (state kPooled,
// invisible), taken by create() in O(1) and refilled in the background.
#include <set>

#include "common/log.h"
#include "core/ids.h"
#include "core/sandbox_manager.h"
#include "core/sandbox_manager_internal.h"

namespace coppice::core {

using asio::use_awaitable;

std::shared_ptr<SandboxManager::Live> SandboxManager::take_pooled(const Template& tmpl, bool secure) {
  // Pooled sandboxes carry a token from the start; one without is made cold.
  if (!secure) return nullptr;
  std::shared_ptr<Live> l;
  {
    std::lock_guard lk(mu_);
    auto it = pools_.find(tmpl.name);
    if (it == pools_.end() || it->second.ready.empty()) return nullptr;
    l = it->second.ready.front();
    it->second.ready.pop_front();
    l->state = SandboxState::kCreating;
    l->pool = tmpl.name;
  }
  kick_pool(tmpl.name);
  return l;
}

void SandboxManager::kick_pool(const std::string& template_id) {
  {
    std::lock_guard lk(mu_);
    auto& pool = pools_[template_id];
    if (pool.filler_running || stopping_ || static_cast<int>(pool.ready.size()) >= pool.target) return;
    pool.filler_running = true;
  }
  asio::co_spawn(io_, fill_pool(template_id), asio::detached);
}

asio::awaitable<void> SandboxManager::quiet_for(asio::steady_timer& timer) {
  // A burst of creates empties a pool; it fills again in the gaps. Under
  // unbroken load each refill still starts within kMaxDefer.
  constexpr auto kQuiet = std::chrono::milliseconds(10);
  constexpr auto kMaxDefer = std::chrono::milliseconds(250);
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    const auto last = std::chrono::steady_clock::time_point(
        std::chrono::steady_clock::duration(last_activity_ns_.load(std::memory_order_relaxed)));
    if (now - last >= kQuiet || now - start >= kMaxDefer) co_return;
    timer.expires_after(std::min<std::chrono::steady_clock::duration>(kQuiet - (now - last), kMaxDefer - (now - start)));
    co_await timer.async_wait(asio::as_tuple(use_awaitable));
  }
}

asio::awaitable<void> SandboxManager::fill_pool(std::string template_id) {
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer backoff(ex);
  int failures = 0;
  for (;;) {
    co_await quiet_for(backoff);
    {
      std::lock_guard lk(mu_);
      auto& pool = pools_[template_id];
      if (stopping_ || static_cast<int>(pool.ready.size()) >= pool.target) {
        pool.filler_running = false;
        co_return;
      }
      ++pool.filling;
    }
    auto tmpl = templates_.get(template_id);
    Result<std::shared_ptr<Live>> l = std::unexpected(Error(ErrorCode::kInternal, ""));
    EnvdInit init;
    init.access_token = new_token();
    if (tmpl) init.env_vars = tmpl->env;
    if (tmpl) l = co_await start_sandbox(*tmpl, SandboxState::kPooled, refill_, init);
    else l = std::unexpected(tmpl.error());
    bool keep = false;
    {
      std::lock_guard lk(mu_);
      auto& pool = pools_[template_id];
      --pool.filling;
      if (l && !stopping_ && static_cast<int>(pool.ready.size()) < pool.target) {
        pool.ready.push_back(*l);
        keep = true;
      }
    }
    if (l && !keep) co_await discard(*l, refill_);
    if (l) {
      failures = 0;
      continue;
    }
    // A template that cannot start must not spin: back off, up to 30 s.
    ++failures;
    COPPICE_LOG_RATE(warn, 5) << "pool " << template_id << ": " << l.error().to_string();
    backoff.expires_after(std::chrono::milliseconds(std::min(30000, 250 << std::min(failures, 7))));
    co_await backoff.async_wait(asio::as_tuple(use_awaitable));
  }
}

PoolView SandboxManager::pool_view_locked(const std::string& template_id) const {
  PoolView v;
  v.template_id = template_id;
  if (auto it = pools_.find(template_id); it != pools_.end()) {
    v.target = it->second.target;
    v.available = static_cast<int>(it->second.ready.size());
    v.filling = it->second.filling;
  }
  for (const auto& [id, l] : live_)
    if (l->pool == template_id && visible(l->state))
      ++v.in_use;
  return v;
}

Result<PoolView> SandboxManager::warm_pool(const std::string& template_id, int count) {
  if (count < 0 || count > kMaxPoolTarget)
    return make_error(ErrorCode::kInvalidArgument,
                      "count must be between 0 and " + std::to_string(kMaxPoolTarget) + ", got " + std::to_string(count));
  auto tmpl = templates_.get(template_id);
  if (!tmpl) return std::unexpected(tmpl.error());
  if (tmpl->backend != "ns")
    return make_error(ErrorCode::kInvalidArgument, "template '" + template_id + "' needs the " + tmpl->backend +
                                                       " backend, which this gateway does not run");
  {
    std::lock_guard lk(mu_);
    if (stopping_) return make_error(ErrorCode::kUnavailable, "the gateway is shutting down");
    pools_[template_id].target = count;
  }
  kick_pool(template_id);
  std::lock_guard lk(mu_);
  return pool_view_locked(template_id);
}

asio::awaitable<Result<PoolView>> SandboxManager::drain_pool(const std::string& template_id) {
  std::deque<std::shared_ptr<Live>> out;
  {
    std::lock_guard lk(mu_);
    auto it = pools_.find(template_id);
    if (it == pools_.end()) {
      auto t = templates_.get(template_id);
      if (!t) co_return std::unexpected(t.error());
      co_return pool_view_locked(template_id);
    }
    it->second.target = 0;
    out.swap(it->second.ready);
  }
  for (auto& l : out) co_await discard(l, workers_);
  COPPICE_LOG(info) << "pool " << template_id << ": drained " << out.size() << " sandboxes";
  std::lock_guard lk(mu_);
  co_return pool_view_locked(template_id);
}

std::vector<PoolView> SandboxManager::pools() const {
  std::vector<PoolView> out;
  std::lock_guard lk(mu_);
  std::set<std::string> names;
  for (const auto& [name, p] : pools_) names.insert(name);
  for (const auto& [id, l] : live_)
    if (!l->pool.empty()) names.insert(l->pool);
  for (const auto& n : names) out.push_back(pool_view_locked(n));
  return out;
}

asio::awaitable<void> SandboxManager::shutdown() {
  std::vector<std::shared_ptr<Live>> out;
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
    if (reaper_timer_) reaper_timer_->cancel();
    for (auto& [name, p] : pools_) {
      p.target = 0;
      for (auto& l : p.ready) out.push_back(l);
      p.ready.clear();
    }
  }
  for (auto& l : out) co_await discard(l, workers_);
  if (!out.empty()) {
    COPPICE_LOG(info) << "pools drained: " << out.size() << " sandboxes removed";
  }
  // Refills in flight see stopping_ and remove what they started; wait for them.
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer t(ex);
  for (int i = 0; i < 600; ++i) {
    {
      std::lock_guard lk(mu_);
      bool busy = false;
      for (auto& [name, p] : pools_) busy |= p.filler_running;
      if (!busy) break;
    }
    t.expires_after(std::chrono::milliseconds(50));
    co_await t.async_wait(asio::as_tuple(use_awaitable));
  }
}

}  // namespace coppice::core
