// `coppice team ...` and `coppice key ...`: teams and their API keys.
//   team list [--json]                      every team (admin key)
//   team create NAME                        a new team (admin key)
//   team delete NAME                        a team and its keys (admin key)
//   key list [--team T] [--json]            the keys of T, or of the caller's own team
//   key create NAME [--team T] [--admin]    a new key, printed once
//   key delete ID [--team T]                removes a key
#include <cstdio>

#include "cli/cli.h"

namespace coppice::cli {

namespace {

struct TeamOptions {
  bool json = false;
  bool admin = false;
  std::string name;
  std::string team;  // "" for the caller's own team (/api-keys)
};

// Where the keys of `team` are: the admin API for a named team, E2B's
// /api-keys for the caller's own.
std::string keys_path(const std::string& team) {
  return team.empty() ? "/api-keys" : "/admin/teams/" + url_encode(team) + "/keys";
}

int team_list(const Globals& g, bool as_json) {
  auto r = Client(g).call(verb::get, "/admin/teams");
  if (!r) return fail(r.error().message());
  if (!r->is_array()) return fail("the gateway's team list is not a JSON array");
  if (as_json) {
    std::printf("%s\n", r->dump(2).c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& t : *r) rows.push_back({t.value("name", std::string()), t.value("createdAt", std::string())});
  print_table({"TEAM", "CREATED"}, rows);
  return 0;
}

int team_create(const Globals& g, const std::string& name) {
  auto r = Client(g).call(verb::post, "/admin/teams", json{{"name", name}}.dump());
  if (!r) return fail(r.error().message());
  std::printf("%s\n", r->value("name", name).c_str());
  return 0;
}

int team_delete(const Globals& g, const std::string& name) {
  auto r = Client(g).call(verb::delete_, "/admin/teams/" + url_encode(name));
  if (!r) return fail(r.error().message());
  return 0;
}

int key_list(const Globals& g, const std::string& team, bool as_json) {
  auto r = Client(g).call(verb::get, keys_path(team));
  if (!r) return fail(r.error().message());
  if (!r->is_array()) return fail("the gateway's key list is not a JSON array");
  if (as_json) {
    std::printf("%s\n", r->dump(2).c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& k : *r) {
    rows.push_back({k.value("id", std::string()), k.value("name", std::string()), k.value("team", std::string()),
                    k.value("admin", false) ? "yes" : "no", k.value("createdAt", std::string())});
  }
  print_table({"ID", "NAME", "TEAM", "ADMIN", "CREATED"}, rows);
  return 0;
}

int key_create(const Globals& g, const std::string& team, const std::string& name, bool admin) {
  json body{{"name", name}};
  if (admin) body["admin"] = true;
  auto r = Client(g).call(verb::post, keys_path(team), body.dump());
  if (!r) return fail(r.error().message());
  // The key itself on stdout (for scripts); what it is on stderr.
  std::fprintf(stderr, "key %s (id %s) of team %s; it is not shown again\n", r->value("name", name).c_str(),
               r->value("id", std::string()).c_str(), r->value("team", team).c_str());
  std::printf("%s\n", r->value("key", std::string()).c_str());
  return 0;
}

int key_delete(const Globals& g, const std::string& team, const std::string& id) {
  auto r = Client(g).call(verb::delete_, keys_path(team) + "/" + url_encode(id));
  if (!r) return fail(r.error().message());
  return 0;
}

}  // namespace

void add_team_commands(CLI::App& app, Globals& g) {
  auto o = std::make_shared<TeamOptions>();
  auto* team = app.add_subcommand("team", "list, create and delete teams (admin key)");
  team->require_subcommand(1);
  team->fallthrough();
  auto* tl = team->add_subcommand("list", "list the teams");
  tl->add_flag("--json", o->json, "print the gateway's JSON instead of a table");
  tl->fallthrough();
  tl->callback([&g, o] { g.run = [&g, o] { return team_list(g, o->json); }; });
  auto* tc = team->add_subcommand("create", "create a team");
  tc->add_option("name", o->name, "team name (a-z, 0-9, '-', '_')")->required();
  tc->fallthrough();
  tc->callback([&g, o] { g.run = [&g, o] { return team_create(g, o->name); }; });
  auto* td = team->add_subcommand("delete", "delete a team and its keys (it must have no sandboxes)");
  td->add_option("name", o->name, "team name")->required();
  td->fallthrough();
  td->callback([&g, o] { g.run = [&g, o] { return team_delete(g, o->name); }; });

  auto* key = app.add_subcommand("key", "list, create and delete API keys");
  key->require_subcommand(1);
  key->fallthrough();
  auto* kl = key->add_subcommand("list", "list the keys of a team (default: your own)");
  kl->add_option("--team", o->team, "the team (admin key)");
  kl->add_flag("--json", o->json, "print the gateway's JSON instead of a table");
  kl->fallthrough();
  kl->callback([&g, o] { g.run = [&g, o] { return key_list(g, o->team, o->json); }; });
  auto* kc = key->add_subcommand("create", "create a key and print it (once)");
  kc->add_option("name", o->name, "a name for the key")->required();
  kc->add_option("--team", o->team, "the team (admin key; default: your own)");
  kc->add_flag("--admin", o->admin, "an admin key (admin key)");
  kc->fallthrough();
  kc->callback([&g, o] { g.run = [&g, o] { return key_create(g, o->team, o->name, o->admin); }; });
  auto* kd = key->add_subcommand("delete", "delete a key by its id");
  kd->add_option("id", o->name, "the key's id (key list shows it)")->required();
  kd->add_option("--team", o->team, "the team (admin key; default: your own)");
  kd->fallthrough();
  kd->callback([&g, o] { g.run = [&g, o] { return key_delete(g, o->team, o->name); }; });
}

}  // namespace coppice::cli
