#include "net/resolver.h"

#include <sys/random.h>

#include <array>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <variant>

#include <boost/asio/experimental/awaitable_operators.hpp>

#include "common/log.h"
#include "common/scope_exit.h"
#include "net/dns_wire.h"

namespace coppice::net {

using asio::ip::tcp;
using asio::ip::udp;
using namespace asio::experimental::awaitable_operators;
namespace {

using namespace dns_wire;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

uint16_t random_id() {
  uint16_t id = 0;
  if (::getrandom(&id, sizeof id, 0) != static_cast<ssize_t>(sizeof id)) {
    // Never short for 2 bytes once the pool is ready (it is, long before
    // a gateway serves sandboxes); a visible fallback, not a silent one.
    COPPICE_LOG_RATE(warn, 1) << "dns: getrandom failed, id from the clock";
    id = static_cast<uint16_t>(std::chrono::steady_clock::now().time_since_epoch().count() * 2654435761u >> 16);
  }
  return id;
}

struct Counts {
  std::atomic<uint64_t> queries{0}, refused{0}, dropped{0}, malformed{0}, forwarded{0}, upstream_failures{0},
      overloaded{0}, tcp_rejected{0};
};

}  // namespace

// Everything the coroutines use; they share-own it, so it outlives the
// Resolver while they wind down. Fields marked "strand" are touched only on
// the strand.
struct Resolver::State {
  State(asio::any_io_executor ex, uint32_t listen, uint16_t port_, std::vector<udp::endpoint> ups, PolicyOf p,
        OnAllowed a, ResolverOptions o)
      : strand(asio::make_strand(ex)),
        listen_addr(listen),
        port(port_),
        upstreams(std::move(ups)),
        opts(o),
        policy_of(std::move(p)),
        on_allowed(std::move(a)) {}

  asio::strand<asio::any_io_executor> strand;
  const uint32_t listen_addr;
  const uint16_t port;
  const std::vector<udp::endpoint> upstreams;
  const ResolverOptions opts;

  // The callbacks, called only under cb_mu and only while !stopped.
  std::mutex cb_mu;
  bool stopped = false;
  PolicyOf policy_of;
  OnAllowed on_allowed;

  // strand
  std::optional<udp::socket> udp_sock;
  std::optional<tcp::acceptor> acceptor;
  bool closed = false;
  uint64_t next_closer = 0;
  std::map<uint64_t, std::function<void()>> closers;  // sockets of live coroutines
  size_t outstanding = 0;
  std::unordered_map<uint32_t, size_t> outstanding_by_source;
  size_t tcp_conns = 0;
  std::unordered_map<uint32_t, size_t> tcp_by_source;

  Counts n;
  std::atomic<size_t> live{0};

  // nullopt: stopped (the caller drops the query).
  std::optional<std::shared_ptr<const DnsPolicy>> policy(uint32_t source) {
    std::lock_guard lock(cb_mu);
    if (stopped) return std::nullopt;
    return policy_of ? policy_of(source) : nullptr;
  }

  // strand: registers a closer for a socket of a coroutine; the returned
  // guard unregisters it. Returns nothing when already closed.
  template <typename Sock>
  auto track(Sock& s) {
    uint64_t key = next_closer++;
    closers.emplace(key, [&s] {
      boost::system::error_code ec;
      s.close(ec);
    });
    return ScopeExit([this, key] { closers.erase(key); });
  }

