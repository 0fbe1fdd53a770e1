// The gateway's configuration: one typed struct, filled from flags (and the
// environment for secrets). Each field says its default.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace coppice::core {

struct GatewayConfig {
  // Address the API and the data-plane proxy listen on. Default 127.0.0.1:3000.
  std::string listen_host = "127.0.0.1";
  uint16_t listen_port = 3000;
  // Where the store, templates and per-sandbox state live. Default /var/lib/coppice.
  std::string state_dir = "/var/lib/coppice";
  // Domain for Host routing (<port>-<id>.<domain>) and the `domain` field of
  // sandboxes. Empty: no domain is reported and any Host of that shape routes.
  std::string domain;
  // Templates root; default <state_dir>/templates.
  std::string templates_dir;
  // Host path of the static coppice-envd; default: next to the coppiced binary.
  std::string envd_path;
  // Host path of coppice-interp (the code-interpreter server), bound into every
  // sandbox at /.coppice/interp; default: next to coppiced when it is there,
  // else none.
  std::string interp_path;
  // Host path of the `coppice` CLI, which runs the template builds asked for
  // through the API (core/template_builds.h); default: next to coppiced.
  std::string cli_path;
  // Who may build templates through the API (E2B's Template.build()): a
  // build's RUN steps run as root on the host, as with a rootful `docker
  // build`, so by default only admin keys may; true: every team's keys.
  bool team_template_builds = false;
  // Warm pool targets per template, from --pool TEMPLATE=N. Default: none.
  std::map<std::string, int> pools;
  // Sandbox lifetime (seconds) when a create names none, and the largest allowed.
  int default_timeout_s = 300;
  // How long a paused sandbox is kept before it is deleted (files,
  // checkpoint and all); 0: for ever.
  int64_t paused_retention_s = 30ll * 24 * 3600;
  int max_timeout_s = 24 * 3600;
  // Connections the gateway's port holds at once, all clients together;
  // 0 (the default): from the fd limit, leaving a quarter of it (at least
  // 256) for sandboxes and the control plane (http/conn_table.h). At a bound
  // the connection idle longest gives way; when all are busy a new one gets 503.
  size_t max_connections = 0;
  // Connections held at once from one client address (capped at
  // max_connections). Default 1024.
  size_t max_connections_per_client = 1024;
  // Seconds a request head may take to arrive whole (slow clients get 408).
  // Default 20.
  int header_timeout_s = 20;
  // Seconds a kept-alive connection may wait for its next request. Default 60.
  int idle_timeout_s = 60;
  // Largest control-plane request body.
  size_t max_body_bytes = 1u << 20;
  // Threads running the HTTP server and proxy; threads doing backend work.
  int io_threads = 2;
  int worker_threads = 4;
  // API keys accepted besides those in the store (COPPICE_API_KEYS, parsed by
  // api::parse_api_keys). Default: none.
  struct ApiKey {
    std::string key;
    std::string team;    // the team it acts for
    bool admin = false;  // may use the /admin API
  };
  std::vector<ApiKey> api_keys;
  // Per-sandbox defaults when the template sets none.
  int default_cpu_count = 1;
  int default_memory_mb = 512;
  // The most a resize (PATCH /sandboxes/{id}) may give a sandbox: CPUs and
  // MiB of memory; 0: no bound. coppiced sets them to the host's CPU count
  // and memory (--max-cpu-count, --max-memory-mb change that).
  int max_cpu_count = 0;
  int max_memory_mb = 0;
  // A sandbox's disk quota (diskSizeMB) when its template sets none.
  int default_disk_mb = 1024;
  // Cap of a volume whose create names no sizeMB (MiB). Default 1024.
  int default_volume_mb = 1024;
  // What a team's stored snapshots may keep on disk together (MiB): the sum
  // of their diskBytes (the files of the layer they copy and their
  // checkpoint). A snapshot that would pass it is refused (507). 0: no cap.
  // Default 10240.
  int snapshot_disk_mb = 10240;
  // Whether the backend enforces per-sandbox disk quotas (set at start from
  // --disk-quota and what the host allows). Off: diskSizeMB is reported as 0,
  // i.e. no cap.
  bool disk_quota = false;
  // First host uid of the ranges sandbox user namespaces map to. Default 0:
  // chosen at start, clear of the other gateways on the host: 1000000 for
  // the default state dir, a spot derived from the path for others
  // (sandbox/ns/uid_ranges.h).
  uint32_t uid_base = 0;
  // How many sandboxes can run at once: each takes a 65536-id range from
  // uid_base on. Default 16384 (ids up to ~1.07e9).
  uint32_t uid_slots = 16384;
  // Size of a sandbox's /dev/shm, in percent of its memory limit (tmpfs
  // pages are charged to the sandbox): filling it ends in ENOSPC, not in its
  // OOM killer. Default 25.
  int shm_percent = 25;
  // RLIMIT_NOFILE of sandbox processes: soft and hard (what a sandbox may
  // raise it to), each capped at the gateway's own hard limit. Default
  // 1024/65536.
  uint64_t sandbox_nofile_soft = 1024;
  uint64_t sandbox_nofile_hard = 65536;
  // Processes + threads all sandboxes together may hold (pids.max of the
  // gateway's parent cgroup). -1 (default): min(pid_max, threads-max) less a
  // reserve for the host (an eighth, 2048..65536); 0: no cap.
  int64_t total_pids_max = -1;
  // Host resources (cgroups, state dir layouts, network namespaces) kept made
  // ahead of cold creates; 0: every create makes its own.
  uint32_t spares = 32;
  // Warm-pool refills run at once while a pool is below half its target
  // (one at a time above it). Default: the CPU count, at least 2.
  int pool_refill_parallel = 2;
  // Threads at background priority making pooled sandboxes, user namespaces
  // and spares. Default: pool_refill_parallel + 2.
  int background_threads = 4;
  // Seconds between the usage samples kept per sandbox for
  // GET /sandboxes/{id}/metrics; 0: no sampling (each query measures once).
  int metrics_interval_s = 5;
  // Why sandboxes have no network on this gateway ("--network off", or what
  // the host lacks); "" when they have one.
  std::string network_off_reason;
  // A pause without memory (E2B's keepMemory: false) writes the sandbox to
  // disk: its processes end, its kernel objects are freed, its state dir
  // (files) and uid range are kept (Backend::suspend); it survives a gateway
  // restart. False: the backend cannot suspend, and such a pause is refused.
  bool pause_to_disk = false;
  // Why a pause without memory is refused (empty when pause_to_disk).
  std::string pause_to_disk_off_reason = "this backend pauses by freezing only";
  // A pause with memory (the default) writes a checkpoint of the sandbox's
  // processes as well (Backend::checkpoint) and resumes by restoring it; it
  // survives a gateway restart and a host reboot. False (or a checkpoint
  // that fails): the sandbox's cgroups are frozen instead, its memory held
  // in RAM until the resume.
  bool memory_checkpoint = false;
  std::string memory_checkpoint_off_reason = "this backend cannot checkpoint";
};

}  // namespace coppice::core
