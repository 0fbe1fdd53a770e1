// Helpers the API's source files share (defined in api.cc). Private to src/api.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

#include "common/result.h"
#include "core/sandbox_manager.h"
#include "http/server.h"
#include "templates/templates.h"

namespace coppice::api {

// "2024-01-02T03:04:05.678Z".
std::string rfc3339_time(core::Clock::time_point t);
// A JSON object body ({} when empty), at most `limit` bytes; 400 otherwise.
http::asio::awaitable<Result<nlohmann::json>> read_json_body(http::Exchange& ex, size_t limit);

// The template shape of GET /templates.
nlohmann::json template_json(const templates::Template& t);

// The `Sandbox` shape (create / connect / resume / a fork's child).
nlohmann::json sandbox_body(const core::SandboxView& v, const core::GatewayConfig& cfg);

}  // namespace coppice::api
