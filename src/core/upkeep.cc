// The owner's background duties: recovery at start, the TTL reaper, the
// usage sampler, starting the configured pools and shutting down.
#include <sys/stat.h>

#include <algorithm>
#include <set>

#include "common/log.h"
#include "common/scope_exit.h"
#include "core/offload.h"
#include "core/sandbox_manager.h"
#include "core/sandbox_manager_internal.h"
#include "sys/fsutil.h"

namespace coppice::core {

using asio::use_awaitable;

namespace {
Clock::time_point from_ms(int64_t ms) { return Clock::time_point(std::chrono::milliseconds(ms)); }
}  // namespace

// A Live for a stored sandbox (state Creating; no handle yet).
std::shared_ptr<SandboxManager::Live> SandboxManager::live_from_record(const store::SandboxRecord& r) const {
  auto l = std::make_shared<Live>();
  l->id = r.id;
  l->template_id = r.template_id;
  l->team = r.team;
  l->state = SandboxState::kCreating;
  l->token = r.envd_access_token;
  if (auto t = r.extra.find("trafficAccessToken"); t != r.extra.end() && t->is_string())
    l->traffic_token = t->get<std::string>();
  if (auto m = r.extra.find("maskRequestHost"); m != r.extra.end() && m->is_string())
    l->mask_host = m->get<std::string>();
  if (auto h = r.extra.find("httpsPorts"); h != r.extra.end() && h->is_array()) {
    for (const auto& port : *h)
      if (port.is_number_unsigned() && port.get<uint64_t>() >= 1 && port.get<uint64_t>() <= 65535)
        l->https_ports.push_back(static_cast<uint16_t>(port.get<uint64_t>()));
  }
  l->metadata = r.metadata;
  l->env_vars = r.env_vars;
  l->cpu_count = static_cast<int>(r.cpu_count);
  l->memory_mb = static_cast<int>(r.memory_mb);
  l->disk_mb = static_cast<int>(r.disk_size_mb);
  l->started_at = from_ms(r.started_at);
  l->end_at = from_ms(r.end_at);
  l->state_dir = r.state_dir;
  l->tree = r.template_tree;
  if (auto it = r.extra.find("network"); it != r.extra.end()) {
    if (auto c = net::from_store_json(*it); c) l->network = *c;
  }
  if (auto it = r.extra.find("lifecycle"); it != r.extra.end()) l->lifecycle = lifecycle_from_store_json(*it);
  // Paused before the restart: its retention goes on from then (a record
  // from before retention was kept counts from now).
  if (auto it = r.extra.find("pausedAt"); it != r.extra.end() && it->is_number_integer()) {
    l->paused_at = from_ms(it->get<int64_t>());
  } else if (r.state == store::SandboxState::kPaused) {
    l->paused_at = Clock::now();
  }
  if (auto it = r.extra.find("lowerLayers"); it != r.extra.end()) l->lowers = layers_from_json(*it);
  if (auto it = r.extra.find("lineage"); it != r.extra.end() && it->is_object()) l->lineage = *it;
  return l;
}

asio::awaitable<Status> SandboxManager::do_recover() {
  auto records = store_.list_sandboxes(true);
  if (!records) co_return std::unexpected(std::move(records.error()).context("recover: list sandboxes"));
  auto list_job = [this] { return backend_.list_existing(); };
  auto existing = co_await run_on(workers_, std::move(list_job));
  std::vector<std::string> kernel_ids = existing ? *existing : std::vector<std::string>{};
  std::set<std::string> adopted;
  auto now = Clock::now();
  for (auto& r : *records) {
    bool expired = r.state == store::SandboxState::kRunning && from_ms(r.end_at) <= now;
    bool killed = r.state == store::SandboxState::kKilled;
    const std::string id = r.id;
    // Paused to disk: no processes to adopt; its uid range is reserved
    // again and it waits, paused, for a resume.
    const auto disk = r.extra.find("pausedToDisk");
    const bool on_disk = r.state == store::SandboxState::kPaused && disk != r.extra.end() && disk->is_object();
    const std::string images = r.state_dir.empty() ? std::string() : r.state_dir + "/checkpoint";
    if (!killed && on_disk) {
      const uint32_t host_root = disk->value("hostRoot", 0u);
      // A resume cut short by the restart left a half-made sandbox: its
      // processes and cgroups go, its state (and checkpoint) stays.
      if (std::find(kernel_ids.begin(), kernel_ids.end(), id) != kernel_ids.end()) {
        auto clear_job = [this, id] { return backend_.suspend(id); };
        if (auto cleared = co_await run_on(workers_, std::move(clear_job)); !cleared) {
          COPPICE_LOG(warn).sandbox(id) << "a resume cut short: " << cleared.error().to_string();
        } else {
          COPPICE_LOG(info).sandbox(id) << "a resume was cut short by the restart: paused again";
        }
      }
      auto reserve_job = [this, id, host_root] { return backend_.reserve_suspended(id, host_root); };
      auto reserved = co_await run_on(workers_, std::move(reserve_job));
      if (reserved) {
        auto l = live_from_record(r);
        l->on_disk = true;
        l->disk_memory = disk->value("memory", false);
        l->disk_host_root = host_root;
        live_[l->id] = l;
        (void)transition(*l, SandboxState::kRunning);
        (void)transition(*l, SandboxState::kPausing);
        (void)transition(*l, SandboxState::kPaused);
        adopted.insert(l->id);
        COPPICE_LOG(info).sandbox(l->id) << "paused to disk: kept after restart";
        continue;
      }
      COPPICE_LOG(warn).sandbox(id) << "paused to disk but its uid range is taken, removing it: "
                                    << reserved.error().to_string();
    } else if (!expired && !killed) {
      auto dir = r.state_dir;
      auto adopt_job = [this, id, dir] { return backend_.adopt(id, dir); };
      auto h = co_await run_on(workers_, std::move(adopt_job));
      if (h && !images.empty() && sys::path_exists(images)) {
        // A pause cut short before its sandbox was stopped: it goes on
        // running (criu may have left it stopped), the checkpoint is dropped.
        auto go_on = [this, id, images]() -> Status {
          COPPICE_TRY(backend_.continue_after_checkpoint(id));
          return sys::remove_tree(images);
        };
        auto went = co_await run_on(workers_, std::move(go_on));
        if (!went) {
          COPPICE_LOG(warn).sandbox(id) << "a pause cut short: " << went.error().to_string();
        } else {
          COPPICE_LOG(info).sandbox(id) << "a pause was cut short by the restart: running on";
        }
      }
      if (h && !(!images.empty() && sys::path_exists(images))) {
        // A snapshot or fork cut short may have left it stopped (criu
        // --leave-stopped while the files were taken): it goes on.
        auto go_on = [this, id]() { return backend_.continue_after_checkpoint(id, /*only_if_held=*/true); };
        if (auto went = co_await run_on(workers_, std::move(go_on)); !went) {
          COPPICE_LOG(warn).sandbox(id) << "a snapshot cut short: " << went.error().to_string();
        }
      }
      if (!h && !images.empty() && backend_.checkpoint_complete(images)) {
        // A pause cut short after its checkpoint was whole: paused to disk
        // with its memory, as the pause would have recorded. The uid range
        // is the writable layer's owner's.
        struct stat st {};
        const bool owned = ::stat((r.state_dir + "/upper").c_str(), &st) == 0 && st.st_uid != 0;
        auto settle = [this, id, owned, host_root = static_cast<uint32_t>(st.st_uid)]() -> Status {
          if (!owned) return make_error(ErrorCode::kNotFound, "no writable layer");
          COPPICE_TRY(backend_.suspend(id));
          return backend_.reserve_suspended(id, host_root);
        };
        if (auto settled = co_await run_on(workers_, std::move(settle)); settled) {
          auto l = live_from_record(r);
          l->on_disk = true;
          l->disk_memory = true;
          l->disk_host_root = st.st_uid;
          live_[l->id] = l;
          (void)transition(*l, SandboxState::kRunning);
          (void)transition(*l, SandboxState::kPausing);
          (void)transition(*l, SandboxState::kPaused);
          adopted.insert(l->id);
          auto rec = record(*l);
          auto op = [rec](store::Store& st) {
            return st.put_sandbox(rec, "paused", "to disk, memory included (its pause finished at the restart)");
          };
          if (auto w = co_await store_q_.write(std::move(op)); !w) {
            COPPICE_LOG(error).sandbox(id) << "store: " << w.error().to_string();
          }
          COPPICE_LOG(info).sandbox(id) << "a pause was cut short by the restart after its checkpoint: paused";
          continue;
        } else {
          COPPICE_LOG(warn).sandbox(id) << "a pause cut short: " << settled.error().to_string();
        }
      }
      if (h) {
        auto l = live_from_record(r);
        l->handle = *h;
        live_[l->id] = l;
        // Creating -> Running (-> Pausing -> Paused): the record's state,
        // through the same rules as any other change.
        (void)transition(*l, SandboxState::kRunning);
        if (r.state == store::SandboxState::kPaused) {
          (void)transition(*l, SandboxState::kPausing);
          (void)transition(*l, SandboxState::kPaused);
        }
        adopted.insert(l->id);
        COPPICE_LOG(info).sandbox(l->id) << "adopted after restart (" << state_name(l->state) << ")";
        // Its rules still hold in the kernel; this makes them ours again
        // (and the resolver's).
        auto applying = apply_network(*l);
        auto applied = co_await std::move(applying);
        if (!applied) {
          COPPICE_LOG(warn).sandbox(l->id) << "network rules after restart: " << applied.error().to_string();
        }
        if (auto fd = backend_.exit_fd(l->handle); fd) {
          watch_exit(l, std::move(*fd));
        } else if (fd.error().code() == ErrorCode::kNotFound) {
          asio::co_spawn(owner_, on_envd_exit(l->id), asio::detached);
        }
        continue;
      }
      COPPICE_LOG(warn).sandbox(id) << "not adopted, cleaning up: " << h.error().to_string();
    }
    auto destroy_job = [this, id] { return backend_.destroy(id); };
    (void)co_await run_on(workers_, std::move(destroy_job));
    auto op = [id](store::Store& st) {
      auto d = st.delete_sandbox(id);
      return (d || d.error().code() == ErrorCode::kNotFound) ? ok() : d;
    };
    (void)co_await store_q_.write(std::move(op));
    COPPICE_LOG(info).sandbox(id) << (expired ? "expired while the gateway was down: removed" : "removed");
  }
  for (const auto& id : kernel_ids) {
    if (adopted.count(id)) continue;
    COPPICE_LOG(info).sandbox(id) << "orphaned kernel resources: cleaning up";
    auto job = [this, id] { return backend_.destroy(id); };
    (void)co_await run_on(workers_, std::move(job));
  }
  if (net_) {
    // Addresses, veths and rules no adopted sandbox holds.
    auto live = adopted;
    auto job = [this, live] {
      net_->reconcile(live);
      return true;
    };
    (void)co_await run_on(workers_, std::move(job));
  }
  // Volume mounts of sandboxes that are gone (a create cut short by a
  // crash): their volumes are free again.
  auto prune = [](store::Store& st) -> Status {
    auto n = st.prune_volume_mounts();
    if (!n) return std::unexpected(n.error());
    if (*n > 0) {
      COPPICE_LOG(info) << "recover: " << *n << " volume mount(s) of sandboxes that are gone forgotten";
    }
    return ok();
  };
  auto pruned = co_await store_q_.write(std::move(prune));
  if (!pruned) {
    COPPICE_LOG(warn) << "recover: " << pruned.error().to_string();
  }
  // Volume directories no stored volume names (a create cut short between
  // making the directory and storing the row): removed. Before serving, so
  // no create is in flight.
  auto sweep = [this]() -> Status {
    COPPICE_ASSIGN_OR_RETURN(auto rows, store_.list_volumes(""));
    COPPICE_ASSIGN_OR_RETURN(auto dirs, backend_.list_volumes());
    std::set<std::string> known;
    for (const auto& v : rows) known.insert(v.id);
    for (const auto& id : dirs) {
      if (known.count(id)) continue;
      COPPICE_LOG(info) << "recover: volume directory " << id << " belongs to no volume: removing it";
      COPPICE_TRY(backend_.remove_volume(id));
    }
    return ok();
  };
  auto swept = co_await run_on(workers_, std::move(sweep));
  if (!swept) {
    COPPICE_LOG(warn) << "recover: volumes: " << swept.error().to_string();
  }
  // Snapshot layers and checkpoints nothing names (a snapshot or fork cut
  // short): removed before serving.
  co_await collect_layers();
  // Directory snapshot copies no row names (a create cut short by a crash).
  const std::string dirs = dir_snapshots_dir();
  auto sweep_dirs = [this, dirs]() -> Status {
    if (!sys::path_exists(dirs)) return ok();
    COPPICE_ASSIGN_OR_RETURN(auto rows, store_.list_dir_snapshots(""));
    std::set<std::string> known;
    for (const auto& r : rows) known.insert(r.id);
    COPPICE_ASSIGN_OR_RETURN(auto names, sys::list_dir(dirs));
    for (const auto& n : names) {
      if (n.starts_with(".") || known.count(n)) continue;
      COPPICE_LOG(info) << "recover: directory snapshot copy " << n << " belongs to no directory snapshot: removing it";
      COPPICE_TRY(sys::remove_tree(dirs + "/" + n));
    }
    return ok();
  };
  if (auto r = co_await run_on(workers_, std::move(sweep_dirs)); !r) {
    COPPICE_LOG(warn) << "recover: directory snapshots: " << r.error().to_string();
  }
  co_return ok();
}

asio::awaitable<Status> SandboxManager::do_start() {
  for (const auto& [name, n] : cfg_.pools) {
    std::string t = name;
    auto op = do_warm_pool(std::move(t), n);
    auto p = co_await std::move(op);
    if (!p) co_return std::unexpected(std::move(p.error()).context("--pool " + name + "=" + std::to_string(n)));
    COPPICE_LOG(info) << "pool " << name << ": keeping " << n << " warm";
  }
  co_await do_collect_retired_templates();
  reaper_timer_ = std::make_unique<asio::steady_timer>(owner_);
  sampler_timer_ = std::make_unique<asio::steady_timer>(owner_);
  asio::co_spawn(owner_, reaper_loop(), asio::detached);
  if (cfg_.metrics_interval_s > 0) asio::co_spawn(owner_, sampler_loop(), asio::detached);
  co_return ok();
}

asio::awaitable<void> SandboxManager::do_collect_retired_templates() {
  // What the owner knows to be in use: every sandbox in the table (creating
  // ones too) and every pooled one. The store's records are read on the
  // worker (they cover sandboxes recovery has not adopted yet, if any).
  auto in_use = std::make_shared<std::set<std::string>>();
  for (const auto& [id, l] : live_) in_use->insert(l->tree);
  {
    std::lock_guard lk(pools_mu_);
    for (const auto& [name, p] : pools_) p->refiller->for_each_ready([&](const Pooled& x) { in_use->insert(x.live->tree); });
  }
  const std::string root = templates_.root();
  auto job = [this, in_use, root] {
    size_t removed = 0;
    auto stored = store_.template_trees_in_use();
    if (!stored) {
      COPPICE_LOG_RATE(warn, 5) << "retired templates: " << stored.error().to_string();
      return removed;
    }
    for (const auto& t : templates::retired_trees(root)) {
      if (!t.key.empty() && (in_use->count(t.key) || stored->count(t.key))) continue;
      if (auto s = sys::remove_tree(t.path); !s) {
        COPPICE_LOG_RATE(warn, 5) << "retired template " << t.path << ": " << s.error().to_string();
        continue;
      }
      ++removed;
      COPPICE_LOG(info) << "removed retired template build " << t.path << " (no sandbox runs on it)";
    }
    return removed;
  };
  (void)co_await run_on(workers_, std::move(job));
}

asio::awaitable<void> SandboxManager::reaper_loop() {
  ++loops_running_;
  ScopeExit done([this] { --loops_running_; });
  for (;;) {
    reaper_timer_->expires_after(std::chrono::milliseconds(250));
    (void)co_await reaper_timer_->async_wait(asio::as_tuple(use_awaitable));
    if (stopping_) co_return;
    auto now = Clock::now();
    std::vector<std::string> due;
    std::vector<std::string> expired_paused;
    const auto retention = std::chrono::seconds(cfg_.paused_retention_s);
    for (const auto& [id, l] : live_) {
      if (l->state == SandboxState::kRunning && l->end_at <= now) due.push_back(id);
      if (l->state == SandboxState::kPaused && cfg_.paused_retention_s > 0 && l->paused_at + retention <= now) {
        expired_paused.push_back(id);
      }
    }
    for (auto& id : expired_paused) {
      COPPICE_LOG(info).sandbox(id) << "paused longer than --paused-retention (" << cfg_.paused_retention_s
                                    << " s): deleted";
      std::string reason = "paused retention";
      asio::co_spawn(owner_, do_kill(std::move(id), std::move(reason), std::nullopt), asio::detached);
    }
    // Each in its own coroutine on the owner: one slow teardown does not hold
    // up the others, and a kill already under way refuses the second (409).
    for (auto& id : due) {
      if (auto it = live_.find(id); it != live_.end() && it->second->lifecycle.pause) {
        asio::co_spawn(owner_, pause_at_timeout(std::move(id)), asio::detached);
        continue;
      }
      std::string reason = "timeout";
      asio::co_spawn(owner_, do_kill(std::move(id), std::move(reason), std::nullopt), asio::detached);
    }
  }
}

// E2B's onTimeout "pause": the sandbox is paused (to disk, with its memory
// unless keepMemory: false) rather than killed. If the pause fails it is
// killed, as a timeout without the option would.
asio::awaitable<void> SandboxManager::pause_at_timeout(std::string id) {
  auto it = live_.find(id);
  if (it == live_.end() || it->second->state != SandboxState::kRunning) co_return;
  const bool memory = it->second->lifecycle.keep_memory;
  auto pausing = do_pause(id, std::nullopt, memory);
  auto s = co_await std::move(pausing);
  if (s) {
    COPPICE_LOG(info).sandbox(id) << "paused at its timeout";
    co_return;
  }
  COPPICE_LOG(warn).sandbox(id) << "pause at its timeout failed, killing it: " << s.error().to_string();
  std::string reason = "timeout";
  co_await do_kill(std::move(id), std::move(reason), std::nullopt);
}

asio::awaitable<void> SandboxManager::sampler_loop() {
  ++loops_running_;
  ScopeExit done([this] { --loops_running_; });
  for (;;) {
    sampler_timer_->expires_after(std::chrono::seconds(cfg_.metrics_interval_s));
    (void)co_await sampler_timer_->async_wait(asio::as_tuple(use_awaitable));
    if (stopping_) co_return;
    std::vector<std::string> ids;
    for (const auto& [id, l] : live_)
      if (l->state == SandboxState::kRunning) ids.push_back(id);
    if (ids.empty()) continue;
    // One job for all: cgroup counters only (no walk of anyone's files).
    auto job = [this, ids] {
      std::vector<std::pair<std::string, sandbox::Usage>> out;
      out.reserve(ids.size());
      for (const auto& id : ids) {
        if (auto u = backend_.usage(id, false); u) out.emplace_back(id, *u);
      }
      return out;
    };
    auto usages = co_await run_on(workers_, std::move(job));
    auto at = Clock::now();
    for (auto& [id, u] : usages) {
      auto it = live_.find(id);
      if (it != live_.end() && it->second->state == SandboxState::kRunning) sample_into(*it->second, u, at);
    }
  }
}

asio::awaitable<void> SandboxManager::do_shutdown() {
  stopping_ = true;
  for (auto& [id, l] : live_) l->exit_watch.reset();  // running sandboxes stay; a restart watches them again
  if (reaper_timer_) reaper_timer_->cancel();
  if (sampler_timer_) sampler_timer_->cancel();
  std::vector<Refiller<Pooled>*> refillers;
  {
    std::lock_guard lk(pools_mu_);
    for (auto& [name, p] : pools_) refillers.push_back(p->refiller.get());
  }
  // stop() waits for refills in flight (they talk to envd on the io threads,
  // so this must not block one of those) and removes every pooled sandbox.
  auto job = [refillers] {
    size_t n = 0;
    for (auto* r : refillers) {
      n += r->ready();
      r->stop();
    }
    return n;
  };
  size_t n = co_await run_on(workers_, std::move(job));
  if (n) {
    COPPICE_LOG(info) << "pools drained: " << n << " sandboxes removed";
  }
  // The timers' loops see stopping_ and end; the manager may go only after.
  asio::steady_timer wait(owner_);
  while (loops_running_ > 0) {
    wait.expires_after(std::chrono::milliseconds(5));
    co_await wait.async_wait(asio::as_tuple(use_awaitable));
  }
  store_q_.drain();
}

}  // namespace coppice::core
