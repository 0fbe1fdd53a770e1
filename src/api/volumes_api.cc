// Volumes: E2B's /volumes REST API, the create's volumeMounts, hot mounts
// (/sandboxes/{id}/volumes, an extension) and the volume content API
// (/volumecontent/{volumeID}/..., what the SDK's Volume file methods call).
#include <charconv>

#include "api/api.h"
#include "api/api_internal.h"
#include "common/ids.h"
#include "common/strings.h"
#include "sandbox/volume_files.h"

namespace coppice::api {

using json = nlohmann::json;
using http::bhttp::verb;
namespace volfs = sandbox::volfs;

namespace {

// VolumeAndToken (create, get); `Volume` (list) is its first two fields.
json volume_json(const store::VolumeRecord& v, bool with_token) {
  json j{{"volumeID", v.id}, {"name", v.name}, {"sizeMB", v.quota_bytes >> 20}};
  if (with_token) j["token"] = v.token;
  return j;
}

Result<std::string> volume_name_field(const json& j) {
  auto it = j.find("name");
  if (it == j.end() || !it->is_string()) return make_error(ErrorCode::kInvalidArgument, "name must be a string");
  std::string name = it->get<std::string>();
  if (!store::valid_volume_name(name))
    return make_error(ErrorCode::kInvalidArgument,
                      "invalid volume name \"" + name.substr(0, 80) + "\": 1-" +
                          std::to_string(store::kMaxVolumeNameLength) +
                          " characters of A-Z, a-z, 0-9, '.', '-' and '_', not starting with '.' or '-'");
  return name;
}

std::string time_of(const struct timespec& t) {
  return rfc3339_time(core::Clock::time_point(std::chrono::duration_cast<core::Clock::duration>(
      std::chrono::seconds(t.tv_sec) + std::chrono::nanoseconds(t.tv_nsec))));
}

json entry_json(const volfs::Entry& e) {
  json j{{"name", e.name},   {"path", e.path},       {"type", e.type},         {"size", e.size},
         {"mode", e.mode},   {"uid", e.uid},         {"gid", e.gid},           {"atime", time_of(e.atime)},
         {"mtime", time_of(e.mtime)}, {"ctime", time_of(e.ctime)}};
  if (e.type == "symlink") j["target"] = e.target;
  return j;
}

// An optional unsigned query parameter; kInvalidArgument when malformed.
Result<std::optional<uint32_t>> uint_param(const std::map<std::string, std::string>& q, const char* name) {
  auto it = q.find(name);
  if (it == q.end() || it->second.empty()) return std::optional<uint32_t>{};
  uint32_t v = 0;
  auto [p, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), v);
  if (ec != std::errc() || p != it->second.data() + it->second.size())
    return make_error(ErrorCode::kInvalidArgument, std::string(name) + " must be a non-negative integer");
  return std::optional<uint32_t>(v);
}

Result<volfs::Meta> meta_params(const std::map<std::string, std::string>& q) {
  volfs::Meta m;
  COPPICE_ASSIGN_OR_RETURN(m.uid, uint_param(q, "uid"));
  COPPICE_ASSIGN_OR_RETURN(m.gid, uint_param(q, "gid"));
  COPPICE_ASSIGN_OR_RETURN(m.mode, uint_param(q, "mode"));
  return m;
}

Result<bool> bool_param(const std::map<std::string, std::string>& q, const char* name) {
  auto it = q.find(name);
  if (it == q.end() || it->second.empty() || it->second == "false") return false;
  if (it->second == "true") return true;
  return make_error(ErrorCode::kInvalidArgument, std::string(name) + " must be true or false");
}

Result<volfs::Meta> meta_body(const json& j) {
  volfs::Meta m;
  for (auto [key, out] : {std::pair{"uid", &m.uid}, std::pair{"gid", &m.gid}, std::pair{"mode", &m.mode}}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_number_unsigned() || it->get<uint64_t>() > 0xffffffffull)
      return make_error(ErrorCode::kInvalidArgument, std::string(key) + " must be a non-negative integer");
    *out = static_cast<uint32_t>(it->get<uint64_t>());
  }
  return m;
}

json mount_json(const std::string& name, const std::string& path, const std::string& volume_id) {
  return json{{"name", name}, {"path", path}, {"volumeID", volume_id}};
}

// A sandbox's mounts as GET /sandboxes/{id}/volumes shows them.
Result<json> mounts_json(store::Store& store, const std::string& id) {
  COPPICE_ASSIGN_OR_RETURN(auto mounts, store.volume_mounts(id));
  json out = json::array();
  for (const auto& v : mounts) out.push_back(mount_json(v.volume_name, v.path, v.volume_id));
  return out;
}

