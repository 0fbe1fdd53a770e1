// `coppice template build RECIPE [--templates DIR] [--name N] [--force]`:
// builds a template from a recipe (builder/recipe.h) on this machine, as
// root, into the templates root, then asks the gateway at --api-url to
// reload its templates. With --image REF, --oci-layout DIR[:TAG],
// --docker-archive TAR or --dockerfile FILE [--context DIR] instead of a
// recipe it builds from an OCI image or a Dockerfile (builder/image_build.h). Steps and mmdebstrap's output go to stderr; the
// outcome's one line goes to stdout. Ctrl-C (or SIGTERM) stops the build,
// removes its directory and leaves the template in place untouched; the
// exit status is then 130.
//
// As a user other than root (or with --rootless) an image or Dockerfile
// build runs in a user namespace of that user's ids (builder/rootless.h)
// into a templates root of its own; root takes the result into the
// gateway's with `coppice template install` (template_install_cmd.cc).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <memory>

#include "builder/builder.h"
#include "builder/image_build.h"
#include "builder/rootless.h"
#include "cli/cli.h"
#include "common/strings.h"
#include "sys/fsutil.h"

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

struct BuildArgs {
  std::string recipe;
  std::string image, oci_layout, docker_archive, dockerfile, context, network = "none", max_size;
  std::vector<std::string> build_args;
  bool insecure = false;
  std::string templates = "/var/lib/coppice/templates";
  std::string name;
  std::string sources;
  bool force = false;
  bool verbose = false;
  bool rootless = false;          // --rootless, or not root
  bool templates_given = false;   // --templates was on the command line
};

}  // namespace

// Tells the gateway about the new template if one answers at --api-url and
// serves this templates root; otherwise says how to do it later.
void reload_gateway(const Globals& g, const std::string& name, const std::string& path) {
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
      if (t.value("templateID", "") == name && t.value("path", "") == path) served = true;
    }
  }
  if (served) std::fprintf(stderr, "coppice: the gateway at %s reloaded and serves %s\n", g.api_url.c_str(), name.c_str());
  else
    std::fprintf(stderr,
                 "coppice: the gateway at %s reloaded, but does not serve %s from %s (its --templates differs)\n",
                 g.api_url.c_str(), name.c_str(), path.c_str());
}

// (cli.h)
void announce_installed(const Globals& g, const std::string& name, const std::string& path, const std::string& replaced) {
  if (!replaced.empty())
    std::fprintf(stderr, "coppice: the replaced build is at %s until no sandbox runs on it (the gateway removes it)\n",
                 replaced.c_str());
  std::fflush(stdout);
  reload_gateway(g, name, path);
}

