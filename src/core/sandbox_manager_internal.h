// What the manager's source files share: its record of one sandbox, a pool,
// and the template commands run in a new sandbox. Private to src/core.
#pragma once

#include <boost/asio/posix/stream_descriptor.hpp>

#include <deque>

#include "core/sandbox_manager.h"

namespace coppice::core {

// Owned by the owner strand once in live_; by a pool's Refiller while pooled.
struct SandboxManager::Live {
  std::string id;
  std::string template_id;
  // The owning team; a pooled sandbox gets its team when a create takes it.
  std::string team = std::string(store::kDefaultTeam);
  SandboxState state = SandboxState::kCreating;
  std::string token;
  // Inbound policy (Route::traffic_token / mask_host); kept in the record's extra.
  std::string traffic_token;
  std::string mask_host;
  std::vector<uint16_t> https_ports;
  json metadata = json::object();
  json env_vars = json::object();
  int cpu_count = 1, memory_mb = 512, disk_mb = 1024;
  Clock::time_point started_at, end_at;
  // When it was last paused (its retention counts from there); kept in the
  // record's extra "pausedAt".
  Clock::time_point paused_at{};
  std::string state_dir;
  sandbox::SandboxHandle handle;
  // The template version it was made from (rootfs, build id, recipe hash), so
  // a pooled sandbox older than its template is never handed out.
  std::string build;
  // The template whose pool it came from; empty for a cold create.
  std::string pool;
  // The template tree it runs on (templates::tree_key of the rootfs when it
  // was made): a replaced build is kept while a sandbox names its tree.
  std::string tree;
  // Usage history for GET /sandboxes/{id}/metrics (newest last), and what
  // the next sample's CPU percentage is computed against.
  std::deque<MetricSample> samples;
  uint64_t last_cpu_ns = 0;
  std::chrono::steady_clock::time_point last_cpu_at{};
  uint64_t last_disk_bytes = 0;
  // Readable once the sandbox's PID 1 (envd) has exited (Backend::exit_fd),
  // registered with the owner strand while the sandbox is visible; null
  // before hand-out, after a kill, or when the backend cannot watch.
  std::unique_ptr<asio::posix::stream_descriptor> exit_watch;
  // Its network config (E2B's allow_internet_access and network{...}).
  net::NetworkConfig network;
  // Paused to disk (GatewayConfig::pause_to_disk): its processes are gone,
  // its state dir holds its writable layer and, with `disk_memory`, its
  // checkpoint; the backend keeps its uid range (disk_host_root).
  bool on_disk = false;
  bool disk_memory = false;
  uint32_t disk_host_root = 0;
  // What happens at its timeout (E2B's lifecycle); kept in the record's extra.
  LifecyclePolicy lifecycle;
  // A resize of it is under way (one at a time).
  bool resizing = false;
  // Snapshot layers under its own writable layer (topmost first) and where
  // it came from (SandboxView::lineage); kept in the record's extra.
  std::vector<sandbox::LowerLayer> lowers;
  json lineage;
};

struct SandboxManager::Pool {
  std::string template_id;
  std::unique_ptr<Refiller<Pooled>> refiller;
  std::atomic<int> in_use{0};  // taken from it and still alive
};

// The identity of a template's current build, compared with Live::build.
inline std::string build_of(const Template& t) { return t.rootfs + "\n" + t.build_id + "\n" + t.recipe_hash; }

// The template's start command (in the background) and then its readiness
// command until it exits 0 (at most 60 s), through envd on `socket`.
asio::awaitable<Status> run_template_commands(std::string socket, std::string token, Template tmpl);

// Snapshot layers as kept in records: [{"dir", "hostRoot"}], topmost first.
json layers_json(const std::vector<sandbox::LowerLayer>& layers);
std::vector<sandbox::LowerLayer> layers_from_json(const json& j);

// What a new sandbox starts from: a stored snapshot or a fork's checkpoint.
struct SandboxManager::StartPoint {
  std::string snapshot_id;  // "" for a fork's children
  std::string parent;       // the sandbox the files (and memory) come from
  std::string template_id;
  std::vector<sandbox::LowerLayer> layers;  // topmost first
  std::string images;                       // checkpoint; "" for files only
  std::string old_token;                    // the token the checkpointed envd holds
  int cpu_count = 1, memory_mb = 512, disk_mb = 0;
  // A fork of a sandbox whose files were all there was of it: its children
  // start envd afresh on them (no template start: the parent ran it), with
  // the parent's boot id.
  bool all_in_files = false;
  std::string boot_id;
};

// A layer (and checkpoint) just taken of a running sandbox.
struct SandboxManager::Taken {
  std::string dir;             // the copy (LowerLayer dir is dir + "/upper")
  std::string images;          // "" without memory
  sandbox::LowerLayer top;     // the copy as a layer
  uint64_t bytes = 0;          // what it holds (files, and the checkpoint)
  double ms = 0;               // how long the sandbox was held
  std::string boot_id;         // the sandbox's (take_if_all_in_files)
};

// Freezes sandbox `id`, copies its writable layer to `dir` (the copy's
// layer dir) and thaws it; nothing is left of a copy that failed. With
// only_if_all_in_files the copy is made only if, frozen, the sandbox runs
// nothing but its own init and envd (nullopt otherwise): no process can
// start between that look and the copy.
Result<std::optional<std::string>> copy_frozen(sandbox::Backend& backend, const std::string& id, const std::string& dir,
                                               bool only_if_all_in_files);

}  // namespace coppice::core
