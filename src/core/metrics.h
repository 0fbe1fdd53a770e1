// The gateway's own figures for Prometheus: a small thread-safe registry of
// counters, gauges and fixed-bucket histograms, rendered in the text
// exposition format 0.0.4 (# HELP and # TYPE per family, escaped label
// values, histograms as cumulative _bucket{le=...} series plus _sum and
// _count). Instruments are updated lock-free (atomics) or under a mutex of
// their own, so the hot paths that record (the proxy) never contend on the
// registry. Figures that are cheaper to compute than to keep in step (the
// number of sandboxes per state) come from collectors called at render time.
//
// GatewayMetrics names the gateway's families in one place and holds the
// instruments the API, the proxy and the sandbox manager update.
#pragma once

#include <array>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace coppice::core::metrics {

// Label pairs in the order they are rendered.
using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  // Adds v (callers pass v >= 0: a counter only rises).
  void inc(double v = 1) { v_.fetch_add(v, std::memory_order_relaxed); }
  double value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> v_{0};
};

class Gauge {
 public:
  void set(double v) { v_.store(v, std::memory_order_relaxed); }
  void add(double v) { v_.fetch_add(v, std::memory_order_relaxed); }
  double value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> v_{0};
};

class Histogram {
 public:
  // `bounds`: the upper bounds of the buckets, ascending; +Inf is implied.
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // one per bound: observations <= bound
    uint64_t count = 0;                // all observations (the +Inf bucket)
    double sum = 0;
  };
  // A consistent view: count equals the +Inf bucket and no bucket exceeds the next.
  Snapshot snapshot() const;

 private:
  const std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; the last is (last bound, +Inf)
  double sum_ = 0;
};

// One sample a collector reports: labels and value.
struct Sample {
  Labels labels;
  double value;
};

class Registry {
 public:
  // The instrument of `name` with `labels`, made on first use. The help text
  // of the first registration of a family is kept. References stay valid for
  // the registry's lifetime. Asking for a name already registered with
  // another type is a programming error: the caller gets a working
  // instrument that is never rendered, and the family keeps its first type,
  // so the exposition stays well-formed.
  Counter& counter(std::string_view name, std::string_view help, const Labels& labels = {});
  Gauge& gauge(std::string_view name, std::string_view help, const Labels& labels = {});
  Histogram& histogram(std::string_view name, std::string_view help, const std::vector<double>& bounds,
                       const Labels& labels = {});
  // A gauge family whose samples `collect` computes at each render. It is
  // called without the registry's lock held, so it may take other locks.
  void gauge_collector(std::string_view name, std::string_view help, std::function<std::vector<Sample>()> collect);

  // The text exposition format 0.0.4; families sorted by name.
  std::string render() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Family {
    Type type;
    std::string help;
    std::map<Labels, std::unique_ptr<Counter>> counters;
    std::map<Labels, std::unique_ptr<Gauge>> gauges;
    std::map<Labels, std::unique_ptr<Histogram>> histograms;
    std::shared_ptr<std::function<std::vector<Sample>()>> collect;
  };
  Family* family(std::string_view name, std::string_view help, Type type);

  mutable std::mutex mu_;
  std::map<std::string, Family, std::less<>> families_;
  Family orphans_{Type::kCounter, "", {}, {}, {}, nullptr};  // mistyped registrations, never rendered
};

// Escapes a label value: backslash, double quote and newline.
std::string escape_label_value(std::string_view v);
// Escapes a HELP text: backslash and newline.
std::string escape_help(std::string_view v);
// A sample value as Prometheus reads it: shortest round-trip form, +Inf, -Inf, NaN.
std::string format_value(double v);

// Create latency buckets, in seconds: 1 ms .. 10 s.
// From 0.1 ms: a pool hit takes well under a millisecond on the server.
inline const std::vector<double> kCreateBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.0035, 0.005, 0.0075, 0.01,
                                                   0.015,  0.025,   0.05,   0.1,   0.25,  0.5,    1,      2.5,  5, 10};

// Why the proxy answered 502.
enum class ProxyError {
  kNotFound,  // no running sandbox of that id
  kConnect,   // the sandbox is there but its envd socket or port refused the connection
  kUpstream,  // the upstream connection broke while relaying the request or the response head
};
inline constexpr size_t kProxyErrorCount = 3;

// The gateway's families. Nothing here names a sandbox: ids and metadata
// never become labels (the endpoint is served without an API key).
struct GatewayMetrics {
  explicit GatewayMetrics(Registry& r);

  Registry& registry;
  // coppice_create_seconds{pool}: successful creates only. Every create is a
  // pool miss until template pools exist; "hit" is there so they can report.
  Histogram& create_seconds_hit;
  Histogram& create_seconds_miss;
  Counter& create_failures;
  // coppice_fork_children_total{from}: fork children made, by what they
  // came from: "checkpoint" (criu: the parent's memory and files), "files"
  // (the parent ran nothing but its own init and envd: started afresh on a
  // copy of them) or "spare" (such files merged into a sandbox of its
  // template's warm pool).
  Counter& fork_children_checkpoint;
  Counter& fork_children_files;
  Counter& fork_children_spare;
  // Pool checkouts: zero until template pools exist.
  Counter& checkout_ns_sum;
  Counter& checkouts;
  Counter& proxy_requests_envd;
  Counter& proxy_requests_other;
  Counter& proxy_bytes_in;   // request body bytes relayed to the sandbox
  Counter& proxy_bytes_out;  // response body bytes relayed to the client
  std::array<Counter*, kProxyErrorCount> proxy_errors;
  // envd /init failures during create, and proxy connections to envd that failed.
  Counter& envd_errors;
  // Wake-ups of a sandbox's exit watch while its envd still ran (ignored).
  Counter& envd_spurious_wakes;
  // Control-plane responses by status class (1xx and 3xx are never sent).
  Counter& http_2xx;
  Counter& http_4xx;
  Counter& http_5xx;

  Counter& proxy_error(ProxyError e) { return *proxy_errors[static_cast<size_t>(e)]; }
  // Counts one control-plane response of `status`.
  void http_response(unsigned status);
};

}  // namespace coppice::core::metrics
