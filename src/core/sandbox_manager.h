// The sandbox registry and its lifecycle: create, list, get, kill, timeouts
// and their expiry, connect, pause and resume, metrics. It owns the live
// sandboxes of this host, persists each change to the store before the caller
// answers, and runs all kernel work (the backend) on worker threads, never on
// the threads serving HTTP.
//
// States: Creating -> Running <-> Paused -> (gone). An action wrong for the
// state fails with kFailedPrecondition (the API's 409). A sandbox may also be
// made ahead of demand for a template's warm pool (Pooled, invisible like
// Creating) and become Running when a create takes it.
//
// Warm pools: per template, a target number of started sandboxes (envd up,
// the template's start command run and ready, no /init yet) kept ready. A
// create takes one in O(1) (pool hit) and finishes it as it would a cold one:
// its id, hostname and writable layer were never seen by anyone, and /init
// gives it the create's token, environment and defaults. An empty pool falls
// back to the cold path (pool miss). Refills run one at a time per template on
// a thread at SCHED_IDLE, so they only take CPU nobody else wants. Pooled
// sandboxes are not in the store: after a crash, recover() removes them like
// any orphan and the pools fill again.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "core/config.h"
#include "core/envd_client.h"
#include "core/metrics.h"
#include "core/templates.h"
#include "http/client.h"
#include "http/server.h"
#include "sandbox/backend.h"
#include "store/store.h"

namespace coppice::core {

namespace asio = http::asio;
using json = nlohmann::json;
using Clock = std::chrono::system_clock;

enum class SandboxState { kCreating, kPooled, kRunning, kPausing, kPaused, kResuming, kKilling };
std::string_view state_name(SandboxState s);  // "running" | "paused" (transitional states map to the nearer one)

struct CreateParams {
  std::string template_id = "base";
  std::optional<int> timeout_s;
  json metadata = json::object();                 // string -> string
  std::map<std::string, std::string> env_vars;
  bool secure = true;                             // give the sandbox an envd access token
};

// What the API reports of a sandbox.
struct SandboxView {
  std::string id;
  std::string template_id;
  std::string alias;
  SandboxState state;
  std::string envd_access_token;
  json metadata;
  int cpu_count;
  int memory_mb;
  int disk_mb;
  Clock::time_point started_at;
  Clock::time_point end_at;
  std::string envd_version;
};

struct MetricSample {
  Clock::time_point at;
  int cpu_count;
  double cpu_used_pct;
  uint64_t mem_used, mem_total, disk_used, disk_total;
};

// A template's warm pool.
struct PoolView {
  std::string template_id;
  int target = 0;      // sandboxes it keeps ready
  int available = 0;   // ready now
  int in_use = 0;      // taken from it and still alive
  int filling = 0;     // being started
};

struct ListFilter {
  std::vector<SandboxState> states;               // empty: running and paused
  std::map<std::string, std::string> metadata;    // every pair must match
};

class SandboxManager {
 public:
  // `metrics` receives create latencies and failures.
  // Pool refills run on `io` (coroutines) and on a thread of their own.
  SandboxManager(const GatewayConfig& cfg, store::Store& store, sandbox::Backend& backend,
                 TemplateRegistry& templates, asio::thread_pool& workers, metrics::GatewayMetrics& metrics,
                 asio::any_io_executor io);
  ~SandboxManager();

  asio::awaitable<Result<SandboxView>> create(CreateParams p);
  Result<SandboxView> get(const std::string& id) const;
  std::vector<SandboxView> list(const ListFilter& f) const;
  asio::awaitable<Status> kill(const std::string& id);
  // Sets the end of life to now + timeout.
  Status set_timeout(const std::string& id, int timeout_s);
  // Moves the end of life to at least now + duration.
  Status refresh(const std::string& id, int duration_s);
  // Running: extends the timeout, returns (view, false). Paused: resumes, returns (view, true).
  asio::awaitable<Result<std::pair<SandboxView, bool>>> connect(const std::string& id, std::optional<int> timeout_s);
  asio::awaitable<Status> pause(const std::string& id);
  asio::awaitable<Result<SandboxView>> resume(const std::string& id, std::optional<int> timeout_s);
  asio::awaitable<Result<std::vector<MetricSample>>> metrics(const std::string& id);
  std::vector<store::EventRecord> events(const std::string& id, size_t limit) const;

  // The envd endpoint of a running sandbox (for the proxy); kNotFound otherwise.
  Result<http::Endpoint> envd_endpoint(const std::string& id) const;
  // A connected TCP socket to `port` on the sandbox's loopback, made inside its network namespace.
  asio::awaitable<Result<http::Socket>> connect_port(const std::string& id, uint16_t port);

