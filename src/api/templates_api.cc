// E2B's template build API, what the SDK's Template.build() and
// buildInBackground() call (template_builds.h runs the builds,
// template_steps.h turns the SDK's steps into a Dockerfile):
//   POST /v3/templates                          a build of a name (202)
//   GET  /templates/{id}/files/{hash}           is that upload there; else where to PUT it (201)
//   PUT  /template-uploads/{token}              the upload itself (the URL the link gives)
//   POST /v2/templates/{id}/builds/{buildID}    the steps; the build starts (202)
//   GET  /templates/{id}/builds/{buildID}/status?logsOffset=N
//   GET  /templates/aliases/{alias}             200, or 404 (also for another team's)
//   GET  /templates/{id}/tags                   the tags of its ready builds
//   GET  /templates, GET|DELETE /templates/{id} with a team's own templates in the picture
#include <fcntl.h>
#include <unistd.h>

#include <charconv>

#include "api/api.h"
#include "api/api_internal.h"
#include "core/template_builds.h"
#include "api/template_steps.h"
#include "common/strings.h"
#include "sys/fd.h"
#include "sys/fsutil.h"

namespace coppice::api {

using json = nlohmann::json;
using http::bhttp::verb;

namespace {

json log_entry_json(const core::BuildLogLine& l, const std::string& step) {
  json j{{"timestamp", rfc3339_time(l.time)},
         {"level", l.level},
         {"message", l.message}};
  if (!step.empty()) j["step"] = step;
  return j;
}

// A Host header fit to be put back into a URL: host[:port], nothing else.
bool plain_host(std::string_view h) {
  if (h.empty() || h.size() > 255) return false;
  for (char c : h)
    if (!std::isalnum(static_cast<unsigned char>(c)) && std::string_view(".-:[]").find(c) == std::string_view::npos)
      return false;
  return true;
}

json new_build_json(const core::NewBuild& b) {
  return json{{"templateID", b.template_id}, {"buildID", b.build_id}, {"names", {b.template_id}},
              {"aliases", {b.template_id}},  {"tags", b.tags},         {"public", false}};
}

json alias_json(const std::string& id, bool is_public) { return json{{"templateID", id}, {"public", is_public}}; }

json detail_json(const templates::Template& t, bool is_public, const std::vector<core::TemplateBuilds::TagView>& tags) {
  json out = template_json(t);
  out["public"] = is_public;
  out["aliases"] = json::array({t.name});
  out["names"] = json::array({t.name});
  json builds = json::array();
  for (const auto& tag : tags)
    if (tag.tag == "default") builds.push_back(json{{"buildID", tag.build_id}, {"status", "ready"}});
  out["builds"] = builds;
  return out;
}

json tags_json(const std::vector<core::TemplateBuilds::TagView>& tags) {
  json out = json::array();
  for (const auto& t : tags)
    out.push_back(json{{"tag", t.tag}, {"buildID", t.build_id},
                       {"createdAt", rfc3339_time(t.created)}});
  return out;
}

json list_json(const std::vector<templates::Template>& list) {
  json out = json::array();
  for (const auto& t : list) out.push_back(template_json(t));
  return out;
}

// {target|name, tags} of the tag routes.
Result<std::pair<std::string, std::vector<std::string>>> tags_request(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string() || it->get<std::string>().empty())
    return make_error(ErrorCode::kInvalidArgument, std::string(key) + " must be a non-empty string");
  auto t = j.find("tags");
  bool good = t != j.end() && t->is_array() && !t->empty();
  if (good)
    for (const auto& x : *t) good = good && x.is_string();
  if (!good) return make_error(ErrorCode::kInvalidArgument, "tags must be a non-empty array of strings");
  std::vector<std::string> tags;
  for (const auto& x : *t) tags.push_back(x.get<std::string>());
  return std::pair{it->get<std::string>(), tags};
}

json assigned_json(const std::string& build_id, const std::vector<std::string>& tags) {
  return json{{"buildID", build_id}, {"tags", tags}};
}

json link_json(bool present, const std::string& url) {
  json out{{"present", present}};
  if (!present) out["url"] = url;
  return out;
}

json status_json(const core::BuildStatusView& st) {
  json entries = json::array(), logs = json::array();
  for (const auto& l : st.lines) {
    entries.push_back(log_entry_json(l, ""));
    logs.push_back(l.message);
  }
  json out{{"templateID", st.template_id}, {"buildID", st.build_id}, {"status", st.status},
           {"logEntries", entries},        {"logs", logs}};
  if (st.status == "error") {
    json reason{{"message", st.reason}, {"logEntries", json::array()}};
    if (!st.step.empty()) reason["step"] = st.step;
    out["reason"] = reason;
  }
  return out;
}

}  // namespace

