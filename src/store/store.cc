#include "store/store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <set>
#include <unordered_map>

#include "common/ids.h"
#include "common/log.h"
#include "store/checkpointer.h"
#include "sys/fd.h"

namespace coppice::store {
namespace {

// Schema migrations, applied in order; migration i brings the database from
// user_version i to i+1. Never edit a released entry: append a new one.
//
// Tables are STRICT so a value of the wrong type is refused instead of being
// stored silently. Events reference their sandbox with ON DELETE CASCADE so
// deleting a sandbox removes its log in the same statement.
constexpr const char* kMigrations[] = {
    // 1: the initial schema.
    R"sql(
CREATE TABLE sandboxes (
  id                TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 20),
  template_id       TEXT NOT NULL,
  alias             TEXT NOT NULL DEFAULT '',
  state             TEXT NOT NULL CHECK (state IN ('running', 'paused', 'killed')),
  envd_access_token TEXT NOT NULL DEFAULT '',
  metadata          TEXT NOT NULL DEFAULT '{}',
  env_vars          TEXT NOT NULL DEFAULT '{}',
  cpu_count         INTEGER NOT NULL DEFAULT 0,
  memory_mb         INTEGER NOT NULL DEFAULT 0,
  disk_size_mb      INTEGER NOT NULL DEFAULT 0,
  started_at        INTEGER NOT NULL DEFAULT 0,
  end_at            INTEGER NOT NULL DEFAULT 0,
  init_pid          INTEGER NOT NULL DEFAULT 0,
  uid_base          INTEGER NOT NULL DEFAULT 0,
  state_dir         TEXT NOT NULL DEFAULT '',
  backend           TEXT NOT NULL CHECK (backend IN ('ns', 'vm')),
  envd_version      TEXT NOT NULL DEFAULT '',
  extra             TEXT NOT NULL DEFAULT '{}'
) STRICT;
CREATE INDEX sandboxes_by_state ON sandboxes (state);

CREATE TABLE api_keys (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  name         TEXT NOT NULL,
  hash         TEXT NOT NULL UNIQUE CHECK (length(hash) = 64),
  created_at   INTEGER NOT NULL,
  last_used_at INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE events (
  id         INTEGER PRIMARY KEY,
  sandbox_id TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
  at         INTEGER NOT NULL,
  kind       TEXT NOT NULL,
  detail     TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX events_by_sandbox ON events (sandbox_id, id);
)sql",
    // 2: the template tree each sandbox runs on ("<dev>:<ino>" of its rootfs
    // directory), so a replaced build is removed only after its last sandbox.
    R"sql(
ALTER TABLE sandboxes ADD COLUMN template_tree TEXT NOT NULL DEFAULT '';
CREATE INDEX sandboxes_by_template_tree ON sandboxes (template_tree);
)sql",
    // 3: teams. Every key and sandbox belongs to one; what existed before
    // belongs to the default team, and the keys stored so far (the
    // first-start key: each could do everything) become admin keys. (No
    // REFERENCES on the added columns: SQLite refuses a foreign key on an
    // added column with a non-NULL default; the store keeps them consistent.)
    R"sql(
CREATE TABLE teams (
  name       TEXT PRIMARY KEY NOT NULL CHECK (length(name) BETWEEN 1 AND 63),
  created_at INTEGER NOT NULL
) STRICT;
INSERT INTO teams (name, created_at) VALUES ('default', 0);
ALTER TABLE api_keys ADD COLUMN team TEXT NOT NULL DEFAULT 'default';
ALTER TABLE api_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1));
UPDATE api_keys SET admin = 1;
CREATE INDEX api_keys_by_team ON api_keys (team);
ALTER TABLE sandboxes ADD COLUMN team TEXT NOT NULL DEFAULT 'default';
CREATE INDEX sandboxes_by_team ON sandboxes (team);
)sql",
    // 4: the sandboxes' network addresses, so that a restart (even after
    // kill -9) never hands one out twice: each row is an address in use or
    // still held by kernel objects (owner: a sandbox id, or "spare").
    R"sql(
CREATE TABLE net_addrs (
  addr  INTEGER PRIMARY KEY NOT NULL CHECK (addr BETWEEN 0 AND 4294967295),
  owner TEXT NOT NULL,
  link  TEXT NOT NULL,
  since INTEGER NOT NULL
) STRICT;
)sql",
    // 5: volumes (a team's persistent directories) and which sandbox has
    // which mounted where, so a restart knows which are in use. A mount row
    // is written before the sandbox's row (a create in flight holds its
    // volumes too): no foreign key to sandboxes; the store drops a sandbox's
    // mounts with it and prune_volume_mounts() drops those of sandboxes that
    // are gone. A volume with mounts cannot be deleted (RESTRICT).
    R"sql(
CREATE TABLE volumes (
  id          TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 20),
  team        TEXT NOT NULL,
  name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
  token       TEXT NOT NULL,
  quota_bytes INTEGER NOT NULL CHECK (quota_bytes >= 0),
  created_at  INTEGER NOT NULL,
  UNIQUE (team, name)
) STRICT;
CREATE TABLE volume_mounts (
  sandbox_id TEXT NOT NULL CHECK (length(sandbox_id) = 20),
  volume_id  TEXT NOT NULL REFERENCES volumes (id) ON DELETE RESTRICT,
  path       TEXT NOT NULL,
  PRIMARY KEY (sandbox_id, path)
) STRICT;
CREATE INDEX volume_mounts_by_volume ON volume_mounts (volume_id);
)sql",
    // 6: snapshots (a sandbox's files, and its memory, kept to start new
    // sandboxes from). A name is unique within a team; `data` holds what
    // the core needs to start from it (layers, checkpoint, envd token...).
    R"sql(
CREATE TABLE snapshots (
  id             TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 20),
  team           TEXT NOT NULL,
  name           TEXT NOT NULL,
  source_sandbox TEXT NOT NULL,
  template_id    TEXT NOT NULL,
  memory         INTEGER NOT NULL CHECK (memory IN (0, 1)),
  created_at     INTEGER NOT NULL,
  disk_bytes     INTEGER NOT NULL CHECK (disk_bytes >= 0),
  data           TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX snapshots_by_name ON snapshots (team, name) WHERE name != '';
CREATE INDEX snapshots_by_team ON snapshots (team, created_at);
CREATE TABLE dir_snapshots (
  team           TEXT NOT NULL,
  name           TEXT NOT NULL,
  id             TEXT NOT NULL CHECK (length(id) = 20),
  source_sandbox TEXT NOT NULL,
  path           TEXT NOT NULL,
  host_root      INTEGER NOT NULL,
  bytes          INTEGER NOT NULL,
  created_at     INTEGER NOT NULL,
  PRIMARY KEY (team, name)
) STRICT;
)sql",
};

constexpr int kSchemaVersion = static_cast<int>(std::size(kMigrations));

// All statements the store runs, as named constants: the cache is keyed by
// their text.
constexpr const char* kPutSandbox =
    "INSERT INTO sandboxes (id, template_id, alias, state, envd_access_token, metadata, "
    "env_vars, cpu_count, memory_mb, disk_size_mb, started_at, end_at, init_pid, uid_base, "
    "state_dir, backend, envd_version, extra, template_tree, team) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20) "
    "ON CONFLICT (id) DO UPDATE SET template_id = excluded.template_id, alias = excluded.alias, "
    "state = excluded.state, envd_access_token = excluded.envd_access_token, "
    "metadata = excluded.metadata, env_vars = excluded.env_vars, cpu_count = excluded.cpu_count, "
    "memory_mb = excluded.memory_mb, disk_size_mb = excluded.disk_size_mb, "
    "started_at = excluded.started_at, end_at = excluded.end_at, init_pid = excluded.init_pid, "
    "uid_base = excluded.uid_base, state_dir = excluded.state_dir, backend = excluded.backend, "
    "envd_version = excluded.envd_version, extra = excluded.extra, template_tree = excluded.template_tree, "
    "team = excluded.team";
// (Not INSERT OR REPLACE: REPLACE deletes the old row first, which would
// cascade to the sandbox's events.)

constexpr const char* kGetSandbox =
    "SELECT id, template_id, alias, state, envd_access_token, metadata, env_vars, cpu_count, "
    "memory_mb, disk_size_mb, started_at, end_at, init_pid, uid_base, state_dir, backend, "
    "envd_version, extra, template_tree, team FROM sandboxes WHERE id = ?1";
constexpr const char* kListLive =
    "SELECT id, template_id, alias, state, envd_access_token, metadata, env_vars, cpu_count, "
    "memory_mb, disk_size_mb, started_at, end_at, init_pid, uid_base, state_dir, backend, "
    "envd_version, extra, template_tree, team FROM sandboxes WHERE state != 'killed' ORDER BY started_at, id";