// The volume a hot mount names: {"volumeID"} or {"name"}, the team's.
Result<store::VolumeRecord> mount_volume_field(store::Store& store, const json& body, const std::string& team) {
  if (auto vid = body.find("volumeID"); vid != body.end() && vid->is_string()) {
    std::string s = vid->get<std::string>();
    if (!valid_sandbox_id(s)) return make_error(ErrorCode::kNotFound, "volume " + s.substr(0, 64) + " not found");
    return store.get_volume(s, team);
  }
  if (!body.contains("name")) return make_error(ErrorCode::kInvalidArgument, "name (or volumeID) must be a string");
  COPPICE_ASSIGN_OR_RETURN(std::string name, volume_name_field(body));
  return store.get_volume_by_name(team, name);
}

Result<std::string> mount_path_field(const json& body) {
  auto it = body.find("path");
  if (it == body.end() || !it->is_string()) return make_error(ErrorCode::kInvalidArgument, "path must be a string");
  return core::clean_mount_path(it->get<std::string>());
}

}  // namespace

Result<std::vector<core::VolumeMountParam>> Api::resolve_volume_mounts(const json& mounts, const std::string& team) {
  if (!mounts.is_array()) return make_error(ErrorCode::kInvalidArgument, "volumeMounts must be an array of {name, path}");
  if (mounts.size() > 64) return make_error(ErrorCode::kInvalidArgument, "at most 64 volumeMounts");
  std::vector<core::VolumeMountParam> out;
  for (const auto& m : mounts) {
    if (!m.is_object()) return make_error(ErrorCode::kInvalidArgument, "volumeMounts entries must be {name, path}");
    COPPICE_ASSIGN_OR_RETURN(std::string name, volume_name_field(m));
    auto p = m.find("path");
    if (p == m.end() || !p->is_string()) return make_error(ErrorCode::kInvalidArgument, "volumeMounts: path must be a string");
    COPPICE_ASSIGN_OR_RETURN(std::string path, core::clean_mount_path(p->get<std::string>()));
    for (const auto& o : out) {
      if (o.path == path) return make_error(ErrorCode::kInvalidArgument, "volumeMounts: two volumes at " + path);
    }
    auto v = store_.get_volume_by_name(team, name);
    if (!v) {
      if (v.error().code() == ErrorCode::kNotFound)
        return make_error(ErrorCode::kInvalidArgument, "volumeMounts: volume \"" + name + "\" not found");
      return std::unexpected(v.error());
    }
    out.push_back(core::VolumeMountParam{v->id, v->name, path});
  }
  return out;
}

json Api::with_volume_mounts(json detail, const std::string& id) {
  json list = json::array();
  if (auto mounts = store_.volume_mounts(id); mounts) {
    for (const auto& m : *mounts) list.push_back(json{{"name", m.volume_name}, {"path", m.path}});
  }
  detail["volumeMounts"] = std::move(list);
  return detail;
}

asio::awaitable<void> Api::volumes_route(http::Exchange& ex, const std::string& rest, const Caller& caller) {
  auto m = ex.method();
  if (rest.empty() && m == verb::get) {
    auto all = store_.list_volumes(caller.team);
    if (!all) {
      co_await error_response(ex, all.error());
      co_return;
    }
    json out = json::array();
    for (const auto& v : *all) out.push_back(volume_json(v, false));
    co_await reply_json(ex, 200, out.dump());
    co_return;
  }
  if (rest.empty() && m == verb::post) {
    auto body = co_await read_json_body(ex, cfg_.max_body_bytes);
    if (!body) {
      co_await error_response(ex, body.error());
      co_return;
    }
    auto name = volume_name_field(*body);
    if (!name) {
      co_await error_response(ex, name.error());
      co_return;
    }
    int64_t mb = cfg_.default_volume_mb;
    if (auto it = body->find("sizeMB"); it != body->end() && !it->is_null()) {
      if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > core::kMaxVolumeMb) {
        {
          const std::string msg = "sizeMB must be an integer from 1 to " + std::to_string(core::kMaxVolumeMb);
          co_await error_response(ex, 400, msg);
        }
        co_return;
      }
      mb = it->get<int64_t>();
    }
    std::string team = caller.team, n = *name;
    auto v = co_await mgr_.create_volume(std::move(team), std::move(n), static_cast<uint64_t>(mb) << 20);
    if (!v) {
      co_await error_response(ex, v.error());
      co_return;
    }
    co_await reply_json(ex, 201, volume_json(*v, true).dump());
    co_return;
  }
  if (rest.size() > 1 && rest[0] == '/' && rest.find('/', 1) == std::string::npos) {
    const std::string id = rest.substr(1);
    if (!valid_sandbox_id(id)) {
      {
        const std::string msg = "volume " + id.substr(0, 64) + " not found";
        co_await error_response(ex, 404, msg);
      }
      co_return;
    }
    if (m == verb::get) {
      auto v = store_.get_volume(id, caller.team);
      if (!v) co_await error_response(ex, v.error());
      else co_await reply_json(ex, 200, volume_json(*v, true).dump());
      co_return;
    }
    if (m == verb::delete_) {
      std::string vid = id, team = caller.team;
      auto s = co_await mgr_.delete_volume(std::move(vid), std::move(team));
      if (!s) co_await error_response(ex, s.error());
      else co_await reply(ex, 204, "", "");
      co_return;
    }
  }
  {
    const std::string msg = "no such endpoint: " + std::string(ex.method_string()) + " " +
                                       std::string(ex.path()) + " (GET|POST /volumes, GET|DELETE /volumes/{volumeID})";
    co_await error_response(ex, 404, msg);
  }
}