Api::~Api() = default;

asio::awaitable<void> Api::template_upload(http::Exchange& ex, const std::string& token) {
  if (ex.method() != verb::put) {
    co_await error_response(ex, 405, "an upload link takes PUT");
    co_return;
  }
  auto target = builds_ ? builds_->upload_path(token) : make_error(ErrorCode::kNotFound, "no template builds here");
  if (!target) {
    co_await error_response(ex, 404, target.error().message());
    co_return;
  }
  // Streamed to a file beside its final name; published whole, or not at all.
  const std::string part = *target + ".part-" + token.substr(0, 8);
  auto fd = sys::open_file(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (!fd) {
    co_await error_response(ex, fd.error());
    co_return;
  }
  std::vector<char> buf(1 << 16);
  uint64_t total = 0;
  std::optional<Error> failed;
  unsigned status = 500;
  for (;;) {
    auto n = co_await ex.read_some(std::span<char>(buf.data(), buf.size()));
    if (!n) {
      failed = std::move(n.error());
      status = 400;
      break;
    }
    if (*n == 0) break;
    total += *n;
    if (total > core::kMaxUploadBytes) {
      failed = Error(ErrorCode::kInvalidArgument, "the upload is larger than " + std::to_string(core::kMaxUploadBytes >> 20) +
                                                       " MiB, the limit for a COPY step's files");
      status = 413;
      break;
    }
    size_t off = 0;
    while (off < *n) {
      ssize_t w = ::write(fd->get(), buf.data() + off, *n - off);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        failed = Error::from_errno(errno, "write " + part);
        status = errno == ENOSPC || errno == EDQUOT ? 507 : 500;
        break;
      }
      off += static_cast<size_t>(w);
    }
    if (failed) break;
  }
  if (!failed && ::fsync(fd->get()) != 0) failed = Error::from_errno(errno, "fsync " + part);
  fd->reset();
  if (!failed) {
    if (auto s = builds_->finish_upload(token); !s) failed = std::move(s.error());
  }
  if (failed) {
    (void)sys::remove_file(part);
    co_await error_response(ex, status, failed->message());
    co_return;
  }
  co_await reply(ex, 200, "", "");
}

