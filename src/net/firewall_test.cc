// Root test of the gateway's firewall against the real kernel, in network
// namespaces of its own (the host's ruleset and sysctls are never touched):
//
//   sandbox S  10.213.0.2 ─┐                    ┌─ "internet" I 198.51.100.2
//   sandbox S2 10.213.0.3 ─┤ br0 10.213.0.1 [H] up0 198.51.100.1 ─┘   on lo: 203.0.113.10/.20/.130,
//                          │                    side0 192.0.2.1 ─┐    on a veth: 169.254.169.254
//                                                                └─ "LAN" L 192.0.2.2
//
// H is the gateway's host; the test thread enters it, so the Firewall runs
// there. Servers in I, H and L answer TCP connections and UDP datagrams with
// the source address they saw (4 bytes), so a probe shows both whether it got
// through and how it was NATed.
#include "net/firewall.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "sys/fd.h"
#include "sys/netns.h"

namespace coppice::net {
namespace {

using namespace std::chrono_literals;

constexpr uint32_t ip(int a, int b, int c, int d) {
  return (uint32_t(a) << 24) | (uint32_t(b) << 16) | (uint32_t(c) << 8) | uint32_t(d);
}

constexpr uint32_t kGw = ip(10, 213, 0, 1);
constexpr uint32_t kS = ip(10, 213, 0, 2);
constexpr uint32_t kS2 = ip(10, 213, 0, 3);
constexpr uint32_t kUplinkAddr = ip(198, 51, 100, 1);
constexpr uint32_t kInetAddr = ip(198, 51, 100, 2);
constexpr uint32_t kWeb = ip(203, 0, 113, 10);
constexpr uint32_t kWeb2 = ip(203, 0, 113, 20);
constexpr uint32_t kHostLan = ip(203, 0, 113, 130);  // in the "host LAN" range 203.0.113.128/25
constexpr uint32_t kMetadata = ip(169, 254, 169, 254);
constexpr uint32_t kSide = ip(192, 0, 2, 2);
constexpr uint16_t kPort = 8080;
constexpr uint16_t kEchoPort = 7;

Cidr4 cidr(const char* text) {
  auto c = parse_cidr4(text);
  EXPECT_TRUE(c) << text;
  return c ? *c : Cidr4{};
}

int sh(const std::string& cmd) {
  int rc = std::system((cmd + " >/dev/null 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

sys::UniqueFd open_ns(const std::string& name) {
  return sys::UniqueFd(::open(("/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC));
}

sockaddr_in sockaddr_of(uint32_t addr, uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(addr);
  sa.sin_port = htons(port);
  return sa;
}

// TCP listeners and UDP responders in some namespaces, served by one thread.
class Servers {
 public:
  Servers() { EXPECT_EQ(::pipe2(stop_, O_CLOEXEC), 0); }
  ~Servers() {
    if (thread_.joinable()) {
      (void)!::write(stop_[1], "x", 1);
      thread_.join();
    }
    ::close(stop_[0]);
    ::close(stop_[1]);
  }
  void add(int ns_fd, int type, uint16_t port) {
    auto s = sys::socket_in_netns(ns_fd, AF_INET, type);
    ASSERT_TRUE(s) << s.error().to_string();
    int one = 1;
    ::setsockopt(s->get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (type == SOCK_DGRAM) ::setsockopt(s->get(), IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
    sockaddr_in sa = sockaddr_of(0, port);
    ASSERT_EQ(::bind(s->get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0) << errno;
    if (type == SOCK_STREAM) {
      ASSERT_EQ(::listen(s->get(), 64), 0);
    }
    fds_.push_back({std::move(*s), type});
  }
  void start() {
    thread_ = std::thread([this] { serve(); });
  }

 private:
  struct Sock {
    sys::UniqueFd fd;
    int type;
  };
  void serve() {
    for (;;) {
      std::vector<pollfd> p{{stop_[0], POLLIN, 0}};
      for (auto& s : fds_) p.push_back({s.fd.get(), POLLIN, 0});
      if (::poll(p.data(), p.size(), -1) < 0) continue;
      if (p[0].revents) return;
      for (size_t i = 0; i < fds_.size(); ++i) {
        if (!p[i + 1].revents) continue;
        sockaddr_in peer{};
        socklen_t len = sizeof peer;
        if (fds_[i].type == SOCK_STREAM) {
          int c = ::accept4(fds_[i].fd.get(), reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
          if (c < 0) continue;
          (void)!::write(c, &peer.sin_addr.s_addr, 4);
          ::close(c);
        } else {
          // Answer from the address asked (IP_PKTINFO), as a real service
          // bound to a wildcard address must for NAT and connected clients.
          char buf[64];
          alignas(cmsghdr) char control[CMSG_SPACE(sizeof(in_pktinfo))];
          iovec iov{buf, sizeof buf};
          msghdr m{};
          m.msg_name = &peer;
          m.msg_namelen = sizeof peer;
          m.msg_iov = &iov;
          m.msg_iovlen = 1;
          m.msg_control = control;
          m.msg_controllen = sizeof control;
          if (::recvmsg(fds_[i].fd.get(), &m, 0) < 0) continue;
          in_pktinfo info{};
          for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) std::memcpy(&info, CMSG_DATA(c), sizeof info);
          }
          uint32_t seen = peer.sin_addr.s_addr;
          iovec out_iov{&seen, 4};
          msghdr out{};
          out.msg_name = &peer;
          out.msg_namelen = sizeof peer;
          out.msg_iov = &out_iov;
          out.msg_iovlen = 1;
          alignas(cmsghdr) char out_control[CMSG_SPACE(sizeof(in_pktinfo))] = {};
          out.msg_control = out_control;
          out.msg_controllen = sizeof out_control;
          cmsghdr* c = CMSG_FIRSTHDR(&out);
          c->cmsg_level = IPPROTO_IP;
          c->cmsg_type = IP_PKTINFO;
          c->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
          in_pktinfo reply{};
          reply.ipi_spec_dst = info.ipi_addr;
          std::memcpy(CMSG_DATA(c), &reply, sizeof reply);
          ::sendmsg(fds_[i].fd.get(), &out, 0);
        }
      }
    }
  }
  int stop_[2] = {-1, -1};
  std::vector<Sock> fds_;
  std::thread thread_;
};

// The source address the server saw, or nullopt when nothing came back in time.
std::optional<uint32_t> probe(int ns_fd, int type, uint32_t dst, uint16_t port, int timeout_ms = 400) {
  auto s = sys::socket_in_netns(ns_fd, AF_INET, type | SOCK_NONBLOCK);
  if (!s) return std::nullopt;
  sockaddr_in sa = sockaddr_of(dst, port);
  int rc = ::connect(s->get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  if (rc != 0 && errno != EINPROGRESS) return std::nullopt;
  if (type == SOCK_DGRAM && ::send(s->get(), "ping", 4, 0) != 4) return std::nullopt;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  uint32_t seen = 0;
  size_t got = 0;
  while (got < 4) {
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
    if (left <= 0) return std::nullopt;
    pollfd p{s->get(), POLLIN, 0};
    if (::poll(&p, 1, left) <= 0) continue;
    ssize_t n = ::recv(s->get(), reinterpret_cast<char*>(&seen) + got, 4 - got, 0);
    if (n <= 0) {
      if (n < 0 && errno == EAGAIN) continue;
      return std::nullopt;
    }
    got += static_cast<size_t>(n);
  }
  return ntohl(seen);
}

bool tcp_ok(int ns, uint32_t dst, uint16_t port = kPort) { return probe(ns, SOCK_STREAM, dst, port).has_value(); }
bool udp_ok(int ns, uint32_t dst, uint16_t port = kEchoPort) { return probe(ns, SOCK_DGRAM, dst, port).has_value(); }

std::string read_sysctl(const std::string& path) {
  std::ifstream f(path);
  std::string v;
  f >> v;
  return v;
}

class FirewallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, nftables)";
    if (sh("command -v ip") != 0) GTEST_SKIP() << "needs iproute2's ip";
    if (sh("command -v nft") != 0) GTEST_SKIP() << "needs nftables' nft (scripts/deps.sh)";
    std::string p = "cfw" + std::to_string(::getpid());
    h_ = p + "h", i_ = p + "i", s_ = p + "s", s2_ = p + "t", l_ = p + "l";
    for (auto* n : {&h_, &i_, &s_, &s2_, &l_}) {
      if (sh("ip netns add " + *n) != 0) {
        if (made_.empty()) GTEST_SKIP() << "cannot create network namespaces here";
        FAIL() << "ip netns add " << *n;
      }
      made_.push_back(*n);
      ASSERT_EQ(sh("ip -n " + *n + " link set lo up"), 0);
    }
    const std::string H = "ip -n " + h_ + " ", I = "ip -n " + i_ + " ", L = "ip -n " + l_ + " ";
    std::vector<std::string> cmds = {
        H + "link add br0 type bridge",
        H + "addr add 10.213.0.1/16 dev br0",
        H + "link set br0 up",
        H + "link add up0 type veth peer name eth0 netns " + i_,
        H + "addr add 198.51.100.1/24 dev up0",
        H + "link set up0 up",
        I + "addr add 198.51.100.2/24 dev eth0",
        I + "link set eth0 up",
        H + "route add default via 198.51.100.2",
        // Without masquerade, replies to a sandbox would come back by this route.
        I + "route add 10.213.0.0/16 via 198.51.100.1",
        I + "route add 192.0.2.0/24 via 198.51.100.1",
        I + "addr add 203.0.113.10/32 dev lo",
        I + "addr add 203.0.113.20/32 dev lo",
        I + "addr add 203.0.113.130/32 dev lo",
        // The "metadata service" on an interface of its own (a veth pair:
        // this kernel has no dummy driver).
        I + "link add md0 type veth peer name md1",
        I + "addr add 169.254.169.254/32 dev md0",
        I + "link set md1 up",
        I + "link set md0 up",
        H + "route add 169.254.169.254/32 via 198.51.100.2",
        H + "link add side0 type veth peer name eth0 netns " + l_,
        H + "addr add 192.0.2.1/24 dev side0",
        H + "link set side0 up",
        L + "addr add 192.0.2.2/24 dev eth0",
        L + "link set eth0 up",
        L + "route add default via 192.0.2.1",
    };
    int n = 1;
    for (const std::string* sb : {&s_, &s2_}) {
      std::string host_if = "vs" + std::to_string(n), S = "ip -n " + *sb + " ";
      cmds.push_back(H + "link add " + host_if + " type veth peer name eth0 netns " + *sb);
      cmds.push_back(H + "link set " + host_if + " master br0");
      cmds.push_back(H + "link set " + host_if + " type bridge_slave isolated on");
      cmds.push_back(H + "link set " + host_if + " up");
      cmds.push_back(S + "addr add 10.213.0." + std::to_string(n + 1) + "/16 dev eth0");
      cmds.push_back(S + "link set eth0 up");
      cmds.push_back(S + "route add default via 10.213.0.1");
      ++n;
    }
    // A new namespace may inherit the host's forwarding: start from off.
    cmds.push_back("ip netns exec " + h_ + " sysctl -qw net.ipv4.conf.all.forwarding=0");
    for (const auto& c : cmds) ASSERT_EQ(sh(c), 0) << c;

    hns_ = open_ns(h_), ins_ = open_ns(i_), sns_ = open_ns(s_), s2ns_ = open_ns(s2_), lns_ = open_ns(l_);
    ASSERT_TRUE(hns_ && ins_ && sns_ && s2ns_ && lns_);
    for (int fd : {ins_.get(), hns_.get(), lns_.get(), sns_.get(), s2ns_.get()}) {
      servers_.add(fd, SOCK_STREAM, kPort);
      servers_.add(fd, SOCK_DGRAM, kEchoPort);
    }
    // The gateway's resolver's ports, in H.
    servers_.add(hns_.get(), SOCK_STREAM, 53);
    servers_.add(hns_.get(), SOCK_DGRAM, 53);
    servers_.start();

    // The test thread becomes the gateway: it runs in H from here on.
    self_ = sys::UniqueFd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(self_);
    ASSERT_EQ(::setns(hns_.get(), CLONE_NEWNET), 0);
    entered_ = true;
  }

  void TearDown() override {
    fw_.reset();
    if (entered_ && ::setns(self_.get(), CLONE_NEWNET) != 0) std::abort();
    for (const auto& n : made_) sh("ip netns del " + n);
  }

  FirewallConfig config() {
    FirewallConfig c;
    c.table = "cfwtest";
    c.bridge = "br0";
    c.uplink = "up0";
    c.subnet = cidr("10.213.0.0/16");
    c.gateway_addr = kGw;
    c.deny_always = {cidr("203.0.113.128/25"), cidr("198.51.100.1"), cidr("192.0.2.0/24")};
    return c;
  }

  void open_fw(FirewallConfig c) {
    auto fw = Firewall::open(std::move(c));
    ASSERT_TRUE(fw) << fw.error().to_string();
    fw_ = std::move(*fw);
  }

  std::string fwd(const std::string& ifname) {
    return read_sysctl("/proc/sys/net/ipv4/conf/" + ifname + "/forwarding");
  }
  bool table_exists(const std::string& t = "cfwtest") {
    if (t.find('\'') != std::string::npos) return false;
    return sh("ip netns exec " + h_ + " nft list table inet '" + t + "'") == 0;
  }

  std::string h_, i_, s_, s2_, l_;
  std::vector<std::string> made_;
  sys::UniqueFd hns_, ins_, sns_, s2ns_, lns_, self_;
  bool entered_ = false;
  Servers servers_;
  std::unique_ptr<Firewall> fw_;
};

// The topology itself works, and everything the firewall blocks below is
// reachable without it (with forwarding on and no table).
TEST_F(FirewallTest, ControlWithoutFirewallEverythingIsReachable) {
  ASSERT_EQ(sh("ip netns exec " + h_ + " sysctl -qw net.ipv4.conf.all.forwarding=1"), 0);
  int s = sns_.get();
  EXPECT_EQ(probe(s, SOCK_STREAM, kWeb, kPort), kS) << "not NATed without the firewall";
  EXPECT_TRUE(udp_ok(s, kWeb));
  EXPECT_TRUE(tcp_ok(s, kHostLan));
  EXPECT_TRUE(tcp_ok(s, kMetadata));
  EXPECT_TRUE(tcp_ok(s, kSide));
  EXPECT_TRUE(tcp_ok(s, kUplinkAddr));
  EXPECT_TRUE(tcp_ok(s, kGw));
  EXPECT_TRUE(tcp_ok(s, kUplinkAddr, 53));
  EXPECT_TRUE(tcp_ok(s2ns_.get(), kWeb));
  EXPECT_TRUE(tcp_ok(ins_.get(), kSide)) << "the internet reaches the LAN through a forwarding host";
  EXPECT_TRUE(tcp_ok(ins_.get(), kS));
  ASSERT_EQ(sh("ip netns exec " + h_ + " sysctl -qw net.ipv4.conf.all.forwarding=0"), 0);
}

TEST_F(FirewallTest, DefaultAllowsInternetWithMasqueradeAndBlocksTheRest) {
  open_fw(config());
  int s = sns_.get();
  EXPECT_EQ(probe(s, SOCK_STREAM, kWeb, kPort), kUplinkAddr) << "masqueraded to the uplink's address";
  EXPECT_EQ(probe(s, SOCK_DGRAM, kWeb, kEchoPort), kUplinkAddr);
  EXPECT_TRUE(tcp_ok(s, kInetAddr));
  // DNS to the bridge address is the one thing the host answers.
  EXPECT_TRUE(tcp_ok(s, kGw, 53));
  EXPECT_TRUE(udp_ok(s, kGw, 53));
  EXPECT_FALSE(tcp_ok(s, kGw, kPort)) << "the host's other ports";
  EXPECT_FALSE(udp_ok(s, kGw, kEchoPort));
  EXPECT_FALSE(tcp_ok(s, kUplinkAddr, 53)) << "DNS port on another host address";
  EXPECT_FALSE(tcp_ok(s, kUplinkAddr, kPort)) << "the host's own address";
  EXPECT_FALSE(tcp_ok(s, kSide)) << "forwarding out of an interface other than the uplink";
  EXPECT_FALSE(tcp_ok(s, kHostLan)) << "deny_always";
  EXPECT_FALSE(tcp_ok(s, kMetadata)) << "link-local is always denied";
  EXPECT_FALSE(tcp_ok(s, kS2)) << "another sandbox";
  EXPECT_FALSE(udp_ok(s, kS2));
  // Nothing comes in from the uplink, and the host routes nothing else for it.
  EXPECT_FALSE(tcp_ok(ins_.get(), kS));
  EXPECT_FALSE(tcp_ok(ins_.get(), kSide));
}

TEST_F(FirewallTest, OfflineSandboxHasNoInternetAndNoDns) {
  open_fw(config());
  int s = sns_.get();
  ASSERT_TRUE(fw_->set_rules(kS, EgressRules{.internet = false}));
  EXPECT_FALSE(tcp_ok(s, kWeb));
  EXPECT_FALSE(udp_ok(s, kWeb));
  EXPECT_FALSE(tcp_ok(s, kGw, 53));
  EXPECT_FALSE(udp_ok(s, kGw, 53));
  EXPECT_TRUE(tcp_ok(s2ns_.get(), kWeb)) << "the other sandbox is unaffected";
  EXPECT_TRUE(udp_ok(s2ns_.get(), kGw, 53));
  // Even an explicit allow does not open an offline sandbox.
  ASSERT_TRUE(fw_->set_rules(kS, EgressRules{.internet = false, .allow = {cidr("203.0.113.10")}}));
  EXPECT_FALSE(tcp_ok(s, kWeb));
  ASSERT_TRUE(fw_->set_rules(kS, EgressRules{}));
  EXPECT_TRUE(tcp_ok(s, kWeb));
  EXPECT_TRUE(udp_ok(s, kGw, 53));
  EXPECT_EQ(fw_->element_count(kS).value_or(99), 0u);
}

TEST_F(FirewallTest, DenyBlocksAndAllowBeatsDeny) {
  open_fw(config());
  int s = sns_.get();
  ASSERT_TRUE(fw_->set_rules(kS, EgressRules{.deny = {cidr("203.0.113.0/24")}}));
  EXPECT_FALSE(tcp_ok(s, kWeb));
  EXPECT_FALSE(udp_ok(s, kWeb));
  EXPECT_TRUE(tcp_ok(s, kInetAddr));
  EXPECT_TRUE(tcp_ok(s2ns_.get(), kWeb)) << "rules are per sandbox";

  ASSERT_TRUE(fw_->set_rules(kS, EgressRules{.allow = {cidr("203.0.113.10")}, .deny = {cidr("203.0.113.0/24")}}));
  EXPECT_TRUE(tcp_ok(s, kWeb));
  EXPECT_FALSE(tcp_ok(s, kWeb2));

  // Default deny with one opening; overlapping allow entries are merged.
  ASSERT_TRUE(fw_->set_rules(kS, EgressRules{.allow = {cidr("203.0.113.16/28"), cidr("203.0.113.20"),
                                                       cidr("203.0.113.17/32")},
                                             .deny = {cidr("0.0.0.0/0"), cidr("10.0.0.0/8")}}));
  EXPECT_TRUE(tcp_ok(s, kWeb2));
  EXPECT_FALSE(tcp_ok(s, kWeb));
  EXPECT_FALSE(tcp_ok(s, kInetAddr));
  EXPECT_TRUE(tcp_ok(s, kGw, 53)) << "DNS is not egress: the resolver applies the policy";
  EXPECT_EQ(fw_->element_count(kS).value_or(99), 2u);
}

TEST_F(FirewallTest, DenyAlwaysBeatsAllowUnlessOpenAlways) {
  open_fw(config());
  int s = sns_.get();
  ASSERT_TRUE(fw_->set_rules(kS, EgressRules{.allow = {cidr("0.0.0.0/0")}}));
  EXPECT_FALSE(tcp_ok(s, kHostLan)) << "host LAN range";
  EXPECT_FALSE(tcp_ok(s, kUplinkAddr)) << "the host's own address";
  EXPECT_FALSE(tcp_ok(s, kMetadata)) << "metadata address";
  EXPECT_TRUE(tcp_ok(s, kWeb));

  fw_.reset();
  auto c = config();
  c.open_always = {cidr("203.0.113.130"), cidr("169.254.169.254")};
  open_fw(c);
  EXPECT_TRUE(tcp_ok(s, kHostLan));
  EXPECT_TRUE(tcp_ok(s, kMetadata));
  EXPECT_FALSE(tcp_ok(s, ip(203, 0, 113, 131))) << "only the opened address";
  // open_always lifts deny_always only: a sandbox's own deny still holds.
  ASSERT_TRUE(fw_->set_rules(kS, EgressRules{.deny = {cidr("169.254.0.0/16")}}));
  EXPECT_FALSE(tcp_ok(s, kMetadata));
  EXPECT_TRUE(tcp_ok(s, kHostLan));
}

TEST_F(FirewallTest, AllowResolvedOpensADeniedAddressAndClearClosesIt) {
  open_fw(config());
  int s = sns_.get();
  const EgressRules deny_all{.deny = {cidr("0.0.0.0/0")}};
  ASSERT_TRUE(fw_->set_rules(kS, deny_all));
  EXPECT_FALSE(tcp_ok(s, kWeb));
  ASSERT_TRUE(fw_->allow_resolved(kS, kWeb, 60s));
  EXPECT_TRUE(tcp_ok(s, kWeb));
  EXPECT_FALSE(tcp_ok(s, kWeb2));
  EXPECT_TRUE(tcp_ok(s2ns_.get(), kWeb2)) << "S2 has no rules";
  ASSERT_TRUE(fw_->allow_resolved(kS, kWeb, 120s)) << "a repeat refreshes";
  EXPECT_EQ(fw_->element_count(kS).value_or(99), 2u);
  // set_rules keeps resolved elements.
  ASSERT_TRUE(fw_->set_rules(kS, EgressRules{.deny = {cidr("0.0.0.0/0"), cidr("1.0.0.0/8")}}));
  EXPECT_TRUE(tcp_ok(s, kWeb));

  ASSERT_TRUE(fw_->clear(kS));
  EXPECT_EQ(fw_->element_count(kS).value_or(99), 0u);
  ASSERT_TRUE(fw_->set_rules(kS, deny_all));
  EXPECT_FALSE(tcp_ok(s, kWeb)) << "clear() removed the resolved element";
  ASSERT_TRUE(fw_->clear(kS));
  ASSERT_TRUE(fw_->clear(kS)) << "idempotent";

  // A timed element goes by itself, and clear() copes with one that did.
  ASSERT_TRUE(fw_->set_rules(kS, deny_all));
  ASSERT_TRUE(fw_->allow_resolved(kS, kWeb2, 1s));
  EXPECT_TRUE(tcp_ok(s, kWeb2));
  std::this_thread::sleep_for(2500ms);
  EXPECT_FALSE(tcp_ok(s, kWeb2));
  ASSERT_TRUE(fw_->clear(kS));
  EXPECT_EQ(fw_->element_count(kS).value_or(99), 0u);

  EXPECT_FALSE(fw_->allow_resolved(kS, kWeb, 0s));
  EXPECT_FALSE(fw_->allow_resolved(ip(10, 9, 0, 1), kWeb, 60s));
}

TEST_F(FirewallTest, SetRulesReplacesTheOldElements) {
  open_fw(config());
  int s = sns_.get();
  ASSERT_TRUE(fw_->set_rules(kS, EgressRules{.allow = {cidr("203.0.113.10")}, .deny = {cidr("0.0.0.0/0")}}));
  EXPECT_TRUE(tcp_ok(s, kWeb));
  EXPECT_FALSE(tcp_ok(s, kWeb2));
  ASSERT_TRUE(fw_->set_rules(kS, EgressRules{.allow = {cidr("203.0.113.20")}, .deny = {cidr("0.0.0.0/0")}}));
  EXPECT_FALSE(tcp_ok(s, kWeb)) << "the old allow is gone";
  EXPECT_TRUE(tcp_ok(s, kWeb2));
  EXPECT_EQ(fw_->element_count(kS).value_or(99), 2u);
  ASSERT_TRUE(fw_->set_rules(kS, EgressRules{.deny = {cidr("203.0.113.20")}}));
  EXPECT_TRUE(tcp_ok(s, kWeb)) << "the old deny-all is gone";
  EXPECT_FALSE(tcp_ok(s, kWeb2));
  EXPECT_EQ(fw_->element_count(kS).value_or(99), 1u);

  auto bad = fw_->set_rules(ip(10, 214, 0, 2), EgressRules{});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_FALSE(fw_->set_rules(kGw, EgressRules{}));

  // Someone else edited the table behind our back: set_rules and clear read
  // the kernel back and still get there.
  ASSERT_TRUE(fw_->set_rules(kS, EgressRules{.internet = false, .deny = {cidr("203.0.113.10")}}));
  ASSERT_EQ(sh("nft flush set inet cfwtest deny"), 0);
  ASSERT_EQ(sh("nft delete element inet cfwtest offline { 10.213.0.2 }"), 0);
  ASSERT_TRUE(fw_->set_rules(kS, EgressRules{.deny = {cidr("203.0.113.20")}}));
  EXPECT_TRUE(tcp_ok(s, kWeb));
  EXPECT_FALSE(tcp_ok(s, kWeb2));
  ASSERT_EQ(sh("nft flush set inet cfwtest deny"), 0);
  ASSERT_TRUE(fw_->clear(kS));
  EXPECT_EQ(fw_->element_count(kS).value_or(99), 0u);
  ASSERT_TRUE(fw_->clear(kS));
  EXPECT_TRUE(tcp_ok(s, kWeb2));
}

// Long lists live in a chain of the sandbox's own; moving between that and
// the shared sets, in either direction, is one transaction like any other.
TEST_F(FirewallTest, LongListsGetAChainOfTheirOwn) {
  open_fw(config());
  int s = sns_.get();
  EgressRules long_rules{.allow = {cidr("203.0.113.10")}, .deny = {cidr("203.0.113.0/24")}};
  for (int i = 0; i < 40; ++i) long_rules.deny.push_back(Cidr4{ip(100, 64, 0, 0) + uint32_t(i) * 512, 24});
  ASSERT_TRUE(fw_->set_rules(kS, long_rules));
  EXPECT_EQ(sh("nft list chain inet cfwtest sb_0ad50002"), 0);
  EXPECT_TRUE(tcp_ok(s, kWeb)) << "allow beats deny in a chain too";
  EXPECT_FALSE(tcp_ok(s, kWeb2));
  EXPECT_TRUE(tcp_ok(s, kInetAddr));
  EXPECT_EQ(fw_->element_count(kS).value_or(99), 42u);

  ASSERT_TRUE(fw_->set_rules(kS, EgressRules{.deny = {cidr("203.0.113.10")}}));
  EXPECT_NE(sh("nft list chain inet cfwtest sb_0ad50002"), 0) << "the chain went";
  EXPECT_FALSE(tcp_ok(s, kWeb));
  EXPECT_TRUE(tcp_ok(s, kWeb2));
  EXPECT_EQ(fw_->element_count(kS).value_or(99), 1u);

  ASSERT_TRUE(fw_->set_rules(kS, long_rules));
  EXPECT_TRUE(tcp_ok(s, kWeb));
  EXPECT_FALSE(tcp_ok(s, kWeb2));
  EXPECT_EQ(fw_->element_count(kS).value_or(99), 42u);
  // Someone removed parts of it: clear() still removes everything.
  ASSERT_EQ(sh("nft flush set inet cfwtest sd_0ad50002"), 0);
  ASSERT_EQ(sh("nft delete element inet cfwtest by_sandbox { 10.213.0.2 }"), 0);
  ASSERT_TRUE(fw_->clear(kS));
  EXPECT_EQ(fw_->element_count(kS).value_or(99), 0u);
  EXPECT_NE(sh("nft list chain inet cfwtest sb_0ad50002"), 0);
  EXPECT_NE(sh("nft list set inet cfwtest sa_0ad50002"), 0);
  EXPECT_NE(sh("nft list set inet cfwtest sd_0ad50002"), 0);
  EXPECT_TRUE(tcp_ok(s, kWeb2));
}

TEST_F(FirewallTest, KeepElementsAcrossARestart) {
  open_fw(config());
  int s = sns_.get();
  ASSERT_TRUE(fw_->set_rules(kS, EgressRules{.allow = {cidr("203.0.113.20")}, .deny = {cidr("0.0.0.0/0")}}));
  ASSERT_TRUE(fw_->allow_resolved(kS, kWeb, 600s));
  ASSERT_TRUE(fw_->set_rules(kS2, EgressRules{.internet = false}));
  EgressRules long_rules{.deny = {cidr("203.0.113.20")}};
  for (int i = 0; i < 40; ++i) long_rules.deny.push_back(Cidr4{ip(100, 64, 0, 0) + uint32_t(i) * 512, 24});
  const uint32_t s3 = ip(10, 213, 0, 4);  // no netns: checked by its elements
  ASSERT_TRUE(fw_->set_rules(s3, long_rules));
  fw_->release();  // the gateway stops to restart: the table stays
  fw_.reset();
  ASSERT_TRUE(table_exists());

  auto c = config();
  c.keep_elements = true;
  open_fw(c);
  EXPECT_TRUE(tcp_ok(s, kWeb)) << "resolved element kept";
  EXPECT_TRUE(tcp_ok(s, kWeb2)) << "allow kept";
  EXPECT_FALSE(tcp_ok(s, kInetAddr)) << "deny kept";
  EXPECT_FALSE(tcp_ok(s2ns_.get(), kWeb)) << "offline kept";
  EXPECT_EQ(fw_->element_count(kS).value_or(99), 3u);
  auto with = fw_->sandboxes_with_elements();
  ASSERT_TRUE(with) << with.error().to_string();
  EXPECT_EQ(*with, (std::set<uint32_t>{kS, kS2, s3}));
  EXPECT_EQ(fw_->element_count(s3).value_or(99), 41u);
  ASSERT_TRUE(fw_->clear(s3));
  EXPECT_EQ(fw_->element_count(s3).value_or(99), 0u);
  // The new process knows the old elements: replacing and clearing work.
  ASSERT_TRUE(fw_->set_rules(kS, EgressRules{.deny = {cidr("0.0.0.0/0")}}));
  EXPECT_FALSE(tcp_ok(s, kWeb2));
  EXPECT_TRUE(tcp_ok(s, kWeb));
  ASSERT_TRUE(fw_->clear(kS));
  ASSERT_TRUE(fw_->clear(kS2));
  EXPECT_EQ(fw_->element_count(kS).value_or(99), 0u);
  EXPECT_TRUE(tcp_ok(s2ns_.get(), kWeb));
  with = fw_->sandboxes_with_elements();
  ASSERT_TRUE(with);
  EXPECT_TRUE(with->empty());

  // Without keep_elements a restart starts empty.
  ASSERT_TRUE(fw_->set_rules(kS, EgressRules{.internet = false}));
  fw_->release();
  fw_.reset();
  open_fw(config());
  EXPECT_TRUE(tcp_ok(s, kWeb));
  EXPECT_TRUE(fw_->sandboxes_with_elements().value_or(std::set<uint32_t>{1}).empty());
}

TEST_F(FirewallTest, CloseRemovesTheTableAndRestoresForwarding) {
  ASSERT_EQ(fwd("br0"), "0");
  ASSERT_EQ(fwd("up0"), "0");
  open_fw(config());
  EXPECT_TRUE(table_exists());
  EXPECT_EQ(fwd("br0"), "1");
  EXPECT_EQ(fwd("up0"), "1");
  EXPECT_EQ(fwd("side0"), "0") << "only the bridge and the uplink";
  EXPECT_EQ(read_sysctl("/proc/sys/net/ipv4/ip_forward"), "0") << "not the global switch";
  fw_.reset();
  EXPECT_FALSE(table_exists());
  EXPECT_EQ(fwd("br0"), "0");
  EXPECT_EQ(fwd("up0"), "0");
  EXPECT_FALSE(tcp_ok(sns_.get(), kWeb));

  // Forwarding that was on before stays on; close() is idempotent.
  ASSERT_EQ(sh("sysctl -qw net.ipv4.conf.up0.forwarding=1"), 0);
  open_fw(config());
  ASSERT_TRUE(fw_->close());
  ASSERT_TRUE(fw_->close());
  EXPECT_FALSE(table_exists());
  EXPECT_EQ(fwd("br0"), "0");
  EXPECT_EQ(fwd("up0"), "1");
  auto after = fw_->set_rules(kS, EgressRules{});
  ASSERT_FALSE(after);
  EXPECT_EQ(after.error().code(), ErrorCode::kFailedPrecondition);
}

TEST_F(FirewallTest, BadConfigIsRefusedAndChangesNothing) {
  auto expect_refused = [&](FirewallConfig c, const char* what) {
    auto fw = Firewall::open(c);
    ASSERT_FALSE(fw) << what;
    EXPECT_FALSE(table_exists(c.table)) << what;
    EXPECT_EQ(fwd("br0"), "0") << what;
  };
  auto c = config();
  c.table = "bad name";
  expect_refused(c, "space in table name");
  c = config();
  c.table = "x;flush ruleset";
  expect_refused(c, "command in table name");
  c = config();
  c.table = "fwd";  // an nft keyword: nft refuses it, cleanly
  expect_refused(c, "keyword");
  c = config();
  c.bridge = "br0\" accept";
  expect_refused(c, "quote in interface name");
  c = config();
  c.uplink = "nosuch0";
  auto fw = Firewall::open(c);
  ASSERT_FALSE(fw);
  EXPECT_EQ(fw.error().code(), ErrorCode::kNotFound) << fw.error().to_string();
  c = config();
  c.uplink = "br0";
  expect_refused(c, "bridge == uplink");
  c = config();
  c.gateway_addr = ip(10, 214, 0, 1);
  expect_refused(c, "gateway outside the subnet");

  // A failed open leaves a previous process's table alone.
  open_fw(config());
  fw_->release();
  fw_.reset();
  c = config();
  c.uplink = "nosuch0";
  ASSERT_FALSE(Firewall::open(c));
  EXPECT_TRUE(table_exists());
  ASSERT_EQ(sh("nft delete table inet cfwtest"), 0);
  sh("sysctl -qw net.ipv4.conf.br0.forwarding=0");
  sh("sysctl -qw net.ipv4.conf.up0.forwarding=0");
}

// Cost of set_rules by size (printed; one transaction each), and a 10,000
// entry policy really in force.
TEST_F(FirewallTest, SetRulesCostBySize) {
  open_fw(config());
  auto rules_of = [](size_t n) {
    EgressRules r;
    r.deny = {Cidr4{0, 0}};
    // Apart, so that they are not merged into fewer elements.
    for (size_t i = 0; i + 1 < n; ++i) r.allow.push_back(Cidr4{ip(100, 64, 0, 0) + uint32_t(i) * 8, 30});
    r.allow.push_back(Cidr4{kWeb, 32});
    return r;
  };
  uint32_t sandbox = ip(10, 213, 1, 1);
  for (size_t n : {1u, 100u, 10000u}) {
    auto r = rules_of(n);
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(fw_->set_rules(sandbox, r));
    auto t1 = std::chrono::steady_clock::now();
    // Replace with a disjoint set of the same size: n deletes + n adds.
    auto r2 = r;
    for (auto& c : r2.allow) c.addr += 0x01000000;  // 101.64... : disjoint
    ASSERT_TRUE(fw_->set_rules(sandbox, r2));
    auto t2 = std::chrono::steady_clock::now();
    ASSERT_TRUE(fw_->clear(sandbox));
    auto t3 = std::chrono::steady_clock::now();
    auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
    std::cout << "set_rules " << n << " allow + 1 deny: add " << ms(t1 - t0) << " ms, replace " << ms(t2 - t1)
              << " ms, clear " << ms(t3 - t2) << " ms\n";
  }
  auto r = rules_of(10000);
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(fw_->set_rules(kS, r));
  auto t1 = std::chrono::steady_clock::now();
  EXPECT_TRUE(tcp_ok(sns_.get(), kWeb));
  EXPECT_FALSE(tcp_ok(sns_.get(), kWeb2));
  EXPECT_EQ(fw_->element_count(kS).value_or(0), 10001u);
  auto t2 = std::chrono::steady_clock::now();
  ASSERT_TRUE(fw_->allow_resolved(kS, kWeb2, 60s));
  auto t3 = std::chrono::steady_clock::now();
  EXPECT_TRUE(tcp_ok(sns_.get(), kWeb2));
  auto t4 = std::chrono::steady_clock::now();
  ASSERT_TRUE(fw_->sandboxes_with_elements());
  auto t5 = std::chrono::steady_clock::now();
  auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  std::cout << "set_rules 10000 in force: " << ms(t1 - t0) << " ms; allow_resolved beside it: " << ms(t3 - t2)
            << " ms; sandboxes_with_elements (listing): " << ms(t5 - t4) << " ms\n";

  // Per-call cost with many sandboxes holding rules (a chain each).
  for (uint32_t i = 0; i < 2000; ++i) {
    ASSERT_TRUE(fw_->set_rules(ip(10, 213, 8, 0) + i, EgressRules{.allow = {cidr("203.0.113.20")},
                                                                 .deny = {cidr("0.0.0.0/0"), cidr("10.0.0.0/8")}}));
  }
  constexpr int kCalls = 50;
  auto u0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kCalls; ++i) ASSERT_TRUE(fw_->allow_resolved(ip(10, 213, 9, 1), ip(198, 18, 0, 1) + i, 60s));
  auto u1 = std::chrono::steady_clock::now();
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_TRUE(fw_->set_rules(ip(10, 213, 9, 2), EgressRules{.deny = {Cidr4{ip(198, 18, 0, 0) + uint32_t(i), 32}}}));
  }
  auto u2 = std::chrono::steady_clock::now();
  for (int i = 0; i < kCalls; ++i) ASSERT_TRUE(fw_->clear(ip(10, 213, 8, 0) + uint32_t(i)));
  auto u3 = std::chrono::steady_clock::now();
  std::cout << "with 2000 sandboxes holding rules: allow_resolved " << ms(u1 - u0) / kCalls << " ms, small set_rules "
            << ms(u2 - u1) / kCalls << " ms, clear " << ms(u3 - u2) / kCalls << " ms per call\n";
}

}  // namespace
}  // namespace coppice::net
