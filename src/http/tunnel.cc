#include "http/tunnel.h"

#include <boost/asio/experimental/awaitable_operators.hpp>

namespace coppice::http {

using namespace asio::experimental::awaitable_operators;

namespace {
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
using Clock = std::chrono::steady_clock;

// What the two directions and the idle watchdog share. All three run on one
// strand, so plain fields suffice; each checks `stopping` after every wait,
// because an operation that completed just before a cancel is not aborted.
struct Shared {
  Shared(Socket& a, Socket& b) : a(a), b(b), timer(a.get_executor()) {}

  Socket& a;
  Socket& b;
  asio::steady_timer timer;  // the watchdog's
  Clock::time_point last_activity = Clock::now();
  int directions_ended = 0;
  bool stopping = false;
  bool timed_out = false;
  boost::system::error_code error;

  // Ends everything now: pending reads and writes complete with
  // operation_aborted, and no new one is started.
  void abort(boost::system::error_code ec) {
    if (!error) error = ec;
    stopping = true;
    boost::system::error_code ig;
    a.cancel(ig);
    b.cancel(ig);
    timer.cancel();
  }
  bool finished() const { return stopping || directions_ended == 2; }
};

// Moves bytes from `from` to `to` until `from` says EOF (passed on as a
// half-close of `to`) or anything fails (which ends both directions).
asio::awaitable<void> pump(Shared& sh, Socket& from, Socket& to, beast::flat_buffer& buf,
                           const std::function<void(size_t)>& on_bytes, uint64_t& total) {
  for (;;) {
    if (buf.size() > 0) {
      auto [ec, n] = co_await asio::async_write(to, buf.data(), kTuple);
      if (sh.stopping) co_return;
      if (ec) {
        sh.abort(ec);
        co_return;
      }
      buf.consume(n);
      total += n;
      sh.last_activity = Clock::now();
      if (on_bytes) on_bytes(n);
    }
    auto [ec, n] = co_await from.async_read_some(buf.prepare(kTunnelChunk), kTuple);
    if (sh.stopping) co_return;
    if (ec == asio::error::eof) {
      boost::system::error_code ig;
      to.shutdown(Socket::shutdown_send, ig);
      if (++sh.directions_ended == 2) sh.timer.cancel();
      co_return;
    }
    if (ec) {
      sh.abort(ec);
      co_return;
    }
    buf.commit(n);
    sh.last_activity = Clock::now();
  }
}

asio::awaitable<void> watchdog(Shared& sh, Clock::duration idle) {
  while (!sh.finished()) {
    sh.timer.expires_at(sh.last_activity + idle);
    co_await sh.timer.async_wait(kTuple);
    if (sh.finished()) co_return;
    if (Clock::now() - sh.last_activity >= idle) {
      sh.timed_out = true;
      sh.abort({});
      co_return;
    }
  }
}
}  // namespace

asio::awaitable<TunnelResult> tunnel(Socket& a, beast::flat_buffer a_read_ahead, Socket& b,
                                     beast::flat_buffer b_read_ahead, TunnelOptions opts) {
  Shared sh(a, b);
  TunnelResult res;
  co_await (pump(sh, a, b, a_read_ahead, opts.on_a_to_b, res.a_to_b) &&
            pump(sh, b, a, b_read_ahead, opts.on_b_to_a, res.b_to_a) && watchdog(sh, opts.idle_timeout));
  res.timed_out = sh.timed_out;
  res.error = sh.error;
  boost::system::error_code ig;
  a.shutdown(Socket::shutdown_both, ig);
  b.shutdown(Socket::shutdown_both, ig);
  a.close(ig);
  b.close(ig);
  co_return res;
}

}  // namespace coppice::http