asio::awaitable<bool> Api::template_build_route(http::Exchange& ex, const std::string& path, const Caller& caller) {
  if (!builds_) co_return false;
  const auto m = ex.method();
  const bool v3 = path == "/v3/templates";
  if (!v3 && !path.starts_with("/templates") && !path.starts_with("/v2/templates/")) co_return false;
  auto parts = split_string(std::string_view(path).substr(1), '/');  // "templates", id, ...
  if (parts.size() >= 1 && parts[0] == "v2") parts.erase(parts.begin());

  // POST /v3/templates
  if (v3) {
    if (m != verb::post) co_return false;
    if (!caller.admin && !cfg_.team_template_builds) {
      co_await error_response(ex, 403,
                              "only an admin key may build templates on this gateway (a build's RUN steps run as root "
                              "on the host; coppiced --template-builds teams lets every team build)");
      co_return true;
    }
    auto body = co_await read_json_body(ex, cfg_.max_body_bytes);
    if (!body) {
      co_await error_response(ex, body.error());
      co_return true;
    }
    const json& j = *body;
    std::string name;
    if (auto it = j.find("name"); it != j.end() && it->is_string()) name = it->get<std::string>();
    else if (auto a = j.find("alias"); a != j.end() && a->is_string()) name = a->get<std::string>();
    if (name.empty()) {
      co_await error_response(ex, 400, "name must be a non-empty string");
      co_return true;
    }
    std::vector<std::string> tags;
    if (auto it = j.find("tags"); it != j.end() && !it->is_null()) {
      bool good = it->is_array();
      if (good)
        for (const auto& t : *it) good = good && t.is_string();
      if (!good) {
        co_await error_response(ex, 400, "tags must be an array of strings");
        co_return true;
      }
      for (const auto& t : *it) tags.push_back(t.get<std::string>());
    }
    int cpu = 0, mem = 0;
    std::vector<std::pair<std::string, int*>> fields;  // no array in a coroutine frame (g++ 12)
    fields.emplace_back("cpuCount", &cpu);
    fields.emplace_back("memoryMB", &mem);
    for (const auto& [key, out] : fields) {
      auto it = j.find(key);
      if (it == j.end() || it->is_null()) continue;
      if (!it->is_number_integer()) {
        co_await error_response(ex, 400, std::string(key) + " must be an integer");
        co_return true;
      }
      int64_t v = it->get<int64_t>();
      *out = v < 0 || v > (1 << 21) ? -1 : static_cast<int>(v);
    }
    auto made = builds_->request(caller.team, caller.admin, name, tags, cpu, mem);
    if (!made) {
      co_await error_response(ex, made.error());
      co_return true;
    }
    const std::string out = new_build_json(*made).dump();
    co_await reply_json(ex, 202, out);
    co_return true;
  }
  if (parts.empty() || parts[0] != "templates") co_return false;

  // GET /templates: the host's templates and the caller's own.
  if (parts.size() == 1) {
    if (m != verb::get) co_return false;
    std::vector<templates::Template> seen;
    for (auto& t : templates_.list())
      if (builds_->visible(t.name, caller.team)) seen.push_back(std::move(t));
    const std::string out = list_json(seen).dump(-1, ' ', false, json::error_handler_t::replace);
    co_await reply_json(ex, 200, out);
    co_return true;
  }
  // GET /templates/aliases/{alias}
  if (parts.size() == 3 && parts[1] == "aliases" && m == verb::get) {
    const std::string& alias = parts[2];
    if (!templates::valid_template_name(alias) || !templates_.get(alias) || !builds_->visible(alias, caller.team)) {
      co_await error_response(ex, 404, "template alias " + alias.substr(0, 128) + " not found");
      co_return true;
    }
    const std::string out = alias_json(alias, !builds_->owner(alias)).dump();
    co_await reply_json(ex, 200, out);
    co_return true;
  }
  // POST|DELETE /templates/tags
  if (parts.size() == 2 && parts[1] == "tags" && (m == verb::post || m == verb::delete_)) {
    auto body = co_await read_json_body(ex, cfg_.max_body_bytes);
    if (!body) {
      co_await error_response(ex, body.error());
      co_return true;
    }
    auto fields = tags_request(*body, m == verb::post ? "target" : "name");
    if (!fields) {
      co_await error_response(ex, fields.error());
      co_return true;
    }
    if (m == verb::post) {
      auto id = builds_->assign_tags(caller.team, fields->first, fields->second);
      if (!id) {
        co_await error_response(ex, id.error());
        co_return true;
      }
      const std::string out = assigned_json(*id, fields->second).dump();
      co_await reply_json(ex, 201, out);
    } else {
      auto s = builds_->remove_tags(caller.team, fields->first, fields->second);
      if (!s) co_await error_response(ex, s.error());
      else co_await reply(ex, 204, "", "");
    }
    co_return true;
  }
  if (parts.size() == 2 && (parts[1] == "reload" || parts[1] == "tags")) co_return false;
  const std::string& id = parts[1];
  // Another team's template is answered as if it were not there (an admin
  // key may still remove it, as it may any template).
  if (!builds_->visible(id, caller.team) && !(caller.admin && m == verb::delete_ && parts.size() == 2)) {
    co_await error_response(ex, 404, "template " + id.substr(0, 128) + " not found");
    co_return true;
  }
  // GET|DELETE /templates/{id}
  if (parts.size() == 2) {
    if (m == verb::get) {
      auto t = templates::valid_template_name(id) ? templates_.get(id)
                                                 : make_error(ErrorCode::kNotFound, "");
      if (!t) {
        co_await error_response(ex, 404, "template " + id.substr(0, 128) + " not found");
        co_return true;
      }
      const std::string out =
          detail_json(*t, !builds_->owner(id), builds_->tags(id)).dump(-1, ' ', false, json::error_handler_t::replace);
      co_await reply_json(ex, 200, out);
      co_return true;
    }
    // The owner removes its own template (the host's stay an admin's to remove).
    if (m == verb::delete_ && builds_->owner(id)) {
      auto removing = mgr_.remove_template(id);
      auto s = co_await std::move(removing);
      if (!s) {
        co_await error_response(ex, std::move(s.error()));
        co_return true;
      }
      builds_->forget(id);
      builds_->release(id);
      co_await reply(ex, 204, "", "");
      co_return true;
    }
    co_return false;
  }
  // GET /templates/{id}/tags
  if (parts.size() == 3 && parts[2] == "tags" && m == verb::get) {
    const std::string out = tags_json(builds_->tags(id)).dump();
    co_await reply_json(ex, 200, out);
    co_return true;
  }
  // GET /templates/{id}/files/{hash}
  if (parts.size() == 4 && parts[2] == "files" && m == verb::get) {
    auto link = builds_->upload_link(caller.team, id, parts[3]);
    if (!link) {
      co_await error_response(ex, link.error());
      co_return true;
    }
    std::string host = ex.header("Host");
    if (!plain_host(host)) host = cfg_.listen_host + ":" + std::to_string(cfg_.listen_port);
    const std::string url = std::string(tls_ ? "https" : "http") + "://" + host + "/template-uploads/" + link->token;
    const std::string out = link_json(link->present, url).dump();
    co_await reply_json(ex, 201, out);
    co_return true;
  }
  // POST /v2/templates/{id}/builds/{buildID}
  if (parts.size() == 4 && parts[2] == "builds" && m == verb::post) {
    auto body = co_await read_json_body(ex, cfg_.max_body_bytes);
    if (!body) {
      co_await error_response(ex, body.error());
      co_return true;
    }
    auto spec = translate_sdk_build(*body);
    if (!spec) {
      // The build fails too, so its status says why.
      builds_->fail(caller.team, id, parts[3], spec.error().message());
      co_await error_response(ex, 400, spec.error().message());
      co_return true;
    }
    auto s = builds_->start(caller.team, id, parts[3], std::move(*spec));
    if (!s) {
      co_await error_response(ex, s.error());
      co_return true;
    }
    co_await reply(ex, 202, "", "");
    co_return true;
  }
  // GET /templates/{id}/builds/{buildID}/status
  if (parts.size() == 5 && parts[2] == "builds" && parts[4] == "status" && m == verb::get) {
    size_t offset = 0;
    const auto& q = ex.query_params();
    if (auto it = q.find("logsOffset"); it != q.end() && !it->second.empty()) {
      auto [p, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), offset);
      if (ec != std::errc() || p != it->second.data() + it->second.size()) {
        co_await error_response(ex, 400, "logsOffset must be a non-negative integer");
        co_return true;
      }
    }
    auto st = builds_->status(caller.team, id, parts[3], offset);
    if (!st) {
      co_await error_response(ex, st.error());
      co_return true;
    }
    // The tree a finished build replaced goes once no sandbox runs on it.
    if (st->status == "ready" && builds_->take_ready(st->build_id)) co_await mgr_.collect_retired_templates();
    const std::string out = status_json(*st).dump(-1, ' ', false, json::error_handler_t::replace);
    co_await reply_json(ex, 200, out);
    co_return true;
  }
  co_return false;
}

}  // namespace coppice::api
