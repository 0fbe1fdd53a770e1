#include "net/dns_wire.h"

#include <algorithm>
#include <cstdlib>

#include "net/resolver.h"  // dns_name_matches

namespace coppice::net {
namespace dns_wire {

// An answer of only a header: the query's id, opcode and RD, QR set and
// `rcode`, every count 0. For queries that could not be parsed.
Bytes header_answer(ByteView q, uint8_t rcode) {
  Bytes a(kHeaderSize, 0);
  a[0] = q[0];
  a[1] = q[1];
  a[2] = static_cast<uint8_t>(0x80 | (q[2] & 0x79));  // QR, opcode, RD
  a[3] = static_cast<uint8_t>(0x80 | (rcode & 0x0f));  // RA
  return a;
}

std::optional<Bytes> to_wire(const ldns_pkt* p) {
  uint8_t* wire = nullptr;
  size_t n = 0;
  if (ldns_pkt2wire(&wire, p, &n) != LDNS_STATUS_OK || wire == nullptr) {
    free(wire);
    return std::nullopt;
  }
  Bytes out(wire, wire + n);
  free(wire);
  return out;
}

const ldns_rr* question_of(const ldns_pkt* p) {
  if (ldns_pkt_qdcount(p) != 1) return nullptr;
  return ldns_rr_list_rr(ldns_pkt_question(p), 0);
}

// An answer with the query's question and `rcode`, no records.
Bytes question_answer(ByteView raw, const ldns_pkt* q, uint8_t rcode) {
  const ldns_rr* question = question_of(q);
  Pkt a(ldns_pkt_new());
  if (!a || !question) return header_answer(raw, rcode);
  ldns_pkt_set_id(a.get(), ldns_pkt_id(q));
  ldns_pkt_set_qr(a.get(), true);
  ldns_pkt_set_opcode(a.get(), LDNS_PACKET_QUERY);
  ldns_pkt_set_rd(a.get(), ldns_pkt_rd(q));
  ldns_pkt_set_ra(a.get(), true);
  ldns_pkt_set_rcode(a.get(), rcode);
  ldns_pkt_push_rr(a.get(), LDNS_SECTION_QUESTION, ldns_rr_clone(question));
  auto wire = to_wire(a.get());
  return wire ? std::move(*wire) : header_answer(raw, rcode);
}

// The labels of an uncompressed wire-format name, lower-cased (ASCII);
// nullopt when the bytes are not exactly one well-formed name.
std::optional<std::vector<std::string>> wire_labels(const uint8_t* d, size_t n) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < n) {
    size_t len = d[i];
    if (len == 0) {
      if (i + 1 != n) return std::nullopt;
      return out;
    }
    if (len > 63 || i + 1 + len > n) return std::nullopt;
    std::string label(reinterpret_cast<const char*>(d + i + 1), len);
    for (char& c : label) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    out.push_back(std::move(label));
    i += 1 + len;
  }
  return std::nullopt;
}

// The labels of a domain written as text ("a.b.c", a trailing dot
// dropped), lower-cased; nullopt for an empty label.
std::optional<std::vector<std::string>> text_labels(std::string_view s) {
  if (!s.empty() && s.back() == '.') s.remove_suffix(1);
  std::vector<std::string> out;
  if (s.empty()) return out;  // the root
  size_t start = 0;
  for (;;) {
    size_t dot = s.find('.', start);
    std::string label(s.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
    if (label.empty() || label.size() > 63) return std::nullopt;
    for (char& c : label) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    out.push_back(std::move(label));
    if (dot == std::string_view::npos) return out;
    start = dot + 1;
  }
}

bool labels_match(const std::vector<std::string>& name, std::string_view pattern) {
  bool wildcard = pattern.starts_with("*.");
  if (wildcard) pattern.remove_prefix(2);
  auto want = text_labels(pattern);
  if (!want || want->empty()) return false;
  if (wildcard ? name.size() <= want->size() : name.size() != want->size()) return false;
  return std::equal(want->begin(), want->end(), name.end() - static_cast<std::ptrdiff_t>(want->size()));
}

// The query sent upstream: the client's question, RD and CD, and its EDNS
// buffer size and DO bit, under a new id. Built fresh, so nothing else the
// client put in its message reaches the upstream.
std::optional<Bytes> upstream_query(const ldns_pkt* client, uint16_t id) {
  const ldns_rr* question = question_of(client);
  Pkt q(ldns_pkt_new());
  if (!q || !question) return std::nullopt;
  ldns_pkt_set_id(q.get(), id);
  ldns_pkt_set_opcode(q.get(), LDNS_PACKET_QUERY);
  ldns_pkt_set_rd(q.get(), ldns_pkt_rd(client));
  ldns_pkt_set_cd(q.get(), ldns_pkt_cd(client));
  ldns_pkt_push_rr(q.get(), LDNS_SECTION_QUESTION, ldns_rr_clone(question));
  if (ldns_pkt_edns(client)) {
    ldns_pkt_set_edns_udp_size(q.get(), std::max<uint16_t>(512, ldns_pkt_edns_udp_size(client)));
    ldns_pkt_set_edns_do(q.get(), ldns_pkt_edns_do(client));
  }
  return to_wire(q.get());
}

// The upstream's answer parsed, when it answers our query: id, QR, exactly
// our question (the name compared case-insensitively).
Pkt matching_answer(ByteView a, uint16_t id, const ldns_rr* question) {
  if (a.size() < kHeaderSize || get16(a, 0) != id || !is_response(a) || qdcount_of(a) != 1) return nullptr;
  ldns_pkt* raw = nullptr;
  if (ldns_wire2pkt(&raw, a.data(), a.size()) != LDNS_STATUS_OK) {
    ldns_pkt_free(raw);
    return nullptr;
  }
  Pkt p(raw);
  const ldns_rr* q = question_of(p.get());
  if (!q || ldns_rr_get_type(q) != ldns_rr_get_type(question) ||
      ldns_rr_get_class(q) != ldns_rr_get_class(question) ||
      ldns_dname_compare(ldns_rr_owner(q), ldns_rr_owner(question)) != 0) {
    return nullptr;
  }
  return p;
}

// The A records (class IN) of an answer's answer section, CNAME chain
// included: (address in host order, TTL as received).
std::vector<std::pair<uint32_t, uint32_t>> a_records_of(const ldns_pkt* p) {
  std::vector<std::pair<uint32_t, uint32_t>> out;
  const ldns_rr_list* an = ldns_pkt_answer(p);
  for (size_t i = 0; an && i < ldns_rr_list_rr_count(an); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(an, i);
    if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_A || ldns_rr_get_class(rr) != LDNS_RR_CLASS_IN ||
        ldns_rr_rd_count(rr) < 1) {
      continue;
    }
    const ldns_rdf* rd = ldns_rr_rdf(rr, 0);
    if (!rd || ldns_rdf_size(rd) != 4) continue;
    const uint8_t* ip = ldns_rdf_data(rd);
    out.emplace_back(uint32_t{ip[0]} << 24 | uint32_t{ip[1]} << 16 | uint32_t{ip[2]} << 8 | ip[3], ldns_rr_ttl(rr));
  }
  return out;
}

}  // namespace dns_wire

bool dns_name_matches(std::string_view name, std::string_view pattern) {
  auto labels = dns_wire::text_labels(name);
  return labels && dns_wire::labels_match(*labels, pattern);
}

}  // namespace coppice::net
