// A sandbox's network configuration in E2B's terms (create's
// `allow_internet_access` and `network`, PUT /sandboxes/{id}/network), checked
// entry by entry, and the egress policy the firewall and the resolver
// enforce, compiled from it.
//
// E2B's rules, exactly: allowOut takes CIDRs, bare IPs, domain names and
// `*.domain`; denyOut CIDRs and IPs; an allowed destination wins over a
// denied one; what no rule names is allowed. allow_internet_access: false is
// denyOut 0.0.0.0/0 (E2B's definition); with no allowOut entry at all it is
// "offline": nothing leaves, DNS included.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "net/addr.h"

namespace coppice::net {

// Most entries in allowOut or in denyOut.
inline constexpr size_t kMaxRuleEntries = 4096;

struct NetworkConfig {
  bool internet = true;                 // allow_internet_access
  std::vector<std::string> allow_out;   // as given (checked; compile() normalises)
  std::vector<std::string> deny_out;    // as given (checked)
  bool allow_public_traffic = true;     // false: a traffic token is needed on the sandbox's ports
  std::string mask_request_host;        // "" or the Host sent to the sandbox (${PORT} replaced)
  uint64_t egress_limit_bps = 0;        // bytes/s out of the sandbox (extension: maxEgressMbps); 0: none
  bool operator==(const NetworkConfig&) const = default;
};

// What the firewall and the resolver enforce for one sandbox.
struct EgressPolicy {
  bool offline = false;        // nothing leaves and no DNS
  bool default_deny = false;   // denyOut covers 0.0.0.0/0: only allowed destinations
  std::vector<Cidr4> allow;    // address rules of allowOut
  std::vector<Cidr4> deny;     // denyOut
  std::vector<std::string> domains;  // "name" or "*.name", lowercase, no trailing dot
  bool operator==(const EgressPolicy&) const = default;
};

// One allowOut entry: "a.b.c.d", "a.b.c.d/n", "name" or "*.name"; nullopt
// `cidr` means a domain. Errors name the entry.
struct RuleEntry {
  std::optional<Cidr4> cidr;
  std::string domain;
};
Result<RuleEntry> parse_allow_entry(std::string_view s);

// Whether `name` (lowercase, no trailing dot) is matched by `pattern`
// ("x": exactly x; "*.x": any name strictly below x).
bool domain_matches(std::string_view pattern, std::string_view name);

// Create: `allow_internet_access` (absent: true) and `network` (absent or
// null: defaults). Fields coppiced cannot honour yet (egressProxy, rules)
// and unknown ones are refused by name; httpsPorts is left to the caller. kInvalidArgument with
// a message naming the bad field or entry.
Result<NetworkConfig> parse_create(const nlohmann::json* network, const nlohmann::json* allow_internet_access);

// PUT /sandboxes/{id}/network: replaces the egress rules (omitted fields are
// cleared, as E2B does); allowPublicTraffic and maskRequestHost stay.
Result<NetworkConfig> parse_update(const NetworkConfig& current, const nlohmann::json& body);

EgressPolicy compile(const NetworkConfig& c);

// True for E2B's default: everything allowed, no rule at all.
inline bool is_default(const EgressPolicy& p) {
  return !p.offline && !p.default_deny && p.allow.empty() && p.deny.empty() && p.domains.empty();
}

// E2B's SandboxDetail.network object.
nlohmann::json to_e2b_json(const NetworkConfig& c);
// Stored form (the sandbox record's extra) and back.
nlohmann::json to_store_json(const NetworkConfig& c);
Result<NetworkConfig> from_store_json(const nlohmann::json& j);

}  // namespace coppice::net
