// The control plane's routes and the proxy's routing, end to end over HTTP on
// loopback, with the manager over a FakeBackend (no root).
#include "api/api.h"

#include <gtest/gtest.h>

#include "common/file_signature.h"
#include "core/testing/manager_fixture.h"
#include "http/client.h"
#include "tls/test_cert.h"
#include "tls/tls_front.h"

#include <fstream>

namespace coppice::api {
namespace {

using json = nlohmann::json;
using http::bhttp::verb;

const std::string kKey = "e2b_" + std::string(40, 'a');    // bare: the default team, admin
const std::string kKeyA = "e2b_" + std::string(40, '1');   // team-a
const std::string kKeyB = "e2b_" + std::string(40, '2');   // team-b

class ApiTest : public core::testing::ManagerFixture {
 protected:
  void SetUp() override {
    ManagerFixture::SetUp();
    auto keys = parse_api_keys(kKey + ",team-a:" + kKeyA + ",team-b:" + kKeyB);
    ASSERT_TRUE(keys) << keys.error().to_string();
    cfg_.api_keys = *keys;
    for (const auto& k : cfg_.api_keys) ASSERT_TRUE(store_->ensure_team(k.team));
    make_manager();
    ASSERT_TRUE(run(mgr_->recover()));
    ASSERT_TRUE(run(mgr_->start()));
    api_ = std::make_unique<Api>(cfg_, *mgr_, *templates_, *store_, *metrics_, *backend_, netns_pool_);
    server_ = std::make_unique<http::Server>(io_, [this](http::Exchange& ex) { return api_->handle(ex); });
    auto port = server_->listen_tcp("127.0.0.1", 0);
    ASSERT_TRUE(port);
    ep_ = http::Endpoint{"", "127.0.0.1", *port};
  }
  void TearDown() override {
    server_->stop();
    // A handler may still run after its answer was read (it notes activity,
    // say): the manager it uses goes only when every connection has ended.
    for (int i = 0; i < 1000 && server_->connections() > 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_EQ(server_->connections(), 0u) << "a connection outlived its test by 10 s";
    ManagerFixture::TearDown();
  }

  struct Answer {
    unsigned status = 0;
    json body;
    std::string raw;
    http::bhttp::fields headers;
  };
  Answer call(verb m, const std::string& target, const std::string& body = "", http::Fields headers = {},
              bool with_key = true) {
    return call_as(with_key ? kKey : "", m, target, body, std::move(headers));
  }
  // With `key` as X-API-KEY ("": none).
  Answer call_as(const std::string& key, verb m, const std::string& target, const std::string& body = "",
                 http::Fields headers = {}) {
    if (!key.empty()) headers.emplace_back("X-API-KEY", key);
    if (!body.empty()) headers.emplace_back("Content-Type", "application/json");
    auto r = run(http::fetch(ep_, m, target, headers, body, std::chrono::seconds(10)));
    EXPECT_TRUE(r) << r.error().to_string();
    if (!r) return {};
    Answer a{r->status, json::parse(r->body, nullptr, false), r->body, r->headers};
    return a;
  }
  std::string create_id(const std::string& body = "{}") {
    auto a = call(verb::post, "/v2/sandboxes", body);
    EXPECT_EQ(a.status, 201u) << a.raw;
    return a.body.value("sandboxID", "");
  }

  asio::thread_pool netns_pool_{1};
  std::unique_ptr<Api> api_;
  std::unique_ptr<http::Server> server_;
  http::Endpoint ep_;
};

TEST_F(ApiTest, KeysAreCheckedOnEveryControlPlaneRoute) {
  for (auto [m, t] : {std::pair{verb::get, "/v2/sandboxes"}, std::pair{verb::post, "/v2/sandboxes"},
                      std::pair{verb::get, "/sandboxes/abc"}, std::pair{verb::get, "/pools"}}) {
    auto a = call(m, t, "", {}, false);
    EXPECT_EQ(a.status, 401u) << t;
    EXPECT_EQ(a.body["code"], 401);
  }
  EXPECT_EQ(call(verb::get, "/health", "", {}, false).status, 200u);
}

TEST_F(ApiTest, CreateAnswersTheSandboxShape) {
  auto a = call(verb::post, "/v2/sandboxes", R"({"templateID":"base","timeout":60,"metadata":{"a":"b"}})");
  ASSERT_EQ(a.status, 201u) << a.raw;
  EXPECT_EQ(a.body["templateID"], "base");
  EXPECT_EQ(a.body["envdVersion"], "0.6.13");
  EXPECT_TRUE(a.body["envdAccessToken"].is_string());
  auto id = a.body["sandboxID"].get<std::string>();
  auto d = call(verb::get, "/sandboxes/" + id);
  ASSERT_EQ(d.status, 200u);
  EXPECT_EQ(d.body["metadata"]["a"], "b");
  EXPECT_EQ(d.body["state"], "running");
  // v1 route, secure: false: no token.
  auto v1 = call(verb::post, "/sandboxes", R"({"templateID":"base","secure":false})");
  ASSERT_EQ(v1.status, 201u) << v1.raw;
  EXPECT_FALSE(v1.body.contains("envdAccessToken"));
}

TEST_F(ApiTest, AFullDiskIs507NotALimitOrAPermission) {
  backend_->fail_creates = 1;
  backend_->fail_errno = ENOSPC;
  auto full = call(verb::post, "/v2/sandboxes", R"({"templateID":"base"})");
  EXPECT_EQ(full.status, 507u) << full.raw;
  EXPECT_NE(full.body["message"].get<std::string>().find("create refused"), std::string::npos) << full.raw;
  backend_->fail_creates = 1;
  backend_->fail_errno = EDQUOT;
  EXPECT_EQ(call(verb::post, "/v2/sandboxes", R"({"templateID":"base"})").status, 507u);
  backend_->fail_creates = 1;
  backend_->fail_errno = 0;  // another exhausted resource stays a 429
  EXPECT_EQ(call(verb::post, "/v2/sandboxes", R"({"templateID":"base"})").status, 429u);
  EXPECT_EQ(http_status(Error(ErrorCode::kPermissionDenied, "x", EROFS)), 403u);
  EXPECT_EQ(http_status(Error(ErrorCode::kResourceExhausted, "x", ENOSPC)), 507u);
}

TEST_F(ApiTest, OptionsNotHonouredYetAreRefusedNotIgnored) {
  const char* refused[] = {
      R"({"network":{"rules":{"a.com":[]}}})",
      R"({"network":{"egressProxy":{"address":"p:1080"}}})",
      R"({"autoPause":true})",
      R"({"autoPause":true,"autoResume":{"enabled":true}})",
      R"({"lifecycle":{"onTimeout":"pause"}})",
      R"({"mcp":{"x":{}}})",
  };
  for (const char* body : refused) {
    auto a = call(verb::post, "/v2/sandboxes", body);
    EXPECT_EQ(a.status, 400u) << body << " -> " << a.raw;
    EXPECT_NE(a.body.value("message", "").find("not supported"), std::string::npos) << a.raw;
  }
  // This gateway runs sandboxes without a network: a create that asks for
  // internet or names rules is told so.
  for (const char* body : {R"({"allow_internet_access":true})", R"({"network":{"allowOut":["1.2.3.4"]}})",
                           R"({"network":{"denyOut":["0.0.0.0/0"]}})", R"({"network":{"maxEgressMbps":10}})"}) {
    auto a = call(verb::post, "/v2/sandboxes", body);
    EXPECT_EQ(a.status, 400u) << body << " -> " << a.raw;
    EXPECT_NE(a.body.value("message", "").find("without a network"), std::string::npos) << a.raw;
  }
  // Malformed rules are a 400 naming the entry, network or not.
  auto malformed = call(verb::post, "/v2/sandboxes", R"({"network":{"allowOut":["10.0.0.0/33"]}})");
  EXPECT_EQ(malformed.status, 400u);
  EXPECT_NE(malformed.body.value("message", "").find("10.0.0.0/33"), std::string::npos) << malformed.raw;
  EXPECT_EQ(mgr_->count(), 0u) << "nothing was made for a refused request";
  // SDKs up to 2.50 send allow_internet_access: true on every v1 create.
  EXPECT_EQ(call(verb::post, "/sandboxes", R"({"allow_internet_access":true,"secure":true})").status, 201u);
  // What is honoured passes: no internet, public traffic, kill on timeout.
  for (const char* body : {R"({"allow_internet_access":false})", R"({"network":{"allowPublicTraffic":true}})",
                           R"({"network":{"allowPublicTraffic":false,"maskRequestHost":"x.example:${PORT}"}})",
                           R"({"autoPause":false})", R"({"lifecycle":{"onTimeout":"kill"}})", R"({"volumeMounts":[]})"}) {
    EXPECT_EQ(call(verb::post, "/v2/sandboxes", body).status, 201u) << body;
  }
  auto bad = call(verb::post, "/v2/sandboxes", R"({"lifecycle":{"onTimeout":"explode"}})");
  EXPECT_EQ(bad.status, 400u);
}

TEST_F(ApiTest, UnknownEndpointsAre501NotAMissingSandbox) {
  auto id = create_id();
  {
    auto a = call(verb::patch, "/v2/templates/base", "{}");
    EXPECT_EQ(a.status, 501u) << a.raw;
    EXPECT_EQ(a.body["code"], 501);
    EXPECT_NE(a.body.value("message", "").find("does not implement"), std::string::npos);
  }
  // The template build API answers a build without a name with a 400.
  EXPECT_EQ(call(verb::post, "/v3/templates", "{}").status, 400u);
  // The fake backend cannot copy files or checkpoint: 501 saying so.
  for (const std::string& t : {"/sandboxes/" + id + "/fork", "/sandboxes/" + id + "/snapshots"}) {
    auto a = call(verb::post, t, "{}");
    EXPECT_EQ(a.status, 501u) << t << " " << a.raw;
    EXPECT_NE(a.body.value("message", "").find("this backend cannot"), std::string::npos) << a.raw;
  }
  // Bad fork counts and snapshot names are 400s naming the field, before any work.
  for (const char* body : {R"({"count":0})", R"({"count":10000})", R"({"count":-1})", R"({"count":"2"})",
                           R"({"count":2,"timeout":0})"}) {
    auto a = call(verb::post, "/sandboxes/" + id + "/fork", body);
    EXPECT_EQ(a.status, 400u) << body << " " << a.raw;
    EXPECT_FALSE(a.body.value("message", "").empty());
  }
  for (const char* body : {R"({"name":"../x"})", R"({"name":7})", R"({"memory":"yes"})"}) {
    EXPECT_EQ(call(verb::post, "/sandboxes/" + id + "/snapshots", body).status, 400u) << body;
  }
  EXPECT_EQ(call(verb::get, "/snapshots?limit=0").status, 400u);
  EXPECT_EQ(call(verb::get, "/snapshots?nextToken=zz").status, 400u);
  EXPECT_EQ(call(verb::get, "/snapshots").status, 200u);
  EXPECT_EQ(call(verb::delete_, "/templates/aaaaaaaaaaaaaaaaaaaa").status, 404u);
  EXPECT_EQ(call(verb::delete_, "/snapshots/aaaaaaaaaaaaaaaaaaaa").status, 404u);
  // A create from an unknown template or snapshot: 404.
  EXPECT_EQ(call(verb::post, "/sandboxes", R"({"templateID":"nosuchsnapshot:default"})").status, 404u);
  auto missing = call(verb::get, "/sandboxes/aaaaaaaaaaaaaaaaaaaa");
  EXPECT_EQ(missing.status, 404u);
  EXPECT_EQ(missing.body["code"], 404);
  // An action not implemented yet on a sandbox that does not exist: 404 first
  // (the SDK's "fork a killed sandbox" expects SandboxNotFoundError).
  EXPECT_EQ(call(verb::post, "/sandboxes/aaaaaaaaaaaaaaaaaaaa/fork", "{}").status, 404u);
  EXPECT_EQ(call(verb::post, "/sandboxes/aaaaaaaaaaaaaaaaaaaa/snapshots", "{}").status, 404u);
  // Network updates exist; a sandbox without a network says so.
  auto net = call(verb::put, "/sandboxes/" + id + "/network", R"({"denyOut":["0.0.0.0/0"]})");
  EXPECT_EQ(net.status, 400u) << net.raw;
  EXPECT_NE(net.body.value("message", "").find("no network"), std::string::npos) << net.raw;
  EXPECT_EQ(call(verb::put, "/sandboxes/aaaaaaaaaaaaaaaaaaaa/network", "{}").status, 404u);
  EXPECT_EQ(call(verb::put, "/sandboxes/" + id + "/network", R"({"allowOut":["a b"]})").status, 400u);
}

TEST_F(ApiTest, PauseResumeAndTheirConflicts) {
  auto id = create_id();
  EXPECT_EQ(call(verb::post, "/sandboxes/" + id + "/pause", R"({"memory":false})").status, 400u);
  EXPECT_EQ(call(verb::post, "/sandboxes/" + id + "/pause", "{}").status, 204u);
  auto again = call(verb::post, "/sandboxes/" + id + "/pause", "{}");
  EXPECT_EQ(again.status, 409u);
  EXPECT_EQ(again.body["code"], 409);
  EXPECT_EQ(call(verb::post, "/sandboxes/" + id + "/resume", "{}").status, 201u);
  EXPECT_EQ(call(verb::post, "/sandboxes/" + id + "/resume", "{}").status, 409u);
  EXPECT_EQ(call(verb::post, "/v2/sandboxes/" + id + "/connect", "{}").status, 200u);
}

TEST_F(ApiTest, ResizeChangesTheLimitsAndWhatInfoSays) {
  cfg_.max_cpu_count = 4;
  cfg_.max_memory_mb = 4096;
  auto id = create_id();
  auto a = call(verb::patch, "/sandboxes/" + id, R"({"cpuCount":2,"memoryMB":1024})");
  ASSERT_EQ(a.status, 200u) << a.raw;
  EXPECT_EQ(a.body["cpuCount"], 2);
  EXPECT_EQ(a.body["memoryMB"], 1024);
  EXPECT_EQ(backend_->limits_of(id), (std::pair<int, uint64_t>{2000, 1ull << 30}));
  auto info = call(verb::get, "/sandboxes/" + id);
  EXPECT_EQ(info.body["cpuCount"], 2);
  EXPECT_EQ(info.body["memoryMB"], 1024);
  // One of the two; the other stays.
  ASSERT_EQ(call(verb::patch, "/sandboxes/" + id, R"({"memoryMB":256})").status, 200u);
  EXPECT_EQ(backend_->limits_of(id), (std::pair<int, uint64_t>{2000, 256ull << 20}));
  // Below what the sandbox holds (the fake holds 64 MiB): 409 saying so, nothing changes.
  auto below = call(verb::patch, "/sandboxes/" + id, R"({"cpuCount":1,"memoryMB":32})");
  EXPECT_EQ(below.status, 409u) << below.raw;
  EXPECT_NE(below.body.value("message", "").find("holds more memory"), std::string::npos) << below.raw;
  info = call(verb::get, "/v2/sandboxes/" + id);
  EXPECT_EQ(info.body["cpuCount"], 2);
  EXPECT_EQ(info.body["memoryMB"], 256);
  // A paused sandbox can be resized too, and stays paused.
  ASSERT_EQ(call(verb::post, "/sandboxes/" + id + "/pause", "{}").status, 204u);
  auto paused = call(verb::patch, "/sandboxes/" + id, R"({"cpuCount":4})");
  EXPECT_EQ(paused.status, 200u) << paused.raw;
  EXPECT_EQ(paused.body["state"], "paused");
  EXPECT_EQ(backend_->limits_of(id).first, 4000);
  // Bad input: a 400 that names the problem; nothing changes.
  struct Bad {
    const char* body;
    const char* says;
  } bad[] = {
      {"{}", "needs cpuCount and/or memoryMB"},
      {R"({"cpuCount":0})", "cpuCount must be a whole number"},
      {R"({"cpuCount":-2})", "cpuCount must be a whole number"},
      {R"({"cpuCount":1.5})", "cpuCount must be a whole number"},
      {R"({"cpuCount":"2"})", "cpuCount must be a whole number"},
      {R"({"cpuCount":5})", "from 1 to 4 (this gateway's maximum)"},
      {R"({"memoryMB":true})", "memoryMB must be a whole number"},
      {R"({"memoryMB":8192})", "from 1 to 4096"},
      {R"({"memoryMB":18446744073709551615})", "memoryMB must be a whole number"},
      {R"({"memoryMB":null})", "memoryMB must be a whole number"},
      {R"({"cpuCount":2,"diskSizeMB":10})", "unknown field \"diskSizeMB\""},
      {"[1]", "JSON object"},
      {"not json", "not valid JSON"},
  };
  for (const auto& b : bad) {
    auto r = call(verb::patch, "/sandboxes/" + id, b.body);
    EXPECT_EQ(r.status, 400u) << b.body << " -> " << r.raw;
    EXPECT_NE(r.body.value("message", "").find(b.says), std::string::npos) << b.body << " -> " << r.raw;
  }
  EXPECT_EQ(backend_->limits_of(id), (std::pair<int, uint64_t>{4000, 256ull << 20}));
  EXPECT_EQ(call(verb::patch, "/sandboxes/zzzzzzzzzzzzzzzzzzzz", R"({"cpuCount":1})").status, 404u);
}

TEST_F(ApiTest, LifecycleFieldsAreKeptAndReportedInE2bsShape) {
  // As e2b 2.51 (v2) and 2.45 (v1) send lifecycle {onTimeout: 'kill', autoResume: false}.
  for (const char* path : {"/v2/sandboxes", "/sandboxes"}) {
    auto made = call(verb::post, path, R"({"templateID":"base","autoPause":false,"autoResume":{"enabled":false}})");
    ASSERT_EQ(made.status, 201u) << made.raw;
    auto info = call(verb::get, "/sandboxes/" + made.body["sandboxID"].get<std::string>());
    EXPECT_EQ(info.body["lifecycle"], json::parse(R"({"onTimeout":"kill","autoResume":false})")) << info.raw;
  }
  auto plain = call(verb::get, "/sandboxes/" + create_id());
  EXPECT_EQ(plain.body["lifecycle"], json::parse(R"({"onTimeout":"kill","autoResume":false})"));
  // E2B refuses autoResume with a files-only pause; bad types are 400s naming the field.
  auto both = call(verb::post, "/v2/sandboxes", R"({"autoPause":true,"autoPauseMemory":false,"autoResume":{"enabled":true}})");
  EXPECT_EQ(both.status, 400u);
  EXPECT_NE(both.body.value("message", "").find("autoPauseMemory: false"), std::string::npos) << both.raw;
  auto type = call(verb::post, "/sandboxes", R"({"autoPause":"yes"})");
  EXPECT_EQ(type.status, 400u);
  EXPECT_NE(type.body.value("message", "").find("autoPause must be a boolean"), std::string::npos) << type.raw;
  EXPECT_EQ(mgr_->count(), 3u);
}

TEST_F(ApiTest, ListHonoursTemplateTimesOrderAndPages) {
  auto a = create_id();
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  auto b = create_id(R"({"templateID":"other"})");
  auto c = create_id();
  auto ids = [](const json& arr) {
    std::vector<std::string> out;
    for (const auto& s : arr) out.push_back(s["sandboxID"]);
    return out;
  };
  auto l = call(verb::get, "/v2/sandboxes?template=other");
  EXPECT_EQ(ids(l.body), std::vector<std::string>{b});
  auto asc = call(verb::get, "/v2/sandboxes?order=asc");
  ASSERT_EQ(asc.body.size(), 3u);
  EXPECT_EQ(asc.body[0]["sandboxID"], a);
  auto desc = call(verb::get, "/v2/sandboxes?order=desc");
  EXPECT_EQ(desc.body[2]["sandboxID"], a);
  auto started_a = asc.body[0]["startedAt"].get<std::string>();
  auto after = call(verb::get, "/v2/sandboxes?startedAfter=" + url_encode(asc.body[1]["startedAt"].get<std::string>()));
  EXPECT_EQ(after.body.size(), 2u) << after.raw;
  auto before = call(verb::get, "/v2/sandboxes?startedBefore=" + url_encode(started_a));
  EXPECT_EQ(ids(before.body), std::vector<std::string>{a});
  EXPECT_EQ(call(verb::get, "/v2/sandboxes?startedAfter=yesterday").status, 400u);
  EXPECT_EQ(call(verb::get, "/v2/sandboxes?order=sideways").status, 400u);
  // Pages of one, in order, until X-Next-Token is absent.
  std::vector<std::string> seen;
  std::string token;
  for (int i = 0; i < 5; ++i) {
    auto page = call(verb::get, "/v2/sandboxes?order=asc&limit=1" + (token.empty() ? "" : "&nextToken=" + token));
    for (auto& id : ids(page.body)) seen.push_back(id);
    auto it = page.headers.find("X-Next-Token");
    if (it == page.headers.end()) break;
    token = std::string(it->value());
  }
  EXPECT_EQ(seen, ids(asc.body));
  (void)c;
}

TEST_F(ApiTest, MetricsTakeARange) {
  auto id = create_id();
  auto now = std::chrono::duration_cast<std::chrono::seconds>(core::Clock::now().time_since_epoch()).count();
  auto m = call(verb::get, "/sandboxes/" + id + "/metrics?start=" + std::to_string(now - 60) +
                               "&end=" + std::to_string(now + 60));
  ASSERT_EQ(m.status, 200u) << m.raw;
  ASSERT_EQ(m.body.size(), 1u);
  EXPECT_TRUE(m.body[0].contains("cpuUsedPct"));
  auto old = call(verb::get, "/sandboxes/" + id + "/metrics?start=1000&end=2000");
  ASSERT_EQ(old.status, 200u);
  EXPECT_TRUE(old.body.empty());
  EXPECT_EQ(call(verb::get, "/sandboxes/" + id + "/metrics?start=abc").status, 400u);
}

TEST_F(ApiTest, ProxyRoutesByHeaderAndHostAndRefusesWhatItMust) {
  auto a = call(verb::post, "/v2/sandboxes", "{}");
  auto id = a.body["sandboxID"].get<std::string>();
  auto token = a.body["envdAccessToken"].get<std::string>();
  // Header routing to envd: reaches this sandbox's envd.
  auto r = call(verb::get, "/hello?x=1", "", {{"E2b-Sandbox-Id", id}, {"E2b-Sandbox-Port", "49983"}}, false);
  ASSERT_EQ(r.status, 200u) << r.raw;
  EXPECT_EQ(r.body["sandbox"], id);
  EXPECT_EQ(r.body["target"], "/hello?x=1");
  // Host routing.
  auto h = call(verb::get, "/x", "", {{"Host", "49983-" + id + ".example.test"}}, false);
  ASSERT_EQ(h.status, 200u) << h.raw;
  EXPECT_EQ(h.body["sandbox"], id);
  // Internal envd endpoints are refused.
  auto init = call(verb::post, "/init", "{}", {{"E2b-Sandbox-Id", id}}, false);
  EXPECT_EQ(init.status, 403u);
  // Unknown and killed sandboxes: 502 with E2B's body.
  auto unknown = call(verb::get, "/x", "", {{"E2b-Sandbox-Id", "bbbbbbbbbbbbbbbbbbbb"}}, false);
  EXPECT_EQ(unknown.status, 502u);
  EXPECT_EQ(unknown.body["message"], "The sandbox was not found");
  // A paused sandbox is not served.
  ASSERT_EQ(call(verb::post, "/sandboxes/" + id + "/pause", "{}").status, 204u);
  EXPECT_EQ(call(verb::get, "/x", "", {{"E2b-Sandbox-Id", id}}, false).status, 502u);
  ASSERT_EQ(call(verb::post, "/sandboxes/" + id + "/resume", "{}").status, 201u);
  // Another port: through the backend's port socket.
  http::Server user(io_, [](http::Exchange& ex) -> asio::awaitable<void> {
    co_await ex.respond(200, "user port", "text/plain");
  });
  auto up = user.listen_tcp("127.0.0.1", 0);
  ASSERT_TRUE(up);
  backend_->route_port(8080, *up);
  auto p = call(verb::get, "/", "", {{"E2b-Sandbox-Id", id}, {"E2b-Sandbox-Port", "8080"}}, false);
  EXPECT_EQ(p.status, 200u);
  EXPECT_EQ(p.raw, "user port");
  auto closed = call(verb::get, "/", "", {{"E2b-Sandbox-Id", id}, {"E2b-Sandbox-Port", "8081"}}, false);
  EXPECT_EQ(closed.status, 502u);
  EXPECT_EQ(call(verb::get, "/", "", {{"E2b-Sandbox-Id", id}, {"E2b-Sandbox-Port", "99999"}}, false).status, 400u);
  user.stop();
  ASSERT_EQ(call(verb::delete_, "/sandboxes/" + id).status, 204u);
  EXPECT_EQ(call(verb::get, "/x", "", {{"E2b-Sandbox-Id", id}}, false).status, 502u);
}


TEST_F(ApiTest, ProxyRefusesIdsThatAreNotSandboxIds) {
  ASSERT_FALSE(create_id().empty());
  // Any bytes at all: a 400 that names the rule and echoes nothing back.
  const std::string bad[] = {"\xff\xfe\xfd", "abc", std::string(20, 'A'), "aaaaaaaaaaaaaaaaaaa\xc0",
                             "\xc0\xaf" + std::string(18, 'a'), std::string(21, 'a'), "aaaaaaaaa/aaaaaaaaaa"};
  for (const auto& id : bad) {
    auto a = call(verb::get, "/x", "", {{"E2b-Sandbox-Id", id}}, false);
    EXPECT_EQ(a.status, 400u) << a.raw;
    EXPECT_NE(a.body.value("message", "").find("[a-z0-9]"), std::string::npos) << a.raw;
    auto h = call(verb::get, "/x", "", {{"Host", "49983-" + id + ".example.test"}}, false);
    EXPECT_EQ(h.status, 400u) << h.raw;
  }
}

TEST_F(ApiTest, ProxyForwardsNoGatewayCredentials) {
  auto a = call(verb::post, "/v2/sandboxes", "{}");
  ASSERT_EQ(a.status, 201u);
  const std::string id = a.body["sandboxID"];
  // To envd: no X-API-KEY, and Authorization only as Basic (the user envd acts as).
  auto r = call(verb::get, "/x", "", {{"E2b-Sandbox-Id", id}, {"X-Access-Token", "tok"}, {"Authorization", "Bearer " + kKey}});
  ASSERT_EQ(r.status, 200u) << r.raw;
  EXPECT_EQ(r.body["hasApiKey"], false) << r.raw;
  EXPECT_EQ(r.body["authorization"], "") << r.raw;
  EXPECT_EQ(r.body["token"], "tok");
  r = call(verb::get, "/x", "", {{"E2b-Sandbox-Id", id}, {"x-api-key", kKey}, {"Authorization", "Basic dXNlcjo="}}, false);
  ASSERT_EQ(r.status, 200u) << r.raw;
  EXPECT_EQ(r.body["hasApiKey"], false) << r.raw;
  EXPECT_EQ(r.body["authorization"], "Basic dXNlcjo=");
  // To another port: no X-API-KEY, no Authorization carrying a key; the app's own Authorization passes.
  http::Server user(io_, [](http::Exchange& ex) -> asio::awaitable<void> {
    json j{{"hasApiKey", ex.has_header("X-API-KEY")}, {"authorization", ex.header("Authorization")}};
    co_await ex.respond(200, j.dump(), "application/json");
  });
  auto up = user.listen_tcp("127.0.0.1", 0);
  ASSERT_TRUE(up);
  backend_->route_port(8080, *up);
  const http::Fields port8080{{"E2b-Sandbox-Id", id}, {"E2b-Sandbox-Port", "8080"}};
  auto with = [&](http::Fields extra) {
    extra.insert(extra.end(), port8080.begin(), port8080.end());
    return extra;
  };
  r = call(verb::get, "/", "", with({{"Authorization", "Bearer " + kKey}}));
  ASSERT_EQ(r.status, 200u) << r.raw;
  EXPECT_EQ(r.body["hasApiKey"], false) << r.raw;
  EXPECT_EQ(r.body["authorization"], "") << r.raw;
  r = call(verb::get, "/", "", with({{"X-API-KEY", kKey}, {"Authorization", "bearer  " + kKey}}), false);
  ASSERT_EQ(r.status, 200u) << r.raw;
  EXPECT_EQ(r.body["hasApiKey"], false) << r.raw;
  EXPECT_EQ(r.body["authorization"], "") << r.raw;
  // An X-API-KEY the gateway does not know is refused at the proxy (a key
  // there is always the gateway's), never handed on.
  r = call(verb::get, "/", "", with({{"X-API-KEY", "custom-key"}, {"Authorization", "bearer  custom-key"}}), false);
  EXPECT_EQ(r.status, 401u) << r.raw;
  EXPECT_FALSE(r.body.contains("hasApiKey")) << r.raw;
  r = call(verb::get, "/", "", with({{"Authorization", "Bearer app-token"}}));
  EXPECT_EQ(r.body["authorization"], "Bearer app-token") << r.raw;
  r = call(verb::get, "/", "", with({{"Authorization", "Basic YTpi"}}));
  EXPECT_EQ(r.body["authorization"], "Basic YTpi") << r.raw;
  user.stop();
}

}  // namespace
}  // namespace coppice::api

namespace coppice::api {
namespace {

TEST_F(ApiTest, SignedFileUrlsFindTheirSandboxWithoutAnId) {
  auto a = call(verb::post, "/v2/sandboxes", "{}");
  auto b = call(verb::post, "/v2/sandboxes", "{}");
  ASSERT_EQ(a.status, 201u);
  ASSERT_EQ(b.status, 201u);
  const std::string id_b = b.body["sandboxID"], token_b = b.body["envdAccessToken"];
  auto sig = file_signature("/home/user/x.txt", "read", "user", token_b, std::nullopt);
  auto r = call(verb::get, "/files?path=" + url_encode("/home/user/x.txt") + "&username=user&signature=" + url_encode(sig),
                "", {}, false);
  ASSERT_EQ(r.status, 200u) << r.raw;
  EXPECT_EQ(r.body["sandbox"], id_b) << "routed to the sandbox whose token signed it";
  // The operation is part of what is signed: the same signature does not write.
  auto w = call(verb::post, "/files?path=" + url_encode("/home/user/x.txt") + "&username=user&signature=" +
                               url_encode(sig), "x", {}, false);
  EXPECT_EQ(w.status, 401u);
  auto bad = call(verb::get, "/files?path=/etc/passwd&signature=v1_forged", "", {}, false);
  EXPECT_EQ(bad.status, 401u);
  EXPECT_EQ(bad.body["code"], 401);
  // Paused sandboxes are not served.
  ASSERT_EQ(call(verb::post, "/sandboxes/" + id_b + "/pause", "{}").status, 204u);
  EXPECT_EQ(call(verb::get, "/files?path=" + url_encode("/home/user/x.txt") + "&username=user&signature=" + url_encode(sig),
                 "", {}, false).status, 401u);
}

}  // namespace
}  // namespace coppice::api

namespace coppice::api {
namespace {

TEST(ApiKeysEnv, BareKeysAreTheOperatorsAndTeamKeysAreTheirTeams) {
  auto k = parse_api_keys("k1,team-a:k2,,default:k3");
  ASSERT_TRUE(k) << k.error().to_string();
  ASSERT_EQ(k->size(), 3u);
  EXPECT_EQ((*k)[0].key, "k1");
  EXPECT_EQ((*k)[0].team, "default");
  EXPECT_TRUE((*k)[0].admin);
  EXPECT_EQ((*k)[1].key, "k2");
  EXPECT_EQ((*k)[1].team, "team-a");
  EXPECT_FALSE((*k)[1].admin);
  EXPECT_EQ((*k)[2].team, "default");
  EXPECT_FALSE((*k)[2].admin) << "a key that names the default team is not admin";
  for (const char* bad : {"Team:k", "team-a:", ":k", "a b:k"}) {
    auto r = parse_api_keys(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message().find("COPPICE_API_KEYS entry 1"), std::string::npos) << r.error().message();
  }
}

// Team B's key on team A's sandbox: every control-plane route answers as for
// a sandbox that does not exist, and nothing happens to it.
TEST_F(ApiTest, AnotherTeamsSandboxIsMissingOnEveryRoute) {
  auto made = call_as(kKeyA, verb::post, "/v2/sandboxes", "{}");
  ASSERT_EQ(made.status, 201u) << made.raw;
  const std::string id = made.body["sandboxID"], token = made.body["envdAccessToken"];
  const std::string ghost = "zzzzzzzzzzzzzzzzzzzz";  // exists nowhere
  struct Route {
    verb m;
    std::string path;  // "{id}" is replaced
    std::string body;
  };
  const std::vector<Route> routes = {
      {verb::get, "/sandboxes/{id}", ""},
      {verb::get, "/v2/sandboxes/{id}", ""},
      {verb::post, "/sandboxes/{id}/timeout", R"({"timeout":60})"},
      {verb::post, "/sandboxes/{id}/refreshes", R"({"duration":60})"},
      {verb::post, "/sandboxes/{id}/connect", R"({"timeout":60})"},
      {verb::post, "/v2/sandboxes/{id}/connect", "{}"},
      {verb::post, "/sandboxes/{id}/pause", "{}"},
      {verb::post, "/sandboxes/{id}/resume", "{}"},
      {verb::get, "/sandboxes/{id}/metrics", ""},
      {verb::get, "/sandboxes/{id}/logs", ""},
      {verb::get, "/v2/sandboxes/{id}/logs", ""},
      {verb::patch, "/sandboxes/{id}", R"({"memoryMB":1024})"},
      {verb::delete_, "/sandboxes/{id}", ""},
  };
  auto with = [](std::string p, const std::string& v) { return p.replace(p.find("{id}"), 4, v); };
  for (const auto& r : routes) {
    auto theirs = call_as(kKeyB, r.m, with(r.path, id), r.body);
    auto none = call_as(kKeyB, r.m, with(r.path, ghost), r.body);
    EXPECT_EQ(theirs.status, 404u) << r.path << " " << theirs.raw;
    EXPECT_EQ(none.status, 404u) << r.path << " " << none.raw;
    // The same body, but for the id itself.
    std::string as_missing = none.raw;
    for (size_t at; (at = as_missing.find(ghost)) != std::string::npos;) as_missing.replace(at, ghost.size(), id);
    EXPECT_EQ(theirs.raw, as_missing) << r.path;
    EXPECT_EQ(theirs.raw.find(token), std::string::npos) << "the token never reaches another team";
  }
  // Lists: team B sees none of A's; A sees its own.
  for (const char* l : {"/v2/sandboxes", "/sandboxes", "/v2/sandboxes?state=running,paused"}) {
    auto b = call_as(kKeyB, verb::get, l);
    ASSERT_EQ(b.status, 200u) << b.raw;
    EXPECT_TRUE(b.body.empty()) << l << " " << b.raw;
    auto a = call_as(kKeyA, verb::get, l);
    ASSERT_EQ(a.body.size(), 1u) << l << " " << a.raw;
    EXPECT_EQ(a.body[0]["sandboxID"], id);
  }
  EXPECT_TRUE(call(verb::get, "/v2/sandboxes").body.empty()) << "the admin key is of the default team";
  // Nothing happened to it; team A does all of it.
  auto got = call_as(kKeyA, verb::get, "/sandboxes/" + id);
  ASSERT_EQ(got.status, 200u);
  EXPECT_EQ(got.body["state"], "running");
  EXPECT_EQ(got.body["envdAccessToken"], token);
  EXPECT_EQ(got.body["memoryMB"], 512);
  EXPECT_EQ(call_as(kKeyA, verb::post, "/sandboxes/" + id + "/timeout", R"({"timeout":60})").status, 204u);
  EXPECT_EQ(call_as(kKeyA, verb::post, "/sandboxes/" + id + "/refreshes", "{}").status, 204u);
  EXPECT_EQ(call_as(kKeyA, verb::get, "/sandboxes/" + id + "/metrics").status, 200u);
  EXPECT_EQ(call_as(kKeyA, verb::get, "/sandboxes/" + id + "/logs").status, 200u);
  EXPECT_EQ(call_as(kKeyA, verb::post, "/sandboxes/" + id + "/pause", "{}").status, 204u);
  // Paused: B still cannot resume or connect it.
  EXPECT_EQ(call_as(kKeyB, verb::post, "/sandboxes/" + id + "/resume", "{}").status, 404u);
  EXPECT_EQ(call_as(kKeyB, verb::post, "/sandboxes/" + id + "/connect", "{}").status, 404u);
  EXPECT_EQ(call_as(kKeyA, verb::post, "/sandboxes/" + id + "/connect", "{}").status, 201u);
  // The data plane: B's key is answered as for a missing sandbox, a bad key
  // is 401, A's key or none reach envd (which checks the access token).
  auto proxied = [&](const std::string& key, const std::string& sbx) {
    return call_as(key, verb::get, "/hello", "", {{"E2b-Sandbox-Id", sbx}});
  };
  auto pb = proxied(kKeyB, id);
  auto pg = proxied(kKeyB, ghost);
  EXPECT_EQ(pb.status, 502u);
  EXPECT_EQ(pb.body["message"], pg.body["message"]);
  EXPECT_EQ(pb.body["code"], pg.body["code"]);
  EXPECT_EQ(proxied("e2b_" + std::string(40, '9'), id).status, 401u);
  EXPECT_EQ(proxied(kKeyA, id).status, 200u);
  EXPECT_EQ(proxied("", id).status, 200u);
  auto host = call_as(kKeyB, verb::get, "/x", "", {{"Host", "49983-" + id + ".example.test"}});
  EXPECT_EQ(host.status, 502u);
  EXPECT_EQ(call_as(kKeyA, verb::delete_, "/sandboxes/" + id).status, 204u);
}

TEST_F(ApiTest, AdminEndpointsAreForAdminKeysAndRefuseBadInput) {
  // Not admin: 403 on every admin route and the operator's actions; no key: 401.
  for (auto [m, t] : {std::pair{verb::get, "/admin/teams"}, std::pair{verb::post, "/admin/teams"},
                      std::pair{verb::get, "/admin/teams/team-a"}, std::pair{verb::delete_, "/admin/teams/team-b"},
                      std::pair{verb::get, "/admin/teams/team-a/keys"}, std::pair{verb::post, "/admin/teams/team-a/keys"},
                      std::pair{verb::delete_, "/admin/teams/team-a/keys/1"}, std::pair{verb::post, "/templates/reload"},
                      std::pair{verb::post, "/pools/base/warm"}, std::pair{verb::post, "/pools/base/drain"}}) {
    auto a = call_as(kKeyA, m, t, "{}");
    EXPECT_EQ(a.status, 403u) << t << " " << a.raw;
    EXPECT_EQ(a.body["code"], 403);
    EXPECT_FALSE(a.body.value("message", "").empty());
    EXPECT_EQ(call_as("", m, t, "{}").status, 401u) << t;
  }
  EXPECT_EQ(call_as(kKeyA, verb::get, "/templates").status, 200u) << "templates are shared: any key reads them";
  EXPECT_EQ(call_as(kKeyA, verb::get, "/pools").status, 200u);

  // Teams.
  auto made = call(verb::post, "/admin/teams", R"({"name":"team-c"})");
  ASSERT_EQ(made.status, 201u) << made.raw;
  EXPECT_EQ(made.body["name"], "team-c");
  EXPECT_EQ(call(verb::post, "/admin/teams", R"({"name":"team-c"})").status, 409u);
  for (const char* bad : {R"({"name":"Team C"})", R"({"name":""})", R"({"name":7})", "{}", "[1]", "not json"}) {
    auto a = call(verb::post, "/admin/teams", bad);
    EXPECT_EQ(a.status, 400u) << bad << " " << a.raw;
    EXPECT_FALSE(a.body.value("message", "").empty()) << bad;
  }
  auto teams = call(verb::get, "/admin/teams");
  ASSERT_EQ(teams.status, 200u);
  std::vector<std::string> names;
  for (const auto& t : teams.body) names.push_back(t["name"]);
  EXPECT_EQ(names, (std::vector<std::string>{"default", "team-a", "team-b", "team-c"}));
  EXPECT_EQ(call(verb::get, "/admin/teams/team-c").status, 200u);
  EXPECT_EQ(call(verb::get, "/admin/teams/nobody").status, 404u);
  EXPECT_EQ(call(verb::get, "/admin/teams/nobody/keys").status, 404u);
  EXPECT_EQ(call(verb::get, "/admin/nothing").status, 404u);

  // A key for the new team, shown once; it acts for that team only.
  auto key = call(verb::post, "/admin/teams/team-c/keys", R"({"name":"ci"})");
  ASSERT_EQ(key.status, 201u) << key.raw;
  const std::string kc = key.body["key"], kc_id = key.body["id"];
  EXPECT_EQ(key.body["team"], "team-c");
  EXPECT_EQ(key.body["admin"], false);
  for (const char* bad : {R"({"name":""})", R"({})", R"({"name":"x","admin":"yes"})"})
    EXPECT_EQ(call(verb::post, "/admin/teams/team-c/keys", bad).status, 400u) << bad;
  auto listed = call(verb::get, "/admin/teams/team-c/keys");
  ASSERT_EQ(listed.body.size(), 1u);
  EXPECT_FALSE(listed.body[0].contains("key"));
  EXPECT_EQ(listed.raw.find(kc.substr(4)), std::string::npos) << "the key is never listed";
  auto sbx = call_as(kc, verb::post, "/v2/sandboxes", "{}");
  ASSERT_EQ(sbx.status, 201u) << sbx.raw;
  const std::string id = sbx.body["sandboxID"];
  EXPECT_EQ(call_as(kKeyA, verb::get, "/sandboxes/" + id).status, 404u);
  EXPECT_EQ(call_as(kc, verb::get, "/v2/sandboxes").body.size(), 1u);
  EXPECT_EQ(call_as(kc, verb::get, "/admin/teams").status, 403u);

  // A team with sandboxes stays; the default team and COPPICE_API_KEYS' teams stay.
  EXPECT_EQ(call(verb::delete_, "/admin/teams/team-c").status, 409u);
  EXPECT_EQ(call(verb::delete_, "/admin/teams/default").status, 409u);
  EXPECT_EQ(call(verb::delete_, "/admin/teams/team-a").status, 409u);
  EXPECT_EQ(call(verb::delete_, "/admin/teams/nobody").status, 404u);
  ASSERT_EQ(call_as(kc, verb::delete_, "/sandboxes/" + id).status, 204u);

  // A removed key stops working at once (it was remembered as valid).
  EXPECT_EQ(call(verb::delete_, "/admin/teams/team-a/keys/" + kc_id).status, 404u) << "another team's key id";
  EXPECT_EQ(call(verb::delete_, "/admin/teams/team-c/keys/x1").status, 404u);
  EXPECT_EQ(call(verb::delete_, "/admin/teams/team-c/keys/" + kc_id).status, 204u);
  EXPECT_EQ(call_as(kc, verb::get, "/v2/sandboxes").status, 401u);
  auto k2 = call(verb::post, "/admin/teams/team-c/keys", R"({"name":"ops","admin":true})");
  ASSERT_EQ(k2.status, 201u);
  EXPECT_EQ(call_as(k2.body["key"].get<std::string>(), verb::get, "/admin/teams").status, 200u) << "an admin key of any team is admin";
  EXPECT_EQ(call(verb::delete_, "/admin/teams/team-c").status, 204u);
  EXPECT_EQ(call_as(k2.body["key"].get<std::string>(), verb::get, "/v2/sandboxes").status, 401u) << "its keys went with it";
  EXPECT_EQ(call(verb::get, "/admin/teams/team-c").status, 404u);
}

TEST_F(ApiTest, ATeamManagesItsOwnKeysThroughApiKeys) {
  auto made = call_as(kKeyA, verb::post, "/api-keys", R"({"name":"mine"})");
  ASSERT_EQ(made.status, 201u) << made.raw;
  const std::string mine = made.body["key"], mine_id = made.body["id"];
  EXPECT_EQ(made.body["team"], "team-a");
  EXPECT_EQ(call_as(kKeyA, verb::post, "/api-keys", R"({"name":"root","admin":true})").status, 403u);
  EXPECT_EQ(call_as(kKeyA, verb::post, "/api-keys", R"({"name":5})").status, 400u);
  // The new key acts for team a.
  auto sbx = call_as(mine, verb::post, "/v2/sandboxes", "{}");
  ASSERT_EQ(sbx.status, 201u);
  EXPECT_EQ(call_as(kKeyA, verb::get, "/sandboxes/" + sbx.body["sandboxID"].get<std::string>()).status, 200u);
  // Each team lists only its own stored keys.
  EXPECT_EQ(call_as(kKeyA, verb::get, "/api-keys").body.size(), 1u);
  EXPECT_TRUE(call_as(kKeyB, verb::get, "/api-keys").body.empty());
  EXPECT_EQ(call_as(kKeyB, verb::delete_, "/api-keys/" + mine_id).status, 404u);
  EXPECT_EQ(call_as(kKeyB, verb::delete_, "/api-keys/not-a-number").status, 404u);
  EXPECT_EQ(call_as(mine, verb::get, "/v2/sandboxes").status, 200u);
  EXPECT_EQ(call_as(kKeyA, verb::delete_, "/api-keys/" + mine_id).status, 204u);
  EXPECT_EQ(call_as(mine, verb::get, "/v2/sandboxes").status, 401u);
  // A team member cannot remove its team's admin key.
  auto root = call(verb::post, "/admin/teams/team-a/keys", R"({"name":"root","admin":true})");
  ASSERT_EQ(root.status, 201u);
  EXPECT_EQ(call_as(kKeyA, verb::delete_, "/api-keys/" + root.body["id"].get<std::string>()).status, 403u);
}

}  // namespace
}  // namespace coppice::api

namespace coppice::api {
namespace {

// A port of a sandbox that answers with what reached it.
class InboundTest : public ApiTest {
 protected:
  void SetUp() override {
    ApiTest::SetUp();
    auto up = user_.listen_tcp("127.0.0.1", 0);
    ASSERT_TRUE(up);
    backend_->route_port(8080, *up);
    api_->set_preview(&signer_, false);
  }
  void TearDown() override {
    user_.stop();
    ApiTest::TearDown();
  }
  Answer to_port(const std::string& id, http::Fields extra = {}, const std::string& target = "/") {
    extra.emplace_back("E2b-Sandbox-Id", id);
    extra.emplace_back("E2b-Sandbox-Port", "8080");
    return call(verb::get, target, "", extra, false);
  }
  proxy::PreviewSigner signer_{std::string(32, 's')};
  http::Server user_{io_, [](http::Exchange& ex) -> asio::awaitable<void> {
                       json j{{"host", ex.header("Host")},
                              {"token", ex.header("E2B-Traffic-Access-Token")},
                              {"target", std::string(ex.target())}};
                       co_await ex.respond(200, j.dump(), "application/json");
                     }};
};

TEST_F(InboundTest, TrafficTokenGuardsPortsButNotEnvd) {
  auto a = call(verb::post, "/v2/sandboxes", R"({"network":{"allowPublicTraffic":false}})");
  ASSERT_EQ(a.status, 201u) << a.raw;
  ASSERT_TRUE(a.body["trafficAccessToken"].is_string()) << a.raw;
  const std::string id = a.body["sandboxID"], token = a.body["trafficAccessToken"];
  EXPECT_EQ(token.size(), 48u);
  EXPECT_EQ(call(verb::get, "/sandboxes/" + id).body["trafficAccessToken"], token);
  auto none = to_port(id);
  EXPECT_EQ(none.status, 403u) << none.raw;
  EXPECT_NE(none.body.value("message", "").find("e2b-traffic-access-token"), std::string::npos) << none.raw;
  EXPECT_EQ(to_port(id, {{"e2b-traffic-access-token", token + "x"}}).status, 403u);
  EXPECT_EQ(to_port(id, {{"e2b-traffic-access-token", ""}}).status, 403u);
  auto ok = to_port(id, {{"E2B-Traffic-Access-Token", token}});
  ASSERT_EQ(ok.status, 200u) << ok.raw;
  EXPECT_EQ(ok.body["token"], "") << "the token is the gateway's and is not forwarded";
  EXPECT_EQ(ok.body["host"], "localhost");
  // envd keeps its own rule.
  EXPECT_EQ(call(verb::get, "/x", "", {{"E2b-Sandbox-Id", id}}, false).status, 200u);
  // A public sandbox has no token (null, as E2B answers) and needs none.
  auto pub = call(verb::post, "/v2/sandboxes", "{}");
  EXPECT_TRUE(pub.body["trafficAccessToken"].is_null()) << pub.raw;
  EXPECT_EQ(to_port(pub.body["sandboxID"]).status, 200u);
  // The record keeps it: a restart publishes it again.
  auto rec = store_->get_sandbox(id);
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->extra.value("trafficAccessToken", ""), token);
}

TEST_F(InboundTest, MaskRequestHostIsWhatThePortSees) {
  const std::string id = create_id(R"({"network":{"maskRequestHost":"app.example:${PORT}"}})");
  auto r = to_port(id);
  ASSERT_EQ(r.status, 200u) << r.raw;
  EXPECT_EQ(r.body["host"], "app.example:8080");
  for (const char* bad : {R"({"network":{"maskRequestHost":"a b"}})", R"({"network":{"maskRequestHost":5}})",
                          R"({"network":{"maskRequestHost":"x:70000"}})", R"({"network":{"allowPublicTraffic":"no"}})"}) {
    auto a = call(verb::post, "/v2/sandboxes", bad);
    EXPECT_EQ(a.status, 400u) << bad;
    EXPECT_NE(a.body.value("message", "").find("network."), std::string::npos) << a.raw;
  }
}

TEST_F(InboundTest, PreviewUrlsOpenOnePortUntilTheyExpire) {
  auto a = call(verb::post, "/v2/sandboxes", R"({"network":{"allowPublicTraffic":false}})");
  const std::string id = a.body["sandboxID"];
  // The link keeps the port the client reached the gateway on.
  auto made = call(verb::post, "/sandboxes/" + id + "/preview-url", R"({"port":8080,"expiresInSeconds":60})",
                   {{"Host", "gw.local:" + std::to_string(ep_.port)}});
  ASSERT_EQ(made.status, 201u) << made.raw;
  const std::string url = made.body["url"];
  const std::string prefix = "http://8080-" + id + ".localhost:" + std::to_string(ep_.port) + "/?coppice_preview=";
  ASSERT_EQ(url.substr(0, prefix.size()), prefix) << url;
  const std::string value = url.substr(prefix.size());
  // The link: a redirect without the parameter, and the cookie.
  auto first = to_port(id, {}, "/app?x=1&coppice_preview=" + value + "&y=2");
  ASSERT_EQ(first.status, 302u) << first.raw;
  EXPECT_EQ(std::string(first.headers["Location"]), "/app?x=1&y=2");
  const std::string cookie(first.headers["Set-Cookie"]);
  EXPECT_EQ(cookie.substr(0, cookie.find(';')), "coppice_preview=" + value);
  EXPECT_NE(cookie.find("; HttpOnly; SameSite=Lax"), std::string::npos) << cookie;
  EXPECT_EQ(cookie.find("Secure"), std::string::npos) << cookie;
  auto with = to_port(id, {{"Cookie", "a=b; coppice_preview=" + value}}, "/app");
  EXPECT_EQ(with.status, 200u) << with.raw;
  // Forged, or for another port or sandbox, or expired: 403.
  std::string forged = value;
  forged.back() = forged.back() == '0' ? '1' : '0';
  EXPECT_EQ(to_port(id, {{"Cookie", "coppice_preview=" + forged}}).status, 403u);
  EXPECT_EQ(to_port(id, {}, "/?coppice_preview=" + forged).status, 403u);
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_EQ(to_port(id, {{"Cookie", "coppice_preview=" + signer_.sign(id, 8080, now - 1)}}).status, 403u);
  EXPECT_EQ(to_port(id, {{"Cookie", "coppice_preview=" + signer_.sign(id, 8081, now + 60)}}).status, 403u);
  auto other = create_id(R"({"network":{"allowPublicTraffic":false}})");
  EXPECT_EQ(to_port(other, {{"Cookie", "coppice_preview=" + value}}).status, 403u);
  // Bad requests.
  for (const char* body : {R"({"port":0})", R"({"port":49983})", R"({"port":70000})", R"({"port":"80"})",
                           R"({"port":80,"expiresInSeconds":0})", R"({"port":80,"expiresInSeconds":604801})"}) {
    EXPECT_EQ(call(verb::post, "/sandboxes/" + id + "/preview-url", body).status, 400u) << body;
  }
  EXPECT_EQ(call(verb::post, "/sandboxes/bbbbbbbbbbbbbbbbbbbb/preview-url", R"({"port":80})").status, 404u);
  EXPECT_EQ(call_as(kKeyA, verb::post, "/sandboxes/" + id + "/preview-url", R"({"port":80})").status, 404u)
      << "another team's sandbox is a missing one";
}

}  // namespace
}  // namespace coppice::api

