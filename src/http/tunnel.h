// A byte tunnel between two stream sockets: what a connection carries once
// HTTP has handed it over (101 Switching Protocols), relayed both ways
// without looking at it.
//
// Memory is bounded whatever the traffic: each direction owns one buffer,
// the read-ahead it starts with (grown to at least kTunnelChunk), and never
// reads more than fits in it before the bytes are written on.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

#include "http/server.h"

namespace coppice::http {

// Largest piece read from one side before it is written to the other.
inline constexpr size_t kTunnelChunk = 64 * 1024;

struct TunnelOptions {
  // The tunnel is torn down when no byte has passed either way this long: a
  // peer can vanish without a FIN or a reset (a suspended laptop, a dropped
  // NAT entry) and nothing else would ever notice. Long, because upgraded
  // connections (WebSocket) are often quiet for minutes between messages.
  std::chrono::steady_clock::duration idle_timeout = std::chrono::hours(1);
  // Called with the size of each piece written a -> b, and b -> a (for
  // metrics); either may be empty.
  std::function<void(size_t)> on_a_to_b;
  std::function<void(size_t)> on_b_to_a;
};

struct TunnelResult {
  uint64_t a_to_b = 0;  // bytes written to b, read-ahead included
  uint64_t b_to_a = 0;
  bool timed_out = false;  // ended by TunnelOptions::idle_timeout
  // The first failure (a reset, a write to a peer that is gone), or empty
  // when both sides closed in order.
  boost::system::error_code error;
};

// Relays bytes between `a` and `b` until both directions have ended, then
// shuts down and closes both sockets. `a_read_ahead` holds bytes already read
// from a (they go to b first), `b_read_ahead` likewise for b.
//
// A direction ends at EOF from its source, which is passed on as a
// half-close (shutdown for writing) of its destination: a peer that has
// finished sending still receives what the other side has to say. An error
// in either direction, or the idle timeout, ends both at once.
//
// Never throws. Both sockets must be used by nothing else while it runs; it
// runs its two directions on the calling coroutine's executor, which must
// therefore be a strand (or a single-threaded context).
asio::awaitable<TunnelResult> tunnel(Socket& a, beast::flat_buffer a_read_ahead, Socket& b,
                                     beast::flat_buffer b_read_ahead, TunnelOptions opts = {});

}  // namespace coppice::http
