#include "core/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace coppice::core::metrics {

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  // The first bucket whose upper bound is >= v (Prometheus buckets are "le").
  size_t i = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  std::lock_guard lk(mu_);
  ++counts_[i];
  sum_ += v;
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.bounds = bounds_;
  std::lock_guard lk(mu_);
  uint64_t run = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    run += counts_[i];
    s.cumulative.push_back(run);
  }
  s.count = run + counts_.back();
  s.sum = sum_;
  return s;
}

Registry::Family* Registry::family(std::string_view name, std::string_view help, Type type) {
  auto it = families_.find(name);
  if (it == families_.end()) it = families_.emplace(std::string(name), Family{type, std::string(help), {}, {}, {}, nullptr}).first;
  return it->second.type == type ? &it->second : nullptr;
}

namespace {
// Orphans of different families share one map: the name is part of the key.
Labels orphan_key(std::string_view name, const Labels& labels) {
  Labels k{{"__name__", std::string(name)}};
  k.insert(k.end(), labels.begin(), labels.end());
  return k;
}

template <typename T, typename... Args>
T& get_or_make(std::map<Labels, std::unique_ptr<T>>& m, const Labels& key, Args&&... args) {
  auto& p = m[key];
  if (!p) p = std::make_unique<T>(std::forward<Args>(args)...);
  return *p;
}
}  // namespace

Counter& Registry::counter(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard lk(mu_);
  if (Family* f = family(name, help, Type::kCounter)) return get_or_make(f->counters, labels);
  return get_or_make(orphans_.counters, orphan_key(name, labels));
}

Gauge& Registry::gauge(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard lk(mu_);
  if (Family* f = family(name, help, Type::kGauge); f && !f->collect) return get_or_make(f->gauges, labels);
  return get_or_make(orphans_.gauges, orphan_key(name, labels));
}

Histogram& Registry::histogram(std::string_view name, std::string_view help, const std::vector<double>& bounds,
                               const Labels& labels) {
  std::lock_guard lk(mu_);
  if (Family* f = family(name, help, Type::kHistogram)) return get_or_make(f->histograms, labels, bounds);
  return get_or_make(orphans_.histograms, orphan_key(name, labels), bounds);
}

