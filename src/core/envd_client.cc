#include "core/envd_client.h"

#include <nlohmann/json.hpp>

#include "common/base64.h"
#include "http/connect.h"

namespace coppice::core {

using json = nlohmann::json;

std::string envd_init_body(const EnvdInit& init) {
  json body{{"envVars", init.env_vars}, {"defaultUser", init.default_user}, {"defaultWorkdir", init.default_workdir}};
  if (!init.access_token.empty()) body["accessToken"] = init.access_token;
  return body.dump();
}

asio::awaitable<Status> envd_init(const http::Endpoint& ep, const EnvdInit& init) {
  // Named locals: g++ 12 mishandles temporaries inside co_await expressions.
  http::Fields headers{{"Content-Type", "application/json"}};
  // Needed from the second /init on; the first one sets the token.
  if (!init.access_token.empty()) headers.emplace_back("X-Access-Token", init.access_token);
  std::string target = "/init", payload = envd_init_body(init);
  const std::chrono::milliseconds limit = std::chrono::seconds(5);
  auto r = co_await http::fetch(ep, http::bhttp::verb::post, std::move(target), headers, std::move(payload), limit);
  if (!r) co_return std::unexpected(std::move(r.error()).context("envd /init"));
  if (r->status != 204 && r->status != 200)
    co_return make_error(ErrorCode::kInternal, "envd /init answered " + std::to_string(r->status) + ": " + r->body);
  co_return ok();
}

asio::awaitable<Result<EnvdHeld>> envd_held(const http::Endpoint& ep, const std::string& token) {
  http::Fields headers;
  if (!token.empty()) headers.emplace_back("X-Access-Token", token);
  std::string target = "/coppice/held";
  const std::chrono::milliseconds limit = std::chrono::seconds(2);
  auto r = co_await http::fetch(ep, http::bhttp::verb::get, std::move(target), headers, std::string(), limit);
  if (!r) co_return std::unexpected(std::move(r.error()).context("envd /coppice/held"));
  json j = json::parse(r->body, nullptr, false);
  if (r->status != 200 || !j.is_object() || !j.value("watchers", json()).is_number_unsigned() ||
      !j.value("watchersMade", json()).is_number_unsigned())
    co_return make_error(ErrorCode::kInternal, "envd /coppice/held answered " + std::to_string(r->status));
  co_return EnvdHeld{j["watchers"].get<uint64_t>(), j["watchersMade"].get<uint64_t>()};
}

Result<int> exit_code_of_stream(std::string_view body) {
  connect::EnvelopeReader reader;
  reader.feed(body);
  for (;;) {
    auto env = reader.next();
    if (!env) return std::unexpected(std::move(env.error()).context("process stream"));
    if (!*env) return make_error(ErrorCode::kNotFound, "process stream ended without an end event");
    json j = json::parse((*env)->payload, nullptr, false);
    if (j.is_discarded()) return make_error(ErrorCode::kInternal, "process stream: a frame is not JSON");
    if ((*env)->flags & 0x02) {
      if (j.contains("error")) {
        const auto& e = j["error"];
        return make_error(ErrorCode::kInternal, "process stream: " + e.value("code", std::string("unknown")) + ": " +
                                                    e.value("message", std::string()));
      }
      return make_error(ErrorCode::kNotFound, "process stream ended without an end event");
    }
    if (!j.contains("event") || !j["event"].contains("end")) continue;
    const auto& end = j["event"]["end"];
    // proto3 JSON leaves out zero values: no exitCode means 0.
    auto code = end.value("exitCode", 0);
    return code;
  }
}

asio::awaitable<Result<int>> envd_run(const http::Endpoint& ep, const std::string& access_token,
                                      const std::string& command, const std::map<std::string, std::string>& envs,
                                      std::chrono::milliseconds timeout, const std::string& user,
                                      const std::string& cwd) {
  json req{{"process", {{"cmd", "/bin/sh"}, {"args", json::array({"-c", command})}, {"envs", envs}, {"cwd", cwd}}}};
  std::string body = connect::envelope(req.dump());
  http::Fields headers{{"Content-Type", "application/connect+json"},
                       {"Connect-Protocol-Version", "1"},
                       {"Connect-Timeout-Ms", std::to_string(timeout.count())},
                       // the user, with no password: "root:" for root.
                       {"Authorization", "Basic " + base64_encode(user + ":")}};
  if (!access_token.empty()) headers.emplace_back("X-Access-Token", access_token);
  std::string target = "/process.Process/Start";
  const std::chrono::milliseconds limit = timeout + std::chrono::seconds(2);
  const size_t max_body = 1u << 20;
  auto r = co_await http::fetch(ep, http::bhttp::verb::post, std::move(target), headers, std::move(body), limit,
                                max_body);
  if (!r) co_return std::unexpected(std::move(r.error()).context("envd Process/Start"));
  if (r->status != 200)
    co_return make_error(ErrorCode::kInternal,
                         "envd Process/Start answered " + std::to_string(r->status) + ": " + r->body);
  co_return exit_code_of_stream(r->body);
}

}  // namespace coppice::core
