// Snapshots and fork: POST /sandboxes/{id}/snapshots, GET /snapshots,
// DELETE /templates/{snapshotID} (what the SDK's deleteSnapshot calls) and
// DELETE /snapshots/{id} (the same, for the CLI), POST /sandboxes/{id}/fork.
#include "api/api.h"
#include "api/api_internal.h"
#include "common/ids.h"

namespace coppice::api {

using json = nlohmann::json;
using http::bhttp::verb;

namespace {

// E2B's default lifetime of a fork's children (SandboxForkRequest.timeout).
constexpr int kForkDefaultTimeoutS = 15;

// A snapshot reference as the SDK may spell it: "<id>", "<name>",
// "<team>/<name>", each with an optional ":<tag>".
std::string snapshot_ref(std::string ref, const std::string& team) {
  if (auto colon = ref.find(':'); colon != std::string::npos) ref.resize(colon);
  if (auto slash = ref.find('/'); slash != std::string::npos && ref.substr(0, slash) == team) ref = ref.substr(slash + 1);
  return ref;
}

// SnapshotInfo, with Coppice's extension fields.
json snapshot_json(const core::SnapshotView& s) {
  json names = json::array();
  if (!s.name.empty()) names.push_back(s.team + "/" + s.name + ":default");
  return json{{"snapshotID", s.id},
              {"names", names},
              {"name", s.name},
              {"sandboxID", s.source_sandbox},
              {"templateID", s.template_id},
              {"memory", s.memory},
              {"diskBytes", s.disk_bytes},
              {"createdAt", rfc3339_time(s.created_at)}};
}

}  // namespace

asio::awaitable<void> Api::sandbox_snapshot(http::Exchange& ex, const std::string& id, const Caller& caller) {
  auto body = co_await read_json_body(ex, cfg_.max_body_bytes);
  if (!body) {
    co_await error_response(ex, body.error());
    co_return;
  }
  std::string name;
  if (auto n = body->find("name"); n != body->end() && !n->is_null()) {
    if (!n->is_string() || !store::valid_snapshot_name(n->get<std::string>())) {
      co_await error_response(ex, 400,
                              "name must be 1-64 characters of A-Z, a-z, 0-9, '.', '-' and '_', not starting with '.' or '-'");
      co_return;
    }
    name = n->get<std::string>();
  }
  bool memory = true;
  if (auto m = body->find("memory"); m != body->end() && !m->is_null()) {
    if (!m->is_boolean()) {
      co_await error_response(ex, 400, "memory must be a boolean");
      co_return;
    }
    memory = m->get<bool>();
  }
  const core::TeamScope team = caller.team;
  auto s = co_await mgr_.create_snapshot(id, team, std::move(name), memory);
  if (!s) {
    co_await error_response(ex, s.error());
    co_return;
  }
  co_await reply_json(ex, 201, snapshot_json(*s).dump());
}

// GET /snapshots?sandboxID=&name=&limit=&nextToken=, oldest first; the page
// token is the (createdAt, id) of the last item sent. DELETE /snapshots/{id}.
asio::awaitable<void> Api::snapshots_route(http::Exchange& ex, const std::string& rest, const Caller& caller) {
  if (rest.starts_with("/") && rest.size() > 1 && ex.method() == verb::delete_) {
    co_await delete_snapshot(ex, rest.substr(1), caller);
    co_return;
  }
  if (!rest.empty() || ex.method() != verb::get) {
    co_await error_response(ex, 404, "no such endpoint: " + std::string(ex.method_string()) + " " +
                                         std::string(ex.path()) + " (GET /snapshots, DELETE /snapshots/{id})");
    co_return;
  }
  const auto& q = ex.query_params();
  std::string source, name;
  if (auto it = q.find("sandboxID"); it != q.end()) source = it->second;
  if (auto it = q.find("name"); it != q.end()) name = snapshot_ref(it->second, caller.team);
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
  std::pair<int64_t, std::string> cursor{-1, ""};
  if (auto it = q.find("nextToken"); it != q.end() && !it->second.empty()) {
    const std::string& tok = it->second;
    auto dash = tok.find('-');
    const std::string digits = dash == std::string::npos ? std::string() : tok.substr(0, dash);
    char* end = nullptr;
    long long ms = digits.empty() ? -1 : std::strtoll(digits.c_str(), &end, 10);
    if (ms < 0 || *end != '\0') {
      co_await error_response(ex, 400, "nextToken is malformed");
      co_return;
    }
    cursor = {ms, tok.substr(dash + 1)};
  }
  auto all = mgr_.list_snapshots(caller.team, source);
  if (!all) {
    co_await error_response(ex, all.error());
    co_return;
  }
  auto key = [](const core::SnapshotView& s) {
    return std::make_pair(
        std::chrono::duration_cast<std::chrono::milliseconds>(s.created_at.time_since_epoch()).count(), s.id);
  };
  std::vector<core::SnapshotView> picked;
  for (auto& s : *all) {
    if (!name.empty() && s.id != name && s.name != name) continue;
    if (cursor.first >= 0 && key(s) <= cursor) continue;
    picked.push_back(std::move(s));
  }
  json out = json::array();
  for (size_t i = 0; i < picked.size() && i < limit; ++i) out.push_back(snapshot_json(picked[i]));
  http::Fields headers;
  if (picked.size() > limit) {
    auto k = key(picked[limit - 1]);
    headers.emplace_back("X-Next-Token", std::to_string(k.first) + "-" + k.second);
  }
  co_await reply_json(ex, 200, out.dump(), headers);
}

asio::awaitable<void> Api::delete_snapshot(http::Exchange& ex, const std::string& ref, const Caller& caller,
                                           bool as_template) {
  std::string r = snapshot_ref(ref, caller.team);
  auto s = co_await mgr_.delete_snapshot(std::move(r), caller.team);
  if (!s && as_template && s.error().code() == ErrorCode::kNotFound) {
    // DELETE /templates/{x}: x is neither a template nor a snapshot.
    co_await error_response(ex, 404, "template " + ref.substr(0, 128) + " not found (nor a snapshot of this team by that name)");
    co_return;
  }
  if (!s) {
    co_await error_response(ex, s.error());
    co_return;
  }
  co_await reply(ex, 204, "", "");
}

// POST /sandboxes/{id}/fork {count (default 1), timeout (s, default 15 as on E2B)}: 201 with one
// entry per child, {sandbox} or {error: {code, message}}.
asio::awaitable<void> Api::fork(http::Exchange& ex, const std::string& id, const Caller& caller) {
  auto body = co_await read_json_body(ex, cfg_.max_body_bytes);
  if (!body) {
    co_await error_response(ex, body.error());
    co_return;
  }
  int64_t count = 1;
  if (auto c = body->find("count"); c != body->end() && !c->is_null()) {
    if (!c->is_number_integer()) {
      co_await error_response(ex, 400, "count must be an integer");
      co_return;
    }
    count = c->get<int64_t>();
  }
  if (count < 1 || count > core::SandboxManager::kMaxForkCount) {
    co_await error_response(ex, 400, "count must be between 1 and " +
                                         std::to_string(core::SandboxManager::kMaxForkCount) + ", got " +
                                         std::to_string(count));
    co_return;
  }
  std::optional<int> timeout = kForkDefaultTimeoutS;
  if (auto t = body->find("timeout"); t != body->end() && !t->is_null()) {
    if (!t->is_number_integer() || t->get<int64_t>() < 1 || t->get<int64_t>() > cfg_.max_timeout_s) {
      co_await error_response(ex, 400, "timeout must be between 1 and " + std::to_string(cfg_.max_timeout_s) + " seconds");
      co_return;
    }
    timeout = static_cast<int>(t->get<int64_t>());
  }
  const core::TeamScope team = caller.team;
  auto r = co_await mgr_.fork(id, team, static_cast<int>(count), timeout);
  if (!r) {
    co_await error_response(ex, r.error());
    co_return;
  }
  json out = json::array();
  for (const auto& child : *r) {
    if (child) {
      out.push_back(json{{"sandbox", sandbox_body(*child, cfg_)}});
    } else {
      unsigned st = http_status(child.error());
      out.push_back(json{{"error", json{{"code", st}, {"message", child.error().message()}}}});
    }
  }
  co_await reply_json(ex, 201, out.dump(-1, ' ', false, json::error_handler_t::replace));
}

namespace {
json dir_snapshot_json(const store::DirSnapshotRecord& r) {
  return json{{"name", r.name},
              {"sandboxID", r.source_sandbox},
              {"path", r.path},
              {"sizeBytes", r.bytes},
              {"createdAt", rfc3339_time(core::Clock::time_point(std::chrono::milliseconds(r.created_at)))}};
}

Result<std::string> string_field(const json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end() || !it->is_string() || it->get<std::string>().empty())
    return make_error(ErrorCode::kInvalidArgument, std::string(name) + " must be a non-empty string");
  return it->get<std::string>();
}
}  // namespace

