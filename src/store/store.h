// The gateway's durable state: one SQLite file, `<state_dir>/coppice.db`.
//
// Every sandbox, API key and lifecycle event is written here before the API
// answers, so a gateway restart loses nothing a user created (architecture.md,
// "State and recovery").
//
// Durability: the database runs in WAL mode with synchronous=NORMAL. A commit
// survives a crash of the gateway process (the WAL is in the kernel's page
// cache the moment the commit returns) and the file is never corrupted; only a
// power loss or kernel crash can drop the last transactions. That trade is
// acceptable here because the same power loss also kills every sandbox process
// the lost rows would have described.
//
// Threading: one connection, guarded by a mutex; every method may be called
// from any thread. Prepared statements are cached per connection.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/ids.h"
#include "common/result.h"

namespace coppice::store {

// The database's file name inside the gateway's state directory.
inline constexpr std::string_view kDbFileName = "coppice.db";

// `<state_dir>/coppice.db`.
std::string db_path(std::string_view state_dir);

enum class SandboxState { kRunning, kPaused, kKilled };
std::string_view sandbox_state_name(SandboxState s);  // "running" | "paused" | "killed"
Result<SandboxState> parse_sandbox_state(std::string_view s);

enum class BackendKind { kNs, kVm };
std::string_view backend_name(BackendKind b);  // "ns" | "vm"
Result<BackendKind> parse_backend(std::string_view s);

using coppice::valid_sandbox_id;  // common/ids.h

// The team every sandbox and key belongs to unless another is named: keys
// without a team (a bare COPPICE_API_KEYS entry, the first-start key) and
// every row written before teams existed.
inline constexpr std::string_view kDefaultTeam = "default";

// Team names: 1-63 characters of [a-z0-9_-], starting with a letter or digit
// (they appear in URLs and in COPPICE_API_KEYS, where ':' separates them).
bool valid_team_name(std::string_view name);

// One row of `sandboxes`. Times are unix milliseconds.
struct SandboxRecord {
  std::string id;                 // [a-z0-9]{20}
  std::string template_id;        // the template it was launched from
  std::string alias;              // the template's alias, "" if none
  SandboxState state = SandboxState::kRunning;
  std::string envd_access_token;  // the X-Access-Token envd expects, "" if none
  nlohmann::json metadata = nlohmann::json::object();  // user metadata: a JSON object
  nlohmann::json env_vars = nlohmann::json::object();  // default env vars: a JSON object
  int64_t cpu_count = 0;
  int64_t memory_mb = 0;
  int64_t disk_size_mb = 0;
  int64_t started_at = 0;         // unix ms
  int64_t end_at = 0;             // unix ms: when the TTL reaper acts
  int64_t init_pid = 0;           // host pid of the sandbox's init, 0 if none
  int64_t uid_base = 0;           // first host uid of its user namespace mapping
  std::string state_dir;          // host directory holding its upper layer, sockets...
  BackendKind backend = BackendKind::kNs;
  std::string envd_version;       // semver reported to the SDK
  nlohmann::json extra = nlohmann::json::object();  // backend-specific data: a JSON object
  // The template tree it runs on: "<dev>:<ino>" of the rootfs directory its
  // read-only layer was made from; "" if not known. A replaced template build
  // is kept while any sandbox names its tree (template_trees_in_use).
  std::string template_tree;
  // The team that owns it: only that team's keys see or touch it.
  std::string team = std::string(kDefaultTeam);