  // Sets a template's pool target (0..kMaxPoolTarget) and starts filling it.
  // kInvalidArgument for an unknown or non-ns template or a bad count.
  Result<PoolView> warm_pool(const std::string& template_id, int count);
  // Target 0 and every ready sandbox of the pool removed.
  asio::awaitable<Result<PoolView>> drain_pool(const std::string& template_id);
  // Every pool with a target or sandboxes, sorted by template.
  std::vector<PoolView> pools() const;
  // Stops taking creates and refills and removes every pooled sandbox (the
  // gateway's SIGTERM path). Running sandboxes are left alone.
  asio::awaitable<void> shutdown();
  static constexpr int kMaxPoolTarget = 10000;

  // Called by the API at the start and end of every request: pool refills
  // wait for a moment without any (quiet_for), so they do not take the CPU
  // and the kernel's locks from the requests they exist to serve.
  void note_activity() {
    last_activity_ns_.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  }

  // On start: adopt the sandboxes the store lists whose processes still run,
  // remove expired and dead ones, and clean up kernel leftovers no record owns.
  asio::awaitable<Status> recover();
  // Kills sandboxes whose end of life has passed; runs until stop().
  asio::awaitable<void> reaper_loop();
  void stop();

  size_t count() const;
  // Listed sandboxes by reported state (as state_name names them), without copying their views.
  struct StateCounts {
    size_t running = 0, paused = 0;
  };
  StateCounts count_by_state() const;

 private:
  struct Live;
  Result<std::shared_ptr<Live>> find(const std::string& id) const;
  // Moves a visible sandbox from state `from` to `during` (the one owner of
  // it until the action ends); kNotFound or kFailedPrecondition otherwise.
  Result<std::shared_ptr<Live>> begin_transition(const std::string& id, SandboxState from, SandboxState during);
  SandboxView view(const Live& l) const;
  Status persist(const Live& l, std::string_view event_kind = "", std::string_view event_detail = "");
  // Backend create under a fresh id reserved in state `as` (kCreating or
  // kPooled), envd initialised with `init` from its start, then the
  // template's start and readiness commands. Nothing is left behind on failure.
  asio::awaitable<Result<std::shared_ptr<Live>>> start_sandbox(const Template& tmpl, SandboxState as,
                                                              asio::thread_pool& pool, const EnvdInit& init);
  // /init with the create's parameters, timestamps, store: the sandbox becomes
  // visible and Running. On failure the sandbox is destroyed.
  asio::awaitable<Result<SandboxView>> hand_out(std::shared_ptr<Live> l, const CreateParams& p, const Template& tmpl,
                                                bool pool_hit, std::chrono::steady_clock::time_point t0);
  asio::awaitable<Status> run_template_commands(const Live& l, const Template& tmpl);
  // Removes a sandbox that was never visible (kernel state + reservation).
  asio::awaitable<void> discard(std::shared_ptr<Live> l, asio::thread_pool& pool);
  asio::awaitable<Status> destroy(std::shared_ptr<Live> l, std::string_view reason);
  std::shared_ptr<Live> take_pooled(const Template& tmpl, bool secure);
  void kick_pool(const std::string& template_id);
  asio::awaitable<void> fill_pool(std::string template_id);
  // Waits until no request has started or ended for kQuiet, at most kMaxDefer.
  asio::awaitable<void> quiet_for(asio::steady_timer& timer);
  PoolView pool_view_locked(const std::string& template_id) const;
  template <typename F>
  asio::awaitable<std::invoke_result_t<F>> on_worker(F f) { return on_pool(workers_, std::move(f)); }
  template <typename F>
  asio::awaitable<std::invoke_result_t<F>> on_pool(asio::thread_pool& pool, F f);

  const GatewayConfig& cfg_;
  store::Store& store_;
  sandbox::Backend& backend_;
  TemplateRegistry& templates_;
  asio::thread_pool& workers_;
  metrics::GatewayMetrics& metrics_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Live>> live_;
  bool stopping_ = false;
  std::unique_ptr<asio::steady_timer> reaper_timer_;
  struct Pool {
    int target = 0;
    std::deque<std::shared_ptr<Live>> ready;
    int filling = 0;
    bool filler_running = false;
  };
  std::map<std::string, Pool> pools_;  // guarded by mu_
  asio::any_io_executor io_;
  asio::thread_pool refill_{1};  // SCHED_IDLE
  std::atomic<int64_t> last_activity_ns_{0};  // steady_clock, see note_activity
};

}  // namespace coppice::core
