// The sandboxes of this host and their lifecycle: create, list, get, kill,
// timeouts and their expiry, connect, pause and resume, metrics, warm pools
// and restart recovery. One owner, in the shape of Firecracker's API thread /
// VMM thread split.
//
// Who owns what (every other thread only reads what is said here):
//
//   owner_ (a strand on the io_context)
//       the sandbox table (live_) and every Live record in it, the states
//       (all changes through transition(), the one place that applies
//       lifecycle.h's rules), the pools' targets, stopping_. Every public
//       operation runs there: an API coroutine hands it over with co_spawn
//       and resumes on its own thread with the result. Nothing on the owner
//       blocks: no kernel work, no SQLite.
//   workers_ (a thread pool)
//       backend calls (create, destroy, freeze, usage: blocking kernel work).
//       Started from the owner with run_on(); the result resumes the owner.
//   store_q_ (StoreQueue: one thread)
//       every store write, in the order the owner queued them. Writes a
//       client must not be answered before (a new sandbox, a kill, a state
//       change) are awaited; the rest are posted.
//   routes_ (RouteTable)
//       written by the owner only (transition() publishes), read lock-free
//       by the data plane, which so never waits on the control plane.
//   pools_ (per template: a Refiller of started sandboxes)
//       makes run on the BackgroundPool (background priority), take() from
//       the owner; the map itself changes on the owner under pools_mu_ so
//       that /metrics and GET /pools can read it from any thread.
//   counters (running_, paused_) are atomics written by transition().
//
// A pooled sandbox (started ahead of demand, invisible) belongs to its
// pool's Refiller until a create takes it; from then on to the owner.
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

#include "common/refiller.h"
#include "common/result.h"
#include "core/config.h"
#include "core/envd_client.h"
#include "core/lifecycle.h"
#include "core/lifecycle_policy.h"
#include "core/metrics.h"
#include "core/offload.h"
#include "core/routes.h"
#include "core/store_queue.h"
#include "core/volumes.h"
#include "http/client.h"
#include "net/network.h"
#include "net/policy.h"
#include "sandbox/backend.h"
#include "store/store.h"
#include "sys/background.h"
#include "templates/templates.h"

namespace coppice::core {

namespace asio = http::asio;
using json = nlohmann::json;
using Clock = std::chrono::system_clock;
using templates::Template;
using templates::TemplateRegistry;

// Which team's sandboxes an operation may see: a team name, or nullopt for
// every team (the gateway's own calls and tests; the API always names one).
// A sandbox of another team is reported exactly as a missing one (kNotFound,
// the same message), so a team cannot learn that another's id exists.
using TeamScope = std::optional<std::string>;

struct CreateParams {
  std::string template_id = "base";
  std::string team = std::string(store::kDefaultTeam);  // the team that will own it
  std::optional<int> timeout_s;
  json metadata = json::object();                 // string -> string
  std::map<std::string, std::string> env_vars;
  bool secure = true;                             // give the sandbox an envd access token
  net::NetworkConfig network;                     // allow_internet_access and network{...}
  // The create asked for internet explicitly (allow_internet_access: true,
  // or allowOut entries): refused where sandboxes have no network.
  bool wants_network = false;
  bool public_traffic = true;                     // false: its ports want a traffic access token
  std::string mask_request_host;                  // network.maskRequestHost, validated by the API
  std::vector<uint16_t> https_ports;              // network.httpsPorts, validated by the API
  LifecyclePolicy lifecycle;                      // autoPause & co., validated by the API
  // volumeMounts, resolved by the API to the team's volumes: mounted before
  // envd starts. A create with volumes is never a pool hit.
  std::vector<VolumeMountParam> volumes;
};

// What the API reports of a sandbox.
struct SandboxView {
  std::string id;
  std::string template_id;
  std::string alias;
  SandboxState state;
  std::string envd_access_token;
  std::string traffic_access_token;  // "" unless allowPublicTraffic was false
  json metadata;
  int cpu_count;
  int memory_mb;
  int disk_mb;
  Clock::time_point started_at;
  Clock::time_point end_at;
  std::string envd_version;
  std::string team;
  net::NetworkConfig network;
  std::string address;  // its IPv4 address on the gateway's network, "" without
  LifecyclePolicy lifecycle;
  // Where it came from (an extension): {"parentSandboxID", "snapshotID"},
  // either or both; null for a sandbox made from a template.
  json lineage;
};

// What the API reports of a snapshot (store::SnapshotRecord, less its data).
struct SnapshotView {
  std::string id;
  std::string name;  // "" when unnamed
  std::string team;
  std::string source_sandbox;
  std::string template_id;
  bool memory = false;
  Clock::time_point created_at;
  uint64_t disk_bytes = 0;
};

// One child of a fork: the sandbox, or why it could not start.
using ForkChild = Result<SandboxView>;

struct MetricSample {
  Clock::time_point at;
  int cpu_count;
  double cpu_used_pct;
  uint64_t mem_used, mem_total, disk_used, disk_total;
  // Traffic so far (the sandbox's view: tx = sent by it).
  uint64_t net_rx_bytes = 0, net_tx_bytes = 0, net_rx_packets = 0, net_tx_packets = 0;
};

// A template's warm pool.
struct PoolView {
  std::string template_id;
  int target = 0;      // sandboxes it keeps ready
  int available = 0;   // ready now
  int in_use = 0;      // taken from it and still alive
  int filling = 0;     // being started
  uint64_t hits = 0;   // creates it served
  uint64_t misses = 0; // creates that found it empty
};

struct ListFilter {
  std::vector<SandboxState> states;               // empty: every visible state
  std::map<std::string, std::string> metadata;    // every pair must match
  std::string template_id;                        // "" or the template's id
  std::optional<Clock::time_point> started_after;   // inclusive
  std::optional<Clock::time_point> started_before;  // inclusive
  TeamScope team;                                 // only this team's sandboxes
};

// Threads and pools the manager runs its work on (see the header comment).
struct ManagerExecutors {
  asio::any_io_executor io;            // the owner strand is made on it
  asio::thread_pool* workers = nullptr;
  sys::BackgroundPool* background = nullptr;
};

class SandboxManager {
 public:
  // `network`: the sandboxes' network (null: loopback only); must outlive
  // the manager.
  SandboxManager(const GatewayConfig& cfg, store::Store& store, sandbox::Backend& backend,
                 TemplateRegistry& templates, ManagerExecutors ex, metrics::GatewayMetrics& metrics,
                 net::Network* network = nullptr);
  ~SandboxManager();

