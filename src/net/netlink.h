// The kernel's network objects the gateway manages, over netlink (libmnl):
// the bridge, each sandbox's veth pair, addresses, routes, bridge-port
// isolation, link counters, the tbf egress limit and conntrack entries.
//
// Every call works in the network namespace of the calling thread unless it
// takes a `netns_fd`; a namespace is entered only for the instant a socket is
// made there (sys::socket_in_netns), so no thread is ever left in a sandbox's
// namespace. Each call opens its own netlink socket: the functions are
// thread-safe and hold no state between calls. Every request asks for an ACK
// and checks it; an error carries the errno, the kernel's extended-ACK text
// when there is one, and the step that failed ("create veth sb1a2b -> eth0:
// EEXIST (File exists)").
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "net/addr.h"

namespace coppice::net {

// Byte and packet counters of one link (IFLA_STATS64). On the host end of a
// sandbox's veth, rx is what the sandbox sent and tx what it received.
struct LinkStats {
  uint64_t rx_bytes = 0, rx_packets = 0, tx_bytes = 0, tx_packets = 0;
};

// Creates the bridge `name` if there is none, adds `addr`/`prefix` to it if
// it lacks that address (other addresses are left alone), gives it a fixed
// MAC derived from `addr` (02:c0:<addr>: a bridge left to pick its own
// takes its lowest port's, which changes as ports come and go) and sets it up.
// Idempotent. kFailedPrecondition when a link of that name exists and is not
// a bridge; kInvalidArgument for a bad name or prefix.
Status ensure_bridge(const std::string& name, uint32_t addr, int prefix);

// The sandbox's link, in one call (~0.4 ms): a veth pair whose host end
// `host_if` is enslaved to `bridge` as an isolated port (IFLA_BRPORT_ISOLATED:
// no traffic to other isolated ports, only to the bridge) and set up; the peer
// is created directly inside `netns_fd` as `eth0` with `addr`/`prefix`, up,
// with `lo` up and a default route via `gateway`. Both ends take the bridge's
// MTU. The host end is up only once it is isolated. On any failure the host
// end is deleted again (which removes the peer) and the error says which step
// failed; kAlreadyExists when `host_if` exists already (it is left alone).
Status make_sandbox_link(int netns_fd, const std::string& host_if, const std::string& bridge,
                         uint32_t addr, int prefix, uint32_t gateway);

// Deletes the link (a veth's peer goes with it). A link that does not exist
// is success. Blocks for ~39 ms on a veth: keep it off request paths.
Status delete_link(const std::string& name);

// Whether a link of that name exists in the caller's namespace.
bool link_exists(const std::string& name);

// The counters of link `name`; kNotFound when there is none.
Result<LinkStats> link_stats(const std::string& name);

// The names of every link whose name starts with `name_prefix`, sorted.
Result<std::vector<std::string>> list_links(std::string_view name_prefix);

// The first IPv4 address of `ifname` inside `netns_fd` (host byte order);
// kNotFound when the link or an IPv4 address on it is missing.
Result<uint32_t> netns_address(int netns_fd, const std::string& ifname);

// A tbf root qdisc on `ifname` inside `netns_fd` limiting what it sends to
// `bytes_per_s` (burst: 10 ms at that rate, at least 4 × the link's MTU;
// queue: ~50 ms of latency). Replaces an earlier limit; 0 removes it (no
// limit is success). The sandbox has no CAP_NET_ADMIN in its namespace, so it
// cannot remove the qdisc.
Status set_egress_limit(int netns_fd, const std::string& ifname, uint64_t bytes_per_s);

// Conntrack entries (IPv4, any protocol and zone) in the caller's namespace
// whose ORIGINAL direction's source is `addr` (host byte order): deleted /
// counted. Returns how many. An entry gone between the dump and its delete is
// not counted and is no error.
Result<size_t> conntrack_flush_source(uint32_t addr);
Result<size_t> conntrack_count_source(uint32_t addr);

// The name of the interface of the IPv4 default route of the main table (the
// one with the lowest metric); kNotFound when there is none.
Result<std::string> default_route_interface();

// Every IPv4 address of the caller's namespace as the network it sits in
// (host bits masked off: 192.168.1.7/24 -> 192.168.1.0/24; 127.0.0.1/8 ->
// 127.0.0.0/8), without duplicates. Each network contains its host address.
Result<std::vector<Cidr4>> host_ipv4_networks();

// Reads and writes /proc/sys/net/ipv4/conf/<ifname>/forwarding. /proc/sys/net
// is that of the calling thread's network namespace. `was_on` (may be null)
// receives the value before the write. kInvalidArgument for a name that is
// not a plain interface name ('/', ".", ".." or empty); kNotFound for no such
// interface.
Status set_forwarding(const std::string& ifname, bool on, bool* was_on);

}  // namespace coppice::net
