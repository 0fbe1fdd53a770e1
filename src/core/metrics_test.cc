#include "core/metrics.h"

#include <gtest/gtest.h>

#include <sstream>
#include <thread>

namespace coppice::core::metrics {
namespace {

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

bool has_line(const std::string& text, const std::string& line) {
  for (const auto& l : lines(text))
    if (l == line) return true;
  return false;
}

TEST(Metrics, CounterAndGaugeWithHelpAndType) {
  Registry r;
  r.counter("a_total", "Things counted.").inc();
  r.counter("a_total", "ignored").inc(2);
  auto& g = r.gauge("b", "A level.", {{"k", "v"}});
  g.set(5);
  g.add(-1.5);
  std::string out = r.render();
  EXPECT_EQ(out,
            "# HELP a_total Things counted.\n"
            "# TYPE a_total counter\n"
            "a_total 3\n"
            "# HELP b A level.\n"
            "# TYPE b gauge\n"
            "b{k=\"v\"} 3.5\n");
  EXPECT_EQ(out.back(), '\n');
}

TEST(Metrics, LabelAndHelpEscaping) {
  Registry r;
  r.counter("c_total", "back\\slash and\nnewline \"quotes stay\"", {{"path", "a\\b\"c\nd"}}).inc();
  std::string out = r.render();
  EXPECT_TRUE(has_line(out, "# HELP c_total back\\\\slash and\\nnewline \"quotes stay\"")) << out;
  EXPECT_TRUE(has_line(out, "c_total{path=\"a\\\\b\\\"c\\nd\"} 1")) << out;
  EXPECT_EQ(escape_label_value("plain"), "plain");
  EXPECT_EQ(escape_label_value("\"\\\n"), "\\\"\\\\\\n");
}

TEST(Metrics, ValueFormatting) {
  EXPECT_EQ(format_value(0), "0");
  EXPECT_EQ(format_value(42), "42");
  EXPECT_EQ(format_value(0.25), "0.25");
  EXPECT_EQ(format_value(1e21), "1e+21");
  EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(format_value(std::numeric_limits<double>::quiet_NaN()), "NaN");
}

TEST(Metrics, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  Registry r;
  auto& h = r.histogram("lat_seconds", "Latency.", {0.125, 1, 10}, {{"pool", "miss"}});
  for (double v : {0.0625, 0.125, 0.5, 2.0, 20.0}) h.observe(v);
  std::string out = r.render();
  EXPECT_EQ(out,
            "# HELP lat_seconds Latency.\n"
            "# TYPE lat_seconds histogram\n"
            "lat_seconds_bucket{pool=\"miss\",le=\"0.125\"} 2\n"
            "lat_seconds_bucket{pool=\"miss\",le=\"1\"} 3\n"
            "lat_seconds_bucket{pool=\"miss\",le=\"10\"} 4\n"
            "lat_seconds_bucket{pool=\"miss\",le=\"+Inf\"} 5\n"
            "lat_seconds_sum{pool=\"miss\"} 22.6875\n"
            "lat_seconds_count{pool=\"miss\"} 5\n");
  auto s = h.snapshot();
  EXPECT_EQ(s.count, 5u);
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{2, 3, 4}));
}

TEST(Metrics, EmptyHistogramWithoutLabels) {
  Registry r;
  r.histogram("h", "H.", {1});
  std::string out = r.render();
  EXPECT_TRUE(has_line(out, "h_bucket{le=\"1\"} 0")) << out;
  EXPECT_TRUE(has_line(out, "h_bucket{le=\"+Inf\"} 0")) << out;
  EXPECT_TRUE(has_line(out, "h_sum 0")) << out;
  EXPECT_TRUE(has_line(out, "h_count 0")) << out;
}

TEST(Metrics, FamiliesSortedAndSeriesShareOneHeader) {
  Registry r;
  r.counter("z_total", "Z.", {{"k", "b"}}).inc();
  r.counter("z_total", "Z.", {{"k", "a"}}).inc();
  r.gauge("m", "M.").set(1);
  std::string out = r.render();
  EXPECT_EQ(out,
            "# HELP m M.\n# TYPE m gauge\nm 1\n"
            "# HELP z_total Z.\n# TYPE z_total counter\nz_total{k=\"a\"} 1\nz_total{k=\"b\"} 1\n");
}

TEST(Metrics, MistypedRegistrationIsNotRendered) {
  Registry r;
  r.counter("x", "X.").inc(7);
  auto& g = r.gauge("x", "other");
  g.set(99);  // works, but is not part of the exposition
  EXPECT_EQ(g.value(), 99);
  std::string out = r.render();
  EXPECT_EQ(out, "# HELP x X.\n# TYPE x counter\nx 7\n");
}

TEST(Metrics, CollectorRunsAtRender) {
  Registry r;
  int calls = 0;
  r.gauge_collector("sb", "Sandboxes.", [&] {
    ++calls;
    return std::vector<Sample>{{{{"state", "running"}}, static_cast<double>(calls)}, {{{"state", "paused"}}, 0}};
  });
  EXPECT_TRUE(has_line(r.render(), "sb{state=\"running\"} 1"));
  std::string out = r.render();
  EXPECT_TRUE(has_line(out, "sb{state=\"running\"} 2")) << out;
  EXPECT_TRUE(has_line(out, "# TYPE sb gauge")) << out;
  EXPECT_EQ(calls, 2);
}

TEST(Metrics, ConcurrentUpdatesAreNotLost) {
  Registry r;
  auto& c = r.counter("n_total", "N.");
  auto& h = r.histogram("d", "D.", {1});
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.inc();
        h.observe(0.5);
        r.counter("n_total", "N.");  // lookups race with updates and renders
        if (i % 1000 == 0) (void)r.render();
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(c.value(), 40000);
  EXPECT_EQ(h.snapshot().count, 40000u);
}

TEST(Metrics, GatewayFamiliesAllHaveSeries) {
  Registry r;
  GatewayMetrics m(r);
  m.http_response(201);
  m.http_response(404);
  m.http_response(503);
  m.proxy_error(ProxyError::kConnect).inc();
  m.create_seconds_miss.observe(0.2);
  std::string out = r.render();
  for (const char* l : {"coppice_http_requests_total{code_class=\"2xx\"} 1",
                        "coppice_http_requests_total{code_class=\"4xx\"} 1",
                        "coppice_http_requests_total{code_class=\"5xx\"} 1",
                        "coppice_proxy_errors_total{reason=\"connect\"} 1",
                        "coppice_proxy_errors_total{reason=\"not_found\"} 0",
                        "coppice_create_seconds_count{pool=\"miss\"} 1",
                        "coppice_create_seconds_count{pool=\"hit\"} 0",
                        "coppice_create_seconds_bucket{pool=\"miss\",le=\"0.001\"} 0",
                        "coppice_create_seconds_bucket{pool=\"miss\",le=\"10\"} 1",
                        "coppice_proxy_bytes_total{direction=\"in\"} 0",
                        "coppice_checkouts_total 0",
                        "coppice_checkout_ns_sum 0",
                        "# TYPE coppice_create_seconds histogram"})
    EXPECT_TRUE(has_line(out, l)) << l << "\n" << out;
}

}  // namespace
}  // namespace coppice::core::metrics
