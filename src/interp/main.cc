// coppice-interp: the code-interpreter server inside a sandbox (E2B's
// port 49999), driving IPython kernels over ZeroMQ.
//
//   coppice-interp --port 49999          serve (a template's start_cmd)
//   coppice-interp --probe 49999         exit 0 once a server there is ready (its ready_cmd)
//
// Kernels run as the server's own user unless --kernel-user names another;
// that is root under a template's start_cmd, as in E2B's code-interpreter
// template (its Jupyter server and kernels run as root), so code written for
// E2B that installs packages or writes outside /home/user works unchanged.
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "common/log.h"
#include "http/client.h"
#include "interp/assets.h"
#include "interp/languages.h"
#include "interp/server.h"

extern char** environ;

using namespace coppice;

namespace {

// Polls GET /health on the loopback port until it answers 200 or `timeout`
// passes; 0 when ready, 1 otherwise.
int probe(int port, double timeout_s) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  http::Endpoint ep;
  ep.host = "127.0.0.1";
  ep.port = static_cast<uint16_t>(port);
  std::string last = "no answer";
  for (;;) {
    http::asio::io_context io;
    bool ready = false;
    auto once = [&]() -> http::asio::awaitable<void> {
      const http::Fields none;
      const std::string target = "/health";
      const std::string no_body;
      const std::chrono::milliseconds timeout = std::chrono::seconds(2);
      auto r = co_await http::fetch(ep, http::bhttp::verb::get, target, none, no_body, timeout, 4096);
      if (!r) {
        last = r.error().message();
      } else if (r->status == 200) {
        ready = true;
      } else {
        last = std::to_string(r->status) + " " + r->body;
      }
    };
    http::asio::co_spawn(io, once, http::asio::detached);
    io.run();
    if (ready) return 0;
    if (std::chrono::steady_clock::now() >= deadline) {
      std::fprintf(stderr, "coppice-interp on port %d is not ready: %s\n", port, last.c_str());
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::vector<std::string> current_env() {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) env.emplace_back(*e);
  return env;
}

void set_env(std::vector<std::string>& env, const std::string& k, const std::string& v) {
  std::string prefix = k + "=";
  std::erase_if(env, [&](const std::string& e) { return e.starts_with(prefix); });
  env.push_back(prefix + v);
}

// The home of the kernel's user must exist: IPython and matplotlib keep
// their configuration and caches there, and warn into every run otherwise.
void ensure_home(const std::string& home, std::optional<uid_t> uid, std::optional<gid_t> gid) {
  if (home.empty() || home == "/") return;
  std::error_code ec;
  if (std::filesystem::is_directory(home, ec)) return;
  if (::mkdir(home.c_str(), 0700) != 0) return;
  if (uid) {
    if (::chown(home.c_str(), *uid, gid.value_or(static_cast<gid_t>(-1))) != 0) {
      COPPICE_LOG(warn) << "chown " << home << ": " << std::strerror(errno);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  interp::ServerConfig cfg;
  std::string level = "info";
  int probe_port = 0;
  // Below the gateway's 10 s limit on one ready_cmd run; it runs the probe again until 30 s.
  double probe_timeout = 5;
  std::string kernel_user;
  std::string runtime_base;
  int start_timeout_s = 60;
  bool version = false;
  CLI::App app{"coppice-interp: the Coppice code-interpreter server (E2B's /execute and /contexts on Jupyter kernels)"};
  app.add_option("--host", cfg.host, "listen address")->capture_default_str();
  app.add_option("--port", cfg.port, "listen port")->capture_default_str();
  app.add_option("--python", cfg.kernel.python, "Python with ipykernel (looked up in PATH)")->capture_default_str();
  app.add_option("--r", cfg.kernel.r, "R with IRkernel, for R contexts (looked up in PATH)")->capture_default_str();
  app.add_option("--default-contexts", cfg.default_languages,
                 "languages that get a context at start (the first must be python); others get theirs on first use")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--cwd", cfg.default_cwd, "working directory of the default context")->capture_default_str();
  app.add_option("--envd-socket", cfg.envd_socket, "envd's unix socket, asked for the sandbox's environment (else 127.0.0.1:49983)")
      ->capture_default_str();
  app.add_option("--kernel-user", kernel_user, "run kernels as this user (default: the server's own user)");
  app.add_option("--runtime-dir", runtime_base, "where the private dir for kernel connection files is made (default: $TMPDIR or /tmp)");
  app.add_option("--kernel-start-timeout", start_timeout_s, "seconds a kernel has to start")->capture_default_str();
  app.add_option("--probe", probe_port, "check a server on this loopback port: exit 0 once it is ready");
  app.add_option("--probe-timeout", probe_timeout, "seconds --probe keeps trying")->capture_default_str();
  app.add_option("--log-level", level, "debug|info|warn|error")->capture_default_str();
  app.add_flag("--version", version, "print the version and exit");
  CLI11_PARSE(app, argc, argv);
  if (version) {
    std::printf("coppice-interp %s\n", COPPICE_VERSION);
    return 0;
  }
  log::Level lvl;
  if (!log::parse_level(level, &lvl)) {
    std::fprintf(stderr, "unknown log level %s\n", level.c_str());
    return 2;
  }
  log::set_level(lvl);
  if (probe_port > 0) return probe(probe_port, probe_timeout);

  cfg.kernel.env = current_env();
  // The kernel's debugger otherwise warns about frozen modules into every kernel's log.
  set_env(cfg.kernel.env, "PYDEVD_DISABLE_FILE_VALIDATION", "1");
  cfg.kernel.start_timeout = std::chrono::seconds(start_timeout_s);
  std::string home;
  if (!kernel_user.empty()) {
    struct passwd* pw = ::getpwnam(kernel_user.c_str());
    if (!pw) {
      std::fprintf(stderr, "unknown --kernel-user %s\n", kernel_user.c_str());
      return 2;
    }
    cfg.kernel.uid = pw->pw_uid;
    cfg.kernel.gid = pw->pw_gid;
    home = pw->pw_dir;
    int n = 64;
    std::vector<gid_t> groups(n);
    if (::getgrouplist(pw->pw_name, pw->pw_gid, groups.data(), &n) < 0) {
      groups.resize(n);
      ::getgrouplist(pw->pw_name, pw->pw_gid, groups.data(), &n);
    }
    groups.resize(n);
    cfg.kernel.groups = groups;
    set_env(cfg.kernel.env, "HOME", home);
    set_env(cfg.kernel.env, "USER", pw->pw_name);
    set_env(cfg.kernel.env, "LOGNAME", pw->pw_name);
    if (pw->pw_shell && *pw->pw_shell) set_env(cfg.kernel.env, "SHELL", pw->pw_shell);
  } else {
    const char* h = ::getenv("HOME");
    if (h && *h) {
      home = h;
    } else if (struct passwd* pw = ::getpwuid(::getuid())) {
      home = pw->pw_dir;
      set_env(cfg.kernel.env, "HOME", home);
    }
  }
  ensure_home(home, cfg.kernel.uid, cfg.kernel.gid);
  std::error_code ec;
  if (!std::filesystem::is_directory(cfg.default_cwd, ec)) {
    std::string fallback = !home.empty() && std::filesystem::is_directory(home, ec) ? home : "/";
    COPPICE_LOG(warn) << "default cwd " << cfg.default_cwd << " does not exist; using " << fallback;
    cfg.default_cwd = fallback;
  }

  if (runtime_base.empty()) {
    const char* t = ::getenv("TMPDIR");
    runtime_base = t && *t ? t : "/tmp";
  }
  std::string tmpl = runtime_base + "/coppice-interp-XXXXXX";
  if (!::mkdtemp(tmpl.data())) {
    std::fprintf(stderr, "mkdtemp %s: %s\n", tmpl.c_str(), std::strerror(errno));
    return 1;
  }
  cfg.kernel.runtime_dir = tmpl;
  // The kernel binds its endpoints in this dir: it must be the kernel user's.
  if (cfg.kernel.uid && ::chown(tmpl.c_str(), *cfg.kernel.uid, *cfg.kernel.gid) != 0) {
    std::fprintf(stderr, "chown %s: %s\n", tmpl.c_str(), std::strerror(errno));
    return 1;
  }

  // The kernels' own files, readable by the kernel user.
  cfg.kernel.assets_dir = cfg.kernel.runtime_dir + "/kernels";
  if (::mkdir(cfg.kernel.assets_dir.c_str(), 0755) != 0 ||
      (cfg.kernel.uid && ::chown(cfg.kernel.assets_dir.c_str(), *cfg.kernel.uid, *cfg.kernel.gid) != 0)) {
    std::fprintf(stderr, "mkdir %s: %s\n", cfg.kernel.assets_dir.c_str(), std::strerror(errno));
    std::filesystem::remove_all(cfg.kernel.runtime_dir, ec);
    return 1;
  }
  if (auto w = interp::write_kernel_assets(cfg.kernel.assets_dir, cfg.kernel.uid, cfg.kernel.gid); !w) {
    std::fprintf(stderr, "%s\n", w.error().to_string().c_str());
    std::filesystem::remove_all(cfg.kernel.runtime_dir, ec);
    return 1;
  }
  if (cfg.default_languages.empty() || cfg.default_languages.front() != "python") {
    std::fprintf(stderr, "--default-contexts must start with python\n");
    std::filesystem::remove_all(cfg.kernel.runtime_dir, ec);
    return 2;
  }
  for (auto& l : cfg.default_languages) {
    auto n = interp::normalize_language(l);
    if (!n) {
      std::fprintf(stderr, "--default-contexts: unknown language %s\n", l.c_str());
      std::filesystem::remove_all(cfg.kernel.runtime_dir, ec);
      return 2;
    }
    l = *n;
  }

  ::signal(SIGPIPE, SIG_IGN);
  int rc = 0;
  {
    interp::ZmqContext zctx;
    interp::asio::io_context io{1};
    interp::InterpServer server(io, zctx, cfg);
    auto port = server.start();
    if (!port) {
      COPPICE_LOG(error) << port.error().to_string();
      rc = 1;
    } else {
      COPPICE_LOG(info) << "coppice-interp listening on " << cfg.host << ":" << *port << " (kernels in "
                        << cfg.kernel.runtime_dir << ", cwd " << cfg.default_cwd << ")";
      interp::asio::signal_set term(io, SIGTERM, SIGINT);
      term.async_wait([&](const boost::system::error_code& e, int sig) {
        if (e) return;
        COPPICE_LOG(info) << "signal " << sig << ": shutting down";
        server.shutdown();
        io.stop();
      });
      io.run();
    }
    server.shutdown();
  }
  std::filesystem::remove_all(cfg.kernel.runtime_dir, ec);
  return rc;
}
