// The data plane: requests for a sandbox arrive on the gateway's one port and
// are relayed, streamed both ways, to the sandbox — envd's port over its unix
// socket, any other port over a socket made inside the sandbox's network
// namespace. Nothing is buffered whole: Connect envelopes and NDJSON lines
// reach the client as envd produces them, and a 1 GiB upload passes in
// bounded pieces. An upgrade request (WebSocket) is offered upstream; when
// the upstream answers 101 the connection becomes a byte tunnel until either
// side closes, and is never used for HTTP again.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "common/constants.h"
#include "core/metrics.h"
#include "core/routes.h"
#include "http/server.h"
#include "proxy/inbound.h"
#include "sandbox/backend.h"

namespace coppice::proxy {

namespace asio = http::asio;

struct Target {
  std::string sandbox_id;
  uint16_t port = kEnvdPort;
};

// Routes by the E2b-Sandbox-Id / E2b-Sandbox-Port headers, else by a Host of
// the form <port>-<id>.<domain> (any domain when `domain` is empty; a
// ":port" in `domain` is not compared). nullopt:
// not a data-plane request. A malformed port gives port 0 (refused later).
std::optional<Target> route(const http::Exchange& ex, const std::string& domain);

// envd endpoints only the gateway may call.
bool is_internal_envd_path(std::string_view path);

// A GET or POST /files carrying a URL signature (uploadUrl/downloadUrl) and
// no sandbox id: in single-port mode the SDK's signed URLs name no sandbox.
bool is_signed_file_request(const http::Exchange& ex);

// Resolves a sandbox from the route table (a lock-free snapshot the
// sandbox owner publishes: a proxied request never waits on the control
// plane) and relays the exchange to it.
class Proxy {
 public:
  // The team of an API key, or nullopt for a key that is not valid.
  using TeamOfKey = std::function<std::optional<std::string>(const std::string& key)>;

  // `metrics` counts requests, relayed body bytes and 502s. Sockets into a
  // sandbox's network are made on `netns_pool` (each entry into a network
  // namespace is a few syscalls; off the io threads). With `team_of_key`, a
  // request that carries an X-API-KEY must carry a valid one (else 401) of
  // the sandbox's team (else the answer is the one for a missing sandbox);
  // requests without one are left to envd's access token, as E2B does.
  Proxy(const core::RouteTable& routes, sandbox::Backend& backend, asio::thread_pool& netns_pool,
        core::metrics::GatewayMetrics& metrics, TeamOfKey team_of_key = {})
      : routes_(routes), backend_(backend), netns_pool_(netns_pool), metrics_(metrics),
        team_of_key_(std::move(team_of_key)) {}
  // Preview URLs are accepted only once a signer is set (before serving);
  // `secure_cookie`: the gateway's port speaks TLS, so the preview cookie is
  // marked Secure.
  void set_preview(const PreviewSigner* signer, bool secure_cookie) {
    signer_ = signer;
    secure_cookie_ = secure_cookie;
  }
  // autoResume: called for a request to a paused sandbox whose route has
  // auto_resume, once the request has shown it may reach the sandbox
  // (envd's access token, or the port's traffic token); the request is
  // served when it returns ok(), answered as for a missing sandbox otherwise.
  using Resume = std::function<asio::awaitable<Status>(std::string id)>;
  void set_auto_resume(Resume r) { resume_ = std::move(r); }
  asio::awaitable<void> serve(http::Exchange& ex, const Target& t);
  // Serves a signed /files URL that names no sandbox: it goes to the running
  // sandbox whose envd token the signature was made with (envd checks the
  // signature again, expiry included); 401 when none matches.
  asio::awaitable<void> serve_signed_file(http::Exchange& ex);

 private:
  // A connected socket to the sandbox's envd or to one of its ports.
  asio::awaitable<Result<http::Socket>> connect_upstream(const core::Route& r, uint16_t port);
  // The inbound policy for a port other than envd's: true when the request
  // may go on; otherwise it has been answered (403, or the preview link's
  // redirect that sets its cookie).
  asio::awaitable<bool> admit(http::Exchange& ex, const core::Route& r, const Target& t);

  const core::RouteTable& routes_;
  sandbox::Backend& backend_;
  asio::thread_pool& netns_pool_;
  core::metrics::GatewayMetrics& metrics_;
  TeamOfKey team_of_key_;
  Resume resume_;
  const PreviewSigner* signer_ = nullptr;
  bool secure_cookie_ = false;
};

}  // namespace coppice::proxy
