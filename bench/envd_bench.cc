// envd_bench: the round trip of process.Process/Start of /bin/true through
// coppice-envd, side by side with the floor (fork + exec + wait of /bin/true
// from this process), interleaved A B A B so the noisy machine hurts both
// alike. envd's own overhead is the difference of the medians.
//
//   build/envd_bench [--n 1000] [--envd build/coppice-envd] [--json out.jsonl]
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <filesystem>
#include <thread>

#include "bench_util.h"
#include "http/connect.h"
#include "sys/spawn.h"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using coppice::bench::json;
using clk = std::chrono::steady_clock;

namespace {

// One Process/Start of /bin/true over a kept-alive connection; returns false
// unless the stream ended with exit status 0 and a clean end-stream frame.
bool start_true(asio::local::stream_protocol::socket& sock, beast::flat_buffer& buf) {
  static const std::string body = coppice::connect::envelope(R"({"process":{"cmd":"/bin/true"},"stdin":false})");
  bhttp::request<bhttp::string_body> req{bhttp::verb::post, "/process.Process/Start", 11};
  req.set(bhttp::field::host, "localhost");
  req.set(bhttp::field::content_type, "application/connect+json");
  req.set("Connect-Protocol-Version", "1");
  req.body() = body;
  req.prepare_payload();
  bhttp::write(sock, req);
  bhttp::response<bhttp::string_body> res;
  bhttp::read(sock, buf, res);
  const std::string& b = res.body();
  return res.result_int() == 200 && b.find("exit status 0") != std::string::npos &&
         b.size() >= 7 && b[b.size() - 7] == coppice::connect::kFlagEndStream;
}

double floor_once() {
  auto t0 = clk::now();
  coppice::sys::SpawnOptions so;
  so.path = "/bin/true";
  so.argv = {"/bin/true"};
  so.env = {"PATH=/usr/bin:/bin"};
  auto pid = coppice::sys::spawn(so);
  if (!pid) return -1;
  int st;
  waitpid(*pid, &st, 0);
  return coppice::bench::ms_since(t0);
}

}  // namespace

int main(int argc, char** argv) {
  int n = 1000;
  std::string envd = COPPICE_BENCH_BUILD_DIR "/coppice-envd";
  std::string json_out;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--n" && i + 1 < argc) n = std::atoi(argv[++i]);
    else if (a == "--envd" && i + 1 < argc) envd = argv[++i];
    else if (a == "--json" && i + 1 < argc) json_out = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--n N] [--envd PATH] [--json FILE]\n", argv[0]);
      return 2;
    }
  }
  char tmpl[] = "/tmp/coppice-bench-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  std::string sock_path = dir + "/envd.sock";
  int ready[2];
  if (pipe(ready) != 0) return 1;
  pid_t envd_pid = fork();
  if (envd_pid == 0) {
    close(ready[0]);
    std::string fd = std::to_string(ready[1]);
    execl(envd.c_str(), envd.c_str(), "--no-tcp", "--socket", sock_path.c_str(), "--ready-fd", fd.c_str(),
          "--log-level", "warn", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(ready[1]);
  char c;
  if (read(ready[0], &c, 1) != 1) {
    std::fprintf(stderr, "envd did not start (%s)\n", envd.c_str());
    return 1;
  }
  close(ready[0]);

  asio::io_context io;
  asio::local::stream_protocol::socket sock(io);
  sock.connect(asio::local::stream_protocol::endpoint(sock_path));
  beast::flat_buffer buf;
  // Warm-up.
  for (int i = 0; i < 50; ++i) {
    start_true(sock, buf);
    floor_once();
  }
  std::vector<double> rpc, floor;
  size_t failures = 0;
  for (int i = 0; i < n; ++i) {
    auto t0 = clk::now();
    bool ok = start_true(sock, buf);
    double ms = coppice::bench::ms_since(t0);
    if (ok) rpc.push_back(ms);
    else ++failures;
    double f = floor_once();
    if (f >= 0) floor.push_back(f);
  }
  kill(envd_pid, SIGTERM);
  waitpid(envd_pid, nullptr, 0);
  std::filesystem::remove_all(dir);

  auto host = coppice::bench::host_info();
  auto runat = coppice::bench::now_rfc3339();
  std::string cmd = std::string(argv[0]) + " --n " + std::to_string(n);
  json a{{"config", "envd Process/Start /bin/true (unix socket, keep-alive)"}, {"host", host},
         {"metric", "exec round trip"}, {"concurrency", 1}, {"samples", rpc},
         {"summary", coppice::bench::summary(rpc, failures)}, {"command", cmd}, {"runAt", runat}};
  json b{{"config", "floor: fork+exec+wait /bin/true in-process"}, {"host", host}, {"metric", "spawn"},
         {"concurrency", 1}, {"samples", floor}, {"summary", coppice::bench::summary(floor)}, {"command", cmd},
         {"runAt", runat}};
  if (!json_out.empty()) {
    std::ofstream out(json_out);
    out << a.dump() << "\n" << b.dump() << "\n";
  }
  auto row = [](const char* name, const json& s) {
    std::printf("%-44s %8.3f %8.3f %8.3f %8.3f %8.3f\n", name, s["min"].get<double>(), s["p50"].get<double>(),
                s["p95"].get<double>(), s["p99"].get<double>(), s["max"].get<double>());
  };
  std::printf("%-44s %8s %8s %8s %8s %8s   (ms, n=%d, %s, %ld cpus)\n", "", "min", "p50", "p95", "p99", "max", n,
              host["kernel"].get<std::string>().c_str(), host["cpuCount"].get<long>());
  row("envd Process/Start /bin/true", a["summary"]);
  row("floor fork+exec+wait /bin/true", b["summary"]);
  double overhead = a["summary"]["p50"].get<double>() - b["summary"]["p50"].get<double>();
  std::printf("envd overhead (p50 difference): %.3f ms   failures: %zu\n", overhead, failures);
  return failures ? 1 : 0;
}
