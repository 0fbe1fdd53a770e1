// The heart's unit tests: lifecycle, TTL, pools, recovery, metrics and list
// filters, over a FakeBackend (no root, no kernel objects).
#include "core/sandbox_manager.h"

#include <gtest/gtest.h>

#include <thread>

#include "core/testing/manager_fixture.h"

namespace coppice::core {
namespace {

using testing::ManagerFixture;

class Manager : public ManagerFixture {
 protected:
  void SetUp() override {
    ManagerFixture::SetUp();
    make_manager();
    ASSERT_TRUE(run(mgr_->recover()));
    ASSERT_TRUE(run(mgr_->start()));
  }
  template <typename P>
  bool eventually(P pred, int ms = 5000) {
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < until) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return pred();
  }
};

TEST_F(Manager, CreateGetListKillAndTheStoreAndRoutesFollow) {
  CreateParams p;
  p.metadata = json{{"k", "v"}};
  p.env_vars = {{"A", "1"}};
  auto v = create(p);
  ASSERT_EQ(v.id.size(), 20u);
  EXPECT_EQ(v.state, SandboxState::kRunning);
  EXPECT_EQ(v.template_id, "base");
  EXPECT_FALSE(v.envd_access_token.empty());
  // Stored before the answer; routed for the data plane.
  auto rec = store_->get_sandbox(v.id);
  ASSERT_TRUE(rec) << rec.error().to_string();
  EXPECT_EQ(rec->metadata, json({{"k", "v"}}));
  auto route = mgr_->routes().lookup(v.id);
  ASSERT_NE(route, nullptr);
  EXPECT_TRUE(route->running());
  EXPECT_EQ(mgr_->count_by_state().running, 1u);
  // envd started with the create's token and environment.
  auto init = json::parse(backend_->last_init(v.id));
  EXPECT_EQ(init["accessToken"], v.envd_access_token);
  EXPECT_EQ(init["envVars"]["A"], "1");

  auto got = run(mgr_->get(v.id));
  ASSERT_TRUE(got);
  EXPECT_EQ(got->metadata, json({{"k", "v"}}));
  EXPECT_EQ(run(mgr_->list(ListFilter{})).size(), 1u);

  ASSERT_TRUE(run(mgr_->kill(v.id)));
  EXPECT_EQ(mgr_->routes().lookup(v.id), nullptr);
  EXPECT_FALSE(store_->get_sandbox(v.id));
  EXPECT_FALSE(backend_->existing().count(v.id));
  EXPECT_EQ(mgr_->count_by_state().running, 0u);
  auto again = run(mgr_->kill(v.id));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), ErrorCode::kNotFound);
}

TEST_F(Manager, PauseAndResumeFollowTheStateMachine) {
  auto v = create();
  ASSERT_TRUE(run(mgr_->pause(v.id)));
  EXPECT_TRUE(backend_->frozen(v.id));
  EXPECT_FALSE(mgr_->routes().lookup(v.id)->running()) << "the proxy refuses a paused sandbox";
  EXPECT_EQ(store_->get_sandbox(v.id)->state, store::SandboxState::kPaused);
  auto twice = run(mgr_->pause(v.id));
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(twice.error().message().find("already paused"), std::string::npos);
  EXPECT_EQ(mgr_->count_by_state().paused, 1u);

  auto r = run(mgr_->resume(v.id, std::nullopt));
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->state, SandboxState::kRunning);
  EXPECT_FALSE(backend_->frozen(v.id));
  auto again = run(mgr_->resume(v.id, std::nullopt));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), ErrorCode::kFailedPrecondition);

  // connect on a paused sandbox resumes it (201), on a running one extends.
  ASSERT_TRUE(run(mgr_->pause(v.id)));
  auto c = run(mgr_->connect(v.id, 600));
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->second);
  auto c2 = run(mgr_->connect(v.id, 900));
  ASSERT_TRUE(c2);
  EXPECT_FALSE(c2->second);
  EXPECT_GT(c2->first.end_at, Clock::now() + std::chrono::seconds(800));
}

TEST_F(Manager, ActionsDuringATransitionAre409) {
  auto v = create();
  backend_->block_freeze = true;
  auto pausing = asio::co_spawn(io_, mgr_->pause(v.id), asio::use_future);
  ASSERT_TRUE(eventually([&] { return mgr_->routes().lookup(v.id)->state == SandboxState::kPausing; }));
  auto r = run(mgr_->resume(v.id, std::nullopt));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(r.error().message().find("pausing; try again"), std::string::npos) << r.error().message();
  // The owner is not blocked by the pause in flight: others are served.
  auto other = create();
  EXPECT_FALSE(other.id.empty());
  backend_->unblock_freeze();
  EXPECT_TRUE(pausing.get());
}

