// Network interface set-up inside a fresh network namespace.
#pragma once

namespace coppice::sys::netif {

// Brings the loopback interface of the caller's network namespace up (a new
// namespace starts with "lo" down). Uses SIOCSIFFLAGS, which needs no netlink
// round trip. Async-signal-safe; returns 0 or an errno.
int loopback_up();

}  // namespace coppice::sys::netif
