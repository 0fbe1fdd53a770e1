// The E2B control-plane REST API (e2b-protocol.md §2): JSON in, typed calls
// into core::SandboxManager, JSON out. Errors become HTTP statuses in one
// place (error_response) with the {code, message} body the SDK reads.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/metrics.h"
#include "core/sandbox_manager.h"
#include "templates/templates.h"
#include "http/server.h"
#include "proxy/proxy.h"
#include "store/store.h"

namespace coppice::core {
class TemplateBuilds;
}

namespace coppice::api {

namespace asio = http::asio;

// The HTTP status for an error category.
unsigned http_status(ErrorCode c);
// The HTTP status for an error: its category's, except that a full disk
// (ENOSPC, EDQUOT: the host's or the sandboxes' storage) is 507 Insufficient
// Storage rather than the 429 of other exhausted resources.
unsigned http_status(const Error& e);

// Who a valid API key speaks for.
struct Caller {
  std::string team;    // every sandbox it sees and makes is this team's
  bool admin = false;  // may use the /admin API, reload templates, change pools
};

// COPPICE_API_KEYS: comma-separated entries, each `team:key` (a key of that
// team) or a bare `key` (the operator's: the default team, admin).
// kInvalidArgument naming a bad team name or an empty key.
Result<std::vector<core::GatewayConfig::ApiKey>> parse_api_keys(std::string_view text);

// Checks X-API-KEY against the configured keys and the hashes in the store.
// Any thread. Keys found in the store are remembered until forget() (called
// when a key or team is deleted).
class KeyChecker {
 public:
  KeyChecker(const core::GatewayConfig& cfg, store::Store& store) : cfg_(cfg), store_(store) {}
  std::optional<Caller> check(const std::string& key);
  void forget();

 private:
  const core::GatewayConfig& cfg_;
  store::Store& store_;
  std::mutex mu_;
  std::map<std::string, Caller> known_;  // key hash -> caller, for keys seen valid in the store
  uint64_t generation_ = 0;              // bumped by forget(): a lookup racing it is not cached
};

// Makes sure at least one key is accepted: with none configured and none
// stored, creates one (the default team's, admin), stores its hash and
// returns it (to be printed once).
Result<std::optional<std::string>> ensure_api_key(const core::GatewayConfig& cfg, store::Store& store);

class Api {
 public:
  // `metrics` is served at GET /metrics and counts control-plane responses.
  // `backend` and `netns_pool` serve the data plane (proxy.h).
  Api(const core::GatewayConfig& cfg, core::SandboxManager& mgr, templates::TemplateRegistry& templates,
      store::Store& store, core::metrics::GatewayMetrics& metrics, sandbox::Backend& backend,
      asio::thread_pool& netns_pool);
  ~Api();
  // Signed preview URLs (POST /sandboxes/{id}/preview-url and the proxy's
  // check of them) with this signer; `tls`: the gateway's port speaks TLS
  // (https URLs, Secure cookies). Without a call the endpoint answers 501.
  void set_preview(const proxy::PreviewSigner* signer, bool tls) {
    signer_ = signer;
    tls_ = tls;
    proxy_.set_preview(signer, tls);
  }
  // Serves one request: the data plane when it names a sandbox, else the control plane.
  asio::awaitable<void> handle(http::Exchange& ex);