TEST_F(Manager, ASandboxWhoseEnvdDiesIsRemovedAtOnce) {
  CreateParams p;
  p.timeout_s = 3600;
  auto dies = create(p);
  auto lives = create(p);
  auto paused = create(p);
  ASSERT_TRUE(run(mgr_->pause(paused.id)));
  backend_->die(dies.id);
  ASSERT_TRUE(eventually([&] { return mgr_->routes().lookup(dies.id) == nullptr; }, 2000))
      << "still routed long after its envd died";
  auto got = run(mgr_->get(dies.id));
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code(), ErrorCode::kNotFound);
  EXPECT_TRUE(eventually([&] { return !backend_->existing().count(dies.id); }, 2000)) << "its resources are freed";
  EXPECT_TRUE(eventually([&] { return !store_->get_sandbox(dies.id); }, 2000)) << "its record is removed";
  // The others are untouched; a paused one that dies goes too.
  EXPECT_TRUE(run(mgr_->get(lives.id)));
  backend_->die(paused.id);
  ASSERT_TRUE(eventually([&] { return mgr_->routes().lookup(paused.id) == nullptr; }, 2000));
  // A plain kill is no death.
  ASSERT_TRUE(run(mgr_->kill(lives.id)));
  EXPECT_EQ(mgr_->count_by_state().running, 0u);
}

TEST_F(Manager, TimeoutsExpireAndCanBeMoved) {
  CreateParams p;
  p.timeout_s = 1;
  auto short_lived = create(p);
  auto kept = create(p);
  ASSERT_TRUE(run(mgr_->set_timeout(kept.id, 60)));
  ASSERT_TRUE(eventually([&] { return mgr_->routes().lookup(short_lived.id) == nullptr; }, 4000));
  // The store is written behind the route table, by its ordered queue.
  EXPECT_TRUE(eventually([&] { return !store_->get_sandbox(short_lived.id); }, 4000));
  EXPECT_NE(mgr_->routes().lookup(kept.id), nullptr);
  // refresh only extends.
  auto before = run(mgr_->get(kept.id))->end_at;
  ASSERT_TRUE(run(mgr_->refresh(kept.id, 5)));
  EXPECT_EQ(run(mgr_->get(kept.id))->end_at, before);
  ASSERT_TRUE(run(mgr_->refresh(kept.id, 120)));
  EXPECT_GT(run(mgr_->get(kept.id))->end_at, before);
}

TEST_F(Manager, DiskQuotaComesFromTheTemplateOrTheDefault) {
  write_template("smalldisk", "disk_mb = 20\n");
  ASSERT_TRUE(templates_->reload());
  // Quotas off (the fixture's default): no cap asked, none reported.
  auto off = run(mgr_->create(CreateParams{}));
  ASSERT_TRUE(off) << off.error().to_string();
  EXPECT_EQ(off->disk_mb, 0);
  EXPECT_EQ(backend_->spec_of(off->id).disk_bytes, 0u);
  // On: the template's diskSizeMB, else the gateway's default.
  cfg_.disk_quota = true;
  cfg_.default_disk_mb = 300;
  auto dflt = run(mgr_->create(CreateParams{}));
  ASSERT_TRUE(dflt);
  EXPECT_EQ(dflt->disk_mb, 300);
  EXPECT_EQ(backend_->spec_of(dflt->id).disk_bytes, 300ull << 20);
  CreateParams p;
  p.template_id = "smalldisk";
  auto small = run(mgr_->create(p));
  ASSERT_TRUE(small) << small.error().to_string();
  EXPECT_EQ(small->disk_mb, 20);
  EXPECT_EQ(backend_->spec_of(small->id).disk_bytes, 20ull << 20);
}

TEST_F(Manager, AFailedCreateLeavesNothing) {
  backend_->fail_creates = 1;
  auto r = run(mgr_->create(CreateParams{}));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kResourceExhausted);
  EXPECT_EQ(mgr_->count(), 0u);
  EXPECT_TRUE(store_->list_sandboxes()->empty());
  // A template whose start command fails: the sandbox made is removed.
  write_template("broken", "start_cmd = \"fail-start\"\n");
  ASSERT_TRUE(templates_->reload());
  backend_->set_exit_code("fail-start", 3);
  CreateParams p;
  p.template_id = "broken";
  auto r2 = run(mgr_->create(p));
  ASSERT_FALSE(r2);
  EXPECT_NE(r2.error().message().find("start_cmd"), std::string::npos) << r2.error().message();
  EXPECT_EQ(backend_->creates(), 1u);
  EXPECT_EQ(backend_->destroys(), 1u);
  EXPECT_TRUE(backend_->existing().empty());
  EXPECT_EQ(mgr_->count(), 0u);
}

