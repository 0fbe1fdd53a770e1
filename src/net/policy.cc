#include "net/policy.h"

#include <algorithm>
#include <cmath>

namespace coppice::net {

using nlohmann::json;

namespace {

Status bad(std::string msg) { return make_error(ErrorCode::kInvalidArgument, std::move(msg)); }

std::string quote_entry(std::string_view s) {
  std::string q = "\"";
  for (char c : s.substr(0, 80)) q += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
  if (s.size() > 80) q += "...";
  return q + "\"";
}

bool valid_label(std::string_view l) {
  if (l.empty() || l.size() > 63 || l.front() == '-' || l.back() == '-') return false;
  return std::all_of(l.begin(), l.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  });
}

// A lowercase domain name without a trailing dot, or an error naming it.
Result<std::string> normalise_domain(std::string_view entry, std::string_view name) {
  std::string n(name);
  std::transform(n.begin(), n.end(), n.begin(), [](char c) { return (c >= 'A' && c <= 'Z') ? char(c + 32) : c; });
  if (!n.empty() && n.back() == '.') n.pop_back();
  if (n.empty() || n.size() > 253) {
    return make_error(ErrorCode::kInvalidArgument, "allowOut entry " + quote_entry(entry) + " is not a domain name");
  }
  size_t start = 0;
  while (true) {
    size_t dot = n.find('.', start);
    std::string_view label = std::string_view(n).substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!valid_label(label)) {
      return make_error(ErrorCode::kInvalidArgument,
                        "allowOut entry " + quote_entry(entry) +
                            " is not a valid IP, CIDR block or domain name (letters, digits, '-' and '_' in "
                            "dot-separated labels of 1 to 63 characters; '*.' only as a prefix)");
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return n;
}

bool looks_numeric(std::string_view s) {
  // Digits, dots and at most one '/': an address attempt, never a name.
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || c == '.' || c == '/'; });
}

Result<std::vector<std::string>> string_list(const json& j, std::string_view field) {
  if (j.is_null()) return std::vector<std::string>{};
  if (!j.is_array()) return make_error(ErrorCode::kInvalidArgument, "network." + std::string(field) + " must be an array of strings");
  if (j.size() > kMaxRuleEntries) {
    return make_error(ErrorCode::kInvalidArgument, "network." + std::string(field) + " has " + std::to_string(j.size()) +
                                                       " entries; at most " + std::to_string(kMaxRuleEntries) + " are allowed");
  }
  std::vector<std::string> out;
  out.reserve(j.size());
  for (const auto& e : j) {
    if (!e.is_string()) return make_error(ErrorCode::kInvalidArgument, "network." + std::string(field) + " entries must be strings");
    out.push_back(e.get<std::string>());
  }
  return out;
}

Status parse_rules(const json& allow, const json& deny, NetworkConfig& c) {
  auto a = string_list(allow, "allowOut");
  if (!a) return std::unexpected(a.error());
  auto d = string_list(deny, "denyOut");
  if (!d) return std::unexpected(d.error());
  c.allow_out.clear();
  c.deny_out.clear();
  for (const auto& s : *a) {
    auto e = parse_allow_entry(s);
    if (!e) return std::unexpected(e.error());
    c.allow_out.push_back(s);  // as given (E2B echoes it); compile() reads it again
  }
  for (const auto& s : *d) {
    if (s.find_first_not_of("0123456789./") != std::string::npos && s.find(':') == std::string::npos) {
      return bad("denyOut entry " + quote_entry(s) + " is not an IP or CIDR block (domain names are allowed in allowOut only)");
    }
    if (s.find(':') != std::string::npos) return bad("denyOut entry " + quote_entry(s) + ": ports and IPv6 are not supported");
    auto cidr = parse_cidr4(s);
    if (!cidr) return bad("denyOut entry " + quote_entry(s) + ": " + cidr.error().message());
    c.deny_out.push_back(s);
  }
  return {};
}

}  // namespace

