// coppice-envd: the agent inside every sandbox.
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string_view>

#include "common/log.h"
#include "envd/envd.h"
#include "envd/pid1.h"

using namespace coppice;

namespace {

int envd_main(int argc, char** argv) {
  envd::Config cfg;
  std::string level = "info";
  bool no_tcp = false;
  CLI::App app{"coppice-envd: the Coppice in-sandbox agent (E2B envd protocol)"};
  app.add_option("--host", cfg.host, "TCP listen address")->capture_default_str();
  app.add_option("--port", cfg.port, "TCP port")->capture_default_str();
  app.add_flag("--no-tcp", no_tcp, "do not listen on TCP (serve only --socket)");
  app.add_option("--socket", cfg.socket_path, "also listen on this unix socket");
  app.add_option("--etc", cfg.etc_dir, "directory holding passwd and group")->capture_default_str();
  app.add_option("--default-user", cfg.default_user, "user until /init sets one")->capture_default_str();
  app.add_option("--ready-fd", cfg.ready_fd, "write one byte to this fd once listening, then close it");
  app.add_option("--log-level", level, "debug|info|warn|error")->capture_default_str();
  std::string init_file;
  app.add_option("--init-file", init_file, "apply this /init body (JSON) at start, then remove the file");
  bool version = false;
  app.add_flag("--version", version, "print the versions and exit");
  CLI11_PARSE(app, argc, argv);
  if (version) {
    std::printf("coppice-envd %s (envd protocol %s)\n", COPPICE_VERSION, std::string(envd::kEnvdVersion).c_str());
    return 0;
  }
  if (no_tcp) cfg.port = -1;
  log::Level lvl;
  if (!log::parse_level(level, &lvl)) {
    std::fprintf(stderr, "unknown log level %s\n", level.c_str());
    return 2;
  }
  log::set_level(lvl);
  if (cfg.port < 0 && cfg.socket_path.empty()) {
    std::fprintf(stderr, "nothing to listen on: give --port or --socket\n");
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  // Orphans of the commands we run are re-parented to us so we can reap them
  // (when we are PID 1 of a PID namespace this is already so).
  if (::getpid() != 1) ::prctl(PR_SET_CHILD_SUBREAPER, 1);

  envd::asio::io_context io{1};
  envd::Envd agent(io, cfg);
  envd::asio::signal_set chld(io, SIGCHLD);
  std::function<void()> arm_chld = [&] {
    chld.async_wait([&](const boost::system::error_code& ec, int) {
      if (ec) return;
      agent.reaper().reap();
      arm_chld();
    });
  };
  arm_chld();
  envd::asio::signal_set term(io, SIGTERM, SIGINT);
  term.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    COPPICE_LOG(info) << "signal " << sig << ": shutting down";
    agent.shutdown();
    io.stop();
  });
  if (!init_file.empty()) {
    if (auto s = agent.apply_init_file(init_file); !s) {
      COPPICE_LOG(error) << s.error().to_string();
      return 1;
    }
  }
  if (auto s = agent.start(); !s) {
    COPPICE_LOG(error) << s.error().to_string();
    return 1;
  }
  io.run();
  agent.reaper().reap();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && (std::string_view(argv[1]) == "--pid1" || std::string_view(argv[1]) == "--pid1-restore")) {
    return envd::run_pid1(argc, argv, envd_main);
  }
  return envd_main(argc, argv);
}