TEST_F(Manager, UnknownTemplateIsTheCallersMistake) {
  CreateParams p;
  p.template_id = "nope";
  auto r = run(mgr_->create(p));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message().find("base"), std::string::npos) << "names the templates that exist";
}

TEST_F(Manager, ListFiltersByTemplateTimeMetadataAndState) {
  CreateParams a;
  a.metadata = json{{"team", "x"}};
  auto s1 = create(a);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto mid = Clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CreateParams b;
  b.template_id = "other";
  auto s2 = create(b);
  ASSERT_TRUE(run(mgr_->pause(s2.id)));

  ListFilter by_template;
  by_template.template_id = "other";
  auto l = run(mgr_->list(by_template));
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0].id, s2.id);

  ListFilter after;
  after.started_after = mid;
  l = run(mgr_->list(after));
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0].id, s2.id);
  ListFilter before;
  before.started_before = mid;
  l = run(mgr_->list(before));
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0].id, s1.id);

  ListFilter meta;
  meta.metadata = {{"team", "x"}};
  EXPECT_EQ(run(mgr_->list(meta)).size(), 1u);
  ListFilter paused;
  paused.states = {SandboxState::kPaused};
  l = run(mgr_->list(paused));
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0].id, s2.id);
  // Oldest first.
  l = run(mgr_->list(ListFilter{}));
  ASSERT_EQ(l.size(), 2u);
  EXPECT_EQ(l[0].id, s1.id);
}

TEST_F(Manager, MetricsKeepARingAndAnswerRanges) {
  cfg_.metrics_interval_s = 1;
  make_manager();
  ASSERT_TRUE(run(mgr_->recover()));
  ASSERT_TRUE(run(mgr_->start()));
  auto v = create();
  auto t0 = Clock::now();
  ASSERT_TRUE(eventually([&] {
    auto m = run(mgr_->metrics(v.id, std::nullopt, t0 + std::chrono::hours(-1) + std::chrono::hours(1) +
                                                        std::chrono::seconds(3)));
    return m && m->size() >= 2;
  }, 5000));
  auto all = run(mgr_->metrics(v.id, std::nullopt, std::nullopt));
  ASSERT_TRUE(all);
  ASSERT_GE(all->size(), 2u);
  EXPECT_EQ(all->back().mem_used, 64u << 20);
  EXPECT_EQ(all->back().disk_used, 4096u) << "a query measures the disk too";
  // A range before the sandbox existed is empty; one around the first sample has it.
  auto none = run(mgr_->metrics(v.id, t0 - std::chrono::hours(2), t0 - std::chrono::hours(1)));
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
  auto first = (*all)[0].at;
  auto one = run(mgr_->metrics(v.id, first, first));
  ASSERT_TRUE(one);
  EXPECT_EQ(one->size(), 1u);
  auto bad = run(mgr_->metrics(v.id, t0, t0 - std::chrono::seconds(5)));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), ErrorCode::kInvalidArgument);
}

TEST_F(Manager, RecoveryAdoptsLiveSandboxesAndRemovesTheRest) {
  CreateParams keep;
  auto alive = create(keep);
  auto paused = create(keep);
  ASSERT_TRUE(run(mgr_->pause(paused.id)));
  auto dead = create(keep);
  CreateParams soon;
  soon.timeout_s = 1;
  auto expiring = create(soon);
  // The gateway goes away without killing anything; meanwhile one sandbox
  // dies, one expires, and the kernel holds an orphan nobody recorded.
  run(mgr_->shutdown());
  mgr_.reset();
  backend_->kill_behind_our_back(dead.id);
  sandbox::SandboxSpec orphan;
  orphan.id = "orphan00000000000001";
  orphan.state_dir = cfg_.state_dir + "/sandboxes/" + orphan.id;
  ASSERT_TRUE(backend_->create(orphan));
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));

  make_manager();
  ASSERT_TRUE(run(mgr_->recover()));
  ASSERT_TRUE(run(mgr_->start()));
  auto got = run(mgr_->get(alive.id));
  ASSERT_TRUE(got);
  EXPECT_EQ(got->envd_access_token, alive.envd_access_token);
  auto p = run(mgr_->get(paused.id));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->state, SandboxState::kPaused);
  EXPECT_FALSE(run(mgr_->get(dead.id)));
  EXPECT_FALSE(store_->get_sandbox(dead.id));
  EXPECT_FALSE(run(mgr_->get(expiring.id)));
  EXPECT_FALSE(backend_->existing().count(expiring.id));
  EXPECT_FALSE(backend_->existing().count(orphan.id));
  EXPECT_EQ(mgr_->count_by_state().running, 1u);
  EXPECT_EQ(mgr_->count_by_state().paused, 1u);
}

