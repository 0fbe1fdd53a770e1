// The data plane: requests for a sandbox arrive on the gateway's one port and
// are relayed, streamed both ways, to the sandbox — envd's port over its unix
// socket, any other port over a socket made inside the sandbox's network
// namespace. Nothing is buffered whole: Connect envelopes and NDJSON lines
// reach the client as envd produces them, and a 1 GiB upload passes in
// bounded pieces.
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
  // Relays one request and its response. An upgrade request (WebSocket) is
  // offered upstream; when the upstream answers 101 the connection becomes a
  // byte tunnel until either side closes, and is never used for HTTP again.
  asio::awaitable<void> serve(http::Exchange& ex, const Target& t);

 private:
  // Sends the upstream's 101 (protocol and end-to-end headers) to the client
  // and relays bytes both ways, `up_read_ahead` (read from `up` past the
  // 101) first, until the tunnel ends.
  asio::awaitable<void> relay_upgraded(http::Exchange& ex, const Target& t, http::Socket& up,
                                       http::beast::flat_buffer up_read_ahead, const std::string& protocol,
                                       const http::Fields& headers);

  core::SandboxManager& mgr_;
  core::metrics::GatewayMetrics& metrics_;
};

}  // namespace coppice::proxy
