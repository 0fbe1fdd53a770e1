// Snapshots and fork from the command line:
//   sandbox snapshot ID [--name NAME] [--no-memory]   keeps its files (and processes); prints the snapshot id
//   sandbox fork ID [--count N] [--timeout S]         starts N sandboxes from it; prints their ids
//   snapshot ls [--sandbox ID] [--json]               the team's snapshots
//   snapshot rm ID|NAME                               removes one (its files go with the last sandbox on them)
#include <cstdio>

#include "cli/cli.h"

namespace coppice::cli {

namespace {

struct SnapshotOptions {
  std::string id, name, sandbox;
  bool no_memory = false, json = false;
  int count = 1, timeout_s = 0;
};

int sandbox_snapshot(const Globals& g, const SnapshotOptions& o) {
  json body = json::object();
  if (!o.name.empty()) body["name"] = o.name;
  if (o.no_memory) body["memory"] = false;
  auto r = Client(g).call(verb::post, "/sandboxes/" + url_encode(o.id) + "/snapshots", body.dump(),
                          std::chrono::seconds(300));
  if (!r) return fail(r.error().message());
  std::printf("%s\n", r->value("snapshotID", std::string()).c_str());
  return 0;
}

int sandbox_fork(const Globals& g, const SnapshotOptions& o) {
  json body{{"count", o.count}};
  if (o.timeout_s > 0) body["timeout"] = o.timeout_s;
  auto r = Client(g).call(verb::post, "/sandboxes/" + url_encode(o.id) + "/fork", body.dump(),
                          std::chrono::seconds(600));
  if (!r) return fail(r.error().message());
  if (!r->is_array()) return fail("the gateway's fork answer is not a JSON array");
  int failed = 0;
  for (const auto& child : *r) {
    if (auto s = child.find("sandbox"); s != child.end() && s->is_object()) {
      std::printf("%s\n", s->value("sandboxID", std::string()).c_str());
    } else {
      ++failed;
      const json e = child.value("error", json::object());
      std::fprintf(stderr, "coppice: a child failed: %s (HTTP %d)\n", e.value("message", std::string("?")).c_str(),
                   e.value("code", 0));
    }
  }
  return failed ? 1 : 0;
}

int snapshot_list(const Globals& g, const SnapshotOptions& o) {
  std::string target = "/snapshots?limit=1000";
  if (!o.sandbox.empty()) target += "&sandboxID=" + url_encode(o.sandbox);
  auto r = Client(g).call(verb::get, target);
  if (!r) return fail(r.error().message());
  if (!r->is_array()) return fail("the gateway's snapshot list is not a JSON array");
  if (o.json) {
    std::printf("%s\n", r->dump(2).c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& s : *r) {
    rows.push_back({s.value("snapshotID", std::string()), s.value("name", std::string()),
                    s.value("sandboxID", std::string()), s.value("memory", false) ? "yes" : "no",
                    std::to_string(s.value("diskBytes", uint64_t{0})), s.value("createdAt", std::string())});
  }
  print_table({"ID", "NAME", "FROM SANDBOX", "MEMORY", "DISK BYTES", "CREATED"}, rows);
  return 0;
}

int snapshot_remove(const Globals& g, const std::string& ref) {
  auto r = Client(g).call(verb::delete_, "/snapshots/" + url_encode(ref));
  if (!r) return fail(r.error().message());
  return 0;
}

}  // namespace

void add_snapshot_commands(CLI::App& app, Globals& g) {
  auto o = std::make_shared<SnapshotOptions>();
  CLI::App* sandbox = nullptr;
  for (auto* sub : app.get_subcommands([](CLI::App* a) { return a->get_name() == "sandbox"; })) sandbox = sub;
  if (sandbox) {
    auto* snap = sandbox->add_subcommand("snapshot", "keep a running sandbox's files (and processes); prints the snapshot id");
    snap->add_option("id", o->id, "sandbox id")->required();
    snap->add_option("--name", o->name, "a name for it (moves from an older snapshot of the team's that has it)");
    snap->add_flag("--no-memory", o->no_memory, "files only: sandboxes started from it boot afresh");
    snap->fallthrough();
    snap->callback([&g, o] { g.run = [&g, o] { return sandbox_snapshot(g, *o); }; });
    auto* fork = sandbox->add_subcommand("fork", "start copies of a running sandbox (files and processes); prints their ids");
    fork->add_option("id", o->id, "sandbox id")->required();
    fork->add_option("--count", o->count, "how many")->check(CLI::Range(1, 100));
    fork->add_option("--timeout", o->timeout_s, "their timeout in seconds (default 15, as on E2B)")->check(CLI::Range(1, 86400));
    fork->fallthrough();
    fork->callback([&g, o] { g.run = [&g, o] { return sandbox_fork(g, *o); }; });
  }
  auto* group = app.add_subcommand("snapshot", "list and remove your team's snapshots");
  group->require_subcommand(1);
  group->fallthrough();
  auto* ls = group->add_subcommand("ls", "list the snapshots");
  ls->alias("list");
  ls->add_option("--sandbox", o->sandbox, "only those taken from this sandbox");
  ls->add_flag("--json", o->json, "print the gateway's JSON instead of a table");
  ls->fallthrough();
  ls->callback([&g, o] { g.run = [&g, o] { return snapshot_list(g, *o); }; });
  auto* rm = group->add_subcommand("rm", "remove a snapshot");
  rm->alias("delete");
  rm->add_option("ref", o->id, "snapshot id or name")->required();
  rm->fallthrough();
  rm->callback([&g, o] { g.run = [&g, o] { return snapshot_remove(g, o->id); }; });
}

}  // namespace coppice::cli
