// The sandbox registry and its lifecycle: create, list, get, kill, timeouts
// and their expiry, connect, pause and resume, metrics. It owns the live
// sandboxes of this host, persists each change to the store before the caller
// answers, and runs all kernel work (the backend) on worker threads, never on
// the threads serving HTTP.
//
// States: Creating -> Running <-> Paused -> (gone). An action wrong for the
// state fails with kFailedPrecondition (the API's 409).
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "core/config.h"
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

enum class SandboxState { kCreating, kRunning, kPausing, kPaused, kResuming, kKilling };
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

struct ListFilter {
  std::vector<SandboxState> states;               // empty: running and paused
  std::map<std::string, std::string> metadata;    // every pair must match
};

class SandboxManager {
 public:
  // `metrics` receives create latencies and failures.
  SandboxManager(const GatewayConfig& cfg, store::Store& store, sandbox::Backend& backend,
                 TemplateRegistry& templates, asio::thread_pool& workers, metrics::GatewayMetrics& metrics);
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
  Status persist(const Live& l);
  asio::awaitable<Status> init_envd(const Live& l, const std::map<std::string, std::string>& env_vars);
  asio::awaitable<Status> destroy(std::shared_ptr<Live> l, std::string_view reason);
  template <typename F>
  asio::awaitable<std::invoke_result_t<F>> on_worker(F f);

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
};

}  // namespace coppice::core
