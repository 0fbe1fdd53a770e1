// `coppice volume ...`: the caller's team's volumes (volumes.h in core).
//   volume list [--json]                    the team's volumes
//   volume create NAME [--size-mb N]        a new volume; prints its id
//   volume delete ID                        removes it and its files (not while mounted)
//   volume mount SANDBOX NAME PATH          mounts it in a running sandbox
//   volume unmount SANDBOX NAME             unmounts it from that sandbox
#include <cstdio>

#include "cli/cli.h"

namespace coppice::cli {

namespace {

struct VolumeOptions {
  bool json = false;
  std::string name, sandbox, path;
  int size_mb = 0;  // 0: the gateway's default
};

int volume_list(const Globals& g, bool as_json) {
  auto r = Client(g).call(verb::get, "/volumes");
  if (!r) return fail(r.error().message());
  if (!r->is_array()) return fail("the gateway's volume list is not a JSON array");
  if (as_json) {
    std::printf("%s\n", r->dump(2).c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& v : *r) {
    rows.push_back({v.value("volumeID", std::string()), v.value("name", std::string()),
                    std::to_string(v.value("sizeMB", 0))});
  }
  print_table({"ID", "NAME", "SIZE MB"}, rows);
  return 0;
}

int volume_create(const Globals& g, const std::string& name, int size_mb) {
  json body{{"name", name}};
  if (size_mb > 0) body["sizeMB"] = size_mb;
  auto r = Client(g).call(verb::post, "/volumes", body.dump());
  if (!r) return fail(r.error().message());
  std::printf("%s\n", r->value("volumeID", std::string()).c_str());
  return 0;
}

int volume_delete(const Globals& g, const std::string& id) {
  auto r = Client(g).call(verb::delete_, "/volumes/" + url_encode(id));
  if (!r) return fail(r.error().message());
  return 0;
}

int volume_mount(const Globals& g, const std::string& sandbox, const std::string& name, const std::string& path) {
  auto r = Client(g).call(verb::post, "/sandboxes/" + url_encode(sandbox) + "/volumes",
                          json{{"name", name}, {"path", path}}.dump());
  if (!r) return fail(r.error().message());
  return 0;
}

int volume_unmount(const Globals& g, const std::string& sandbox, const std::string& name) {
  auto r = Client(g).call(verb::delete_, "/sandboxes/" + url_encode(sandbox) + "/volumes/" + url_encode(name));
  if (!r) return fail(r.error().message());
  return 0;
}

}  // namespace

void add_volume_commands(CLI::App& app, Globals& g) {
  auto o = std::make_shared<VolumeOptions>();
  auto* vol = app.add_subcommand("volume", "list, create, delete, mount and unmount your team's volumes");
  vol->require_subcommand(1);
  vol->fallthrough();
  auto* vl = vol->add_subcommand("list", "list the volumes");
  vl->add_flag("--json", o->json, "print the gateway's JSON instead of a table");
  vl->fallthrough();
  vl->callback([&g, o] { g.run = [&g, o] { return volume_list(g, o->json); }; });
  auto* vc = vol->add_subcommand("create", "create a volume and print its id");
  vc->add_option("name", o->name, "volume name (A-Z, a-z, 0-9, '.', '-', '_')")->required();
  vc->add_option("--size-mb", o->size_mb, "its cap in MiB (default: the gateway's --default-volume-mb)")
      ->check(CLI::Range(1, 1 << 24));
  vc->fallthrough();
  vc->callback([&g, o] { g.run = [&g, o] { return volume_create(g, o->name, o->size_mb); }; });
  auto* vd = vol->add_subcommand("delete", "delete a volume and its files (no sandbox may have it mounted)");
  vd->add_option("id", o->name, "the volume's id (volume list shows it)")->required();
  vd->fallthrough();
  vd->callback([&g, o] { g.run = [&g, o] { return volume_delete(g, o->name); }; });
  auto* vm = vol->add_subcommand("mount", "mount a volume in a running sandbox");
  vm->add_option("sandbox", o->sandbox, "sandbox id")->required();
  vm->add_option("name", o->name, "volume name")->required();
  vm->add_option("path", o->path, "absolute path in the sandbox")->required();
  vm->fallthrough();
  vm->callback([&g, o] { g.run = [&g, o] { return volume_mount(g, o->sandbox, o->name, o->path); }; });
  auto* vu = vol->add_subcommand("unmount", "unmount a volume from a running sandbox");
  vu->add_option("sandbox", o->sandbox, "sandbox id")->required();
  vu->add_option("name", o->name, "volume name")->required();
  vu->fallthrough();
  vu->callback([&g, o] { g.run = [&g, o] { return volume_unmount(g, o->sandbox, o->name); }; });
}

}  // namespace coppice::cli