 private:
  asio::awaitable<void> control(http::Exchange& ex);
  asio::awaitable<void> create(http::Exchange& ex, const Caller& caller);
  asio::awaitable<void> list(http::Exchange& ex, bool v2, const Caller& caller);
  asio::awaitable<void> sandbox_route(http::Exchange& ex, const std::string& id, const std::string& action,
                                      const Caller& caller);
  // /admin/teams[/{team}[/keys[/{id}]]] (admin keys only).
  asio::awaitable<void> admin_route(http::Exchange& ex, const std::string& path);
  // The keys of `team`: GET lists, POST makes one, DELETE {id} removes one.
  // `rest` is what follows the collection's path ("" or "/{id}"); `caller`
  // decides whether admin keys may be made or removed.
  asio::awaitable<void> keys_route(http::Exchange& ex, const std::string& team, const std::string& rest,
                                   const Caller& caller);
  // Volumes (volumes_api.cc). `rest`: what follows /volumes ("" or "/{id}").
  asio::awaitable<void> volumes_route(http::Exchange& ex, const std::string& rest, const Caller& caller);
  // /sandboxes/{id}/volumes[/{name}]: list, hot mount, unmount. `rest` is
  // what follows "volumes".
  asio::awaitable<void> sandbox_volumes_route(http::Exchange& ex, const std::string& id, const std::string& rest,
                                              const Caller& caller);
  // E2B's volume content API, /volumecontent/{volumeID}/{dir|path|file},
  // authenticated by the volume's token (Authorization: Bearer).
  asio::awaitable<void> volume_content(http::Exchange& ex, const std::string& path);
  // A create's volumeMounts ([{name, path}]) as the team's volumes; 400
  // naming a bad or unknown entry.
  Result<std::vector<core::VolumeMountParam>> resolve_volume_mounts(const nlohmann::json& mounts,
                                                                    const std::string& team);
  // A sandbox's detail with its volumeMounts ([{name, path}]) added.
  nlohmann::json with_volume_mounts(nlohmann::json detail, const std::string& id);
  // Snapshots and fork (snapshots_api.cc).
  asio::awaitable<void> sandbox_snapshot(http::Exchange& ex, const std::string& id, const Caller& caller);
  asio::awaitable<void> snapshots_route(http::Exchange& ex, const std::string& rest, const Caller& caller);
  asio::awaitable<void> delete_snapshot(http::Exchange& ex, const std::string& ref, const Caller& caller,
                                        bool as_template = false);
  asio::awaitable<void> fork(http::Exchange& ex, const std::string& id, const Caller& caller);
  // Directory snapshots (an extension, snapshots_api.cc).
  asio::awaitable<void> sandbox_dir_snapshots(http::Exchange& ex, const std::string& id, const std::string& rest,
                                              const Caller& caller);
  asio::awaitable<void> dir_snapshots_route(http::Exchange& ex, const std::string& rest, const Caller& caller);
  // E2B's template build API (templates_api.cc): /v3/templates, uploads,
  // builds and their status, aliases, tags, and GET/DELETE /templates/{id}
  // of a team's own template. False when `path` is none of its routes.
  asio::awaitable<bool> template_build_route(http::Exchange& ex, const std::string& path, const Caller& caller);
  // PUT /template-uploads/{token}: the body is the SDK's tar of a COPY's files.
  asio::awaitable<void> template_upload(http::Exchange& ex, const std::string& token);
  // GET /templates and POST /templates/reload.
  asio::awaitable<void> list_templates(http::Exchange& ex);
  asio::awaitable<void> reload_templates(http::Exchange& ex);
  asio::awaitable<void> preview_url(http::Exchange& ex, const std::string& id, const core::TeamScope& team);
  asio::awaitable<void> pool_route(http::Exchange& ex, const std::string& template_id, const std::string& action);
  // Every control-plane response goes through these, so each is counted by status class.
  asio::awaitable<void> reply(http::Exchange& ex, unsigned status, std::string_view body,
                              std::string_view content_type, const http::Fields& extra = {});
  asio::awaitable<void> reply_json(http::Exchange& ex, unsigned status, std::string_view body,
                                   const http::Fields& extra = {});
  asio::awaitable<void> error_response(http::Exchange& ex, const Error& e);
  asio::awaitable<void> error_response(http::Exchange& ex, unsigned status, std::string_view message);
  // 501: an endpoint of E2B's API that Coppice does not have (yet).
  asio::awaitable<void> not_implemented(http::Exchange& ex);

  const core::GatewayConfig& cfg_;
  core::SandboxManager& mgr_;
  templates::TemplateRegistry& templates_;
  store::Store& store_;
  core::metrics::GatewayMetrics& metrics_;
  KeyChecker keys_;
  proxy::Proxy proxy_;
  const proxy::PreviewSigner* signer_ = nullptr;
  bool tls_ = false;
  // A reload walks every template's tree to measure it: that file system
  // work runs here, not on an API thread, one reload at a time.
  asio::thread_pool reload_pool_{1};
  // Template builds asked for through the API (templates_api.cc).
  std::unique_ptr<core::TemplateBuilds> builds_;
};

}  // namespace coppice::api
