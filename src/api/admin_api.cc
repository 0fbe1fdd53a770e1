// Team and API key management: /admin/teams (admin keys) and /api-keys
// (a team's own keys), split from api.cc's routing of sandboxes.
#include "api/api.h"
#include "api/api_internal.h"
#include "store/keys.h"

namespace coppice::api {

using json = nlohmann::json;
using http::bhttp::verb;

namespace {

// A key as the key endpoints show it: never the key itself nor its hash
// (E2B's TeamAPIKey fields, plus the team and whether it is an admin key).
json key_json(const store::ApiKeyRecord& k) {
  auto at = [](int64_t ms) { return rfc3339_time(core::Clock::time_point(std::chrono::milliseconds(ms))); };
  return json{{"id", std::to_string(k.id)},
              {"name", k.name},
              {"team", k.team},
              {"admin", k.admin},
              {"createdAt", at(k.created_at)},
              {"createdBy", nullptr},
              {"lastUsed", k.last_used_at ? json(at(k.last_used_at)) : json(nullptr)}};
}

json team_json(const store::TeamRecord& t) {
  return json{{"name", t.name},
              {"createdAt", rfc3339_time(core::Clock::time_point(std::chrono::milliseconds(t.created_at)))}};
}

// A key id from a URL: decimal digits that fit an int64; nullopt otherwise
// (answered as a missing key).
std::optional<int64_t> key_id(const std::string& s) {
  if (s.empty() || s.size() > 18) return std::nullopt;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

}  // namespace

// /admin/teams                    GET: every team; POST {"name"}: a new team
// /admin/teams/{team}             GET: the team; DELETE: it and its keys (not
//                                 while it has sandboxes, not the default team)
// /admin/teams/{team}/keys[/{id}] as /api-keys, for that team (admin keys allowed)
asio::awaitable<void> Api::admin_route(http::Exchange& ex, const std::string& path) {
  auto m = ex.method();
  const std::string prefix = "/admin/teams";
  if (path == prefix && m == verb::get) {
    auto teams = store_.list_teams();
    if (!teams) {
      co_await error_response(ex, teams.error());
      co_return;
    }
    json out = json::array();
    for (const auto& t : *teams) out.push_back(team_json(t));
    co_await reply_json(ex, 200, out.dump());
    co_return;
  }
  if (path == prefix && m == verb::post) {
    auto body = co_await read_json_body(ex, cfg_.max_body_bytes);
    if (!body) {
      co_await error_response(ex, body.error());
      co_return;
    }
    auto it = body->find("name");
    if (it == body->end() || !it->is_string()) {
      co_await error_response(ex, 400, "name must be a string");
      co_return;
    }
    auto t = store_.add_team(it->get<std::string>());
    if (!t) co_await error_response(ex, t.error());
    else co_await reply_json(ex, 201, team_json(*t).dump());
    co_return;
  }
  if (!path.starts_with(prefix + "/")) {
    co_await error_response(ex, 404, "no such endpoint: " + std::string(ex.method_string()) + " " + path);
    co_return;
  }
  std::string rest = path.substr(prefix.size() + 1);
  std::string team = rest.substr(0, rest.find('/'));
  std::string tail = rest.size() > team.size() ? rest.substr(team.size()) : "";
  auto found = store_.get_team(team);
  if (!found) {
    co_await error_response(ex, found.error());
    co_return;
  }
  if (tail.empty() && m == verb::get) {
    co_await reply_json(ex, 200, team_json(*found).dump());
    co_return;
  }
  if (tail.empty() && m == verb::delete_) {
    for (const auto& k : cfg_.api_keys) {
      if (k.team == team) {
        co_await error_response(ex, 409, "team " + team + " has keys in COPPICE_API_KEYS; remove them there first");
        co_return;
      }
    }
    auto d = store_.delete_team(team);
    keys_.forget();
    if (!d) co_await error_response(ex, d.error());
    else co_await reply(ex, 204, "", "");
    co_return;
  }
  if (tail == "/keys" || tail.starts_with("/keys/")) {
    Caller admin{team, true};
    std::string keys_rest = tail.substr(5);
    co_await keys_route(ex, team, keys_rest, admin);
    co_return;
  }
  co_await error_response(ex, 404, "no such endpoint: " + std::string(ex.method_string()) + " " + path);
}

// GET: the team's keys; POST {"name", "admin"?}: a new key, shown once;
// DELETE /{id}: removes one. Only an admin caller may make or remove an
// admin key.
asio::awaitable<void> Api::keys_route(http::Exchange& ex, const std::string& team, const std::string& rest,
                                      const Caller& caller) {
  auto m = ex.method();
  if (rest.empty() && m == verb::get) {
    auto keys = store_.list_api_keys(team);
    if (!keys) {
      co_await error_response(ex, keys.error());
      co_return;
    }
    json out = json::array();
    for (const auto& k : *keys) out.push_back(key_json(k));
    co_await reply_json(ex, 200, out.dump());
    co_return;
  }
  if (rest.empty() && m == verb::post) {
    auto body = co_await read_json_body(ex, cfg_.max_body_bytes);
    if (!body) {
      co_await error_response(ex, body.error());
      co_return;
    }
    auto name = body->find("name");
    if (name == body->end() || !name->is_string() || name->get<std::string>().empty() ||
        name->get<std::string>().size() > 128) {
      co_await error_response(ex, 400, "name must be a string of 1 to 128 bytes");
      co_return;
    }
    bool admin = false;
    if (auto a = body->find("admin"); a != body->end() && !a->is_null()) {
      if (!a->is_boolean()) {
        co_await error_response(ex, 400, "admin must be a boolean");
        co_return;
      }
      admin = a->get<bool>();
    }
    if (admin && !caller.admin) {
      co_await error_response(ex, 403, "only an admin key may make an admin key");
      co_return;
    }
    auto key = store::generate_api_key();
    if (!key) {
      co_await error_response(ex, key.error());
      co_return;
    }
    auto rec = store_.add_api_key(name->get<std::string>(), store::sha256_hex(*key), team, admin);
    if (!rec) {
      co_await error_response(ex, rec.error());
      co_return;
    }
    json out = key_json(*rec);
    out["key"] = *key;
    co_await reply_json(ex, 201, out.dump());
    co_return;
  }
  if (rest.starts_with("/") && rest.find('/', 1) == std::string::npos && m == verb::delete_) {
    std::string id_text = rest.substr(1);
    auto id = key_id(id_text);
    std::optional<store::ApiKeyRecord> target;
    if (id) {
      auto keys = store_.list_api_keys(team);
      if (!keys) {
        co_await error_response(ex, keys.error());
        co_return;
      }
      for (auto& k : *keys)
        if (k.id == *id) target = std::move(k);
    }
    if (!target) {
      co_await error_response(ex, 404, "API key " + id_text + " not found");
      co_return;
    }
    if (target->admin && !caller.admin) {
      co_await error_response(ex, 403, "only an admin key may remove an admin key");
      co_return;
    }
    auto d = store_.delete_api_key(*id, team);
    keys_.forget();
    if (!d && d.error().code() == ErrorCode::kNotFound) co_await error_response(ex, 404, "API key " + id_text + " not found");
    else if (!d) co_await error_response(ex, d.error());
    else co_await reply(ex, 204, "", "");
    co_return;
  }
  co_await not_implemented(ex);
}

}  // namespace coppice::api
