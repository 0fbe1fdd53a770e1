// `coppice pool ...`: the gateway's warm pools.
//   list [--json]                  every pool: target, available, in use, filling, hits, misses
//   warm TEMPLATE COUNT [--wait]   keep COUNT sandboxes of TEMPLATE ready (--wait: until they are)
//   drain TEMPLATE                 target 0, ready sandboxes removed
#include <unistd.h>

#include <cstdio>

#include "cli/cli.h"

namespace coppice::cli {

namespace {

std::vector<std::string> pool_row(const json& p) {
  auto num = [&](const char* k) { return p.contains(k) && p[k].is_number() ? std::to_string(p[k].get<int64_t>()) : "?"; };
  return {p.value("template", std::string()), num("target"), num("available"), num("inUse"), num("filling"),
          num("hits"), num("misses")};
}

const std::vector<std::string> kHeader = {"TEMPLATE", "TARGET", "AVAILABLE", "IN USE", "FILLING", "HITS", "MISSES"};

int list_cmd(const Globals& g, bool as_json) {
  auto r = Client(g).call(verb::get, "/pools");
  if (!r) return fail(r.error().message());
  if (!r->is_array()) return fail("the gateway's pool list is not a JSON array");
  if (as_json) {
    std::printf("%s\n", r->dump(2).c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& p : *r) rows.push_back(pool_row(p));
  print_table(kHeader, rows);
  return 0;
}

// Progress on stderr while the pool fills; gives up after `wait_s` seconds.
int wait_full(const Globals& g, const std::string& tmpl, int want, int wait_s) {
  int last = -1;
  for (int i = 0; i < wait_s * 10; ++i) {
    auto r = Client(g).call(verb::get, "/pools");
    if (!r) return fail(r.error().message());
    for (const auto& p : *r) {
      if (p.value("template", std::string()) != tmpl) continue;
      int avail = p.value("available", 0);
      if (avail != last) std::fprintf(stderr, "\r%s: %d/%d ready", tmpl.c_str(), avail, want);
      last = avail;
      if (avail >= want) {
        std::fprintf(stderr, "\n");
        return 0;
      }
    }
    ::usleep(100 * 1000);
  }
  std::fprintf(stderr, "\n");
  return fail("pool " + tmpl + " did not fill within " + std::to_string(wait_s) + " s (see the gateway's log)");
}

int warm_cmd(const Globals& g, const std::string& tmpl, int count, bool wait, int wait_s) {
  json body{{"count", count}};
  auto r = Client(g).call(verb::post, "/pools/" + url_encode(tmpl) + "/warm", body.dump());
  if (!r) return fail(r.error().message());
  print_table(kHeader, {pool_row(*r)});
  return wait ? wait_full(g, tmpl, count, wait_s) : 0;
}

int drain_cmd(const Globals& g, const std::string& tmpl) {
  auto r = Client(g).call(verb::post, "/pools/" + url_encode(tmpl) + "/drain", "", std::chrono::minutes(5));
  if (!r) return fail(r.error().message());
  print_table(kHeader, {pool_row(*r)});
  return 0;
}

struct PoolOptions {
  bool json = false;
  std::string tmpl;
  int count = 0;
  bool wait = false;
  int wait_s = 300;
};

}  // namespace

void add_pool_commands(CLI::App& app, Globals& g) {
  auto o = std::make_shared<PoolOptions>();
  auto* group = app.add_subcommand("pool", "list, warm and drain the warm pools");
  group->require_subcommand(1);
  group->fallthrough();

  auto* list = group->add_subcommand("list", "list the pools");
  list->add_flag("--json", o->json, "print the gateway's JSON instead of a table");
  list->fallthrough();
  list->callback([&g, o] { g.run = [&g, o] { return list_cmd(g, o->json); }; });

  auto* warm = group->add_subcommand("warm", "keep COUNT sandboxes of TEMPLATE ready");
  warm->add_option("template", o->tmpl, "template name")->required();
  // The gateway checks the range and says why.
  warm->add_option("count", o->count, "how many to keep ready")->required();
  warm->add_flag("--wait", o->wait, "wait until that many are ready, showing progress");
  warm->add_option("--wait-timeout", o->wait_s, "seconds --wait waits at most")->capture_default_str();
  warm->fallthrough();
  warm->callback([&g, o] { g.run = [&g, o] { return warm_cmd(g, o->tmpl, o->count, o->wait, o->wait_s); }; });

  auto* drain = group->add_subcommand("drain", "stop keeping sandboxes of TEMPLATE ready and remove the ready ones");
  drain->add_option("template", o->tmpl, "template name")->required();
  drain->fallthrough();
  drain->callback([&g, o] { g.run = [&g, o] { return drain_cmd(g, o->tmpl); }; });
}

}  // namespace coppice::cli
