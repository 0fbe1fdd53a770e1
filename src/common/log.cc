#include "common/log.h"

#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <string>

namespace coppice::log {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::info)};
const char* level_name(Level l) {
  switch (l) {
    case Level::debug: return "DEBUG";
    case Level::info: return "INFO";
    case Level::warn: return "WARN";
    case Level::error: return "ERROR";
    default: return "";
  }
}
}  // namespace

void set_level(Level level) { g_level.store(static_cast<int>(level)); }
Level level() { return static_cast<Level>(g_level.load(std::memory_order_relaxed)); }

bool parse_level(std::string_view s, Level* out) {
  if (s == "debug") *out = Level::debug;
  else if (s == "info") *out = Level::info;
  else if (s == "warn") *out = Level::warn;
  else if (s == "error") *out = Level::error;
  else if (s == "off") *out = Level::off;
  else return false;
  return true;
}

Line::Line(Level level, const char* /*file*/, int /*line*/) : level_(level) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char buf[64];
  size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, sizeof buf - n, ".%03ldZ", ts.tv_nsec / 1000000);
  os_ << buf << ' ' << level_name(level_) << ' ';
}

Line& Line::sandbox(std::string_view id) {
  os_ << "sandbox=" << id << ' ';
  return *this;
}

Line::~Line() {
  os_ << '\n';
  std::string s = os_.str();
  // One write(2) per line so concurrent writers do not interleave.
  ssize_t off = 0;
  while (off < static_cast<ssize_t>(s.size())) {
    ssize_t w = ::write(STDERR_FILENO, s.data() + off, s.size() - off);
    if (w <= 0) break;
    off += w;
  }
}

bool RateLimit::allow() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  long now = ts.tv_sec;
  if (window_.exchange(now) != now) count_.store(0);
  return count_.fetch_add(1) < per_second_;
}

}  // namespace coppice::log