  // --- control plane (each runs on the owner strand) ---
  asio::awaitable<Result<SandboxView>> create(CreateParams p);
  // Each operation on one sandbox takes the caller's TeamScope: a sandbox
  // outside it is kNotFound, as a missing one.
  asio::awaitable<Result<SandboxView>> get(std::string id, TeamScope team = std::nullopt);
  // Sorted oldest first (by start time, then id).
  asio::awaitable<std::vector<SandboxView>> list(ListFilter f);
  asio::awaitable<Status> kill(std::string id, TeamScope team = std::nullopt);
  // Sets the end of life to now + timeout.
  asio::awaitable<Status> set_timeout(std::string id, int timeout_s, TeamScope team = std::nullopt);
  // Moves the end of life to at least now + duration.
  asio::awaitable<Status> refresh(std::string id, int duration_s, TeamScope team = std::nullopt);
  // Running: extends the timeout, returns (view, false). Paused: resumes, returns (view, true).
  asio::awaitable<Result<std::pair<SandboxView, bool>>> connect(std::string id, std::optional<int> timeout_s,
                                                                TeamScope team = std::nullopt);
  // memory: false writes only the files (a resume starts the template
  // afresh on them); it needs pause_to_disk (else kInvalidArgument).
  asio::awaitable<Status> pause(std::string id, TeamScope team = std::nullopt, bool memory = true);
  // Whether a pause without memory (and so a files-only pause at the
  // timeout) is possible here.
  bool pauses_to_disk() const { return cfg_.pause_to_disk; }
  // A pause with memory is written to disk (and so can be resumed after a
  // restart, or by traffic with autoResume).
  bool checkpoints_memory() const { return cfg_.pause_to_disk && cfg_.memory_checkpoint; }
  // PUT /sandboxes/{id}/network: replaces its egress rules (net/policy.h
  // parse_update); new connections see them when this returns.
  // kFailedPrecondition when the gateway runs sandboxes without a network
  // and the update asks for any.
  asio::awaitable<Status> update_network(std::string id, json body, TeamScope team = std::nullopt);
  asio::awaitable<Result<SandboxView>> resume(std::string id, std::optional<int> timeout_s,
                                              TeamScope team = std::nullopt);
  // autoResume: traffic for sandbox `id` through the proxy. Paused with
  // autoResume: resumed (its timeout from now); being resumed: waited for
  // (at most 60 s). ok() once it runs; kFailedPrecondition when it is
  // paused without autoResume (or in another state), kNotFound when gone.
  asio::awaitable<Status> resume_for_traffic(std::string id);
  // Changes a running or paused sandbox's CPU count and/or memory (MiB; an
  // unset one stays) in the kernel at once, then in its record, so info and
  // a restart report the new figures. The values are the API's to bound.
  // kFailedPrecondition when the sandbox holds more memory than asked for
  // and cannot give it back (nothing changes then), while it is pausing or
  // resuming, or while another resize of it runs.
  asio::awaitable<Result<SandboxView>> resize(std::string id, std::optional<int> cpu_count,
                                              std::optional<int> memory_mb, TeamScope team = std::nullopt);
  // Samples kept for the sandbox (every GatewayConfig::metrics_interval_s, the
  // last kMetricsKept) between start and end (inclusive, either optional), and
  // a fresh one when the range reaches now and the newest is older than a second.
  asio::awaitable<Result<std::vector<MetricSample>>> metrics(std::string id, std::optional<Clock::time_point> start,
                                                              std::optional<Clock::time_point> end,
                                                              TeamScope team = std::nullopt);
  static constexpr size_t kMetricsKept = 120;
  // Lifecycle events of a sandbox, from the store (any thread).
  std::vector<store::EventRecord> events(const std::string& id, size_t limit) const;

