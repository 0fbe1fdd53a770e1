// Small string helpers shared by the gateway and envd.
#pragma once

#include <string_view>

namespace coppice {

// Compares two secrets in time that does not depend on where they differ
// (only on their lengths), so a token cannot be guessed byte by byte.
inline bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char d = 0;
  for (size_t i = 0; i < a.size(); ++i) d |= static_cast<unsigned char>(a[i] ^ b[i]);
  return d == 0;
}

}  // namespace coppice