Result<RuleEntry> parse_allow_entry(std::string_view s) {
  if (s.empty()) return make_error(ErrorCode::kInvalidArgument, "allowOut has an empty entry");
  if (s.find(':') != std::string_view::npos) {
    return make_error(ErrorCode::kInvalidArgument,
                      "allowOut entry " + quote_entry(s) + ": ports and IPv6 are not supported (an IPv4 address, CIDR block or domain)");
  }
  RuleEntry r;
  if (looks_numeric(s)) {
    auto c = parse_cidr4(s);
    if (!c) return make_error(ErrorCode::kInvalidArgument, "allowOut entry " + quote_entry(s) + ": " + c.error().message());
    r.cidr = *c;
    return r;
  }
  if (s == "*") return make_error(ErrorCode::kInvalidArgument, "allowOut entry \"*\" is not allowed (use 0.0.0.0/0)");
  bool wildcard = s.starts_with("*.");
  auto d = normalise_domain(s, wildcard ? s.substr(2) : s);
  if (!d) return std::unexpected(d.error());
  r.domain = wildcard ? "*." + *d : *d;
  return r;
}

bool domain_matches(std::string_view pattern, std::string_view name) {
  if (pattern.starts_with("*.")) {
    auto base = pattern.substr(2);
    return name.size() > base.size() + 1 && name.ends_with(base) && name[name.size() - base.size() - 1] == '.';
  }
  return pattern == name;
}

Result<NetworkConfig> parse_create(const json* network, const json* allow_internet_access) {
  NetworkConfig c;
  if (allow_internet_access && !allow_internet_access->is_null()) {
    if (!allow_internet_access->is_boolean()) return make_error(ErrorCode::kInvalidArgument, "allow_internet_access must be a boolean");
    c.internet = allow_internet_access->get<bool>();
  }
  if (!network || network->is_null()) return c;
  if (!network->is_object()) return make_error(ErrorCode::kInvalidArgument, "network must be an object");
  static const json kNull;
  auto field = [&](const char* k) -> const json& {
    auto it = network->find(k);
    return it == network->end() ? kNull : *it;
  };
  for (const auto& [k, v] : network->items()) {
    // httpsPorts is the proxy's (checked by the API).
    if (k == "allowOut" || k == "denyOut" || k == "allowPublicTraffic" || k == "maskRequestHost" || k == "maxEgressMbps" ||
        k == "httpsPorts")
      continue;
    if (v.is_null()) continue;
    if (k == "egressProxy" || k == "rules") {
      return make_error(ErrorCode::kInvalidArgument, "network." + k + " is not supported by this gateway yet");
    }
    return make_error(ErrorCode::kInvalidArgument, "network." + k + " is not a known field");
  }
  COPPICE_TRY(parse_rules(field("allowOut"), field("denyOut"), c));
  if (const json& p = field("allowPublicTraffic"); !p.is_null()) {
    if (!p.is_boolean()) return make_error(ErrorCode::kInvalidArgument, "network.allowPublicTraffic must be a boolean");
    c.allow_public_traffic = p.get<bool>();
  }
  if (const json& m = field("maskRequestHost"); !m.is_null()) {
    if (!m.is_string()) return make_error(ErrorCode::kInvalidArgument, "network.maskRequestHost must be a string");
    c.mask_request_host = m.get<std::string>();
    std::string probe = c.mask_request_host;
    for (size_t at; (at = probe.find("${PORT}")) != std::string::npos;) probe.replace(at, 7, "1");
    bool ok = !probe.empty() && probe.size() <= 253 && std::all_of(probe.begin(), probe.end(), [](char ch) {
      return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
             ch == '-' || ch == '_' || ch == ':';
    });
    if (!ok) {
      return make_error(ErrorCode::kInvalidArgument, "network.maskRequestHost " + quote_entry(c.mask_request_host) +
                                                         " is not a host[:port] (letters, digits, '.', '-', '_', ':' and ${PORT})");
    }
  }
  if (const json& e = field("maxEgressMbps"); !e.is_null()) {
    if (!e.is_number() || !std::isfinite(e.get<double>()) || e.get<double>() <= 0 || e.get<double>() > 100000) {
      return make_error(ErrorCode::kInvalidArgument, "network.maxEgressMbps must be a number above 0 and at most 100000");
    }
    c.egress_limit_bps = static_cast<uint64_t>(e.get<double>() * 1e6 / 8);
    if (c.egress_limit_bps < 1024) c.egress_limit_bps = 1024;
  }
  return c;
}

