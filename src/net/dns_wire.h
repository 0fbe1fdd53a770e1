// DNS messages for the sandboxes' forwarder (resolver.h): the few header
// fields read straight from the bytes, and everything else through ldns
// (parse and build). All of it handles bytes a sandbox or an upstream sent:
// the raw accessors below need a size checked by the caller (at least
// kHeaderSize); the rest checks its own bounds.
#pragma once

#include <stdbool.h>  // before ldns, whose common.h would otherwise define bool as a macro

#include <ldns/ldns.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace coppice::net::dns_wire {

using Bytes = std::vector<uint8_t>;
using ByteView = std::span<const uint8_t>;

inline constexpr size_t kHeaderSize = 12;
inline constexpr size_t kMaxMessage = 65535;

struct PktFree {
  void operator()(ldns_pkt* p) const { ldns_pkt_free(p); }
};
using Pkt = std::unique_ptr<ldns_pkt, PktFree>;

// --- the raw header (callers check m.size() >= kHeaderSize first) ---
inline uint16_t get16(ByteView b, size_t off) { return static_cast<uint16_t>(b[off] << 8 | b[off + 1]); }
inline bool is_response(ByteView m) { return (m[2] & 0x80) != 0; }
inline unsigned opcode_of(ByteView m) { return (m[2] >> 3) & 0x0f; }
inline uint16_t qdcount_of(ByteView m) { return get16(m, 4); }

// An answer of only a header: the query's id, opcode and RD, QR and RA set,
// `rcode`, every count 0. For queries that could not be parsed.
Bytes header_answer(ByteView q, uint8_t rcode);
// A packet in wire format; nullopt when ldns cannot write it.
std::optional<Bytes> to_wire(const ldns_pkt* p);
// The one question of a message, or null when it has not exactly one.
const ldns_rr* question_of(const ldns_pkt* p);
// An answer with the query's question and `rcode`, no records (a header
// answer when that cannot be built).
Bytes question_answer(ByteView raw, const ldns_pkt* q, uint8_t rcode);

// The labels of an uncompressed wire-format name, lower-cased (ASCII);
// nullopt when the bytes are not exactly one well-formed name.
std::optional<std::vector<std::string>> wire_labels(const uint8_t* d, size_t n);
// The labels of a name written as text ("a.b.c", a trailing dot dropped),
// lower-cased; nullopt for an empty or over-long label. No escapes: domain
// entries are host names.
std::optional<std::vector<std::string>> text_labels(std::string_view s);
// `name` (labels) matches the entry `pattern` ("x.y" exactly, "*.x.y"
// strictly below), label by label.
bool labels_match(const std::vector<std::string>& name, std::string_view pattern);

// The query sent upstream for a client's: its question, RD and CD, its
// EDNS buffer size and DO bit, under `id`; nothing else of the client's.
std::optional<Bytes> upstream_query(const ldns_pkt* client, uint16_t id);
// The answer parsed, when it answers the query with `id` and `question`
// (QR set, exactly that question, the name compared case-insensitively).
Pkt matching_answer(ByteView a, uint16_t id, const ldns_rr* question);
// The A records (class IN) of the answer section, CNAME chain included:
// (address in host order, TTL as received).
std::vector<std::pair<uint32_t, uint32_t>> a_records_of(const ldns_pkt* p);

}  // namespace coppice::net::dns_wire
