// The data plane's view of the sandboxes: id -> where its envd listens, how
// its ports are reached, its state and its team. Written only by the
// sandbox owner (SandboxManager's strand), read lock-free by any thread: a
// proxied request never waits on the control plane, nor the control plane
// on a proxied request.
//
// Each entry is immutable (a change publishes a new one). The table is split
// into shards, each an immutable map published through an atomic
// shared_ptr: a writer copies one shard (~1/64 of the table), a reader loads
// one pointer. Readers see each change whole, and a change is visible to
// every lookup that starts after publish()/remove() returned.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/lifecycle.h"
#include "sandbox/backend.h"

namespace coppice::core {

struct Route {
  std::string id;
  SandboxState state = SandboxState::kRunning;
  sandbox::SandboxHandle handle;  // envd's socket, what the backend needs to reach a port
  std::string team;               // the owning team ("" before teams are checked)
  std::string token;              // envd's access token ("" for an unsecured sandbox)
  // network.allowPublicTraffic: false: the e2b-traffic-access-token every
  // request to a port other than envd's must carry ("" = ports are public).
  std::string traffic_token;
  // network.maskRequestHost: the Host sent to the sandbox's ports, "${PORT}"
  // standing for the port ("" = the proxy's default).
  std::string mask_host;
  // network.httpsPorts: ports the proxy reaches over TLS (few; searched linearly).
  std::vector<uint16_t> https_ports;
  // lifecycle.autoResume: traffic to it while paused resumes it.
  bool auto_resume = false;
  bool running() const { return state == SandboxState::kRunning; }
};

class RouteTable {
 public:
  RouteTable();
  // The entry for `id`, or null. Lock-free; safe from any thread.
  std::shared_ptr<const Route> lookup(std::string_view id) const;
  // Owner only: adds or replaces the entry of r.id.
  void publish(Route r);
  // Owner only: removes the entry (no-op if absent).
  void remove(const std::string& id);
  size_t size() const { return size_.load(std::memory_order_relaxed); }
  // The first entry for which pred(const Route&) holds, or null: a walk of a
  // snapshot of every shard (O(n); for lookups that have no id).
  template <typename Pred>
  std::shared_ptr<const Route> find_if(Pred&& pred) const {
    for (const auto& shard : shards_) {
      auto map = shard.load(std::memory_order_acquire);
      for (const auto& [id, r] : *map)
        if (pred(*r)) return r;
    }
    return nullptr;
  }

 private:
  static constexpr size_t kShards = 64;
  using Map = std::unordered_map<std::string, std::shared_ptr<const Route>>;
  static size_t shard_of(std::string_view id);
  std::array<std::atomic<std::shared_ptr<const Map>>, kShards> shards_;
  std::atomic<size_t> size_{0};
};

}  // namespace coppice::core
