// `coppice sandbox ...`: sandboxes on the gateway.
//   list [--json]                          running and paused sandboxes, newest first
//   create [--template T] [--timeout S]    prints the new sandbox's id
//   kill ID...                             kills each; fails if any could not be killed
#include <strings.h>

#include <cstdio>
#include <optional>

#include "cli/cli.h"

namespace coppice::cli {

namespace {

std::string str_field(const json& j, const char* k) {
  auto it = j.find(k);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

// Every page of GET /v2/sandboxes, following X-Next-Token.
Result<json> list_all(const Globals& g) {
  json all = json::array();
  std::string token;
  for (int page = 0; page < 10000; ++page) {
    std::string target = "/v2/sandboxes?state=running,paused&limit=1000";
    if (!token.empty()) target += "&nextToken=" + url_encode(token);
    std::vector<std::pair<std::string, std::string>> headers;
    auto r = Client(g).call(verb::get, target, "", std::chrono::seconds(30), &headers);
    if (!r) return std::unexpected(r.error());
    if (!r->is_array()) return make_error(ErrorCode::kInternal, "the gateway's sandbox list is not a JSON array");
    for (auto& s : *r) all.push_back(std::move(s));
    token.clear();
    for (const auto& [k, v] : headers)
      if (strcasecmp(k.c_str(), "X-Next-Token") == 0) token = v;
    if (token.empty()) break;
  }
  return all;
}

int list_cmd(const Globals& g, bool as_json) {
  auto r = list_all(g);
  if (!r) return fail(r.error().message());
  if (as_json) {
    std::printf("%s\n", r->dump(2).c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& s : *r)
    rows.push_back({str_field(s, "sandboxID"), str_field(s, "templateID"), str_field(s, "state"),
                    str_field(s, "startedAt"), str_field(s, "endAt")});
  print_table({"ID", "TEMPLATE", "STATE", "STARTED", "ENDS"}, rows);
  return 0;
}

int create_cmd(const Globals& g, const std::string& tmpl, std::optional<int> timeout_s, bool as_json) {
  json body = json::object();
  if (!tmpl.empty()) body["templateID"] = tmpl;
  if (timeout_s) body["timeout"] = *timeout_s;
  auto r = Client(g).call(verb::post, "/sandboxes", body.dump(), std::chrono::minutes(2));
  if (!r) return fail(r.error().message());
  std::string id = str_field(*r, "sandboxID");
  if (id.empty()) return fail("the gateway's answer has no sandboxID");
  if (as_json) std::printf("%s\n", r->dump(2).c_str());
  else std::printf("%s\n", id.c_str());
  return 0;
}

int kill_cmd(const Globals& g, const std::vector<std::string>& ids) {
  int status = 0;
  for (const auto& id : ids) {
    auto r = Client(g).call(verb::delete_, "/sandboxes/" + url_encode(id), "", std::chrono::minutes(1));
    if (!r) status = fail(r.error().message());
    else std::printf("killed %s\n", id.c_str());
  }
  return status;
}

// The options of the sandbox subcommands, alive until the chosen one runs.
struct SandboxOptions {
  bool list_json = false;
  bool create_json = false;
  std::string tmpl;
  std::optional<int> timeout_s;
  std::vector<std::string> ids;
};

}  // namespace

void add_sandbox_commands(CLI::App& app, Globals& g) {
  auto o = std::make_shared<SandboxOptions>();
  auto* group = app.add_subcommand("sandbox", "list, create and kill sandboxes");
  group->require_subcommand(1);
  group->fallthrough();

  auto* list = group->add_subcommand("list", "list running and paused sandboxes");
  list->add_flag("--json", o->list_json, "print the gateway's JSON instead of a table");
  list->fallthrough();
  list->callback([&g, o] { g.run = [&g, o] { return list_cmd(g, o->list_json); }; });

  auto* create = group->add_subcommand("create", "create a sandbox and print its id");
  create->add_option("--template,-t", o->tmpl, "template name (default: the gateway's default template)");
  // The gateway checks the range (it knows its own maximum) and says why.
  create->add_option("--timeout", o->timeout_s, "seconds until the sandbox is killed (default: the gateway's)");
  create->add_flag("--json", o->create_json, "print the gateway's JSON instead of the id");
  create->fallthrough();
  create->callback([&g, o] { g.run = [&g, o] { return create_cmd(g, o->tmpl, o->timeout_s, o->create_json); }; });

  auto* kill = group->add_subcommand("kill", "kill sandboxes");
  kill->add_option("id", o->ids, "sandbox ids")->required();
  kill->fallthrough();
  kill->callback([&g, o] { g.run = [&g, o] { return kill_cmd(g, o->ids); }; });
}

}  // namespace coppice::cli