void Registry::gauge_collector(std::string_view name, std::string_view help,
                               std::function<std::vector<Sample>()> collect) {
  std::lock_guard lk(mu_);
  Family* f = family(name, help, Type::kGauge);
  if (f && f->gauges.empty()) f->collect = std::make_shared<std::function<std::vector<Sample>()>>(std::move(collect));
}

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string escape_help(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

namespace {
void append_series(std::string& out, std::string_view name, const Labels& labels, double value,
                   const std::pair<std::string, std::string>* extra = nullptr) {
  out += name;
  if (!labels.empty() || extra) {
    out += '{';
    bool first = true;
    auto put = [&](const std::pair<std::string, std::string>& l) {
      if (!first) out += ',';
      first = false;
      out += l.first;
      out += "=\"";
      out += escape_label_value(l.second);
      out += '"';
    };
    for (const auto& l : labels) put(l);
    if (extra) put(*extra);
    out += '}';
  }
  out += ' ';
  out += format_value(value);
  out += '\n';
}

const char* type_name(int t) {
  switch (t) {
    case 0: return "counter";
    case 1: return "gauge";
    default: return "histogram";
  }
}
}  // namespace

std::string Registry::render() const {
  // Values are read under the registry lock (instruments are never removed,
  // so this only guards the maps); collectors run after it is released.
  struct Pending {
    std::string head;  // HELP and TYPE lines
    std::string body;
    std::shared_ptr<std::function<std::vector<Sample>()>> collect;
    std::string name;
  };
  std::vector<Pending> parts;
  {
    std::lock_guard lk(mu_);
    for (const auto& [name, f] : families_) {
      Pending p;
      p.name = name;
      p.head = "# HELP " + name + " " + escape_help(f.help) + "\n# TYPE " + name + " " +
               type_name(static_cast<int>(f.type)) + "\n";
      p.collect = f.collect;
      for (const auto& [labels, c] : f.counters) append_series(p.body, name, labels, c->value());
      for (const auto& [labels, g] : f.gauges) append_series(p.body, name, labels, g->value());
      for (const auto& [labels, h] : f.histograms) {
        auto s = h->snapshot();
        std::string bucket = name + "_bucket";
        for (size_t i = 0; i < s.bounds.size(); ++i) {
          std::pair<std::string, std::string> le{"le", format_value(s.bounds[i])};
          append_series(p.body, bucket, labels, static_cast<double>(s.cumulative[i]), &le);
        }
        std::pair<std::string, std::string> inf{"le", "+Inf"};
        append_series(p.body, bucket, labels, static_cast<double>(s.count), &inf);
        append_series(p.body, name + "_sum", labels, s.sum);
        append_series(p.body, name + "_count", labels, static_cast<double>(s.count));
      }
      parts.push_back(std::move(p));
    }
  }
  std::string out;
  for (auto& p : parts) {
    out += p.head;
    if (p.collect) {
      for (const auto& s : (*p.collect)()) append_series(out, p.name, s.labels, s.value);
    }
    out += p.body;
  }
  return out;
}

namespace {
constexpr std::string_view kProxyErrorReason[kProxyErrorCount] = {"not_found", "connect", "upstream"};
}  // namespace

GatewayMetrics::GatewayMetrics(Registry& r)
    : registry(r),
      create_seconds_hit(r.histogram("coppice_create_seconds", "Time to create a sandbox, successful creates only.",
                                     kCreateBuckets, {{"pool", "hit"}})),
      create_seconds_miss(r.histogram("coppice_create_seconds", "", kCreateBuckets, {{"pool", "miss"}})),
      create_failures(r.counter("coppice_create_failures_total", "Sandbox creates that failed after validation.")),
      fork_children_checkpoint(r.counter("coppice_fork_children_total",
                                         "Fork children made, by what they came from: a checkpoint of the parent's "
                                         "memory and files, or its files alone (it ran nothing of its users').",
                                         {{"from", "checkpoint"}})),
      fork_children_files(r.counter("coppice_fork_children_total", "", {{"from", "files"}})),
      fork_children_spare(r.counter("coppice_fork_children_total", "", {{"from", "spare"}})),
      checkout_ns_sum(r.counter("coppice_checkout_ns_sum", "Nanoseconds spent checking sandboxes out of pools.")),
      checkouts(r.counter("coppice_checkouts_total", "Sandboxes checked out of pools.")),
      proxy_requests_envd(r.counter("coppice_proxy_requests_total", "Data-plane requests by target port.",
                                    {{"port_kind", "envd"}})),
      proxy_requests_other(r.counter("coppice_proxy_requests_total", "", {{"port_kind", "other"}})),
      proxy_bytes_in(r.counter("coppice_proxy_bytes_total",
                               "Body bytes relayed by the proxy: in = request bodies to sandboxes, out = responses.",
                               {{"direction", "in"}})),
      proxy_bytes_out(r.counter("coppice_proxy_bytes_total", "", {{"direction", "out"}})),
      envd_errors(r.counter("coppice_envd_errors_total",
                            "envd /init failures during create and failed proxy connections to envd.")),
      envd_spurious_wakes(r.counter("coppice_envd_exit_watch_spurious_total",
                                    "Wake-ups of a sandbox's envd exit watch while envd still ran (ignored).")),
      http_2xx(r.counter("coppice_http_requests_total", "Control-plane responses by status class.",
                         {{"code_class", "2xx"}})),
      http_4xx(r.counter("coppice_http_requests_total", "", {{"code_class", "4xx"}})),
      http_5xx(r.counter("coppice_http_requests_total", "", {{"code_class", "5xx"}})) {
  for (size_t i = 0; i < kProxyErrorCount; ++i)
    proxy_errors[i] = &r.counter("coppice_proxy_errors_total", "Data-plane requests answered 502, by reason.",
                                 {{"reason", std::string(kProxyErrorReason[i])}});
}

void GatewayMetrics::http_response(unsigned status) {
  if (status >= 500) http_5xx.inc();
  else if (status >= 400) http_4xx.inc();
  else http_2xx.inc();
}

}  // namespace coppice::core::metrics
