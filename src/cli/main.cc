// coppice: the command-line client of a Coppice gateway. Every subcommand but
// `template build` (which builds on this machine) is a call to the gateway's
// REST API (the same one the E2B SDKs use), so the CLI works against a local
// or a remote gateway alike.
//
//   coppice template list [--json]        coppice sandbox list [--json]
//   coppice template reload [--json]      coppice sandbox create [--template T] [--timeout S]
//   coppice template build RECIPE         coppice sandbox kill ID...
//   coppice pool list [--json]            coppice pool warm TEMPLATE COUNT [--wait]
//   coppice pool drain TEMPLATE           coppice team list|create NAME|delete NAME
//   coppice key list|create NAME|delete ID [--team T]
//   coppice sandbox snapshot ID [--name N] [--no-memory] | sandbox fork ID [--count N]
//   coppice snapshot ls [--sandbox ID] | rm ID|NAME
//   coppice volume list|create NAME [--size-mb N]|delete ID|mount SANDBOX NAME PATH|unmount SANDBOX NAME
#include <cstdlib>

#include "cli/cli.h"

namespace {

std::string first_env(std::initializer_list<const char*> names, std::string fallback) {
  for (const char* n : names) {
    const char* v = std::getenv(n);
    if (v && *v) return v;
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace coppice::cli;
  Globals g;
  g.api_url = first_env({"COPPICE_API_URL", "E2B_API_URL"}, "http://127.0.0.1:3000");
  g.api_key = first_env({"COPPICE_API_KEY", "E2B_API_KEY"}, "");

  CLI::App app{"coppice: manage the templates and sandboxes of a Coppice gateway"};
  app.set_version_flag("--version", std::string("coppice ") + COPPICE_VERSION);
  app.add_option("--api-url", g.api_url,
                 "the gateway's address (default $COPPICE_API_URL, else $E2B_API_URL, else http://127.0.0.1:3000)");
  // The key's default comes from the environment and is never shown in --help.
  app.add_option("--api-key", g.api_key, "API key (default $COPPICE_API_KEY, else $E2B_API_KEY)");
  app.require_subcommand(1);
  add_template_commands(app, g);
  add_sandbox_commands(app, g);
  add_pool_commands(app, g);
  add_team_commands(app, g);
  add_volume_commands(app, g);
  add_snapshot_commands(app, g);
  CLI11_PARSE(app, argc, argv);
  if (!g.run) return fail("no command given (see --help)");
  return g.run();
}
