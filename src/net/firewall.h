// The gateway's nftables table: what sandboxes may reach, NAT to the uplink,
// and the per-interface forwarding sysctls that let their traffic through.
//
// One `table inet <name>` holds everything (libnftables, text commands on one
// persistent nft_ctx):
//
//   sets   deny_always  ipv4 intervals nobody reaches: the config's list (host
//                       addresses, LAN ranges...) plus 0/8, 127/8, 169.254/16,
//                       224/4 and 240/4 always
//          open_always  ipv4 intervals opened by the operator out of deny_always
//          offline      sandbox addresses with no network at all (no DNS either)
//          allow, deny  `sandbox . destination` intervals: the allowOut /
//                       denyOut CIDRs of sandboxes with up to 32 of them
//          allow_dns    `sandbox . address` with a timeout: addresses the
//                       resolver opened for an allowed domain
//          sa_<hex>, sd_<hex>  the same for one sandbox with more than 32
//                       entries (<hex>: its address): its allow and deny lists
//   map    by_sandbox   sandbox address -> `jump sb_<hex>`, for those sandboxes
//   chain  sb_<hex>     `ip saddr . ip daddr @sa_<hex> accept`, then `... @sd_<hex> drop`
//   forward  from the bridge: not IPv4, not to the uplink, or not from the
//            subnet: drop; offline: drop; ct established,related: accept;
//            deny_always (unless open_always): drop; allow_dns: accept;
//            allow: accept; the sandbox's chain; deny: drop; accept.  To the
//            bridge: established,related accept, else drop (nothing comes
//            in).  From the uplink to anywhere else: drop, when this gateway
//            turned the uplink's forwarding on.
//   input    from the bridge: replies to the host's own connections and
//            related ICMP: accept; offline: drop; DNS (udp/tcp 53) to the
//            bridge address: accept; everything else: drop.
//   postrouting (nat)  from the subnet out of the uplink: masquerade.
//
// So: allow beats deny; deny_always beats allow unless open_always; an
// offline sandbox reaches nothing, the host's resolver included.
//
// Why two homes for a sandbox's lists (measured, nftables 1.0.6, Linux 6.18;
// figures in firewall_test.cc's SetRulesCostBySize):
//   - the kernel deletes elements of a concatenated interval (pipapo) set one
//     by one at a cost that grows with the set's size: replacing 10,000
//     entries in a shared set took ~6 s, holding up every DNS answer. A set
//     of the sandbox's own is instead deleted whole and made afresh in the
//     same transaction: 10,000 entries replaced in ~0.4-0.7 s (mostly nft
//     parsing them), cleared in ~1 ms;
//   - but nft refreshes its cache of the table's sets and chains before each
//     command after a change, so sets and a chain per sandbox make every call
//     (allow_resolved on the DNS path included) cost ~13 us more per such
//     sandbox: with 2000 of them, ~26 ms a call instead of ~0.3 ms.
// Short lists (the common case) therefore go in the shared sets; long ones
// get sets and a chain of their own.
//
// Deletions that need not know what is there are written as "add X; delete
// X" in one transaction (it succeeds whether or not X existed). The
// bookkeeping here (what each sandbox has in the shared sets and which
// resolved addresses) is read back from the kernel by open() with
// keep_elements and whenever a change fails because it was wrong.
//
// Threading: every method may be called from any thread; one mutex guards
// the nft_ctx and the bookkeeping (held across the nft call, which is a
// netlink round trip, ~0.2 ms for a small change).
//
// Nothing from a request reaches nft's text unescaped: addresses are
// formatted here from integers, names come from the validated config only.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "common/result.h"
#include "net/addr.h"

struct nft_ctx;

