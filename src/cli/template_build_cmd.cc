// `coppice template build RECIPE [--templates DIR] [--name N] [--force]`:
// builds a template from a recipe (builder/recipe.h) on this machine, as
// root, into the templates root, then asks the gateway at --api-url to
// reload its templates. Steps and mmdebstrap's output go to stderr; the
// outcome's one line goes to stdout. Ctrl-C (or SIGTERM) stops the build,
// removes its directory and leaves the template in place untouched; the
// exit status is then 130.
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <memory>

#include "builder/builder.h"
#include "cli/cli.h"

namespace coppice::cli {
namespace {

std::atomic<bool> g_interrupted{false};

void on_signal(int) { g_interrupted.store(true); }

// SIGINT and SIGTERM only set the flag the build polls; no SA_RESTART, so a
// blocking wait returns early and sees it.
void catch_interrupts() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

std::string mib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

struct BuildArgs {
  std::string recipe;
  std::string templates = "/var/lib/coppice/templates";
  std::string name;
  std::string sources;
  bool force = false;
  bool verbose = false;
};

// Tells the gateway about the new template if one answers at --api-url and
// serves this templates root; otherwise says how to do it later.
void reload_gateway(const Globals& g, const builder::BuildResult& res) {
  auto r = Client(g).call(verb::post, "/templates/reload", "", std::chrono::minutes(5));
  if (!r) {
    std::fprintf(stderr,
                 "coppice: no reload: %s\n"
                 "  a gateway started later finds it; a running one needs `coppice template reload`\n",
                 r.error().message().c_str());
    return;
  }
  bool served = false;
  if (r->is_array()) {
    for (const auto& t : *r) {
      if (t.value("templateID", "") == res.name && t.value("path", "") == res.path) served = true;
    }
  }
  if (served) std::fprintf(stderr, "coppice: the gateway at %s reloaded and serves %s\n", g.api_url.c_str(), res.name.c_str());
  else
    std::fprintf(stderr,
                 "coppice: the gateway at %s reloaded, but does not serve %s from %s (its --templates differs)\n",
                 g.api_url.c_str(), res.name.c_str(), res.path.c_str());
}

int run_build(const Globals& g, const BuildArgs& a) {
  catch_interrupts();
  builder::BuildOptions o;
  o.recipe_path = a.recipe;
  o.templates_root = a.templates;
  o.name = a.name;
  o.force = a.force;
  o.verbose = a.verbose;
  o.host_sources = a.sources;
  o.cancel = &g_interrupted;
  o.progress = [](std::string_view line) {
    std::fprintf(stderr, "%.*s\n", static_cast<int>(line.size()), line.data());
    std::fflush(stderr);
  };
  auto res = builder::build_template(o);
  if (!res) {
    if (res.error().code() == ErrorCode::kCanceled) {
      std::fprintf(stderr, "coppice: %s; nothing was changed\n", res.error().message().c_str());
      return 130;
    }
    return fail(res.error().message());
  }
  if (res->cached) {
    std::printf("%s is up to date (recipe %s), nothing to do; --force rebuilds\n", res->path.c_str(),
                res->recipe_hash.substr(0, 12).c_str());
    return 0;
  }
  std::printf("built %s in %.1f s: %s (recipe %s)\n", res->path.c_str(), res->seconds, mib(res->size_bytes).c_str(),
              res->recipe_hash.substr(0, 12).c_str());
  if (!res->replaced_tree.empty())
    std::fprintf(stderr, "coppice: the replaced build is at %s until no sandbox runs on it (the gateway removes it)\n",
                 res->replaced_tree.c_str());
  std::fflush(stdout);
  reload_gateway(g, *res);
  return 0;
}

}  // namespace

void add_template_build_command(CLI::App& group, Globals& g) {
  auto a = std::make_shared<BuildArgs>();
  auto* build = group.add_subcommand("build", "build a template from a recipe (Debian packages via mmdebstrap; as root)");
  build->add_option("recipe", a->recipe, "the recipe file (see templates/recipes/)")->required();
  build->add_option("--templates", a->templates, "the templates root (default /var/lib/coppice/templates)");
  build->add_option("--name", a->name, "the template's name (default: the recipe's `name`, else its file name)");
  build->add_flag("--force", a->force, "rebuild even if the template was built from the same recipe");
  build->add_option("--sources", a->sources,
                    "apt sources for recipes without `sources` (default: the host's, "
                    "/etc/apt/sources.list.d/debian.sources)");
  build->add_flag("--verbose", a->verbose, "show apt's own output too");
  build->fallthrough();
  build->callback([&g, a] { g.run = [&g, a] { return run_build(g, *a); }; });
}

}  // namespace coppice::cli
