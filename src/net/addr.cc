#include "net/addr.h"

#include <charconv>

namespace coppice::net {

namespace {
// The entry as the error shows it: at most 64 characters, control
// characters as '?'.
std::string shown(std::string_view s) {
  std::string q = "\"";
  for (char c : s.substr(0, 64)) q += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
  if (s.size() > 64) q += "...";
  return q + "\"";
}
}  // namespace

Result<uint32_t> parse_ipv4(std::string_view s) {
  auto bad = [&] { return make_error(ErrorCode::kInvalidArgument, shown(s) + " is not an IPv4 address"); };
  uint32_t out = 0;
  size_t pos = 0;
  for (int part = 0; part < 4; ++part) {
    if (part > 0) {
      if (pos >= s.size() || s[pos] != '.') return bad();
      ++pos;
    }
    size_t start = pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9' && pos - start < 4) ++pos;
    size_t len = pos - start;
    if (len == 0 || len > 3 || (len > 1 && s[start] == '0')) return bad();
    unsigned v = 0;
    std::from_chars(s.data() + start, s.data() + pos, v);
    if (v > 255) return bad();
    out = (out << 8) | v;
  }
  if (pos != s.size()) return bad();
  return out;
}

Result<Cidr4> parse_cidr4(std::string_view s) {
  auto slash = s.find('/');
  auto addr = parse_ipv4(s.substr(0, slash));
  if (!addr) {
    return make_error(ErrorCode::kInvalidArgument, shown(s) + " is not an IPv4 address or CIDR block");
  }
  Cidr4 c;
  if (slash != std::string_view::npos) {
    auto p = s.substr(slash + 1);
    int prefix = -1;
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), prefix);
    if (p.empty() || p.size() > 2 || ec != std::errc() || end != p.data() + p.size() || prefix < 0 || prefix > 32 ||
        (p.size() > 1 && p[0] == '0')) {
      return make_error(ErrorCode::kInvalidArgument, shown(s) + " has a bad prefix length (0 to 32 after the '/')");
    }
    c.prefix = prefix;
  }
  c.addr = *addr & c.mask();
  return c;
}

std::string ipv4_string(uint32_t a) {
  return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 255) + "." + std::to_string((a >> 8) & 255) +
         "." + std::to_string(a & 255);
}

std::string to_string(const Cidr4& c) { return ipv4_string(c.addr) + "/" + std::to_string(c.prefix); }

}  // namespace coppice::net
