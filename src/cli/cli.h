// Shared pieces of the `coppice` command-line client: the connection to the
// gateway's REST API and the registration of each subcommand group.
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "common/url.h"
#include "http/server.h"

namespace coppice::cli {

using json = nlohmann::json;
using http::bhttp::verb;

// Options every subcommand shares, and the action the parsed command line chose.
struct Globals {
  std::string api_url;   // --api-url; default $COPPICE_API_URL, $E2B_API_URL, http://127.0.0.1:3000
  std::string api_key;   // --api-key; default $COPPICE_API_KEY, $E2B_API_KEY
  // Set by the chosen subcommand's callback; returns the exit status.
  std::function<int()> run;
};

// Where the gateway is: "http://host[:port][/prefix]".
struct ApiUrl {
  std::string host;    // name or address, without IPv6 brackets
  uint16_t port = 80;
  std::string prefix;  // path before the API's own paths; empty or "/..." without a trailing slash
};

// Parses --api-url. Only plain http is spoken: the gateway listens on
// loopback or behind a TLS-terminating proxy.
Result<ApiUrl> parse_api_url(const std::string& url);

// One request to the gateway, synchronously. A 2xx answer yields its body
// parsed as JSON (null when empty); any other status becomes an error whose
// message is the gateway's own ("...", HTTP 401), and a gateway that cannot
// be reached is an error naming the URL.
class Client {
 public:
  explicit Client(const Globals& g) : g_(g) {}
  Result<json> call(verb method, const std::string& target, const std::string& body = "",
                    std::chrono::milliseconds timeout = std::chrono::seconds(30),
                    std::vector<std::pair<std::string, std::string>>* response_headers = nullptr);

 private:
  const Globals& g_;
};

using coppice::url_encode;  // common/url.h

// Prints rows under a header, each column as wide as its widest cell.
void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);

// Prints "coppice: <message>" on stderr and returns the exit status for a failed command.
int fail(const std::string& message);

// Registers `coppice template ...` and `coppice sandbox ...`.
void add_template_commands(CLI::App& app, Globals& g);
void add_sandbox_commands(CLI::App& app, Globals& g);
// Registers `coppice pool ...`.
void add_pool_commands(CLI::App& app, Globals& g);
// Registers `coppice team ...` and `coppice key ...`.
void add_team_commands(CLI::App& app, Globals& g);
// Registers `coppice snapshot ...`, `sandbox snapshot` and `sandbox fork`
// (after add_sandbox_commands).
void add_snapshot_commands(CLI::App& app, Globals& g);
// Registers `coppice volume ...`.
void add_volume_commands(CLI::App& app, Globals& g);
// Registers `coppice template build` in the `template` group.
void add_template_build_command(CLI::App& group, Globals& g);
// Registers `coppice template install` (a rootless build, into the gateway's root).
void add_template_install_command(CLI::App& group, Globals& g);
// Asks the gateway at --api-url to reload its templates and says whether it
// now serves `name` from `path` (or how to make it do so later).
void reload_gateway(const Globals& g, const std::string& name, const std::string& path);
// After a template was put in place: says where the build it replaced went
// (when there was one) and reloads the gateway (reload_gateway).
void announce_installed(const Globals& g, const std::string& name, const std::string& path, const std::string& replaced);

}  // namespace coppice::cli