namespace {

int run_build(const Globals& g, const BuildArgs& a) {
  if (a.rootless)
    return fail("a Debian recipe cannot be built rootless: mmdebstrap needs real root to install packages "
                "(device nodes, files of many owners, maintainer scripts run as root); build it as root, or "
                "build rootless from an image or a Dockerfile");
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
  std::printf("built %s in %.1f s: %s (recipe %s)\n", res->path.c_str(), res->seconds, format_mib(res->size_bytes).c_str(),
              res->recipe_hash.substr(0, 12).c_str());
  announce_installed(g, res->name, res->path, res->replaced_tree);
  return 0;
}

// "100M", "2G", "512" (MiB) -> bytes.
Result<uint64_t> parse_size(const std::string& s) {
  char* end = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (end == s.c_str() || v == 0) return make_error(ErrorCode::kInvalidArgument, "--max-size " + s + " is not a size");
  std::string unit = end;
  uint64_t mul = uint64_t{1} << 20;
  if (unit == "K" || unit == "KiB") mul = 1024;
  else if (unit == "G" || unit == "GiB") mul = uint64_t{1} << 30;
  else if (!unit.empty() && unit != "M" && unit != "MiB")
    return make_error(ErrorCode::kInvalidArgument, "--max-size " + s + ": the unit must be K, M or G");
  return static_cast<uint64_t>(v) * mul;
}

int run_image_build(const Globals& g, const BuildArgs& a) {
  catch_interrupts();
  builder::ImageBuildOptions o;
  o.templates_root = a.templates;
  o.name = a.name;
  o.force = a.force;
  o.cancel = &g_interrupted;
  o.insecure_registry = a.insecure;
  if (a.network != "none" && a.network != "host") return fail("--network must be none or host, not " + a.network);
  o.network_host = a.network == "host";
  if (!a.max_size.empty()) {
    auto size = parse_size(a.max_size);
    if (!size) return fail(size.error().message());
    o.max_bytes = *size;
  }
  for (const auto& kv : a.build_args) {
    size_t eq = kv.find('=');
    if (eq == 0 || eq == std::string::npos) return fail("--build-arg " + kv + " is not NAME=value");
    o.build_args[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  int sources = !a.image.empty() + !a.oci_layout.empty() + !a.docker_archive.empty() + !a.dockerfile.empty() +
                !a.recipe.empty();
  if (sources != 1) return fail("give one of: a recipe, --image, --oci-layout, --docker-archive, --dockerfile");
  if (a.name.empty()) return fail("--name is required when building from an image or a Dockerfile");
  if (!a.context.empty() && a.dockerfile.empty()) return fail("--context goes with --dockerfile");
  Result<builder::ImageSource> src = make_error(ErrorCode::kInvalidArgument, "");
  if (!a.image.empty()) src = builder::make_image_source(builder::ImageSource::kRegistry, a.image, ".", a.insecure);
  if (!a.oci_layout.empty()) src = builder::make_image_source(builder::ImageSource::kOciLayout, a.oci_layout, ".", false);
  if (!a.docker_archive.empty())
    src = builder::make_image_source(builder::ImageSource::kDockerArchive, a.docker_archive, ".", false);
  if (a.dockerfile.empty()) {
    if (!src) return fail(src.error().message());
    o.image = *src;
  } else {
    o.dockerfile = a.dockerfile;
    o.context = a.context;
  }
  if (a.rootless) {
    if (::geteuid() == 0)
      return fail("--rootless as root: run the build as the user who is to own it (e.g. runuser -u NAME -- "
                  "coppice template build --rootless ...); root builds straight into the gateway's templates root");
    if (!a.templates_given) o.templates_root = builder::rootless_templates_root();
    auto ids = builder::rootless_ids_for(::getuid());
    if (!ids) return fail("cannot build rootless: " + ids.error().message());
    std::fprintf(stderr, "==> rootless: a user namespace where root is %s (uid %u) and ids 1..%u are %u.. (/etc/subuid)\n",
                 ids->user.c_str(), static_cast<unsigned>(ids->uid), ids->count, ids->subuid.start);
    if (auto s = builder::enter_build_userns(*ids); !s) return fail("cannot build rootless: " + s.error().message());
  }
  o.progress = [](std::string_view line) {
    std::fprintf(stderr, "%.*s\n", static_cast<int>(line.size()), line.data());
    std::fflush(stderr);
  };
  auto res = builder::build_image_template(o);
  if (!res) {
    if (res.error().code() == ErrorCode::kCanceled) {
      std::fprintf(stderr, "coppice: %s; nothing was changed\n", res.error().message().c_str());
      return 130;
    }
    return fail(res.error().message() + "\n  the template " + a.name + " was left as it was");
  }
  if (res->cached) {
    std::printf("%s is up to date (image %s), nothing to do; --force rebuilds\n", res->path.c_str(),
                res->image_digest.c_str());
    return 0;
  }
  std::printf("built %s in %.1f s: %s (image %s)\n", res->path.c_str(), res->seconds, format_mib(res->size_bytes).c_str(),
              res->image_digest.empty() ? "scratch" : res->image_digest.c_str());
  if (a.rootless) {
    // No gateway runs on this root's trees: the build it replaced goes now.
    if (!res->replaced_tree.empty()) {
      if (auto s = sys::remove_tree(res->replaced_tree); !s)
        std::fprintf(stderr, "coppice: warning: %s\n", s.error().to_string().c_str());
    }
    std::fflush(stdout);
    std::fprintf(stderr,
                 "coppice: built rootless; for the gateway, as root: coppice template install %s [--name NAME]\n",
                 res->path.c_str());
    return 0;
  }
  announce_installed(g, res->name, res->path, res->replaced_tree);
  return 0;
}

}  // namespace

void add_template_build_command(CLI::App& group, Globals& g) {
  auto a = std::make_shared<BuildArgs>();
  auto* build = group.add_subcommand("build", "build a template from a recipe (Debian packages via mmdebstrap), an OCI image or a Dockerfile; as root, or rootless (images and Dockerfiles) into your own templates root");
  build->add_option("recipe", a->recipe, "the recipe file (see templates/recipes/)");
  build->add_option("--image", a->image, "build from an image in a registry: [host[:port]/]repo[:tag][@digest]");
  build->add_option("--oci-layout", a->oci_layout, "build from an OCI image layout directory: DIR[:TAG]");
  build->add_option("--docker-archive", a->docker_archive, "build from a `docker save` archive: TAR");
  build->add_option("--dockerfile", a->dockerfile, "build from a Dockerfile (FROM, RUN, COPY, ADD, ENV, ARG, WORKDIR, USER, CMD, ENTRYPOINT)");
  build->add_option("--context", a->context, "the Dockerfile's build context (default: its directory)");
  build->add_option("--build-arg", a->build_args, "NAME=value for the Dockerfile's ARG NAME (repeatable)");
  build->add_flag("--insecure-registry", a->insecure,
                  "allow a registry over plain HTTP or with an unverified certificate (loopback registries always are)");
  build->add_option("--network", a->network, "RUN steps' network: none (loopback only; default) or host");
  build->add_option("--max-size", a->max_size, "fail when a layer or the unpacked image is larger (e.g. 500M, 2G)");
  build->add_option("--templates", a->templates,
                    "the templates root (default /var/lib/coppice/templates; rootless: ~/.local/share/coppice/templates)");
  build->add_option("--name", a->name, "the template's name (default: the recipe's `name`, else its file name)");
  build->add_flag("--force", a->force, "rebuild even if the template was built from the same recipe");
  build->add_option("--sources", a->sources,
                    "apt sources for recipes without `sources` (default: the host's, "
                    "/etc/apt/sources.list.d/debian.sources)");
  build->add_flag("--verbose", a->verbose, "show apt's own output too");
  build->add_flag("--rootless", a->rootless,
                  "build in a user namespace of your ids (the default when not root; images and Dockerfiles only)");
  auto* templates_opt = build->get_option("--templates");
  build->fallthrough();
  build->callback([&g, a, templates_opt] {
    a->templates_given = templates_opt->count() > 0;
    if (::geteuid() != 0) a->rootless = true;
    const bool from_image = !a->image.empty() || !a->oci_layout.empty() || !a->docker_archive.empty() || !a->dockerfile.empty();
    g.run = [&g, a, from_image] { return from_image ? run_image_build(g, *a) : (a->recipe.empty() ? fail("give a recipe, --image, --oci-layout, --docker-archive or --dockerfile") : run_build(g, *a)); };
  });
}

}  // namespace coppice::cli