  // --- snapshots and fork (snapshots.cc) ---
  // Keeps a running sandbox's files (a read-only copy of its writable layer)
  // and, with `memory`, a checkpoint of its processes; the sandbox runs on.
  // `name` (checked by the API) moves to this snapshot if the team used it.
  // kFailedPrecondition unless it is running; kUnimplemented where the
  // backend cannot copy layers or checkpoint.
  asio::awaitable<Result<SnapshotView>> create_snapshot(std::string id, TeamScope team, std::string name, bool memory);
  // The team's snapshots, oldest first (any thread: a store read).
  Result<std::vector<SnapshotView>> list_snapshots(const std::string& team, const std::string& source_sandbox) const;
  // Removes the team's snapshot `ref` (id or name); its files go once no
  // sandbox started from it runs. kNotFound for another team's.
  asio::awaitable<Status> delete_snapshot(std::string ref, std::string team);
  // `count` new sandboxes from one checkpoint of running sandbox `id` (its
  // id, token and end of life untouched), made in parallel; one result per
  // child. The bounds of `count` are the API's.
  asio::awaitable<Result<std::vector<ForkChild>>> fork(std::string id, TeamScope team, int count,
                                                       std::optional<int> timeout_s);
  static constexpr int kMaxForkCount = 100;
  // Directory snapshots (an extension): directory `path` of running sandbox
  // `id` copied to the host as the team's `name` (kAlreadyExists when it has
  // one), at most kMaxDirSnapshotBytes (kTooLarge); restored as `path` (must
  // not exist) into any running sandbox of the team, owned by its users.
  asio::awaitable<Result<store::DirSnapshotRecord>> create_dir_snapshot(std::string id, TeamScope team,
                                                                        std::string path, std::string name);
  asio::awaitable<Status> restore_dir_snapshot(std::string id, TeamScope team, std::string name, std::string path);
  Result<std::vector<store::DirSnapshotRecord>> list_dir_snapshots(const std::string& team) const {
    return store_.list_dir_snapshots(team);
  }
  asio::awaitable<Status> delete_dir_snapshot(std::string team, std::string name);
  static constexpr uint64_t kMaxDirSnapshotBytes = 1ull << 30;

  // --- volumes (volumes.cc) ---
  // Makes a volume of `team` (name checked by the API) capped at
  // `quota_bytes` (recorded as 0, no cap, when the backend enforces no
  // quotas). kAlreadyExists when the team has one of that name.
  asio::awaitable<Result<store::VolumeRecord>> create_volume(std::string team, std::string name, uint64_t quota_bytes);
  // Removes the volume and its files. kNotFound for another team's;
  // kFailedPrecondition while a sandbox has it mounted.
  asio::awaitable<Status> delete_volume(std::string id, std::string team);
  // Mounts a volume in a running sandbox (kFailedPrecondition when it is
  // not running; kAlreadyExists when something is mounted at the path).
  asio::awaitable<Status> mount_volume(std::string sandbox_id, TeamScope team, VolumeMountParam m);
  // Unmounts what is mounted at `path` (the volume `volume_id`).
  asio::awaitable<Status> unmount_volume(std::string sandbox_id, TeamScope team, std::string volume_id,
                                         std::string path);
  // The host directory of a volume ("" when the backend has none).
  std::string volume_dir(const std::string& volume_id) const { return backend_.volume_dir(volume_id); }
  // Runs `job` (blocking file work, e.g. the volume content API) on a worker.
  template <typename F>
  asio::awaitable<std::invoke_result_t<F>> on_worker(F job);