  bool operator==(const SandboxRecord&) const = default;
};

// One row of `api_keys`. The key itself is never stored, only its SHA-256.
struct ApiKeyRecord {
  int64_t id = 0;            // assigned by the store, never reused
  std::string name;
  std::string hash;          // lowercase hex SHA-256 of the key (64 characters)
  int64_t created_at = 0;    // unix ms
  int64_t last_used_at = 0;  // unix ms, 0 if never used
  std::string team = std::string(kDefaultTeam);  // the team it acts for
  bool admin = false;        // may manage teams and keys (the /admin API)
};

// One row of `teams`.
struct TeamRecord {
  std::string name;        // valid_team_name
  int64_t created_at = 0;  // unix ms (0 for the default team)
};

// One row of `net_addrs`: a sandbox network address that is taken.
struct NetAddrRecord {
  uint32_t addr = 0;   // IPv4, host byte order
  std::string owner;   // the sandbox id, or "spare" (made ahead, not yet any sandbox's)
  std::string link;    // the host end of its veth
  int64_t since = 0;   // unix ms
  bool operator==(const NetAddrRecord&) const = default;
};

// Volume names: 1-64 characters of [A-Za-z0-9._-], not starting with '.' or
// '-' (so never "." or ".."); unique within a team.
inline constexpr size_t kMaxVolumeNameLength = 64;
bool valid_volume_name(std::string_view name);

// One row of `volumes`: a team's persistent directory, mountable into its
// sandboxes and reachable through the volume content API with its token.
struct VolumeRecord {
  std::string id;          // [a-z0-9]{20}, like a sandbox id
  std::string team;        // the team that owns it
  std::string name;        // valid_volume_name, unique per team
  std::string token;       // bearer token of the content API (kept: E2B shows it on every GET)
  int64_t quota_bytes = 0; // cap on what it holds (0: none enforced)
  int64_t created_at = 0;  // unix ms
  bool operator==(const VolumeRecord&) const = default;
};

// One row of `volume_mounts`: volume `volume_id` mounted at `path` in a sandbox.
struct VolumeMountRecord {
  std::string sandbox_id;
  std::string volume_id;
  std::string volume_name;  // filled in by volume_mounts() (and used in messages)
  std::string path;         // absolute path inside the sandbox
  bool operator==(const VolumeMountRecord&) const = default;
};

// Snapshot names: as volume names (1-64 of [A-Za-z0-9._-], not starting
// with '.' or '-'); unique within a team.
bool valid_snapshot_name(std::string_view name);

// One row of `snapshots`: a sandbox's files (and, with `memory`, its
// processes) kept to start new sandboxes from. Team-scoped like sandboxes.
struct SnapshotRecord {
  std::string id;              // [a-z0-9]{20}
  std::string team;            // the team that owns it
  std::string name;            // valid_snapshot_name, or "" (unnamed)
  std::string source_sandbox;  // the sandbox it was taken from
  std::string template_id;     // that sandbox's template
  bool memory = false;         // a checkpoint of its processes is kept too
  int64_t created_at = 0;      // unix ms
  int64_t disk_bytes = 0;      // what its copy of the files held when taken
  // What the core needs to start from it (its layers, checkpoint dir, the
  // source's envd token, limits, env): a JSON object the store keeps as is.
  nlohmann::json data = nlohmann::json::object();
  bool operator==(const SnapshotRecord&) const = default;
};

// One row of `dir_snapshots` (a Coppice extension): one directory of a
// sandbox copied to the host under a name unique in its team.
struct DirSnapshotRecord {
  std::string team;
  std::string name;            // valid_snapshot_name
  std::string id;              // [a-z0-9]{20}: its directory on the host
  std::string source_sandbox;
  std::string path;            // the directory in that sandbox
  int64_t host_root = 0;       // host uid of that sandbox's root (its files' owners are of its range)
  int64_t bytes = 0;           // what it holds
  int64_t created_at = 0;      // unix ms
  bool operator==(const DirSnapshotRecord&) const = default;
};

// One lifecycle event of a sandbox (what GET /sandboxes/{id}/logs shows).
struct EventRecord {
  int64_t id = 0;  // increases with time
  std::string sandbox_id;
  int64_t at = 0;  // unix ms
  std::string kind;
  std::string detail;
};

// At most this many events are kept per sandbox; older ones are dropped as
// new ones arrive, so a sandbox cannot grow the database without bound.
inline constexpr int64_t kMaxEventsPerSandbox = 1000;

class Store {
 public:
  // Opens (creating it with mode 0600 if missing: rows hold access tokens) the
  // database at `path`, switches it to WAL and brings its schema up to date.
  // Fails with kFailedPrecondition if the file was written by a newer schema.
  static Result<Store> open(const std::string& path);

  Store(Store&&) noexcept;
  Store& operator=(Store&&) noexcept;
  ~Store();

  // The schema version this build writes (PRAGMA user_version).
  static int schema_version();

  // --- sandboxes ---
  // Inserts or replaces the whole row. kInvalidArgument for a malformed id or
  // metadata/env_vars/extra that are not JSON objects.
  Status put_sandbox(const SandboxRecord& rec);
  // The same, with an event appended in the same transaction (a new
  // sandbox's row and its "created" event are one commit).
  Status put_sandbox(const SandboxRecord& rec, std::string_view event_kind, std::string_view event_detail);
  // kNotFound if there is no such row.
  Result<SandboxRecord> get_sandbox(std::string_view id);
  Status update_state(std::string_view id, SandboxState state);
  Status update_end_at(std::string_view id, int64_t end_at_ms);
  // Removes the row, its events and its volume mounts. kNotFound if there
  // was no such row (its volume mounts are dropped all the same).
  Status delete_sandbox(std::string_view id);
  // The template_tree values of every stored sandbox (the trees that must
  // not be removed), without "".
  Result<std::set<std::string>> template_trees_in_use();
  // Rows that are not killed, oldest first; with include_killed, all rows
  // (restart recovery also cleans up after sandboxes killed mid-teardown).
  Result<std::vector<SandboxRecord>> list_sandboxes(bool include_killed = false);

  // Stored sandboxes (not killed) of a team.
  Result<int64_t> count_team_sandboxes(std::string_view team);

  // --- teams ---
  // The default team always exists (the schema creates it).
  // kInvalidArgument for a bad name, kAlreadyExists if there is one.
  Result<TeamRecord> add_team(std::string_view name);
  // Adds the team unless it exists; idempotent.
  Status ensure_team(std::string_view name);
  // kNotFound if there is no such team.
  Result<TeamRecord> get_team(std::string_view name);
  // Sorted by name.
  Result<std::vector<TeamRecord>> list_teams();
  // Removes the team and its keys in one transaction. kNotFound if there is
  // no such team; kFailedPrecondition for the default team or a team that
  // still has sandboxes or volumes.
  Status delete_team(std::string_view name);

