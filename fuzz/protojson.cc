// Proto3 JSON decoding as envd does it (envd/protojson.h): a request body is
// parsed as JSON and its fields read with the pj:: helpers in the shapes of
// envd's process, filesystem and /init messages; paths taken from it go
// through envd's path resolution. Bad input must come back as an error
// value, never an exception or a crash.
#include <csignal>
#include <string>

#include "envd/paths.h"
#include "envd/protojson.h"
#include "fuzz_check.h"

using namespace coppice;
using json = nlohmann::json;

namespace {
const std::vector<std::pair<std::string_view, int>> kSignals = {
    {"SIGNAL_UNSPECIFIED", 0}, {"SIGNAL_SIGTERM", SIGTERM}, {"SIGNAL_SIGKILL", SIGKILL}};

void check_path(const Result<std::optional<std::string>>& p) {
  if (!p || !*p) return;
  auto r = envd::resolve_user_path(**p, "/home/user", "/home/user/work");
  if (r) FUZZ_CHECK(!r->empty() && (*r)[0] == '/', "resolved path is not absolute");
  (void)envd::clean_path(**p);
}

// process.Process/Start and Connect: {process: {cmd, args, envs, cwd}, tag, stdin, pty: {size: {cols, rows}}}
void start_request(const json& req) {
  auto pm = pj::get_message(req, "process");
  if (pm && *pm) {
    (void)pj::get_string(**pm, "cmd");
    (void)pj::get_string_list(**pm, "args");
    (void)pj::get_string_map(**pm, "envs");
    check_path(pj::get_string(**pm, "cwd"));
  }
  (void)pj::get_string(req, "tag");
  (void)pj::get_bool(req, "stdin");
  auto pty = pj::get_message(req, "pty");
  if (pty && *pty) {
    auto size = pj::get_message(**pty, "size");
    if (size && *size) {
      (void)pj::get_int(**size, "cols");
      (void)pj::get_int(**size, "rows");
    }
  }
  auto sel = pj::get_message(req, "process");
  if (sel && *sel) {
    (void)pj::get_int(**sel, "pid");
    (void)pj::get_string(**sel, "tag");
  }
}

// SendInput, SendSignal, Update.
void process_calls(const json& req) {
  auto input = pj::get_message(req, "input");
  if (input && *input) {
    auto stdin_data = pj::get_bytes(**input, "stdin");
    auto pty_data = pj::get_bytes(**input, "pty");
    if (stdin_data && *stdin_data) {
      // Decoded bytes re-encode to something that decodes to them again.
      auto again = pj::base64_decode(pj::base64_encode(**stdin_data));
      FUZZ_CHECK(again && *again == **stdin_data, "base64 round trip");
    }
    (void)pty_data;
  }
  auto sig = pj::get_enum(req, "signal", kSignals);
  if (sig && *sig) (void)**sig;
}

// filesystem.Filesystem: path fields, flags, depth, watcher ids; /init.
void filesystem_and_init(const json& req) {
  for (const char* f : {"path", "source", "destination"}) check_path(pj::get_string(req, f));
  for (const char* f : {"recursive", "includeEntry", "allowNetworkMounts"}) (void)pj::get_bool(req, f);
  (void)pj::get_int(req, "depth");
  (void)pj::get_string(req, "watcherId");
  (void)pj::get_string(req, "accessToken");
  (void)pj::get_string(req, "defaultUser");
  check_path(pj::get_string(req, "defaultWorkdir"));
  (void)pj::get_string_map(req, "envVars");
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)pj::snake_case(text);
  (void)pj::base64_decode(text);
  json req = json::parse(text, nullptr, false);
  if (req.is_discarded() || !req.is_object()) return 0;
  start_request(req);
  process_calls(req);
  filesystem_and_init(req);
  // Every field under every name form, whatever its type.
  for (const auto& [k, v] : req.items()) {
    (void)pj::field(req, k);
    (void)pj::get_string(req, k);
    (void)pj::get_int(req, k);
    (void)pj::get_bool(req, k);
    (void)pj::get_bytes(req, k);
    (void)pj::get_string_map(req, k);
    (void)pj::get_string_list(req, k);
    (void)pj::get_message(req, k);
    (void)pj::get_enum(req, k, kSignals);
  }
  return 0;
}