constexpr const char* kListAll =
    "SELECT id, template_id, alias, state, envd_access_token, metadata, env_vars, cpu_count, "
    "memory_mb, disk_size_mb, started_at, end_at, init_pid, uid_base, state_dir, backend, "
    "envd_version, extra, template_tree, team FROM sandboxes ORDER BY started_at, id";
constexpr const char* kTemplateTrees =
    "SELECT DISTINCT template_tree FROM sandboxes WHERE template_tree != ''";
constexpr const char* kPutNetAddr =
    "INSERT INTO net_addrs (addr, owner, link, since) VALUES (?1, ?2, ?3, ?4) "
    "ON CONFLICT (addr) DO UPDATE SET owner = excluded.owner, link = excluded.link";
constexpr const char* kAddNetAddr = "INSERT INTO net_addrs (addr, owner, link, since) VALUES (?1, ?2, ?3, ?4)";
constexpr const char* kDeleteNetAddr = "DELETE FROM net_addrs WHERE addr = ?1";
constexpr const char* kListNetAddrs = "SELECT addr, owner, link, since FROM net_addrs ORDER BY addr";
constexpr const char* kUpdateState = "UPDATE sandboxes SET state = ?2 WHERE id = ?1";
constexpr const char* kUpdateEndAt = "UPDATE sandboxes SET end_at = ?2 WHERE id = ?1";
constexpr const char* kDeleteSandbox = "DELETE FROM sandboxes WHERE id = ?1";

constexpr const char* kAddVolume =
    "INSERT INTO volumes (id, team, name, token, quota_bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
constexpr const char* kGetVolume =
    "SELECT id, team, name, token, quota_bytes, created_at FROM volumes WHERE id = ?1";
constexpr const char* kGetVolumeByName =
    "SELECT id, team, name, token, quota_bytes, created_at FROM volumes WHERE team = ?1 AND name = ?2";
constexpr const char* kListVolumes =
    "SELECT id, team, name, token, quota_bytes, created_at FROM volumes WHERE team = ?1 ORDER BY created_at, id";
constexpr const char* kListAllVolumes =
    "SELECT id, team, name, token, quota_bytes, created_at FROM volumes ORDER BY created_at, id";
constexpr const char* kCountTeamVolumes = "SELECT count(*) FROM volumes WHERE team = ?1";
constexpr const char* kCountVolumeMounts = "SELECT count(*) FROM volume_mounts WHERE volume_id = ?1";
constexpr const char* kDeleteVolume = "DELETE FROM volumes WHERE id = ?1";
constexpr const char* kAddVolumeMount = "INSERT INTO volume_mounts (sandbox_id, volume_id, path) VALUES (?1, ?2, ?3)";
constexpr const char* kDeleteVolumeMount = "DELETE FROM volume_mounts WHERE sandbox_id = ?1 AND path = ?2";
constexpr const char* kDeleteVolumeMounts = "DELETE FROM volume_mounts WHERE sandbox_id = ?1";
constexpr const char* kListVolumeMounts =
    "SELECT m.sandbox_id, m.volume_id, v.name, m.path FROM volume_mounts m JOIN volumes v ON v.id = m.volume_id "
    "WHERE m.sandbox_id = ?1 ORDER BY m.path";
constexpr const char* kPruneVolumeMounts =
    "DELETE FROM volume_mounts WHERE sandbox_id NOT IN (SELECT id FROM sandboxes WHERE state != 'killed')";

constexpr const char* kSnapshotColumns =
    "SELECT id, team, name, source_sandbox, template_id, memory, created_at, disk_bytes, data FROM snapshots ";
constexpr const char* kAddSnapshot =
    "INSERT INTO snapshots (id, team, name, source_sandbox, template_id, memory, created_at, disk_bytes, data) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
constexpr const char* kUnnameSnapshot = "UPDATE snapshots SET name = '' WHERE team = ?1 AND name = ?2";
constexpr const char* kDeleteSnapshot = "DELETE FROM snapshots WHERE id = ?1";

constexpr const char* kAddKey =
    "INSERT INTO api_keys (name, hash, created_at, team, admin) VALUES (?1, ?2, ?3, ?4, ?5) "
    "RETURNING id, name, hash, created_at, last_used_at, team, admin";
constexpr const char* kFindKey =
    "SELECT id, name, hash, created_at, last_used_at, team, admin FROM api_keys WHERE hash = ?1";
constexpr const char* kListKeys =
    "SELECT id, name, hash, created_at, last_used_at, team, admin FROM api_keys ORDER BY id";
constexpr const char* kListTeamKeys =
    "SELECT id, name, hash, created_at, last_used_at, team, admin FROM api_keys WHERE team = ?1 ORDER BY id";
constexpr const char* kCountKeys = "SELECT count(*) FROM api_keys";
constexpr const char* kTouchKey = "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1";
constexpr const char* kDeleteKey = "DELETE FROM api_keys WHERE id = ?1";
constexpr const char* kDeleteTeamKey = "DELETE FROM api_keys WHERE id = ?1 AND team = ?2";
constexpr const char* kDeleteKeysOfTeam = "DELETE FROM api_keys WHERE team = ?1";

constexpr const char* kAddTeam = "INSERT INTO teams (name, created_at) VALUES (?1, ?2)";
constexpr const char* kEnsureTeam = "INSERT OR IGNORE INTO teams (name, created_at) VALUES (?1, ?2)";
constexpr const char* kGetTeam = "SELECT name, created_at FROM teams WHERE name = ?1";
constexpr const char* kListTeams = "SELECT name, created_at FROM teams ORDER BY name";
constexpr const char* kDeleteTeam = "DELETE FROM teams WHERE name = ?1";
constexpr const char* kCountTeamSandboxes =
    "SELECT count(*) FROM sandboxes WHERE team = ?1 AND state != 'killed'";

constexpr const char* kAppendEvent =
    "INSERT INTO events (sandbox_id, at, kind, detail) VALUES (?1, ?2, ?3, ?4)";
// Keeps the newest kMaxEventsPerSandbox events of one sandbox.
constexpr const char* kTrimEvents =
    "DELETE FROM events WHERE sandbox_id = ?1 AND id <= "
    "(SELECT id FROM events WHERE sandbox_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)";
constexpr const char* kEvents =
    "SELECT id, sandbox_id, at, kind, detail FROM "
    "(SELECT * FROM events WHERE sandbox_id = ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id";

constexpr const char* kBegin = "BEGIN IMMEDIATE";
constexpr const char* kCommit = "COMMIT";
constexpr const char* kRollback = "ROLLBACK";

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

ErrorCode code_for_sqlite(int rc) {
  switch (rc) {
    case SQLITE_CONSTRAINT_PRIMARYKEY:
    case SQLITE_CONSTRAINT_UNIQUE:
      return ErrorCode::kAlreadyExists;
    case SQLITE_CONSTRAINT_FOREIGNKEY:
      return ErrorCode::kNotFound;
    default:
      break;
  }
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return ErrorCode::kUnavailable;
    case SQLITE_FULL:
    case SQLITE_NOMEM:
      return ErrorCode::kResourceExhausted;
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_AUTH:
      return ErrorCode::kPermissionDenied;
    case SQLITE_CANTOPEN:
      return ErrorCode::kNotFound;
    case SQLITE_CONSTRAINT:
    case SQLITE_TOOBIG:
    case SQLITE_MISMATCH:
      return ErrorCode::kInvalidArgument;
    default:
      return ErrorCode::kInternal;
  }
}

// "step: <sqlite message> (<result code name>)", with the OS errno when the
// failure came from a system call.
Error sqlite_error(sqlite3* db, int rc, std::string_view step) {
  std::string msg(step);
  msg += ": ";
  msg += db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  msg += " (";
  msg += sqlite3_errstr(rc);
  msg += ")";
  int sys_errno = db ? sqlite3_system_errno(db) : 0;
  if ((rc & 0xff) != SQLITE_IOERR && (rc & 0xff) != SQLITE_CANTOPEN) sys_errno = 0;
  // "database or disk is full": said as ENOSPC, so it reads as a full disk (507).
  if ((rc & 0xff) == SQLITE_FULL && sys_errno == 0) sys_errno = ENOSPC;
  return Error(code_for_sqlite(rc), std::move(msg), sys_errno);
}

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct StmtFinalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// Resets a cached statement when the scope that used it ends, so the next
// user finds it unbound and not holding a read transaction open.
class StmtUse {
 public:
  explicit StmtUse(sqlite3_stmt* s) : s_(s) {}
  ~StmtUse() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  StmtUse(const StmtUse&) = delete;
  StmtUse& operator=(const StmtUse&) = delete;
  sqlite3_stmt* get() const { return s_; }

 private:
  sqlite3_stmt* s_;
};

