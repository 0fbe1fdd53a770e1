// The data plane: requests for a sandbox arrive on the gateway's one port and
// are relayed, streamed both ways, to the sandbox — envd's port over its unix
// socket, any other port over a socket made inside the sandbox's network
// namespace. Nothing is buffered whole: Connect envelopes and NDJSON lines
// reach the client as envd produces them, and a 1 GiB upload passes in
// bounded pieces. An upgrade request (WebSocket) is offered upstream; when
// the upstream answers 101 the connection becomes a byte tunnel until either
// side closes, and is never used for HTTP again.
#pragma once

#include <optional>
#include <string>

#include "core/metrics.h"
#include "core/sandbox_manager.h"
#include "http/server.h"

namespace coppice::proxy {

namespace asio = http::asio;

inline constexpr uint16_t kEnvdPort = 49983;

struct Target {
  std::string sandbox_id;
  uint16_t port = kEnvdPort;
};

// Routes by the E2b-Sandbox-Id / E2b-Sandbox-Port headers, else by a Host of
// the form <port>-<id>.<domain> (any domain when `domain` is empty). nullopt:
// not a data-plane request. A malformed port gives port 0 (refused later).
std::optional<Target> route(const http::Exchange& ex, const std::string& domain);

// envd endpoints only the gateway may call.
bool is_internal_envd_path(std::string_view path);

class Proxy {
 public:
  // `metrics` counts requests, relayed body bytes and 502s.
  Proxy(core::SandboxManager& mgr, core::metrics::GatewayMetrics& metrics) : mgr_(mgr), metrics_(metrics) {}
  asio::awaitable<void> serve(http::Exchange& ex, const Target& t);

 private:
  core::SandboxManager& mgr_;
  core::metrics::GatewayMetrics& metrics_;
};

}  // namespace coppice::proxy
