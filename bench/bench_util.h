// Shared by the benchmark programs: summaries and the BenchmarkRun JSON shape
// ({config, host, metric, concurrency, samples, summary, command, runAt}).
#pragma once

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace coppice::bench {

using json = nlohmann::json;

inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  double idx = p / 100.0 * static_cast<double>(v.size() - 1);
  size_t lo = static_cast<size_t>(idx);
  size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (idx - static_cast<double>(lo));
}

inline json summary(const std::vector<double>& ms, size_t failures = 0) {
  double sum = 0;
  for (double x : ms) sum += x;
  return json{{"count", ms.size()},
              {"failures", failures},
              {"min", ms.empty() ? 0 : *std::min_element(ms.begin(), ms.end())},
              {"avg", ms.empty() ? 0 : sum / static_cast<double>(ms.size())},
              {"p50", percentile(ms, 50)},
              {"p95", percentile(ms, 95)},
              {"p99", percentile(ms, 99)},
              {"max", ms.empty() ? 0 : *std::max_element(ms.begin(), ms.end())},
              {"unit", "ms"}};
}

inline json host_info() {
  std::string model;
  std::ifstream cpu("/proc/cpuinfo");
  for (std::string line; std::getline(cpu, line);) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
  struct utsname u {};
  uname(&u);
  return json{{"cpuModel", model},
              {"cpuCount", sysconf(_SC_NPROCESSORS_ONLN)},
              {"memGB", static_cast<double>(pages) * static_cast<double>(psize) / (1 << 30)},
              {"kernel", std::string(u.release)}};
}

inline std::string now_rfc3339() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

inline double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace coppice::bench