void bind_arg(sqlite3_stmt* s, int i, std::string_view v) {
  sqlite3_bind_text64(s, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
}
void bind_arg(sqlite3_stmt* s, int i, int64_t v) { sqlite3_bind_int64(s, i, v); }

std::string column_text(sqlite3_stmt* s, int i) {
  const unsigned char* p = sqlite3_column_text(s, i);
  if (!p) return {};
  return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(s, i)));
}

// JSON text for a column. Invalid UTF-8 in user strings is replaced rather
// than thrown on: the store must not fail on what the API accepted.
std::string json_text(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Result<nlohmann::json> parse_json_column(sqlite3_stmt* s, int i, std::string_view what) {
  std::string text = column_text(s, i);
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return make_error(ErrorCode::kInternal, "column " + std::string(what) + " is not valid JSON");
  }
  return j;
}

Result<SandboxRecord> read_sandbox(sqlite3_stmt* s) {
  SandboxRecord r;
  r.id = column_text(s, 0);
  r.template_id = column_text(s, 1);
  r.alias = column_text(s, 2);
  auto state = parse_sandbox_state(column_text(s, 3));
  if (!state) return std::unexpected(std::move(state.error()).context("sandbox " + r.id));
  r.state = *state;
  r.envd_access_token = column_text(s, 4);
  auto metadata = parse_json_column(s, 5, "metadata");
  if (!metadata) return std::unexpected(std::move(metadata.error()).context("sandbox " + r.id));
  r.metadata = std::move(*metadata);
  auto env = parse_json_column(s, 6, "env_vars");
  if (!env) return std::unexpected(std::move(env.error()).context("sandbox " + r.id));
  r.env_vars = std::move(*env);
  r.cpu_count = sqlite3_column_int64(s, 7);
  r.memory_mb = sqlite3_column_int64(s, 8);
  r.disk_size_mb = sqlite3_column_int64(s, 9);
  r.started_at = sqlite3_column_int64(s, 10);
  r.end_at = sqlite3_column_int64(s, 11);
  r.init_pid = sqlite3_column_int64(s, 12);
  r.uid_base = sqlite3_column_int64(s, 13);
  r.state_dir = column_text(s, 14);
  auto backend = parse_backend(column_text(s, 15));
  if (!backend) return std::unexpected(std::move(backend.error()).context("sandbox " + r.id));
  r.backend = *backend;
  r.envd_version = column_text(s, 16);
  auto extra = parse_json_column(s, 17, "extra");
  if (!extra) return std::unexpected(std::move(extra.error()).context("sandbox " + r.id));
  r.extra = std::move(*extra);
  r.template_tree = column_text(s, 18);
  r.team = column_text(s, 19);
  return r;
}

ApiKeyRecord read_key(sqlite3_stmt* s) {
  ApiKeyRecord k;
  k.id = sqlite3_column_int64(s, 0);
  k.name = column_text(s, 1);
  k.hash = column_text(s, 2);
  k.created_at = sqlite3_column_int64(s, 3);
  k.last_used_at = sqlite3_column_int64(s, 4);
  k.team = column_text(s, 5);
  k.admin = sqlite3_column_int64(s, 6) != 0;
  return k;
}

bool is_lower_hex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

bool valid_team_name(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '-' && c != '_'))) return false;
  }
  return true;
}

std::string db_path(std::string_view state_dir) {
  std::string p(state_dir);
  if (!p.empty() && p.back() != '/') p += '/';
  p += kDbFileName;
  return p;
}

std::string_view sandbox_state_name(SandboxState s) {
  switch (s) {
    case SandboxState::kRunning: return "running";
    case SandboxState::kPaused: return "paused";
    case SandboxState::kKilled: return "killed";
  }
  return "killed";
}

Result<SandboxState> parse_sandbox_state(std::string_view s) {
  if (s == "running") return SandboxState::kRunning;
  if (s == "paused") return SandboxState::kPaused;
  if (s == "killed") return SandboxState::kKilled;
  return make_error(ErrorCode::kInvalidArgument, "unknown sandbox state \"" + std::string(s) + "\"");
}

std::string_view backend_name(BackendKind b) { return b == BackendKind::kVm ? "vm" : "ns"; }

Result<BackendKind> parse_backend(std::string_view s) {
  if (s == "ns") return BackendKind::kNs;
  if (s == "vm") return BackendKind::kVm;
  return make_error(ErrorCode::kInvalidArgument, "unknown backend \"" + std::string(s) + "\"");
}

struct Store::Impl {
  std::mutex mu;
  DbPtr db;  // declared before `stmts`: statements are finalized first
  std::unordered_map<std::string_view, StmtPtr> stmts;
  // Declared last: stopped (and its last checkpoint done) before the main
  // connection closes.
  std::unique_ptr<Checkpointer> checkpointer;

  // The cached prepared statement for `sql` (one of the constants above).
  // Caller holds `mu`.
  Result<sqlite3_stmt*> stmt(const char* sql) {
    auto it = stmts.find(sql);
    if (it != stmts.end()) return it->second.get();
    sqlite3_stmt* s = nullptr;
    int rc = sqlite3_prepare_v3(db.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr);
    if (rc != SQLITE_OK) return std::unexpected(sqlite_error(db.get(), rc, "prepare"));
    stmts.emplace(sql, StmtPtr(s));
    return s;
  }

  // Runs a statement that returns no rows; returns the number of rows changed.
  template <typename BindFn>
  Result<int64_t> run(const char* sql, std::string_view step, BindFn&& binder) {
    auto s = stmt(sql);
    if (!s) return std::unexpected(std::move(s.error()).context(step));
    StmtUse use(*s);
    binder(*s);
    int rc = sqlite3_step(*s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
      return std::unexpected(sqlite_error(db.get(), rc, step));
    }
    return sqlite3_changes64(db.get());
  }

  Status exec(const char* sql, std::string_view step) {
    char* err = nullptr;
    int rc = sqlite3_exec(db.get(), sql, nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      std::string msg = std::string(step) + ": " + (err ? err : sqlite3_errstr(rc));
      sqlite3_free(err);
      return std::unexpected(Error(code_for_sqlite(rc), std::move(msg)));
    }
    return ok();
  }

  // Returns the first column of the first row of a PRAGMA as text.
  Result<std::string> pragma_text(const std::string& sql) {
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v2(db.get(), sql.c_str(), -1, &raw, nullptr);
    if (rc != SQLITE_OK) return std::unexpected(sqlite_error(db.get(), rc, sql));
    StmtPtr s(raw);
    rc = sqlite3_step(s.get());
    if (rc == SQLITE_ROW) return column_text(s.get(), 0);
    if (rc == SQLITE_DONE) return std::string();
    return std::unexpected(sqlite_error(db.get(), rc, sql));
  }

  Status migrate() {
    auto v = pragma_text("PRAGMA user_version");
    if (!v) return std::unexpected(std::move(v.error()).context("read schema version"));
    int version = std::atoi(v->c_str());
    if (version > kSchemaVersion) {
      return make_error(ErrorCode::kFailedPrecondition,
                        "database schema version " + std::to_string(version) +
                            " is newer than this build's " + std::to_string(kSchemaVersion));
    }
    for (; version < kSchemaVersion; ++version) {
      const std::string step = "migrate schema to version " + std::to_string(version + 1);
      COPPICE_TRY_CTX(exec("BEGIN IMMEDIATE", "begin"), step);
      std::string sql = std::string(kMigrations[version]) +
                        "\nPRAGMA user_version = " + std::to_string(version + 1) + ";";
      auto r = exec(sql.c_str(), "apply");
      if (!r) {
        (void)exec("ROLLBACK", "rollback");
        return std::unexpected(std::move(r.error()).context(step));
      }
      COPPICE_TRY_CTX(exec("COMMIT", "commit"), step);
      COPPICE_LOG(info) << "store: schema migrated to version " << version + 1;
    }
    return ok();
  }
};

namespace {

// A write transaction on the cached BEGIN/COMMIT statements; rolls back if
// the scope ends before commit(). Caller holds the store's mutex.
class Transaction {
 public:
  explicit Transaction(Store::Impl& impl) : impl_(impl) {}
  ~Transaction() {
    if (open_) (void)impl_.run(kRollback, "rollback", [](sqlite3_stmt*) {});
  }
  Status begin() {
    auto r = impl_.run(kBegin, "begin transaction", [](sqlite3_stmt*) {});
    if (!r) return std::unexpected(std::move(r.error()));
    open_ = true;
    return ok();
  }
  Status commit() {
    auto r = impl_.run(kCommit, "commit", [](sqlite3_stmt*) {});
    if (!r) return std::unexpected(std::move(r.error()));
    open_ = false;
    return ok();
  }