  // --- data plane ---
  const RouteTable& routes() const { return routes_; }

  // --- warm pools ---
  // Sets a template's pool target (0..kMaxPoolTarget) and starts filling it.
  // kInvalidArgument for an unknown or non-ns template or a bad count.
  asio::awaitable<Result<PoolView>> warm_pool(std::string template_id, int count);
  // Target 0 and every ready sandbox of the pool removed.
  asio::awaitable<Result<PoolView>> drain_pool(std::string template_id);
  // Removes the retired template builds (templates.h) no sandbox runs on,
  // the pools' included. Runs after recovery, after a template reload and
  // after the last sandbox of a replaced build is gone.
  asio::awaitable<void> collect_retired_templates();
  // Removes template `name` (DELETE /templates/{name}): its directory moves
  // to the retired builds (removed at once, since nothing runs on it) and
  // the registry is reloaded. kNotFound for an unknown template;
  // kFailedPrecondition, naming them, while sandboxes (of any state) or a
  // pool use it, and for `base`, which creates fall back to.
  asio::awaitable<Status> remove_template(std::string name);
  // Every pool with a target or sandboxes, sorted by template (any thread).
  std::vector<PoolView> pools() const;
  static constexpr int kMaxPoolTarget = 10000;

  // Called by the API at the start and end of every request: a refill that
  // is not urgent waits for a moment without any, so it does not take the
  // CPU and the kernel's locks from the requests it exists to serve.
  void note_activity() {
    last_activity_ns_.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  }
  // Around every control-plane request, whose answer a refill would slow
  // (a fork's children, say): no moment is quiet while one is under way.
  // Data-plane streams may stay open for hours and do not count.
  void control_started() {
    control_in_flight_.fetch_add(1, std::memory_order_relaxed);
    note_activity();
  }
  void control_ended() {
    note_activity();
    control_in_flight_.fetch_sub(1, std::memory_order_relaxed);
  }

  // --- start and stop ---
  // On start: adopt the sandboxes the store lists whose processes still run,
  // remove expired and dead ones, and clean up kernel leftovers no record owns.
  asio::awaitable<Status> recover();
  // Starts the TTL reaper, the metrics sampler and the pools of cfg.pools.
  // kInvalidArgument naming a bad --pool entry.
  asio::awaitable<Status> start();
  // Stops taking creates and refills, removes every pooled sandbox, stops
  // the timers. Running sandboxes are left alone (a restart adopts them).
  // Must have finished before the manager is destroyed.
  asio::awaitable<void> shutdown();

  // Listed sandboxes by reported state (any thread).
  struct StateCounts {
    size_t running = 0, paused = 0;
  };
  StateCounts count_by_state() const {
    return {running_.load(std::memory_order_relaxed), paused_.load(std::memory_order_relaxed)};
  }
  size_t count() const { return routes_.size(); }

 private:
  struct Live;
  struct Pool;
  struct Pooled {
    std::shared_ptr<Live> live;
  };

  // Runs `op` (an awaitable of the owner's) on the owner strand.
  template <typename T>
  asio::awaitable<T> on_owner(asio::awaitable<T> op);

