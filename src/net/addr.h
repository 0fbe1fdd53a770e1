// IPv4 networks. A placeholder holding only the type netlink.h needs; the
// full version (parsing, formatting, contains) replaces this file.
#pragma once

#include <cstdint>

namespace coppice::net {

// An IPv4 network: `addr` in host byte order with the host bits masked off,
// `prefix` 0..32.
struct Cidr4 {
  uint32_t addr = 0;
  int prefix = 32;
  bool operator==(const Cidr4&) const = default;
};

}  // namespace coppice::net