 private:
  Store::Impl& impl_;
  bool open_ = false;
};

}  // namespace

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::Store(Store&&) noexcept = default;
Store& Store::operator=(Store&&) noexcept = default;
Store::~Store() = default;

int Store::schema_version() { return kSchemaVersion; }

Result<Store> Store::open(const std::string& path) {
  const std::string step = "open store " + path;
  // Create the file ourselves so it is 0600 from the first byte: rows hold
  // envd access tokens. SQLite gives the -wal and -shm files the same mode.
  {
    sys::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd) return std::unexpected(Error::from_errno(errno, "create").context(step));
  }

  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE,
                           nullptr);
  DbPtr db(raw);
  if (rc != SQLITE_OK) return std::unexpected(sqlite_error(db.get(), rc, step));

  auto impl = std::make_unique<Impl>();
  impl->db = std::move(db);
  // Another process (the CLI, a backup) may briefly hold the write lock.
  sqlite3_busy_timeout(impl->db.get(), 5000);

  auto mode = impl->pragma_text("PRAGMA journal_mode = WAL");
  if (!mode) return std::unexpected(std::move(mode.error()).context(step));
  if (*mode != "wal") {
    return make_error(ErrorCode::kFailedPrecondition,
                      step + ": WAL mode refused (journal_mode is \"" + *mode + "\")");
  }
  // See store.h for why NORMAL is durable enough under WAL.
  COPPICE_TRY_CTX(impl->exec("PRAGMA synchronous = NORMAL", "set synchronous"), step);
  COPPICE_TRY_CTX(impl->exec("PRAGMA foreign_keys = ON", "enable foreign keys"), step);
  COPPICE_TRY_CTX(impl->migrate(), step);
  impl->checkpointer = Checkpointer::start(path);
  if (impl->checkpointer) impl->checkpointer->attach(impl->db.get());
  return Store(std::move(impl));
}

Result<std::string> Store::pragma(std::string_view name) {
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || c == '_')) {
      return make_error(ErrorCode::kInvalidArgument, "bad pragma name \"" + std::string(name) + "\"");
    }
  }
  std::lock_guard lock(impl_->mu);
  return impl_->pragma_text("PRAGMA " + std::string(name));
}

// --- sandboxes ---

Status Store::put_sandbox(const SandboxRecord& rec) { return put_sandbox(rec, "", ""); }

Status Store::put_sandbox(const SandboxRecord& rec, std::string_view event_kind, std::string_view event_detail) {
  const std::string step = "store sandbox " + rec.id;
  if (!valid_sandbox_id(rec.id)) {
    return make_error(ErrorCode::kInvalidArgument, step + ": malformed sandbox id");
  }
  if (!valid_team_name(rec.team)) {
    return make_error(ErrorCode::kInvalidArgument, step + ": malformed team name");
  }
  if (!rec.metadata.is_object() || !rec.env_vars.is_object() || !rec.extra.is_object()) {
    return make_error(ErrorCode::kInvalidArgument,
                      step + ": metadata, env_vars and extra must be JSON objects");
  }
  const std::string metadata = json_text(rec.metadata);
  const std::string env_vars = json_text(rec.env_vars);
  const std::string extra = json_text(rec.extra);
  const int64_t now = now_ms();
  std::lock_guard lock(impl_->mu);
  // The row and its event commit together: one write to the WAL.
  Transaction tx(*impl_);
  if (!event_kind.empty()) COPPICE_TRY_CTX(tx.begin(), step);
  auto r = impl_->run(kPutSandbox, step, [&](sqlite3_stmt* s) {
    bind_arg(s, 1, rec.id);
    bind_arg(s, 2, rec.template_id);
    bind_arg(s, 3, rec.alias);
    bind_arg(s, 4, sandbox_state_name(rec.state));
    bind_arg(s, 5, rec.envd_access_token);
    bind_arg(s, 6, metadata);
    bind_arg(s, 7, env_vars);
    bind_arg(s, 8, rec.cpu_count);
    bind_arg(s, 9, rec.memory_mb);
    bind_arg(s, 10, rec.disk_size_mb);
    bind_arg(s, 11, rec.started_at);
    bind_arg(s, 12, rec.end_at);
    bind_arg(s, 13, rec.init_pid);
    bind_arg(s, 14, rec.uid_base);
    bind_arg(s, 15, rec.state_dir);
    bind_arg(s, 16, backend_name(rec.backend));
    bind_arg(s, 17, rec.envd_version);
    bind_arg(s, 18, extra);
    bind_arg(s, 19, rec.template_tree);
    bind_arg(s, 20, rec.team);
  });
  if (!r) return std::unexpected(std::move(r.error()));
  if (event_kind.empty()) return ok();
  auto n = impl_->run(kAppendEvent, step, [&](sqlite3_stmt* s) {
    bind_arg(s, 1, rec.id);
    bind_arg(s, 2, now);
    bind_arg(s, 3, event_kind);
    bind_arg(s, 4, event_detail);
  });
  if (!n) return std::unexpected(std::move(n.error()));
  auto trimmed = impl_->run(kTrimEvents, step, [&](sqlite3_stmt* s) {
    bind_arg(s, 1, rec.id);
    bind_arg(s, 2, kMaxEventsPerSandbox);
  });
  if (!trimmed) return std::unexpected(std::move(trimmed.error()));
  COPPICE_TRY_CTX(tx.commit(), step);
  return ok();
}

Result<SandboxRecord> Store::get_sandbox(std::string_view id) {
  const std::string step = "load sandbox " + std::string(id);
  if (!valid_sandbox_id(id)) return make_error(ErrorCode::kNotFound, step + ": no such sandbox");
  std::lock_guard lock(impl_->mu);
  auto s = impl_->stmt(kGetSandbox);
  if (!s) return std::unexpected(std::move(s.error()).context(step));
  StmtUse use(*s);
  bind_arg(*s, 1, id);
  int rc = sqlite3_step(*s);
  if (rc == SQLITE_DONE) return make_error(ErrorCode::kNotFound, step + ": no such sandbox");
  if (rc != SQLITE_ROW) return std::unexpected(sqlite_error(impl_->db.get(), rc, step));
  auto rec = read_sandbox(*s);
  if (!rec) return std::unexpected(std::move(rec.error()).context(step));
  return rec;
}

Status Store::update_state(std::string_view id, SandboxState state) {
  const std::string step = "set state of sandbox " + std::string(id);
  std::lock_guard lock(impl_->mu);
  auto n = impl_->run(kUpdateState, step, [&](sqlite3_stmt* s) {
    bind_arg(s, 1, id);
    bind_arg(s, 2, sandbox_state_name(state));
  });
  if (!n) return std::unexpected(std::move(n.error()));
  if (*n == 0) return make_error(ErrorCode::kNotFound, step + ": no such sandbox");
  return ok();
}

Status Store::update_end_at(std::string_view id, int64_t end_at_ms) {
  const std::string step = "set end time of sandbox " + std::string(id);
  std::lock_guard lock(impl_->mu);
  auto n = impl_->run(kUpdateEndAt, step, [&](sqlite3_stmt* s) {
    bind_arg(s, 1, id);
    bind_arg(s, 2, end_at_ms);
  });
  if (!n) return std::unexpected(std::move(n.error()));
  if (*n == 0) return make_error(ErrorCode::kNotFound, step + ": no such sandbox");
  return ok();
}

Status Store::delete_sandbox(std::string_view id) {
  const std::string step = "delete sandbox " + std::string(id);
  std::lock_guard lock(impl_->mu);
  Transaction tx(*impl_);
  COPPICE_TRY_CTX(tx.begin(), step);
  // Its volumes are free again in the same commit.
  auto m = impl_->run(kDeleteVolumeMounts, step, [&](sqlite3_stmt* s) { bind_arg(s, 1, id); });
  if (!m) return std::unexpected(std::move(m.error()));
  auto n = impl_->run(kDeleteSandbox, step, [&](sqlite3_stmt* s) { bind_arg(s, 1, id); });
  if (!n) return std::unexpected(std::move(n.error()));
  COPPICE_TRY_CTX(tx.commit(), step);
  if (*n == 0) return make_error(ErrorCode::kNotFound, step + ": no such sandbox");
  return ok();
}

Result<std::vector<SandboxRecord>> Store::list_sandboxes(bool include_killed) {
  const std::string step = "list sandboxes";
  std::lock_guard lock(impl_->mu);
  auto s = impl_->stmt(include_killed ? kListAll : kListLive);
  if (!s) return std::unexpected(std::move(s.error()).context(step));
  StmtUse use(*s);
  std::vector<SandboxRecord> out;
  for (;;) {
    int rc = sqlite3_step(*s);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return std::unexpected(sqlite_error(impl_->db.get(), rc, step));
    auto rec = read_sandbox(*s);
    if (!rec) return std::unexpected(std::move(rec.error()).context(step));
    out.push_back(std::move(*rec));
  }
  return out;
}

