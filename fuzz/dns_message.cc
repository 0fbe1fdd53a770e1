// The DNS forwarder's handling of untrusted bytes (net/resolver.h): a
// message from a sandbox under one of three policies, or an upstream's
// answer to a fixed query. The first input byte picks which. A query gets
// an answer (at least a header, carrying the query's id, QR set), a drop,
// or a forward of a freshly built query with one question; an answer is
// either refused or yields A records. Never a crash, a leak or a hang.
#include <stdbool.h>  // before ldns, whose common.h would otherwise define bool as a macro

#include <ldns/ldns.h>

#include <vector>

#include "fuzz_check.h"
#include "net/resolver.h"

using namespace coppice;

namespace {

// www.example.com IN A, id 0x1234, as the resolver sends it upstream.
const std::vector<uint8_t> kQuery = {0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                     3,    'w',  'w',  'w',  7,    'e',  'x',  'a',  'm',  'p',  'l',  'e',
                                     3,    'c',  'o',  'm',  0,    0x00, 0x01, 0x00, 0x01};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  uint8_t mode = in.byte();
  auto rest = in.rest();
  std::span<const uint8_t> msg(reinterpret_cast<const uint8_t*>(rest.data()), rest.size());

  if (mode & 0x80) {
    auto records = net::check_upstream_answer(kQuery, msg);
    if (records) FUZZ_CHECK(msg.size() >= 12 && msg[0] == 0x12 && msg[1] == 0x34, "accepted a foreign answer");
    return 0;
  }
  net::DnsPolicy deny;
  deny.default_deny = true;
  deny.domains = {"example.com", "*.example.org", "*.", "", "bad..name"};
  net::DnsPolicy open;
  open.domains = {"*.com"};
  const net::DnsPolicy* policies[] = {nullptr, &deny, &open};
  auto v = net::judge_dns_query(msg, policies[mode % 3]);
  switch (v.action) {
    case net::DnsVerdict::Action::kDrop:
      break;
    case net::DnsVerdict::Action::kAnswer:
      FUZZ_CHECK(v.answer.size() >= 12, "answer shorter than a header");
      FUZZ_CHECK(v.answer[0] == msg[0] && v.answer[1] == msg[1], "answer with another id");
      FUZZ_CHECK((v.answer[2] & 0x80) != 0, "answer without QR");
      FUZZ_CHECK((v.answer[3] & 0x0f) != 0, "made-up answer with NOERROR");
      break;
    case net::DnsVerdict::Action::kForward: {
      FUZZ_CHECK(policies[mode % 3] != nullptr, "forwarded for an unknown source");
      FUZZ_CHECK(v.upstream_query.size() >= 12, "upstream query shorter than a header");
      ldns_pkt* p = nullptr;
      FUZZ_CHECK(ldns_wire2pkt(&p, v.upstream_query.data(), v.upstream_query.size()) == LDNS_STATUS_OK,
                 "upstream query does not parse");
      FUZZ_CHECK(ldns_pkt_qdcount(p) == 1 && ldns_pkt_ancount(p) == 0 && ldns_pkt_nscount(p) == 0,
                 "upstream query is not one question");
      ldns_pkt_free(p);
      break;
    }
  }
  return 0;
}