  // --- API keys ---
  // kInvalidArgument unless `hash` is 64 lowercase hex digits; kAlreadyExists
  // if a key with that hash is already stored; kNotFound if the team does
  // not exist.
  Result<ApiKeyRecord> add_api_key(std::string_view name, std::string_view hash,
                                   std::string_view team = kDefaultTeam, bool admin = false);
  // kNotFound if no key has this hash.
  Result<ApiKeyRecord> find_api_key(std::string_view hash);
  Result<int64_t> count_api_keys();
  // Every key, or (team non-empty) those of one team; by id.
  Result<std::vector<ApiKeyRecord>> list_api_keys(std::string_view team = "");
  // Records a successful authentication (kNotFound if the key is gone).
  Status touch_api_key(int64_t id, int64_t at_ms);
  // kNotFound if there is no such key, or (team non-empty) it is another
  // team's: a team cannot learn which ids other teams' keys have.
  Status delete_api_key(int64_t id, std::string_view team = "");

  // --- network addresses ---
  // kAlreadyExists when the address is taken.
  Status add_net_addr(const NetAddrRecord& r);
  // Inserts or replaces (a new owner or link for an address).
  Status put_net_addr(const NetAddrRecord& r);
  // Frees it (no-op when it is not taken).
  Status delete_net_addr(uint32_t addr);
  Result<std::vector<NetAddrRecord>> list_net_addrs();

  // --- volumes ---
  // kInvalidArgument for a malformed id/name, kAlreadyExists when the team
  // has a volume of that name.
  Status add_volume(const VolumeRecord& v);
  // kNotFound when missing or (team non-empty) another team's: the same
  // message either way.
  Result<VolumeRecord> get_volume(std::string_view id, std::string_view team = "");
  Result<VolumeRecord> get_volume_by_name(std::string_view team, std::string_view name);
  // A team's volumes (every team's when empty), oldest first.
  Result<std::vector<VolumeRecord>> list_volumes(std::string_view team);
  // Removes the row. kNotFound as get_volume; kFailedPrecondition while any
  // sandbox (running, paused, or being created) has it mounted. The check
  // and the delete are one transaction.
  Status delete_volume(std::string_view id, std::string_view team = "");
  // Records mounts of one sandbox, all or none. kNotFound (naming the
  // volume) when a volume is gone, kAlreadyExists when the sandbox has
  // something at that path already.
  Status add_volume_mounts(std::string_view sandbox_id, const std::vector<VolumeMountRecord>& mounts);
  // kNotFound when nothing is recorded at `path`.
  Status delete_volume_mount(std::string_view sandbox_id, std::string_view path);
  Status delete_volume_mounts(std::string_view sandbox_id);  // idempotent
  // A sandbox's mounts, by path, with each volume's name.
  Result<std::vector<VolumeMountRecord>> volume_mounts(std::string_view sandbox_id);
  // Drops the mounts of sandboxes that have no live row (a create that a
  // crash interrupted); returns how many. For restart recovery.
  Result<int64_t> prune_volume_mounts();

  // --- snapshots ---
  // kInvalidArgument for a malformed id or name. A name the team uses
  // already moves to this snapshot (the older one keeps its id, unnamed),
  // in the same transaction.
  Status add_snapshot(const SnapshotRecord& r);
  // kNotFound when missing or (team non-empty) another team's.
  Result<SnapshotRecord> get_snapshot(std::string_view id, std::string_view team = "");
  // The team's snapshot whose id or name is `ref`; kNotFound otherwise.
  Result<SnapshotRecord> find_snapshot(std::string_view team, std::string_view ref);
  // Oldest first; every team's when `team` is empty; only those taken from
  // `source_sandbox` when it is non-empty.
  Result<std::vector<SnapshotRecord>> list_snapshots(std::string_view team, std::string_view source_sandbox = "");
  // kNotFound as get_snapshot.
  Status delete_snapshot(std::string_view id, std::string_view team = "");

  // --- directory snapshots ---
  // kAlreadyExists when the team has one of that name.
  Status add_dir_snapshot(const DirSnapshotRecord& r);
  Result<DirSnapshotRecord> get_dir_snapshot(std::string_view team, std::string_view name);
  // A team's (every team's when empty), oldest first.
  Result<std::vector<DirSnapshotRecord>> list_dir_snapshots(std::string_view team);
  // kNotFound when the team has none of that name.
  Status delete_dir_snapshot(std::string_view team, std::string_view name);

  // --- events ---
  // Appends an event stamped with the current time. kNotFound if the sandbox
  // does not exist.
  Status append_event(std::string_view sandbox_id, std::string_view kind, std::string_view detail);
  // The most recent `limit` events of the sandbox, oldest first (empty for an
  // unknown sandbox).
  Result<std::vector<EventRecord>> events(std::string_view sandbox_id, int64_t limit = 100);

  // Runs a read-only PRAGMA and returns its first column as text (for tests
  // and diagnostics, e.g. "journal_mode").
  Result<std::string> pragma(std::string_view name);

  struct Impl;

 private:
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace coppice::store