  // --- on the owner ---
  asio::awaitable<Result<SandboxView>> do_create(CreateParams p);
  asio::awaitable<Result<SandboxView>> do_get(std::string id, TeamScope team);
  asio::awaitable<std::vector<SandboxView>> do_list(ListFilter f);
  asio::awaitable<Status> do_kill(std::string id, std::string reason, TeamScope team);
  asio::awaitable<Status> do_set_timeout(std::string id, int timeout_s, bool only_extend, TeamScope team);
  asio::awaitable<Result<std::pair<SandboxView, bool>>> do_connect(std::string id, std::optional<int> timeout_s,
                                                                   TeamScope team);
  asio::awaitable<Status> do_pause(std::string id, TeamScope team, bool memory);
  asio::awaitable<Status> pause_to_disk(std::shared_ptr<Live> l, bool memory);
  asio::awaitable<Status> resume_from_disk(std::shared_ptr<Live> l);
  asio::awaitable<Status> do_resume_for_traffic(std::string id);
  asio::awaitable<Status> do_update_network(std::string id, json body, TeamScope team);
  // Enforces l's network config (firewall, resolver, bandwidth) on a worker.
  asio::awaitable<Status> apply_network(const Live& l);
  asio::awaitable<Result<SandboxView>> do_resume(std::string id, std::optional<int> timeout_s, TeamScope team);
  asio::awaitable<Result<SandboxView>> do_resize(std::string id, std::optional<int> cpu_count,
                                                 std::optional<int> memory_mb, TeamScope team);
  asio::awaitable<Result<std::vector<MetricSample>>> do_metrics(std::string id, std::optional<Clock::time_point> start,
                                                                std::optional<Clock::time_point> end, TeamScope team);
  asio::awaitable<Result<PoolView>> do_warm_pool(std::string template_id, int count);
  asio::awaitable<Result<PoolView>> do_drain_pool(std::string template_id);
  asio::awaitable<Status> do_remove_template(std::string name);
  asio::awaitable<Status> do_recover();
  // --- snapshots.cc ---
  struct StartPoint;
  struct Taken;
  asio::awaitable<Result<SandboxView>> do_create_from(CreateParams p, std::shared_ptr<const StartPoint> from);
  static std::shared_ptr<const StartPoint> start_point_of(const store::SnapshotRecord& r);
  asio::awaitable<Result<Taken>> take(std::shared_ptr<Live> l, std::string layer_id, bool memory, bool durable);
  // For a fork: a copy of the files of a sandbox whose files are all there
  // is of it (Backend::runs_only_its_own, envd holding nothing for its
  // users, no volume), or nullopt when it needs criu.
  asio::awaitable<Result<std::optional<Taken>>> take_if_all_in_files(std::shared_ptr<Live> l, std::string layer_id);
  // --- fork.cc ---
  // Up to `count` spares of `parent`'s template pool that can take the
  // frozen copy `layer` of its writable layer (see fork.cc), or none.
  asio::awaitable<std::vector<std::shared_ptr<Live>>> take_fork_spares(std::shared_ptr<Live> parent, std::string layer,
                                                                       int count);
  // A fork child made of the spare `s`: the copy `layer` merged into it,
  // then handed out; made afresh from `from` if the merge fails. Counts a
  // child made on a spare in *on_spares.
  asio::awaitable<Result<SandboxView>> fork_onto_spare(std::shared_ptr<Live> s, CreateParams p,
                                                       std::shared_ptr<const StartPoint> from, sandbox::LowerLayer layer,
                                                       std::shared_ptr<int> on_spares);
  asio::awaitable<Result<SnapshotView>> do_create_snapshot(std::string id, TeamScope team, std::string name,
                                                           bool memory);
  asio::awaitable<Status> do_delete_snapshot(std::string ref, std::string team);
  asio::awaitable<Result<std::vector<ForkChild>>> do_fork(std::string id, TeamScope team, int count,
                                                          std::optional<int> timeout_s);
  // Removes snapshot layers and checkpoints that no snapshot, sandbox or
  // operation in flight needs (after a restart, a delete, a kill).
  asio::awaitable<void> collect_layers();
  std::string snapshots_dir() const { return cfg_.state_dir + "/sandboxes/.snapshots"; }
  std::string dir_snapshots_dir() const { return cfg_.state_dir + "/sandboxes/.dirsnapshots"; }
  asio::awaitable<Result<store::DirSnapshotRecord>> do_create_dir_snapshot(std::string id, TeamScope team,
                                                                           std::string path, std::string name);
  asio::awaitable<Status> do_restore_dir_snapshot(std::string id, TeamScope team, std::string name, std::string path);
  asio::awaitable<Status> do_start();
  asio::awaitable<void> do_shutdown();
  asio::awaitable<void> do_collect_retired_templates();
  asio::awaitable<Status> do_mount_volume(std::string sandbox_id, TeamScope team, VolumeMountParam m);
  asio::awaitable<Status> do_unmount_volume(std::string sandbox_id, TeamScope team, std::string volume_id,
                                            std::string path);
  // Records a new sandbox's volumes as in use before it is made (so they
  // cannot be deleted meanwhile) and fills spec.volumes; release_volumes
  // drops the records of a create that failed.
  asio::awaitable<Status> reserve_volumes(const std::string& id, const std::vector<VolumeMountParam>& volumes,
                                          sandbox::SandboxSpec& spec);
  asio::awaitable<void> release_volumes(std::string id);
  asio::awaitable<void> reaper_loop();
  asio::awaitable<void> pause_at_timeout(std::string id);
  asio::awaitable<void> sampler_loop();