asio::awaitable<void> Api::sandbox_volumes_route(http::Exchange& ex, const std::string& id, const std::string& rest,
                                                 const Caller& caller) {
  const core::TeamScope team = caller.team;
  auto m = ex.method();
  if (!valid_sandbox_id(id)) {
    {
      const std::string msg = "sandbox " + id + " not found";
      co_await error_response(ex, 404, msg);
    }
    co_return;
  }
  auto sbx = co_await mgr_.get(id, team);
  if (!sbx) {
    co_await error_response(ex, sbx.error());
    co_return;
  }
  if (rest.empty() && m == verb::get) {
    auto out = mounts_json(store_, id);
    if (!out) co_await error_response(ex, out.error());
    else co_await reply_json(ex, 200, out->dump());
    co_return;
  }
  if (rest.empty() && m == verb::post) {
    auto body = co_await read_json_body(ex, cfg_.max_body_bytes);
    if (!body) {
      co_await error_response(ex, body.error());
      co_return;
    }
    auto vol = mount_volume_field(store_, *body, caller.team);
    auto path = mount_path_field(*body);
    for (const Error* e : {vol ? nullptr : &vol.error(), path ? nullptr : &path.error()}) {
      if (e) {
        co_await error_response(ex, *e);
        co_return;
      }
    }
    core::VolumeMountParam p{vol->id, vol->name, *path};
    std::string sid = id;
    auto s = co_await mgr_.mount_volume(std::move(sid), team, std::move(p));
    if (!s) {
      co_await error_response(ex, s.error());
      co_return;
    }
    const std::string out = mount_json(vol->name, *path, vol->id).dump();
    co_await reply_json(ex, 201, out);
    co_return;
  }
  if (rest.size() > 1 && rest[0] == '/' && m == verb::delete_) {
    // /sandboxes/{id}/volumes/{name}[?path=...]: every mount of that volume,
    // or the one at `path`.
    const std::string name = rest.substr(1);
    const auto& q = ex.query_params();
    std::string only;
    if (auto it = q.find("path"); it != q.end() && !it->second.empty()) {
      auto p = core::clean_mount_path(it->second);
      if (!p) {
        co_await error_response(ex, p.error());
        co_return;
      }
      only = *p;
    }
    auto mounts = store_.volume_mounts(id);
    if (!mounts) {
      co_await error_response(ex, mounts.error());
      co_return;
    }
    std::vector<store::VolumeMountRecord> todo;
    for (const auto& v : *mounts)
      if ((v.volume_name == name || v.volume_id == name) && (only.empty() || v.path == only)) todo.push_back(v);
    if (todo.empty()) {
      {
        std::string msg = "volume " + name.substr(0, 80) + " is not mounted in sandbox " + id;
        if (!only.empty()) msg += " at " + only;
        co_await error_response(ex, 404, msg);
      }
      co_return;
    }
    for (const auto& v : todo) {
      std::string sid = id, vid = v.volume_id, path = v.path;
      auto s = co_await mgr_.unmount_volume(std::move(sid), team, std::move(vid), std::move(path));
      if (!s) {
        co_await error_response(ex, s.error());
        co_return;
      }
    }
    co_await reply(ex, 204, "", "");
    co_return;
  }
  {
    const std::string msg = "no such endpoint: " + std::string(ex.method_string()) + " " +
                                       std::string(ex.path()) +
                                       " (GET|POST /sandboxes/{id}/volumes, DELETE /sandboxes/{id}/volumes/{name})";
    co_await error_response(ex, 404, msg);
  }
}

