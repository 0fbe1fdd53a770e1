// IPv4 addresses and CIDR blocks as the network code and the API use them:
// host byte order, parsed strictly (what a user typed is named in the error).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace coppice::net {

struct Cidr4 {
  uint32_t addr = 0;  // host byte order, host bits zero
  int prefix = 32;    // 0..32
  bool operator==(const Cidr4&) const = default;
  uint32_t mask() const { return prefix == 0 ? 0 : ~uint32_t(0) << (32 - prefix); }
  uint32_t first() const { return addr; }
  uint32_t last() const { return addr | ~mask(); }
  bool contains(uint32_t a) const { return (a & mask()) == addr; }
  // True when every address of `o` is in this block.
  bool covers(const Cidr4& o) const { return o.prefix >= prefix && contains(o.addr); }
  bool overlaps(const Cidr4& o) const { return contains(o.addr) || o.contains(addr); }
};

// "a.b.c.d" (four decimal parts 0..255, no leading zeros but "0"): the address.
Result<uint32_t> parse_ipv4(std::string_view s);
// "a.b.c.d" (= /32) or "a.b.c.d/n"; host bits are masked off ("10.1.2.3/8" is 10.0.0.0/8).
Result<Cidr4> parse_cidr4(std::string_view s);

std::string ipv4_string(uint32_t addr);
inline std::string ipv4_to_string(uint32_t addr) { return ipv4_string(addr); }
std::string to_string(const Cidr4& c);  // "a.b.c.d/n" (also for /32)

// The same as free functions, for code that works on plain values.
constexpr uint32_t prefix_mask(int prefix) {
  return prefix <= 0 ? 0u : prefix >= 32 ? 0xffffffffu : ~((1u << (32 - prefix)) - 1u);
}
constexpr uint32_t first_address(Cidr4 c) { return c.addr & prefix_mask(c.prefix); }
constexpr uint32_t last_address(Cidr4 c) { return first_address(c) | ~prefix_mask(c.prefix); }
constexpr bool contains(Cidr4 net, uint32_t ip) { return (ip & prefix_mask(net.prefix)) == first_address(net); }

}  // namespace coppice::net
