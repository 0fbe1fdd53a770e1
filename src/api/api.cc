#include "api/api.h"
#include "api/lifecycle_options.h"
#include "api/resize_request.h"
#include "api/api_internal.h"
#include "core/template_builds.h"

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "common/ids.h"
#include "common/log.h"
#include "common/scope_exit.h"
#include "common/strings.h"
#include "net/policy.h"
#include "store/keys.h"

namespace coppice::api {

using json = nlohmann::json;
using core::SandboxView;
using http::bhttp::verb;

unsigned http_status(ErrorCode c) {
  switch (c) {
    case ErrorCode::kInvalidArgument: return 400;
    case ErrorCode::kUnauthenticated: return 401;
    case ErrorCode::kPermissionDenied: return 403;
    case ErrorCode::kNotFound: return 404;
    case ErrorCode::kAlreadyExists:
    case ErrorCode::kFailedPrecondition: return 409;
    case ErrorCode::kTooLarge: return 413;
    case ErrorCode::kResourceExhausted: return 429;
    case ErrorCode::kUnimplemented: return 501;
    case ErrorCode::kUnavailable: return 503;
    case ErrorCode::kDeadlineExceeded: return 504;
    case ErrorCode::kCanceled: return 499;
    case ErrorCode::kInternal: return 500;
  }
  return 500;
}

unsigned http_status(const Error& e) {
  if (e.sys_errno() == ENOSPC || e.sys_errno() == EDQUOT) return 507;
  return http_status(e.code());
}

namespace {

std::string error_body(unsigned status, std::string_view message) {
  return json{{"code", status}, {"message", message}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string rfc3339(core::Clock::time_point t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  time_t secs = static_cast<time_t>(ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[40];
  size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, sizeof buf - n, ".%03lldZ", static_cast<long long>(ms % 1000));
  return buf;
}

json domain_json(const core::GatewayConfig& cfg) { return cfg.domain.empty() ? json(nullptr) : json(cfg.domain); }

// The `Sandbox` shape (create / connect / resume).
json sandbox_json(const SandboxView& v, const core::GatewayConfig& cfg) {
  json j{{"sandboxID", v.id},   {"templateID", v.template_id}, {"clientID", "coppice"},
         {"envdVersion", v.envd_version}, {"domain", domain_json(cfg)},
         {"trafficAccessToken", v.traffic_access_token.empty() ? json(nullptr) : json(v.traffic_access_token)}};
  if (!v.envd_access_token.empty()) j["envdAccessToken"] = v.envd_access_token;
  if (!v.alias.empty()) j["alias"] = v.alias;
  return j;
}

// The `ListedSandbox` shape; `SandboxDetail` adds the token and domain.
json listed_json(const SandboxView& v) {
  json j{{"sandboxID", v.id},
         {"templateID", v.template_id},
         {"clientID", "coppice"},
         {"startedAt", rfc3339(v.started_at)},
         {"endAt", rfc3339(v.end_at)},
         {"cpuCount", v.cpu_count},
         {"memoryMB", v.memory_mb},
         {"diskSizeMB", v.disk_mb},
         {"metadata", v.metadata},
         {"state", core::state_name(v.state)},
         {"envdVersion", v.envd_version}};
  if (!v.alias.empty()) j["alias"] = v.alias;
  return j;
}

json detail_json(const SandboxView& v, const core::GatewayConfig& cfg) {
  json j = listed_json(v);
  if (!v.envd_access_token.empty()) j["envdAccessToken"] = v.envd_access_token;
  if (!v.traffic_access_token.empty()) j["trafficAccessToken"] = v.traffic_access_token;
  j["domain"] = domain_json(cfg);
  j["lifecycle"] = core::to_e2b_json(v.lifecycle);
  j["allowInternetAccess"] = v.network.internet;
  j["network"] = net::to_e2b_json(v.network);
  if (v.lineage.is_object() && !v.lineage.empty()) j["lineage"] = v.lineage;  // an extension
  return j;
}

// Reads a JSON object body ({} when empty). Errors carry the HTTP status.
asio::awaitable<Result<json>> read_json(http::Exchange& ex, size_t limit) {
  auto body = co_await ex.read_body(limit);
  if (!body) co_return std::unexpected(body.error());
  if (body->empty()) co_return json::object();
  json j = json::parse(*body, nullptr, false);
  if (j.is_discarded()) co_return make_error(ErrorCode::kInvalidArgument, "request body is not valid JSON");
  if (!j.is_object()) co_return make_error(ErrorCode::kInvalidArgument, "request body must be a JSON object");
  co_return j;
}

// An optional timeout field in seconds, within [1, max].
Result<std::optional<int>> timeout_field(const json& j, const char* name, int max) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return std::optional<int>{};
  if (!it->is_number_integer() && !(it->is_number_float() && it->get<double>() == static_cast<int64_t>(it->get<double>())))
    return make_error(ErrorCode::kInvalidArgument, std::string(name) + " must be an integer number of seconds");
  int64_t v = it->is_number_integer() ? it->get<int64_t>() : static_cast<int64_t>(it->get<double>());
  if (v < 1 || v > max)
    return make_error(ErrorCode::kInvalidArgument,
                      std::string(name) + " must be between 1 and " + std::to_string(max) + " seconds");
  return std::optional<int>(static_cast<int>(v));
}

Result<std::map<std::string, std::string>> string_map(const json& j, const char* name) {
  std::map<std::string, std::string> out;
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return out;
  if (!it->is_object()) return make_error(ErrorCode::kInvalidArgument, std::string(name) + " must be an object of strings");
  for (auto e = it->begin(); e != it->end(); ++e) {
    if (!e->is_string())
      return make_error(ErrorCode::kInvalidArgument, std::string(name) + "." + e.key() + " must be a string");
    out[e.key()] = e->get<std::string>();
  }
  return out;
}

// `metadata` query of GET /v2/sandboxes: a form-encoded list, encoded once
// more by the SDK (e2b-protocol.md §2.2): the query value decodes to
// "k=v&k2=v2" whose values decode once more.
std::map<std::string, std::string> metadata_filter(const std::string& q) {
  std::map<std::string, std::string> out;
  for (auto& [k, v] : http::parse_query(q)) out[http::url_decode(k)] = http::url_decode(v);
  return out;
}

// One pool in GET /pools and the pool routes' answers.
json pool_json(const core::PoolView& p) {
  return json{{"template", p.template_id}, {"target", p.target}, {"available", p.available},
              {"inUse", p.in_use}, {"filling", p.filling}, {"hits", p.hits}, {"misses", p.misses}};
}

}  // namespace

// The template shape of GET /templates. The E2B fields (templateID, buildID,
// cpuCount, memoryMB) keep their names; the keys a template may add later
// appear only when it has them.
json template_json(const templates::Template& t) {
  json j{{"templateID", t.name}, {"name", t.name},         {"backend", t.backend},    {"path", t.path},
         {"buildID", t.build_id}, {"sizeBytes", t.size_bytes}, {"source", t.source}, {"cpuCount", t.cpu_count},
         {"memoryMB", t.memory_mb}};
  if (!t.start_cmd.empty()) j["startCmd"] = t.start_cmd;
  if (!t.ready_cmd.empty()) j["readyCmd"] = t.ready_cmd;
  if (!t.recipe_hash.empty()) j["recipeHash"] = t.recipe_hash;
  if (!t.user.empty()) j["user"] = t.user;
  if (!t.workdir.empty()) j["workdir"] = t.workdir;
  if (!t.image_digest.empty()) j["imageDigest"] = t.image_digest;
  return j;
}

namespace {

std::string templates_body(const std::vector<templates::Template>& list) {
  json out = json::array();
  for (const auto& t : list) out.push_back(template_json(t));
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Runs a reload on `pool` and resumes the caller on its own executor. Not a
// coroutine itself: the hand-off is a plain asynchronous operation, so no
// lambda ends up in a coroutine frame (g++ 12 destroys those twice).
asio::awaitable<Status> reload_on(asio::thread_pool& pool, templates::TemplateRegistry& templates) {
  return asio::async_initiate<const asio::use_awaitable_t<>, void(Status)>(
      [&pool, &templates](auto handler) {
        asio::post(pool, [&templates, handler = std::move(handler)]() mutable {
          Status s = templates.reload();
          auto ex = asio::get_associated_executor(handler);
          asio::dispatch(ex, [h = std::move(handler), s = std::move(s)]() mutable { std::move(h)(std::move(s)); });
        });
      },
      asio::use_awaitable);
}

// "2024-01-02T03:04:05Z", with optional fractional seconds and a numeric
// offset instead of Z; nullopt when malformed.
std::optional<core::Clock::time_point> parse_rfc3339(const std::string& s) {
  struct tm tm {};
  int frac_ms = 0;
  const char* p = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!p) return std::nullopt;
  if (*p == '.') {
    ++p;
    int digits = 0;
    while (*p >= '0' && *p <= '9') {
      if (digits < 3) frac_ms = frac_ms * 10 + (*p - '0');
      ++digits;
      ++p;
    }
    if (digits == 0) return std::nullopt;
    for (; digits < 3; ++digits) frac_ms *= 10;
  }
  long offset_s = 0;
  if (*p == 'Z' || *p == 'z') {
    ++p;
  } else if (*p == '+' || *p == '-') {
    int sign = *p == '-' ? -1 : 1;
    int hh = 0, mm = 0;
    if (std::sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2 || hh > 23 || mm > 59) return std::nullopt;
    offset_s = sign * (hh * 3600L + mm * 60L);
    p += 6;
  } else {
    return std::nullopt;
  }
  if (*p) return std::nullopt;
  time_t secs = timegm(&tm) - offset_s;
  return core::Clock::time_point(std::chrono::seconds(secs) + std::chrono::milliseconds(frac_ms));
}

// Create options E2B's SDK can send that Coppice does not honour yet: a
// request that sets one explicitly is refused with the reason, never
// silently served without it. (The SDK leaves unset options out of the body.)
//
// `v1`: POST /sandboxes, which SDKs up to 2.50 call with
// allow_internet_access: true on every create whether the user set it or not;
// there it cannot be told from the default and is not refused.
// The most entries network.httpsPorts may have.
constexpr size_t kMaxHttpsPorts = 64;

Status check_create_options(const json& j, bool v1) {
  auto unsupported = [](const std::string& what) {
    return make_error(ErrorCode::kInvalidArgument, what + " is not supported by this gateway yet");
  };
  auto set = [&](const char* key) {
    auto it = j.find(key);
    return it != j.end() && !it->is_null();
  };
  (void)v1;
  // allow_internet_access and network{...} are read by net::parse_create.
  if (set("network")) {
    const json& n = j["network"];
    if (!n.is_object()) return make_error(ErrorCode::kInvalidArgument, "network must be an object");
    for (const char* key : {"rules", "egressProxy"}) {
      if (auto it = n.find(key); it != n.end() && !it->is_null()) return unsupported(std::string("network.") + key);
    }
    if (auto it = n.find("allowPublicTraffic"); it != n.end() && !it->is_null() && !it->is_boolean())
      return make_error(ErrorCode::kInvalidArgument, "network.allowPublicTraffic must be a boolean");
    if (auto it = n.find("maskRequestHost"); it != n.end() && !it->is_null()) {
      if (!it->is_string()) return make_error(ErrorCode::kInvalidArgument, "network.maskRequestHost must be a string");
      COPPICE_TRY(proxy::validate_mask_host(it->get<std::string>()));
    }
    if (auto it = n.find("httpsPorts"); it != n.end() && !it->is_null()) {
      if (!it->is_array() || it->size() > kMaxHttpsPorts)
        return make_error(ErrorCode::kInvalidArgument,
                          "network.httpsPorts must be a list of at most " + std::to_string(kMaxHttpsPorts) + " ports");
      for (const auto& p : *it) {
        if (!p.is_number_integer() || p.get<int64_t>() < 1 || p.get<int64_t>() > 65535 || p.get<int64_t>() == kEnvdPort)
          return make_error(ErrorCode::kInvalidArgument, "network.httpsPorts: " + p.dump() +
                                                             " is not a port from 1 to 65535 other than envd's");
      }
    }
  }
  // autoPause, autoPauseMemory, autoResume and lifecycle: parse_lifecycle.
  if (set("mcp")) {
    const json& m = j["mcp"];
    if (!(m.is_object() && m.empty())) return unsupported("mcp (the MCP gateway)");
  }
  if (set("iam")) {
    const json& i = j["iam"];
    if (!(i.is_object() && (!i.contains("tokens") || i["tokens"].empty()))) return unsupported("iam tokens");
  }
  return ok();
}

}  // namespace

std::string rfc3339_time(core::Clock::time_point t) { return rfc3339(t); }
asio::awaitable<Result<json>> read_json_body(http::Exchange& ex, size_t limit) { return read_json(ex, limit); }

Result<std::vector<core::GatewayConfig::ApiKey>> parse_api_keys(std::string_view text) {
  std::vector<core::GatewayConfig::ApiKey> out;
  size_t n = 0;
  while (!text.empty()) {
    auto c = text.find(',');
    auto part = text.substr(0, c);
    ++n;
    if (!part.empty()) {
      core::GatewayConfig::ApiKey k;
      auto colon = part.find(':');
      if (colon == std::string_view::npos) {
        k.key = std::string(part);
        k.team = std::string(store::kDefaultTeam);
        k.admin = true;
      } else {
        k.team = std::string(part.substr(0, colon));
        k.key = std::string(part.substr(colon + 1));
        if (!store::valid_team_name(k.team))
          return make_error(ErrorCode::kInvalidArgument,
                            "COPPICE_API_KEYS entry " + std::to_string(n) + ": \"" + k.team +
                                "\" is not a team name (1-63 of a-z, 0-9, '-', '_')");
        if (k.key.empty())
          return make_error(ErrorCode::kInvalidArgument,
                            "COPPICE_API_KEYS entry " + std::to_string(n) + ": team " + k.team + " has an empty key");
      }
      if (k.key.size() > 256)
        return make_error(ErrorCode::kInvalidArgument,
                          "COPPICE_API_KEYS entry " + std::to_string(n) + ": a key is at most 256 bytes");
      out.push_back(std::move(k));
    }
    if (c == std::string_view::npos) break;
    text.remove_prefix(c + 1);
  }
  return out;
}

std::optional<Caller> KeyChecker::check(const std::string& key) {
  if (key.empty() || key.size() > 256) return std::nullopt;
  // Every configured key is compared (no early exit): the time taken does
  // not tell which one matched.
  const core::GatewayConfig::ApiKey* match = nullptr;
  for (const auto& k : cfg_.api_keys)
    if (constant_time_equal(k.key, key) && !match) match = &k;
  if (match) return Caller{match->team, match->admin};
  std::string hash = store::sha256_hex(key);
  uint64_t gen;
  {
    std::lock_guard lk(mu_);
    if (auto it = known_.find(hash); it != known_.end()) return it->second;
    gen = generation_;
  }
  auto rec = store_.find_api_key(hash);
  if (!rec) return std::nullopt;
  Caller c{rec->team, rec->admin};
  std::lock_guard lk(mu_);
  if (gen == generation_) known_.emplace(hash, c);
  return c;
}

void KeyChecker::forget() {
  std::lock_guard lk(mu_);
  known_.clear();
  ++generation_;
}

Result<std::optional<std::string>> ensure_api_key(const core::GatewayConfig& cfg, store::Store& store) {
  if (!cfg.api_keys.empty()) return std::optional<std::string>{};
  auto n = store.count_api_keys();
  if (!n) return std::unexpected(n.error());
  if (*n > 0) return std::optional<std::string>{};
  auto key = store::generate_api_key();
  if (!key) return std::unexpected(key.error());
  auto r = store.add_api_key("default", store::sha256_hex(*key), store::kDefaultTeam, /*admin=*/true);
  if (!r) return std::unexpected(r.error());
  return std::optional<std::string>(*key);
}

Api::Api(const core::GatewayConfig& cfg, core::SandboxManager& mgr, templates::TemplateRegistry& templates,
         store::Store& store, core::metrics::GatewayMetrics& metrics, sandbox::Backend& backend,
         asio::thread_pool& netns_pool)
    : cfg_(cfg), mgr_(mgr), templates_(templates), store_(store), metrics_(metrics), keys_(cfg, store),
      proxy_(mgr.routes(), backend, netns_pool, metrics, [this](const std::string& key) -> std::optional<std::string> {
        auto c = keys_.check(key);
        if (!c) return std::nullopt;
        return c->team;
      }) {
  builds_ = std::make_unique<core::TemplateBuilds>(cfg.state_dir, templates, cfg.cli_path);
  proxy_.set_auto_resume([this](std::string id) -> asio::awaitable<Status> {
    auto op = mgr_.resume_for_traffic(std::move(id));
    co_return co_await std::move(op);
  });
}

json sandbox_body(const SandboxView& v, const core::GatewayConfig& cfg) { return sandbox_json(v, cfg); }

asio::awaitable<void> Api::reply(http::Exchange& ex, unsigned status, std::string_view body,
                                 std::string_view content_type, const http::Fields& extra) {
  metrics_.http_response(status);
  co_await ex.respond(status, body, content_type, extra);
}

asio::awaitable<void> Api::reply_json(http::Exchange& ex, unsigned status, std::string_view body,
                                      const http::Fields& extra) {
  metrics_.http_response(status);
  co_await ex.respond_json(status, body, extra);
}

asio::awaitable<void> Api::error_response(http::Exchange& ex, const Error& e) {
  unsigned st = http_status(e);
  if (st >= 500) {
    COPPICE_LOG_RATE(error, 5) << ex.method_string() << " " << ex.path() << ": " << e.to_string();
  }
  auto body = error_body(st, e.message());
  co_await reply_json(ex, st, body);
}

asio::awaitable<void> Api::error_response(http::Exchange& ex, unsigned status, std::string_view message) {
  auto body = error_body(status, message);
  co_await reply_json(ex, status, body);
}

asio::awaitable<void> Api::not_implemented(http::Exchange& ex) {
  std::string path(ex.path());
  co_await error_response(ex, 501,
                          "Coppice does not implement " + std::string(ex.method_string()) + " " + path + " (yet)");
}

asio::awaitable<void> Api::handle(http::Exchange& ex) {
  mgr_.note_activity();
  if (auto t = proxy::route(ex, cfg_.domain)) {
    co_await proxy_.serve(ex, *t);
  } else if (proxy::is_signed_file_request(ex)) {
    co_await proxy_.serve_signed_file(ex);
  } else {
    mgr_.control_started();
    ScopeExit ended([this] { mgr_.control_ended(); });
    co_await control(ex);
  }
  mgr_.note_activity();
}

asio::awaitable<void> Api::control(http::Exchange& ex) {
  std::string path(ex.path());
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  auto m = ex.method();
  if (path == "/health") {
    co_await reply_json(ex, 200, R"({"status":"ok"})");
    co_return;
  }
  // GET /metrics needs no API key: it holds no secrets (totals under fixed
  // labels; never a sandbox id, metadata or key), and Prometheus scrapers
  // rarely carry one.
  if (path == "/metrics" && m == verb::get) {
    std::string body = metrics_.registry.render();
    co_await reply(ex, 200, body, "text/plain; version=0.0.4; charset=utf-8");
    co_return;
  }
  // The volume content API authenticates with the volume's own token.
  if (path.starts_with("/volumecontent/")) {
    co_await volume_content(ex, path);
    co_return;
  }
  // A template build's file upload authenticates with its one-use token.
  if (path.starts_with("/template-uploads/")) {
    co_await template_upload(ex, path.substr(18));
    co_return;
  }
  auto found = keys_.check(ex.header("X-API-KEY"));
  if (!found) {
    co_await error_response(ex, 401, "invalid or missing API key (X-API-KEY)");
    co_return;
  }
  const Caller caller = std::move(*found);
  if (path == "/admin" || path.starts_with("/admin/")) {
    if (!caller.admin) {
      co_await error_response(ex, 403, "this API key is not an admin key");
      co_return;
    }
    co_await admin_route(ex, path);
    co_return;
  }
  if (path == "/api-keys" || path.starts_with("/api-keys/")) {
    std::string rest = path.substr(9);
    co_await keys_route(ex, caller.team, rest, caller);
    co_return;
  }
  // E2B's template build API, and the templates a team built through it.
  if (co_await template_build_route(ex, path, caller)) co_return;
  // Templates and pools are the host's, shared by every team: any key reads
  // them, only an admin key changes them.
  // DELETE /templates/{x} removes a host template (an operator's action) or,
  // when x names no template, the caller's snapshot (what the SDK's
  // deleteSnapshot calls).
  const bool template_delete = path.starts_with("/templates/") && m == verb::delete_;
  const bool snapshot_delete = template_delete && path.find('/', 11) == std::string::npos &&
                               !templates_.get(path.substr(11)).has_value();
  const bool operator_action = (path == "/templates/reload" && m == verb::post) ||
                               (template_delete && !snapshot_delete) ||
                               (path.starts_with("/pools/") && m == verb::post);
  if (operator_action && !caller.admin) {
    co_await error_response(ex, 403, "only an admin key may reload or remove templates or change pools");
    co_return;
  }
  if (path == "/dirsnapshots" || path.starts_with("/dirsnapshots/")) {
    co_await dir_snapshots_route(ex, path.substr(13), caller);
    co_return;
  }
  if (path == "/snapshots" || path.starts_with("/snapshots/")) {
    co_await snapshots_route(ex, path.substr(10), caller);
    co_return;
  }
  if (snapshot_delete) {
    co_await delete_snapshot(ex, path.substr(11), caller, /*as_template=*/true);
    co_return;
  }
  if (path == "/volumes" || path.starts_with("/volumes/")) {
    co_await volumes_route(ex, path.substr(8), caller);
    co_return;
  }
  if ((path == "/sandboxes" || path == "/v2/sandboxes") && m == verb::post) {
    co_await create(ex, caller);
    co_return;
  }
  if ((path == "/sandboxes" || path == "/v2/sandboxes") && m == verb::get) {
    co_await list(ex, path == "/v2/sandboxes", caller);
    co_return;
  }
  if (path == "/templates" && m == verb::get) {
    co_await list_templates(ex);
    co_return;
  }
  if (path == "/templates/reload" && m == verb::post) {
    co_await reload_templates(ex);
    co_return;
  }
  if (path.starts_with("/templates/") && m == verb::delete_) {
    // DELETE /templates/{name}: 204, 404 unknown, 409 in use.
    std::string name = path.substr(11);
    if (!templates::valid_template_name(name)) {
      co_await error_response(ex, 404, "template " + name.substr(0, 128) + " not found");
      co_return;
    }
    auto removing = mgr_.remove_template(name);
    auto s = co_await std::move(removing);
    if (!s) {
      co_await error_response(ex, std::move(s.error()));
      co_return;
    }
    co_await reply(ex, 204, "", "");
    co_return;
  }
  if (path == "/pools" && m == verb::get) {
    json out = json::array();  // pools() is a snapshot any thread may take
    for (const auto& p : mgr_.pools()) out.push_back(pool_json(p));
    co_await reply_json(ex, 200, out.dump());
    co_return;
  }
  if (path.rfind("/pools/", 0) == 0) {
    std::string rest = path.substr(7);
    size_t slash = rest.find('/');
    if (slash != std::string::npos && slash > 0) {
      co_await pool_route(ex, rest.substr(0, slash), rest.substr(slash + 1));
      co_return;
    }
  }
  for (std::string_view prefix : {"/v2/sandboxes/", "/sandboxes/"}) {
    if (path.rfind(prefix, 0) != 0) continue;
    std::string rest = path.substr(prefix.size());
    size_t slash = rest.find('/');
    std::string id = rest.substr(0, slash);
    std::string action = slash == std::string::npos ? "" : rest.substr(slash + 1);
    if (action == "dirsnapshots" || action.starts_with("dirsnapshots/")) {
      if (!valid_sandbox_id(id)) {
        co_await error_response(ex, 404, "sandbox " + id + " not found");
        co_return;
      }
      co_await sandbox_dir_snapshots(ex, id, action.substr(12), caller);
      co_return;
    }
    if (action == "volumes" || action.starts_with("volumes/")) {
      co_await sandbox_volumes_route(ex, id, action.substr(7), caller);
      co_return;
    }
    co_await sandbox_route(ex, id, action, caller);
    co_return;
  }
  co_await not_implemented(ex);
}

asio::awaitable<void> Api::create(http::Exchange& ex, const Caller& caller) {
  auto body = co_await read_json(ex, cfg_.max_body_bytes);
  if (!body) {
    co_await error_response(ex, body.error());
    co_return;
  }
  core::CreateParams p;
  const json& j = *body;
  if (auto it = j.find("templateID"); it != j.end() && !it->is_null()) {
    if (!it->is_string() || it->get<std::string>().empty()) {
      co_await error_response(ex, 400, "templateID must be a non-empty string");
      co_return;
    }
    p.template_id = it->get<std::string>();
    // Another team's template is not there for this caller; "name:tag"
    // names the template built with that tag.
    if (builds_) {
      p.template_id = builds_->resolve_tag(p.template_id);
      if (!builds_->visible(p.template_id, caller.team)) {
        co_await error_response(ex, 404, "template " + p.template_id.substr(0, 128) + " not found");
        co_return;
      }
    }
  }
  auto timeout = timeout_field(j, "timeout", cfg_.max_timeout_s);
  auto env = string_map(j, "envVars");
  auto meta = string_map(j, "metadata");
  for (const Error* e : {timeout ? nullptr : &timeout.error(), env ? nullptr : &env.error(),
                         meta ? nullptr : &meta.error()}) {
    if (e) {
      co_await error_response(ex, *e);
      co_return;
    }
  }
  p.timeout_s = *timeout;
  p.env_vars = *env;
  p.metadata = json(*meta);
  p.team = caller.team;
  if (auto it = j.find("secure"); it != j.end() && it->is_boolean()) p.secure = it->get<bool>();
  const bool v1 = ex.path() == "/sandboxes";
  if (auto s = check_create_options(j, v1); !s) {
    co_await error_response(ex, s.error());
    co_return;
  }
  if (auto l = parse_lifecycle(j, mgr_.pauses_to_disk(), mgr_.checkpoints_memory()); !l) {
    co_await error_response(ex, l.error());
    co_return;
  } else {
    p.lifecycle = *l;
  }
  {
    auto n = j.find("network");
    auto a = j.find("allow_internet_access");
    auto net = net::parse_create(n == j.end() ? nullptr : &*n, a == j.end() ? nullptr : &*a);
    if (!net) {
      co_await error_response(ex, net.error());
      co_return;
    }
    p.network = std::move(*net);
    // SDKs up to 2.50 send allow_internet_access: true on every v1 create:
    // there it is the default, not a request.
    const bool explicit_internet = !v1 && a != j.end() && a->is_boolean() && a->get<bool>();
    p.wants_network = explicit_internet || !p.network.allow_out.empty() || !p.network.deny_out.empty();
  }
  // Inbound policy (checked above).
  if (auto n = j.find("network"); n != j.end() && n->is_object()) {
    if (auto a = n->find("allowPublicTraffic"); a != n->end() && a->is_boolean()) p.public_traffic = a->get<bool>();
    if (auto m = n->find("maskRequestHost"); m != n->end() && m->is_string()) p.mask_request_host = m->get<std::string>();
    if (auto h = n->find("httpsPorts"); h != n->end() && h->is_array()) {
      for (const auto& port : *h) p.https_ports.push_back(static_cast<uint16_t>(port.get<int64_t>()));
    }
  }
  if (auto vm = j.find("volumeMounts"); vm != j.end() && !vm->is_null()) {
    auto mounts = resolve_volume_mounts(*vm, caller.team);
    if (!mounts) {
      co_await error_response(ex, mounts.error());
      co_return;
    }
    p.volumes = std::move(*mounts);
  }
  auto v = co_await mgr_.create(std::move(p));
  if (!v) {
    co_await error_response(ex, v.error());
    co_return;
  }
  co_await reply_json(ex, 201, sandbox_json(*v, cfg_).dump());
}

asio::awaitable<void> Api::list(http::Exchange& ex, bool v2, const Caller& caller) {
  const auto& q = ex.query_params();
  core::ListFilter f;
  f.team = caller.team;
  if (auto it = q.find("state"); it != q.end() && !it->second.empty()) {
    std::string_view st = it->second;
    while (!st.empty()) {
      auto c = st.find(',');
      auto part = st.substr(0, c);
      if (part == "running") f.states.push_back(core::SandboxState::kRunning);
      else if (part == "paused") f.states.push_back(core::SandboxState::kPaused);
      else if (!part.empty()) {
        co_await error_response(ex, 400, "state must be running and/or paused");
        co_return;
      }
      if (c == std::string_view::npos) break;
      st.remove_prefix(c + 1);
    }
  } else if (!v2) {
    f.states.push_back(core::SandboxState::kRunning);
  }
  for (const char* name : {"metadata", "query"})
    if (auto it = q.find(name); it != q.end()) f.metadata = metadata_filter(it->second);
  for (const char* name : {"template", "templateID"})
    if (auto it = q.find(name); it != q.end()) f.template_id = it->second;
  for (auto [name, out] : {std::pair{"startedAfter", &f.started_after}, std::pair{"startedBefore", &f.started_before}}) {
    auto it = q.find(name);
    if (it == q.end() || it->second.empty()) continue;
    auto t = parse_rfc3339(it->second);
    if (!t) {
      co_await error_response(ex, 400, std::string(name) + " must be an RFC 3339 time, got \"" + it->second + "\"");
      co_return;
    }
    *out = *t;
  }
  bool ascending = false;  // newest first unless asked otherwise
  if (auto it = q.find("order"); it != q.end() && !it->second.empty()) {
    if (it->second != "asc" && it->second != "desc") {
      co_await error_response(ex, 400, "order must be asc or desc");
      co_return;
    }
    ascending = it->second == "asc";
  }
  size_t limit = 100;
  if (auto it = q.find("limit"); it != q.end()) {
    char* end = nullptr;
    long v = std::strtol(it->second.c_str(), &end, 10);
    if (it->second.empty() || *end || v < 1 || v > 1000) {
      co_await error_response(ex, 400, "limit must be an integer between 1 and 1000");
      co_return;
    }
    limit = static_cast<size_t>(v);
  }
  auto all = co_await mgr_.list(std::move(f));  // oldest first
  if (!ascending) std::reverse(all.begin(), all.end());
  // The page token is the (startedAt, id) of the last item sent.
  auto key = [](const SandboxView& v) {
    return std::make_pair(std::chrono::duration_cast<std::chrono::milliseconds>(v.started_at.time_since_epoch()).count(), v.id);
  };
  size_t start = 0;
  if (auto it = q.find("nextToken"); v2 && it != q.end() && !it->second.empty()) {
    const std::string& tok = it->second;
    auto dash = tok.find('-');
    char* end = nullptr;
    long long ms = dash == std::string::npos ? -1 : std::strtoll(tok.substr(0, dash).c_str(), &end, 10);
    if (dash == std::string::npos || ms < 0) {
      co_await error_response(ex, 400, "nextToken is malformed");
      co_return;
    }
    auto cursor = std::make_pair(static_cast<int64_t>(ms), tok.substr(dash + 1));
    while (start < all.size() && (ascending ? key(all[start]) <= cursor : key(all[start]) >= cursor)) ++start;
  }
  json out = json::array();
  size_t end_i = v2 ? std::min(all.size(), start + limit) : all.size();
  for (size_t i = start; i < end_i; ++i) out.push_back(listed_json(all[i]));
  http::Fields headers;
  if (v2 && end_i < all.size() && end_i > start) {
    auto k = key(all[end_i - 1]);
    headers.emplace_back("X-Next-Token", std::to_string(k.first) + "-" + k.second);
  }
  co_await reply_json(ex, 200, out.dump(), headers);
}

asio::awaitable<void> Api::list_templates(http::Exchange& ex) {
  co_await reply_json(ex, 200, templates_body(templates_.list()));
}

asio::awaitable<void> Api::reload_templates(http::Exchange& ex) {
  auto s = co_await reload_on(reload_pool_, templates_);
  if (!s) {
    co_await error_response(ex, std::move(s.error()).context("reload templates"));
    co_return;
  }
  // A rebuild retired the build it replaced: gone now unless sandboxes run on it.
  co_await mgr_.collect_retired_templates();
  co_await reply_json(ex, 200, templates_body(templates_.list()));
}

// POST /pools/{template}/warm {"count": N} and POST /pools/{template}/drain.
asio::awaitable<void> Api::pool_route(http::Exchange& ex, const std::string& template_id, const std::string& action) {
  if (ex.method() != verb::post || (action != "warm" && action != "drain")) {
    co_await error_response(ex, 404, "no such endpoint: " + std::string(ex.method_string()) + " " +
                                         std::string(ex.path()) + " (POST /pools/{template}/warm or /drain)");
    co_return;
  }
  auto body = co_await read_json(ex, cfg_.max_body_bytes);
  if (!body) {
    co_await error_response(ex, body.error());
    co_return;
  }
  Result<core::PoolView> v = make_error(ErrorCode::kInternal, "unreachable");
  if (action == "warm") {
    auto it = body->find("count");
    if (it == body->end() || !it->is_number_integer()) {
      co_await error_response(ex, 400, "count must be an integer");
      co_return;
    }
    auto n = it->get<int64_t>();
    if (n < 0 || n > core::SandboxManager::kMaxPoolTarget) {
      co_await error_response(ex, 400, "count must be between 0 and " +
                                           std::to_string(core::SandboxManager::kMaxPoolTarget));
      co_return;
    }
    std::string t = template_id;
    v = co_await mgr_.warm_pool(std::move(t), static_cast<int>(n));
  } else {
    std::string t = template_id;
    v = co_await mgr_.drain_pool(std::move(t));
  }
  if (!v) {
    co_await error_response(ex, v.error());
    co_return;
  }
  co_await reply_json(ex, 200, pool_json(*v).dump());
}

asio::awaitable<void> Api::preview_url(http::Exchange& ex, const std::string& id, const core::TeamScope& team) {
  if (!signer_) {
    co_await error_response(ex, 501, "preview URLs are not enabled on this gateway");
    co_return;
  }
  auto body = co_await read_json(ex, cfg_.max_body_bytes);
  if (!body) {
    co_await error_response(ex, body.error());
    co_return;
  }
  auto port = body->find("port");
  if (port == body->end() || !port->is_number_integer() || port->get<int64_t>() < 1 || port->get<int64_t>() > 65535 ||
      port->get<int64_t>() == kEnvdPort) {
    co_await error_response(ex, 400,
                            "port must be a number from 1 to 65535 other than envd's " + std::to_string(kEnvdPort));
    co_return;
  }
  int64_t seconds = 3600;
  if (auto e = body->find("expiresInSeconds"); e != body->end() && !e->is_null()) {
    if (!e->is_number_integer() || e->get<int64_t>() < proxy::kPreviewMinSeconds ||
        e->get<int64_t>() > proxy::kPreviewMaxSeconds) {
      co_await error_response(ex, 400, "expiresInSeconds must be a whole number from 1 to " +
                                           std::to_string(proxy::kPreviewMaxSeconds) + " (7 days)");
      co_return;
    }
    seconds = e->get<int64_t>();
  }
  auto v = co_await mgr_.get(id, team);
  if (!v) {
    co_await error_response(ex, v.error());
    co_return;
  }
  const auto p = static_cast<uint16_t>(port->get<int64_t>());
  const auto now = std::chrono::floor<std::chrono::seconds>(core::Clock::now());
  const int64_t expires = now.time_since_epoch().count() + seconds;
  // The host as the client reached us keeps its port (the gateway may be
  // published on another port than it listens on).
  std::string host_port;
  if (std::string h = ex.header("Host"); cfg_.domain.find(':') == std::string::npos && !h.empty() && h.back() != ']') {
    if (size_t colon = h.rfind(':'); colon != std::string::npos) host_port = h.substr(colon);
  }
  // Without --domain, Host routing takes any domain: "localhost" names the
  // host the browser runs on (RFC 6761), which is right for a local gateway.
  const std::string domain = cfg_.domain.empty() ? "localhost" : cfg_.domain;
  const std::string url = std::string(tls_ ? "https" : "http") + "://" + std::to_string(p) + "-" + id + "." + domain +
                          host_port + "/?" + std::string(proxy::kPreviewParam) + "=" + signer_->sign(id, p, expires);
  json out{{"url", url},
           {"expiresAt", rfc3339(core::Clock::time_point(std::chrono::seconds(expires)))},
           {"sandboxID", id},
           {"port", p}};
  co_await reply_json(ex, 201, out.dump());
}

asio::awaitable<void> Api::sandbox_route(http::Exchange& ex, const std::string& id, const std::string& action,
                                         const Caller& caller) {
  auto m = ex.method();
  // Every call below is scoped to the caller's team: another team's sandbox
  // is answered exactly as a missing one.
  const core::TeamScope team = caller.team;
  if (!valid_sandbox_id(id)) {
    co_await error_response(ex, 404, "sandbox " + id + " not found");
    co_return;
  }
  if (action.empty() && m == verb::get) {
    auto v = co_await mgr_.get(id, team);
    if (!v) {
      co_await error_response(ex, v.error());
      co_return;
    }
    const std::string body = with_volume_mounts(detail_json(*v, cfg_), id).dump();
    co_await reply_json(ex, 200, body);
    co_return;
  }
  if (action.empty() && m == verb::patch) {
    // Live resize (an extension): {"cpuCount", "memoryMB"}; answers the new detail.
    auto body = co_await read_json(ex, cfg_.max_body_bytes);
    if (!body) {
      co_await error_response(ex, body.error());
      co_return;
    }
    auto req = parse_resize(*body, cfg_.max_cpu_count, cfg_.max_memory_mb);
    if (!req) {
      co_await error_response(ex, req.error());
      co_return;
    }
    auto v = co_await mgr_.resize(id, req->cpu_count, req->memory_mb, team);
    if (!v) co_await error_response(ex, v.error());
    else co_await reply_json(ex, 200, detail_json(*v, cfg_).dump());
    co_return;
  }
  if (action == "network" && m == verb::put) {
    auto body = co_await read_json(ex, cfg_.max_body_bytes);
    if (!body) {
      co_await error_response(ex, body.error());
      co_return;
    }
    json rules = std::move(*body);
    auto s = co_await mgr_.update_network(id, rules, team);
    if (!s) co_await error_response(ex, s.error());
    else co_await reply(ex, 204, "", "");
    co_return;
  }
  if (action == "snapshots" && m == verb::post) {
    co_await sandbox_snapshot(ex, id, caller);
    co_return;
  }
  if (action == "fork" && m == verb::post) {
    co_await fork(ex, id, caller);
    co_return;
  }
  if (action == "preview-url" && m == verb::post) {
    co_await preview_url(ex, id, team);
    co_return;
  }
  if (action.empty() && m == verb::delete_) {
    auto s = co_await mgr_.kill(id, team);
    if (!s) co_await error_response(ex, s.error());
    else co_await reply(ex, 204, "", "");
    co_return;
  }
  if ((action == "timeout" || action == "refreshes") && m == verb::post) {
    auto body = co_await read_json(ex, cfg_.max_body_bytes);
    if (!body) {
      co_await error_response(ex, body.error());
      co_return;
    }
    const char* field = action == "timeout" ? "timeout" : "duration";
    auto t = timeout_field(*body, field, cfg_.max_timeout_s);
    if (!t) {
      co_await error_response(ex, t.error());
      co_return;
    }
    if (!*t && action == "timeout") {
      co_await error_response(ex, 400, "timeout is required");
      co_return;
    }
    // One co_await per statement: g++ 12 destroys the by-value arguments of
    // a co_await inside a conditional expression twice.
    const int seconds = action == "timeout" ? **t : t->value_or(cfg_.default_timeout_s);
    Status s = ok();
    if (action == "timeout") {
      s = co_await mgr_.set_timeout(id, seconds, team);
    } else {
      s = co_await mgr_.refresh(id, seconds, team);
    }
    if (!s) co_await error_response(ex, s.error());
    else co_await reply(ex, 204, "", "");
    co_return;
  }
  if ((action == "connect" || action == "resume") && m == verb::post) {
    auto body = co_await read_json(ex, cfg_.max_body_bytes);
    if (!body) {
      co_await error_response(ex, body.error());
      co_return;
    }
    auto t = timeout_field(*body, "timeout", cfg_.max_timeout_s);
    if (!t) {
      co_await error_response(ex, t.error());
      co_return;
    }
    // memory: false asks for a reboot on resume (files only): not there yet.
    if (auto mem = body->find("memory"); mem != body->end() && mem->is_boolean() && !mem->get<bool>()) {
      co_await error_response(ex, 400, "resuming without memory (\"memory\": false) is not supported yet");
      co_return;
    }
    if (action == "resume") {
      auto v = co_await mgr_.resume(id, *t, team);
      if (!v) co_await error_response(ex, v.error());
      else co_await reply_json(ex, 201, sandbox_json(*v, cfg_).dump());
      co_return;
    }
    auto r = co_await mgr_.connect(id, *t, team);
    if (!r) co_await error_response(ex, r.error());
    else co_await reply_json(ex, r->second ? 201 : 200, sandbox_json(r->first, cfg_).dump());
    co_return;
  }
  if (action == "pause" && m == verb::post) {
    auto body = co_await read_json(ex, cfg_.max_body_bytes);
    if (!body) {
      co_await error_response(ex, body.error());
      co_return;
    }
    bool memory = true;
    if (auto mem = body->find("memory"); mem != body->end() && !mem->is_null()) {
      if (!mem->is_boolean()) {
        co_await error_response(ex, 400, "memory must be a boolean");
        co_return;
      }
      memory = mem->get<bool>();
    }
    auto s = co_await mgr_.pause(id, team, memory);
    if (!s) co_await error_response(ex, s.error());
    else co_await reply(ex, 204, "", "");
    co_return;
  }
  if (action == "metrics" && m == verb::get) {
    // start and end: unix seconds, both inclusive (a sample at 12.7 s is in
    // end=12's range).
    std::optional<core::Clock::time_point> range[2];
    const char* names[2] = {"start", "end"};
    for (int i = 0; i < 2; ++i) {
      const auto& q = ex.query_params();
      auto it = q.find(names[i]);
      if (it == q.end() || it->second.empty()) continue;
      char* end = nullptr;
      long long v = std::strtoll(it->second.c_str(), &end, 10);
      if (*end || v < 0 || v > 253402300799LL) {
        co_await error_response(ex, 400, std::string(names[i]) + " must be a unix time in seconds");
        co_return;
      }
      range[i] = core::Clock::time_point(std::chrono::seconds(v) + (i == 1 ? std::chrono::milliseconds(999)
                                                                           : std::chrono::milliseconds(0)));
    }
    auto r = co_await mgr_.metrics(id, range[0], range[1], team);
    if (!r) {
      co_await error_response(ex, r.error());
      co_return;
    }
    json out = json::array();
    for (const auto& s : *r) {
      auto secs = std::chrono::duration_cast<std::chrono::seconds>(s.at.time_since_epoch()).count();
      out.push_back(json{{"timestamp", rfc3339(s.at)}, {"timestampUnix", secs}, {"cpuCount", s.cpu_count},
                         {"cpuUsedPct", s.cpu_used_pct}, {"memUsed", s.mem_used}, {"memTotal", s.mem_total},
                         {"diskUsed", s.disk_used}, {"diskTotal", s.disk_total},
                         {"netRxBytes", s.net_rx_bytes}, {"netTxBytes", s.net_tx_bytes},
                         {"netRxPackets", s.net_rx_packets}, {"netTxPackets", s.net_tx_packets}});
    }
    co_await reply_json(ex, 200, out.dump());
    co_return;
  }
  if (action == "logs" && m == verb::get) {
    auto v = co_await mgr_.get(id, team);
    if (!v) {
      co_await error_response(ex, v.error());
      co_return;
    }
    json logs = json::array(), entries = json::array();
    for (const auto& e : mgr_.events(id, 1000)) {
      auto at = rfc3339(core::Clock::time_point(std::chrono::milliseconds(e.at)));
      std::string line = e.kind + (e.detail.empty() ? "" : ": " + e.detail);
      logs.push_back(json{{"timestamp", at}, {"line", line}});
      entries.push_back(json{{"timestamp", at}, {"level", "info"}, {"message", line},
                             {"fields", json{{"kind", e.kind}}}});
    }
    json out{{"logs", logs}, {"logEntries", entries}};
    co_await reply_json(ex, 200, out.dump());
    co_return;
  }
  // An action Coppice does not have yet (fork, snapshots, ...): a sandbox
  // that does not exist, or is another team's, is still a 404, as E2B
  // answers (the SDK reads it as SandboxNotFoundError).
  auto known = co_await mgr_.get(id, team);
  if (!known) {
    co_await error_response(ex, known.error());
    co_return;
  }
  co_await not_implemented(ex);
}

}  // namespace coppice::api