TEST_F(Manager, PoolsServeHitsRefillAndNeverHandOutAStaleBuild) {
  auto w = run(mgr_->warm_pool("base", 3));
  ASSERT_TRUE(w) << w.error().to_string();
  ASSERT_TRUE(eventually([&] { return mgr_->pools()[0].available == 3; }));
  EXPECT_EQ(backend_->creates(), 3u);
  CreateParams p;
  p.env_vars = {{"OWN", "1"}};
  p.metadata = json{{"m", "1"}};
  auto pooled = backend_->existing();
  auto v = create(p);
  EXPECT_TRUE(pooled.count(v.id)) << "a pool hit: one of the sandboxes made ahead";
  auto init = json::parse(backend_->last_init(v.id));
  EXPECT_EQ(init["envVars"]["OWN"], "1") << "a hit's own env vars reach envd by /init";
  EXPECT_EQ(init["accessToken"], v.envd_access_token);
  ASSERT_TRUE(eventually([&] { return mgr_->pools()[0].available == 3; }));
  auto pv = mgr_->pools()[0];
  EXPECT_EQ(pv.in_use, 1);
  EXPECT_EQ(pv.hits, 1u);
  ASSERT_TRUE(run(mgr_->kill(v.id)));
  EXPECT_EQ(mgr_->pools()[0].in_use, 0);

  // The template is rebuilt: pooled sandboxes of the old build are removed, not handed out.
  write_template("base", "build_id = \"two\"\n");
  ASSERT_TRUE(templates_->reload());
  size_t before = backend_->creates();
  auto fresh = create();
  EXPECT_EQ(fresh.template_id, "base");
  EXPECT_EQ(json::parse(backend_->last_init(fresh.id))["accessToken"], fresh.envd_access_token);
  EXPECT_GE(backend_->creates(), before + 1) << "the create went cold";

  auto d = run(mgr_->drain_pool("base"));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->target, 0);
  ASSERT_TRUE(eventually([&] { return mgr_->pools()[0].available == 0 && mgr_->pools()[0].filling == 0; }));
  auto bad = run(mgr_->warm_pool("base", -1));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), ErrorCode::kInvalidArgument);
  auto unknown = run(mgr_->warm_pool("nope", 1));
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code(), ErrorCode::kInvalidArgument);
}

TEST_F(Manager, PoolsKeepUpWithAStreamOfCreatesAndKills) {
  backend_->create_delay_ms = 5;
  ASSERT_TRUE(run(mgr_->warm_pool("base", 8)));
  ASSERT_TRUE(eventually([&] { return mgr_->pools()[0].available == 8; }));
  // 40 creates at ~50/s, each killed right after: with refills in parallel
  // below the low mark, the pool serves (almost) all of them.
  for (int i = 0; i < 40; ++i) {
    auto v = create();
    ASSERT_TRUE(run(mgr_->kill(v.id)));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto pv = mgr_->pools()[0];
  EXPECT_GE(pv.hits, 38u) << "hits " << pv.hits << ", misses " << pv.misses;
}

TEST_F(Manager, ShutdownRemovesPooledSandboxesAndKeepsRunningOnes) {
  ASSERT_TRUE(run(mgr_->warm_pool("base", 2)));
  ASSERT_TRUE(eventually([&] { return mgr_->pools()[0].available == 2; }));
  auto v = create();
  ASSERT_TRUE(eventually([&] { return mgr_->pools()[0].available == 2; }));
  run(mgr_->shutdown());
  auto left = backend_->existing();
  EXPECT_EQ(left.size(), 1u);
  EXPECT_TRUE(left.count(v.id));
  auto r = run(mgr_->create(CreateParams{}));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kUnavailable);
}

}  // namespace
}  // namespace coppice::core

