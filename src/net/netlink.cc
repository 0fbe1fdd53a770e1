#include "net/netlink.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "common/log.h"
#include "net/nl_socket.h"
#include "sys/fd.h"

namespace coppice::net {
namespace {

using nl::Ack;
using nl::attr_str;
using nl::attr_u32;
using nl::Batch;
using nl::for_each_attr;
using nl::for_each_nested;
using nl::Socket;

std::string ip4(uint32_t host_order) {
  char buf[INET_ADDRSTRLEN];
  uint32_t n = htonl(host_order);
  inet_ntop(AF_INET, &n, buf, sizeof buf);
  return buf;
}

uint32_t mask_of(int prefix) { return prefix <= 0 ? 0 : prefix >= 32 ? ~0u : ~0u << (32 - prefix); }

// Interface names as the kernel takes them (dev_valid_name): 1..15 bytes, no
// '/', ':' or white space, not "." or "..".
Status check_ifname(std::string_view name) {
  bool bad = name.empty() || name.size() >= IFNAMSIZ || name == "." || name == "..";
  for (char c : name) bad |= c == '/' || c == ':' || c == '\0' || isspace(static_cast<unsigned char>(c));
  if (bad) return make_error(ErrorCode::kInvalidArgument, "bad interface name \"" + std::string(name) + "\"");
  return ok();
}

Status check_prefix(int prefix) {
  if (prefix < 1 || prefix > 32)
    return make_error(ErrorCode::kInvalidArgument, "bad IPv4 prefix length " + std::to_string(prefix));
  return ok();
}


// ---- links ----

struct LinkInfo {
  int index = 0;
  uint32_t mtu = 0;
  uint32_t flags = 0;
  std::string name, kind;
  LinkStats stats;
};

LinkInfo parse_link(const nlmsghdr* nlh) {
  LinkInfo info;
  auto* ifm = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(nlh));
  info.index = ifm->ifi_index;
  info.flags = ifm->ifi_flags;
  for_each_attr(nlh, sizeof(ifinfomsg), [&](const nlattr* a) {
    switch (mnl_attr_get_type(a)) {
      case IFLA_IFNAME: info.name = attr_str(a); break;
      case IFLA_MTU: attr_u32(a, &info.mtu); break;
      case IFLA_LINKINFO:
        for_each_nested(a, [&](const nlattr* l) {
          if (mnl_attr_get_type(l) == IFLA_INFO_KIND) info.kind = attr_str(l);
        });
        break;
      case IFLA_STATS64: {
        rtnl_link_stats64 st{};
        memcpy(&st, mnl_attr_get_payload(a), std::min<size_t>(sizeof st, mnl_attr_get_payload_len(a)));
        info.stats = {st.rx_bytes, st.rx_packets, st.tx_bytes, st.tx_packets};
        break;
      }
    }
  });
  return info;
}

// RTM_GETLINK by name (or by index when `name` is empty). kNotFound if absent.
Result<LinkInfo> get_link(Socket& s, const std::string& name, int index = 0, bool with_stats = false) {
  Batch b;
  std::string what = name.empty() ? "link #" + std::to_string(index) : "link " + name;
  nlmsghdr* nlh = b.add(RTM_GETLINK, NLM_F_ACK, "look up " + what);
  auto* ifm = Batch::header<ifinfomsg>(nlh);
  ifm->ifi_family = AF_UNSPEC;
  ifm->ifi_index = index;
  if (!name.empty()) mnl_attr_put_strz(nlh, IFLA_IFNAME, name.c_str());
  if (!with_stats) mnl_attr_put_u32(nlh, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
  LinkInfo info;
  bool got = false;
  COPPICE_ASSIGN_OR_RETURN(auto acks, s.exchange(b, [&](size_t, const nlmsghdr* m) {
    if (m->nlmsg_type != RTM_NEWLINK) return;
    info = parse_link(m);
    got = true;
  }));
  if (acks[0].err == ENODEV || (acks[0].err == 0 && !got))
    return make_error(ErrorCode::kNotFound, what + ": no such link", ENODEV);
  if (acks[0].err != 0) return std::unexpected(nl::ack_error(acks[0], b.step(0)));
  return info;
}

void put_up(nlmsghdr* nlh, int index) {
  auto* ifm = Batch::header<ifinfomsg>(nlh);
  ifm->ifi_family = AF_UNSPEC;
  ifm->ifi_index = index;
  ifm->ifi_flags = IFF_UP;
  ifm->ifi_change = IFF_UP;
}

void put_addr(Batch& b, int index, uint32_t addr, int prefix, const std::string& ifname) {
  nlmsghdr* nlh = b.add(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                        "add address " + ip4(addr) + "/" + std::to_string(prefix) + " to " + ifname);
  auto* ifa = Batch::header<ifaddrmsg>(nlh);
  ifa->ifa_family = AF_INET;
  ifa->ifa_prefixlen = static_cast<uint8_t>(prefix);
  ifa->ifa_scope = RT_SCOPE_UNIVERSE;
  ifa->ifa_index = static_cast<uint32_t>(index);
  mnl_attr_put_u32(nlh, IFA_LOCAL, htonl(addr));
  mnl_attr_put_u32(nlh, IFA_ADDRESS, htonl(addr));
}

// Every IPv4 address of the socket's namespace: (ifindex, address, prefix).
struct AddrEntry {
  int index;
  uint32_t addr;
  int prefix;
};
Result<std::vector<AddrEntry>> dump_addrs(Socket& s) {
  Batch b;
  nlmsghdr* nlh = b.add(RTM_GETADDR, NLM_F_DUMP, "list IPv4 addresses");
  Batch::header<ifaddrmsg>(nlh)->ifa_family = AF_INET;
  std::vector<AddrEntry> out;
  COPPICE_TRY(s.run(b, [&](size_t, const nlmsghdr* m) {
    if (m->nlmsg_type != RTM_NEWADDR) return;
    auto* ifa = static_cast<const ifaddrmsg*>(mnl_nlmsg_get_payload(m));
    if (ifa->ifa_family != AF_INET) return;
    uint32_t local = 0, address = 0;
    bool has_local = false, has_address = false;
    for_each_attr(m, sizeof(ifaddrmsg), [&](const nlattr* a) {
      if (mnl_attr_get_type(a) == IFA_LOCAL) has_local = attr_u32(a, &local);
      if (mnl_attr_get_type(a) == IFA_ADDRESS) has_address = attr_u32(a, &address);
    });
    if (!has_local && !has_address) return;
    out.push_back({static_cast<int>(ifa->ifa_index), ntohl(has_local ? local : address), ifa->ifa_prefixlen});
  }));
  return out;
}

Status delete_link_by(Socket& s, const std::string& name) {
  Batch b;
  nlmsghdr* nlh = b.add(RTM_DELLINK, NLM_F_ACK, "delete link " + name);
  Batch::header<ifinfomsg>(nlh)->ifi_family = AF_UNSPEC;
  mnl_attr_put_strz(nlh, IFLA_IFNAME, name.c_str());
  COPPICE_ASSIGN_OR_RETURN(auto acks, s.exchange(b));
  if (acks[0].err != 0 && acks[0].err != ENODEV) return std::unexpected(nl::ack_error(acks[0], b.step(0)));
  return ok();
}

// The part of make_sandbox_link after the pair exists; the caller deletes
// the host end when this fails.
Status configure_sandbox_link(Socket& host, int netns_fd, const std::string& host_if, uint32_t addr, int prefix,
                              uint32_t gateway) {
  // Host end: isolated bridge port first, then up, in one request (the
  // kernel applies the bridge-port data before the flags).
  {
    Batch b;
    nlmsghdr* nlh = b.add(RTM_NEWLINK, NLM_F_ACK, "isolate bridge port " + host_if + " and set it up");
    auto* ifm = Batch::header<ifinfomsg>(nlh);
    ifm->ifi_family = AF_UNSPEC;
    ifm->ifi_flags = IFF_UP;
    ifm->ifi_change = IFF_UP;
    mnl_attr_put_strz(nlh, IFLA_IFNAME, host_if.c_str());
    nlattr* linkinfo = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
    mnl_attr_put_strz(nlh, IFLA_INFO_SLAVE_KIND, "bridge");
    nlattr* data = mnl_attr_nest_start(nlh, IFLA_INFO_SLAVE_DATA);
    mnl_attr_put_u8(nlh, IFLA_BRPORT_ISOLATED, 1);
    mnl_attr_nest_end(nlh, data);
    mnl_attr_nest_end(nlh, linkinfo);
    COPPICE_TRY(host.run(b));
  }
  // Inside the namespace: lo and eth0 up, then eth0's address and the
  // default route.
  COPPICE_ASSIGN_OR_RETURN(auto inner, Socket::open(NETLINK_ROUTE, netns_fd));
  int eth0 = 0;
  {
    Batch b;
    nlmsghdr* lo = b.add(RTM_NEWLINK, NLM_F_ACK, "set lo up in the sandbox's namespace");
    put_up(lo, 0);
    mnl_attr_put_strz(lo, IFLA_IFNAME, "lo");
    nlmsghdr* up = b.add(RTM_NEWLINK, NLM_F_ACK, "set eth0 up in the sandbox's namespace");
    put_up(up, 0);
    mnl_attr_put_strz(up, IFLA_IFNAME, "eth0");
    nlmsghdr* get = b.add(RTM_GETLINK, NLM_F_ACK, "look up eth0 in the sandbox's namespace");
    Batch::header<ifinfomsg>(get)->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(get, IFLA_IFNAME, "eth0");
    mnl_attr_put_u32(get, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    COPPICE_TRY(inner.run(b, [&](size_t i, const nlmsghdr* m) {
      if (i == 2 && m->nlmsg_type == RTM_NEWLINK)
        eth0 = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(m))->ifi_index;
    }));
    if (eth0 == 0) return make_error(ErrorCode::kInternal, "eth0 missing in the sandbox's namespace");
  }
  {
    Batch b;
    put_addr(b, eth0, addr, prefix, "eth0");
    nlmsghdr* nlh = b.add(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
                          "add default route via " + ip4(gateway) + " in the sandbox's namespace");
    auto* rtm = Batch::header<rtmsg>(nlh);
    rtm->rtm_family = AF_INET;
    rtm->rtm_table = RT_TABLE_MAIN;
    rtm->rtm_protocol = RTPROT_BOOT;
    rtm->rtm_scope = RT_SCOPE_UNIVERSE;
    rtm->rtm_type = RTN_UNICAST;
    mnl_attr_put_u32(nlh, RTA_GATEWAY, htonl(gateway));
    mnl_attr_put_u32(nlh, RTA_OIF, static_cast<uint32_t>(eth0));
    COPPICE_TRY(inner.run(b));
  }
  return ok();
}

// ---- conntrack (ctnetlink) ----

struct CtEntry {
  std::vector<char> tuple;  // CTA_TUPLE_ORIG's payload, as dumped
  uint32_t id = 0;          // CTA_ID, network order
  bool has_id = false;
  uint16_t zone = 0;        // CTA_ZONE, network order
  bool has_zone = false;
};

bool tuple_source_is(const nlattr* tuple, uint32_t addr_be) {
  bool match = false;
  for_each_nested(tuple, [&](const nlattr* a) {
    if ((mnl_attr_get_type(a) & NLA_TYPE_MASK) != CTA_TUPLE_IP) return;
    for_each_nested(a, [&](const nlattr* ip) {
      uint32_t v = 0;
      if ((mnl_attr_get_type(ip) & NLA_TYPE_MASK) == CTA_IP_V4_SRC && attr_u32(ip, &v)) match = v == addr_be;
    });
  });
  return match;
}

Result<std::vector<CtEntry>> conntrack_of_source(Socket& s, uint32_t addr) {
  Batch b;
  nlmsghdr* nlh = b.add((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET, NLM_F_DUMP, "list conntrack entries");
  auto* nfg = Batch::header<nfgenmsg>(nlh);
  nfg->nfgen_family = AF_INET;
  nfg->version = NFNETLINK_V0;
  std::vector<CtEntry> out;
  uint32_t addr_be = htonl(addr);
  COPPICE_TRY(s.run(b, [&](size_t, const nlmsghdr* m) {
    if ((m->nlmsg_type & 0xff) != IPCTNL_MSG_CT_NEW) return;
    CtEntry e;
    bool match = false;
    for_each_attr(m, sizeof(nfgenmsg), [&](const nlattr* a) {
      switch (mnl_attr_get_type(a) & NLA_TYPE_MASK) {
        case CTA_TUPLE_ORIG:
          if (tuple_source_is(a, addr_be)) {
            match = true;
            auto* p = static_cast<const char*>(mnl_attr_get_payload(a));
            e.tuple.assign(p, p + mnl_attr_get_payload_len(a));
          }
          break;
        case CTA_ID: e.has_id = attr_u32(a, &e.id); break;
        case CTA_ZONE:
          if (mnl_attr_get_payload_len(a) >= sizeof(uint16_t)) {
            e.zone = mnl_attr_get_u16(a);
            e.has_zone = true;
          }
          break;
      }
    });
    if (match) out.push_back(std::move(e));
  }));
  return out;
}

}  // namespace

Status ensure_bridge(const std::string& name, uint32_t addr, int prefix) {
  std::string ctx = "bridge " + name;
  COPPICE_TRY_CTX(check_ifname(name), ctx);
  COPPICE_TRY_CTX(check_prefix(prefix), ctx);
  COPPICE_ASSIGN_OR_RETURN(auto s, Socket::open(NETLINK_ROUTE));
  auto link = get_link(s, name);
  if (!link && link.error().code() == ErrorCode::kNotFound) {
    Batch b;
    nlmsghdr* nlh = b.add(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, "create bridge " + name);
    Batch::header<ifinfomsg>(nlh)->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(nlh, IFLA_IFNAME, name.c_str());
    nlattr* linkinfo = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
    mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "bridge");
    mnl_attr_nest_end(nlh, linkinfo);
    COPPICE_ASSIGN_OR_RETURN(auto acks, s.exchange(b));
    // EEXIST: made by someone else meanwhile; checked below like any other.
    if (acks[0].err != 0 && acks[0].err != EEXIST) return std::unexpected(nl::ack_error(acks[0], b.step(0)));
    link = get_link(s, name);
  }
  if (!link) return std::unexpected(std::move(link.error()).context(ctx));
  if (link->kind != "bridge")
    return make_error(ErrorCode::kFailedPrecondition,
                      ctx + ": a link of that name exists and is not a bridge (kind \"" + link->kind + "\")");
  COPPICE_ASSIGN_OR_RETURN(auto addrs, dump_addrs(s));
  bool has = std::any_of(addrs.begin(), addrs.end(), [&](const AddrEntry& e) {
    return e.index == link->index && e.addr == addr && e.prefix == prefix;
  });
  Batch b;
  if (!has) put_addr(b, link->index, addr, prefix, name);
  // A bridge without an address of its own takes the lowest of its ports,
  // so it would change whenever the sandbox holding it went, and every
  // sandbox's ARP entry for its gateway would point at a MAC nobody
  // answers for: a fixed, locally administered one, derived from `addr`.
  nlmsghdr* up = b.add(RTM_NEWLINK, NLM_F_ACK, "set bridge " + name + " address and up");
  put_up(up, link->index);
  const uint8_t mac[6] = {0x02, 0xc0, uint8_t(addr >> 24), uint8_t(addr >> 16), uint8_t(addr >> 8), uint8_t(addr)};
  mnl_attr_put(up, IFLA_ADDRESS, sizeof mac, mac);
  COPPICE_ASSIGN_OR_RETURN(auto acks, s.exchange(b));
  for (size_t i = 0; i < acks.size(); ++i) {
    // EEXIST on the address: it was added meanwhile.
    if (acks[i].err != 0 && !(acks[i].err == EEXIST && !has && i == 0))
      return std::unexpected(nl::ack_error(acks[i], b.step(i)));
  }
  return ok();
}

Status make_sandbox_link(int netns_fd, const std::string& host_if, const std::string& bridge, uint32_t addr,
                         int prefix, uint32_t gateway) {
  std::string ctx = "sandbox link " + host_if;
  COPPICE_TRY_CTX(check_ifname(host_if), ctx);
  COPPICE_TRY_CTX(check_ifname(bridge), ctx);
  COPPICE_TRY_CTX(check_prefix(prefix), ctx);
  if (netns_fd < 0) return make_error(ErrorCode::kInvalidArgument, ctx + ": no network namespace");
  COPPICE_ASSIGN_OR_RETURN(auto host, Socket::open(NETLINK_ROUTE));
  auto br = get_link(host, bridge);
  if (!br) return std::unexpected(std::move(br.error()).context(ctx));
  if (br->kind != "bridge")
    return make_error(ErrorCode::kFailedPrecondition, ctx + ": " + bridge + " is not a bridge");

  // The pair: host end enslaved (down until isolated), peer made directly in
  // the sandbox's namespace as eth0.
  {
    Batch b;
    nlmsghdr* nlh = b.add(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                          "create veth " + host_if + " with eth0 in the sandbox's namespace");
    Batch::header<ifinfomsg>(nlh)->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(nlh, IFLA_IFNAME, host_if.c_str());
    mnl_attr_put_u32(nlh, IFLA_MTU, br->mtu);
    mnl_attr_put_u32(nlh, IFLA_MASTER, static_cast<uint32_t>(br->index));
    nlattr* linkinfo = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
    mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
    nlattr* data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
    nlattr* peer = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
    // (Not up here: the kernel refuses IFF_UP on a peer made in another
    // namespace with ENOTCONN; it is set up from inside below.)
    Batch::header<ifinfomsg>(nlh)->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(nlh, IFLA_IFNAME, "eth0");
    mnl_attr_put_u32(nlh, IFLA_MTU, br->mtu);
    mnl_attr_put_u32(nlh, IFLA_NET_NS_FD, static_cast<uint32_t>(netns_fd));
    mnl_attr_nest_end(nlh, peer);
    mnl_attr_nest_end(nlh, data);
    mnl_attr_nest_end(nlh, linkinfo);
    auto made = host.run(b);
    if (!made) return std::unexpected(std::move(made.error()).context(ctx));
  }
  auto st = configure_sandbox_link(host, netns_fd, host_if, addr, prefix, gateway);
  if (!st) {
    auto del = delete_link_by(host, host_if);
    if (!del) {
      COPPICE_LOG(warn) << ctx << ": cleanup after a failed set-up: " << del.error().to_string();
    }
    return std::unexpected(std::move(st.error()).context(ctx));
  }
  return ok();
}

Status delete_link(const std::string& name) {
  COPPICE_TRY(check_ifname(name));
  COPPICE_ASSIGN_OR_RETURN(auto s, Socket::open(NETLINK_ROUTE));
  return delete_link_by(s, name);
}

bool link_exists(const std::string& name) {
  if (!check_ifname(name)) return false;
  auto s = Socket::open(NETLINK_ROUTE);
  return s && get_link(*s, name).has_value();
}

Result<LinkStats> link_stats(const std::string& name) {
  COPPICE_TRY(check_ifname(name));
  COPPICE_ASSIGN_OR_RETURN(auto s, Socket::open(NETLINK_ROUTE));
  COPPICE_ASSIGN_OR_RETURN(auto link, get_link(s, name, 0, true));
  return link.stats;
}

Result<std::vector<std::string>> list_links(std::string_view name_prefix) {
  COPPICE_ASSIGN_OR_RETURN(auto s, Socket::open(NETLINK_ROUTE));
  Batch b;
  nlmsghdr* nlh = b.add(RTM_GETLINK, NLM_F_DUMP, "list links");
  Batch::header<ifinfomsg>(nlh)->ifi_family = AF_UNSPEC;
  mnl_attr_put_u32(nlh, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
  std::vector<std::string> out;
  COPPICE_TRY(s.run(b, [&](size_t, const nlmsghdr* m) {
    if (m->nlmsg_type != RTM_NEWLINK) return;
    LinkInfo info = parse_link(m);
    if (info.name.starts_with(name_prefix)) out.push_back(std::move(info.name));
  }));
  std::sort(out.begin(), out.end());
  return out;
}

Result<uint32_t> netns_address(int netns_fd, const std::string& ifname) {
  std::string ctx = "address of " + ifname + " in a sandbox's namespace";
  COPPICE_TRY_CTX(check_ifname(ifname), ctx);
  auto s = Socket::open(NETLINK_ROUTE, netns_fd);
  if (!s) return std::unexpected(std::move(s.error()).context(ctx));
  auto link = get_link(*s, ifname);
  if (!link) return std::unexpected(std::move(link.error()).context(ctx));
  COPPICE_ASSIGN_OR_RETURN(auto addrs, dump_addrs(*s));
  for (const auto& a : addrs)
    if (a.index == link->index) return a.addr;
  return make_error(ErrorCode::kNotFound, ctx + ": none");
}

Status set_egress_limit(int netns_fd, const std::string& ifname, uint64_t bytes_per_s) {
  std::string ctx = "egress limit on " + ifname;
  COPPICE_TRY_CTX(check_ifname(ifname), ctx);
  auto s = Socket::open(NETLINK_ROUTE, netns_fd);
  if (!s) return std::unexpected(std::move(s.error()).context(ctx));
  auto link = get_link(*s, ifname);
  if (!link) return std::unexpected(std::move(link.error()).context(ctx));
  Batch b;
  if (bytes_per_s == 0) {
    nlmsghdr* nlh = b.add(RTM_DELQDISC, NLM_F_ACK, "remove the root qdisc of " + ifname);
    auto* tcm = Batch::header<tcmsg>(nlh);
    tcm->tcm_family = AF_UNSPEC;
    tcm->tcm_ifindex = link->index;
    tcm->tcm_parent = TC_H_ROOT;
    COPPICE_ASSIGN_OR_RETURN(auto acks, s->exchange(b));
    // ENOENT: only the default qdisc is there (no limit).
    if (acks[0].err != 0 && acks[0].err != ENOENT) return std::unexpected(nl::ack_error(acks[0], b.step(0)));
    return ok();
  }
  // Burst: 10 ms at the rate, but at least a few full frames (a smaller
  // bucket than one frame would pass nothing). Queue: ~50 ms at the rate.
  uint64_t mtu = std::max<uint64_t>(link->mtu, 1500);
  uint64_t burst = std::clamp<uint64_t>(bytes_per_s / 100, 4 * mtu, UINT32_MAX / 2);
  uint64_t limit = std::min<uint64_t>(bytes_per_s / 20 + burst, UINT32_MAX);
  nlmsghdr* nlh = b.add(RTM_NEWQDISC, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
                        "set tbf " + std::to_string(bytes_per_s) + " B/s on " + ifname);
  auto* tcm = Batch::header<tcmsg>(nlh);
  tcm->tcm_family = AF_UNSPEC;
  tcm->tcm_ifindex = link->index;
  tcm->tcm_parent = TC_H_ROOT;
  mnl_attr_put_strz(nlh, TCA_KIND, "tbf");
  nlattr* opts = mnl_attr_nest_start(nlh, TCA_OPTIONS);
  tc_tbf_qopt q{};
  // A link layer set here means the kernel needs no rate table; the rate
  // itself is the 64-bit attribute, the bucket TCA_TBF_BURST in bytes.
  q.rate.linklayer = TC_LINKLAYER_ETHERNET;
  q.rate.rate = static_cast<uint32_t>(std::min<uint64_t>(bytes_per_s, UINT32_MAX));
  q.limit = static_cast<uint32_t>(limit);
  mnl_attr_put(nlh, TCA_TBF_PARMS, sizeof q, &q);
  mnl_attr_put_u64(nlh, TCA_TBF_RATE64, bytes_per_s);
  mnl_attr_put_u32(nlh, TCA_TBF_BURST, static_cast<uint32_t>(burst));
  mnl_attr_nest_end(nlh, opts);
  auto st = s->run(b);
  if (!st) return std::unexpected(std::move(st.error()).context(ctx));
  return ok();
}

Result<size_t> conntrack_count_source(uint32_t addr) {
  COPPICE_ASSIGN_OR_RETURN(auto s, Socket::open(NETLINK_NETFILTER));
  COPPICE_ASSIGN_OR_RETURN(auto entries, conntrack_of_source(s, addr));
  return entries.size();
}

Result<size_t> conntrack_flush_source(uint32_t addr) {
  std::string ctx = "flush conntrack entries from " + ip4(addr);
  auto s = Socket::open(NETLINK_NETFILTER);
  if (!s) return std::unexpected(std::move(s.error()).context(ctx));
  auto entries = conntrack_of_source(*s, addr);
  if (!entries) return std::unexpected(std::move(entries.error()).context(ctx));
  size_t deleted = 0;
  Batch b;
  auto flush = [&]() -> Status {
    COPPICE_ASSIGN_OR_RETURN(auto acks, s->exchange(b));
    for (size_t i = 0; i < acks.size(); ++i) {
      if (acks[i].err == 0) ++deleted;
      else if (acks[i].err != ENOENT) return std::unexpected(nl::ack_error(acks[i], b.step(i)).context(ctx));
    }
    b.clear();
    return ok();
  };
  for (const CtEntry& e : *entries) {
    if (b.full()) COPPICE_TRY(flush());
    nlmsghdr* nlh = b.add((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE, NLM_F_ACK, "delete a conntrack entry");
    auto* nfg = Batch::header<nfgenmsg>(nlh);
    nfg->nfgen_family = AF_INET;
    nfg->version = NFNETLINK_V0;
    mnl_attr_put(nlh, CTA_TUPLE_ORIG | NLA_F_NESTED, e.tuple.size(), e.tuple.data());
    if (e.has_zone) mnl_attr_put_u16(nlh, CTA_ZONE, e.zone);
    // The id: only this entry, not a newer one with the same tuple.
    if (e.has_id) mnl_attr_put_u32(nlh, CTA_ID, e.id);
  }
  COPPICE_TRY(flush());
  return deleted;
}

Result<std::string> default_route_interface() {
  COPPICE_ASSIGN_OR_RETURN(auto s, Socket::open(NETLINK_ROUTE));
  Batch b;
  nlmsghdr* nlh = b.add(RTM_GETROUTE, NLM_F_DUMP, "list IPv4 routes");
  Batch::header<rtmsg>(nlh)->rtm_family = AF_INET;
  int best_oif = 0;
  uint32_t best_metric = UINT32_MAX;
  bool found = false;
  COPPICE_TRY(s.run(b, [&](size_t, const nlmsghdr* m) {
    if (m->nlmsg_type != RTM_NEWROUTE) return;
    auto* rtm = static_cast<const rtmsg*>(mnl_nlmsg_get_payload(m));
    if (rtm->rtm_family != AF_INET || rtm->rtm_dst_len != 0 || rtm->rtm_type != RTN_UNICAST) return;
    uint32_t table = rtm->rtm_table, oif = 0, metric = 0;
    for_each_attr(m, sizeof(rtmsg), [&](const nlattr* a) {
      switch (mnl_attr_get_type(a)) {
        case RTA_TABLE: attr_u32(a, &table); break;
        case RTA_OIF: attr_u32(a, &oif); break;
        case RTA_PRIORITY: attr_u32(a, &metric); break;
        case RTA_MULTIPATH:
          // The first next hop of a multipath route.
          if (oif == 0 && mnl_attr_get_payload_len(a) >= sizeof(rtnexthop))
            oif = static_cast<uint32_t>(static_cast<const rtnexthop*>(mnl_attr_get_payload(a))->rtnh_ifindex);
          break;
      }
    });
    if (table != RT_TABLE_MAIN || oif == 0) return;
    if (!found || metric < best_metric) {
      found = true;
      best_metric = metric;
      best_oif = static_cast<int>(oif);
    }
  }));
  if (!found) return make_error(ErrorCode::kNotFound, "no IPv4 default route");
  auto link = get_link(s, "", best_oif);
  if (!link) return std::unexpected(std::move(link.error()).context("the default route's interface"));
  return link->name;
}

Result<std::vector<Cidr4>> host_ipv4_networks() {
  COPPICE_ASSIGN_OR_RETURN(auto s, Socket::open(NETLINK_ROUTE));
  COPPICE_ASSIGN_OR_RETURN(auto addrs, dump_addrs(s));
  std::vector<Cidr4> out;
  for (const auto& a : addrs) {
    Cidr4 c{a.addr & mask_of(a.prefix), a.prefix};
    if (std::find(out.begin(), out.end(), c) == out.end()) out.push_back(c);
  }
  return out;
}

Status set_forwarding(const std::string& ifname, bool on, bool* was_on) {
  std::string ctx = "forwarding on " + ifname;
  if (ifname.empty() || ifname == "." || ifname == ".." || ifname.find('/') != std::string::npos ||
      ifname.find('\0') != std::string::npos || ifname.size() >= IFNAMSIZ)
    return make_error(ErrorCode::kInvalidArgument, "bad interface name \"" + ifname + "\"");
  std::string path = "/proc/sys/net/ipv4/conf/" + ifname + "/forwarding";
  sys::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return make_error(ErrorCode::kNotFound, ctx + ": no such interface", ENOENT);
    return errno_error("open " + path);
  }
  char buf[16] = {};
  ssize_t n = ::pread(fd.get(), buf, sizeof buf - 1, 0);
  if (n < 0) return errno_error("read " + path);
  if (was_on) *was_on = n > 0 && buf[0] != '0';
  const char* v = on ? "1\n" : "0\n";
  if (::pwrite(fd.get(), v, 2, 0) != 2) return errno_error("write " + path);
  return ok();
}

}  // namespace coppice::net
