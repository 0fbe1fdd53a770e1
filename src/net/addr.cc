#include "net/addr.h"

#include <charconv>

namespace coppice::net {

namespace {

// A decimal number 0..max without sign, leading zeros or spaces.
bool parse_decimal(std::string_view s, unsigned max, unsigned* out) {
  if (s.empty() || s.size() > 3) return false;
  if (s.size() > 1 && s[0] == '0') return false;
  unsigned v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v > max) return false;
  *out = v;
  return true;
}

std::string quoted(std::string_view text) {
  // The entry is user input: show at most 64 bytes of it, printable only.
  std::string out = "\"";
  for (size_t i = 0; i < text.size() && i < 64; ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  if (text.size() > 64) out += "...";
  return out + "\"";
}

}  // namespace

Result<uint32_t> parse_ipv4(std::string_view text) {
  uint32_t addr = 0;
  std::string_view rest = text;
  for (int i = 0; i < 4; ++i) {
    size_t dot = rest.find('.');
    std::string_view part = i < 3 ? rest.substr(0, dot) : rest;
    if (i < 3 && dot == std::string_view::npos) part = {};
    unsigned v = 0;
    if (!parse_decimal(part, 255, &v)) {
      return make_error(ErrorCode::kInvalidArgument, "not an IPv4 address: " + quoted(text));
    }
    addr = (addr << 8) | v;
    if (i < 3) rest.remove_prefix(dot + 1);
  }
  return addr;
}

Result<Cidr4> parse_cidr4(std::string_view text) {
  std::string_view ip = text;
  int prefix = 32;
  if (size_t slash = text.find('/'); slash != std::string_view::npos) {
    ip = text.substr(0, slash);
    unsigned v = 0;
    if (!parse_decimal(text.substr(slash + 1), 32, &v)) {
      return make_error(ErrorCode::kInvalidArgument,
                        "not an IPv4 CIDR (prefix must be 0..32): " + quoted(text));
    }
    prefix = static_cast<int>(v);
  }
  auto addr = parse_ipv4(ip);
  if (!addr) return make_error(ErrorCode::kInvalidArgument, "not an IPv4 address or CIDR: " + quoted(text));
  return Cidr4{*addr & prefix_mask(prefix), prefix};
}

std::string ipv4_to_string(uint32_t addr) {
  std::string out;
  out.reserve(15);
  for (int shift = 24; shift >= 0; shift -= 8) {
    char buf[4];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, (addr >> shift) & 0xff);
    out.append(buf, end);
    if (shift) out += '.';
  }
  return out;
}

std::string to_string(Cidr4 c) { return ipv4_to_string(c.addr) + "/" + std::to_string(c.prefix); }

}  // namespace coppice::net
