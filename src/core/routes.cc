#include "core/routes.h"

#include <functional>

namespace coppice::core {

RouteTable::RouteTable() {
  for (auto& s : shards_) s.store(std::make_shared<const Map>());
}

size_t RouteTable::shard_of(std::string_view id) { return std::hash<std::string_view>{}(id) % kShards; }

std::shared_ptr<const Route> RouteTable::lookup(std::string_view id) const {
  auto map = shards_[shard_of(id)].load(std::memory_order_acquire);
  auto it = map->find(std::string(id));
  return it == map->end() ? nullptr : it->second;
}

void RouteTable::publish(Route r) {
  auto& shard = shards_[shard_of(r.id)];
  auto next = std::make_shared<Map>(*shard.load(std::memory_order_acquire));
  std::string id = r.id;
  auto [it, added] = next->insert_or_assign(std::move(id), std::make_shared<const Route>(std::move(r)));
  (void)it;
  shard.store(std::move(next), std::memory_order_release);
  if (added) size_.fetch_add(1, std::memory_order_relaxed);
}

void RouteTable::remove(const std::string& id) {
  auto& shard = shards_[shard_of(id)];
  auto cur = shard.load(std::memory_order_acquire);
  if (!cur->count(id)) return;
  auto next = std::make_shared<Map>(*cur);
  next->erase(id);
  shard.store(std::move(next), std::memory_order_release);
  size_.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace coppice::core