namespace coppice::core {
namespace {

TEST_F(Manager, AReplacedTemplateBuildIsKeptUntilItsLastSandboxIsGone) {
  namespace fs = std::filesystem;
  auto on_old = create();
  // A rebuild: the old tree moves to the retired builds, a new one takes its name.
  const std::string retired = templates::retired_path(cfg_.templates_dir, "base");
  fs::create_directories(templates::retired_root(cfg_.templates_dir));
  fs::rename(cfg_.templates_dir + "/base", retired);
  write_template("base", "build_id = \"2\"\n");
  ASSERT_TRUE(templates_->reload());
  auto on_new = create();
  run(mgr_->collect_retired_templates());
  EXPECT_TRUE(fs::exists(retired + "/rootfs")) << "a sandbox still runs on it";
  // It survives a restart of the gateway too: the store names its tree.
  make_manager();
  ASSERT_TRUE(run(mgr_->recover()));
  ASSERT_TRUE(run(mgr_->start()));
  EXPECT_TRUE(fs::exists(retired + "/rootfs"));
  ASSERT_TRUE(run(mgr_->kill(on_old.id)));
  ASSERT_TRUE(eventually([&] { return !fs::exists(retired); }));
  EXPECT_TRUE(fs::exists(cfg_.templates_dir + "/base/rootfs")) << "the current build is never touched";
  EXPECT_TRUE(run(mgr_->get(on_new.id)));
}

}  // namespace
}  // namespace coppice::core

