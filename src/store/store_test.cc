#include "store/store.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "common/test_temp_dir.h"

#include <atomic>
#include <filesystem>
#include <set>
#include <thread>

#include "store/keys.h"

namespace coppice::store {
namespace {

namespace fs = std::filesystem;

#define ASSERT_OK(expr)                                       \
  do {                                                        \
    const auto& r_ = (expr);                                    \
    ASSERT_TRUE(r_.has_value()) << r_.error().to_string();    \
  } while (0)

// A fresh directory under TMPDIR, removed with everything in it.
// A fresh temp dir per test, removed with its contents.
struct TempDir : coppice::test_util::TempDir {
  TempDir() : coppice::test_util::TempDir("coppice-store-test") {}
};

std::string make_id(int n) {
  std::string id = "sbx" + std::to_string(n);
  id.resize(20, 'a');
  return id;
}

SandboxRecord sample(int n) {
  SandboxRecord r;
  r.id = make_id(n);
  r.template_id = "base";
  r.alias = "my-alias";
  r.state = SandboxState::kRunning;
  r.envd_access_token = "token-" + std::to_string(n);
  r.metadata = {{"purpose", "test"}, {"n", std::to_string(n)}};
  r.env_vars = {{"FOO", "bar"}, {"EMPTY", ""}};
  r.cpu_count = 2;
  r.memory_mb = 512;
  r.disk_size_mb = 1024;
  r.started_at = 1'700'000'000'000 + n;
  r.end_at = 1'700'000'300'000 + n;
  r.init_pid = 4242;
  r.uid_base = 100000 + n * 65536;
  r.state_dir = "/var/lib/coppice/sandboxes/" + r.id;
  r.backend = BackendKind::kNs;
  r.envd_version = "0.2.0";
  r.extra = {{"cgroup", "/sys/fs/cgroup/coppice/" + r.id}};
  return r;
}

class StoreTest : public ::testing::Test {
 protected:
  std::string path() const { return db_path(dir_.path().string()); }
  Store open_store() {
    auto s = Store::open(path());
    EXPECT_TRUE(s.has_value()) << s.error().to_string();
    return std::move(*s);
  }
  TempDir dir_;
};

TEST_F(StoreTest, WalModeAndSchemaVersion) {
  Store s = open_store();
  EXPECT_EQ(*s.pragma("journal_mode"), "wal");
  EXPECT_EQ(*s.pragma("synchronous"), "1");  // NORMAL
  EXPECT_EQ(*s.pragma("foreign_keys"), "1");
  EXPECT_EQ(*s.pragma("user_version"), std::to_string(Store::schema_version()));
  EXPECT_FALSE(s.pragma("journal_mode; DROP TABLE sandboxes").has_value());
}

TEST_F(StoreTest, FileIsPrivate) {
  Store s = open_store();
  struct stat st {};
  ASSERT_EQ(::stat(path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(StoreTest, OpenFailsInMissingDirectory) {
  auto s = Store::open((dir_.path() / "nope" / "coppice.db").string());
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), ErrorCode::kNotFound);
}

TEST_F(StoreTest, RefusesNewerSchema) {
  { Store s = open_store(); }
  // Pretend a newer gateway wrote the file.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path().c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 999", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto v = Store::open(path());
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code(), ErrorCode::kFailedPrecondition);
}

TEST_F(StoreTest, SandboxRoundTrip) {
  Store s = open_store();
  SandboxRecord r = sample(1);
  ASSERT_OK(s.put_sandbox(r));
  auto got = s.get_sandbox(r.id);
  ASSERT_TRUE(got.has_value()) << got.error().to_string();
  EXPECT_EQ(*got, r);

  // Upsert replaces every field.
  r.state = SandboxState::kPaused;
  r.backend = BackendKind::kVm;
  r.metadata = nlohmann::json::object();
  r.alias = "";
  ASSERT_OK(s.put_sandbox(r));
  EXPECT_EQ(*s.get_sandbox(r.id), r);

  ASSERT_OK(s.update_state(r.id, SandboxState::kRunning));
  ASSERT_OK(s.update_end_at(r.id, 123));
  got = s.get_sandbox(r.id);
  EXPECT_EQ(got->state, SandboxState::kRunning);
  EXPECT_EQ(got->end_at, 123);
}

TEST_F(StoreTest, MissingIdIsNotFound) {
  Store s = open_store();
  const std::string id = make_id(99);
  EXPECT_EQ(s.get_sandbox(id).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(s.get_sandbox("not-an-id").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(s.update_state(id, SandboxState::kPaused).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(s.update_end_at(id, 1).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(s.delete_sandbox(id).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(s.append_event(id, "created", "").error().code(), ErrorCode::kNotFound);
}

TEST_F(StoreTest, RejectsMalformedRecords) {
  Store s = open_store();
  SandboxRecord r = sample(1);
  r.id = "UPPERCASE0123456789A";
  EXPECT_EQ(s.put_sandbox(r).error().code(), ErrorCode::kInvalidArgument);
  r = sample(1);
  r.id = "short";
  EXPECT_EQ(s.put_sandbox(r).error().code(), ErrorCode::kInvalidArgument);
  r = sample(1);
  r.metadata = nlohmann::json::array();
  EXPECT_EQ(s.put_sandbox(r).error().code(), ErrorCode::kInvalidArgument);
}

TEST_F(StoreTest, ListSkipsKilledUnlessAsked) {
  Store s = open_store();
  for (int i = 0; i < 3; ++i) ASSERT_OK(s.put_sandbox(sample(i)));
  ASSERT_OK(s.update_state(make_id(1), SandboxState::kKilled));
  ASSERT_OK(s.update_state(make_id(2), SandboxState::kPaused));
  auto live = s.list_sandboxes();
  ASSERT_OK(live);
  ASSERT_EQ(live->size(), 2u);
  EXPECT_EQ((*live)[0].id, make_id(0));
  EXPECT_EQ((*live)[1].id, make_id(2));
  EXPECT_EQ(s.list_sandboxes(/*include_killed=*/true)->size(), 3u);
  ASSERT_OK(s.delete_sandbox(make_id(0)));
  EXPECT_EQ(s.list_sandboxes()->size(), 1u);
}

TEST_F(StoreTest, ApiKeys) {
  Store s = open_store();
  EXPECT_EQ(*s.count_api_keys(), 0);
  auto key = generate_api_key();
  ASSERT_OK(key);
  const std::string hash = sha256_hex(*key);
  auto added = s.add_api_key("default", hash);
  ASSERT_TRUE(added.has_value()) << added.error().to_string();
  EXPECT_GT(added->id, 0);
  EXPECT_EQ(added->name, "default");
  EXPECT_EQ(added->hash, hash);
  EXPECT_GT(added->created_at, 0);
  EXPECT_EQ(added->last_used_at, 0);

  EXPECT_EQ(s.add_api_key("again", hash).error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(s.add_api_key("bad", *key).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(*s.count_api_keys(), 1);

  auto found = s.find_api_key(hash);
  ASSERT_OK(found);
  EXPECT_EQ(found->id, added->id);
  EXPECT_EQ(s.find_api_key(sha256_hex("other")).error().code(), ErrorCode::kNotFound);

  ASSERT_OK(s.touch_api_key(added->id, 777));
  EXPECT_EQ(s.find_api_key(hash)->last_used_at, 777);

  // The key itself is nowhere in the database file.
  s = open_store();  // reopen so the WAL content is the only copy
  std::string bytes;
  for (const char* suffix : {"", "-wal"}) {
    FILE* f = std::fopen((path() + suffix).c_str(), "rb");
    if (!f) continue;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) bytes.append(buf, n);
    std::fclose(f);
  }
  EXPECT_NE(bytes.find(hash), std::string::npos);
  EXPECT_EQ(bytes.find(*key), std::string::npos);

  ASSERT_OK(s.delete_api_key(added->id));
  EXPECT_EQ(*s.count_api_keys(), 0);
  EXPECT_EQ(s.delete_api_key(added->id).error().code(), ErrorCode::kNotFound);
  // Ids are never reused.
  auto next = s.add_api_key("next", hash);
  ASSERT_OK(next);
  EXPECT_GT(next->id, added->id);
}

TEST_F(StoreTest, EventsNewestLimitOldestFirstAndCascade) {
  Store s = open_store();
  const std::string id = make_id(5);
  ASSERT_OK(s.put_sandbox(sample(5)));
  for (int i = 0; i < 10; ++i) {
    ASSERT_OK(s.append_event(id, "kind" + std::to_string(i), "detail"));
  }
  auto ev = s.events(id, 3);
  ASSERT_OK(ev);
  ASSERT_EQ(ev->size(), 3u);
  EXPECT_EQ((*ev)[0].kind, "kind7");
  EXPECT_EQ((*ev)[2].kind, "kind9");
  EXPECT_LT((*ev)[0].id, (*ev)[1].id);
  EXPECT_GT((*ev)[0].at, 0);
  EXPECT_EQ((*ev)[0].sandbox_id, id);

  // Re-putting the sandbox (an upsert) keeps its events.
  ASSERT_OK(s.put_sandbox(sample(5)));
  EXPECT_EQ(s.events(id, 100)->size(), 10u);

  ASSERT_OK(s.delete_sandbox(id));
  EXPECT_TRUE(s.events(id, 100)->empty());
}

TEST_F(StoreTest, PutWithEventCommitsBoth) {
  Store s = open_store();
  SandboxRecord r = sample(6);
  ASSERT_OK(s.put_sandbox(r, "created", "template base (pool)"));
  EXPECT_EQ(*s.get_sandbox(r.id), r);
  auto ev = s.events(r.id, 10);
  ASSERT_OK(ev);
  ASSERT_EQ(ev->size(), 1u);
  EXPECT_EQ((*ev)[0].kind, "created");
  EXPECT_EQ((*ev)[0].detail, "template base (pool)");
  // A malformed record writes neither.
  SandboxRecord bad = sample(7);
  bad.metadata = nlohmann::json::array();
  EXPECT_FALSE(s.put_sandbox(bad, "created", ""));
  EXPECT_EQ(s.get_sandbox(bad.id).error().code(), ErrorCode::kNotFound);
}

TEST_F(StoreTest, EventsAreCappedPerSandbox) {
  Store s = open_store();
  const std::string id = make_id(6);
  ASSERT_OK(s.put_sandbox(sample(6)));
  for (int64_t i = 0; i < kMaxEventsPerSandbox + 5; ++i) {
    ASSERT_OK(s.append_event(id, "tick", std::to_string(i)));
  }
  auto ev = s.events(id, kMaxEventsPerSandbox * 2);
  ASSERT_OK(ev);
  ASSERT_EQ(static_cast<int64_t>(ev->size()), kMaxEventsPerSandbox);
  EXPECT_EQ(ev->front().detail, "5");
  EXPECT_EQ(ev->back().detail, std::to_string(kMaxEventsPerSandbox + 4));
}

TEST_F(StoreTest, ReopenKeepsEverything) {
  std::string hash = sha256_hex("e2b_key");
  {
    Store s = open_store();
    for (int i = 0; i < 5; ++i) ASSERT_OK(s.put_sandbox(sample(i)));
    ASSERT_OK(s.update_state(make_id(3), SandboxState::kPaused));
    ASSERT_OK(s.add_api_key("k", hash));
    ASSERT_OK(s.append_event(make_id(0), "created", "from template base"));
  }
  Store s = open_store();
  auto all = s.list_sandboxes();
  ASSERT_OK(all);
  ASSERT_EQ(all->size(), 5u);
  for (int i = 0; i < 5; ++i) {
    SandboxRecord want = sample(i);
    if (i == 3) want.state = SandboxState::kPaused;
    EXPECT_EQ((*all)[i], want);
  }
  EXPECT_EQ(s.find_api_key(hash)->name, "k");
  auto ev = s.events(make_id(0), 10);
  ASSERT_EQ(ev->size(), 1u);
  EXPECT_EQ((*ev)[0].detail, "from template base");
}

TEST_F(StoreTest, ConcurrentWritersFromEightThreads) {
  Store s = open_store();
  constexpr int kThreads = 8;
  constexpr int kPerThread = 40;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        int n = t * 1000 + i;
        SandboxRecord r = sample(n);
        if (!s.put_sandbox(r)) ++failures;
        if (!s.append_event(r.id, "created", "")) ++failures;
        if (!s.update_state(r.id, i % 2 ? SandboxState::kPaused : SandboxState::kRunning)) ++failures;
        if (!s.get_sandbox(r.id)) ++failures;
        if (!s.list_sandboxes()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  auto all = s.list_sandboxes();
  ASSERT_OK(all);
  EXPECT_EQ(all->size(), size_t(kThreads * kPerThread));
  std::set<std::string> ids;
  for (const auto& r : *all) ids.insert(r.id);
  EXPECT_EQ(ids.size(), size_t(kThreads * kPerThread));
  for (const auto& r : *all) EXPECT_EQ(s.events(r.id, 10)->size(), 1u);
}

// Commits never checkpoint in line (a checkpoint syncs the disk); a thread of
// the store's copies the WAL into the database file once commits stop (2 s),
// with nothing else happening: a copy of the database file alone (no WAL) has
// the rows.
TEST_F(StoreTest, WalIsCheckpointedInTheBackground) {
  Store s = open_store();
  constexpr int kRows = 50;
  for (int i = 0; i < kRows; ++i) ASSERT_OK(s.put_sandbox(sample(i), "created", "test"));
  const std::string copy = dir_.path().string() + "/copy.db";
  auto rows_in_main_file = [&]() -> int {
    std::error_code ec;
    for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(copy + suffix, ec);
    fs::copy_file(path(), copy, ec);
    if (ec) return -1;
    sqlite3* db = nullptr;
    int n = -1;
    if (sqlite3_open_v2(copy.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK) {
      sqlite3_stmt* st = nullptr;
      if (sqlite3_prepare_v2(db, "SELECT count(*) FROM sandboxes", -1, &st, nullptr) == SQLITE_OK &&
          sqlite3_step(st) == SQLITE_ROW) {
        n = sqlite3_column_int(st, 0);
      }
      sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return n;
  };
  int seen = -1;
  for (int i = 0; i < 100 && seen != kRows; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    seen = rows_in_main_file();
  }
  EXPECT_EQ(seen, kRows) << "the WAL was not checkpointed within 10 s";
}

TEST(StoreNames, StateAndBackendRoundTrip) {
  for (auto st : {SandboxState::kRunning, SandboxState::kPaused, SandboxState::kKilled}) {
    EXPECT_EQ(*parse_sandbox_state(sandbox_state_name(st)), st);
  }
  EXPECT_FALSE(parse_sandbox_state("creating").has_value());
  EXPECT_EQ(*parse_backend("vm"), BackendKind::kVm);
  EXPECT_FALSE(parse_backend("docker").has_value());
  EXPECT_TRUE(valid_sandbox_id("abcdefghij0123456789"));
  EXPECT_FALSE(valid_sandbox_id("abcdefghij012345678"));
  EXPECT_FALSE(valid_sandbox_id("abcdefghij012345678_"));
  EXPECT_EQ(db_path("/var/lib/coppice"), "/var/lib/coppice/coppice.db");
  EXPECT_EQ(db_path("/var/lib/coppice/"), "/var/lib/coppice/coppice.db");
}

TEST(Keys, GeneratedKeysAreWellFormedAndDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    auto k = generate_api_key();
    ASSERT_OK(k);
    EXPECT_TRUE(looks_like_api_key(*k)) << *k;
    seen.insert(*k);
  }
  EXPECT_EQ(seen.size(), 100u);
  EXPECT_FALSE(looks_like_api_key("e2b_ABCDEF0123456789abcdef0123456789abcdef01"));
  EXPECT_FALSE(looks_like_api_key("sk_0123456789abcdef0123456789abcdef01234567"));
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace coppice::store

namespace coppice::store {
namespace {

TEST_F(StoreTest, TeamsOwnKeysAndSandboxes) {
  Store s = open_store();
  auto teams = s.list_teams();
  ASSERT_TRUE(teams);
  ASSERT_EQ(teams->size(), 1u);
  EXPECT_EQ((*teams)[0].name, kDefaultTeam) << "the default team always exists";
  ASSERT_OK(s.add_team("team-a"));
  EXPECT_EQ(s.add_team("team-a").error().code(), ErrorCode::kAlreadyExists);
  for (const char* bad : {"", "Team", "-lead", "a:b", "a b", "a/b"})
    EXPECT_EQ(s.add_team(bad).error().code(), ErrorCode::kInvalidArgument) << bad;
  EXPECT_EQ(s.add_team(std::string(64, 'a')).error().code(), ErrorCode::kInvalidArgument);
  ASSERT_OK(s.ensure_team("team-a"));
  ASSERT_OK(s.ensure_team("team-b"));
  EXPECT_EQ(s.list_teams()->size(), 3u);

  // Keys belong to a team that exists.
  auto ka = s.add_api_key("a", sha256_hex("key-a"), "team-a");
  ASSERT_TRUE(ka) << ka.error().to_string();
  EXPECT_EQ(ka->team, "team-a");
  EXPECT_FALSE(ka->admin);
  auto kadm = s.add_api_key("root", sha256_hex("key-root"), kDefaultTeam, true);
  ASSERT_TRUE(kadm);
  EXPECT_TRUE(s.find_api_key(sha256_hex("key-root"))->admin);
  EXPECT_EQ(s.find_api_key(sha256_hex("key-a"))->team, "team-a");
  EXPECT_EQ(s.add_api_key("x", sha256_hex("key-x"), "nobody").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(s.list_api_keys("team-a")->size(), 1u);
  EXPECT_EQ(s.list_api_keys()->size(), 2u);
  // A team cannot remove another team's key.
  EXPECT_EQ(s.delete_api_key(kadm->id, "team-a").error().code(), ErrorCode::kNotFound);
  EXPECT_TRUE(s.find_api_key(sha256_hex("key-root")));

  // Sandboxes carry their team; a team with sandboxes stays.
  SandboxRecord r = sample(7);
  r.team = "team-a";
  ASSERT_OK(s.put_sandbox(r));
  EXPECT_EQ(s.get_sandbox(r.id)->team, "team-a");
  EXPECT_EQ(*s.count_team_sandboxes("team-a"), 1);
  r.team = "Not A Team";
  EXPECT_EQ(s.put_sandbox(r).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(s.delete_team("team-a").error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(s.delete_team(kDefaultTeam).error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(s.delete_team("nobody").error().code(), ErrorCode::kNotFound);
  ASSERT_OK(s.delete_sandbox(r.id));
  // Deleting a team removes its keys with it.
  ASSERT_OK(s.delete_team("team-a"));
  EXPECT_EQ(s.find_api_key(sha256_hex("key-a")).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(s.get_team("team-a").error().code(), ErrorCode::kNotFound);
}

TEST_F(StoreTest, RowsFromBeforeTeamsMoveToTheDefaultTeamAndOldKeysStayAdmin) {
  {
    Store s = open_store();
    SandboxRecord r = sample(3);
    ASSERT_OK(s.put_sandbox(r));
  }
  // Take the database back to schema 2 (no teams) with a key stored then.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path().c_str(), &db), SQLITE_OK);
  const std::string back = "DROP TABLE dir_snapshots; DROP TABLE snapshots; DROP TABLE volume_mounts; DROP TABLE volumes; DROP TABLE net_addrs; DROP INDEX api_keys_by_team; DROP INDEX sandboxes_by_team; DROP TABLE teams;"
                           "ALTER TABLE api_keys DROP COLUMN team; ALTER TABLE api_keys DROP COLUMN admin;"
                           "ALTER TABLE sandboxes DROP COLUMN team;"
                           "INSERT INTO api_keys (name, hash, created_at) VALUES ('default', '" +
                           sha256_hex("old-key") + "', 1); PRAGMA user_version = 2;";
  char* err = nullptr;
  ASSERT_EQ(sqlite3_exec(db, back.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
  sqlite3_close(db);

  Store s = open_store();
  EXPECT_EQ(*s.pragma("user_version"), std::to_string(Store::schema_version()));
  auto k = s.find_api_key(sha256_hex("old-key"));
  ASSERT_TRUE(k);
  EXPECT_EQ(k->team, kDefaultTeam);
  EXPECT_TRUE(k->admin) << "a key from before teams could do everything";
  EXPECT_EQ(s.get_sandbox(make_id(3))->team, kDefaultTeam);
  EXPECT_TRUE(s.get_team(kDefaultTeam));
}

}  // namespace
}  // namespace coppice::store

namespace coppice::store {
namespace {

class NetAddrTest : public ::testing::Test {
 protected:
  TempDir dir_;
};

TEST_F(NetAddrTest, TakenAddressesSurviveReopenAndAreNeverTakenTwice) {
  const std::string path = db_path(dir_.path().string());
  {
    auto s = Store::open(path);
    ASSERT_TRUE(s) << s.error().to_string();
    ASSERT_TRUE(s->add_net_addr({0x0AD50002, "spare", "c123000002", 1}));
    ASSERT_TRUE(s->add_net_addr({0x0AD50003, "spare", "c123000003", 1}));
    auto again = s->add_net_addr({0x0AD50002, "spare", "x", 2});
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code(), ErrorCode::kAlreadyExists);
    ASSERT_TRUE(s->put_net_addr({0x0AD50002, "abcdefghij0123456789", "c123000002", 1}));
    ASSERT_TRUE(s->delete_net_addr(0x0AD50003));
    ASSERT_TRUE(s->delete_net_addr(0x0AD50003)) << "freeing a free address is a no-op";
  }
  auto s = Store::open(path);
  ASSERT_TRUE(s);
  auto rows = s->list_net_addrs();
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].addr, 0x0AD50002u);
  EXPECT_EQ((*rows)[0].owner, "abcdefghij0123456789");
  EXPECT_EQ((*rows)[0].link, "c123000002");
}

}  // namespace
}  // namespace coppice::store

namespace coppice::store {
namespace {

class VolumeStoreTest : public ::testing::Test {
 protected:
  std::string path() const { return db_path(dir_.path().string()); }
  TempDir dir_;
};

VolumeRecord volume(const std::string& id, const std::string& team, const std::string& name) {
  VolumeRecord v;
  v.id = id;
  v.team = team;
  v.name = name;
  v.token = "tok-" + id;
  v.quota_bytes = 1 << 20;
  v.created_at = 1'700'000'000'000;
  return v;
}

TEST(VolumeNames, Validation) {
  for (const char* good : {"a", "data", "my-volume_1.v2", "A1"}) EXPECT_TRUE(valid_volume_name(good)) << good;
  for (const char* bad : {"", ".", "..", ".hidden", "-x", "a/b", "../etc", "a b", "a\n", "ü"})
    EXPECT_FALSE(valid_volume_name(bad)) << bad;
  EXPECT_TRUE(valid_volume_name(std::string(kMaxVolumeNameLength, 'v')));
  EXPECT_FALSE(valid_volume_name(std::string(kMaxVolumeNameLength + 1, 'v')));
}

TEST_F(VolumeStoreTest, TeamScopedNamesMountsAndDeletion) {
  auto opened = Store::open(path());
  ASSERT_TRUE(opened) << opened.error().to_string();
  Store& s = *opened;
  ASSERT_OK(s.ensure_team("team-b"));
  const std::string va(20, 'a'), vb(20, 'b'), vc(20, 'c');
  ASSERT_OK(s.add_volume(volume(va, "default", "data")));
  ASSERT_OK(s.add_volume(volume(vb, "team-b", "data")));  // names are per team
  auto keeps = s.delete_team("team-b");
  ASSERT_FALSE(keeps) << "a team with volumes stays";
  EXPECT_EQ(keeps.error().code(), ErrorCode::kFailedPrecondition);
  auto dup = s.add_volume(volume(vc, "default", "data"));
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(s.add_volume(volume(vc, "default", "..")).error().code(), ErrorCode::kInvalidArgument);

  // Another team's volume is missing, with the same message.
  auto other = s.get_volume(vb, "default");
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(other.error().message(), "volume " + vb + " not found");
  EXPECT_EQ(s.get_volume(vc, "default").error().message(), "volume " + vc + " not found");
  EXPECT_EQ(s.get_volume(va, "default")->token, "tok-" + va);
  EXPECT_EQ(s.get_volume_by_name("team-b", "data")->id, vb);
  ASSERT_EQ(s.list_volumes("default")->size(), 1u);
  ASSERT_EQ(s.list_volumes("")->size(), 2u);

  // Mounted (by a create in flight: no sandbox row yet): not deletable.
  SandboxRecord r = sample(7);
  ASSERT_OK(s.add_volume_mounts(r.id, {{r.id, va, "data", "/data"}, {r.id, va, "data", "/data2"}}));
  auto again = s.add_volume_mounts(r.id, {{r.id, vb, "data", "/data"}});
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), ErrorCode::kAlreadyExists);
  auto gone = s.add_volume_mounts(r.id, {{r.id, vc, "nope", "/x"}});
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code(), ErrorCode::kNotFound);
  auto busy = s.delete_volume(va, "default");
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(s.delete_volume(vb, "default").error().code(), ErrorCode::kNotFound) << "another team's";
  auto mounts = s.volume_mounts(r.id);
  ASSERT_TRUE(mounts);
  ASSERT_EQ(mounts->size(), 2u);
  EXPECT_EQ((*mounts)[0].path, "/data");
  EXPECT_EQ((*mounts)[0].volume_name, "data");

  ASSERT_OK(s.put_sandbox(r));
  ASSERT_OK(s.delete_volume_mount(r.id, "/data2"));
  EXPECT_EQ(s.delete_volume_mount(r.id, "/data2").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(*s.prune_volume_mounts(), 0) << "its sandbox is live";
  EXPECT_FALSE(s.delete_volume(va, "default"));
  // Killing the sandbox frees the volume in the same commit.
  ASSERT_OK(s.delete_sandbox(r.id));
  EXPECT_TRUE(s.volume_mounts(r.id)->empty());
  ASSERT_OK(s.delete_volume(va, "default"));
  EXPECT_EQ(s.get_volume(va).error().code(), ErrorCode::kNotFound);
}

TEST_F(VolumeStoreTest, SurviveReopenAndOrphanMountsArePruned) {
  const std::string va(20, 'a');
  const std::string orphan = make_id(9);
  {
    auto s = Store::open(path());
    ASSERT_TRUE(s);
    ASSERT_OK(s->add_volume(volume(va, "default", "keep")));
    ASSERT_OK(s->add_volume_mounts(orphan, {{orphan, va, "keep", "/mnt/keep"}}));
  }
  // As after a kill -9 in the middle of a create: a mount without a sandbox.
  auto s = Store::open(path());
  ASSERT_TRUE(s);
  EXPECT_EQ(s->get_volume(va)->name, "keep");
  EXPECT_EQ(s->volume_mounts(orphan)->size(), 1u);
  EXPECT_EQ(*s->prune_volume_mounts(), 1);
  EXPECT_TRUE(s->volume_mounts(orphan)->empty());
  ASSERT_OK(s->delete_volume(va));
}


SnapshotRecord snapshot(const std::string& id, const std::string& team, const std::string& name, int64_t at) {
  SnapshotRecord r;
  r.id = id;
  r.team = team;
  r.name = name;
  r.source_sandbox = make_id(1);
  r.template_id = "base";
  r.memory = true;
  r.created_at = at;
  r.disk_bytes = 4096;
  r.data = {{"layers", nlohmann::json::array({{{"dir", "/x/upper"}, {"hostRoot", 1000000}}})}};
  return r;
}

TEST_F(VolumeStoreTest, SnapshotsAreTeamScopedNamedUniquelyAndSurviveReopen) {
  const std::string a(20, 'a'), b(20, 'b'), c(20, 'c');
  {
    auto s = Store::open(path());
    ASSERT_TRUE(s) << s.error().to_string();
    ASSERT_OK(s->add_snapshot(snapshot(a, "default", "base-snap", 1)));
    ASSERT_OK(s->add_snapshot(snapshot(c, "team-b", "base-snap", 2)));  // names are per team
    // A name taken in the team moves to the newer snapshot.
    ASSERT_OK(s->add_snapshot(snapshot(b, "default", "base-snap", 3)));
    auto bad = snapshot(std::string(20, 'd'), "default", "../x", 4);
    EXPECT_EQ(s->add_snapshot(bad).error().code(), ErrorCode::kInvalidArgument);
    auto dup = snapshot(a, "default", "", 5);
    EXPECT_FALSE(s->add_snapshot(dup).has_value());
  }
  auto s = Store::open(path());
  ASSERT_TRUE(s);
  EXPECT_EQ(s->get_snapshot(a)->name, "");
  EXPECT_EQ(s->find_snapshot("default", "base-snap")->id, b);
  EXPECT_EQ(s->find_snapshot("default", a)->id, a);
  EXPECT_EQ(s->find_snapshot("team-b", "base-snap")->id, c);
  EXPECT_EQ(s->find_snapshot("team-b", a).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(s->get_snapshot(a, "team-b").error().code(), ErrorCode::kNotFound);
  auto mine = s->list_snapshots("default");
  ASSERT_TRUE(mine);
  ASSERT_EQ(mine->size(), 2u);
  EXPECT_EQ((*mine)[0].id, a);
  EXPECT_EQ((*mine)[1], snapshot(b, "default", "base-snap", 3));
  EXPECT_EQ(s->list_snapshots("", make_id(1))->size(), 3u);
  EXPECT_TRUE(s->list_snapshots("default", make_id(2))->empty());
  EXPECT_EQ(s->delete_snapshot(a, "team-b").error().code(), ErrorCode::kNotFound);
  ASSERT_OK(s->delete_snapshot(a, "default"));
  EXPECT_EQ(s->delete_snapshot(a).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(s->list_snapshots("")->size(), 2u);
}


TEST_F(VolumeStoreTest, DirSnapshotsAreNamedPerTeam) {
  auto s = Store::open(path());
  ASSERT_TRUE(s) << s.error().to_string();
  DirSnapshotRecord r{"default", "proj", std::string(20, 'a'), make_id(1), "/home/user/proj", 1000000, 4096, 1};
  ASSERT_OK(s->add_dir_snapshot(r));
  EXPECT_EQ(s->add_dir_snapshot(r).error().code(), ErrorCode::kAlreadyExists);
  auto other = r;
  other.team = "team-b";
  other.id = std::string(20, 'b');
  ASSERT_OK(s->add_dir_snapshot(other));
  auto bad = r;
  bad.name = "../x";
  EXPECT_EQ(s->add_dir_snapshot(bad).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(*s->get_dir_snapshot("default", "proj"), r);
  EXPECT_EQ(s->get_dir_snapshot("team-c", "proj").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(s->list_dir_snapshots("default")->size(), 1u);
  EXPECT_EQ(s->list_dir_snapshots("")->size(), 2u);
  ASSERT_OK(s->delete_dir_snapshot("default", "proj"));
  EXPECT_EQ(s->delete_dir_snapshot("default", "proj").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(s->get_dir_snapshot("team-b", "proj")->id, std::string(20, 'b'));
}

}  // namespace
}  // namespace coppice::store
