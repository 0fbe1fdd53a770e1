#include "net/network.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/ip/udp.hpp>

#include <chrono>
#include <fstream>
#include <sstream>

#include "common/log.h"
#include "net/firewall.h"
#include "net/netlink.h"
#include "net/resolver.h"
#include "sys/fsutil.h"

namespace coppice::net {

namespace {

constexpr auto kReleasePoll = std::chrono::milliseconds(20);
// A veth whose namespace is gone goes within ~20 ms; one still there after
// this is deleted explicitly (39 ms, on the releaser thread).
constexpr auto kReleaseGrace = std::chrono::seconds(3);

// The host's IPv4 name servers (/etc/resolv.conf).
std::vector<std::string> host_resolvers() {
  std::vector<std::string> out;
  std::ifstream in("/etc/resolv.conf");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string key, value;
    if (ls >> key >> value && key == "nameserver" && parse_ipv4(value)) out.push_back(value);
  }
  return out;
}

Result<boost::asio::ip::udp::endpoint> parse_upstream(const std::string& s) {
  auto colon = s.find(':');
  auto addr = parse_ipv4(s.substr(0, colon));
  if (!addr) return make_error(ErrorCode::kInvalidArgument, "DNS upstream \"" + s + "\" is not IPv4[:port]");
  unsigned port = 53;
  if (colon != std::string::npos) {
    try {
      size_t used = 0;
      port = std::stoul(s.substr(colon + 1), &used);
      if (used != s.size() - colon - 1 || port == 0 || port > 65535) throw std::out_of_range("port");
    } catch (const std::exception&) {
      return make_error(ErrorCode::kInvalidArgument, "DNS upstream \"" + s + "\" has a bad port");
    }
  }
  return boost::asio::ip::udp::endpoint(boost::asio::ip::address_v4(*addr), static_cast<uint16_t>(port));
}

uint32_t fnv1a(std::string_view s) {
  uint32_t h = 2166136261u;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 16777619u;
  return h;
}

}  // namespace

Network::Network(const NetworkOptions& o, AddressLedger& ledger) : opts_(o), ledger_(ledger) {
  gateway_ = opts_.subnet.addr + 1;
  // Veth names: 8 characters naming this gateway's bridge (28 bits of its
  // name's hash, so two gateways on a host do not take each other's veths
  // for orphans), then the host
  // part of the address in hex (at most 15 characters in all).
  char tag[12];
  std::snprintf(tag, sizeof tag, "c%07x", fnv1a(opts_.bridge) & 0xfffffff);
  link_prefix_ = tag;
  cursor_ = gateway_ + 1;
}