namespace coppice::core {
namespace {

TEST_F(Manager, ATeamSeesOnlyItsOwnSandboxesAndAnotherTeamsIsMissing) {
  CreateParams pa;
  pa.team = "team-a";
  auto a = create(pa);
  CreateParams pb;
  pb.team = "team-b";
  auto b = create(pb);
  EXPECT_EQ(a.team, "team-a");
  // Team b on a's sandbox: the same error as for an id that does not exist.
  TeamScope tb = std::string("team-b");
  auto missing = run(mgr_->get("zzzzzzzzzzzzzzzzzzzz", tb));
  auto other = run(mgr_->get(a.id, tb));
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(other.error().message(), "sandbox " + a.id + " not found");
  EXPECT_EQ(missing.error().message(), "sandbox zzzzzzzzzzzzzzzzzzzz not found");
  EXPECT_EQ(run(mgr_->kill(a.id, tb)).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(run(mgr_->pause(a.id, tb)).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(run(mgr_->resume(a.id, std::nullopt, tb)).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(run(mgr_->connect(a.id, 60, tb)).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(run(mgr_->set_timeout(a.id, 60, tb)).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(run(mgr_->refresh(a.id, 60, tb)).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(run(mgr_->metrics(a.id, std::nullopt, std::nullopt, tb)).error().code(), ErrorCode::kNotFound);
  ListFilter f;
  f.team = "team-b";
  auto listed = run(mgr_->list(f));
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].id, b.id);
  // The route the proxy reads names the team.
  EXPECT_EQ(mgr_->routes().lookup(a.id)->team, "team-a");
  // The team survives a restart.
  EXPECT_EQ(store_->get_sandbox(a.id)->team, "team-a");
  make_manager();
  ASSERT_TRUE(run(mgr_->recover()));
  ASSERT_TRUE(run(mgr_->start()));
  TeamScope ta = std::string("team-a");
  EXPECT_TRUE(run(mgr_->get(a.id, ta)));
  EXPECT_FALSE(run(mgr_->get(a.id, tb)));
  EXPECT_EQ(mgr_->routes().lookup(a.id)->team, "team-a");
  EXPECT_TRUE(run(mgr_->kill(a.id, ta)));
}

TEST_F(Manager, APooledSandboxBelongsToTheTeamThatTakesIt) {
  ASSERT_TRUE(run(mgr_->warm_pool("base", 1)));
  ASSERT_TRUE(eventually([&] { return mgr_->pools()[0].available == 1; }));
  CreateParams p;
  p.team = "team-c";
  auto v = create(p);
  EXPECT_EQ(mgr_->pools()[0].hits, 1u) << "served from the pool";
  EXPECT_EQ(v.team, "team-c");
  EXPECT_EQ(mgr_->routes().lookup(v.id)->team, "team-c");
  EXPECT_EQ(store_->get_sandbox(v.id)->team, "team-c");
  EXPECT_FALSE(run(mgr_->get(v.id, TeamScope(std::string(store::kDefaultTeam)))));
}

}  // namespace
}  // namespace coppice::core

namespace coppice::core {
namespace {

// The inbound policy is published in the route and survives a restart.
TEST_F(Manager, TrafficTokenAndMaskAreRoutedAndKeptAcrossARestart) {
  CreateParams p;
  p.public_traffic = false;
  p.mask_request_host = "app.example:${PORT}";
  auto v = run(mgr_->create(p));
  ASSERT_TRUE(v) << v.error().to_string();
  ASSERT_EQ(v->traffic_access_token.size(), 48u);
  auto r = mgr_->routes().lookup(v->id);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->traffic_token, v->traffic_access_token);
  EXPECT_EQ(r->mask_host, "app.example:${PORT}");
  auto open = create();
  EXPECT_EQ(open.traffic_access_token, "");
  make_manager();
  ASSERT_TRUE(run(mgr_->recover()));
  ASSERT_TRUE(run(mgr_->start()));
  r = mgr_->routes().lookup(v->id);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->traffic_token, v->traffic_access_token);
  EXPECT_EQ(r->mask_host, "app.example:${PORT}");
  auto again = run(mgr_->get(v->id));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->traffic_access_token, v->traffic_access_token);
  EXPECT_EQ(mgr_->routes().lookup(open.id)->traffic_token, "");
}

TEST_F(Manager, AResizeIsKeptInTheRecordAndAcrossARestart) {
  CreateParams p;
  p.lifecycle.pause = true;  // core keeps what the API lets through, whatever it is
  p.lifecycle.keep_memory = false;
  auto v = create(p);
  auto r = run(mgr_->resize(v.id, 3, 2048));
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->cpu_count, 3);
  EXPECT_EQ(r->memory_mb, 2048);
  EXPECT_EQ(backend_->limits_of(v.id), (std::pair<int, uint64_t>{3000, 2048ull << 20}));
  auto rec = store_->get_sandbox(v.id);
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->cpu_count, 3);
  EXPECT_EQ(rec->memory_mb, 2048);
  // Refused by the kernel: nothing changes anywhere.
  auto low = run(mgr_->resize(v.id, std::nullopt, 16));
  ASSERT_FALSE(low);
  EXPECT_EQ(low.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(run(mgr_->get(v.id))->memory_mb, 2048);
  // Another team's sandbox is missing.
  EXPECT_EQ(run(mgr_->resize(v.id, 1, std::nullopt, TeamScope("other"))).error().code(), ErrorCode::kNotFound);
  make_manager();
  ASSERT_TRUE(run(mgr_->recover()));
  ASSERT_TRUE(run(mgr_->start()));
  auto again = run(mgr_->get(v.id));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->cpu_count, 3);
  EXPECT_EQ(again->memory_mb, 2048);
  EXPECT_EQ(again->lifecycle, p.lifecycle);
  // While pausing it is a 409, not a half-done change.
  backend_->block_freeze = true;
  auto pausing = asio::co_spawn(io_, mgr_->pause(v.id), asio::use_future);
  ASSERT_TRUE(eventually([&] { return mgr_->routes().lookup(v.id)->state == SandboxState::kPausing; }));
  auto during = run(mgr_->resize(v.id, 1, std::nullopt));
  ASSERT_FALSE(during);
  EXPECT_EQ(during.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(during.error().message().find("pausing"), std::string::npos) << during.error().to_string();
  backend_->unblock_freeze();
  EXPECT_TRUE(pausing.get());
  EXPECT_TRUE(run(mgr_->resize(v.id, 1, std::nullopt)));
  EXPECT_EQ(run(mgr_->get(v.id))->state, SandboxState::kPaused);
}

TEST_F(Manager, ASandboxKilledDuringItsResizeStaysGone) {
  auto v = create();
  backend_->block_set_limits = true;
  auto resizing = asio::co_spawn(io_, mgr_->resize(v.id, 2, 1024), asio::use_future);
  ASSERT_TRUE(eventually([&] { return backend_->set_limits_waiting.load() == 1; }));
  // One at a time.
  auto second = run(mgr_->resize(v.id, 1, std::nullopt));
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message().find("being resized"), std::string::npos) << second.error().to_string();
  ASSERT_TRUE(run(mgr_->kill(v.id)));
  backend_->unblock_set_limits();
  auto r = resizing.get();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound);
  EXPECT_FALSE(store_->get_sandbox(v.id)) << "the resize wrote no record back";
  EXPECT_FALSE(run(mgr_->get(v.id)));
}

}  // namespace
}  // namespace coppice::core
