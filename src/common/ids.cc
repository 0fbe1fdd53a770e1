#include "common/ids.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <string_view>

namespace coppice {
namespace {
void fill_random(void* buf, size_t n) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    ssize_t r = ::getrandom(p, n, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      std::abort();  // the kernel's CSPRNG is unavailable: nothing safe to do
    }
    p += r;
    n -= static_cast<size_t>(r);
  }
}
}  // namespace

std::string new_sandbox_id() {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string id;
  while (id.size() < kSandboxIdLength) {
    uint8_t b[32];
    fill_random(b, sizeof b);
    for (uint8_t x : b) {
      if (x >= 252) continue;  // 252 = 7 * 36: keeps the choice uniform
      id.push_back(kAlphabet[x % 36]);
      if (id.size() == kSandboxIdLength) break;
    }
  }
  return id;
}

std::string new_token(size_t bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string raw(bytes, '\0');
  fill_random(raw.data(), raw.size());
  std::string out;
  for (unsigned char c : raw) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

bool valid_sandbox_id(std::string_view id) {
  if (id.size() != kSandboxIdLength) return false;
  for (char c : id)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
  return true;
}

}  // namespace coppice
