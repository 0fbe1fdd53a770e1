#include "net/firewall.h"

#include <fcntl.h>
#include <nftables/libnftables.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <optional>

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "common/scope_exit.h"

namespace coppice::net {

namespace {

using Range = Firewall::Range;
using SandboxElements = Firewall::SandboxElements;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxRulesPerList = 65536;
constexpr std::chrono::seconds kMaxResolvedTtl{7 * 24 * 3600};
// An allow_resolved element whose expiry (as estimated here) is this far in
// the past is surely gone from the kernel; nearer ones may still be there.
constexpr std::chrono::seconds kExpirySlack{2};

// Addresses nobody behind the bridge reaches, whatever the config says:
// "this network", loopback, link-local (cloud metadata), multicast and the
// reserved range with the limited broadcast.
constexpr Cidr4 kBuiltinDenyAlways[] = {
    {0x00000000u, 8}, {0x7f000000u, 8}, {0xa9fe0000u, 16}, {0xe0000000u, 4}, {0xf0000000u, 4}};

// The per-sandbox sets, in the order they are listed.
constexpr const char* kSandboxSets[] = {"offline", "allow", "deny", "allow_dns"};

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

struct ListedElement {
  uint32_t sandbox = 0;
  std::optional<Range> dest;        // concatenated sets only
  std::optional<int64_t> expires_s;  // timed elements only
};

std::optional<ListedElement> json_element(const nlohmann::json& e) {
  ListedElement out;
  const nlohmann::json* val = &e;
  if (e.is_object()) {
    if (auto w = e.find("elem"); w != e.end() && w->is_object()) {
      if (auto v = w->find("val"); v != w->end()) val = &*v;
      if (auto x = w->find("expires"); x != w->end() && x->is_number_integer()) out.expires_s = x->get<int64_t>();
    }
  }
  if (val->is_object()) {
    if (auto c = val->find("concat"); c != val->end()) {
      if (!c->is_array() || c->size() != 2) return std::nullopt;
      auto s = json_range((*c)[0]);
      auto d = json_range((*c)[1]);
      if (!s || !d || s->first != s->last) return std::nullopt;
      out.sandbox = s->first;
      out.dest = d;
      return out;
    }
  }
  auto s = json_range(*val);
  if (!s || s->first != s->last) return std::nullopt;
  out.sandbox = s->first;
  return out;
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

// Appends "<verb> element inet T <set> { e1, e2 }\n" for non-empty `elems`.
void append_elements(std::string* out, const char* verb, const std::string& table, const char* set,
                     const std::vector<std::string>& elems) {
  if (elems.empty()) return;
  *out += verb;
  *out += " element inet ";
  *out += table;
  *out += ' ';
  *out += set;
  *out += " { ";
  for (size_t i = 0; i < elems.size(); ++i) {
    if (i) *out += ", ";
    *out += elems[i];
  }
  *out += " }\n";
}

std::vector<std::string> concat_elements(uint32_t sandbox, const std::vector<Range>& ranges) {
  std::vector<std::string> out;
  out.reserve(ranges.size());
  std::string s = ipv4_to_string(sandbox) + " . ";
  for (const Range& r : ranges) out.push_back(s + range_text(r));
  return out;
}

std::vector<Range> minus(const std::vector<Range>& a, const std::vector<Range>& b) {
  std::vector<Range> out;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

// Appends the commands that turn `from` into `to` for one sandbox (explicit
// elements; resolved ones only when `to` drops them, as clear() does).
void append_diff(std::string* out, const std::string& table, uint32_t sandbox, const SandboxElements& from,
                 const SandboxElements& to, Clock::time_point now) {
  if (from.offline && !to.offline) append_elements(out, "delete", table, "offline", {ipv4_to_string(sandbox)});
  append_elements(out, "delete", table, "allow", concat_elements(sandbox, minus(from.allow, to.allow)));
  append_elements(out, "delete", table, "deny", concat_elements(sandbox, minus(from.deny, to.deny)));
  std::vector<std::string> gone;
  for (const auto& [ip, expiry] : from.resolved) {
    if (!to.resolved.contains(ip) && expiry + kExpirySlack > now) {
      gone.push_back(ipv4_to_string(sandbox) + " . " + ipv4_to_string(ip));
    }
  }
  append_elements(out, "delete", table, "allow_dns", gone);
  if (to.offline && !from.offline) append_elements(out, "add", table, "offline", {ipv4_to_string(sandbox)});
  append_elements(out, "add", table, "allow", concat_elements(sandbox, minus(to.allow, from.allow)));
  append_elements(out, "add", table, "deny", concat_elements(sandbox, minus(to.deny, from.deny)));
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
      if (c.prefix < 0 || c.prefix > 32) return invalid("bad prefix length in " + to_string(c));
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
  // From here on the destructor would delete the table: only what this open
  // made is ever removed, so an early failure must not remove a previous
  // process's table (with its elements) either.
  auto abandon = ScopeExit([&] {
    nft_ctx_free(fw->ctx_);
    fw->ctx_ = nullptr;
  });

  std::map<uint32_t, SandboxElements> kept;
  if (config.keep_elements) {
    auto old = fw->read_kernel_locked();
    if (old) {
      kept = std::move(*old);
    } else if (old.error().code() != ErrorCode::kNotFound) {
      return std::unexpected(std::move(old.error()).context("firewall: reading the previous table " + t));
    }
  }

  const std::string br = "\"" + config.bridge + "\"";
  const std::string up = "\"" + config.uplink + "\"";
  const std::string subnet = to_string(config.subnet);
  const std::string gw = ipv4_to_string(config.gateway_addr);
  std::vector<Cidr4> deny_always(std::begin(kBuiltinDenyAlways), std::end(kBuiltinDenyAlways));
  deny_always.insert(deny_always.end(), config.deny_always.begin(), config.deny_always.end());
  std::vector<std::string> deny_always_elems, open_always_elems;
  for (Range r : normalize(deny_always)) deny_always_elems.push_back(range_text(r));
  for (Range r : normalize(config.open_always)) open_always_elems.push_back(range_text(r));

  std::string cmd;
  // `add` then `delete` then the new table, all in one transaction: whether
  // or not a table was there, the kernel swaps in the new one atomically.
  cmd += "add table inet " + t + "\n";
  cmd += "delete table inet " + t + "\n";
  cmd += "add table inet " + t + "\n";
  cmd += "add set inet " + t + " deny_always { type ipv4_addr; flags interval; }\n";
  cmd += "add set inet " + t + " open_always { type ipv4_addr; flags interval; }\n";
  cmd += "add set inet " + t + " offline { type ipv4_addr; }\n";
  cmd += "add set inet " + t + " allow { type ipv4_addr . ipv4_addr; flags interval; }\n";
  cmd += "add set inet " + t + " deny { type ipv4_addr . ipv4_addr; flags interval; }\n";
  cmd += "add set inet " + t + " allow_dns { type ipv4_addr . ipv4_addr; flags timeout; }\n";
  append_elements(&cmd, "add", t, "deny_always", deny_always_elems);
  append_elements(&cmd, "add", t, "open_always", open_always_elems);

  const std::string fwd = "add rule inet " + t + " forward ";
  cmd += "add chain inet " + t + " forward { type filter hook forward priority filter; policy accept; }\n";
  cmd += fwd + "iifname " + br + " meta nfproto != ipv4 drop\n";
  cmd += fwd + "iifname " + br + " oifname != " + up + " drop\n";
  cmd += fwd + "iifname " + br + " ip saddr != " + subnet + " drop\n";
  cmd += fwd + "iifname " + br + " ip saddr @offline drop\n";
  cmd += fwd + "iifname " + br + " ct state established,related accept\n";
  cmd += fwd + "iifname " + br + " ip daddr @deny_always ip daddr != @open_always drop\n";
  cmd += fwd + "iifname " + br + " ip saddr . ip daddr @allow accept\n";
  cmd += fwd + "iifname " + br + " ip saddr . ip daddr @allow_dns accept\n";
  cmd += fwd + "iifname " + br + " ip saddr . ip daddr @deny drop\n";
  cmd += fwd + "iifname " + br + " accept\n";
  cmd += fwd + "oifname " + br + " ct state established,related accept\n";
  cmd += fwd + "oifname " + br + " drop\n";
  // The host does not become a router for the uplink's network because of us.
  if (!uplink_fwd) cmd += fwd + "iifname " + up + " drop\n";

  const std::string in = "add rule inet " + t + " input ";
  cmd += "add chain inet " + t + " input { type filter hook input priority filter; policy accept; }\n";
  // Replies to connections the host opened (the proxy to a sandbox's ports).
  cmd += in + "iifname " + br + " ct state established ct direction reply accept\n";
  cmd += in + "iifname " + br + " ct state related accept\n";
  cmd += in + "iifname " + br + " ip saddr @offline drop\n";
  cmd += in + "iifname " + br + " ip daddr " + gw + " udp dport 53 accept\n";
  cmd += in + "iifname " + br + " ip daddr " + gw + " tcp dport 53 accept\n";
  cmd += in + "iifname " + br + " drop\n";

  cmd += "add chain inet " + t + " postrouting { type nat hook postrouting priority srcnat; policy accept; }\n";
  cmd += "add rule inet " + t + " postrouting ip saddr " + subnet + " oifname " + up + " masquerade\n";

  // The previous process's per-sandbox elements, with what is left of the
  // resolved ones' timeouts.
  const auto now = Clock::now();
  std::vector<std::string> dns_elems;
  for (auto& [sandbox, e] : kept) {
    append_diff(&cmd, t, sandbox, SandboxElements{}, e, now);
    for (const auto& [ip, expiry] : e.resolved) {
      auto left = std::chrono::duration_cast<std::chrono::seconds>(expiry - now).count();
      dns_elems.push_back(ipv4_to_string(sandbox) + " . " + ipv4_to_string(ip) + " timeout " +
                          std::to_string(std::max<int64_t>(left, 1)) + "s");
    }
  }
  append_elements(&cmd, "add", t, "allow_dns", dns_elems);

  if (auto st = fw->run_locked(cmd); !st) {
    return std::unexpected(std::move(st.error()).context("firewall: creating table " + t));
  }
  fw->sandboxes_ = std::move(kept);
  abandon.release();

  // Forwarding last: with the rules in place.
  for (const auto& [ifname, was_on] : {std::pair{config.bridge, bridge_fwd}, std::pair{config.uplink, uplink_fwd}}) {
    if (was_on) continue;
    if (auto st = write_forwarding(ifname, true); !st) {
      auto err = std::move(st.error()).context("firewall: turning on forwarding on " + ifname);
      (void)fw->close_locked();
      return std::unexpected(std::move(err));
    }
    fw->forwarding_turned_on_.push_back(ifname);
  }
  COPPICE_LOG(info) << "firewall: table inet " << t << " ready (bridge " << config.bridge << ", uplink "
                    << config.uplink << ", " << fw->sandboxes_.size() << " sandboxes kept)";
  return fw;
}

Status Firewall::close() {
  std::lock_guard lock(mu_);
  return close_locked();
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

Result<std::string> Firewall::list_json_locked(const std::string& set) {
  if (!ctx_) return make_error(ErrorCode::kFailedPrecondition, "firewall is closed");
  unsigned flags = nft_ctx_output_get_flags(ctx_);
  nft_ctx_output_set_flags(ctx_, flags | NFT_CTX_OUTPUT_JSON);
  int rc = nft_run_cmd_from_buffer(ctx_, ("list set inet " + config_.table + " " + set + "\n").c_str());
  nft_ctx_output_set_flags(ctx_, flags);
  std::string out = nft_ctx_get_output_buffer(ctx_);
  const char* err = nft_ctx_get_error_buffer(ctx_);
  if (rc != 0) {
    std::string text = nft_error_text(err);
    return make_error(nft_error_code(text), "nft: list set " + set + ": " + text);
  }
  return out;
}

Result<std::map<uint32_t, SandboxElements>> Firewall::read_kernel_locked() {
  std::map<uint32_t, SandboxElements> out;
  const auto now = Clock::now();
  for (const char* set : kSandboxSets) {
    auto text = list_json_locked(set);
    if (!text) {
      // A table from an older layout may lack a set: nothing to keep from it.
      if (text.error().code() == ErrorCode::kNotFound && std::strcmp(set, "offline") != 0) continue;
      return std::unexpected(std::move(text.error()));
    }
    nlohmann::json doc = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded() || !doc.contains("nftables") || !doc["nftables"].is_array()) {
      return make_error(ErrorCode::kInternal, std::string("nft: unreadable JSON listing of set ") + set);
    }
    for (const auto& item : doc["nftables"]) {
      if (!item.is_object() || !item.contains("set")) continue;
      const auto& s = item["set"];
      if (!s.is_object() || !s.contains("elem") || !s["elem"].is_array()) continue;
      for (const auto& e : s["elem"]) {
        auto el = json_element(e);
        if (!el) {
          COPPICE_LOG_RATE(warn, 1) << "firewall: skipping an unexpected element in set " << set << ": " << e.dump();
          continue;
        }
        SandboxElements& se = out[el->sandbox];
        if (std::strcmp(set, "offline") == 0) {
          se.offline = true;
        } else if (!el->dest) {
          continue;
        } else if (std::strcmp(set, "allow") == 0) {
          se.allow.push_back(*el->dest);
        } else if (std::strcmp(set, "deny") == 0) {
          se.deny.push_back(*el->dest);
        } else if (el->dest->first == el->dest->last) {
          se.resolved[el->dest->first] = now + std::chrono::seconds(el->expires_s.value_or(1));
        }
      }
    }
  }
  for (auto& [sandbox, se] : out) {
    std::sort(se.allow.begin(), se.allow.end());
    std::sort(se.deny.begin(), se.deny.end());
  }
  return out;
}

// One transaction from `from` to `to`; when it fails (the bookkeeping and the
// kernel disagree: a resolved element expired in between, or someone else
// edited the table), the sandbox's elements are read back from the kernel
// and the change is tried once more from there.
Status Firewall::replace_locked(uint32_t sandbox, const SandboxElements& from, const SandboxElements& to) {
  std::string cmd;
  append_diff(&cmd, config_.table, sandbox, from, to, Clock::now());
  if (cmd.empty()) {
    sandboxes_[sandbox] = to;
    if (to.empty()) sandboxes_.erase(sandbox);
    return ok();
  }
  auto st = run_locked(cmd);
  if (!st) {
    auto kernel = read_kernel_locked();
    if (!kernel) return std::unexpected(std::move(st.error()));
    SandboxElements actual;
    if (auto it = kernel->find(sandbox); it != kernel->end()) actual = std::move(it->second);
    // What the caller keeps of the resolved elements is what is really there.
    SandboxElements target = to;
    if (!from.resolved.empty() && to.resolved == from.resolved) target.resolved = actual.resolved;
    cmd.clear();
    append_diff(&cmd, config_.table, sandbox, actual, target, Clock::now());
    if (!cmd.empty()) {
      if (auto again = run_locked(cmd); !again) {
        sandboxes_[sandbox] = std::move(actual);
        if (sandboxes_[sandbox].empty()) sandboxes_.erase(sandbox);
        return std::unexpected(std::move(again.error()));
      }
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
  std::lock_guard lock(mu_);
  SandboxElements from;
  if (auto it = sandboxes_.find(sandbox); it != sandboxes_.end()) from = it->second;
  SandboxElements to;
  to.offline = !rules.internet;
  to.allow = normalize(rules.allow);
  to.deny = normalize(rules.deny);
  to.resolved = from.resolved;
  COPPICE_TRY_CTX(replace_locked(sandbox, from, to), "firewall: rules of " + ipv4_to_string(sandbox));
  return ok();
}

Status Firewall::clear(uint32_t sandbox) {
  std::lock_guard lock(mu_);
  auto it = sandboxes_.find(sandbox);
  if (it == sandboxes_.end()) return ok();
  SandboxElements from = it->second;
  COPPICE_TRY_CTX(replace_locked(sandbox, from, SandboxElements{}), "firewall: clearing " + ipv4_to_string(sandbox));
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
  const auto now = Clock::now();
  // An existing element has its timeout refreshed by `add` (Linux >= 6.10;
  // older kernels keep the first timeout).
  auto st = run_locked("add element inet " + config_.table + " allow_dns { " + ipv4_to_string(sandbox) + " . " +
                       ipv4_to_string(ip) + " timeout " + std::to_string(ttl.count()) + "s }\n");
  if (!st) {
    return std::unexpected(std::move(st.error()).context("firewall: opening " + ipv4_to_string(ip) + " for " +
                                                         ipv4_to_string(sandbox)));
  }
  SandboxElements& se = sandboxes_[sandbox];
  std::erase_if(se.resolved, [&](const auto& kv) { return kv.second + kExpirySlack < now; });
  se.resolved[ip] = now + ttl;
  return ok();
}

Result<std::set<uint32_t>> Firewall::sandboxes_with_elements() {
  std::lock_guard lock(mu_);
  COPPICE_ASSIGN_OR_RETURN(auto kernel, read_kernel_locked());
  std::set<uint32_t> out;
  for (const auto& [sandbox, se] : kernel) out.insert(sandbox);
  return out;
}

Result<size_t> Firewall::element_count(uint32_t sandbox) {
  std::lock_guard lock(mu_);
  COPPICE_ASSIGN_OR_RETURN(auto kernel, read_kernel_locked());
  auto it = kernel.find(sandbox);
  if (it == kernel.end()) return size_t{0};
  const SandboxElements& se = it->second;
  return size_t{se.offline ? 1u : 0u} + se.allow.size() + se.deny.size() + se.resolved.size();
}

}  // namespace coppice::net