namespace coppice::api {
namespace {

// network.httpsPorts: the proxy speaks TLS to those ports, without checking
// the certificate (a sandbox's own).
TEST_F(InboundTest, HttpsPortsAreReachedOverTls) {
  test_util::TempDir dir{"coppice-https-port"};
  const std::string cert = (dir.path() / "c.pem").string(), key = (dir.path() / "k.pem").string();
  std::ofstream(cert) << tls::testing::kTestCert;
  std::ofstream(key) << tls::testing::kTestKey;
  auto ctx = tls::load_server_context(cert, key);
  ASSERT_TRUE(ctx) << ctx.error().to_string();
  http::Server inner(io_, [](http::Exchange& ex) -> asio::awaitable<void> {
    co_await ex.respond(200, "over tls, host " + ex.header("Host"), "text/plain");
  });
  tls::TlsFront front(io_, inner, *ctx, std::chrono::seconds(2));
  auto port = front.listen_tcp("127.0.0.1", 0);
  ASSERT_TRUE(port);
  backend_->route_port(8443, *port);
  const std::string id = create_id(R"({"network":{"httpsPorts":[8443],"maskRequestHost":"app.example"}})");
  auto r = call(verb::get, "/", "", {{"E2b-Sandbox-Id", id}, {"E2b-Sandbox-Port", "8443"}}, false);
  EXPECT_EQ(r.status, 200u) << r.raw;
  EXPECT_EQ(r.raw, "over tls, host app.example");
  // Not listed: the proxy speaks plain HTTP to it, which the port does not answer as HTTP.
  const std::string plain = create_id();
  EXPECT_EQ(call(verb::get, "/", "", {{"E2b-Sandbox-Id", plain}, {"E2b-Sandbox-Port", "8443"}}, false).status, 502u);
  for (const char* bad : {R"({"network":{"httpsPorts":[0]}})", R"({"network":{"httpsPorts":[49983]}})",
                          R"({"network":{"httpsPorts":["443"]}})", R"({"network":{"httpsPorts":443}})"}) {
    auto a = call(verb::post, "/v2/sandboxes", bad);
    EXPECT_EQ(a.status, 400u) << bad;
    EXPECT_NE(a.body.value("message", "").find("network.httpsPorts"), std::string::npos) << a.raw;
  }
  front.stop();
  inner.stop();
}

}  // namespace
}  // namespace coppice::api

