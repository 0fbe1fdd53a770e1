// The sandboxes' DNS forwarder. It listens on UDP and TCP at one address
// (in production the bridge's, port 53) in the host's network namespace,
// decides each query by the policy of the address it came from, forwards
// the allowed ones to the upstream resolvers and, for a name that matched
// one of the sandbox's allowed domains, reports every A record of the
// answer (OnAllowed) before the sandbox sees the answer, so the firewall
// can open exactly those addresses for it.
//
// Per query, in order:
//   - shorter than a DNS header, or a response (QR set): dropped.
//   - PolicyOf(source) is null: REFUSED, whatever the message holds.
//     policy.allowed == false: dropped (a sandbox without internet gets no
//     DNS at all).
//   - opcode other than QUERY: NOTIMP.  Not exactly one question, answer or
//     authority records, more than two additional records (OPT, TSIG), or
//     not parseable: FORMERR.  Class other than IN, or a zone transfer
//     (AXFR/IXFR): REFUSED.
//   - the name is matched against policy.domains: "example.com" matches that
//     name only, "*.example.com" any name strictly below example.com (not
//     example.com itself); label by label, ASCII case-insensitive, no
//     trailing dot. default_deny and no match: REFUSED.
//   - over the bound of outstanding upstream queries (in total or for this
//     source): SERVFAIL.
//   - forwarded to each upstream in turn, each with its own timeout, from a
//     fresh socket (a kernel-chosen random source port) with a fresh random
//     16-bit id; only an answer from that upstream's address and port with
//     that id and the same question counts. No upstream answers: SERVFAIL.
//     A UDP query is forwarded over UDP and a truncated (TC) answer passes
//     through as it is (the client retries over TCP); a TCP query is
//     forwarded over TCP.
//   - the answer goes back with the client's id, byte for byte otherwise.
//
// Threading: every coroutine of a Resolver runs on one strand of the
// executor it was given; PolicyOf and OnAllowed are called on that strand,
// one at a time, and must not block for long (OnAllowed is an nftables
// element add, ~0.2 ms). The counters may be read from any thread.
//
// Untrusted input: everything a sandbox sends. The raw bytes are only ever
// read through bounds-checked views (header fields) and ldns's parser; the
// name is matched on its decoded labels, so a label holding a dot
// ("a\.example.com") is not taken for two labels.
#pragma once

#include <boost/asio.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace coppice::net {

namespace asio = boost::asio;

// What one sandbox (one source address) may resolve.
struct DnsPolicy {
  // false: the sandbox has no internet; its queries get no answer at all.
  bool allowed = true;
  // true (denyOut covers 0.0.0.0/0): names that match no entry of
  // `domains` are REFUSED.
  bool default_deny = false;
  // Allowed domains: "example.com" (exactly that name) or "*.example.com"
  // (any name strictly below it). Case-insensitive, no trailing dot.
  std::vector<std::string> domains;
};

// True when `name` (presentation form, a trailing dot ignored) matches the
// domain entry `pattern` by the rules above. Exposed for tests and for the
// glue's validation of entries.
bool dns_name_matches(std::string_view name, std::string_view pattern);

// The resolver's verdict on one message from a sandbox whose policy is
// `policy` (null: an unknown source), with no sockets and no upstream: for
// tests and the fuzz target.
struct DnsVerdict {
  enum class Action { kDrop, kAnswer, kForward };
  Action action = Action::kDrop;
  std::vector<uint8_t> answer;          // kAnswer: the bytes sent back
  std::vector<uint8_t> upstream_query;  // kForward: what goes upstream (id 0 here, random in service)
  bool matched = false;                 // kForward: the name matched an allowed domain
};
DnsVerdict judge_dns_query(std::span<const uint8_t> msg, const DnsPolicy* policy);

// Whether `answer` answers `query` (as sent upstream: the same id, QR, the
// same question) and, if so, its A records as (address in host order, TTL):
// what OnAllowed would get. For tests and the fuzz target.
std::optional<std::vector<std::pair<uint32_t, uint32_t>>> check_upstream_answer(std::span<const uint8_t> query,
                                                                                std::span<const uint8_t> answer);

struct ResolverOptions {
  // Time one upstream has to answer before the next one is asked. Default 2 s.
  std::chrono::milliseconds upstream_timeout{2000};
  // Queries forwarded and not yet answered, in total and per source; more
  // get SERVFAIL at once. Defaults 256 and 32.
  size_t max_outstanding = 256;
  size_t max_outstanding_per_source = 32;
  // TCP connections held at once, in total and per source; a connection over
  // either bound is closed at once. Defaults 64 and 8.
  size_t max_tcp_connections = 64;
  size_t max_tcp_per_source = 8;
  // A TCP connection is closed when no whole query arrives within this long
  // (from the accept, or from the previous answer): idle clients and ones
  // that trickle a query in, or announce more bytes than they send, are
  // closed. Default 10 s.
  std::chrono::milliseconds tcp_idle_timeout{10000};
};

// Monotonic counts since start(), for metrics.
struct ResolverCounters {
  uint64_t queries = 0;            // every message received that looked like a query
  uint64_t refused = 0;            // answered REFUSED (no policy, denied name, class, transfer)
  uint64_t dropped = 0;            // no answer at all (policy.allowed false, not a query)
  uint64_t malformed = 0;          // answered FORMERR/NOTIMP, or dropped as too short
  uint64_t forwarded = 0;          // sent upstream (once per client query)
  uint64_t upstream_failures = 0;  // answered SERVFAIL: no upstream answered in time
  uint64_t overloaded = 0;         // answered SERVFAIL: over the outstanding bounds
  uint64_t tcp_rejected = 0;       // TCP connections closed at once for the bounds
};

class Resolver {
 public:
  // The policy for a source address (host byte order); null: REFUSED.
  using PolicyOf = std::function<std::shared_ptr<const DnsPolicy>(uint32_t source)>;
  // One A record of an answer to an allowed-domain query: the sandbox, the
  // address (both host byte order) and the record's TTL as received (the
  // callee clamps it). Called before the answer is sent to the sandbox.
  using OnAllowed = std::function<void(uint32_t source, uint32_t ip, uint32_t ttl_s)>;

  // listen_addr in host byte order; port 0 picks a free one (the same for
  // UDP and TCP).
  Resolver(asio::any_io_executor ex, uint32_t listen_addr, uint16_t port,
           std::vector<asio::ip::udp::endpoint> upstreams, PolicyOf policy_of, OnAllowed on_allowed,
           ResolverOptions opts = {});
  ~Resolver();  // stop()s
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // Binds UDP and TCP and starts serving. Fails (kUnavailable with the
  // errno) when either cannot be bound, leaving nothing open; kInvalidArgument
  // with no upstreams; kFailedPrecondition when already started or stopped.
  Status start();
  // The port bound (useful with port 0); 0 before start().
  uint16_t port() const { return port_; }
  // Stops serving. Once it returns, PolicyOf and OnAllowed are never called
  // again and none is running (if one is running on another thread, stop()
  // waits for it to return; so neither may call stop()). Every socket and
  // timer is closed on the resolver's strand: at once when stop() is called
  // on that strand, otherwise posted to it (done as soon as the executor
  // runs it; a test waits for live_coroutines() to reach 0). Coroutines
  // still winding down then touch only state they share-own, never this
  // object, which may be destroyed right away. Idempotent.
  void stop();

  ResolverCounters counters() const;
  // Coroutines of this resolver still alive (listeners, connections,
  // forwards), for tests that check a stop winds everything down.
  size_t live_coroutines() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
  uint16_t port_ = 0;
};

}  // namespace coppice::net