Result<std::unique_ptr<Network>> Network::open(const NetworkOptions& o, AddressLedger& ledger) {
  if (o.subnet.prefix < 8 || o.subnet.prefix > 28) {
    return make_error(ErrorCode::kInvalidArgument, "--subnet " + to_string(o.subnet) + ": the prefix must be /8 to /28");
  }
  auto n = std::make_unique<Network>(o, ledger);
  NetworkOptions& opts = n->opts_;
  if (opts.uplink.empty()) {
    auto up = default_route_interface();
    if (!up) {
      return make_error(ErrorCode::kFailedPrecondition,
                        "no uplink: the host has no IPv4 default route (" + up.error().message() + "); name one with --uplink");
    }
    opts.uplink = *up;
  } else if (!link_exists(opts.uplink)) {
    // Checked before anything is made: a host that cannot is left as it was.
    return make_error(ErrorCode::kFailedPrecondition, "uplink " + opts.uplink + ": no such interface");
  }
  // The subnet must be this gateway's alone.
  auto nets = host_ipv4_networks();
  if (!nets) return std::unexpected(std::move(nets.error()).context("list the host's addresses"));
  for (const auto& hn : *nets) {
    Cidr4 net{hn.addr & hn.mask(), hn.prefix};
    // Our own bridge from an earlier run holds the subnet: fine.
    if (net.overlaps(o.subnet) && !(net == o.subnet)) {
      return make_error(ErrorCode::kFailedPrecondition, "subnet " + to_string(o.subnet) + " overlaps " + to_string(net) +
                                                            " of this host: choose another with --subnet");
    }
  }
  if (auto s = ensure_bridge(opts.bridge, n->gateway_, o.subnet.prefix); !s) {
    return make_error(ErrorCode::kFailedPrecondition,
                      "cannot make bridge " + opts.bridge + ": " + s.error().message() + " (the kernel needs bridge support)");
  }
  // What a sandbox may never reach unless the operator opened it.
  FirewallConfig fc;
  fc.table = opts.table;
  fc.bridge = opts.bridge;
  fc.uplink = opts.uplink;
  fc.subnet = o.subnet;
  fc.gateway_addr = n->gateway_;
  fc.open_always = opts.open_ranges;
  // A restarted gateway keeps its sandboxes' rules: there is never a moment
  // without them (reconcile() drops those of sandboxes gone since).
  fc.keep_elements = true;
  for (const char* r : {"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
                        "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4"}) {
    fc.deny_always.push_back(*parse_cidr4(r));
  }
  for (const auto& hn : *nets) {
    // The LAN of each host interface (the host's own addresses are input,
    // not forwarded: the input chain refuses them).
    fc.deny_always.push_back(Cidr4{hn.addr & hn.mask(), hn.prefix});
  }
  auto fw = Firewall::open(fc);
  if (!fw) {
    return make_error(ErrorCode::kFailedPrecondition,
                      "nftables: " + fw.error().message() + " (the kernel needs nf_tables with NAT; install the nftables package)");
  }
  n->firewall_ = std::move(*fw);

  // Resolver.
  std::vector<boost::asio::ip::udp::endpoint> ups;
  auto names = opts.dns_upstreams.empty() ? host_resolvers() : opts.dns_upstreams;
  for (const auto& u : names) {
    auto ep = parse_upstream(u);
    if (!ep) return std::unexpected(ep.error());
    ups.push_back(*ep);
  }
  if (ups.empty()) {
    return make_error(ErrorCode::kFailedPrecondition, "no DNS upstream: /etc/resolv.conf names no IPv4 server; give --dns-upstream");
  }
  Network* self = n.get();
  n->resolver_ = std::make_unique<Resolver>(
      n->dns_io_.get_executor(), n->gateway_, opts.dns_port, ups,
      [self](uint32_t src) -> std::shared_ptr<const DnsPolicy> {
        std::lock_guard lk(self->mu_);
        auto it = self->dns_.find(src);
        return it == self->dns_.end() ? nullptr : it->second;
      },
      [self](uint32_t src, uint32_t ip, uint32_t ttl) {
        auto s = self->firewall_->allow_resolved(src, ip, std::chrono::seconds(std::clamp<uint32_t>(ttl, 30, 3600)));
        if (!s) {
          COPPICE_LOG_RATE(warn, 10) << "resolver: open " << ipv4_string(ip) << ": " << s.error().to_string();
        }
      });
  if (auto s = n->resolver_->start(); !s) return std::unexpected(std::move(s.error()).context("DNS resolver"));
  n->dns_thread_ = std::thread([self] { self->dns_io_.run(); });

  // The resolv.conf every sandbox sees.
  if (!opts.run_dir.empty()) {
    COPPICE_TRY_CTX(sys::make_dirs(opts.run_dir, 0755), "network run dir");
    n->resolv_conf_ = sys::join_path(opts.run_dir, "resolv.conf");
    std::string body = "nameserver " + ipv4_string(n->gateway_) + "\noptions timeout:2 attempts:2\n";
    // Rewritten in place: running sandboxes have this inode bound.
    COPPICE_TRY_CTX(sys::write_new_file(n->resolv_conf_, body, 0644), "sandbox resolv.conf");
  }

  // Addresses an earlier process recorded stay taken until reconcile().
  auto rows = ledger.list();
  if (!rows) return std::unexpected(std::move(rows.error()).context("network addresses"));
  for (const auto& r : *rows) n->taken_.insert(r.addr);
  n->releaser_ = std::thread([self] { self->releaser_loop(); });
  return n;
}

Network::~Network() {
  {
    std::lock_guard lk(rel_mu_);
    stop_ = true;
  }
  rel_cv_.notify_all();
  if (releaser_.joinable()) releaser_.join();
  if (resolver_) resolver_->stop();
  dns_work_.reset();
  dns_io_.stop();
  if (dns_thread_.joinable()) dns_thread_.join();
  resolver_.reset();
  if (keep_) {
    if (firewall_) firewall_->release();
    firewall_.reset();
    return;
  }
  firewall_.reset();  // removes the table, restores forwarding
  if (auto s = delete_link(opts_.bridge); !s) {
    COPPICE_LOG(warn) << "network: " << s.error().to_string();
  }
}

std::string Network::describe() const {
  return "bridge " + opts_.bridge + " " + ipv4_string(gateway_) + "/" + std::to_string(opts_.subnet.prefix) +
         ", uplink " + opts_.uplink + ", nftables table inet " + opts_.table;
}