// POST /sandboxes/{id}/dirsnapshots {path, name} and
// POST /sandboxes/{id}/dirsnapshots/{name}/restore {path}. `rest` follows
// "dirsnapshots".
asio::awaitable<void> Api::sandbox_dir_snapshots(http::Exchange& ex, const std::string& id, const std::string& rest,
                                                 const Caller& caller) {
  const bool make = rest.empty();
  const bool restore = rest.starts_with("/") && rest.ends_with("/restore") && rest.size() > 9;
  if (ex.method() != verb::post || (!make && !restore)) {
    co_await error_response(ex, 404, "no such endpoint: " + std::string(ex.method_string()) + " " +
                                         std::string(ex.path()) +
                                         " (POST /sandboxes/{id}/dirsnapshots, POST .../dirsnapshots/{name}/restore)");
    co_return;
  }
  auto body = co_await read_json_body(ex, cfg_.max_body_bytes);
  if (!body) {
    co_await error_response(ex, body.error());
    co_return;
  }
  auto path = string_field(*body, "path");
  if (!path || (*path)[0] != '/') {
    co_await error_response(ex, 400, "path must be an absolute path in the sandbox");
    co_return;
  }
  const core::TeamScope team = caller.team;
  if (make) {
    auto name = string_field(*body, "name");
    if (!name || !store::valid_snapshot_name(*name)) {
      co_await error_response(ex, 400,
                              "name must be 1-64 characters of A-Z, a-z, 0-9, '.', '-' and '_', not starting with '.' or '-'");
      co_return;
    }
    auto r = co_await mgr_.create_dir_snapshot(id, team, *path, *name);
    if (!r) co_await error_response(ex, r.error());
    else co_await reply_json(ex, 201, dir_snapshot_json(*r).dump());
    co_return;
  }
  std::string name = rest.substr(1, rest.size() - 1 - 8);
  auto s = co_await mgr_.restore_dir_snapshot(id, team, name, *path);
  if (!s) co_await error_response(ex, s.error());
  else co_await reply(ex, 204, "", "");
}

// GET /dirsnapshots, DELETE /dirsnapshots/{name}.
asio::awaitable<void> Api::dir_snapshots_route(http::Exchange& ex, const std::string& rest, const Caller& caller) {
  if (rest.empty() && ex.method() == verb::get) {
    auto rows = mgr_.list_dir_snapshots(caller.team);
    if (!rows) {
      co_await error_response(ex, rows.error());
      co_return;
    }
    json out = json::array();
    for (const auto& r : *rows) out.push_back(dir_snapshot_json(r));
    co_await reply_json(ex, 200, out.dump());
    co_return;
  }
  if (rest.starts_with("/") && rest.size() > 1 && rest.find('/', 1) == std::string::npos && ex.method() == verb::delete_) {
    auto s = co_await mgr_.delete_dir_snapshot(caller.team, rest.substr(1));
    if (!s) co_await error_response(ex, s.error());
    else co_await reply(ex, 204, "", "");
    co_return;
  }
  co_await error_response(ex, 404, "no such endpoint: " + std::string(ex.method_string()) + " " +
                                       std::string(ex.path()) + " (GET /dirsnapshots, DELETE /dirsnapshots/{name})");
}

}  // namespace coppice::api
