// coppiced: the Coppice gateway. One process per host: the E2B control-plane
// API and the single-port data-plane proxy, owning every sandbox on the host.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <thread>

#include "api/api.h"
#include "common/log.h"
#include "core/metrics.h"
#include "core/sandbox_manager.h"
#include "net/network.h"
#include "sandbox/ns/cgroup.h"
#include "sandbox/ns/checkpoint.h"
#include "sandbox/ns/disk_quota.h"
#include "sandbox/ns/layer_copy.h"
#include "sandbox/ns/ns_backend.h"
#include "sandbox/ns/uid_ranges.h"
#include "store/keys.h"
#include "store/store.h"
#include "sys/background.h"
#include "sys/fsutil.h"
#include "sys/rlimit.h"
#include "tls/tls_front.h"
#include "templates/host_template.h"
#include "templates/templates.h"

using namespace coppice;
namespace fs = std::filesystem;

namespace {
std::string self_dir() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "." : p.parent_path().string();
}

bool split_listen(const std::string& s, core::GatewayConfig* cfg) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos) return false;
  std::string host = s.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  try {
    int port = std::stoi(s.substr(colon + 1));
    if (port < 0 || port > 65535) return false;
    cfg->listen_host = host.empty() ? "0.0.0.0" : host;
    cfg->listen_port = static_cast<uint16_t>(port);
  } catch (...) {
    return false;
  }
  return true;
}
// The sandboxes' network addresses, kept in the store.
class StoreLedger final : public net::AddressLedger {
 public:
  explicit StoreLedger(store::Store& st) : st_(st) {}
  Status add(const Entry& e) override { return st_.add_net_addr(rec(e)); }
  Status put(const Entry& e) override { return st_.put_net_addr(rec(e)); }
  Status remove(uint32_t addr) override { return st_.delete_net_addr(addr); }
  Result<std::vector<Entry>> list() override {
    auto rows = st_.list_net_addrs();
    if (!rows) return std::unexpected(rows.error());
    std::vector<Entry> out;
    for (auto& r : *rows) out.push_back(Entry{r.addr, std::move(r.owner), std::move(r.link)});
    return out;
  }

 private:
  static store::NetAddrRecord rec(const Entry& e) {
    store::NetAddrRecord r;
    r.addr = e.addr;
    r.owner = e.owner;
    r.link = e.link;
    r.since = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    return r;
  }
  store::Store& st_;
};

}  // namespace