// --- API keys ---

Result<ApiKeyRecord> Store::add_api_key(std::string_view name, std::string_view hash, std::string_view team,
                                        bool admin) {
  const std::string step = "add api key \"" + std::string(name) + "\" to team " + std::string(team);
  if (hash.size() != 64 || !is_lower_hex(hash)) {
    return make_error(ErrorCode::kInvalidArgument, step + ": hash is not a lowercase hex SHA-256");
  }
  if (!valid_team_name(team)) return make_error(ErrorCode::kInvalidArgument, step + ": malformed team name");
  const int64_t now = now_ms();
  std::lock_guard lock(impl_->mu);
  // The team check and the insert are one transaction: a team deleted in
  // between cannot be left with a key.
  Transaction tx(*impl_);
  COPPICE_TRY_CTX(tx.begin(), step);
  {
    auto t = impl_->stmt(kGetTeam);
    if (!t) return std::unexpected(std::move(t.error()).context(step));
    StmtUse use(*t);
    bind_arg(*t, 1, team);
    int rc = sqlite3_step(*t);
    if (rc == SQLITE_DONE) return make_error(ErrorCode::kNotFound, step + ": no such team");
    if (rc != SQLITE_ROW) return std::unexpected(sqlite_error(impl_->db.get(), rc, step));
  }
  ApiKeyRecord k;
  {
    auto s = impl_->stmt(kAddKey);
    if (!s) return std::unexpected(std::move(s.error()).context(step));
    StmtUse use(*s);
    bind_arg(*s, 1, name);
    bind_arg(*s, 2, hash);
    bind_arg(*s, 3, now);
    bind_arg(*s, 4, team);
    bind_arg(*s, 5, int64_t{admin ? 1 : 0});
    int rc = sqlite3_step(*s);
    if (rc != SQLITE_ROW) return std::unexpected(sqlite_error(impl_->db.get(), rc, step));
    k = read_key(*s);
    // RETURNING rows are produced before the statement finishes: step to the
    // end so the insert is complete before the commit.
    rc = sqlite3_step(*s);
    if (rc != SQLITE_DONE) return std::unexpected(sqlite_error(impl_->db.get(), rc, step));
  }
  COPPICE_TRY_CTX(tx.commit(), step);
  return k;
}

Result<ApiKeyRecord> Store::find_api_key(std::string_view hash) {
  std::lock_guard lock(impl_->mu);
  auto s = impl_->stmt(kFindKey);
  if (!s) return std::unexpected(std::move(s.error()).context("find api key"));
  StmtUse use(*s);
  bind_arg(*s, 1, hash);
  int rc = sqlite3_step(*s);
  if (rc == SQLITE_DONE) return make_error(ErrorCode::kNotFound, "find api key: no such key");
  if (rc != SQLITE_ROW) return std::unexpected(sqlite_error(impl_->db.get(), rc, "find api key"));
  return read_key(*s);
}

Result<std::set<std::string>> Store::template_trees_in_use() {
  std::lock_guard lock(impl_->mu);
  auto s = impl_->stmt(kTemplateTrees);
  if (!s) return std::unexpected(std::move(s.error()).context("template trees in use"));
  StmtUse use(*s);
  std::set<std::string> out;
  for (;;) {
    int rc = sqlite3_step(*s);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return std::unexpected(sqlite_error(impl_->db.get(), rc, "template trees in use"));
    out.insert(column_text(*s, 0));
  }
  return out;
}

Result<int64_t> Store::count_api_keys() {
  std::lock_guard lock(impl_->mu);
  auto s = impl_->stmt(kCountKeys);
  if (!s) return std::unexpected(std::move(s.error()).context("count api keys"));
  StmtUse use(*s);
  int rc = sqlite3_step(*s);
  if (rc != SQLITE_ROW) return std::unexpected(sqlite_error(impl_->db.get(), rc, "count api keys"));
  return sqlite3_column_int64(*s, 0);
}

Result<std::vector<ApiKeyRecord>> Store::list_api_keys(std::string_view team) {
  std::lock_guard lock(impl_->mu);
  auto s = impl_->stmt(team.empty() ? kListKeys : kListTeamKeys);
  if (!s) return std::unexpected(std::move(s.error()).context("list api keys"));
  StmtUse use(*s);
  if (!team.empty()) bind_arg(*s, 1, team);
  std::vector<ApiKeyRecord> out;
  for (;;) {
    int rc = sqlite3_step(*s);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return std::unexpected(sqlite_error(impl_->db.get(), rc, "list api keys"));
    out.push_back(read_key(*s));
  }
  return out;
}

Status Store::touch_api_key(int64_t id, int64_t at_ms) {
  const std::string step = "mark api key " + std::to_string(id) + " used";
  std::lock_guard lock(impl_->mu);
  auto n = impl_->run(kTouchKey, step, [&](sqlite3_stmt* s) {
    bind_arg(s, 1, id);
    bind_arg(s, 2, at_ms);
  });
  if (!n) return std::unexpected(std::move(n.error()));
  if (*n == 0) return make_error(ErrorCode::kNotFound, step + ": no such key");
  return ok();
}

Status Store::delete_api_key(int64_t id, std::string_view team) {
  const std::string step = "delete api key " + std::to_string(id);
  std::lock_guard lock(impl_->mu);
  auto n = impl_->run(team.empty() ? kDeleteKey : kDeleteTeamKey, step, [&](sqlite3_stmt* s) {
    bind_arg(s, 1, id);
    if (!team.empty()) bind_arg(s, 2, team);
  });
  if (!n) return std::unexpected(std::move(n.error()));
  if (*n == 0) return make_error(ErrorCode::kNotFound, step + ": no such key");
  return ok();
}

// --- volumes ---

bool valid_volume_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxVolumeNameLength || name[0] == '.' || name[0] == '-') return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
          c == '.'))
      return false;
  }
  return true;
}

namespace {
Result<int64_t> count_where(Store::Impl& impl, const char* sql, std::string_view arg, std::string_view step);

VolumeRecord read_volume(sqlite3_stmt* s) {
  VolumeRecord v;
  v.id = column_text(s, 0);
  v.team = column_text(s, 1);
  v.name = column_text(s, 2);
  v.token = column_text(s, 3);
  v.quota_bytes = sqlite3_column_int64(s, 4);
  v.created_at = sqlite3_column_int64(s, 5);
  return v;
}

// Rows of a volume query with up to two text arguments. Caller holds the mutex.
Result<std::vector<VolumeRecord>> volume_rows(Store::Impl& impl, const char* sql, std::string_view step,
                                              std::vector<std::string_view> args) {
  auto s = impl.stmt(sql);
  if (!s) return std::unexpected(std::move(s.error()).context(step));
  StmtUse use(*s);
  for (size_t i = 0; i < args.size(); ++i) bind_arg(*s, static_cast<int>(i + 1), args[i]);
  std::vector<VolumeRecord> out;
  for (;;) {
    int rc = sqlite3_step(*s);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return std::unexpected(sqlite_error(impl.db.get(), rc, step));
    out.push_back(read_volume(*s));
  }
  return out;
}
}  // namespace

Status Store::add_volume(const VolumeRecord& v) {
  const std::string step = "add volume " + v.name;
  if (!valid_sandbox_id(v.id)) return make_error(ErrorCode::kInvalidArgument, step + ": malformed id \"" + v.id + "\"");
  if (!valid_volume_name(v.name)) return make_error(ErrorCode::kInvalidArgument, step + ": malformed name");
  if (v.token.empty() || v.quota_bytes < 0) return make_error(ErrorCode::kInvalidArgument, step + ": no token or a negative quota");
  std::lock_guard lock(impl_->mu);
  auto n = impl_->run(kAddVolume, step, [&](sqlite3_stmt* s) {
    bind_arg(s, 1, v.id);
    bind_arg(s, 2, v.team);
    bind_arg(s, 3, v.name);
    bind_arg(s, 4, v.token);
    bind_arg(s, 5, v.quota_bytes);
    bind_arg(s, 6, v.created_at);
  });
  if (!n) {
    if (n.error().code() == ErrorCode::kAlreadyExists)
      return make_error(ErrorCode::kAlreadyExists, step + ": the team has a volume of that name");
    return std::unexpected(std::move(n.error()));
  }
  return ok();
}

Result<VolumeRecord> Store::get_volume(std::string_view id, std::string_view team) {
  const std::string step = "volume " + std::string(id);
  std::lock_guard lock(impl_->mu);
  COPPICE_ASSIGN_OR_RETURN(auto rows, volume_rows(*impl_, kGetVolume, step, {id}));
  if (rows.empty() || (!team.empty() && rows[0].team != team))
    return make_error(ErrorCode::kNotFound, "volume " + std::string(id) + " not found");
  return std::move(rows[0]);
}

