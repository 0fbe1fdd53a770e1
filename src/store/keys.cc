#include "store/keys.h"

#include <sys/random.h>

#include <cerrno>

#include "common/sha256.h"

namespace coppice::store {

Result<std::string> random_bytes(size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::getrandom(out.data() + got, n - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno_error("getrandom");
    }
    got += static_cast<size_t>(r);
  }
  return out;
}

Result<std::string> generate_api_key() {
  auto bytes = random_bytes(20);
  if (!bytes) return std::unexpected(std::move(bytes.error()).context("generate api key"));
  return "e2b_" + to_hex(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size());
}

bool looks_like_api_key(std::string_view key) {
  if (key.size() != 44 || !key.starts_with("e2b_")) return false;
  for (char c : key.substr(4)) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string sha256_hex(std::string_view s) { return coppice::sha256_hex(s); }

}  // namespace coppice::store