asio::awaitable<void> Api::volume_content(http::Exchange& ex, const std::string& path) {
  // /volumecontent/{volumeID}/{dir|path|file}
  std::string rest = path.substr(std::string_view("/volumecontent/").size());
  size_t slash = rest.find('/');
  const std::string id = rest.substr(0, slash);
  const std::string kind = slash == std::string::npos ? "" : rest.substr(slash + 1);
  // The volume's token; a missing volume is answered like a wrong token.
  std::string auth = ex.header("Authorization");
  std::string token = auth.starts_with("Bearer ") ? auth.substr(7) : "";
  auto vol = valid_sandbox_id(id) ? store_.get_volume(id) : make_error(ErrorCode::kNotFound, "no volume");
  if (token.empty() || !vol || !constant_time_equal(vol->token, token)) {
    co_await error_response(ex, 401, "invalid or missing volume token (Authorization: Bearer <the volume's token>)");
    co_return;
  }
  const std::string root = mgr_.volume_dir(id);
  if (root.empty()) {
    co_await error_response(ex, 501, "this gateway has no volume storage");
    co_return;
  }
  const auto& q = ex.query_params();
  auto p = q.find("path");
  auto clean = volfs::clean_path(p == q.end() ? std::string_view() : std::string_view(p->second));
  if (!clean) {
    Error e = std::move(clean.error()).context("path");
    co_await error_response(ex, e);
    co_return;
  }
  const std::string vpath = *clean;
  auto m = ex.method();
  auto meta = meta_params(q);
  auto force = bool_param(q, "force");
  for (const Error* e : {meta ? nullptr : &meta.error(), force ? nullptr : &force.error()}) {
    if (e) {
      co_await error_response(ex, *e);
      co_return;
    }
  }
  if (kind == "dir" && m == verb::get) {
    int depth = 1;
    if (auto d = uint_param(q, "depth"); !d) {
      co_await error_response(ex, d.error());
      co_return;
    } else if (*d) {
      depth = static_cast<int>(std::min<uint32_t>(**d, 1000));
    }
    auto job = [root, vpath, depth] { return volfs::list(root, vpath, depth); };
    auto r = co_await mgr_.on_worker(std::move(job));
    if (!r) {
      co_await error_response(ex, r.error());
      co_return;
    }
    json out = json::array();
    for (const auto& e : *r) out.push_back(entry_json(e));
    co_await reply_json(ex, 200, out.dump());
    co_return;
  }
  if (kind == "dir" && m == verb::post) {
    auto job = [root, vpath, mt = *meta, parents = *force] { return volfs::make_dir(root, vpath, mt, parents); };
    auto r = co_await mgr_.on_worker(std::move(job));
    if (!r) co_await error_response(ex, r.error());
    else co_await reply_json(ex, 201, entry_json(*r).dump());
    co_return;
  }
  if (kind == "path" && m == verb::get) {
    auto job = [root, vpath] { return volfs::stat(root, vpath); };
    auto r = co_await mgr_.on_worker(std::move(job));
    if (!r) co_await error_response(ex, r.error());
    else co_await reply_json(ex, 200, entry_json(*r).dump());
    co_return;
  }
  if (kind == "path" && m == verb::patch) {
    auto body = co_await read_json_body(ex, cfg_.max_body_bytes);
    if (!body) {
      co_await error_response(ex, body.error());
      co_return;
    }
    auto bm = meta_body(*body);
    if (!bm) {
      co_await error_response(ex, bm.error());
      co_return;
    }
    auto job = [root, vpath, mt = *bm] { return volfs::update(root, vpath, mt); };
    auto r = co_await mgr_.on_worker(std::move(job));
    if (!r) co_await error_response(ex, r.error());
    else co_await reply_json(ex, 200, entry_json(*r).dump());
    co_return;
  }
  if (kind == "path" && m == verb::delete_) {
    auto job = [root, vpath] { return volfs::remove(root, vpath); };
    auto r = co_await mgr_.on_worker(std::move(job));
    if (!r) co_await error_response(ex, r.error());
    else co_await reply(ex, 204, "", "");
    co_return;
  }
  if (kind == "file" && m == verb::get) {
    auto job = [root, vpath] { return volfs::read_file(root, vpath); };
    auto r = co_await mgr_.on_worker(std::move(job));
    if (!r) co_await error_response(ex, r.error());
    else co_await reply(ex, 200, *r, "application/octet-stream");
    co_return;
  }
  if (kind == "file" && m == verb::put) {
    auto body = co_await ex.read_body(volfs::kMaxFileBytes);
    if (!body) {
      co_await error_response(ex, body.error());
      co_return;
    }
    auto job = [root, vpath, data = std::move(*body), mt = *meta] { return volfs::write_file(root, vpath, data, mt); };
    auto r = co_await mgr_.on_worker(std::move(job));
    if (!r) co_await error_response(ex, r.error());
    else co_await reply_json(ex, 200, entry_json(*r).dump());
    co_return;
  }
  {
    const std::string msg = "no such endpoint: " + std::string(ex.method_string()) +
                                       " /volumecontent/{volumeID}/" + kind.substr(0, 32) +
                                       " (dir: GET|POST, path: GET|PATCH|DELETE, file: GET|PUT)";
    co_await error_response(ex, 404, msg);
  }
}

}  // namespace coppice::api
