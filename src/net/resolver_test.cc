// The DNS forwarder against a fake upstream of the test's own (ldns, on
// 127.0.0.1), with clients bound to other loopback addresses (127.0.0.2,
// .3, ...) so each has its own policy. Nothing leaves loopback; the host's
// resolver is never asked.
#include "net/resolver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>  // before ldns, whose common.h would otherwise define bool as a macro
#include <sys/socket.h>
#include <unistd.h>

#include <ldns/ldns.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>

namespace coppice::net {
namespace {

using Bytes = std::vector<uint8_t>;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

uint32_t ip(const char* s) {
  in_addr a{};
  inet_pton(AF_INET, s, &a);
  return ntohl(a.s_addr);
}

struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd, o.fd);
    return *this;
  }
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

sockaddr_in sa(const char* addr, uint16_t port) {
  sockaddr_in s{};
  s.sin_family = AF_INET;
  s.sin_port = htons(port);
  inet_pton(AF_INET, addr, &s.sin_addr);
  return s;
}

uint16_t local_port(int fd) {
  sockaddr_in s{};
  socklen_t l = sizeof s;
  getsockname(fd, reinterpret_cast<sockaddr*>(&s), &l);
  return ntohs(s.sin_port);
}

// A socket bound to addr:port; fd -1 when the bind fails.
Fd try_bound_socket(int type, const char* addr, uint16_t port = 0) {
  Fd f(::socket(AF_INET, type | SOCK_CLOEXEC, 0));
  int one = 1;
  if (type == SOCK_STREAM) setsockopt(f.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  auto s = sa(addr, port);
  if (::bind(f.fd, reinterpret_cast<sockaddr*>(&s), sizeof s) != 0) return Fd();
  return f;
}

Fd bound_socket(int type, const char* addr, uint16_t port = 0) {
  Fd f = try_bound_socket(type, addr, port);
  if (f.fd < 0) ADD_FAILURE() << "bind " << addr << ":" << port << ": " << strerror(errno);
  return f;
}

void set_timeout(int fd, std::chrono::milliseconds t) {
  timeval tv{static_cast<time_t>(t.count() / 1000), static_cast<suseconds_t>(t.count() % 1000 * 1000)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

struct PktFree {
  void operator()(ldns_pkt* p) const { ldns_pkt_free(p); }
};
using Pkt = std::unique_ptr<ldns_pkt, PktFree>;

Bytes wire(const ldns_pkt* p) {
  uint8_t* w = nullptr;
  size_t n = 0;
  EXPECT_EQ(ldns_pkt2wire(&w, p, &n), LDNS_STATUS_OK);
  Bytes out(w, w + n);
  free(w);
  return out;
}

Pkt parse(const Bytes& b) {
  ldns_pkt* p = nullptr;
  if (ldns_wire2pkt(&p, b.data(), b.size()) != LDNS_STATUS_OK) return nullptr;
  return Pkt(p);
}

Bytes make_query(const char* name, uint16_t id, ldns_rr_type type = LDNS_RR_TYPE_A,
                 ldns_rr_class cls = LDNS_RR_CLASS_IN) {
  Pkt q(ldns_pkt_query_new(ldns_dname_new_frm_str(name), type, cls, LDNS_RD));
  ldns_pkt_set_id(q.get(), id);
  return wire(q.get());
}

// The A records of an answer, as "a.b.c.d/ttl".
std::vector<std::string> a_records(const ldns_pkt* p) {
  std::vector<std::string> out;
  const ldns_rr_list* an = ldns_pkt_answer(p);
  for (size_t i = 0; i < ldns_rr_list_rr_count(an); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(an, i);
    if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_A) continue;
    const uint8_t* d = ldns_rdf_data(ldns_rr_rdf(rr, 0));
    char text[32];
    snprintf(text, sizeof text, "%u.%u.%u.%u/%u", d[0], d[1], d[2], d[3], ldns_rr_ttl(rr));
    out.push_back(text);
  }
  return out;
}

// A fake upstream on 127.0.0.1 (UDP and TCP on one port) answering fixed names.
class FakeUpstream {
 public:
  FakeUpstream() {
    // The UDP port picked first; TCP may hold it already (another test's
    // connection): then another.
    for (int i = 0; i < 20 && tcp_.fd < 0; ++i) {
      udp_ = bound_socket(SOCK_DGRAM, "127.0.0.1");
      port_ = local_port(udp_.fd);
      tcp_ = try_bound_socket(SOCK_STREAM, "127.0.0.1", port_);
    }
    EXPECT_GE(tcp_.fd, 0) << "no port free on both UDP and TCP";
    ::listen(tcp_.fd, 16);
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    stop_r_ = Fd(p[0]);
    stop_w_ = Fd(p[1]);
    thread_ = std::thread([this] { run(); });
  }
  ~FakeUpstream() {
    (void)!::write(stop_w_.fd, "x", 1);
    thread_.join();
  }
  uint16_t port() const { return port_; }
  std::vector<uint16_t> ids() {
    std::lock_guard l(mu_);
    return ids_;
  }
  std::vector<uint16_t> source_ports() {
    std::lock_guard l(mu_);
    return ports_;
  }
  std::multiset<std::string> names() {
    std::lock_guard l(mu_);
    return names_;
  }

 private:
  // The answer to a query, or nothing (silent.test).
  std::optional<Bytes> answer(const Bytes& qb, bool tcp, uint16_t source_port) {
    Pkt q = parse(qb);
    if (!q || ldns_pkt_qdcount(q.get()) != 1) return std::nullopt;
    const ldns_rr* question = ldns_rr_list_rr(ldns_pkt_question(q.get()), 0);
    char* owner = ldns_rdf2str(ldns_rr_owner(question));
    std::string name = owner;
    free(owner);
    for (char& c : name) c = static_cast<char>(tolower(c));
    {
      std::lock_guard l(mu_);
      ids_.push_back(ldns_pkt_id(q.get()));
      ports_.push_back(source_port);
      names_.insert(name);
    }
    if (name == "silent.test.") return std::nullopt;
    Pkt a(ldns_pkt_new());
    ldns_pkt_set_id(a.get(), ldns_pkt_id(q.get()));
    ldns_pkt_set_qr(a.get(), true);
    ldns_pkt_set_rd(a.get(), ldns_pkt_rd(q.get()));
    ldns_pkt_set_ra(a.get(), true);
    ldns_pkt_push_rr(a.get(), LDNS_SECTION_QUESTION, ldns_rr_clone(question));
    std::vector<std::string> rrs;
    if (name == "a.allowed.test.") {
      rrs = {"a.allowed.test. 300 IN A 10.1.0.1", "a.allowed.test. 300 IN A 10.1.0.2"};
    } else if (name == "cname.allowed.test.") {
      rrs = {"cname.allowed.test. 100 IN CNAME target.elsewhere.test.", "target.elsewhere.test. 120 IN A 10.3.0.1"};
    } else if (name == "x.wild.test." || name == "deep.x.wild.test." || name == "wild.test.") {
      rrs = {name + " 60 IN A 10.2.0.1"};
    } else if (name == "other.test.") {
      rrs = {"other.test. 30 IN A 10.4.0.1"};
    } else if (name == "big.test.") {
      if (!tcp) {
        ldns_pkt_set_tc(a.get(), true);
      } else {
        rrs = {"big.test. 50 IN A 10.5.0.1"};
      }
    } else {
      ldns_pkt_set_rcode(a.get(), LDNS_RCODE_NXDOMAIN);
    }
    for (const auto& s : rrs) {
      ldns_rr* rr = nullptr;
      EXPECT_EQ(ldns_rr_new_frm_str(&rr, s.c_str(), 0, nullptr, nullptr), LDNS_STATUS_OK) << s;
      ldns_pkt_push_rr(a.get(), LDNS_SECTION_ANSWER, rr);
    }
    return wire(a.get());
  }

  void serve_tcp(int fd) {
    set_timeout(fd, 2s);
    for (;;) {
      uint8_t len[2];
      if (::recv(fd, len, 2, MSG_WAITALL) != 2) return;
      Bytes q(len[0] << 8 | len[1]);
      if (::recv(fd, q.data(), q.size(), MSG_WAITALL) != static_cast<ssize_t>(q.size())) return;
      auto a = answer(q, true, 0);
      if (!a) return;
      Bytes out{static_cast<uint8_t>(a->size() >> 8), static_cast<uint8_t>(a->size())};
      out.insert(out.end(), a->begin(), a->end());
      if (::send(fd, out.data(), out.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(out.size())) return;
    }
  }

  void run() {
    for (;;) {
      pollfd p[3] = {{udp_.fd, POLLIN, 0}, {tcp_.fd, POLLIN, 0}, {stop_r_.fd, POLLIN, 0}};
      if (::poll(p, 3, -1) < 0) continue;
      if (p[2].revents) return;
      if (p[0].revents & POLLIN) {
        Bytes buf(65535);
        sockaddr_in from{};
        socklen_t fl = sizeof from;
        ssize_t n = ::recvfrom(udp_.fd, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &fl);
        if (n > 0) {
          buf.resize(n);
          if (auto a = answer(buf, false, ntohs(from.sin_port))) {
            ::sendto(udp_.fd, a->data(), a->size(), 0, reinterpret_cast<sockaddr*>(&from), fl);
          }
        }
      }
      if (p[1].revents & POLLIN) {
        Fd c(::accept4(tcp_.fd, nullptr, nullptr, SOCK_CLOEXEC));
        if (c.fd >= 0) serve_tcp(c.fd);
      }
    }
  }

  Fd udp_, tcp_, stop_r_, stop_w_;
  uint16_t port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::vector<uint16_t> ids_, ports_;
  std::multiset<std::string> names_;
};

// One UDP exchange from `src`; the answer, or nothing within `wait`.
std::optional<Bytes> udp_ask(const char* src, uint16_t port, const Bytes& q, std::chrono::milliseconds wait = 3000ms) {
  Fd s = bound_socket(SOCK_DGRAM, src);
  auto to = sa("127.0.0.1", port);
  ::sendto(s.fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
  set_timeout(s.fd, wait);
  Bytes buf(65535);
  ssize_t n = ::recv(s.fd, buf.data(), buf.size(), 0);
  if (n <= 0) return std::nullopt;
  buf.resize(n);
  return buf;
}

Fd tcp_connect(const char* src, uint16_t port) {
  Fd s = bound_socket(SOCK_STREAM, src);
  auto to = sa("127.0.0.1", port);
  EXPECT_EQ(::connect(s.fd, reinterpret_cast<sockaddr*>(&to), sizeof to), 0);
  set_timeout(s.fd, 3000ms);
  return s;
}

std::optional<Bytes> tcp_read_answer(int fd) {
  uint8_t len[2];
  if (::recv(fd, len, 2, MSG_WAITALL) != 2) return std::nullopt;
  Bytes a(len[0] << 8 | len[1]);
  if (::recv(fd, a.data(), a.size(), MSG_WAITALL) != static_cast<ssize_t>(a.size())) return std::nullopt;
  return a;
}

std::optional<Bytes> tcp_ask(const char* src, uint16_t port, const Bytes& q) {
  Fd s = tcp_connect(src, port);
  Bytes out{static_cast<uint8_t>(q.size() >> 8), static_cast<uint8_t>(q.size())};
  out.insert(out.end(), q.begin(), q.end());
  ::send(s.fd, out.data(), out.size(), MSG_NOSIGNAL);
  return tcp_read_answer(s.fd);
}

// The connection was closed by the server (EOF) within the socket's timeout.
bool closed_by_peer(int fd) {
  char c;
  return ::recv(fd, &c, 1, 0) == 0;
}

unsigned rcode(const Bytes& a) { return a.size() >= 4 ? a[3] & 0x0f : 99; }
uint16_t id_of(const Bytes& a) { return static_cast<uint16_t>(a[0] << 8 | a[1]); }

struct AllowedCall {
  uint32_t source, ip, ttl;
  bool operator==(const AllowedCall&) const = default;
};

class ResolverTest : public ::testing::Test {
 protected:
  // 127.0.0.2: default deny with allowed domains; .3: no internet; .4: no
  // policy; .5 and .6: open (no default deny, no domains); .7: open with an
  // allowed domain.
  void SetUp() override {
    auto deny = std::make_shared<DnsPolicy>();
    deny->default_deny = true;
    deny->domains = {"a.allowed.test", "CNAME.Allowed.Test", "*.wild.test", "big.test"};
    policies_[ip("127.0.0.2")] = deny;
    auto offline = std::make_shared<DnsPolicy>();
    offline->allowed = false;
    policies_[ip("127.0.0.3")] = offline;
    policies_[ip("127.0.0.5")] = std::make_shared<DnsPolicy>();
    policies_[ip("127.0.0.6")] = std::make_shared<DnsPolicy>();
    auto open_allow = std::make_shared<DnsPolicy>();
    open_allow->domains = {"a.allowed.test"};
    policies_[ip("127.0.0.7")] = open_allow;
    work_.emplace(io_.get_executor());
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    if (resolver_) resolver_->stop();
    if (resolver_) WaitWoundDown();
    resolver_.reset();
    work_.reset();
    io_.stop();
    thread_.join();
  }

  void Start(std::vector<asio::ip::udp::endpoint> upstreams, ResolverOptions opts = {}) {
    resolver_ = std::make_unique<Resolver>(
        io_.get_executor(), ip("127.0.0.1"), 0, std::move(upstreams),
        [this](uint32_t src) -> std::shared_ptr<const DnsPolicy> {
          auto it = policies_.find(src);
          return it == policies_.end() ? nullptr : it->second;
        },
        [this](uint32_t src, uint32_t a, uint32_t ttl) {
          // A slow callee (the firewall) must still come before the answer.
          std::this_thread::sleep_for(on_allowed_delay_);
          std::lock_guard l(mu_);
          allowed_.push_back({src, a, ttl});
        },
        opts);
    ASSERT_TRUE(resolver_->start().has_value());
    port_ = resolver_->port();
    ASSERT_NE(port_, 0);
  }
  void StartWithFake(ResolverOptions opts = {}) {
    Start({asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.1"), fake_.port())}, opts);
  }
  std::vector<AllowedCall> Allowed() {
    std::lock_guard l(mu_);
    return allowed_;
  }
  void WaitWoundDown() {
    auto deadline = Clock::now() + 3s;
    while (resolver_->live_coroutines() != 0 && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
    EXPECT_EQ(resolver_->live_coroutines(), 0u);
  }

  FakeUpstream fake_;
  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::thread thread_;
  std::map<uint32_t, std::shared_ptr<const DnsPolicy>> policies_;
  std::unique_ptr<Resolver> resolver_;
  uint16_t port_ = 0;
  std::mutex mu_;
  std::vector<AllowedCall> allowed_;
  std::chrono::milliseconds on_allowed_delay_{0};
};

TEST(DnsNameMatches, ExactAndWildcard) {
  EXPECT_TRUE(dns_name_matches("example.com", "example.com"));
  EXPECT_TRUE(dns_name_matches("Example.COM.", "example.com"));
  EXPECT_TRUE(dns_name_matches("example.com", "EXAMPLE.com"));
  EXPECT_FALSE(dns_name_matches("a.example.com", "example.com"));
  EXPECT_FALSE(dns_name_matches("example.com", "*.example.com"));
  EXPECT_TRUE(dns_name_matches("a.example.com", "*.example.com"));
  EXPECT_TRUE(dns_name_matches("b.a.Example.com", "*.example.com"));
  EXPECT_FALSE(dns_name_matches("badexample.com", "*.example.com"));
  EXPECT_FALSE(dns_name_matches("example.com.evil", "example.com"));
  EXPECT_FALSE(dns_name_matches("", "example.com"));
  EXPECT_FALSE(dns_name_matches("a..example.com", "*.example.com"));
  EXPECT_FALSE(dns_name_matches("example.com", ""));
  EXPECT_FALSE(dns_name_matches("example.com", "*."));
}

TEST(JudgeDnsQuery, VerdictsWithoutSockets) {
  DnsPolicy deny;
  deny.default_deny = true;
  deny.domains = {"*.example.com"};
  Bytes q = make_query("www.Example.com", 0x0102);
  auto v = judge_dns_query(q, &deny);
  ASSERT_EQ(v.action, DnsVerdict::Action::kForward);
  EXPECT_TRUE(v.matched);
  // The upstream query is built fresh: same question, no id of the client's.
  Pkt up = parse(v.upstream_query);
  ASSERT_TRUE(up);
  EXPECT_EQ(ldns_pkt_id(up.get()), 0);
  EXPECT_EQ(ldns_pkt_qdcount(up.get()), 1);
  EXPECT_FALSE(ldns_pkt_edns(up.get()));

  auto r = judge_dns_query(make_query("example.com", 3), &deny);
  ASSERT_EQ(r.action, DnsVerdict::Action::kAnswer);
  EXPECT_EQ(rcode(r.answer), LDNS_RCODE_REFUSED);
  EXPECT_EQ(judge_dns_query(q, nullptr).action, DnsVerdict::Action::kAnswer);
  DnsPolicy off;
  off.allowed = false;
  EXPECT_EQ(judge_dns_query(q, &off).action, DnsVerdict::Action::kDrop);

  // EDNS: the buffer size and DO bit go upstream.
  Pkt e(ldns_pkt_query_new(ldns_dname_new_frm_str("a.example.com"), LDNS_RR_TYPE_A, LDNS_RR_CLASS_IN, LDNS_RD));
  ldns_pkt_set_edns_udp_size(e.get(), 1232);
  ldns_pkt_set_edns_do(e.get(), true);
  auto ev = judge_dns_query(wire(e.get()), &deny);
  ASSERT_EQ(ev.action, DnsVerdict::Action::kForward);
  Pkt eu = parse(ev.upstream_query);
  ASSERT_TRUE(eu);
  EXPECT_EQ(ldns_pkt_edns_udp_size(eu.get()), 1232);
  EXPECT_TRUE(ldns_pkt_edns_do(eu.get()));
}

TEST(CheckUpstreamAnswer, OnlyTheMatchingAnswerCounts) {
  Bytes q = make_query("www.example.com", 0x0a0b);
  auto answer = [&](uint16_t id, const char* name, std::vector<const char*> rrs) {
    Pkt p(ldns_pkt_new());
    ldns_pkt_set_id(p.get(), id);
    ldns_pkt_set_qr(p.get(), true);
    ldns_rr* question = nullptr;
    ldns_rr_new_question_frm_str(&question, (std::string(name) + " IN A").c_str(), nullptr, nullptr);
    ldns_pkt_push_rr(p.get(), LDNS_SECTION_QUESTION, question);
    for (const char* t : rrs) {
      ldns_rr* rr = nullptr;
      EXPECT_EQ(ldns_rr_new_frm_str(&rr, t, 0, nullptr, nullptr), LDNS_STATUS_OK) << t;
      ldns_pkt_push_rr(p.get(), LDNS_SECTION_ANSWER, rr);
    }
    return wire(p.get());
  };
  auto good = check_upstream_answer(
      q, answer(0x0a0b, "WWW.example.com.",
                {"www.example.com. 10 IN CNAME b.example.net.", "b.example.net. 20 IN A 192.0.2.1",
                 "b.example.net. 30 IN AAAA 2001:db8::1", "b.example.net. 40 IN A 192.0.2.2"}));
  ASSERT_TRUE(good);
  std::vector<std::pair<uint32_t, uint32_t>> want = {{ip("192.0.2.1"), 20}, {ip("192.0.2.2"), 40}};
  EXPECT_EQ(*good, want);
  EXPECT_FALSE(check_upstream_answer(q, answer(0x0a0c, "www.example.com.", {})));
  EXPECT_FALSE(check_upstream_answer(q, answer(0x0a0b, "www.example.org.", {})));
  Bytes not_response = answer(0x0a0b, "www.example.com.", {});
  not_response[2] &= 0x7f;
  EXPECT_FALSE(check_upstream_answer(q, not_response));
  EXPECT_FALSE(check_upstream_answer(q, Bytes(5, 0)));
}

TEST_F(ResolverTest, ForwardsWithAFreshIdAndRestoresTheClientsId) {
  StartWithFake();
  std::set<uint16_t> upstream_ids;
  for (uint16_t id : {0x1234, 0x1234, 0x1234, 0x1234}) {
    auto a = udp_ask("127.0.0.5", port_, make_query("other.test", id));
    auto c = resolver_->counters();
    ASSERT_TRUE(a) << id << " queries " << c.queries << " malformed " << c.malformed << " forwarded " << c.forwarded
                   << " live " << resolver_->live_coroutines() << " failures " << c.upstream_failures << " overloaded " << c.overloaded;
    EXPECT_EQ(id_of(*a), id);
    EXPECT_EQ(rcode(*a), LDNS_RCODE_NOERROR);
    Pkt p = parse(*a);
    ASSERT_TRUE(p);
    EXPECT_EQ(a_records(p.get()), std::vector<std::string>{"10.4.0.1/30"});
  }
  auto ids = fake_.ids();
  ASSERT_EQ(ids.size(), 4u);
  // Random ids and source ports: four equal ones would be a 2^-48 chance.
  EXPECT_GT(std::set<uint16_t>(ids.begin(), ids.end()).size(), 1u);
  auto ports = fake_.source_ports();
  EXPECT_GT(std::set<uint16_t>(ports.begin(), ports.end()).size(), 1u);
  EXPECT_TRUE(Allowed().empty()) << "other.test matched no allowed domain";
  auto c = resolver_->counters();
  EXPECT_EQ(c.queries, 4u);
  EXPECT_EQ(c.forwarded, 4u);
}

TEST_F(ResolverTest, AllowedNameReportsEveryARecordBeforeTheAnswer) {
  on_allowed_delay_ = 30ms;
  StartWithFake();
  auto a = udp_ask("127.0.0.2", port_, make_query("A.Allowed.Test", 7));
  ASSERT_TRUE(a);
  // The calls happened before the answer was sent: they are there already.
  std::vector<AllowedCall> want = {{ip("127.0.0.2"), ip("10.1.0.1"), 300}, {ip("127.0.0.2"), ip("10.1.0.2"), 300}};
  EXPECT_EQ(Allowed(), want);
  EXPECT_EQ(rcode(*a), LDNS_RCODE_NOERROR);

  // A CNAME chain: the A record of the target counts, with its own TTL.
  auto c = udp_ask("127.0.0.2", port_, make_query("cname.allowed.test", 8));
  ASSERT_TRUE(c);
  want.push_back({ip("127.0.0.2"), ip("10.3.0.1"), 120});
  EXPECT_EQ(Allowed(), want);

  // An open sandbox with an allowed domain: the matching name opens its
  // addresses, another name is forwarded without.
  auto o = udp_ask("127.0.0.7", port_, make_query("a.allowed.test", 9));
  ASSERT_TRUE(o);
  EXPECT_EQ(Allowed().size(), 5u);
  auto p = udp_ask("127.0.0.7", port_, make_query("other.test", 10));
  ASSERT_TRUE(p);
  EXPECT_EQ(rcode(*p), LDNS_RCODE_NOERROR);
  EXPECT_EQ(Allowed().size(), 5u);
}

TEST_F(ResolverTest, DefaultDenyRefusesOtherNamesWithoutAskingUpstream) {
  StartWithFake();
  auto a = udp_ask("127.0.0.2", port_, make_query("other.test", 11));
  ASSERT_TRUE(a);
  EXPECT_EQ(rcode(*a), LDNS_RCODE_REFUSED);
  EXPECT_EQ(id_of(*a), 11);
  EXPECT_EQ(fake_.names().count("other.test."), 0u);
  // A name that only ends like an allowed one, or sits below an exact entry.
  for (const char* name : {"xa.allowed.test", "sub.a.allowed.test", "allowed.test"}) {
    auto r = udp_ask("127.0.0.2", port_, make_query(name, 12));
    ASSERT_TRUE(r) << name;
    EXPECT_EQ(rcode(*r), LDNS_RCODE_REFUSED) << name;
  }
  EXPECT_EQ(resolver_->counters().refused, 4u);
  EXPECT_TRUE(Allowed().empty());
}

TEST_F(ResolverTest, NoInternetGetsNoAnswerAtAll) {
  StartWithFake();
  EXPECT_FALSE(udp_ask("127.0.0.3", port_, make_query("a.allowed.test", 13), 300ms));
  EXPECT_FALSE(tcp_ask("127.0.0.3", port_, make_query("a.allowed.test", 14)));
  EXPECT_TRUE(fake_.names().empty());
  EXPECT_EQ(resolver_->counters().dropped, 2u);
}

TEST_F(ResolverTest, UnknownSourceIsRefused) {
  StartWithFake();
  auto a = udp_ask("127.0.0.4", port_, make_query("other.test", 15));
  ASSERT_TRUE(a);
  EXPECT_EQ(rcode(*a), LDNS_RCODE_REFUSED);
  EXPECT_EQ(id_of(*a), 15);
  // Whatever it sends.
  Bytes two = make_query("other.test", 16);
  two[5] = 2;
  auto b = udp_ask("127.0.0.4", port_, two);
  ASSERT_TRUE(b);
  EXPECT_EQ(rcode(*b), LDNS_RCODE_REFUSED);
  EXPECT_TRUE(fake_.names().empty());
}

TEST_F(ResolverTest, WildcardCoversNamesBelowButNotTheApex) {
  StartWithFake();
  for (const char* name : {"x.wild.test", "deep.x.wild.test", "X.WILD.test"}) {
    auto a = udp_ask("127.0.0.2", port_, make_query(name, 16));
    ASSERT_TRUE(a) << name;
    EXPECT_EQ(rcode(*a), LDNS_RCODE_NOERROR) << name;
  }
  EXPECT_EQ(Allowed().size(), 3u);
  auto apex = udp_ask("127.0.0.2", port_, make_query("wild.test", 17));
  ASSERT_TRUE(apex);
  EXPECT_EQ(rcode(*apex), LDNS_RCODE_REFUSED);
  // One label holding a dot ("x.wild" then "test"): in text it ends in
  // ".wild.test", but it is not below wild.test.
  auto dotted = udp_ask("127.0.0.2", port_, make_query("x\\.wild.test", 18));
  ASSERT_TRUE(dotted);
  EXPECT_EQ(rcode(*dotted), LDNS_RCODE_REFUSED);
  EXPECT_EQ(Allowed().size(), 3u);
}

TEST_F(ResolverTest, UpstreamDownGivesServfailWithinTheTimeout) {
  // A port with nothing behind it (ICMP port unreachable: fails fast), and
  // one that takes queries and never answers (the timeout).
  uint16_t closed_port;
  {
    Fd f = bound_socket(SOCK_DGRAM, "127.0.0.1");
    closed_port = local_port(f.fd);
  }
  Fd silent = bound_socket(SOCK_DGRAM, "127.0.0.1");
  ResolverOptions opts;
  opts.upstream_timeout = 300ms;
  Start({asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.1"), closed_port),
         asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.1"), local_port(silent.fd))},
        opts);
  auto t0 = Clock::now();
  auto a = udp_ask("127.0.0.5", port_, make_query("other.test", 19));
  auto took = Clock::now() - t0;
  ASSERT_TRUE(a);
  EXPECT_EQ(rcode(*a), LDNS_RCODE_SERVFAIL);
  EXPECT_EQ(id_of(*a), 19);
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 1500ms);
  EXPECT_EQ(resolver_->counters().upstream_failures, 1u);
  // Over TCP too (both refuse or time out).
  auto t = tcp_ask("127.0.0.5", port_, make_query("other.test", 20));
  ASSERT_TRUE(t);
  EXPECT_EQ(rcode(*t), LDNS_RCODE_SERVFAIL);
}

TEST_F(ResolverTest, NextUpstreamAnswersWhenTheFirstIsSilent) {
  Fd silent = bound_socket(SOCK_DGRAM, "127.0.0.1");
  ResolverOptions opts;
  opts.upstream_timeout = 300ms;
  Start({asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.1"), local_port(silent.fd)),
         asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.1"), fake_.port())},
        opts);
  auto a = udp_ask("127.0.0.5", port_, make_query("other.test", 21));
  ASSERT_TRUE(a);
  EXPECT_EQ(rcode(*a), LDNS_RCODE_NOERROR);
}

TEST_F(ResolverTest, AnswersFromElsewhereOrWithTheWrongIdAreIgnored) {
  // An "upstream" the test plays by hand: it answers first with a wrong id,
  // then with the wrong question, then from another port; only then right.
  Fd up = bound_socket(SOCK_DGRAM, "127.0.0.1");
  ResolverOptions opts;
  opts.upstream_timeout = 2000ms;
  Start({asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.1"), local_port(up.fd))}, opts);
  std::optional<Bytes> answer;
  std::thread client([&] { answer = udp_ask("127.0.0.5", port_, make_query("other.test", 22)); });
  Bytes q(512);
  sockaddr_in from{};
  socklen_t fl = sizeof from;
  set_timeout(up.fd, 2000ms);
  ssize_t n = ::recvfrom(up.fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&from), &fl);
  ASSERT_GT(n, 0);
  q.resize(n);
  Pkt qp = parse(q);
  ASSERT_TRUE(qp);
  auto reply = [&](uint16_t id, const char* name, const char* a, int fd) {
    Pkt p(ldns_pkt_new());
    ldns_pkt_set_id(p.get(), id);
    ldns_pkt_set_qr(p.get(), true);
    ldns_rr* question = nullptr;
    ldns_rr_new_question_frm_str(&question, (std::string(name) + " IN A").c_str(), nullptr, nullptr);
    ldns_pkt_push_rr(p.get(), LDNS_SECTION_QUESTION, question);
    ldns_rr* rr = nullptr;
    ldns_rr_new_frm_str(&rr, (std::string(name) + " 30 IN A " + a).c_str(), 0, nullptr, nullptr);
    ldns_pkt_push_rr(p.get(), LDNS_SECTION_ANSWER, rr);
    Bytes b = wire(p.get());
    ::sendto(fd, b.data(), b.size(), 0, reinterpret_cast<sockaddr*>(&from), fl);
  };
  uint16_t id = ldns_pkt_id(qp.get());
  reply(static_cast<uint16_t>(id + 1), "other.test.", "6.6.6.1", up.fd);
  reply(id, "evil.test.", "6.6.6.2", up.fd);
  Fd other = bound_socket(SOCK_DGRAM, "127.0.0.1");
  reply(id, "other.test.", "6.6.6.3", other.fd);
  std::this_thread::sleep_for(50ms);
  reply(id, "OTHER.test.", "10.4.0.9", up.fd);
  client.join();
  ASSERT_TRUE(answer);
  Pkt p = parse(*answer);
  ASSERT_TRUE(p);
  EXPECT_EQ(a_records(p.get()), std::vector<std::string>{"10.4.0.9/30"});
  EXPECT_EQ(id_of(*answer), 22);
}

TEST_F(ResolverTest, TcpQueriesAreForwardedOverTcpAndTruncationPassesThrough) {
  StartWithFake();
  // Over UDP the fake truncates big.test: the TC answer comes through as is.
  auto u = udp_ask("127.0.0.2", port_, make_query("big.test", 23));
  ASSERT_TRUE(u);
  Pkt up = parse(*u);
  ASSERT_TRUE(up);
  EXPECT_TRUE(ldns_pkt_tc(up.get()));
  EXPECT_TRUE(a_records(up.get()).empty());
  // Over TCP the whole answer, and its address is opened.
  auto t = tcp_ask("127.0.0.2", port_, make_query("big.test", 24));
  ASSERT_TRUE(t);
  EXPECT_EQ(id_of(*t), 24);
  Pkt tp = parse(*t);
  ASSERT_TRUE(tp);
  EXPECT_FALSE(ldns_pkt_tc(tp.get()));
  EXPECT_EQ(a_records(tp.get()), std::vector<std::string>{"10.5.0.1/50"});
  std::vector<AllowedCall> want = {{ip("127.0.0.2"), ip("10.5.0.1"), 50}};
  EXPECT_EQ(Allowed(), want);
  // Two queries on one connection, one after the other.
  Fd s = tcp_connect("127.0.0.5", port_);
  for (uint16_t id : {25, 26}) {
    Bytes q = make_query("other.test", id);
    Bytes out{static_cast<uint8_t>(q.size() >> 8), static_cast<uint8_t>(q.size())};
    out.insert(out.end(), q.begin(), q.end());
    ::send(s.fd, out.data(), out.size(), MSG_NOSIGNAL);
    auto a = tcp_read_answer(s.fd);
    ASSERT_TRUE(a);
    EXPECT_EQ(id_of(*a), id);
  }
}

TEST_F(ResolverTest, HostileMessagesGetAnAnswerOrADropAndServiceGoesOn) {
  ResolverOptions opts;
  opts.tcp_idle_timeout = 300ms;
  StartWithFake(opts);
  auto good = [&](uint16_t id) {
    auto a = udp_ask("127.0.0.5", port_, make_query("other.test", id));
    auto c = resolver_->counters();
    ASSERT_TRUE(a) << id << " queries " << c.queries << " malformed " << c.malformed << " forwarded " << c.forwarded
                   << " live " << resolver_->live_coroutines() << " failures " << c.upstream_failures << " overloaded " << c.overloaded;
    EXPECT_EQ(id_of(*a), id);
    EXPECT_EQ(rcode(*a), LDNS_RCODE_NOERROR);
  };
  std::mt19937 rng(42);
  Fd s = bound_socket(SOCK_DGRAM, "127.0.0.5");
  auto to = sa("127.0.0.1", port_);
  for (int i = 0; i < 300; ++i) {
    Bytes junk(rng() % 600);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    ::sendto(s.fd, junk.data(), junk.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
  }
  // Let the resolver work through the burst (a query sent into a full
  // socket buffer is lost, as UDP is).
  for (uint64_t seen = ~0ull; seen != resolver_->counters().queries + resolver_->counters().malformed;) {
    seen = resolver_->counters().queries + resolver_->counters().malformed;
    std::this_thread::sleep_for(50ms);
  }
  good(100);

  Bytes q = make_query("other.test", 0x4242);
  // Truncated header; truncated question.
  EXPECT_FALSE(udp_ask("127.0.0.5", port_, Bytes(q.begin(), q.begin() + 5), 200ms));
  auto cut = udp_ask("127.0.0.5", port_, Bytes(q.begin(), q.end() - 3));
  ASSERT_TRUE(cut);
  EXPECT_EQ(rcode(*cut), LDNS_RCODE_FORMERR);
  // Two questions; no question.
  Bytes two = q;
  two[5] = 2;
  auto t = udp_ask("127.0.0.5", port_, two);
  ASSERT_TRUE(t);
  EXPECT_EQ(rcode(*t), LDNS_RCODE_FORMERR);
  Bytes none(q.begin(), q.begin() + 12);
  none[5] = 0;
  auto nn = udp_ask("127.0.0.5", port_, none);
  ASSERT_TRUE(nn);
  EXPECT_EQ(rcode(*nn), LDNS_RCODE_FORMERR);
  // A compression pointer to itself as the question name.
  Bytes loop(q.begin(), q.begin() + 12);
  for (uint8_t b : {0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01}) loop.push_back(b);
  auto l = udp_ask("127.0.0.5", port_, loop);
  ASSERT_TRUE(l);
  EXPECT_EQ(rcode(*l), LDNS_RCODE_FORMERR);
  // Huge record counts with nothing behind them.
  Bytes huge = q;
  for (int i = 6; i < 12; ++i) huge[i] = 0xff;
  auto h = udp_ask("127.0.0.5", port_, huge);
  ASSERT_TRUE(h);
  EXPECT_EQ(rcode(*h), LDNS_RCODE_FORMERR);
  // A response (QR set) is not a query: dropped.
  Bytes resp = q;
  resp[2] |= 0x80;
  EXPECT_FALSE(udp_ask("127.0.0.5", port_, resp, 200ms));
  // Another opcode (UPDATE): NOTIMP. Another class (CH): REFUSED. A zone transfer: REFUSED.
  Bytes upd = q;
  upd[2] = static_cast<uint8_t>((upd[2] & 0x87) | (5 << 3));
  auto u = udp_ask("127.0.0.5", port_, upd);
  ASSERT_TRUE(u);
  EXPECT_EQ(rcode(*u), LDNS_RCODE_NOTIMPL);
  auto ch = udp_ask("127.0.0.5", port_, make_query("version.bind", 1, LDNS_RR_TYPE_TXT, LDNS_RR_CLASS_CH));
  ASSERT_TRUE(ch);
  EXPECT_EQ(rcode(*ch), LDNS_RCODE_REFUSED);
  auto axfr = udp_ask("127.0.0.5", port_, make_query("other.test", 2, LDNS_RR_TYPE_AXFR));
  ASSERT_TRUE(axfr);
  EXPECT_EQ(rcode(*axfr), LDNS_RCODE_REFUSED);
  // EDNS: forwarded like any other query.
  {
    Pkt e(ldns_pkt_query_new(ldns_dname_new_frm_str("other.test"), LDNS_RR_TYPE_A, LDNS_RR_CLASS_IN, LDNS_RD));
    ldns_pkt_set_id(e.get(), 3);
    ldns_pkt_set_edns_udp_size(e.get(), 1232);
    ldns_pkt_set_edns_do(e.get(), true);
    auto ea = udp_ask("127.0.0.5", port_, wire(e.get()));
    ASSERT_TRUE(ea);
    EXPECT_EQ(rcode(*ea), LDNS_RCODE_NOERROR);
  }
  good(101);

  // TCP: a 0-length frame closes the connection.
  {
    Fd c = tcp_connect("127.0.0.5", port_);
    uint8_t zero[2] = {0, 0};
    ::send(c.fd, zero, 2, MSG_NOSIGNAL);
    EXPECT_TRUE(closed_by_peer(c.fd));
  }
  // A length prefix larger than what is sent, and a client that sends
  // nothing: both closed after the idle timeout.
  {
    Fd c1 = tcp_connect("127.0.0.5", port_);
    Bytes partial{0x01, 0x00};
    partial.insert(partial.end(), q.begin(), q.end());
    ::send(c1.fd, partial.data(), partial.size(), MSG_NOSIGNAL);
    Fd c2 = tcp_connect("127.0.0.6", port_);
    auto t0 = Clock::now();
    EXPECT_TRUE(closed_by_peer(c1.fd));
    EXPECT_TRUE(closed_by_peer(c2.fd));
    EXPECT_LT(Clock::now() - t0, 2s);
  }
  // Garbage inside a well-formed frame: FORMERR over TCP too.
  {
    Fd c = tcp_connect("127.0.0.5", port_);
    Bytes frame{0x00, 0x0c, 0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0};
    ::send(c.fd, frame.data(), frame.size(), MSG_NOSIGNAL);
    auto a = tcp_read_answer(c.fd);
    ASSERT_TRUE(a);
    EXPECT_EQ(rcode(*a), LDNS_RCODE_FORMERR);
  }
  good(102);
  auto tq = tcp_ask("127.0.0.5", port_, make_query("other.test", 103));
  ASSERT_TRUE(tq);
  EXPECT_EQ(rcode(*tq), LDNS_RCODE_NOERROR);
  EXPECT_GT(resolver_->counters().malformed, 0u);
}

// Valid queries (with EDNS) with random bytes changed: whatever ldns makes
// of them, each gets an answer or a drop, and service goes on.
TEST_F(ResolverTest, MutatedQueriesNeverBreakTheResolver) {
  ResolverOptions opts;
  opts.upstream_timeout = 200ms;
  StartWithFake(opts);
  Pkt e(ldns_pkt_query_new(ldns_dname_new_frm_str("a.b.other.test"), LDNS_RR_TYPE_A, LDNS_RR_CLASS_IN, LDNS_RD));
  ldns_pkt_set_edns_udp_size(e.get(), 1232);
  ldns_pkt_set_edns_do(e.get(), true);
  const Bytes base = wire(e.get());
  std::mt19937 rng(7);
  Fd s = bound_socket(SOCK_DGRAM, "127.0.0.5");
  auto to = sa("127.0.0.1", port_);
  for (int round = 0; round < 20; ++round) {
    for (int i = 0; i < 100; ++i) {
      Bytes m = base;
      for (int k = 1 + static_cast<int>(rng() % 4); k > 0; --k) m[rng() % m.size()] = static_cast<uint8_t>(rng());
      m[2] &= 0x7f;  // a query, so it goes past the first check
      if (rng() % 4 == 0) m.resize(rng() % m.size());
      ::sendto(s.fd, m.data(), m.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    }
    std::this_thread::sleep_for(20ms);
  }
  std::this_thread::sleep_for(400ms);
  auto a = udp_ask("127.0.0.5", port_, make_query("other.test", 77));
  ASSERT_TRUE(a);
  EXPECT_EQ(rcode(*a), LDNS_RCODE_NOERROR);
  EXPECT_EQ(id_of(*a), 77);
}

TEST_F(ResolverTest, OutstandingQueriesAreBoundedPerSource) {
  ResolverOptions opts;
  opts.max_outstanding_per_source = 4;
  opts.upstream_timeout = 1000ms;
  StartWithFake(opts);
  // Six queries the upstream never answers, from one source: four wait,
  // two get SERVFAIL at once.
  Fd s = bound_socket(SOCK_DGRAM, "127.0.0.5");
  auto to = sa("127.0.0.1", port_);
  auto t0 = Clock::now();
  for (uint16_t id = 1; id <= 6; ++id) {
    Bytes q = make_query("silent.test", id);
    ::sendto(s.fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
  }
  set_timeout(s.fd, 500ms);
  int quick = 0;
  Bytes buf(512);
  while (::recv(s.fd, buf.data(), buf.size(), 0) > 0) {
    EXPECT_EQ(rcode(buf), LDNS_RCODE_SERVFAIL);
    ++quick;
  }
  EXPECT_EQ(quick, 2);
  EXPECT_LT(Clock::now() - t0, 900ms);
  // Another source is served meanwhile.
  auto other = udp_ask("127.0.0.6", port_, make_query("other.test", 7));
  ASSERT_TRUE(other);
  EXPECT_EQ(rcode(*other), LDNS_RCODE_NOERROR);
  EXPECT_EQ(resolver_->counters().overloaded, 2u);
  // The four waiting ones get SERVFAIL when the timeout ends.
  set_timeout(s.fd, 2000ms);
  int late = 0;
  while (late < 4 && ::recv(s.fd, buf.data(), buf.size(), 0) > 0) {
    EXPECT_EQ(rcode(buf), LDNS_RCODE_SERVFAIL);
    ++late;
  }
  EXPECT_EQ(late, 4);
  // Their slots are free again.
  auto again = udp_ask("127.0.0.5", port_, make_query("other.test", 8));
  ASSERT_TRUE(again);
  EXPECT_EQ(rcode(*again), LDNS_RCODE_NOERROR);
}

TEST_F(ResolverTest, TcpConnectionsAreBoundedPerSource) {
  ResolverOptions opts;
  opts.max_tcp_per_source = 2;
  StartWithFake(opts);
  Fd a = tcp_connect("127.0.0.5", port_);
  Fd b = tcp_connect("127.0.0.5", port_);
  Fd c = tcp_connect("127.0.0.5", port_);
  EXPECT_TRUE(closed_by_peer(c.fd));
  auto other = tcp_ask("127.0.0.6", port_, make_query("other.test", 1));
  ASSERT_TRUE(other);
  EXPECT_EQ(resolver_->counters().tcp_rejected, 1u);
}

TEST_F(ResolverTest, StopClosesEverythingAndCallsNothingMore) {
  ResolverOptions opts;
  opts.upstream_timeout = 5000ms;
  StartWithFake(opts);
  // A forward in flight and an idle TCP connection while stopping.
  Fd s = bound_socket(SOCK_DGRAM, "127.0.0.5");
  auto to = sa("127.0.0.1", port_);
  Bytes q = make_query("silent.test", 1);
  ::sendto(s.fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
  Fd c = tcp_connect("127.0.0.5", port_);
  std::this_thread::sleep_for(100ms);
  EXPECT_GE(resolver_->live_coroutines(), 4u);
  resolver_->stop();
  auto t0 = Clock::now();
  WaitWoundDown();
  EXPECT_LT(Clock::now() - t0, 1s);
  EXPECT_TRUE(closed_by_peer(c.fd));
  // Both ports are free again.
  Fd u = bound_socket(SOCK_DGRAM, "127.0.0.1", port_);
  Fd t = bound_socket(SOCK_STREAM, "127.0.0.1", port_);
  EXPECT_TRUE(Allowed().empty());
}

TEST_F(ResolverTest, DestroyedRightAfterStopWhileBusy) {
  StartWithFake();
  Fd s = bound_socket(SOCK_DGRAM, "127.0.0.5");
  auto to = sa("127.0.0.1", port_);
  Bytes q = make_query("silent.test", 1);
  ::sendto(s.fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
  Fd c = tcp_connect("127.0.0.5", port_);
  std::this_thread::sleep_for(50ms);
  resolver_->stop();
  resolver_.reset();  // the coroutines still winding down own what they touch
  EXPECT_TRUE(closed_by_peer(c.fd));
  std::this_thread::sleep_for(100ms);
}

// Not a check: prints the forward latency over loopback next to a direct
// query to the fake upstream.
TEST_F(ResolverTest, ForwardLatency) {
  StartWithFake();
  auto p50 = [](uint16_t port) {
    std::vector<double> us;
    Fd s = bound_socket(SOCK_DGRAM, "127.0.0.5");
    set_timeout(s.fd, 2000ms);
    auto to = sa("127.0.0.1", port);
    Bytes buf(512);
    for (int i = 0; i < 500; ++i) {
      Bytes q = make_query("other.test", static_cast<uint16_t>(i));
      auto t0 = Clock::now();
      ::sendto(s.fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
      if (::recv(s.fd, buf.data(), buf.size(), 0) <= 0) continue;
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    std::sort(us.begin(), us.end());
    return us.empty() ? -1.0 : us[us.size() / 2];
  };
  double direct = p50(fake_.port());
  double via = p50(port_);
  std::printf("dns latency p50 over loopback: direct %.0f us, through the resolver %.0f us\n", direct, via);
  EXPECT_GT(via, 0);
}

}  // namespace
}  // namespace coppice::net
