// IPv4 addresses and CIDR ranges: parsing, formatting, containment.
//
// Addresses are uint32_t in host byte order everywhere in src/net, so
// arithmetic on them (masks, ranges, the next free address) is plain integer
// arithmetic; conversion to network order happens only at a socket or
// netlink boundary.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace coppice::net {

// An IPv4 network: `addr` (host byte order) with its host bits zero, and a
// prefix length 0..32. A bare address is a /32.
struct Cidr4 {
  uint32_t addr = 0;
  int prefix = 32;

  friend bool operator==(const Cidr4&, const Cidr4&) = default;
};

// The netmask of a prefix length 0..32, host byte order (0 for /0).
constexpr uint32_t prefix_mask(int prefix) {
  return prefix <= 0 ? 0u : prefix >= 32 ? 0xffffffffu : ~((1u << (32 - prefix)) - 1u);
}

// The first and last address of a network.
constexpr uint32_t first_address(Cidr4 c) { return c.addr & prefix_mask(c.prefix); }
constexpr uint32_t last_address(Cidr4 c) { return first_address(c) | ~prefix_mask(c.prefix); }

// True when `ip` lies in `net`.
constexpr bool contains(Cidr4 net, uint32_t ip) {
  return (ip & prefix_mask(net.prefix)) == first_address(net);
}

// Strict dotted-quad "a.b.c.d": four decimal parts 0..255, no leading zeros
// (so "010.0.0.1" is not read as octal by anyone), nothing else.
// kInvalidArgument naming the text otherwise.
Result<uint32_t> parse_ipv4(std::string_view text);

// "a.b.c.d" (a /32) or "a.b.c.d/n" with n 0..32; host bits are masked off
// ("10.1.2.3/8" is 10.0.0.0/8). kInvalidArgument naming the entry otherwise.
Result<Cidr4> parse_cidr4(std::string_view text);

// "a.b.c.d".
std::string ipv4_to_string(uint32_t addr);
// "a.b.c.d/n" ("a.b.c.d/32" for a single address).
std::string to_string(Cidr4 c);

}  // namespace coppice::net