Result<VolumeRecord> Store::get_volume_by_name(std::string_view team, std::string_view name) {
  const std::string step = "volume " + std::string(name);
  std::lock_guard lock(impl_->mu);
  COPPICE_ASSIGN_OR_RETURN(auto rows, volume_rows(*impl_, kGetVolumeByName, step, {team, name}));
  if (rows.empty()) return make_error(ErrorCode::kNotFound, "volume \"" + std::string(name) + "\" not found");
  return std::move(rows[0]);
}

Result<std::vector<VolumeRecord>> Store::list_volumes(std::string_view team) {
  std::lock_guard lock(impl_->mu);
  if (team.empty()) return volume_rows(*impl_, kListAllVolumes, "list volumes", {});
  return volume_rows(*impl_, kListVolumes, "list volumes", {team});
}

Status Store::delete_volume(std::string_view id, std::string_view team) {
  const std::string step = "delete volume " + std::string(id);
  std::lock_guard lock(impl_->mu);
  Transaction tx(*impl_);
  COPPICE_TRY_CTX(tx.begin(), step);
  COPPICE_ASSIGN_OR_RETURN(auto rows, volume_rows(*impl_, kGetVolume, step, {id}));
  if (rows.empty() || (!team.empty() && rows[0].team != team))
    return make_error(ErrorCode::kNotFound, "volume " + std::string(id) + " not found");
  COPPICE_ASSIGN_OR_RETURN(int64_t mounts, count_where(*impl_, kCountVolumeMounts, id, step));
  if (mounts > 0)
    return make_error(ErrorCode::kFailedPrecondition, "volume " + rows[0].name + " is mounted in " +
                                                          std::to_string(mounts) +
                                                          " sandbox(es): kill them or unmount it first");
  auto n = impl_->run(kDeleteVolume, step, [&](sqlite3_stmt* s) { bind_arg(s, 1, id); });
  if (!n) return std::unexpected(std::move(n.error()));
  COPPICE_TRY_CTX(tx.commit(), step);
  return ok();
}

Status Store::add_volume_mounts(std::string_view sandbox_id, const std::vector<VolumeMountRecord>& mounts) {
  const std::string step = "mount volumes in sandbox " + std::string(sandbox_id);
  if (!valid_sandbox_id(sandbox_id)) return make_error(ErrorCode::kInvalidArgument, step + ": malformed sandbox id");
  std::lock_guard lock(impl_->mu);
  Transaction tx(*impl_);
  COPPICE_TRY_CTX(tx.begin(), step);
  for (const auto& m : mounts) {
    auto n = impl_->run(kAddVolumeMount, step, [&](sqlite3_stmt* s) {
      bind_arg(s, 1, sandbox_id);
      bind_arg(s, 2, m.volume_id);
      bind_arg(s, 3, m.path);
    });
    if (!n) {
      if (n.error().code() == ErrorCode::kAlreadyExists)
        return make_error(ErrorCode::kAlreadyExists, step + ": something is mounted at " + m.path + " already");
      if (n.error().code() == ErrorCode::kNotFound)
        return make_error(ErrorCode::kNotFound, "volume " + m.volume_name + " not found");
      return std::unexpected(std::move(n.error()));
    }
  }
  COPPICE_TRY_CTX(tx.commit(), step);
  return ok();
}

Status Store::delete_volume_mount(std::string_view sandbox_id, std::string_view path) {
  const std::string step = "unmount volume at " + std::string(path) + " in sandbox " + std::string(sandbox_id);
  std::lock_guard lock(impl_->mu);
  auto n = impl_->run(kDeleteVolumeMount, step, [&](sqlite3_stmt* s) {
    bind_arg(s, 1, sandbox_id);
    bind_arg(s, 2, path);
  });
  if (!n) return std::unexpected(std::move(n.error()));
  if (*n == 0) return make_error(ErrorCode::kNotFound, "no volume is mounted at " + std::string(path));
  return ok();
}

Status Store::delete_volume_mounts(std::string_view sandbox_id) {
  const std::string step = "unmount volumes of sandbox " + std::string(sandbox_id);
  std::lock_guard lock(impl_->mu);
  auto n = impl_->run(kDeleteVolumeMounts, step, [&](sqlite3_stmt* s) { bind_arg(s, 1, sandbox_id); });
  if (!n) return std::unexpected(std::move(n.error()));
  return ok();
}

Result<std::vector<VolumeMountRecord>> Store::volume_mounts(std::string_view sandbox_id) {
  const std::string step = "volumes of sandbox " + std::string(sandbox_id);
  std::lock_guard lock(impl_->mu);
  auto s = impl_->stmt(kListVolumeMounts);
  if (!s) return std::unexpected(std::move(s.error()).context(step));
  StmtUse use(*s);
  bind_arg(*s, 1, sandbox_id);
  std::vector<VolumeMountRecord> out;
  for (;;) {
    int rc = sqlite3_step(*s);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return std::unexpected(sqlite_error(impl_->db.get(), rc, step));
    out.push_back(VolumeMountRecord{column_text(*s, 0), column_text(*s, 1), column_text(*s, 2), column_text(*s, 3)});
  }
  return out;
}

Result<int64_t> Store::prune_volume_mounts() {
  std::lock_guard lock(impl_->mu);
  return impl_->run(kPruneVolumeMounts, "prune volume mounts", [](sqlite3_stmt*) {});
}

// --- network addresses ---

Status Store::add_net_addr(const NetAddrRecord& r) {
  const std::string step = "record network address " + std::to_string(r.addr);
  std::lock_guard lock(impl_->mu);
  auto n = impl_->run(kAddNetAddr, step, [&](sqlite3_stmt* s) {
    bind_arg(s, 1, int64_t(r.addr));
    bind_arg(s, 2, r.owner);
    bind_arg(s, 3, r.link);
    bind_arg(s, 4, r.since);
  });
  if (!n) {
    if (n.error().code() == ErrorCode::kAlreadyExists) return make_error(ErrorCode::kAlreadyExists, step + ": the address is taken");
    return std::unexpected(std::move(n.error()));
  }
  return ok();
}

Status Store::put_net_addr(const NetAddrRecord& r) {
  const std::string step = "record network address " + std::to_string(r.addr);
  std::lock_guard lock(impl_->mu);
  auto n = impl_->run(kPutNetAddr, step, [&](sqlite3_stmt* s) {
    bind_arg(s, 1, int64_t(r.addr));
    bind_arg(s, 2, r.owner);
    bind_arg(s, 3, r.link);
    bind_arg(s, 4, r.since);
  });
  if (!n) return std::unexpected(std::move(n.error()));
  return ok();
}

Status Store::delete_net_addr(uint32_t addr) {
  const std::string step = "free network address " + std::to_string(addr);
  std::lock_guard lock(impl_->mu);
  auto n = impl_->run(kDeleteNetAddr, step, [&](sqlite3_stmt* s) { bind_arg(s, 1, int64_t(addr)); });
  if (!n) return std::unexpected(std::move(n.error()));
  return ok();
}

Result<std::vector<NetAddrRecord>> Store::list_net_addrs() {
  std::lock_guard lock(impl_->mu);
  auto s = impl_->stmt(kListNetAddrs);
  if (!s) return std::unexpected(std::move(s.error()).context("list network addresses"));
  StmtUse use(*s);
  std::vector<NetAddrRecord> out;
  for (;;) {
    int rc = sqlite3_step(*s);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return std::unexpected(sqlite_error(impl_->db.get(), rc, "list network addresses"));
    NetAddrRecord r;
    r.addr = static_cast<uint32_t>(sqlite3_column_int64(*s, 0));
    r.owner = reinterpret_cast<const char*>(sqlite3_column_text(*s, 1));
    r.link = reinterpret_cast<const char*>(sqlite3_column_text(*s, 2));
    r.since = sqlite3_column_int64(*s, 3);
    out.push_back(std::move(r));
  }
  return out;
}

// --- teams ---

namespace {
// A single-row count query with one text argument. Caller holds the mutex.
Result<int64_t> count_where(Store::Impl& impl, const char* sql, std::string_view arg, std::string_view step);
}  // namespace

Result<int64_t> Store::count_team_sandboxes(std::string_view team) {
  std::lock_guard lock(impl_->mu);
  return count_where(*impl_, kCountTeamSandboxes, team, "count sandboxes of team " + std::string(team));
}

