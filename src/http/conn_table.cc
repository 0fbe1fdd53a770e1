#include "http/conn_table.h"

#include <algorithm>

namespace coppice::http {

size_t connections_for_fd_limit(uint64_t fd_limit) {
  fd_limit = std::min<uint64_t>(fd_limit, uint64_t{1} << 20);  // RLIM_INFINITY
  const uint64_t reserve = std::max<uint64_t>(256, fd_limit / 4);
  const uint64_t usable = fd_limit > reserve ? fd_limit - reserve : 0;
  return static_cast<size_t>(std::max<uint64_t>(16, usable / 2));
}

void ConnectionTable::unlist_idle_locked(Conn& c) {
  if (!c.idle) return;
  idle_.erase(c.idle_seq);
  auto it = clients_.find(c.client);
  if (it != clients_.end()) it->second.idle.erase(c.idle_seq);
}

void ConnectionTable::forget_locked(Conn& c) {
  unlist_idle_locked(c);
  c.idle = false;
  c.released = true;
  --total_;
  auto it = clients_.find(c.client);
  if (it != clients_.end() && --it->second.count == 0) clients_.erase(it);
}

std::function<void()> ConnectionTable::evict_locked(Conn& c) {
  c.evicted = true;
  forget_locked(c);
  return std::move(c.on_evict);
}

ConnectionTable::Ticket ConnectionTable::admit(const std::string& client, std::function<void()> on_evict) {
  std::function<void()> evicted[2];
  Ticket t;
  {
    std::lock_guard lock(mu_);
    auto cit = clients_.find(client);
    if (limits_.max_per_client && cit != clients_.end() && cit->second.count >= limits_.max_per_client) {
      if (cit->second.idle.empty()) return nullptr;
      evicted[0] = evict_locked(*cit->second.idle.begin()->second);
    }
    if (limits_.max_total && total_ >= limits_.max_total) {
      if (idle_.empty()) return nullptr;
      evicted[1] = evict_locked(*idle_.begin()->second);
    }
    t = std::make_shared<Conn>();
    t->client = client;
    t->on_evict = std::move(on_evict);
    t->idle_seq = next_seq_++;
    ++total_;
    auto& cl = clients_[client];
    ++cl.count;
    cl.idle.emplace(t->idle_seq, t.get());
    idle_.emplace(t->idle_seq, t.get());
  }
  for (auto& f : evicted)
    if (f) f();
  return t;
}

bool ConnectionTable::mark_busy(const Ticket& t) {
  std::lock_guard lock(mu_);
  if (t->released) return false;
  unlist_idle_locked(*t);
  t->idle = false;
  return true;
}

void ConnectionTable::mark_idle(const Ticket& t) {
  std::lock_guard lock(mu_);
  if (t->released || t->idle) return;
  t->idle = true;
  t->idle_seq = next_seq_++;
  idle_.emplace(t->idle_seq, t.get());
  clients_[t->client].idle.emplace(t->idle_seq, t.get());
}

void ConnectionTable::release(const Ticket& t) {
  std::lock_guard lock(mu_);
  if (t->released) return;
  forget_locked(*t);
}

size_t ConnectionTable::total() const {
  std::lock_guard lock(mu_);
  return total_;
}

size_t ConnectionTable::count(const std::string& client) const {
  std::lock_guard lock(mu_);
  auto it = clients_.find(client);
  return it == clients_.end() ? 0 : it->second.count;
}

}  // namespace coppice::http
