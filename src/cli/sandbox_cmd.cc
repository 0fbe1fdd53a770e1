// `coppice sandbox ...`: sandboxes on the gateway.
//   list [--json]                          running and paused sandboxes, newest first
//   create [--template T] [--timeout S]    prints the new sandbox's id
//   kill ID...                             kills each; fails if any could not be killed
//   preview ID PORT [--expires 1h]         prints a signed URL that opens PORT until it expires
//   resize ID [--cpu N] [--memory 1G]      changes a running or paused sandbox's CPU and memory limits
#include <strings.h>

#include <cstdio>
#include <optional>

#include "cli/cli.h"

namespace coppice::cli {

namespace {

std::string str_field(const json& j, const char* k) {
  auto it = j.find(k);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

// Every page of GET /v2/sandboxes, following X-Next-Token.
Result<json> list_all(const Globals& g) {
  json all = json::array();
  std::string token;
  for (int page = 0; page < 10000; ++page) {
    std::string target = "/v2/sandboxes?state=running,paused&limit=1000";
    if (!token.empty()) target += "&nextToken=" + url_encode(token);
    std::vector<std::pair<std::string, std::string>> headers;
    auto r = Client(g).call(verb::get, target, "", std::chrono::seconds(30), &headers);
    if (!r) return std::unexpected(r.error());
    if (!r->is_array()) return make_error(ErrorCode::kInternal, "the gateway's sandbox list is not a JSON array");
    for (auto& s : *r) all.push_back(std::move(s));
    token.clear();
    for (const auto& [k, v] : headers)
      if (strcasecmp(k.c_str(), "X-Next-Token") == 0) token = v;
    if (token.empty()) break;
  }
  return all;
}

int list_cmd(const Globals& g, bool as_json) {
  auto r = list_all(g);
  if (!r) return fail(r.error().message());
  if (as_json) {
    std::printf("%s\n", r->dump(2).c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& s : *r)
    rows.push_back({str_field(s, "sandboxID"), str_field(s, "templateID"), str_field(s, "state"),
                    str_field(s, "startedAt"), str_field(s, "endAt")});
  print_table({"ID", "TEMPLATE", "STATE", "STARTED", "ENDS"}, rows);
  return 0;
}

int create_cmd(const Globals& g, const std::string& tmpl, std::optional<int> timeout_s, bool as_json) {
  json body = json::object();
  if (!tmpl.empty()) body["templateID"] = tmpl;
  if (timeout_s) body["timeout"] = *timeout_s;
  auto r = Client(g).call(verb::post, "/sandboxes", body.dump(), std::chrono::minutes(2));
  if (!r) return fail(r.error().message());
  std::string id = str_field(*r, "sandboxID");
  if (id.empty()) return fail("the gateway's answer has no sandboxID");
  if (as_json) std::printf("%s\n", r->dump(2).c_str());
  else std::printf("%s\n", id.c_str());
  return 0;
}

int kill_cmd(const Globals& g, const std::vector<std::string>& ids) {
  int status = 0;
  for (const auto& id : ids) {
    auto r = Client(g).call(verb::delete_, "/sandboxes/" + url_encode(id), "", std::chrono::minutes(1));
    if (!r) status = fail(r.error().message());
    else std::printf("killed %s\n", id.c_str());
  }
  return status;
}

// "90", "90s", "15m", "1h", "7d" as seconds; nullopt when malformed.
std::optional<int64_t> parse_duration(const std::string& s) {
  if (s.empty() || s.size() > 12) return std::nullopt;
  int64_t unit = 1;
  std::string digits = s;
  switch (s.back()) {
    case 's': unit = 1; digits.pop_back(); break;
    case 'm': unit = 60; digits.pop_back(); break;
    case 'h': unit = 3600; digits.pop_back(); break;
    case 'd': unit = 86400; digits.pop_back(); break;
    default: break;
  }
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return std::stoll(digits) * unit;
}

int preview_cmd(const Globals& g, const std::string& id, int port, const std::string& expires, bool as_json) {
  auto secs = parse_duration(expires);
  if (!secs) return fail("--expires wants a duration like 90s, 15m, 1h or 7d, got " + expires);
  json body{{"port", port}, {"expiresInSeconds", *secs}};
  auto r = Client(g).call(verb::post, "/sandboxes/" + url_encode(id) + "/preview-url", body.dump(),
                          std::chrono::seconds(30));
  if (!r) return fail(r.error().message());
  if (as_json) std::printf("%s\n", r->dump(2).c_str());
  else std::printf("%s\n", str_field(*r, "url").c_str());
  return 0;
}

// "1G", "512M", "1536" (MiB) as MiB; nullopt when malformed, zero or not a
// whole number of MiB.
std::optional<int64_t> parse_mib(const std::string& s) {
  if (s.empty() || s.size() > 12) return std::nullopt;
  std::string digits = s;
  int64_t kib = 1024;  // KiB per unit
  switch (s.back()) {
    case 'K': case 'k': kib = 1; digits.pop_back(); break;
    case 'M': case 'm': kib = 1024; digits.pop_back(); break;
    case 'G': case 'g': kib = 1024 * 1024; digits.pop_back(); break;
    case 'T': case 't': kib = 1024 * 1024 * 1024; digits.pop_back(); break;
    default: break;
  }
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  int64_t total = std::stoll(digits) * kib;
  if (total <= 0 || total % 1024 != 0) return std::nullopt;
  return total / 1024;
}

int resize_cmd(const Globals& g, const std::string& id, std::optional<int> cpu, const std::string& memory,
               bool as_json) {
  json body = json::object();
  if (cpu) body["cpuCount"] = *cpu;
  if (!memory.empty()) {
    auto mib = parse_mib(memory);
    if (!mib) return fail("--memory wants a size like 512M, 2G or 1536 (MiB), got " + memory);
    body["memoryMB"] = *mib;
  }
  if (body.empty()) return fail("resize needs --cpu and/or --memory");
  auto r = Client(g).call(verb::patch, "/sandboxes/" + url_encode(id), body.dump(), std::chrono::minutes(1));
  if (!r) return fail(r.error().message());
  if (as_json) {
    std::printf("%s\n", r->dump(2).c_str());
  } else {
    std::printf("%s: %d CPU, %d MiB\n", id.c_str(), r->value("cpuCount", 0), r->value("memoryMB", 0));
  }
  return 0;
}

// The options of the sandbox subcommands, alive until the chosen one runs.
struct SandboxOptions {
  bool list_json = false;
  bool create_json = false;
  std::string tmpl;
  std::optional<int> timeout_s;
  std::vector<std::string> ids;
  std::string preview_id;
  int preview_port = 0;
  std::string expires = "1h";
  bool preview_json = false;
  std::string resize_id;
  std::optional<int> resize_cpu;
  std::string resize_memory;
  bool resize_json = false;
};

}  // namespace

void add_sandbox_commands(CLI::App& app, Globals& g) {
  auto o = std::make_shared<SandboxOptions>();
  auto* group = app.add_subcommand("sandbox", "list, create, resize and kill sandboxes; preview URLs");
  group->require_subcommand(1);
  group->fallthrough();

  auto* list = group->add_subcommand("list", "list running and paused sandboxes");
  list->add_flag("--json", o->list_json, "print the gateway's JSON instead of a table");
  list->fallthrough();
  list->callback([&g, o] { g.run = [&g, o] { return list_cmd(g, o->list_json); }; });

  auto* create = group->add_subcommand("create", "create a sandbox and print its id");
  create->add_option("--template,-t", o->tmpl, "template name (default: the gateway's default template)");
  // The gateway checks the range (it knows its own maximum) and says why.
  create->add_option("--timeout", o->timeout_s, "seconds until the sandbox is killed (default: the gateway's)");
  create->add_flag("--json", o->create_json, "print the gateway's JSON instead of the id");
  create->fallthrough();
  create->callback([&g, o] { g.run = [&g, o] { return create_cmd(g, o->tmpl, o->timeout_s, o->create_json); }; });

  auto* kill = group->add_subcommand("kill", "kill sandboxes");
  kill->add_option("id", o->ids, "sandbox ids")->required();
  kill->fallthrough();
  kill->callback([&g, o] { g.run = [&g, o] { return kill_cmd(g, o->ids); }; });

  auto* preview = group->add_subcommand("preview", "print a signed URL that opens one port of a sandbox until it expires");
  preview->add_option("id", o->preview_id, "sandbox id")->required();
  // The gateway checks the range and says why.
  preview->add_option("port", o->preview_port, "port in the sandbox")->required();
  preview->add_option("--expires", o->expires, "lifetime: 90s, 15m, 1h, 7d (at most 7 days)")->capture_default_str();
  preview->add_flag("--json", o->preview_json, "print the gateway's JSON (url, expiresAt) instead of the URL");
  preview->fallthrough();
  preview->callback([&g, o] {
    g.run = [&g, o] { return preview_cmd(g, o->preview_id, o->preview_port, o->expires, o->preview_json); };
  });

  auto* resize = group->add_subcommand("resize", "change a running or paused sandbox's CPU and memory limits, at once");
  resize->add_option("id", o->resize_id, "sandbox id")->required();
  // The gateway checks the ranges (it knows its maximums) and says why.
  resize->add_option("--cpu", o->resize_cpu, "CPUs");
  resize->add_option("--memory", o->resize_memory, "memory: 512M, 2G, or MiB without a suffix");
  resize->add_flag("--json", o->resize_json, "print the gateway's JSON (the sandbox's detail)");
  resize->fallthrough();
  resize->callback([&g, o] {
    g.run = [&g, o] { return resize_cmd(g, o->resize_id, o->resize_cpu, o->resize_memory, o->resize_json); };
  });
}

}  // namespace coppice::cli