  // The visible sandbox `id` within `team`, or kNotFound (the same error
  // whether it is missing or another team's).
  Result<std::shared_ptr<Live>> find(const std::string& id, const TeamScope& team) const;
  // The one place a sandbox's state changes: checks the move against the
  // lifecycle rules, applies it, and publishes what the data plane sees.
  Status transition(Live& l, SandboxState to);
  SandboxView view(const Live& l) const;
  std::shared_ptr<Live> live_from_record(const store::SandboxRecord& r) const;
  store::SandboxRecord record(const Live& l) const;
  // A new Live for `tmpl` with a fresh id and token (not yet in live_).
  std::shared_ptr<Live> new_live(const Template& tmpl, bool secure) const;
  // What a new sandbox of `tmpl` gets: CPUs, memory and disk (MB; disk 0
  // without quotas).
  struct Resources {
    int cpu_count, memory_mb, disk_mb;
    bool operator==(const Resources&) const = default;
  };
  Resources resources_of(const Template& tmpl) const;
  sandbox::SandboxSpec spec_for(const Live& l, const Template& tmpl, const EnvdInit& init) const;
  // The create's parameters, timestamps, the store: the sandbox becomes
  // visible and Running. On failure it is destroyed and forgotten.
  asio::awaitable<Result<SandboxView>> hand_out(std::shared_ptr<Live> l, const CreateParams& p, bool pool_hit,
                                                std::chrono::steady_clock::time_point t0);
  // Removes a sandbox nobody saw (a failed create): kernel state and table entry.
  asio::awaitable<void> discard(std::shared_ptr<Live> l);
  void sample_into(Live& l, const sandbox::Usage& u, Clock::time_point at);
  // Starts watching a visible sandbox's PID 1 with `fd` (Backend::exit_fd;
  // an invalid one: nothing to watch). When it exits on its own (killed, OOM)
  // the sandbox is removed like a kill (a warning in the log, envd_errors
  // counted): E2B knows no state for a dead sandbox, so clients see "not
  // found" from then on.
  void watch_exit(const std::shared_ptr<Live>& l, sys::UniqueFd fd);
  asio::awaitable<void> on_envd_exit(std::string id);

  // --- pools ---
  // A ready sandbox of the template's pool made from its current build, or null.
  std::shared_ptr<Live> take_pooled(const Template& tmpl);
  // Blocking (on the BackgroundPool): starts one sandbox for the pool.
  std::optional<Pooled> make_pooled(const std::string& template_id);
  void discard_pooled(Pooled& p);
  // Blocks a refill that is not urgent until requests pause (10 ms without
  // one, at most 250 ms).
  void wait_quiet() const;
  Pool& pool_for(const std::string& template_id);  // owner; creates it
  PoolView pool_view(const Pool& p) const;

  const GatewayConfig& cfg_;
  store::Store& store_;
  sandbox::Backend& backend_;
  TemplateRegistry& templates_;
  asio::any_io_executor io_;
  asio::strand<asio::any_io_executor> owner_;
  asio::thread_pool& workers_;
  sys::BackgroundPool& background_;
  metrics::GatewayMetrics& metrics_;
  net::Network* net_;
  StoreQueue store_q_;
  RouteTable routes_;

  std::map<std::string, std::shared_ptr<Live>> live_;  // owner
  bool stopping_ = false;                              // owner
  int loops_running_ = 0;                              // owner: reaper, sampler, exit handlers
  std::unique_ptr<asio::steady_timer> reaper_timer_, sampler_timer_;  // owner
  mutable std::mutex pools_mu_;                        // the map's structure; written on the owner
  std::map<std::string, std::unique_ptr<Pool>> pools_;
  std::atomic<size_t> running_{0}, paused_{0};
  std::atomic<int64_t> last_activity_ns_{0};  // steady_clock, see note_activity
  std::atomic<int> control_in_flight_{0};     // see control_started
  std::map<std::string, int> pinned_layers_;   // owner: layer dirs an operation in flight needs
};

template <typename F>
asio::awaitable<std::invoke_result_t<F>> SandboxManager::on_worker(F job) {
  auto op = run_on(workers_, std::move(job));
  co_return co_await std::move(op);
}

}  // namespace coppice::core
