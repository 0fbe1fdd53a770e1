#include "net/firewall.h"

#include <fcntl.h>
#include <nftables/libnftables.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <optional>

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "common/scope_exit.h"

namespace coppice::net {

namespace {

using Clock = std::chrono::steady_clock;

using Range = Firewall::Range;
using Entry = Firewall::Entry;

constexpr size_t kMaxRulesPerList = 65536;
// A sandbox with more allow+deny intervals than this gets a chain of its
// own instead of elements in the shared allow/deny sets (see firewall.h).
constexpr size_t kSharedSetLimit = 32;
constexpr std::chrono::seconds kMaxResolvedTtl{7 * 24 * 3600};
// An allow_resolved element whose expiry (as estimated here) is this far in
// the past is surely gone from the kernel and is forgotten.
constexpr std::chrono::seconds kExpirySlack{5};

// Addresses nobody behind the bridge reaches, whatever the config says:
// "this network", loopback, link-local (cloud metadata), multicast and the
// reserved range with the limited broadcast.
constexpr Cidr4 kBuiltinDenyAlways[] = {
    {0x00000000u, 8}, {0x7f000000u, 8}, {0xa9fe0000u, 16}, {0xe0000000u, 4}, {0xf0000000u, 4}};

bool valid_table_name(const std::string& s) {
  if (s.empty() || s.size() > 32) return false;
  if (!((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_')) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

bool valid_ifname(const std::string& s) {
  if (s.empty() || s.size() > 15 || s == "." || s == "..") return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

// Sorted, disjoint ranges covering exactly the union of `cidrs` (the kernel
// refuses overlapping interval elements).
std::vector<Range> normalize(const std::vector<Cidr4>& cidrs) {
  std::vector<Range> r;
  r.reserve(cidrs.size());
  for (const Cidr4& c : cidrs) r.push_back({first_address(c), last_address(c)});
  std::sort(r.begin(), r.end());
  std::vector<Range> out;
  for (const Range& x : r) {
    if (!out.empty() && (out.back().last == 0xffffffffu || x.first <= out.back().last + 1)) {
      out.back().last = std::max(out.back().last, x.last);
    } else {
      out.push_back(x);
    }
  }
  return out;
}

// "a.b.c.d/n" when the range is one network, "a.b.c.d-e.f.g.h" otherwise.
std::string range_text(Range r) {
  uint64_t size = uint64_t{r.last} - r.first + 1;
  if ((size & (size - 1)) == 0 && (r.first & (size - 1)) == 0) {
    int prefix = 32;
    while (size > 1) size >>= 1, --prefix;
    return to_string(Cidr4{r.first, prefix});
  }
  return ipv4_to_string(r.first) + "-" + ipv4_to_string(r.last);
}

// One set element of a JSON listing: an address, a prefix or a range.
std::optional<Range> json_range(const nlohmann::json& j) {
  if (j.is_string()) {
    auto a = parse_ipv4(j.get<std::string>());
    if (!a) return std::nullopt;
    return Range{*a, *a};
  }
  if (!j.is_object()) return std::nullopt;
  if (auto p = j.find("prefix"); p != j.end() && p->is_object()) {
    auto a = parse_ipv4(p->value("addr", std::string()));
    int len = p->value("len", -1);
    if (!a || len < 0 || len > 32) return std::nullopt;
    Cidr4 c{*a & prefix_mask(len), len};
    return Range{first_address(c), last_address(c)};
  }
  if (auto r = j.find("range"); r != j.end() && r->is_array() && r->size() == 2) {
    auto lo = json_range((*r)[0]);
    auto hi = json_range((*r)[1]);
    if (!lo || !hi || lo->first > hi->last) return std::nullopt;
    return Range{lo->first, hi->last};
  }
  return std::nullopt;
}

// The last line of nft's error output that says what failed, without the
// echo of the (possibly huge) command and its caret line.
std::string nft_error_text(const char* buf) {
  std::string all = buf ? buf : "";
  std::string first;
  size_t pos = 0;
  while (pos < all.size()) {
    size_t nl = all.find('\n', pos);
    std::string line = all.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? all.size() : nl + 1;
    if (line.rfind("Error:", 0) == 0) {
      first = line.substr(7);
      break;
    }
  }
  if (first.empty()) first = all.substr(0, all.find('\n'));
  if (first.size() > 300) first = first.substr(0, 300) + "...";
  return first.empty() ? "nft command failed" : first;
}

ErrorCode nft_error_code(const std::string& text) {
  if (text.find("No such file or directory") != std::string::npos) return ErrorCode::kNotFound;
  if (text.find("File exists") != std::string::npos) return ErrorCode::kAlreadyExists;
  if (text.find("Operation not permitted") != std::string::npos) return ErrorCode::kPermissionDenied;
  return ErrorCode::kInternal;
}

// net.ipv4.conf.<ifname>.forwarding of the calling thread's network namespace.
std::string forwarding_path(const std::string& ifname) {
  return "/proc/sys/net/ipv4/conf/" + ifname + "/forwarding";
}

Result<bool> read_forwarding(const std::string& ifname) {
  int fd = ::open(forwarding_path(ifname).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      return make_error(ErrorCode::kNotFound, "interface " + ifname + " does not exist", ENOENT);
    }
    return errno_error("open " + forwarding_path(ifname));
  }
  char c = 0;
  ssize_t n = ::read(fd, &c, 1);
  int err = errno;
  ::close(fd);
  if (n != 1) return errno_error("read " + forwarding_path(ifname), n < 0 ? err : EIO);
  return c != '0';
}

Status write_forwarding(const std::string& ifname, bool on) {
  int fd = ::open(forwarding_path(ifname).c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno_error("open " + forwarding_path(ifname));
  ssize_t n = ::write(fd, on ? "1\n" : "0\n", 2);
  int err = errno;
  ::close(fd);
  if (n != 2) return errno_error("write " + forwarding_path(ifname), n < 0 ? err : EIO);
  return ok();
}

std::string join_ranges(const std::vector<Range>& ranges) {
  std::string out;
  for (const Range& r : ranges) {
    if (!out.empty()) out += ", ";
    out += range_text(r);
  }
  return out;
}

// The chain and the two sets of a sandbox with long lists: "sb_0ad50002",
// "sa_0ad50002" (allow), "sd_0ad50002" (deny).
std::string name_of(const char* prefix, uint32_t sandbox) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%s_%08x", prefix, sandbox);
  return buf;
}
std::string chain_of(uint32_t sandbox) { return name_of("sb", sandbox); }

// The commands removing a sandbox's chain, its sets and its by_sandbox
// element, whether or not they exist ("add; delete" in one transaction
// cannot fail on absence).
std::string drop_chain_commands(const std::string& t, uint32_t sandbox) {
  const std::string chain = chain_of(sandbox), addr = ipv4_to_string(sandbox);
  std::string cmd = "add chain inet " + t + " " + chain + "\n" +
                    "add element inet " + t + " by_sandbox { " + addr + " : jump " + chain + " }\n" +
                    "delete element inet " + t + " by_sandbox { " + addr + " }\n" +
                    "flush chain inet " + t + " " + chain + "\n" +
                    "delete chain inet " + t + " " + chain + "\n";
  for (const char* prefix : {"sa", "sd"}) {
    const std::string set = name_of(prefix, sandbox);
    cmd += "add set inet " + t + " " + set + " { type ipv4_addr . ipv4_addr; flags interval; }\n";
    cmd += "delete set inet " + t + " " + set + "\n";
  }
  return cmd;
}

std::string offline_commands(const std::string& t, uint32_t sandbox, bool offline) {
  std::string e = " element inet " + t + " offline { " + ipv4_to_string(sandbox) + " }\n";
  return offline ? "add" + e : "add" + e + "delete" + e;
}

// The "elem" array of a JSON listing of one set or map (empty when it has none).
Result<nlohmann::json> listed_elements(const std::string& text, const char* kind) {
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("nftables") || !doc["nftables"].is_array()) {
    return make_error(ErrorCode::kInternal, "nft: unreadable JSON listing");
  }
  for (const auto& item : doc["nftables"]) {
    if (!item.is_object() || !item.contains(kind)) continue;
    const auto& s = item[kind];
    if (s.is_object() && s.contains("elem") && s["elem"].is_array()) return s["elem"];
    return nlohmann::json::array();
  }
  return nlohmann::json::array();
}

// The first address of a `sandbox` or `sandbox . x` element (maps list
// theirs as [key, value]); with the second part and its "expires".
struct ListedElement {
  uint32_t sandbox = 0;
  std::optional<Range> dest;
  std::optional<int64_t> expires_s;
};

std::optional<ListedElement> json_element(const nlohmann::json& e) {
  ListedElement out;
  const nlohmann::json* val = &e;
  if (e.is_array() && e.size() == 2) val = &e[0];  // a map's [key, value]
  if (val->is_object()) {
    if (auto w = val->find("elem"); w != val->end() && w->is_object()) {
      if (auto x = w->find("expires"); x != w->end() && x->is_number_integer()) out.expires_s = x->get<int64_t>();
      if (auto v = w->find("val"); v != w->end()) val = &*v;
    }
  }
  if (val->is_object()) {
    if (auto c = val->find("concat"); c != val->end()) {
      if (!c->is_array() || c->size() != 2) return std::nullopt;
      auto a = json_range((*c)[0]);
      auto b = json_range((*c)[1]);
      if (!a || !b || a->first != a->last) return std::nullopt;
      out.sandbox = a->first;
      out.dest = b;
      return out;
    }
  }
  auto a = json_range(*val);
  if (!a || a->first != a->last) return std::nullopt;
  out.sandbox = a->first;
  return out;
}

// Appends "<verb> element inet T <set> { e1, e2 }\n" for non-empty `elems`.
void append_elements(std::string* out, const char* verb, const std::string& table, const char* set,
                     const std::vector<std::string>& elems) {
  if (elems.empty()) return;
  *out += verb;
  *out += " element inet " + table + " " + set + " { ";
  for (size_t i = 0; i < elems.size(); ++i) {
    if (i) *out += ", ";
    *out += elems[i];
  }
  *out += " }\n";
}

std::vector<std::string> concat_elements(uint32_t sandbox, const std::vector<Range>& ranges) {
  std::vector<std::string> out;
  out.reserve(ranges.size());
  const std::string s = ipv4_to_string(sandbox) + " . ";
  for (const Range& r : ranges) out.push_back(s + range_text(r));
  return out;
}

std::vector<Range> minus(const std::vector<Range>& a, const std::vector<Range>& b) {
  std::vector<Range> out;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

// The commands that turn `from` into `to` for one sandbox, in one
// transaction. Only the deletions from the shared sets can fail (when the
// bookkeeping is wrong); everything else is written to succeed whatever is
// there. Resolved elements are deleted when `to` lacks them (clear()); they
// are added by allow_resolved only.
std::string diff_commands(const std::string& t, uint32_t sandbox, const Entry& from,
                          const Entry& to) {
  std::string cmd = offline_commands(t, sandbox, to.offline);
  append_elements(&cmd, "delete", t, "allow", concat_elements(sandbox, minus(from.allow, to.allow)));
  append_elements(&cmd, "delete", t, "deny", concat_elements(sandbox, minus(from.deny, to.deny)));
  append_elements(&cmd, "add", t, "allow", concat_elements(sandbox, minus(to.allow, from.allow)));
  append_elements(&cmd, "add", t, "deny", concat_elements(sandbox, minus(to.deny, from.deny)));
  if (to.chain) {
    // The sandbox's own sets are made afresh (any old ones deleted whole,
    // which the kernel does at once, unlike element by element). Named sets,
    // not anonymous ones: nft fetches the elements of every anonymous set
    // before each command. Concatenated with the sandbox address like the
    // shared sets, so the kernel holds them in the same kind of set.
    const std::string chain = chain_of(sandbox), sa = name_of("sa", sandbox), sd = name_of("sd", sandbox);
    cmd += "add chain inet " + t + " " + chain + "\n";
    cmd += "flush chain inet " + t + " " + chain + "\n";
    for (const auto& [set, ranges] : {std::pair{sa, &to.chain_allow}, std::pair{sd, &to.chain_deny}}) {
      const std::string def = "add set inet " + t + " " + set + " { type ipv4_addr . ipv4_addr; flags interval; }\n";
      cmd += def + "delete set inet " + t + " " + set + "\n" + def;
      append_elements(&cmd, "add", t, set.c_str(), concat_elements(sandbox, *ranges));
    }
    // Allow first: allow wins over deny.
    cmd += "add rule inet " + t + " " + chain + " ip saddr . ip daddr @" + sa + " accept\n";
    cmd += "add rule inet " + t + " " + chain + " ip saddr . ip daddr @" + sd + " drop\n";
    cmd += "add element inet " + t + " by_sandbox { " + ipv4_to_string(sandbox) + " : jump " + chain + " }\n";
  } else if (from.chain) {
    cmd += drop_chain_commands(t, sandbox);
  }
  for (const auto& [ip, expiry] : from.resolved) {
    if (to.resolved.contains(ip)) continue;
    std::string e = " element inet " + t + " allow_dns { " + ipv4_to_string(sandbox) + " . " + ipv4_to_string(ip);
    cmd += "add" + e + " timeout 1s }\ndelete" + e + " }\n";
  }
  return cmd;
}

}  // namespace

Firewall::Firewall(FirewallConfig config, nft_ctx* ctx) : config_(std::move(config)), ctx_(ctx) {}

Firewall::~Firewall() {
  if (auto st = close(); !st) {
    COPPICE_LOG(error) << "firewall: closing table " << config_.table << ": " << st.error().to_string();
  }
}

Result<std::unique_ptr<Firewall>> Firewall::open(FirewallConfig config) {
  auto invalid = [](std::string m) { return make_error(ErrorCode::kInvalidArgument, "firewall config: " + m); };
  if (!valid_table_name(config.table)) return invalid("bad table name (want [a-z_][a-z0-9_-]{0,31})");
  if (!valid_ifname(config.bridge)) return invalid("bad bridge interface name");
  if (!valid_ifname(config.uplink)) return invalid("bad uplink interface name");
  if (config.bridge == config.uplink) return invalid("bridge and uplink are the same interface");
  if (config.subnet.prefix < 1 || config.subnet.prefix > 30) return invalid("subnet prefix must be 1..30");
  config.subnet.addr = first_address(config.subnet);
  if (!contains(config.subnet, config.gateway_addr) || config.gateway_addr == first_address(config.subnet) ||
      config.gateway_addr == last_address(config.subnet)) {
    return invalid("gateway address " + ipv4_to_string(config.gateway_addr) + " is not a host address of " +
                   to_string(config.subnet));
  }
  for (auto* list : {&config.deny_always, &config.open_always}) {
    for (Cidr4& c : *list) {
      if (c.prefix < 0 || c.prefix > 32) return invalid("bad prefix length " + std::to_string(c.prefix));
      c.addr = first_address(c);
    }
  }

  // Both interfaces must exist; read their forwarding before touching anything.
  COPPICE_ASSIGN_OR_RETURN(bool bridge_fwd, read_forwarding(config.bridge));
  COPPICE_ASSIGN_OR_RETURN(bool uplink_fwd, read_forwarding(config.uplink));

  nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  if (!ctx) return make_error(ErrorCode::kInternal, "nft_ctx_new failed");
  if (nft_ctx_buffer_output(ctx) != 0 || nft_ctx_buffer_error(ctx) != 0) {
    nft_ctx_free(ctx);
    return make_error(ErrorCode::kInternal, "nft: cannot buffer output");
  }
  std::unique_ptr<Firewall> fw(new Firewall(config, ctx));
  const std::string& t = fw->config_.table;
  std::lock_guard lock(fw->mu_);
  // Until the table is ours, a failure must not delete it (it may be a
  // previous process's, with every sandbox's rules): drop the context only.
  auto abandon = ScopeExit([&] {
    nft_ctx_free(fw->ctx_);
    fw->ctx_ = nullptr;
  });

  const std::string br = "\"" + config.bridge + "\"";
  const std::string up = "\"" + config.uplink + "\"";
  const std::string subnet = to_string(config.subnet);
  const std::string gw = ipv4_to_string(config.gateway_addr);
  std::vector<Cidr4> deny_always(std::begin(kBuiltinDenyAlways), std::end(kBuiltinDenyAlways));
  deny_always.insert(deny_always.end(), config.deny_always.begin(), config.deny_always.end());
  const std::vector<Range> open_always = normalize(config.open_always);

  // One transaction. Without keep_elements: `add` then `delete` then a new
  // table, so whether or not one was there the kernel swaps in the new one
  // atomically. With it: every `add` below is a no-op for what exists, and
  // only the base chains and the fixed sets are flushed and refilled.
  std::string cmd = "add table inet " + t + "\n";
  if (!config.keep_elements) cmd += "delete table inet " + t + "\nadd table inet " + t + "\n";
  cmd += "add set inet " + t + " deny_always { type ipv4_addr; flags interval; }\n";
  cmd += "flush set inet " + t + " deny_always\n";
  cmd += "add element inet " + t + " deny_always { " + join_ranges(normalize(deny_always)) + " }\n";
  cmd += "add set inet " + t + " open_always { type ipv4_addr; flags interval; }\n";
  cmd += "flush set inet " + t + " open_always\n";
  if (!open_always.empty()) cmd += "add element inet " + t + " open_always { " + join_ranges(open_always) + " }\n";
  cmd += "add set inet " + t + " offline { type ipv4_addr; }\n";
  cmd += "add set inet " + t + " allow { type ipv4_addr . ipv4_addr; flags interval; }\n";
  cmd += "add set inet " + t + " deny { type ipv4_addr . ipv4_addr; flags interval; }\n";
  cmd += "add set inet " + t + " allow_dns { type ipv4_addr . ipv4_addr; flags timeout; }\n";
  cmd += "add map inet " + t + " by_sandbox { type ipv4_addr : verdict; }\n";

  const std::string fwd = "add rule inet " + t + " forward ";
  cmd += "add chain inet " + t + " forward { type filter hook forward priority filter; policy accept; }\n";
  cmd += "flush chain inet " + t + " forward\n";
  cmd += fwd + "iifname " + br + " meta nfproto != ipv4 drop\n";
  cmd += fwd + "iifname " + br + " oifname != " + up + " drop\n";
  cmd += fwd + "iifname " + br + " ip saddr != " + subnet + " drop\n";
  cmd += fwd + "iifname " + br + " ip saddr @offline drop\n";
  cmd += fwd + "iifname " + br + " ct state established,related accept\n";
  cmd += fwd + "iifname " + br + " ip daddr @deny_always ip daddr != @open_always drop\n";
  cmd += fwd + "iifname " + br + " ip saddr . ip daddr @allow_dns accept\n";
  cmd += fwd + "iifname " + br + " ip saddr . ip daddr @allow accept\n";
  // A sandbox is in the shared sets or has a chain, never both.
  cmd += fwd + "iifname " + br + " ip saddr vmap @by_sandbox\n";
  cmd += fwd + "iifname " + br + " ip saddr . ip daddr @deny drop\n";
  cmd += fwd + "iifname " + br + " accept\n";
  cmd += fwd + "oifname " + br + " ct state established,related accept\n";
  cmd += fwd + "oifname " + br + " drop\n";
  // The host does not become a router for the uplink's network because of
  // us: nothing new is forwarded from it. Replies pass, whichever bridge
  // they go to (another gateway's on this host shares the uplink).
  if (!uplink_fwd) {
    cmd += fwd + "iifname " + up + " ct state established,related accept\n";
    cmd += fwd + "iifname " + up + " drop\n";
  }

  const std::string in = "add rule inet " + t + " input ";
  cmd += "add chain inet " + t + " input { type filter hook input priority filter; policy accept; }\n";
  cmd += "flush chain inet " + t + " input\n";
  // Replies to connections the host opened (the proxy to a sandbox's ports).
  cmd += in + "iifname " + br + " ct state established ct direction reply accept\n";
  cmd += in + "iifname " + br + " ct state related accept\n";
  cmd += in + "iifname " + br + " ip saddr @offline drop\n";
  cmd += in + "iifname " + br + " ip daddr " + gw + " udp dport 53 accept\n";
  cmd += in + "iifname " + br + " ip daddr " + gw + " tcp dport 53 accept\n";
  cmd += in + "iifname " + br + " drop\n";

  cmd += "add chain inet " + t + " postrouting { type nat hook postrouting priority srcnat; policy accept; }\n";
  cmd += "flush chain inet " + t + " postrouting\n";
  cmd += "add rule inet " + t + " postrouting ip saddr " + subnet + " oifname " + up + " masquerade\n";

  if (auto st = fw->run_locked(cmd); !st) {
    return std::unexpected(std::move(st.error()).context("firewall: setting up table " + t));
  }
  abandon.release();

  auto fail = [&](Error err) {
    (void)fw->close_locked();
    return std::unexpected(std::move(err));
  };
  if (config.keep_elements) {
    auto kept = fw->read_kernel_locked();
    if (!kept) return fail(std::move(kept.error()).context("firewall: reading the kept elements"));
    fw->sandboxes_ = std::move(*kept);
  }

  // Forwarding last: with the rules in place.
  for (const auto& [ifname, was_on] : {std::pair{config.bridge, bridge_fwd}, std::pair{config.uplink, uplink_fwd}}) {
    if (was_on) continue;
    if (auto st = write_forwarding(ifname, true); !st) {
      return fail(std::move(st.error()).context("firewall: turning on forwarding on " + ifname));
    }
    fw->forwarding_turned_on_.push_back(ifname);
  }
  COPPICE_LOG(info) << "firewall: table inet " << t << " ready (bridge " << config.bridge << ", uplink "
                    << config.uplink << (config.keep_elements ? ", sandbox rules kept)" : ")");
  return fw;
}

Status Firewall::close() {
  std::lock_guard lock(mu_);
  return close_locked();
}

void Firewall::release() {
  std::lock_guard lock(mu_);
  if (ctx_) nft_ctx_free(ctx_);
  ctx_ = nullptr;
  forwarding_turned_on_.clear();
  sandboxes_.clear();
}

Status Firewall::close_locked() {
  Status result = ok();
  if (ctx_) {
    auto st = run_locked("delete table inet " + config_.table + "\n");
    if (!st && st.error().code() != ErrorCode::kNotFound) {
      result = std::unexpected(std::move(st.error()).context("firewall: deleting table " + config_.table));
    }
    nft_ctx_free(ctx_);
    ctx_ = nullptr;
  }
  for (const std::string& ifname : forwarding_turned_on_) {
    if (auto st = write_forwarding(ifname, false); !st && result) {
      result = std::unexpected(std::move(st.error()).context("firewall: restoring forwarding on " + ifname));
    }
  }
  forwarding_turned_on_.clear();
  sandboxes_.clear();
  return result;
}

Status Firewall::run_locked(const std::string& commands) {
  if (!ctx_) return make_error(ErrorCode::kFailedPrecondition, "firewall is closed");
  int rc = nft_run_cmd_from_buffer(ctx_, commands.c_str());
  (void)nft_ctx_get_output_buffer(ctx_);  // drains it
  const char* err = nft_ctx_get_error_buffer(ctx_);
  if (rc != 0) {
    std::string text = nft_error_text(err);
    return make_error(nft_error_code(text), "nft: " + text);
  }
  return ok();
}

Result<std::string> Firewall::list_json_locked(const std::string& what) {
  if (!ctx_) return make_error(ErrorCode::kFailedPrecondition, "firewall is closed");
  const std::string::size_type sp = what.find(' ');
  unsigned flags = nft_ctx_output_get_flags(ctx_);
  nft_ctx_output_set_flags(ctx_, flags | NFT_CTX_OUTPUT_JSON);
  int rc = nft_run_cmd_from_buffer(
      ctx_, ("list " + what.substr(0, sp) + " inet " + config_.table + " " + what.substr(sp + 1) + "\n").c_str());
  nft_ctx_output_set_flags(ctx_, flags);
  std::string out = nft_ctx_get_output_buffer(ctx_);
  const char* err = nft_ctx_get_error_buffer(ctx_);
  if (rc != 0) {
    std::string text = nft_error_text(err);
    return make_error(nft_error_code(text), "nft: list " + what + ": " + text);
  }
  return out;
}

Result<std::map<uint32_t, Entry>> Firewall::read_kernel_locked() {
  std::map<uint32_t, Entry> out;
  const auto now = Clock::now();
  for (auto [what, kind] : {std::pair{"set offline", "set"}, std::pair{"set allow", "set"},
                            std::pair{"set deny", "set"}, std::pair{"set allow_dns", "set"},
                            std::pair{"map by_sandbox", "map"}}) {
    COPPICE_ASSIGN_OR_RETURN(std::string text, list_json_locked(what));
    COPPICE_ASSIGN_OR_RETURN(nlohmann::json elems, listed_elements(text, kind));
    const std::string_view w = what;
    for (const auto& e : elems) {
      auto el = json_element(e);
      if (!el) {
        COPPICE_LOG_RATE(warn, 1) << "firewall: skipping an unexpected element of " << what << ": " << e.dump();
        continue;
      }
      Entry& entry = out[el->sandbox];
      if (w == "set offline") {
        entry.offline = true;
      } else if (w == "map by_sandbox") {
        entry.chain = true;
      } else if (!el->dest) {
        continue;
      } else if (w == "set allow") {
        entry.allow.push_back(*el->dest);
      } else if (w == "set deny") {
        entry.deny.push_back(*el->dest);
      } else if (el->dest->first == el->dest->last) {
        entry.resolved[el->dest->first] = now + std::chrono::seconds(el->expires_s.value_or(0) + 1);
      }
    }
  }
  for (auto& [sandbox, entry] : out) {
    std::sort(entry.allow.begin(), entry.allow.end());
    std::sort(entry.deny.begin(), entry.deny.end());
  }
  return out;
}

// One transaction from what the bookkeeping says is there to `to`. When it
// fails (the bookkeeping and the kernel disagree: someone else edited the
// table), the sandbox's elements are read back from the kernel and the
// change is made once more from there.
Status Firewall::replace_locked(uint32_t sandbox, const Entry& to) {
  const std::string& t = config_.table;
  Entry from;
  if (auto it = sandboxes_.find(sandbox); it != sandboxes_.end()) from = it->second;
  auto st = run_locked(diff_commands(t, sandbox, from, to));
  if (!st) {
    auto kernel = read_kernel_locked();
    if (!kernel) return std::unexpected(std::move(st.error()));
    Entry actual;
    if (auto it = kernel->find(sandbox); it != kernel->end()) actual = std::move(it->second);
    Entry target = to;
    // set_rules keeps the resolved elements: those that really are there.
    if (to.resolved == from.resolved) target.resolved = actual.resolved;
    if (auto again = run_locked(diff_commands(t, sandbox, actual, target)); !again) {
      sandboxes_[sandbox] = std::move(actual);
      if (sandboxes_[sandbox].empty()) sandboxes_.erase(sandbox);
      return std::unexpected(std::move(again.error()));
    }
    sandboxes_[sandbox] = std::move(target);
  } else {
    sandboxes_[sandbox] = to;
  }
  if (sandboxes_[sandbox].empty()) sandboxes_.erase(sandbox);
  return ok();
}

Status Firewall::set_rules(uint32_t sandbox, const EgressRules& rules) {
  if (!contains(config_.subnet, sandbox) || sandbox == config_.gateway_addr ||
      sandbox == first_address(config_.subnet) || sandbox == last_address(config_.subnet)) {
    return make_error(ErrorCode::kInvalidArgument,
                      "firewall: " + ipv4_to_string(sandbox) + " is not a sandbox address of " + to_string(config_.subnet));
  }
  if (rules.allow.size() > kMaxRulesPerList || rules.deny.size() > kMaxRulesPerList) {
    return make_error(ErrorCode::kTooLarge, "firewall: more than " + std::to_string(kMaxRulesPerList) +
                                                " allow or deny entries");
  }
  for (const auto* list : {&rules.allow, &rules.deny}) {
    for (const Cidr4& c : *list) {
      if (c.prefix < 0 || c.prefix > 32) {
        return make_error(ErrorCode::kInvalidArgument, "firewall: bad prefix length " + std::to_string(c.prefix));
      }
    }
  }
  Entry to;
  to.offline = !rules.internet;
  std::vector<Range> allow = normalize(rules.allow), deny = normalize(rules.deny);
  if (allow.size() + deny.size() > kSharedSetLimit) {
    to.chain = true;
    to.chain_allow = std::move(allow);
    to.chain_deny = std::move(deny);
  } else {
    to.allow = std::move(allow);
    to.deny = std::move(deny);
  }
  std::lock_guard lock(mu_);
  if (!ctx_) return make_error(ErrorCode::kFailedPrecondition, "firewall is closed");
  if (auto it = sandboxes_.find(sandbox); it != sandboxes_.end()) to.resolved = it->second.resolved;
  COPPICE_TRY_CTX(replace_locked(sandbox, to), "firewall: rules of " + ipv4_to_string(sandbox));
  return ok();
}

Status Firewall::clear(uint32_t sandbox) {
  std::lock_guard lock(mu_);
  if (!ctx_) return make_error(ErrorCode::kFailedPrecondition, "firewall is closed");
  if (!sandboxes_.contains(sandbox)) return ok();
  COPPICE_TRY_CTX(replace_locked(sandbox, Entry{}), "firewall: clearing " + ipv4_to_string(sandbox));
  return ok();
}

Status Firewall::allow_resolved(uint32_t sandbox, uint32_t ip, std::chrono::seconds ttl) {
  if (!contains(config_.subnet, sandbox)) {
    return make_error(ErrorCode::kInvalidArgument, "firewall: " + ipv4_to_string(sandbox) + " is not in the subnet");
  }
  if (ttl.count() < 1 || ttl > kMaxResolvedTtl) {
    return make_error(ErrorCode::kInvalidArgument, "firewall: resolved-address timeout out of range");
  }
  std::lock_guard lock(mu_);
  if (!ctx_) return make_error(ErrorCode::kFailedPrecondition, "firewall is closed");
  const auto now = Clock::now();
  // An existing element has its timeout refreshed by `add` (Linux >= 6.10;
  // older kernels keep the first timeout).
  auto st = run_locked("add element inet " + config_.table + " allow_dns { " + ipv4_to_string(sandbox) + " . " +
                       ipv4_to_string(ip) + " timeout " + std::to_string(ttl.count()) + "s }\n");
  if (!st) {
    return std::unexpected(std::move(st.error()).context("firewall: opening " + ipv4_to_string(ip) + " for " +
                                                         ipv4_to_string(sandbox)));
  }
  auto& mine = sandboxes_[sandbox].resolved;
  std::erase_if(mine, [&](const auto& kv) { return kv.second + kExpirySlack < now; });
  auto& expiry = mine[ip];
  expiry = std::max(expiry, now + ttl);
  return ok();
}

Result<std::set<uint32_t>> Firewall::sandboxes_with_elements() {
  std::lock_guard lock(mu_);
  if (!ctx_) return make_error(ErrorCode::kFailedPrecondition, "firewall is closed");
  COPPICE_ASSIGN_OR_RETURN(auto kernel, read_kernel_locked());
  std::set<uint32_t> out;
  for (const auto& [sandbox, entry] : kernel) out.insert(sandbox);
  return out;
}

Result<size_t> Firewall::element_count(uint32_t sandbox) {
  std::lock_guard lock(mu_);
  if (!ctx_) return make_error(ErrorCode::kFailedPrecondition, "firewall is closed");
  COPPICE_ASSIGN_OR_RETURN(auto kernel, read_kernel_locked());
  auto it = kernel.find(sandbox);
  if (it == kernel.end()) return size_t{0};
  const Entry& e = it->second;
  size_t n = (e.offline ? 1 : 0) + e.allow.size() + e.deny.size() + e.resolved.size();
  if (!e.chain) return n;
  for (const char* prefix : {"sa", "sd"}) {
    auto text = list_json_locked("set " + name_of(prefix, sandbox));
    if (!text) {
      if (text.error().code() == ErrorCode::kNotFound) continue;
      return std::unexpected(std::move(text.error()));
    }
    COPPICE_ASSIGN_OR_RETURN(nlohmann::json elems, listed_elements(*text, "set"));
    n += elems.size();
  }
  return n;
}

}  // namespace coppice::net