namespace coppice::net {

// One sandbox's egress policy.
struct EgressRules {
  bool internet = true;     // false: nothing leaves, DNS included
  std::vector<Cidr4> allow;  // allowOut CIDRs (allow wins over deny)
  std::vector<Cidr4> deny;   // denyOut CIDRs
};

struct FirewallConfig {
  // The nft table's name (family inet): [a-z_][a-z0-9_-]{0,31}, and not an
  // nft keyword (nft refuses one: open() then fails naming it).
  std::string table = "coppice";
  // The sandboxes' bridge and the interface their traffic leaves by (1..15
  // characters of [A-Za-z0-9_.-]; both must exist when open() runs).
  std::string bridge = "coppice0";
  std::string uplink;
  // The sandboxes' subnet and the bridge's own address in it (their gateway
  // and DNS server).
  Cidr4 subnet{0x0ad50000u, 16};
  uint32_t gateway_addr = 0x0ad50001u;
  // Ranges no sandbox reaches whatever its rules (host addresses, LAN
  // ranges...), and operator-opened exceptions to them.
  std::vector<Cidr4> deny_always, open_always;
  // true: keep the per-sandbox state (offline, by_sandbox, the sb_* chains,
  // allow_dns with its timeouts) of a table left by a previous process, so a
  // restarted gateway keeps every sandbox's rules: open() then replaces only
  // the base chains and deny_always/open_always. false: start empty.
  bool keep_elements = false;
};

class Firewall {
 public:
  // Validates `config`, then replaces any table of that name with a fresh one
  // in ONE nft transaction (so there is never a moment without rules; with
  // keep_elements the per-sandbox part stays and only the base chains and
  // fixed sets are replaced), then turns on forwarding for the bridge and
  // the uplink, remembering which it changed. A failure changes no sysctl
  // and leaves whatever table was there as it was. kInvalidArgument for a
  // bad config, kNotFound for a missing interface.
  static Result<std::unique_ptr<Firewall>> open(FirewallConfig config);
  // close(), logging a failure.
  ~Firewall();
  Firewall(const Firewall&) = delete;
  Firewall& operator=(const Firewall&) = delete;

  // Deletes the table and sets back the forwarding sysctls this object
  // turned on. Idempotent; afterwards every other method fails with
  // kFailedPrecondition.
  Status close();
  // Lets go of the table without deleting it and forgets the forwarding
  // sysctls: for a gateway that stops to be restarted, whose next open() with
  // keep_elements takes the rules over (the sandboxes never lose them).
  // Afterwards every other method fails with kFailedPrecondition.
  void release();

  // Replaces the sandbox's explicit rules (offline, allow, deny) with
  // `rules` in ONE transaction: no packet sees a mix of old and new.
  // Elements added by allow_resolved stay. Overlapping CIDRs are merged.
  // kInvalidArgument when `sandbox` is not a sandbox address of the subnet;
  // kTooLarge above 65536 entries in a list.
  Status set_rules(uint32_t sandbox, const EgressRules& rules);
  // Removes every element of the sandbox, allow_resolved ones included, in
  // one transaction. Idempotent.
  Status clear(uint32_t sandbox);
  // Lets `sandbox` reach `ip` for `ttl` (1 s .. 7 days): the resolver's
  // answer for an allowed domain. A repeat refreshes the timeout.
  Status allow_resolved(uint32_t sandbox, uint32_t ip, std::chrono::seconds ttl);
  // Every sandbox address with anything in the table (offline, by_sandbox or
  // allow_dns), read from the kernel: orphan cleanup after a restart with
  // keep_elements.
  Result<std::set<uint32_t>> sandboxes_with_elements();
  // What the kernel holds for the sandbox: 1 if offline, + its allow and
  // deny intervals, + its allow_dns elements (leak checks).
  Result<size_t> element_count(uint32_t sandbox);

  const FirewallConfig& config() const { return config_; }

  // Bookkeeping (public for the implementation's helpers only).
  // An inclusive address range, host byte order.
  struct Range {
    uint32_t first = 0, last = 0;
    friend auto operator<=>(const Range&, const Range&) = default;
  };
  // What the table holds for one sandbox.
  struct Entry {
    bool offline = false;
    std::vector<Range> allow, deny;              // in the shared sets: sorted, disjoint
    bool chain = false;                          // large lists: in its own chain
    std::vector<Range> chain_allow, chain_deny;  // what that chain holds (when known)
    std::map<uint32_t, std::chrono::steady_clock::time_point> resolved;  // allow_dns: ip -> expiry
    bool empty() const { return !offline && allow.empty() && deny.empty() && !chain && resolved.empty(); }
  };

 private:
  Firewall(FirewallConfig config, nft_ctx* ctx);

  Status run_locked(const std::string& commands);
  Result<std::string> list_json_locked(const std::string& what);
  Result<std::map<uint32_t, Entry>> read_kernel_locked();
  Status replace_locked(uint32_t sandbox, const Entry& to);
  Status close_locked();

  const FirewallConfig config_;
  std::mutex mu_;
  nft_ctx* ctx_;  // guarded by mu_; null once closed or released
  // What the table holds per sandbox (read back from the kernel by open()
  // with keep_elements, and whenever a change fails); guarded by mu_.
  std::map<uint32_t, Entry> sandboxes_;
  std::vector<std::string> forwarding_turned_on_;  // guarded by mu_
};

}  // namespace coppice::net