namespace coppice::api {
namespace {

TEST_F(ApiTest, VolumesAreTeamScopedAndCannotBeDeletedWhileMounted) {
  auto made = call(verb::post, "/volumes", R"({"name":"data"})");
  ASSERT_EQ(made.status, 201u) << made.raw;
  const std::string vid = made.body.value("volumeID", "");
  const std::string token = made.body.value("token", "");
  EXPECT_EQ(vid.size(), 20u);
  EXPECT_GE(token.size(), 32u);
  EXPECT_EQ(made.body.value("sizeMB", 0), cfg_.default_volume_mb);
  EXPECT_EQ(call(verb::post, "/volumes", R"({"name":"data"})").status, 409u) << "names are unique per team";
  for (const char* bad : {R"({"name":".."})", R"({"name":"a/b"})", R"({"name":""})", R"({})", R"({"name":"x","sizeMB":0})",
                          R"({"name":"x","sizeMB":"8"})"}) {
    auto a = call(verb::post, "/volumes", bad);
    EXPECT_EQ(a.status, 400u) << bad << " -> " << a.raw;
    EXPECT_FALSE(a.body.value("message", "").empty());
  }
  auto list = call(verb::get, "/volumes");
  ASSERT_EQ(list.status, 200u);
  ASSERT_EQ(list.body.size(), 1u);
  EXPECT_EQ(list.body[0]["volumeID"], vid);
  EXPECT_FALSE(list.body[0].contains("token")) << "a listing shows no tokens";
  EXPECT_EQ(call(verb::get, "/volumes/" + vid).body.value("token", ""), token);

  // Another team: missing, and a name of its own.
  EXPECT_EQ(call_as(kKeyB, verb::get, "/volumes/" + vid).status, 404u);
  EXPECT_EQ(call_as(kKeyB, verb::delete_, "/volumes/" + vid).status, 404u);
  EXPECT_TRUE(call_as(kKeyB, verb::get, "/volumes").body.empty());
  auto other = call_as(kKeyB, verb::post, "/v2/sandboxes", R"({"volumeMounts":[{"name":"data","path":"/data"}]})");
  EXPECT_EQ(other.status, 400u) << other.raw;

  // Bad mount paths are refused before anything is made.
  for (const char* p : {"data", "/", "/proc/x", "/dev", "/sys/x", "/.coppice", "/a/../b", "/a/./b"}) {
    json body{{"volumeMounts", json::array({json{{"name", "data"}, {"path", p}}})}};
    auto a = call(verb::post, "/v2/sandboxes", body.dump());
    EXPECT_EQ(a.status, 400u) << p << " -> " << a.raw;
  }
  EXPECT_EQ(backend_->creates(), 0u);

  // Mounted at create (a cold create, with the volume's directory), shown by
  // GET, and not deletable until the sandbox is gone.
  auto id = create_id(R"({"volumeMounts":[{"name":"data","path":"/data//x/"}]})");
  auto spec = backend_->spec_of(id);
  ASSERT_EQ(spec.volumes.size(), 1u);
  EXPECT_EQ(spec.volumes[0].path, "/data/x");
  EXPECT_EQ(spec.volumes[0].host_dir, backend_->volume_dir(vid));
  EXPECT_EQ(call(verb::get, "/sandboxes/" + id).body["volumeMounts"], json::parse(R"([{"name":"data","path":"/data/x"}])"));
  auto busy = call(verb::delete_, "/volumes/" + vid);
  EXPECT_EQ(busy.status, 409u);
  EXPECT_NE(busy.body.value("message", "").find("mounted"), std::string::npos) << busy.raw;
  EXPECT_EQ(call(verb::delete_, "/sandboxes/" + id).status, 204u);
  EXPECT_EQ(call(verb::delete_, "/volumes/" + vid).status, 204u);
  EXPECT_EQ(call(verb::get, "/volumes/" + vid).status, 404u);
  EXPECT_FALSE(std::filesystem::exists(backend_->volume_dir(vid)));
}

TEST_F(ApiTest, RecoveryRemovesVolumeDirectoriesNoVolumeNames) {
  auto made = call(verb::post, "/volumes", R"({"name":"kept"})");
  ASSERT_EQ(made.status, 201u);
  const std::string kept = backend_->volume_dir(made.body.value("volumeID", ""));
  const std::string stray = backend_->volume_dir(std::string(20, 'q'));  // made, never stored
  std::filesystem::create_directories(stray);
  ASSERT_TRUE(run(mgr_->recover()));
  EXPECT_TRUE(std::filesystem::exists(kept));
  EXPECT_FALSE(std::filesystem::exists(stray));
}

TEST_F(ApiTest, HotMountAndUnmountFollowTheSandboxState) {
  auto made = call(verb::post, "/volumes", R"({"name":"hot","sizeMB":16})");
  ASSERT_EQ(made.status, 201u);
  const std::string vid = made.body.value("volumeID", "");
  auto id = create_id();
  EXPECT_EQ(call(verb::post, "/sandboxes/" + id + "/volumes", R"({"name":"hot","path":"/proc/v"})").status, 400u);
  EXPECT_EQ(call(verb::post, "/sandboxes/" + id + "/volumes", R"({"name":"nope","path":"/v"})").status, 404u);
  EXPECT_EQ(call(verb::post, "/sandboxes/" + id + "/volumes", R"({"path":"/v"})").status, 400u);
  auto m = call(verb::post, "/sandboxes/" + id + "/volumes", R"({"volumeID":")" + vid + R"(","path":"/mnt/hot"})");
  ASSERT_EQ(m.status, 201u) << m.raw;
  EXPECT_EQ(backend_->mounts(id).at("/mnt/hot"), backend_->volume_dir(vid));
  EXPECT_EQ(call(verb::post, "/sandboxes/" + id + "/volumes", R"({"name":"hot","path":"/mnt/hot"})").status, 409u);
  EXPECT_EQ(call_as(kKeyB, verb::get, "/sandboxes/" + id + "/volumes").status, 404u);
  EXPECT_EQ(call(verb::get, "/sandboxes/" + id + "/volumes").body.size(), 1u);
  EXPECT_EQ(call(verb::delete_, "/volumes/" + vid).status, 409u);
  // Paused: neither mounts nor unmounts.
  EXPECT_EQ(call(verb::post, "/sandboxes/" + id + "/pause", "{}").status, 204u);
  EXPECT_EQ(call(verb::delete_, "/sandboxes/" + id + "/volumes/hot").status, 409u);
  EXPECT_EQ(call(verb::post, "/sandboxes/" + id + "/resume", "{}").status, 201u);
  EXPECT_EQ(call(verb::delete_, "/sandboxes/" + id + "/volumes/other").status, 404u);
  EXPECT_EQ(call(verb::delete_, "/sandboxes/" + id + "/volumes/hot?path=/elsewhere").status, 404u);
  EXPECT_EQ(call(verb::delete_, "/sandboxes/" + id + "/volumes/hot").status, 204u);
  EXPECT_TRUE(backend_->mounts(id).empty());
  EXPECT_EQ(call(verb::delete_, "/volumes/" + vid).status, 204u) << "free once unmounted";
}

TEST_F(ApiTest, VolumeContentNeedsTheVolumesToken) {
  auto made = call(verb::post, "/volumes", R"({"name":"files"})");
  ASSERT_EQ(made.status, 201u);
  const std::string vid = made.body.value("volumeID", "");
  const std::string token = made.body.value("token", "");
  auto as = [&](const std::string& tok, verb m, const std::string& target, const std::string& body = "") {
    http::Fields h;
    if (!tok.empty()) h.emplace_back("Authorization", "Bearer " + tok);
    return call_as("", m, target, body, h);
  };
  const std::string base = "/volumecontent/" + vid;
  EXPECT_EQ(as("", verb::get, base + "/path?path=/").status, 401u);
  EXPECT_EQ(as("wrong", verb::get, base + "/path?path=/").status, 401u);
  EXPECT_EQ(as(token, verb::get, "/volumecontent/" + std::string(20, 'z') + "/path?path=/").status, 401u);
  auto root = as(token, verb::get, base + "/path?path=/");
  EXPECT_EQ(root.status, 200u) << root.raw;
  EXPECT_EQ(root.body.value("type", ""), "directory");
  EXPECT_EQ(as(token, verb::get, base + "/path?path=relative").status, 400u);
  EXPECT_EQ(as(token, verb::get, base + "/path?path=/a/../b").status, 400u);
  EXPECT_EQ(as(token, verb::get, base + "/file?path=/missing").status, 404u);
  EXPECT_EQ(as(token, verb::get, base + "/dir?path=/&depth=x").status, 400u);
  EXPECT_EQ(as(token, verb::post, base + "/nothing?path=/").status, 404u);
  if (::geteuid() != 0) return;  // writes give files the sandboxes' owner ids: chown needs root
  auto w = as(token, verb::put, base + "/file?path=/d/f.txt&mode=416", "hello");
  ASSERT_EQ(w.status, 200u) << w.raw;
  EXPECT_EQ(w.body.value("size", 0), 5);
  EXPECT_EQ(w.body.value("mode", 0), 0640);
  EXPECT_EQ(w.body.value("uid", 0), 1000);
  EXPECT_EQ(as(token, verb::get, base + "/file?path=/d/f.txt").raw, "hello");
  EXPECT_EQ(as(token, verb::get, base + "/dir?path=/&depth=2").body.size(), 2u);
  EXPECT_EQ(as(token, verb::post, base + "/dir?path=/d").status, 409u);
  EXPECT_EQ(as(token, verb::post, base + "/dir?path=/d&force=true").status, 201u);
  EXPECT_EQ(as(token, verb::patch, base + "/path?path=/d/f.txt", R"({"uid":70000})").status, 400u);
  EXPECT_EQ(as(token, verb::patch, base + "/path?path=/d/f.txt", R"({"uid":0,"mode":384})").body.value("mode", 0), 0600);
  EXPECT_EQ(as(token, verb::delete_, base + "/path?path=/").status, 400u);
  EXPECT_EQ(as(token, verb::delete_, base + "/path?path=/d").status, 204u);
  EXPECT_EQ(as(token, verb::get, base + "/path?path=/d").status, 404u);
}

}  // namespace
}  // namespace coppice::api
