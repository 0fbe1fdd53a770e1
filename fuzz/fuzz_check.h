// What the fuzz targets share: a check that stops the run with a message
// (libFuzzer then saves the input as a crash reproducer) and a reader that
// takes bytes off the front of an input to steer a target.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#define FUZZ_CHECK(cond, what)                                                            \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "%s:%d: check failed: %s (%s)\n", __FILE__, __LINE__, #cond, what); \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)

namespace coppice::fuzz {

class Input {
 public:
  Input(const uint8_t* data, size_t size) : rest_(reinterpret_cast<const char*>(data), size) {}
  // One byte off the front, 0 when none is left.
  uint8_t byte() {
    if (rest_.empty()) return 0;
    uint8_t b = static_cast<uint8_t>(rest_.front());
    rest_.remove_prefix(1);
    return b;
  }
  // Up to n bytes off the front.
  std::string_view take(size_t n) {
    auto s = rest_.substr(0, n);
    rest_.remove_prefix(s.size());
    return s;
  }
  std::string_view rest() const { return rest_; }

 private:
  std::string_view rest_;
};

}  // namespace coppice::fuzz
