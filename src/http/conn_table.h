// Admission of connections to an http::Server: how many it holds in total and
// per client address, and which one gives way when a new one arrives at a
// bound. Without bounds a client that opens connections and sends nothing
// takes every file descriptor of the process (the gateway's control plane and
// its sandboxes need those too).
//
// A connection is either waiting for a request head (idle: a kept-alive
// connection between requests, a new one that has sent nothing yet, a head
// trickling in) or busy (a request is being served, a stream is open, the
// connection was handed over). At a bound, the idle connection that has been
// idle longest gives way: of the same client at the per-client bound, of any
// client at the total. A busy connection is never evicted; when every
// connection at the bound is busy, the new one is refused (the server answers
// 503 and closes it). Idle connections cost a client nothing to open, so they
// must not be able to keep a client with real work out.
//
// Thread-safe: one mutex, held for a few map operations and never across a
// call out (the eviction callback runs after it is released).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace coppice::http {

struct ConnectionLimits {
  // Connections held at once, all clients together; 0: no bound.
  size_t max_total = 0;
  // Connections held at once from one client address; 0: no bound.
  size_t max_per_client = 0;
};

// The connection bound for a process whose file descriptor limit is
// `fd_limit`: a proxied connection holds two descriptors (the client's and
// the upstream's), and a quarter of the limit (at least 256) stays free for
// everything else: the store, envd sockets, sandboxes being made. At least 16.
size_t connections_for_fd_limit(uint64_t fd_limit);

class ConnectionTable {
 public:
  struct Conn {
    std::string client;
    // Called (once, without the table's lock) when the connection is chosen
    // to give way; it must make the connection's owner close it soon.
    std::function<void()> on_evict;
    // Set when evicted; the owner must then close the connection.
    std::atomic<bool> evicted{false};
    // Guarded by the table's mutex.
    bool idle = true;
    bool released = false;
    uint64_t idle_seq = 0;
  };
  using Ticket = std::shared_ptr<Conn>;

  explicit ConnectionTable(ConnectionLimits limits) : limits_(limits) {}

  // Admits a connection from `client` (idle until mark_busy), evicting an
  // idle one when a bound is reached. nullptr when the connection must be
  // refused: the bound is reached and every connection under it is busy.
  // `on_evict` becomes the connection's Conn::on_evict.
  Ticket admit(const std::string& client, std::function<void()> on_evict);
  // A request head has arrived: the connection is no longer evictable.
  // False when it was evicted already (the owner closes it).
  bool mark_busy(const Ticket& t);
  // The connection waits for its next request head again.
  void mark_idle(const Ticket& t);
  // The connection is closed. Idempotent.
  void release(const Ticket& t);

  size_t total() const;
  size_t count(const std::string& client) const;
  const ConnectionLimits& limits() const { return limits_; }

 private:
  struct Client {
    size_t count = 0;
    std::map<uint64_t, Conn*> idle;  // by idle_seq: oldest first
  };
  // With mu_ held: marks `c` evicted, takes it out of the counts and returns
  // its callback, to be called once the lock is released.
  std::function<void()> evict_locked(Conn& c);
  void forget_locked(Conn& c);
  void unlist_idle_locked(Conn& c);

  const ConnectionLimits limits_;
  mutable std::mutex mu_;
  size_t total_ = 0;
  uint64_t next_seq_ = 0;
  std::unordered_map<std::string, Client> clients_;
  // Every idle connection, oldest first. A listed Conn is alive: its owner
  // releases it before dropping its Ticket.
  std::map<uint64_t, Conn*> idle_;
};

}  // namespace coppice::http