Result<NetworkConfig> parse_update(const NetworkConfig& current, const json& body) {
  if (!body.is_object()) return make_error(ErrorCode::kInvalidArgument, "the body must be a JSON object");
  NetworkConfig c = current;
  c.internet = true;
  static const json kNull;
  auto field = [&](const char* k) -> const json& {
    auto it = body.find(k);
    return it == body.end() ? kNull : *it;
  };
  for (const auto& [k, v] : body.items()) {
    if (k == "allowOut" || k == "denyOut" || k == "allow_internet_access") continue;
    if (v.is_null()) continue;
    if (k == "egressProxy" || k == "rules") {
      return make_error(ErrorCode::kInvalidArgument, k + " is not supported by this gateway yet");
    }
    return make_error(ErrorCode::kInvalidArgument, k + " is not a field of a network update");
  }
  if (const json& a = field("allow_internet_access"); !a.is_null()) {
    if (!a.is_boolean()) return make_error(ErrorCode::kInvalidArgument, "allow_internet_access must be a boolean");
    c.internet = a.get<bool>();
  }
  COPPICE_TRY(parse_rules(field("allowOut"), field("denyOut"), c));
  return c;
}

EgressPolicy compile(const NetworkConfig& c) {
  EgressPolicy p;
  for (const auto& s : c.allow_out) {
    auto e = parse_allow_entry(s);
    if (!e) continue;  // stored entries were checked when they came in
    if (e->cidr) {
      p.allow.push_back(*e->cidr);
    } else {
      p.domains.push_back(e->domain);
    }
  }
  for (const auto& s : c.deny_out) {
    if (auto d = parse_cidr4(s); d) p.deny.push_back(*d);
  }
  if (!c.internet) {
    p.deny.push_back(Cidr4{0, 0});
    if (c.allow_out.empty()) p.offline = true;
  }
  p.default_deny = std::any_of(p.deny.begin(), p.deny.end(), [](const Cidr4& d) { return d.prefix == 0; });
  return p;
}

json to_e2b_json(const NetworkConfig& c) {
  json j = json::object();
  j["allowOut"] = c.allow_out;
  j["denyOut"] = c.deny_out;
  j["allowPublicTraffic"] = c.allow_public_traffic;
  if (!c.mask_request_host.empty()) j["maskRequestHost"] = c.mask_request_host;
  if (c.egress_limit_bps) j["maxEgressMbps"] = double(c.egress_limit_bps) * 8 / 1e6;
  return j;
}

json to_store_json(const NetworkConfig& c) {
  json j = to_e2b_json(c);
  j["internet"] = c.internet;
  j["egressBytesPerSec"] = c.egress_limit_bps;
  j.erase("maxEgressMbps");
  return j;
}

Result<NetworkConfig> from_store_json(const json& j) {
  if (!j.is_object()) return make_error(ErrorCode::kInvalidArgument, "stored network config is not an object");
  NetworkConfig c;
  try {
    c.internet = j.value("internet", true);
    c.allow_out = j.value("allowOut", std::vector<std::string>{});
    c.deny_out = j.value("denyOut", std::vector<std::string>{});
    c.allow_public_traffic = j.value("allowPublicTraffic", true);
    c.mask_request_host = j.value("maskRequestHost", std::string());
    c.egress_limit_bps = j.value("egressBytesPerSec", uint64_t(0));
  } catch (const json::exception& e) {
    return make_error(ErrorCode::kInvalidArgument, std::string("stored network config: ") + e.what());
  }
  return c;
}

}  // namespace coppice::net