Result<TeamRecord> Store::add_team(std::string_view name) {
  const std::string step = "add team " + std::string(name);
  if (!valid_team_name(name)) {
    return make_error(ErrorCode::kInvalidArgument,
                      step + ": a team name is 1-63 characters of a-z, 0-9, '-' and '_', starting with a letter or digit");
  }
  TeamRecord t{std::string(name), now_ms()};
  std::lock_guard lock(impl_->mu);
  auto n = impl_->run(kAddTeam, step, [&](sqlite3_stmt* s) {
    bind_arg(s, 1, t.name);
    bind_arg(s, 2, t.created_at);
  });
  if (!n) {
    if (n.error().code() == ErrorCode::kAlreadyExists)
      return make_error(ErrorCode::kAlreadyExists, step + ": the team exists");
    return std::unexpected(std::move(n.error()));
  }
  return t;
}

Status Store::ensure_team(std::string_view name) {
  const std::string step = "add team " + std::string(name);
  if (!valid_team_name(name)) return make_error(ErrorCode::kInvalidArgument, step + ": malformed team name");
  const int64_t now = now_ms();
  std::lock_guard lock(impl_->mu);
  auto n = impl_->run(kEnsureTeam, step, [&](sqlite3_stmt* s) {
    bind_arg(s, 1, name);
    bind_arg(s, 2, now);
  });
  if (!n) return std::unexpected(std::move(n.error()));
  return ok();
}

Result<TeamRecord> Store::get_team(std::string_view name) {
  const std::string step = "load team " + std::string(name);
  std::lock_guard lock(impl_->mu);
  auto s = impl_->stmt(kGetTeam);
  if (!s) return std::unexpected(std::move(s.error()).context(step));
  StmtUse use(*s);
  bind_arg(*s, 1, name);
  int rc = sqlite3_step(*s);
  if (rc == SQLITE_DONE) return make_error(ErrorCode::kNotFound, "team " + std::string(name) + " not found");
  if (rc != SQLITE_ROW) return std::unexpected(sqlite_error(impl_->db.get(), rc, step));
  return TeamRecord{column_text(*s, 0), sqlite3_column_int64(*s, 1)};
}

Result<std::vector<TeamRecord>> Store::list_teams() {
  std::lock_guard lock(impl_->mu);
  auto s = impl_->stmt(kListTeams);
  if (!s) return std::unexpected(std::move(s.error()).context("list teams"));
  StmtUse use(*s);
  std::vector<TeamRecord> out;
  for (;;) {
    int rc = sqlite3_step(*s);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return std::unexpected(sqlite_error(impl_->db.get(), rc, "list teams"));
    out.push_back(TeamRecord{column_text(*s, 0), sqlite3_column_int64(*s, 1)});
  }
  return out;
}

Status Store::delete_team(std::string_view name) {
  const std::string step = "delete team " + std::string(name);
  if (name == kDefaultTeam) return make_error(ErrorCode::kFailedPrecondition, step + ": the default team stays");
  std::lock_guard lock(impl_->mu);
  Transaction tx(*impl_);
  COPPICE_TRY_CTX(tx.begin(), step);
  auto live = count_where(*impl_, kCountTeamSandboxes, name, step);
  if (!live) return std::unexpected(std::move(live.error()));
  if (*live > 0) {
    return make_error(ErrorCode::kFailedPrecondition,
                      step + ": it still has " + std::to_string(*live) + " sandbox(es); kill them first");
  }
  // Its volumes hold data: they are deleted explicitly, never with the team.
  auto vols = count_where(*impl_, kCountTeamVolumes, name, step);
  if (!vols) return std::unexpected(std::move(vols.error()));
  if (*vols > 0) {
    return make_error(ErrorCode::kFailedPrecondition,
                      step + ": it still has " + std::to_string(*vols) + " volume(s); delete them first");
  }
  auto keys = impl_->run(kDeleteKeysOfTeam, step, [&](sqlite3_stmt* s) { bind_arg(s, 1, name); });
  if (!keys) return std::unexpected(std::move(keys.error()));
  auto n = impl_->run(kDeleteTeam, step, [&](sqlite3_stmt* s) { bind_arg(s, 1, name); });
  if (!n) return std::unexpected(std::move(n.error()));
  if (*n == 0) return make_error(ErrorCode::kNotFound, "team " + std::string(name) + " not found");
  COPPICE_TRY_CTX(tx.commit(), step);
  return ok();
}

namespace {
Result<int64_t> count_where(Store::Impl& impl, const char* sql, std::string_view arg, std::string_view step) {
  auto s = impl.stmt(sql);
  if (!s) return std::unexpected(std::move(s.error()).context(step));
  StmtUse use(*s);
  bind_arg(*s, 1, arg);
  int rc = sqlite3_step(*s);
  if (rc != SQLITE_ROW) return std::unexpected(sqlite_error(impl.db.get(), rc, step));
  return sqlite3_column_int64(*s, 0);
}
}  // namespace

// --- events ---

Status Store::append_event(std::string_view sandbox_id, std::string_view kind,
                           std::string_view detail) {
  const std::string step = "log event for sandbox " + std::string(sandbox_id);
  const int64_t now = now_ms();
  std::lock_guard lock(impl_->mu);
  Transaction tx(*impl_);
  COPPICE_TRY_CTX(tx.begin(), step);
  auto n = impl_->run(kAppendEvent, step, [&](sqlite3_stmt* s) {
    bind_arg(s, 1, sandbox_id);
    bind_arg(s, 2, now);
    bind_arg(s, 3, kind);
    bind_arg(s, 4, detail);
  });
  if (!n) {
    if (n.error().code() == ErrorCode::kNotFound) {
      return make_error(ErrorCode::kNotFound, step + ": no such sandbox");
    }
    return std::unexpected(std::move(n.error()));
  }
  auto trimmed = impl_->run(kTrimEvents, step, [&](sqlite3_stmt* s) {
    bind_arg(s, 1, sandbox_id);
    bind_arg(s, 2, kMaxEventsPerSandbox);
  });
  if (!trimmed) return std::unexpected(std::move(trimmed.error()));
  COPPICE_TRY_CTX(tx.commit(), step);
  return ok();
}