  // strand
  void close_all() {
    closed = true;
    boost::system::error_code ec;
    if (udp_sock) udp_sock->close(ec);
    if (acceptor) acceptor->close(ec);
    auto all = std::move(closers);
    closers.clear();
    for (auto& [k, f] : all) f();
  }
};

namespace {

using State = Resolver::State;

auto live_guard(State& st) {
  st.live.fetch_add(1);
  return ScopeExit([&st] { st.live.fetch_sub(1); });
}

// A query that is to be forwarded.
struct Query {
  uint32_t source = 0;
  Bytes raw;      // the client's bytes (for header-only answers)
  Pkt pkt;        // the client's message, parsed
  bool matched = false;  // the name matched an allowed domain
};

// What to do with one message from a client.
struct Drop {};
using Decision = std::variant<Drop, Bytes, Query>;

// `lookup()` gives the source's policy (nullopt: the resolver is stopping),
// asked only for a message that looks like a query.
template <typename Lookup>
Decision decide(Counts& n, uint32_t source, Lookup&& lookup, ByteView m) {
  if (m.size() < kHeaderSize) {
    n.malformed++;
    return Drop{};
  }
  if (is_response(m)) {
    n.dropped++;
    return Drop{};
  }
  n.queries++;
  auto policy = lookup();
  if (!policy || (*policy && !(*policy)->allowed)) {
    n.dropped++;
    return Drop{};
  }
  if (!*policy) {
    // An unknown source is refused whatever it sent (with its question when
    // that is one well-formed question).
    n.refused++;
    ldns_pkt* raw = nullptr;
    bool plain = opcode_of(m) == LDNS_PACKET_QUERY && qdcount_of(m) == 1 && get16(m, 6) == 0 && get16(m, 8) == 0 &&
                 get16(m, 10) <= 2;
    if (!plain || ldns_wire2pkt(&raw, m.data(), m.size()) != LDNS_STATUS_OK || raw == nullptr) {
      ldns_pkt_free(raw);
      return header_answer(m, LDNS_RCODE_REFUSED);
    }
    Pkt pkt(raw);
    return question_answer(m, pkt.get(), LDNS_RCODE_REFUSED);
  }
  if (opcode_of(m) != LDNS_PACKET_QUERY) {
    n.malformed++;
    return header_answer(m, LDNS_RCODE_NOTIMPL);
  }
  // A query carries one question, no answer or authority records, and at
  // most an OPT and a TSIG record: anything else is refused before ldns
  // spends work on thousands of records.
  if (qdcount_of(m) != 1 || get16(m, 6) != 0 || get16(m, 8) != 0 || get16(m, 10) > 2) {
    n.malformed++;
    return header_answer(m, LDNS_RCODE_FORMERR);
  }
  ldns_pkt* raw = nullptr;
  if (ldns_wire2pkt(&raw, m.data(), m.size()) != LDNS_STATUS_OK || raw == nullptr) {
    ldns_pkt_free(raw);
    n.malformed++;
    return header_answer(m, LDNS_RCODE_FORMERR);
  }
  Pkt pkt(raw);
  const ldns_rr* q = question_of(pkt.get());
  if (!q) {
    n.malformed++;
    return header_answer(m, LDNS_RCODE_FORMERR);
  }
  ldns_rr_type type = ldns_rr_get_type(q);
  if (ldns_rr_get_class(q) != LDNS_RR_CLASS_IN || type == LDNS_RR_TYPE_AXFR || type == LDNS_RR_TYPE_IXFR) {
    n.refused++;
    return question_answer(m, pkt.get(), LDNS_RCODE_REFUSED);
  }
  const ldns_rdf* owner = ldns_rr_owner(q);
  auto labels = owner ? wire_labels(ldns_rdf_data(owner), ldns_rdf_size(owner)) : std::nullopt;
  if (!labels) {
    n.malformed++;
    return question_answer(m, pkt.get(), LDNS_RCODE_FORMERR);
  }
  bool matched = false;
  for (const auto& d : (*policy)->domains) {
    if (labels_match(*labels, d)) {
      matched = true;
      break;
    }
  }
  if (!matched && (*policy)->default_deny) {
    n.refused++;
    return question_answer(m, pkt.get(), LDNS_RCODE_REFUSED);
  }
  return Query{source, Bytes(m.begin(), m.end()), std::move(pkt), matched};
}

// strand: one slot of the outstanding bounds, or none when over them.
struct Slot {
  std::shared_ptr<State> st;
  uint32_t source = 0;
  Slot() = default;
  Slot(Slot&& o) noexcept : st(std::move(o.st)), source(o.source) {}
  Slot& operator=(Slot&&) = delete;
  ~Slot() {
    if (!st) return;
    st->outstanding--;
    auto it = st->outstanding_by_source.find(source);
    if (it != st->outstanding_by_source.end() && --it->second == 0) st->outstanding_by_source.erase(it);
  }
};

std::optional<Slot> take_slot(const std::shared_ptr<State>& sp, uint32_t source) {
  State& st = *sp;
  size_t& mine = st.outstanding_by_source[source];
  if (st.outstanding >= st.opts.max_outstanding || mine >= st.opts.max_outstanding_per_source) {
    if (mine == 0) st.outstanding_by_source.erase(source);
    return std::nullopt;
  }
  ++mine;
  ++st.outstanding;
  Slot s;
  s.st = sp;
  s.source = source;
  return s;
}

// One exchange with one upstream over UDP within the timeout: the raw
// answer and its parse, or nothing.
asio::awaitable<std::optional<std::pair<Bytes, Pkt>>> ask_udp(State& st, const udp::endpoint& up,
                                                              const ldns_pkt* client) {
  uint16_t id = random_id();
  auto wire = upstream_query(client, id);
  if (!wire) co_return std::nullopt;
  udp::socket sock(st.strand);
  auto untrack = st.track(sock);
  boost::system::error_code ec;
  // A connected socket of its own: a fresh kernel-chosen (random) source
  // port, and the kernel passes only datagrams from the upstream's address
  // and port.
  sock.open(up.protocol(), ec);
  if (!ec) sock.connect(up, ec);
  if (ec) co_return std::nullopt;
  asio::steady_timer timer(st.strand);
  timer.expires_after(st.opts.upstream_timeout);
  auto [sec, sent] = co_await sock.async_send(asio::buffer(*wire), kTuple);
  if (sec || st.closed) co_return std::nullopt;
  Bytes buf(kMaxMessage);
  const ldns_rr* question = question_of(client);
  for (;;) {
    auto got = co_await (sock.async_receive(asio::buffer(buf), kTuple) || timer.async_wait(kTuple));
    if (got.index() != 0 || st.closed) co_return std::nullopt;  // timed out, or stopping
    auto [rec, n] = std::get<0>(got);
    // ECONNREFUSED: the upstream's port is closed (an ICMP error); no point waiting.
    if (rec) co_return std::nullopt;
    ByteView a(buf.data(), n);
    Pkt p = matching_answer(a, id, question);
    if (p) co_return std::pair{Bytes(a.begin(), a.end()), std::move(p)};
    // Not our answer: keep waiting for the real one until the deadline.
  }
}

// The same over TCP (for a client that asked over TCP).
asio::awaitable<std::optional<std::pair<Bytes, Pkt>>> ask_tcp(State& st, const udp::endpoint& up,
                                                              const ldns_pkt* client) {
  uint16_t id = random_id();
  auto wire = upstream_query(client, id);
  if (!wire || wire->size() > kMaxMessage) co_return std::nullopt;
  tcp::socket sock(st.strand);
  auto untrack = st.track(sock);
  asio::steady_timer timer(st.strand);
  timer.expires_after(st.opts.upstream_timeout);
  tcp::endpoint ep(up.address(), up.port());
  auto c = co_await (sock.async_connect(ep, kTuple) || timer.async_wait(kTuple));
  if (c.index() != 0 || std::get<0>(std::get<0>(c)) || st.closed) co_return std::nullopt;
  Bytes out(2 + wire->size());
  out[0] = static_cast<uint8_t>(wire->size() >> 8);
  out[1] = static_cast<uint8_t>(wire->size());
  std::memcpy(out.data() + 2, wire->data(), wire->size());
  auto w = co_await (asio::async_write(sock, asio::buffer(out), kTuple) || timer.async_wait(kTuple));
  if (w.index() != 0 || std::get<0>(std::get<0>(w)) || st.closed) co_return std::nullopt;
  const ldns_rr* question = question_of(client);
  // Answers come in order on a connection of our own: the first is ours or nothing is.
  std::array<uint8_t, 2> len{};
  auto h = co_await (asio::async_read(sock, asio::buffer(len), kTuple) || timer.async_wait(kTuple));
  if (h.index() != 0 || std::get<0>(std::get<0>(h)) || st.closed) co_return std::nullopt;
  size_t n = static_cast<size_t>(len[0] << 8 | len[1]);
  Bytes buf(n);
  auto b = co_await (asio::async_read(sock, asio::buffer(buf), kTuple) || timer.async_wait(kTuple));
  if (b.index() != 0 || std::get<0>(std::get<0>(b)) || st.closed) co_return std::nullopt;
  Pkt p = matching_answer(buf, id, question);
  if (!p) co_return std::nullopt;
  co_return std::pair{std::move(buf), std::move(p)};
}

// Forwards a query to the upstreams in turn; the answer to send back (the
// client's id restored), SERVFAIL when none answered, nothing when stopping.
asio::awaitable<std::optional<Bytes>> forward(std::shared_ptr<State> st, const Query& q, bool tcp) {
  st->n.forwarded++;
  for (const auto& up : st->upstreams) {
    std::optional<std::pair<Bytes, Pkt>> got;
    if (tcp) {
      auto r = co_await ask_tcp(*st, up, q.pkt.get());
      got = std::move(r);
    } else {
      auto r = co_await ask_udp(*st, up, q.pkt.get());
      got = std::move(r);
    }
    if (st->closed) co_return std::nullopt;
    if (!got) continue;
    auto& [answer, pkt] = *got;
    if (q.matched && ldns_pkt_get_rcode(pkt.get()) == LDNS_RCODE_NOERROR) {
      // Every A record of the answer section, CNAME chain included: the
      // firewall opens them before the sandbox can use them.
      std::lock_guard lock(st->cb_mu);
      if (st->stopped) co_return std::nullopt;
      for (auto [addr, ttl] : a_records_of(pkt.get())) {
        if (st->on_allowed) st->on_allowed(q.source, addr, ttl);
      }
    }
    answer[0] = q.raw[0];
    answer[1] = q.raw[1];
    co_return std::move(answer);
  }
  st->n.upstream_failures++;
  co_return question_answer(q.raw, q.pkt.get(), LDNS_RCODE_SERVFAIL);
}

void send_udp(State& st, const Bytes& answer, const udp::endpoint& to) {
  if (st.closed || !st.udp_sock) return;
  boost::system::error_code ec;
  // Non-blocking: a full socket buffer drops the answer (the client retries).
  st.udp_sock->send_to(asio::buffer(answer), to, 0, ec);
}

asio::awaitable<void> udp_forward(std::shared_ptr<State> st, Query q, Slot slot, udp::endpoint client) {
  auto guard = live_guard(*st);
  try {
    auto answer = co_await forward(st, q, false);
    if (answer) send_udp(*st, *answer, client);
  } catch (const std::exception& e) {
    COPPICE_LOG_RATE(error, 1) << "dns: forwarding a query failed: " << e.what();
  }
}

uint32_t v4_of(const asio::ip::address& a) {
  if (a.is_v4()) return a.to_v4().to_uint();
  if (a.is_v6() && a.to_v6().is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_uint();
  return 0;
}

asio::awaitable<void> udp_loop(std::shared_ptr<State> st) {
  auto guard = live_guard(*st);
  Bytes buf(kMaxMessage);
  for (;;) {
    udp::endpoint from;
    auto [ec, n] = co_await st->udp_sock->async_receive_from(asio::buffer(buf), from, kTuple);
    if (st->closed || ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor) co_return;
    if (ec) continue;  // a passing error of one datagram
    try {
      uint32_t source = v4_of(from.address());
      Decision d = decide(st->n, source, [&] { return st->policy(source); }, ByteView(buf.data(), n));
      if (auto* answer = std::get_if<Bytes>(&d)) {
        send_udp(*st, *answer, from);
      } else if (auto* q = std::get_if<Query>(&d)) {
        auto slot = take_slot(st, source);
        if (!slot) {
          st->n.overloaded++;
          send_udp(*st, question_answer(q->raw, q->pkt.get(), LDNS_RCODE_SERVFAIL), from);
          continue;
        }
        asio::co_spawn(st->strand, udp_forward(st, std::move(*q), std::move(*slot), from), asio::detached);
      }
    } catch (const std::exception& e) {
      COPPICE_LOG_RATE(error, 1) << "dns: a UDP query failed: " << e.what();
    }
  }
}

// One TCP client: length-prefixed queries one after another (RFC 1035
// section 4.2.2), each answered before the next is read.
asio::awaitable<void> tcp_conn(std::shared_ptr<State> st, tcp::socket sock, uint32_t source) {
  auto guard = live_guard(*st);
  auto untrack = st->track(sock);
  ScopeExit release([&st, source] {
    st->tcp_conns--;
    auto it = st->tcp_by_source.find(source);
    if (it != st->tcp_by_source.end() && --it->second == 0) st->tcp_by_source.erase(it);
  });
  try {
    asio::steady_timer timer(st->strand);
    for (;;) {
      // The whole next query, length and body, within the idle timeout.
      timer.expires_after(st->opts.tcp_idle_timeout);
      std::array<uint8_t, 2> len{};
      auto h = co_await (asio::async_read(sock, asio::buffer(len), kTuple) || timer.async_wait(kTuple));
      if (h.index() != 0 || std::get<0>(std::get<0>(h)) || st->closed) break;
      size_t n = static_cast<size_t>(len[0] << 8 | len[1]);
      if (n == 0) break;
      Bytes msg(n);
      auto b = co_await (asio::async_read(sock, asio::buffer(msg), kTuple) || timer.async_wait(kTuple));
      if (b.index() != 0 || std::get<0>(std::get<0>(b)) || st->closed) break;
      Decision d = decide(st->n, source, [&] { return st->policy(source); }, msg);
      std::optional<Bytes> answer;
      if (auto* a = std::get_if<Bytes>(&d)) {
        answer = std::move(*a);
      } else if (auto* q = std::get_if<Query>(&d)) {
        auto slot = take_slot(st, source);
        if (!slot) {
          st->n.overloaded++;
          answer = question_answer(q->raw, q->pkt.get(), LDNS_RCODE_SERVFAIL);
        } else {
          answer = co_await forward(st, *q, true);
          if (st->closed) break;
        }
      }
      if (!answer) break;  // dropped: no answer, and nothing more on this connection
      Bytes out(2 + answer->size());
      out[0] = static_cast<uint8_t>(answer->size() >> 8);
      out[1] = static_cast<uint8_t>(answer->size());
      std::memcpy(out.data() + 2, answer->data(), answer->size());
      timer.expires_after(st->opts.tcp_idle_timeout);
      auto w = co_await (asio::async_write(sock, asio::buffer(out), kTuple) || timer.async_wait(kTuple));
      if (w.index() != 0 || std::get<0>(std::get<0>(w)) || st->closed) break;
    }
  } catch (const std::exception& e) {
    COPPICE_LOG_RATE(error, 1) << "dns: a TCP connection failed: " << e.what();
  }
  boost::system::error_code ec;
  sock.close(ec);
}

asio::awaitable<void> accept_loop(std::shared_ptr<State> st) {
  auto guard = live_guard(*st);
  for (;;) {
    tcp::socket sock(st->strand);
    auto [ec] = co_await st->acceptor->async_accept(sock, kTuple);
    if (st->closed || ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor) co_return;
    if (ec) {
      // EMFILE and the like: pause a little rather than spin.
      asio::steady_timer t(st->strand);
      t.expires_after(std::chrono::milliseconds(50));
      co_await t.async_wait(kTuple);
      continue;
    }
    boost::system::error_code pec;
    auto peer = sock.remote_endpoint(pec);
    if (pec) continue;
    uint32_t source = v4_of(peer.address());
    size_t& mine = st->tcp_by_source[source];
    if (st->tcp_conns >= st->opts.max_tcp_connections || mine >= st->opts.max_tcp_per_source) {
      if (mine == 0) st->tcp_by_source.erase(source);
      st->n.tcp_rejected++;
      sock.close(pec);
      continue;
    }
    ++mine;
    ++st->tcp_conns;
    asio::co_spawn(st->strand, tcp_conn(st, std::move(sock), source), asio::detached);
  }
}

}  // namespace

DnsVerdict judge_dns_query(std::span<const uint8_t> msg, const DnsPolicy* policy) {
  Counts n;
  // A non-owning pointer in the shape the lookup gives.
  std::shared_ptr<const DnsPolicy> p(std::shared_ptr<const DnsPolicy>{}, policy);
  Decision d = decide(n, 0, [&] { return std::optional{p}; }, msg);
  DnsVerdict v;
  if (auto* a = std::get_if<Bytes>(&d)) {
    v.action = DnsVerdict::Action::kAnswer;
    v.answer = std::move(*a);
  } else if (auto* q = std::get_if<Query>(&d)) {
    v.action = DnsVerdict::Action::kForward;
    v.matched = q->matched;
    v.upstream_query = upstream_query(q->pkt.get(), 0).value_or(Bytes{});
  }
  return v;
}

std::optional<std::vector<std::pair<uint32_t, uint32_t>>> check_upstream_answer(std::span<const uint8_t> query,
                                                                                std::span<const uint8_t> answer) {
  ldns_pkt* raw = nullptr;
  if (query.size() < kHeaderSize || ldns_wire2pkt(&raw, query.data(), query.size()) != LDNS_STATUS_OK) {
    ldns_pkt_free(raw);
    return std::nullopt;
  }
  Pkt q(raw);
  const ldns_rr* question = question_of(q.get());
  if (!question) return std::nullopt;
  Pkt a = matching_answer(answer, get16(query, 0), question);
  if (!a) return std::nullopt;
  return a_records_of(a.get());
}

Resolver::Resolver(asio::any_io_executor ex, uint32_t listen_addr, uint16_t port,
                   std::vector<asio::ip::udp::endpoint> upstreams, PolicyOf policy_of, OnAllowed on_allowed,
                   ResolverOptions opts)
    : state_(std::make_shared<State>(std::move(ex), listen_addr, port, std::move(upstreams), std::move(policy_of),
                                     std::move(on_allowed), opts)) {}

Resolver::~Resolver() { stop(); }

Status Resolver::start() {
  auto& st = *state_;
  {
    std::lock_guard lock(st.cb_mu);
    if (st.stopped) return make_error(ErrorCode::kFailedPrecondition, "dns resolver: stopped");
  }
  if (st.udp_sock) return make_error(ErrorCode::kFailedPrecondition, "dns resolver: already started");
  if (st.upstreams.empty()) return make_error(ErrorCode::kInvalidArgument, "dns resolver: no upstream servers");
  auto addr = asio::ip::address_v4(st.listen_addr);
  std::string where = addr.to_string() + ":" + std::to_string(st.port);
  // With port 0 the UDP port is picked first and TCP must get the same one;
  // another program may hold it on TCP, so try a few.
  boost::system::error_code ec;
  for (int attempt = 0; attempt < 16; ++attempt) {
    udp::socket u(st.strand);
    tcp::acceptor a(st.strand);
    ec = {};
    u.open(udp::v4(), ec);
    if (!ec) u.bind(udp::endpoint(addr, st.port), ec);
    if (ec) break;
    uint16_t bound = u.local_endpoint(ec).port();
    if (!ec) a.open(tcp::v4(), ec);
    if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) a.bind(tcp::endpoint(addr, bound), ec);
    if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
    if (!ec) u.non_blocking(true, ec);
    if (!ec) {
      // Room for a burst of queries from many sandboxes (the kernel caps it
      // at net.core.rmem_max); what does not fit is lost, as UDP is.
      boost::system::error_code ignore;
      u.set_option(asio::socket_base::receive_buffer_size(1 << 20), ignore);
    }
    if (ec) {
      if (st.port == 0 && ec == asio::error::address_in_use) continue;
      break;
    }
    st.udp_sock.emplace(std::move(u));
    st.acceptor.emplace(std::move(a));
    port_ = bound;
    asio::co_spawn(st.strand, udp_loop(state_), asio::detached);
    asio::co_spawn(st.strand, accept_loop(state_), asio::detached);
    COPPICE_LOG(info) << "dns: serving on " << addr.to_string() << ":" << bound << " (udp, tcp)";
    return ok();
  }
  return make_error(ErrorCode::kUnavailable, "dns resolver: listen on " + where + ": " + ec.message(), ec.value());
}

void Resolver::stop() {
  auto st = state_;
  {
    std::lock_guard lock(st->cb_mu);
    if (st->stopped) return;
    st->stopped = true;
    // Whatever the callbacks hold (the glue's tables, the firewall) is let go now.
    st->policy_of = nullptr;
    st->on_allowed = nullptr;
  }
  if (st->strand.running_in_this_thread()) {
    st->close_all();
  } else {
    asio::post(st->strand, [st] { st->close_all(); });
  }
}

ResolverCounters Resolver::counters() const {
  const auto& n = state_->n;
  ResolverCounters c;
  c.queries = n.queries;
  c.refused = n.refused;
  c.dropped = n.dropped;
  c.malformed = n.malformed;
  c.forwarded = n.forwarded;
  c.upstream_failures = n.upstream_failures;
  c.overloaded = n.overloaded;
  c.tcp_rejected = n.tcp_rejected;
  return c;
}

size_t Resolver::live_coroutines() const { return state_->live.load(); }

}  // namespace coppice::net