std::string Network::link_name(uint32_t addr) const {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%s%06x", link_prefix_.c_str(), (addr - opts_.subnet.addr) & 0xffffff);
  return buf;
}

Result<uint32_t> Network::take_address() {
  std::lock_guard lk(mu_);
  const uint32_t first = gateway_ + 1, last = opts_.subnet.last() - 1;
  const uint32_t span = last - first + 1;
  for (uint32_t i = 0; i < span; ++i) {
    uint32_t a = first + (cursor_ - first + i) % span;
    if (taken_.count(a)) continue;
    taken_.insert(a);
    mine_.insert(a);
    cursor_ = a + 1 > last ? first : a + 1;
    return a;
  }
  return make_error(ErrorCode::kResourceExhausted, "no free address in " + to_string(opts_.subnet));
}

void Network::free_address(uint32_t addr) {
  std::lock_guard lk(mu_);
  taken_.erase(addr);
  mine_.erase(addr);
  dns_.erase(addr);
  ruled_.erase(addr);
}

Result<Attachment> Network::attach(int netns_fd) {
  auto addr = take_address();
  if (!addr) return std::unexpected(addr.error());
  Attachment a{*addr, link_name(*addr)};
  if (auto s = ledger_.add({a.addr, "spare", a.link}); !s) {
    free_address(a.addr);
    return std::unexpected(std::move(s.error()).context("network address " + ipv4_string(a.addr)));
  }
  if (auto s = make_sandbox_link(netns_fd, a.link, opts_.bridge, a.addr, opts_.subnet.prefix, gateway_); !s) {
    // Whatever it made is gone with it; the address is free again.
    (void)ledger_.remove(a.addr);
    free_address(a.addr);
    return std::unexpected(std::move(s.error()).context("sandbox network " + ipv4_string(a.addr)));
  }
  return a;
}

Status Network::claim(const Attachment& a, const std::string& id) {
  return ledger_.put({a.addr, id, a.link});
}

void Network::release(const Attachment& a) {
  if (!a.valid()) return;
  // The sandbox's last counters, for the totals.
  if (auto c = counters(a); c) {
    std::lock_guard lk(mu_);
    retired_.rx_bytes += c->rx_bytes;
    retired_.rx_packets += c->rx_packets;
    retired_.tx_bytes += c->tx_bytes;
    retired_.tx_packets += c->tx_packets;
  }
  {
    std::lock_guard lk(mu_);
    dns_.erase(a.addr);
  }
  if (auto s = firewall_->clear(a.addr); !s) {
    COPPICE_LOG_RATE(warn, 10) << "network release: " << s.error().to_string();
  }
  {
    std::lock_guard lk(rel_mu_);
    releases_.push_back({a, std::chrono::steady_clock::now()});
  }
  rel_cv_.notify_all();
}

void Network::releaser_loop() {
  std::unique_lock lk(rel_mu_);
  while (true) {
    rel_cv_.wait_for(lk, kReleasePoll, [&] { return stop_; });
    if (stop_) return;
    std::deque<Pending> still;
    auto batch = std::move(releases_);
    releases_.clear();
    lk.unlock();
    for (auto& p : batch) {
      if (link_exists(p.a.link)) {
        if (std::chrono::steady_clock::now() - p.since < kReleaseGrace) {
          still.push_back(std::move(p));
          continue;
        }
        if (auto s = delete_link(p.a.link); !s) {
          COPPICE_LOG_RATE(warn, 10) << "network release: " << s.error().to_string();
          still.push_back(std::move(p));
          continue;
        }
      }
      // No packet of the sandbox can make a new entry now.
      if (auto n = conntrack_flush_source(p.a.addr); !n) {
        COPPICE_LOG_RATE(warn, 10) << "network release: conntrack: " << n.error().to_string();
      }
      if (auto s = ledger_.remove(p.a.addr); !s) {
        COPPICE_LOG_RATE(warn, 10) << "network release: " << s.error().to_string();
        still.push_back(std::move(p));  // retried: the address stays taken until the ledger says so
        continue;
      }
      free_address(p.a.addr);
    }
    lk.lock();
    for (auto& p : still) releases_.push_front(std::move(p));
  }
}