Result<std::vector<EventRecord>> Store::events(std::string_view sandbox_id, int64_t limit) {
  const std::string step = "read events of sandbox " + std::string(sandbox_id);
  if (limit <= 0) return std::vector<EventRecord>{};
  std::lock_guard lock(impl_->mu);
  auto s = impl_->stmt(kEvents);
  if (!s) return std::unexpected(std::move(s.error()).context(step));
  StmtUse use(*s);
  bind_arg(*s, 1, sandbox_id);
  bind_arg(*s, 2, limit);
  std::vector<EventRecord> out;
  for (;;) {
    int rc = sqlite3_step(*s);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return std::unexpected(sqlite_error(impl_->db.get(), rc, step));
    EventRecord e;
    e.id = sqlite3_column_int64(*s, 0);
    e.sandbox_id = column_text(*s, 1);
    e.at = sqlite3_column_int64(*s, 2);
    e.kind = column_text(*s, 3);
    e.detail = column_text(*s, 4);
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace coppice::store

namespace coppice::store {

// --- snapshots ---

bool valid_snapshot_name(std::string_view name) { return valid_volume_name(name); }

namespace {
Result<SnapshotRecord> read_snapshot(sqlite3_stmt* s) {
  SnapshotRecord r;
  r.id = column_text(s, 0);
  r.team = column_text(s, 1);
  r.name = column_text(s, 2);
  r.source_sandbox = column_text(s, 3);
  r.template_id = column_text(s, 4);
  r.memory = sqlite3_column_int64(s, 5) != 0;
  r.created_at = sqlite3_column_int64(s, 6);
  r.disk_bytes = sqlite3_column_int64(s, 7);
  COPPICE_ASSIGN_OR_RETURN(r.data, parse_json_column(s, 8, "snapshots.data"));
  return r;
}

// Rows of a snapshot query (kSnapshotColumns + `where`) with text
// arguments. Caller holds the mutex.
Result<std::vector<SnapshotRecord>> snapshot_rows(Store::Impl& impl, const std::string& sql, std::string_view step,
                                                  std::vector<std::string_view> args) {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(impl.db.get(), sql.c_str(), -1, &raw, nullptr);
  if (rc != SQLITE_OK) return std::unexpected(sqlite_error(impl.db.get(), rc, step));
  std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> st(raw, sqlite3_finalize);
  for (size_t i = 0; i < args.size(); ++i) bind_arg(raw, static_cast<int>(i + 1), args[i]);
  std::vector<SnapshotRecord> out;
  for (;;) {
    rc = sqlite3_step(raw);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return std::unexpected(sqlite_error(impl.db.get(), rc, step));
    COPPICE_ASSIGN_OR_RETURN(auto r, read_snapshot(raw));
    out.push_back(std::move(r));
  }
  return out;
}
}  // namespace

Status Store::add_snapshot(const SnapshotRecord& r) {
  const std::string step = "add snapshot " + r.id;
  if (!valid_sandbox_id(r.id)) return make_error(ErrorCode::kInvalidArgument, step + ": malformed id");
  if (!r.name.empty() && !valid_snapshot_name(r.name)) {
    return make_error(ErrorCode::kInvalidArgument, step + ": malformed name \"" + r.name + "\"");
  }
  if (r.disk_bytes < 0 || !r.data.is_object()) return make_error(ErrorCode::kInvalidArgument, step + ": bad fields");
  std::lock_guard lock(impl_->mu);
  Transaction tx(*impl_);
  COPPICE_TRY_CTX(tx.begin(), step);
  if (!r.name.empty()) {
    // The name moves to the newest snapshot (E2B: a new build of the
    // snapshot template of that name).
    auto n = impl_->run(kUnnameSnapshot, step, [&](sqlite3_stmt* s) {
      bind_arg(s, 1, r.team);
      bind_arg(s, 2, r.name);
    });
    if (!n) return std::unexpected(std::move(n.error()));
  }
  auto n = impl_->run(kAddSnapshot, step, [&](sqlite3_stmt* s) {
    bind_arg(s, 1, r.id);
    bind_arg(s, 2, r.team);
    bind_arg(s, 3, r.name);
    bind_arg(s, 4, r.source_sandbox);
    bind_arg(s, 5, r.template_id);
    bind_arg(s, 6, int64_t{r.memory ? 1 : 0});
    bind_arg(s, 7, r.created_at);
    bind_arg(s, 8, r.disk_bytes);
    bind_arg(s, 9, json_text(r.data));
  });
  if (!n) return std::unexpected(std::move(n.error()));
  COPPICE_TRY_CTX(tx.commit(), step);
  return ok();
}

Result<SnapshotRecord> Store::get_snapshot(std::string_view id, std::string_view team) {
  std::lock_guard lock(impl_->mu);
  COPPICE_ASSIGN_OR_RETURN(auto rows, snapshot_rows(*impl_, std::string(kSnapshotColumns) + "WHERE id = ?1",
                                                    "snapshot " + std::string(id), {id}));
  if (rows.empty() || (!team.empty() && rows[0].team != team))
    return make_error(ErrorCode::kNotFound, "snapshot " + std::string(id) + " not found");
  return std::move(rows[0]);
}

Result<SnapshotRecord> Store::find_snapshot(std::string_view team, std::string_view ref) {
  std::lock_guard lock(impl_->mu);
  COPPICE_ASSIGN_OR_RETURN(
      auto rows, snapshot_rows(*impl_, std::string(kSnapshotColumns) + "WHERE team = ?1 AND (id = ?2 OR name = ?2)",
                               "snapshot " + std::string(ref), {team, ref}));
  if (rows.empty()) return make_error(ErrorCode::kNotFound, "snapshot " + std::string(ref) + " not found");
  return std::move(rows[0]);
}

Result<std::vector<SnapshotRecord>> Store::list_snapshots(std::string_view team, std::string_view source_sandbox) {
  std::lock_guard lock(impl_->mu);
  std::string sql = std::string(kSnapshotColumns);
  std::vector<std::string_view> args;
  if (!team.empty()) {
    args.push_back(team);
    sql += "WHERE team = ?1";
  }
  if (!source_sandbox.empty()) {
    args.push_back(source_sandbox);
    sql += std::string(team.empty() ? "WHERE" : " AND") + " source_sandbox = ?" + std::to_string(args.size());
  }
  sql += " ORDER BY created_at, id";
  return snapshot_rows(*impl_, sql, "list snapshots", args);
}

Status Store::delete_snapshot(std::string_view id, std::string_view team) {
  const std::string step = "delete snapshot " + std::string(id);
  std::lock_guard lock(impl_->mu);
  Transaction tx(*impl_);
  COPPICE_TRY_CTX(tx.begin(), step);
  COPPICE_ASSIGN_OR_RETURN(auto rows, snapshot_rows(*impl_, std::string(kSnapshotColumns) + "WHERE id = ?1", step, {id}));
  if (rows.empty() || (!team.empty() && rows[0].team != team))
    return make_error(ErrorCode::kNotFound, "snapshot " + std::string(id) + " not found");
  auto n = impl_->run(kDeleteSnapshot, step, [&](sqlite3_stmt* s) { bind_arg(s, 1, id); });
  if (!n) return std::unexpected(std::move(n.error()));
  COPPICE_TRY_CTX(tx.commit(), step);
  return ok();
}

}  // namespace coppice::store

namespace coppice::store {

// --- directory snapshots ---

namespace {
Result<std::vector<DirSnapshotRecord>> dir_snapshot_rows(Store::Impl& impl, const std::string& sql,
                                                         std::string_view step, std::vector<std::string_view> args) {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(impl.db.get(), sql.c_str(), -1, &raw, nullptr);
  if (rc != SQLITE_OK) return std::unexpected(sqlite_error(impl.db.get(), rc, step));
  std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> st(raw, sqlite3_finalize);
  for (size_t i = 0; i < args.size(); ++i) bind_arg(raw, static_cast<int>(i + 1), args[i]);
  std::vector<DirSnapshotRecord> out;
  for (;;) {
    rc = sqlite3_step(raw);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return std::unexpected(sqlite_error(impl.db.get(), rc, step));
    DirSnapshotRecord r;
    r.team = column_text(raw, 0);
    r.name = column_text(raw, 1);
    r.id = column_text(raw, 2);
    r.source_sandbox = column_text(raw, 3);
    r.path = column_text(raw, 4);
    r.host_root = sqlite3_column_int64(raw, 5);
    r.bytes = sqlite3_column_int64(raw, 6);
    r.created_at = sqlite3_column_int64(raw, 7);
    out.push_back(std::move(r));
  }
  return out;
}
constexpr const char* kDirSnapshotColumns =
    "SELECT team, name, id, source_sandbox, path, host_root, bytes, created_at FROM dir_snapshots ";
}  // namespace

Status Store::add_dir_snapshot(const DirSnapshotRecord& r) {
  const std::string step = "add directory snapshot " + r.name;
  if (!valid_sandbox_id(r.id) || !valid_snapshot_name(r.name))
    return make_error(ErrorCode::kInvalidArgument, step + ": malformed id or name");
  std::lock_guard lock(impl_->mu);
  auto n = impl_->run(
      "INSERT INTO dir_snapshots (team, name, id, source_sandbox, path, host_root, bytes, created_at) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
      step, [&](sqlite3_stmt* s) {
        bind_arg(s, 1, r.team);
        bind_arg(s, 2, r.name);
        bind_arg(s, 3, r.id);
        bind_arg(s, 4, r.source_sandbox);
        bind_arg(s, 5, r.path);
        bind_arg(s, 6, r.host_root);
        bind_arg(s, 7, r.bytes);
        bind_arg(s, 8, r.created_at);
      });
  if (!n) {
    if (n.error().code() == ErrorCode::kAlreadyExists)
      return make_error(ErrorCode::kAlreadyExists, "the team has a directory snapshot named " + r.name + " already");
    return std::unexpected(std::move(n.error()));
  }
  return ok();
}

Result<DirSnapshotRecord> Store::get_dir_snapshot(std::string_view team, std::string_view name) {
  std::lock_guard lock(impl_->mu);
  COPPICE_ASSIGN_OR_RETURN(auto rows, dir_snapshot_rows(*impl_, std::string(kDirSnapshotColumns) + "WHERE team = ?1 AND name = ?2",
                                                        "directory snapshot", {team, name}));
  if (rows.empty()) return make_error(ErrorCode::kNotFound, "directory snapshot " + std::string(name) + " not found");
  return std::move(rows[0]);
}

Result<std::vector<DirSnapshotRecord>> Store::list_dir_snapshots(std::string_view team) {
  std::lock_guard lock(impl_->mu);
  if (team.empty()) return dir_snapshot_rows(*impl_, std::string(kDirSnapshotColumns) + "ORDER BY created_at, name", "list directory snapshots", {});
  return dir_snapshot_rows(*impl_, std::string(kDirSnapshotColumns) + "WHERE team = ?1 ORDER BY created_at, name",
                           "list directory snapshots", {team});
}

Status Store::delete_dir_snapshot(std::string_view team, std::string_view name) {
  std::lock_guard lock(impl_->mu);
  auto n = impl_->run("DELETE FROM dir_snapshots WHERE team = ?1 AND name = ?2", "delete directory snapshot",
                      [&](sqlite3_stmt* s) {
                        bind_arg(s, 1, team);
                        bind_arg(s, 2, name);
                      });
  if (!n) return std::unexpected(std::move(n.error()));
  if (*n == 0) return make_error(ErrorCode::kNotFound, "directory snapshot " + std::string(name) + " not found");
  return ok();
}

}  // namespace coppice::store