int main(int argc, char** argv) {
  core::GatewayConfig cfg;
  std::string listen = "127.0.0.1:3000", level = "info";
  CLI::App app{"coppiced: the Coppice gateway (E2B-compatible API and sandbox proxy)"};
  app.add_option("--listen", listen, "address:port for the API and the proxy")->capture_default_str();
  app.add_option("--state-dir", cfg.state_dir, "store, templates and sandbox state")->capture_default_str();
  app.add_option("--domain", cfg.domain,
                 "domain for <port>-<id>.<domain> routing, with :port when clients reach the gateway on another "
                 "port than 443 (https) or 80");
  app.add_option("--templates", cfg.templates_dir, "templates root (default <state-dir>/templates)");
  app.add_option("--envd", cfg.envd_path, "path of the static coppice-envd (default: beside coppiced)");
  app.add_option("--interp", cfg.interp_path,
                 "path of coppice-interp, the code-interpreter server (default: beside coppiced, if there)");
  app.add_option("--cli", cfg.cli_path, "path of the coppice CLI, which runs API template builds (default: beside coppiced)");
  std::string template_builds = "admin";
  app.add_option("--template-builds", template_builds,
                 "who may build templates through the API: admin (admin keys) or teams (every team's keys; a "
                 "build's RUN steps run as root on this host)")
      ->check(CLI::IsMember({"admin", "teams"}))
      ->capture_default_str();
  std::vector<std::string> pool_specs;
  app.add_option("--pool", pool_specs, "keep N warm sandboxes of a template: TEMPLATE=N (repeatable)");
  app.add_option("--default-timeout", cfg.default_timeout_s, "sandbox lifetime in seconds when none is asked")
      ->capture_default_str();
  app.add_option("--paused-retention", cfg.paused_retention_s,
                 "seconds a paused sandbox is kept before it is deleted (0: for ever)")
      ->check(CLI::Range(int64_t{0}, int64_t{10} * 365 * 24 * 3600))
      ->capture_default_str();
  app.add_option("--uid-slots", cfg.uid_slots, "sandboxes that can run at once (65536 host ids each)")
      ->check(CLI::Range(1u, uint32_t((sandbox::ns::kUidLimit - sandbox::ns::kUidFloor) / sandbox::ns::kIdsPerSlot)))
      ->capture_default_str();
  app.add_option("--uid-base", cfg.uid_base,
                 "first host uid of the sandboxes' ranges (default: chosen per state dir, clear of other gateways)")
      ->check(CLI::Range(1u, uint32_t(sandbox::ns::kUidLimit - 1)));
  app.add_option("--spares", cfg.spares,
                 "host resources (cgroups, state dir layouts, network namespaces) kept ready for cold creates")
      ->check(CLI::Range(0u, 4096u))
      ->capture_default_str();
  app.add_option("--total-pids-max", cfg.total_pids_max,
                 "processes + threads all sandboxes together may hold (-1: the host's pid budget less a reserve; "
                 "0: no cap)")
      ->check(CLI::Range(int64_t(-1), int64_t(1) << 32))
      ->capture_default_str();
  app.add_option("--shm-percent", cfg.shm_percent, "size of a sandbox's /dev/shm in percent of its memory limit")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  app.add_option("--sandbox-nofile", cfg.sandbox_nofile_soft,
                 "open files per sandbox process (soft RLIMIT_NOFILE; at most the gateway's hard limit)")
      ->check(CLI::Range(uint64_t(64), uint64_t(1) << 20))
      ->capture_default_str();
  app.add_option("--sandbox-nofile-max", cfg.sandbox_nofile_hard,
                 "the most a sandbox process may raise its open-file limit to (hard RLIMIT_NOFILE)")
      ->check(CLI::Range(uint64_t(64), uint64_t(1) << 20))
      ->capture_default_str();
  app.add_option("--workers", cfg.worker_threads, "threads doing sandbox work")->capture_default_str();
  cfg.pool_refill_parallel = std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
  app.add_option("--pool-refill-parallel", cfg.pool_refill_parallel,
                 "warm-pool refills at once while a pool is below half its target")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cfg.max_cpu_count = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  cfg.max_memory_mb = static_cast<int>(std::min<uint64_t>(
      uint64_t(std::max(0L, ::sysconf(_SC_PHYS_PAGES))) * uint64_t(std::max(0L, ::sysconf(_SC_PAGESIZE))) >> 20,
      INT32_MAX));
  app.add_option("--max-cpu-count", cfg.max_cpu_count, "the most CPUs a resize may give a sandbox (default: the host's)")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--max-memory-mb", cfg.max_memory_mb,
                 "the most memory (MiB) a resize may give a sandbox (default: the host's)")
      ->check(CLI::Range(1, INT32_MAX))
      ->capture_default_str();
  app.add_option("--metrics-interval", cfg.metrics_interval_s,
                 "seconds between the usage samples kept per sandbox (0: none)")
      ->check(CLI::Range(0, 3600))
      ->capture_default_str();
  std::string disk_quota = "on", disk_image_size;
  app.add_option("--disk-quota", disk_quota,
                 "on: cap each sandbox's writable layer at its diskSizeMB (btrfs, in place or on an image); "
                 "off: no caps (for hosts that cannot)")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  app.add_option("--disk-image-size", disk_image_size,
                 "size of <state-dir>/disk.img, the sparse btrfs image holding the sandboxes' state when the "
                 "state dir has no quotas, e.g. 20G (default: a quarter of the free space when it is made; "
                 "bigger than the image: it grows)");
  app.add_option("--default-disk-mb", cfg.default_disk_mb, "disk quota (diskSizeMB) of sandboxes whose template sets none")
      ->check(CLI::Range(1, 1 << 24))
      ->capture_default_str();
  app.add_option("--snapshot-disk-mb", cfg.snapshot_disk_mb,
                 "what a team's snapshots may keep on disk together, files and checkpoints (0: no cap)")
      ->check(CLI::Range(0, 1 << 30))
      ->capture_default_str();
  app.add_option("--default-volume-mb", cfg.default_volume_mb, "cap of a volume whose create names no sizeMB")
      ->check(CLI::Range(1, 1 << 24))
      ->capture_default_str();
  app.add_option("--max-connections", cfg.max_connections,
                 "connections held at once (0: three quarters of the fd limit, two fds each)")
      ->capture_default_str();
  app.add_option("--max-connections-per-client", cfg.max_connections_per_client,
                 "connections held at once from one client address")
      ->check(CLI::Range(size_t{1}, size_t{1} << 24))
      ->capture_default_str();
  app.add_option("--header-timeout", cfg.header_timeout_s, "seconds a request head may take to arrive")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.add_option("--idle-timeout", cfg.idle_timeout_s, "seconds a kept-alive connection may wait for a request")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  std::string network_mode = "auto", subnet_text;
  net::NetworkOptions neto;
  neto.bridge.clear();
  app.add_option("--network", network_mode,
                 "sandbox networking: on (fail to start if the host cannot), off (loopback only), auto (on when the "
                 "host can)")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str();
  app.add_option("--bridge", neto.bridge, "the sandboxes' bridge (default coppice0; per state dir for others)");
  app.add_option("--subnet", subnet_text,
                 "the sandboxes' IPv4 subnet; the bridge holds its first address (default 10.213.0.0/16; per state "
                 "dir for others)");
  app.add_option("--uplink", neto.uplink, "the one interface sandbox traffic may leave by (default: the default route's)");
  app.add_option("--dns-upstream", neto.dns_upstreams,
                 "DNS server the sandboxes' resolver asks, IP[:PORT] (repeatable; default: /etc/resolv.conf's)");
  std::vector<std::string> open_ranges;
  app.add_option("--open-range", open_ranges,
                 "a CIDR sandboxes may reach although it is private, link-local or the host's (repeatable)");
  std::string tls_cert, tls_key;
  app.add_option("--tls-cert", tls_cert,
                 "PEM certificate chain for TLS on the port (a wildcard for *.<domain> plus <domain> and "
                 "api.<domain>); with --tls-key the port speaks only TLS");
  app.add_option("--tls-key", tls_key, "PEM private key of --tls-cert");
  app.add_option("--log-level", level, "debug|info|warn|error")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  log::Level lvl;
  if (!log::parse_level(level, &lvl)) {
    std::fprintf(stderr, "unknown log level %s\n", level.c_str());
    return 2;
  }
  log::set_level(lvl);
  if (!split_listen(listen, &cfg)) {
    std::fprintf(stderr, "--listen wants address:port, got %s\n", listen.c_str());
    return 2;
  }
  if (tls_cert.empty() != tls_key.empty()) {
    std::fprintf(stderr, "--tls-cert and --tls-key go together\n");
    return 2;
  }
  // A bad certificate or key stops the start here, in one line.
  tls::Context tls_context;
  if (!tls_cert.empty()) {
    auto c = tls::load_server_context(tls_cert, tls_key);
    if (!c) {
      std::fprintf(stderr, "coppiced: TLS: %s\n", c.error().message().c_str());
      return 1;
    }
    tls_context = std::move(*c);
  }
  if (const char* keys = std::getenv("COPPICE_API_KEYS")) {
    auto parsed = api::parse_api_keys(keys);
    if (!parsed) {
      std::fprintf(stderr, "%s\n", parsed.error().message().c_str());
      return 2;
    }
    cfg.api_keys = std::move(*parsed);
  }
  for (const auto& spec : pool_specs) {
    auto eq = spec.find('=');
    int n = -1;
    if (eq != std::string::npos && eq > 0) {
      try {
        size_t used = 0;
        n = std::stoi(spec.substr(eq + 1), &used);
        if (used != spec.size() - eq - 1) n = -1;
      } catch (...) {
        n = -1;
      }
    }
    if (n < 0 || n > core::SandboxManager::kMaxPoolTarget) {
      std::fprintf(stderr, "--pool wants TEMPLATE=N with 0 <= N <= %d, got %s\n", core::SandboxManager::kMaxPoolTarget,
                   spec.c_str());
      return 2;
    }
    cfg.pools[spec.substr(0, eq)] = n;
  }
  uint64_t disk_image_bytes = 0;
  if (!disk_image_size.empty()) {
    auto b = sandbox::ns::parse_size(disk_image_size);
    if (!b) {
      std::fprintf(stderr, "--disk-image-size: %s\n", b.error().message().c_str());
      return 2;
    }
    disk_image_bytes = *b;
  }
  if (cfg.templates_dir.empty()) cfg.templates_dir = cfg.state_dir + "/templates";
  cfg.background_threads = cfg.pool_refill_parallel + 2;
  if (cfg.interp_path.empty()) {
    if (::access((self_dir() + "/coppice-interp").c_str(), X_OK) == 0) cfg.interp_path = self_dir() + "/coppice-interp";
  } else if (::access(cfg.interp_path.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "coppice-interp not found at %s\n", cfg.interp_path.c_str());
    return 1;
  }
  // Thousands of concurrent streams need more than the usual 1024 fds: take
  // the hard limit, and bound connections by it (http/conn_table.h).
  auto fd_limit = sys::raise_fd_limit();
  if (!fd_limit) {
    COPPICE_LOG(error) << fd_limit.error().to_string();
    return 1;
  }
  http::ServerOptions server_opts;
  server_opts.header_timeout = std::chrono::seconds(cfg.header_timeout_s);
  server_opts.idle_timeout = std::chrono::seconds(cfg.idle_timeout_s);
  server_opts.drain_timeout = server_opts.header_timeout;
  server_opts.limits.max_total =
      cfg.max_connections ? cfg.max_connections : http::connections_for_fd_limit(*fd_limit);
  // A TLS connection holds three fds (the TCP socket and the pair to the
  // server, tls_front.h) where a plain one holds one.
  if (!tls_cert.empty() && !cfg.max_connections) server_opts.limits.max_total = std::max<size_t>(16, server_opts.limits.max_total / 2);
  server_opts.limits.max_per_client = std::min(cfg.max_connections_per_client, server_opts.limits.max_total);
  if (cfg.envd_path.empty()) cfg.envd_path = self_dir() + "/coppice-envd";
  if (cfg.cli_path.empty()) cfg.cli_path = self_dir() + "/coppice";
  cfg.team_template_builds = template_builds == "teams";
  if (::access(cfg.envd_path.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "coppice-envd not found at %s (use --envd)\n", cfg.envd_path.c_str());
    return 1;
  }
  std::error_code ec;
  fs::create_directories(cfg.state_dir + "/sandboxes", ec);
  ::chmod(cfg.state_dir.c_str(), 0711);
  // Templates and sandboxes' layers hold set-uid files nobody vetted: no
  // host user reaches them (the sandboxes see them through their mounts).
  if (auto made = templates::make_templates_root(cfg.templates_dir); !made) {
    std::fprintf(stderr, "templates root %s: %s\n", cfg.templates_dir.c_str(), made.error().to_string().c_str());
    return 1;
  }
  ::chmod((cfg.state_dir + "/sandboxes").c_str(), 0700);
  ::signal(SIGPIPE, SIG_IGN);

  // One gateway per state dir, and host uids of its own (see
  // sandbox/ns/uid_ranges.h): claimed before the store is opened.
  const std::string canonical_state_dir = fs::weakly_canonical(cfg.state_dir).string();
  const bool default_state_dir = canonical_state_dir == "/var/lib/coppice";
  sandbox::ns::UidRangeClaim uid_claim;
  uid_claim.state_dir = canonical_state_dir;
  uid_claim.slots = cfg.uid_slots;
  if (cfg.uid_base != 0) uid_claim.fixed_base = cfg.uid_base;
  uid_claim.preferred_base = default_state_dir ? sandbox::ns::kUidFloor
                                               : sandbox::ns::preferred_uid_base(canonical_state_dir, cfg.uid_slots);
  auto uid_range = sandbox::ns::claim_uid_range(uid_claim);
  if (!uid_range) {
    COPPICE_LOG(error) << uid_range.error().to_string();
    return 1;
  }

  // The sandboxes' state dirs on storage that caps each (disk_quota.h). The
  // store stays on the state dir's own file system.
  std::unique_ptr<sandbox::ns::DiskQuota> disk;
  if (disk_quota == "on") {
    sandbox::ns::DiskQuotaOptions dqo;
    dqo.dir = cfg.state_dir + "/sandboxes";
    dqo.image = cfg.state_dir + "/disk.img";
    dqo.image_bytes = disk_image_bytes;
    auto d = sandbox::ns::DiskQuota::open(dqo);
    if (!d) {
      COPPICE_LOG(error) << d.error().to_string() << " (--disk-quota=off runs without per-sandbox disk caps)";
      return 1;
    }
    disk = std::move(*d);
    cfg.disk_quota = true;
    COPPICE_LOG(info) << "disk quotas: " << disk->describe();
  } else {
    COPPICE_LOG(warn) << "disk quotas are off: a sandbox can fill " << cfg.state_dir
                      << " for everyone; diskSizeMB is reported as 0 (not enforced)";
  }
  {
    // How writable layers are copied (snapshots, pause to disk, fork).
    const std::string sandboxes = cfg.state_dir + "/sandboxes";
    const auto kind = sandbox::ns::layer_copy_kind(disk.get(), sys::path_exists(sandboxes) ? sandboxes : cfg.state_dir);
    COPPICE_LOG(info) << "layer copies: " << sandbox::ns::describe(kind);
  }
  // At exit, after the backend (declared below) has removed its spares: the
  // image is unmounted when no sandbox is left (unmount_disk), else it stays
  // mounted for the sandboxes, which outlive the gateway.
  struct DiskUnmount {
    sandbox::ns::DiskQuota* disk;
    bool armed = false;
    ~DiskUnmount() {
      if (!armed || !disk) return;
      if (auto s = disk->unmount(); !s) {
        COPPICE_LOG(warn) << s.error().to_string();
      }
    }
  } unmount_disk{disk.get()};

  auto store = store::Store::open(store::db_path(cfg.state_dir));
  if (!store) {
    COPPICE_LOG(error) << "open store: " << store.error().to_string();
    return 1;
  }
  // The teams COPPICE_API_KEYS names exist from the start.
  for (const auto& k : cfg.api_keys) {
    if (auto t = store->ensure_team(k.team); !t) {
      COPPICE_LOG(error) << "team " << k.team << ": " << t.error().to_string();
      return 1;
    }
  }
  auto key = api::ensure_api_key(cfg, *store);
  if (!key) {
    COPPICE_LOG(error) << "API key: " << key.error().to_string();
    return 1;
  }
  if (*key) {
    std::printf("coppiced: created an API key (only its hash is stored; it is not shown again):\n  %s\n",
                (*key)->c_str());
    std::fflush(stdout);
  }
  if (auto t = templates::ensure_host_template(cfg.templates_dir); !t) {
    COPPICE_LOG(error) << "host template: " << t.error().to_string();
    return 1;
  }
  templates::TemplateRegistry templates(cfg.templates_dir);
  // Everything kept ready ahead of demand is made here, at background
  // priority (sys/background.h): user namespaces, spares, warm pools.
  sys::BackgroundPool background(static_cast<size_t>(cfg.background_threads));
  if (auto s = templates.reload(); !s) {
    COPPICE_LOG(error) << "templates: " << s.error().to_string();
    return 1;
  }
  // The sandboxes' network (net/network.h): bridge, firewall, resolver.
  // Before the backend, which puts every sandbox on it; after the backend
  // at exit.
  StoreLedger ledger(*store);
  std::unique_ptr<net::Network> network;
  if (network_mode != "off") {
    const std::string tag = store::sha256_hex(canonical_state_dir).substr(0, 8);
    if (neto.bridge.empty()) neto.bridge = default_state_dir ? "coppice0" : "cpb-" + tag;
    if (default_state_dir) {
      neto.table = "coppice";
    } else {
      neto.table = "coppice-" + tag;
    }
    if (subnet_text.empty()) {
      // 10.213.0.0/16 for the default state dir; 10.160-239.0.0/16 by a hash for others.
      subnet_text = default_state_dir ? "10.213.0.0/16"
                                      : "10." + std::to_string(160 + std::stoul(tag.substr(0, 4), nullptr, 16) % 80) + ".0.0/16";
    }
    auto sn = net::parse_cidr4(subnet_text);
    if (!sn) {
      COPPICE_LOG(error) << "--subnet: " << sn.error().message();
      return 2;
    }
    neto.subnet = *sn;
    for (const auto& r : open_ranges) {
      auto c = net::parse_cidr4(r);
      if (!c) {
        COPPICE_LOG(error) << "--open-range: " << c.error().message();
        return 2;
      }
      neto.open_ranges.push_back(*c);
    }
    neto.run_dir = cfg.state_dir + "/net";
    auto n = net::Network::open(neto, ledger);
    if (n) {
      network = std::move(*n);
      COPPICE_LOG(info) << "network: " << network->describe();
    } else if (network_mode == "on") {
      COPPICE_LOG(error) << "network: " << n.error().message() << " (--network off runs loopback-only sandboxes)";
      return 1;
    } else {
      cfg.network_off_reason = n.error().message();
      COPPICE_LOG(warn) << "network: sandboxes get loopback only: " << n.error().message();
    }
  } else {
    cfg.network_off_reason = "--network off";
  }

  // The namespace backend suspends a sandbox (files only) for a pause
  // without memory.
  cfg.pause_to_disk = true;
  cfg.pause_to_disk_off_reason.clear();
  // ... and, with criu, checkpoints it with its memory for a pause with memory.
  cfg.memory_checkpoint_off_reason = sandbox::ns::checkpoint_unavailable_reason();
  cfg.memory_checkpoint = cfg.memory_checkpoint_off_reason.empty();
  if (cfg.memory_checkpoint) {
    COPPICE_LOG(info) << "pause with memory: checkpoints to disk (criu at " << sandbox::ns::criu_path() << ")";
  } else {
    COPPICE_LOG(warn) << "pause with memory: freezes only (" << cfg.memory_checkpoint_off_reason << ")";
  }

  // Kernel objects are named per state dir, so two gateways on one host (a
  // test beside the real one) never take each other's sandboxes for orphans.
  sandbox::NsOptions nso;
  nso.uid_base = uid_range->range().base;
  nso.uid_slots = cfg.uid_slots;
  nso.registry_dir = cfg.state_dir + "/ns";
  nso.spares = cfg.spares;
  // In sandboxes/ (on the quota file system): skeletons are renamed into it.
  nso.spare_dir = cfg.state_dir + "/sandboxes/.spare";
  // Volumes on the quota file system too (each a subvolume with its cap).
  nso.volume_dir = cfg.state_dir + "/sandboxes/.volumes";
  nso.disk = disk.get();
  nso.total_pids_max = cfg.total_pids_max;
  nso.nofile_soft = std::min(cfg.sandbox_nofile_soft, cfg.sandbox_nofile_hard);
  nso.nofile_hard = cfg.sandbox_nofile_hard;
  nso.spare_limits.cpu_millicores = cfg.default_cpu_count * 1000;
  nso.spare_limits.memory_bytes = static_cast<uint64_t>(cfg.default_memory_mb) << 20;
  nso.background = &background;
  nso.network = network.get();
  if (!default_state_dir) nso.cgroup_parent = "coppice-" + store::sha256_hex(canonical_state_dir).substr(0, 12);
  // At exit, once the backend (declared below, so destroyed first) has
  // removed its spares: the parent cgroups, unless sandboxes still run in
  // them (those are adopted by the next start, which makes them again).
  struct ParentCgroups {
    std::string name;
    ~ParentCgroups() {
      if (auto s = sandbox::ns::CgroupManager::remove_parent_if_empty(name); !s) {
        COPPICE_LOG(warn) << s.error().to_string();
      }
    }
  } parent_cgroups{nso.cgroup_parent};
  auto backend = sandbox::make_ns_backend(nso);
  if (!backend) {
    COPPICE_LOG(error) << "namespace backend: " << backend.error().to_string();
    return 1;
  }
  http::asio::thread_pool workers(static_cast<size_t>(std::max(1, cfg.worker_threads)));
  // Sockets into sandboxes' networks for the proxy: apart from the workers,
  // so a burst of creates never delays a proxied request.
  http::asio::thread_pool netns_pool(2);
  http::asio::io_context io(cfg.io_threads);
  core::metrics::Registry registry;
  core::metrics::GatewayMetrics metrics(registry);
  core::SandboxManager mgr(cfg, *store, **backend, templates,
                           core::ManagerExecutors{io.get_executor(), &workers, &background}, metrics, network.get());
  api::Api api(cfg, mgr, templates, *store, metrics, **backend, netns_pool);
  // Figures computed at each scrape, from the live state rather than kept in step with it.
  registry.gauge_collector("coppice_sandboxes", "Sandboxes by state.", [&mgr] {
    auto c = mgr.count_by_state();
    return std::vector<core::metrics::Sample>{{{{"state", "running"}}, static_cast<double>(c.running)},
                                              {{{"state", "paused"}}, static_cast<double>(c.paused)}};
  });
  // Every template has a pool, empty unless warmed.
  auto pool_gauge = [&templates, &mgr](bool available) {
    std::map<std::string, double> v;
    for (const auto& t : templates.list()) v[t.name] = 0;
    for (const auto& p : mgr.pools()) v[p.template_id] = available ? p.available : p.in_use;
    std::vector<core::metrics::Sample> out;
    for (const auto& [name, n] : v) out.push_back({{{"template", name}}, n});
    return out;
  };
  registry.gauge_collector("coppice_pool_available", "Ready sandboxes waiting in each template's pool.",
                           [pool_gauge] { return pool_gauge(true); });
  registry.gauge_collector("coppice_pool_in_use", "Sandboxes checked out of each template's pool and still alive.",
                           [pool_gauge] { return pool_gauge(false); });
  registry.gauge_collector(
      "coppice_host_spares_ready",
      "Host-resource bundles (cgroups, state dir layout, network namespace) ready for cold creates.",
      [b = backend->get()] { return std::vector<core::metrics::Sample>{{{}, static_cast<double>(b->spares_ready())}}; });
  if (network) {
    auto traffic = [n = network.get()](bool bytes) {
      auto t = n->totals();
      return std::vector<core::metrics::Sample>{
          {{{"direction", "egress"}}, static_cast<double>(bytes ? t.tx_bytes : t.tx_packets)},
          {{{"direction", "ingress"}}, static_cast<double>(bytes ? t.rx_bytes : t.rx_packets)}};
    };
    registry.gauge_collector("coppice_sandbox_network_bytes_total",
                             "Bytes sandboxes sent (egress) and received (ingress) on their network, all sandboxes "
                             "together, those gone included.",
                             [traffic] { return traffic(true); });
    registry.gauge_collector("coppice_sandbox_network_packets_total",
                             "Packets sandboxes sent (egress) and received (ingress), all together.",
                             [traffic] { return traffic(false); });
  }
  http::Server server(io, [&](http::Exchange& ex) { return api.handle(ex); }, server_opts);
  std::unique_ptr<tls::TlsFront> tls_front;
  if (tls_context) tls_front = std::make_unique<tls::TlsFront>(io, server, tls_context, server_opts.header_timeout);
  // Preview URLs are signed with a secret the gateway keeps in its state dir.
  auto preview_secret = proxy::load_or_make_secret(cfg.state_dir + "/preview.key");
  if (!preview_secret) {
    COPPICE_LOG(error) << preview_secret.error().to_string();
    return 1;
  }
  const proxy::PreviewSigner preview_signer(std::move(*preview_secret));
  api.set_preview(&preview_signer, tls_front != nullptr);

  // Recover before serving, so the first request sees every sandbox.
  std::optional<Status> recovered;
  http::asio::co_spawn(io, mgr.recover(), [&](std::exception_ptr e, Status s) {
    recovered = e ? Status(make_error(ErrorCode::kInternal, "recover threw")) : s;
    io.stop();
  });
  io.run();
  io.restart();
  if (!recovered || !*recovered) {
    COPPICE_LOG(error) << "recover: " << (recovered ? recovered->error().to_string() : "did not finish");
    return 1;
  }
  auto port = tls_front ? tls_front->listen_tcp(cfg.listen_host, cfg.listen_port)
                       : server.listen_tcp(cfg.listen_host, cfg.listen_port);
  if (!port) {
    COPPICE_LOG(error) << port.error().to_string();
    return 1;
  }
  COPPICE_LOG(info) << "coppiced " << COPPICE_VERSION << " listening on " << cfg.listen_host << ":" << *port << (tls_front ? " (TLS)" : "")
                    << ", state in " << cfg.state_dir << ", " << mgr.count() << " sandboxes recovered; at most "
                    << server_opts.limits.max_total << " connections (" << server_opts.limits.max_per_client
                    << " per client), fd limit " << *fd_limit;
  std::optional<Status> started;
  http::asio::co_spawn(io, mgr.start(), [&](std::exception_ptr e, Status s) {
    started = e ? Status(make_error(ErrorCode::kInternal, "start threw")) : s;
    io.stop();
  });
  io.run();
  io.restart();
  if (!started || !*started) {
    COPPICE_LOG(error) << (started ? started->error().to_string() : "start did not finish");
    return 2;
  }

  // SIGTERM/SIGINT: stop serving, drain the warm pools, exit. Sandboxes keep
  // running and are adopted again on the next start: a gateway restart loses
  // nothing. A second signal exits at once (pool leftovers are then removed
  // by the next start's recovery).
  http::asio::signal_set signals(io, SIGTERM, SIGINT);
  std::function<void(const boost::system::error_code&, int)> on_signal;
  bool stopping = false;
  on_signal = [&](const boost::system::error_code& e, int sig) {
    if (e) return;
    if (stopping) {
      COPPICE_LOG(warn) << "signal " << sig << " again: exiting now";
      std::_Exit(1);
    }
    stopping = true;
    COPPICE_LOG(info) << "signal " << sig << ": stopping (sandboxes keep running; draining pools)";
    server.stop();
    if (tls_front) tls_front->stop();
    signals.async_wait(on_signal);
    http::asio::co_spawn(io, mgr.shutdown(), [&](std::exception_ptr) { io.stop(); });
  };
  signals.async_wait(on_signal);
  std::vector<std::thread> threads;
  for (int i = 1; i < cfg.io_threads; ++i) threads.emplace_back([&] { io.run(); });
  io.run();
  for (auto& t : threads) t.join();
  workers.join();
  netns_pool.join();
  // No sandbox left: the uid range goes back to the host. Otherwise the
  // entry stays, so the next start takes the range its sandboxes use.
  if (auto left = (*backend)->list_existing(); left && left->empty()) {
    if (auto s = uid_range->withdraw(); !s) {
      COPPICE_LOG(warn) << s.error().to_string();
    }
    unmount_disk.armed = true;
  } else if (network) {
    // Sandboxes still run: their rules stay in the kernel for the next start.
    network->keep_in_kernel();
  }
  return 0;
}
