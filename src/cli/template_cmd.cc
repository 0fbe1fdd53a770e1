// `coppice template ...`: the gateway's template registry.
//   list [--json]     GET /templates, as a table or the gateway's JSON
//   reload [--json]   POST /templates/reload: rescan the templates root now
//   build RECIPE      build a template on this machine (template_build_cmd.cc)
//   install DIR       take a rootless build into the gateway's templates root (template_install_cmd.cc)
//   rm NAME           DELETE /templates/NAME (refused while sandboxes or a pool
//                     use it), then drop unpacked images no template needs;
//                     with --rootless, from the user's own rootless templates
//                     root instead (no gateway involved)
#include <unistd.h>

#include <cstdio>

#include "builder/image_build.h"
#include "builder/rootless.h"
#include "templates/templates.h"
#include "cli/cli.h"
#include "sys/fsutil.h"

namespace coppice::cli {

namespace {

std::string human_size(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(kUnits)) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  else std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[u]);
  return buf;
}

std::string str_field(const json& j, const char* k) {
  auto it = j.find(k);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

// A count where 0 means "the gateway's default".
std::string count_field(const json& j, const char* k, const char* unit) {
  auto it = j.find(k);
  if (it == j.end() || !it->is_number_integer() || it->get<int64_t>() <= 0) return "default";
  return std::to_string(it->get<int64_t>()) + unit;
}

int print_templates(const json& list, bool as_json) {
  if (!list.is_array()) return fail("the gateway's template list is not a JSON array");
  if (as_json) {
    std::printf("%s\n", list.dump(2).c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& t : list) {
    auto size = t.find("sizeBytes");
    rows.push_back({str_field(t, "templateID"), str_field(t, "backend"), count_field(t, "cpuCount", ""),
                    count_field(t, "memoryMB", " MiB"),
                    size != t.end() && size->is_number_unsigned() ? human_size(size->get<uint64_t>()) : "",
                    str_field(t, "source"), str_field(t, "buildID").substr(0, 12)});
  }
  print_table({"NAME", "BACKEND", "CPU", "MEMORY", "SIZE", "SOURCE", "BUILD"}, rows);
  return 0;
}

// A rootless build's files belong to the user's subordinate ids too: they
// are removed from inside a user namespace of the user's ids, as they were
// made.
template <typename Args>
int remove_rootless(const Args& a) {
  if (::geteuid() == 0) return fail("--rootless as root: run it as the user whose build it is");
  if (!templates::valid_template_name(a.name)) return fail("\"" + a.name + "\" is not a template name");
  const std::string root = a.templates_given ? a.templates : builder::rootless_templates_root();
  const std::string dir = sys::join_path(root, a.name);
  if (!sys::path_exists(dir)) return fail("no template " + a.name + " in " + root);
  auto ids = builder::rootless_ids_for(::getuid());
  if (!ids) return fail(ids.error().message());
  if (auto s = builder::enter_build_userns(*ids); !s) return fail(s.error().message());
  auto lock = builder::CacheLock::take(root);
  if (!lock) return fail(lock.error().message());
  if (auto s = sys::remove_tree(dir); !s) return fail(s.error().message());
  std::printf("removed %s\n", dir.c_str());
  builder::collect_image_cache(root, [](std::string_view line) {
    std::fprintf(stderr, "%.*s\n", static_cast<int>(line.size()), line.data());
  });
  return 0;
}

}  // namespace

void add_template_commands(CLI::App& app, Globals& g) {
  auto* group = app.add_subcommand("template", "build templates, list and reload the gateway's");
  group->require_subcommand(1);
  group->fallthrough();

  auto as_json = std::make_shared<bool>(false);
  auto* list = group->add_subcommand("list", "list the templates (name, backend, resources, size, build)");
  list->add_flag("--json", *as_json, "print the gateway's JSON instead of a table");
  list->fallthrough();
  list->callback([&g, as_json] {
    g.run = [&g, as_json] {
      auto r = Client(g).call(verb::get, "/templates");
      if (!r) return fail(r.error().message());
      return print_templates(*r, *as_json);
    };
  });

  auto* reload = group->add_subcommand("reload", "rescan the templates root (new templates appear, removed ones go)");
  reload->add_flag("--json", *as_json, "print the gateway's JSON instead of a table");
  reload->fallthrough();
  reload->callback([&g, as_json] {
    g.run = [&g, as_json] {
      auto r = Client(g).call(verb::post, "/templates/reload", "", std::chrono::minutes(5));
      if (!r) return fail(r.error().message());
      return print_templates(*r, *as_json);
    };
  });

  struct RmArgs {
    std::string name;
    std::string templates = "/var/lib/coppice/templates";
    bool rootless = false;
    bool templates_given = false;
  };
  auto rm_args = std::make_shared<RmArgs>();
  auto* rm = group->add_subcommand("rm", "remove a template (refused while sandboxes or a pool use it)");
  rm->add_option("name", rm_args->name, "the template")->required();
  rm->add_option("--templates", rm_args->templates,
                 "the templates root, whose unused unpacked images are removed too (default /var/lib/coppice/templates)");
  rm->add_flag("--rootless", rm_args->rootless,
               "remove a rootless build from your own templates root (~/.local/share/coppice/templates)");
  auto* rm_templates = rm->get_option("--templates");
  rm->fallthrough();
  rm->callback([&g, rm_args, rm_templates] {
    rm_args->templates_given = rm_templates->count() > 0;
    g.run = [&g, rm_args] {
      if (rm_args->rootless) return remove_rootless(*rm_args);
      auto r = Client(g).call(verb::delete_, "/templates/" + url_encode(rm_args->name), "", std::chrono::minutes(5));
      if (!r) return fail(r.error().message());
      std::printf("removed %s\n", rm_args->name.c_str());
      // Under the layer cache's lock: a build in progress may be about to
      // link an image no template names yet.
      if (::geteuid() == 0 && sys::path_exists(builder::cache_layout(rm_args->templates))) {
        if (auto lock = builder::CacheLock::take(rm_args->templates)) {
          builder::collect_image_cache(rm_args->templates, [](std::string_view line) {
            std::fprintf(stderr, "%.*s\n", static_cast<int>(line.size()), line.data());
          });
        }
      }
      return 0;
    };
  });

  add_template_build_command(*group, g);
  add_template_install_command(*group, g);
}

}  // namespace coppice::cli
