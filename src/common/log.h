// Levelled logging to stderr, one line per message, cheap when filtered out.
//
//   COPPICE_LOG(info) << "listening on " << addr;
//   COPPICE_LOG(warn).sandbox(id) << "refill failed: " << err.to_string();
//
// Lines carry a UTC timestamp, the level and, when given, the sandbox id.
// A rate limiter keyed by call site keeps sandbox-triggered messages bounded.
#pragma once

#include <atomic>
#include <sstream>
#include <string_view>

namespace coppice::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3, off = 4 };

void set_level(Level level);
Level level();
bool parse_level(std::string_view s, Level* out);

class Line {
 public:
  Line(Level level, const char* file, int line);
  ~Line();
  Line& sandbox(std::string_view id);
  template <typename T>
  Line& operator<<(const T& v) {
    os_ << v;
    return *this;
  }

 private:
  Level level_;
  std::ostringstream os_;
};

// Allows at most `per_second` messages a second from one call site.
class RateLimit {
 public:
  explicit RateLimit(int per_second) : per_second_(per_second) {}
  bool allow();

 private:
  int per_second_;
  std::atomic<long> window_{0};
  std::atomic<int> count_{0};
};

}  // namespace coppice::log

#define COPPICE_LOG(lvl)                                                       \
  if (::coppice::log::Level::lvl < ::coppice::log::level()) {                 \
  } else                                                                       \
    ::coppice::log::Line(::coppice::log::Level::lvl, __FILE__, __LINE__)

// Logs at most n lines a second from this call site.
#define COPPICE_LOG_RATE(lvl, n)                                               \
  if (static ::coppice::log::RateLimit coppice_rl_(n);                         \
      ::coppice::log::Level::lvl < ::coppice::log::level() || !coppice_rl_.allow()) { \
  } else                                                                       \
    ::coppice::log::Line(::coppice::log::Level::lvl, __FILE__, __LINE__)