Result<Attachment> Network::adopt(int netns_fd, const std::string& id) {
  auto addr = netns_address(netns_fd, "eth0");
  if (!addr) return std::unexpected(std::move(addr.error()).context("sandbox " + id + " network"));
  if (!opts_.subnet.contains(*addr)) {
    return make_error(ErrorCode::kFailedPrecondition, "sandbox " + id + " has address " + ipv4_string(*addr) +
                                                          ", outside this gateway's subnet " + to_string(opts_.subnet));
  }
  Attachment a{*addr, link_name(*addr)};
  {
    std::lock_guard lk(mu_);
    taken_.insert(a.addr);
    mine_.insert(a.addr);
    ruled_.insert(a.addr);  // it may have rules from the process before
  }
  COPPICE_TRY(ledger_.put({a.addr, id, a.link}));
  return a;
}

Status Network::set_egress_limit(int netns_fd, uint64_t bytes_per_s) {
  return net::set_egress_limit(netns_fd, "eth0", bytes_per_s);
}

Result<LinkCounters> Network::counters(const Attachment& a) {
  auto s = link_stats(a.link);
  if (!s) return std::unexpected(s.error());
  // The host end receives what the sandbox sends.
  return LinkCounters{s->tx_bytes, s->tx_packets, s->rx_bytes, s->rx_packets};
}

LinkCounters Network::totals() {
  LinkCounters t;
  {
    std::lock_guard lk(mu_);
    t = retired_;
  }
  std::set<std::string> live;
  {
    std::lock_guard lk(mu_);
    for (uint32_t a : mine_) live.insert(link_name(a));
  }
  for (const auto& l : live) {
    if (auto c = counters(Attachment{1, l}); c) {
      t.rx_bytes += c->rx_bytes;
      t.rx_packets += c->rx_packets;
      t.tx_bytes += c->tx_bytes;
      t.tx_packets += c->tx_packets;
    }
  }
  return t;
}

Status Network::apply(uint32_t addr, const EgressPolicy& p) {
  bool ruled;
  {
    std::lock_guard lk(mu_);
    ruled = ruled_.count(addr) > 0;
  }
  // A fresh address has no elements (release() cleared them): the default
  // policy is already what the firewall does.
  if (ruled || !is_default(p)) {
    EgressRules r;
    r.internet = !p.offline;
    r.allow = p.allow;
    r.deny = p.deny;
    COPPICE_TRY(firewall_->set_rules(addr, r));
    std::lock_guard lk(mu_);
    ruled_.insert(addr);
  }
  auto d = std::make_shared<DnsPolicy>();
  d->allowed = !p.offline;
  d->default_deny = p.default_deny;
  d->domains = p.domains;
  std::lock_guard lk(mu_);
  dns_[addr] = std::move(d);
  return {};
}

void Network::reconcile(const std::set<std::string>& live) {
  auto rows = ledger_.list();
  if (!rows) {
    COPPICE_LOG(warn) << "network reconcile: " << rows.error().to_string();
    return;
  }
  std::set<uint32_t> keep;
  {
    std::lock_guard lk(mu_);
    keep = mine_;
  }
  size_t orphans = 0;
  for (const auto& r : *rows) {
    if (keep.count(r.addr) || live.count(r.owner)) continue;
    ++orphans;
    (void)firewall_->clear(r.addr);
    std::lock_guard lk(rel_mu_);
    releases_.push_back({Attachment{r.addr, r.link.empty() ? link_name(r.addr) : r.link},
                         std::chrono::steady_clock::now() - kReleaseGrace});
  }
  // Veths of this bridge that no address row names.
  std::set<std::string> known;
  for (const auto& r : *rows) known.insert(r.link);
  {
    std::lock_guard lk(mu_);
    for (uint32_t a : mine_) known.insert(link_name(a));
  }
  if (auto links = list_links(link_prefix_); links) {
    for (const auto& l : *links) {
      if (known.count(l)) continue;
      ++orphans;
      if (auto s = delete_link(l); !s) {
        COPPICE_LOG(warn) << "network reconcile: " << s.error().to_string();
      }
    }
  }
  // Rules of addresses no sandbox holds.
  if (auto with = firewall_->sandboxes_with_elements(); with) {
    for (uint32_t a : *with) {
      bool held;
      {
        std::lock_guard lk(mu_);
        held = mine_.count(a) > 0;
      }
      if (!held) {
        ++orphans;
        (void)firewall_->clear(a);
      }
    }
  }
  rel_cv_.notify_all();
  if (orphans) {
    COPPICE_LOG(info) << "network: removed " << orphans << " leftovers of an earlier gateway";
  }
}

size_t Network::addresses_taken() const {
  std::lock_guard lk(mu_);
  return taken_.size();
}

size_t Network::releases_pending() const {
  std::lock_guard lk(const_cast<std::mutex&>(rel_mu_));
  return releases_.size();
}

}  // namespace coppice::net
