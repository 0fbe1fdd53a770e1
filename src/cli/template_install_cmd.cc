// `coppice template install DIR [--name N] [--templates ROOT]`: as root,
// copies a template a user built rootless (DIR is <its root>/<name>) into
// the gateway's templates root with its owners shifted back
// (builder/rootless_install.h), then asks the gateway to reload.
#include <cstdio>
#include <memory>

#include "builder/rootless_install.h"
#include "cli/cli.h"

namespace coppice::cli {

void add_template_install_command(CLI::App& group, Globals& g) {
  auto o = std::make_shared<builder::RootlessInstallOptions>();
  auto* install = group.add_subcommand(
      "install", "as root: take a template built rootless (its directory) into the gateway's templates root");
  install->add_option("dir", o->from, "the rootless build's template directory (e.g. ~NAME/.local/share/coppice/templates/app)")
      ->required();
  install->add_option("--name", o->name, "the template's name (default: the directory's name)");
  install->add_option("--templates", o->templates_root, "the gateway's templates root (default /var/lib/coppice/templates)");
  install->fallthrough();
  install->callback([&g, o] {
    g.run = [&g, o] {
      o->progress = [](std::string_view line) {
        std::fprintf(stderr, "%.*s\n", static_cast<int>(line.size()), line.data());
        std::fflush(stderr);
      };
      auto res = builder::install_rootless_template(*o);
      if (!res) return fail(res.error().message());
      std::printf("installed %s (built by %s) in %.1f s: %llu entries\n", res->path.c_str(), res->owner.c_str(),
                  res->seconds, static_cast<unsigned long long>(res->entries));
      announce_installed(g, res->name, res->path, res->replaced_tree);
      return 0;
    };
  });
}

}  // namespace coppice::cli
