#include "envd/envd.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/constants.h"
#include "common/log.h"
#include "common/strings.h"
#include "envd/files.h"
#include "envd/filesystem_service.h"
#include "envd/process_service.h"
#include "envd/protojson.h"
#include "sys/fd.h"
#include "sys/fsutil.h"

namespace coppice::envd {

using json = nlohmann::json;

std::string rest_error(unsigned status, std::string_view message) {
  return json{{"code", status}, {"message", message}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

void Reaper::reap() {
  for (;;) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    auto it = watched_.find(pid);
    if (it == watched_.end()) continue;  // an orphan we adopted
    auto cb = std::move(it->second);
    watched_.erase(it);
    cb(status);
  }
}

Envd::Envd(asio::io_context& io, Config cfg) : io_(io), cfg_(std::move(cfg)), users_(cfg_.etc_dir) {
  init_.default_user = cfg_.default_user;
  process_ = std::make_unique<ProcessService>(*this);
  filesystem_ = std::make_unique<FilesystemService>(*this);
  process_->register_routes(rpc_);
  filesystem_->register_routes(rpc_);
}

Envd::~Envd() = default;

Status Envd::start() {
  server_ = std::make_unique<http::Server>(io_, [this](http::Exchange& ex) { return handle(ex); });
  if (cfg_.port >= 0) {
    auto p = server_->listen_tcp(cfg_.host, static_cast<uint16_t>(cfg_.port));
    if (!p) return std::unexpected(p.error());
    COPPICE_LOG(info) << "envd listening on " << cfg_.host << ":" << *p;
  }
  if (!cfg_.socket_path.empty()) {
    COPPICE_TRY_CTX(server_->listen_unix(cfg_.socket_path, 0600), "envd");
    COPPICE_LOG(info) << "envd listening on unix:" << cfg_.socket_path;
  }
  if (cfg_.ready_fd >= 0) {
    ssize_t w = ::write(cfg_.ready_fd, "1", 1);
    (void)w;
    ::close(cfg_.ready_fd);
  }
  return ok();
}

void Envd::shutdown() {
  if (server_) server_->stop();
  process_->kill_all();
}

Result<User> Envd::user_or_default(std::string_view name) const {
  std::string n = name.empty() ? init_.default_user : std::string(name);
  return users_.lookup(n);
}

Result<User> Envd::request_user(const http::Exchange& ex) const {
  std::string auth = ex.header("Authorization");
  if (auth.size() > 6 && (auth.compare(0, 6, "Basic ") == 0 || auth.compare(0, 6, "basic ") == 0)) {
    auto decoded = pj::base64_decode(std::string_view(auth).substr(6));
    if (!decoded) return make_error(ErrorCode::kUnauthenticated, "malformed Authorization header");
    std::string user = decoded->substr(0, decoded->find(':'));
    auto u = users_.lookup(user.empty() ? init_.default_user : user);
    if (!u) return make_error(ErrorCode::kUnauthenticated, "invalid user: " + u.error().message());
    return u;
  }
  return user_or_default({});
}

Result<std::string> Envd::resolve_path(std::string_view path, const User& user) const {
  return resolve_user_path(path, user.home, init_.default_workdir);
}

std::vector<std::string> Envd::process_env(const User& user, const std::map<std::string, std::string>& extra) const {
  std::map<std::string, std::string> env{
      {"PATH", std::string(kDefaultPath)},
      {"HOME", user.home},
      {"USER", user.name},
      {"LOGNAME", user.name},
      {"SHELL", user.shell},
  };
  for (const auto& [k, v] : init_.env_vars) env[k] = v;
  for (const auto& [k, v] : extra) env[k] = v;
  std::vector<std::string> out;
  out.reserve(env.size());
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

bool Envd::token_ok(const http::Exchange& ex) const {
  if (!init_.access_token) return true;
  if (!ex.has_header("X-Access-Token")) return false;
  return constant_time_equal(ex.header("X-Access-Token"), *init_.access_token);
}

asio::awaitable<void> Envd::handle(http::Exchange& ex) {
  std::string_view path = ex.path();
  auto verb = ex.method();
  using http::bhttp::verb;
  if (path == "/health") {
    if (verb != verb::get && verb != verb::head) {
      co_await ex.respond_json(405, rest_error(405, "use GET for /health"));
    } else {
      co_await ex.respond(204, "", "");
    }
    co_return;
  }
  if (path == "/init") {
    if (verb != verb::post) {
      co_await ex.respond_json(405, rest_error(405, "use POST for /init"));
    } else {
      co_await handle_init(ex);
    }
    co_return;
  }
  if (path == "/files") {
    co_await handle_files(*this, ex);
    co_return;
  }
  if (!token_ok(ex)) {
    if (rpc_.owns(path)) {
      co_await ex.respond_json(401, connect::error_json(connect::rpc_error(connect::Code::unauthenticated,
                                                         "unauthorized access, please provide a valid access token"))
                                        .dump());
    } else {
      co_await ex.respond_json(401, rest_error(401, "unauthorized access, please provide a valid access token"));
    }
    co_return;
  }
  if (rpc_.owns(path)) {
    co_await rpc_.serve(ex);
    co_return;
  }
  if (path == "/envs" && verb == verb::get) {
    co_await ex.respond_json(200, json(init_.env_vars).dump());
    co_return;
  }
  if (path == "/coppice/held" && verb == verb::get) {
    json h{{"watchers", held_.watchers}, {"watchersMade", held_.watchers_made}};
    co_await ex.respond_json(200, h.dump());
    co_return;
  }
  if (path == "/version" && verb == verb::get) {
    json v{{"envdVersion", kEnvdVersion}, {"coppiceVersion", COPPICE_VERSION}};
    co_await ex.respond_json(200, v.dump());
    co_return;
  }
  co_await ex.respond_json(404, rest_error(404, "no such endpoint: " + std::string(path)));
}

Status Envd::apply_init(const json& req) {
  auto token = pj::get_string(req, "accessToken");
  auto user = pj::get_string(req, "defaultUser");
  auto workdir = pj::get_string(req, "defaultWorkdir");
  auto envs = pj::get_string_map(req, "envVars");
  for (const Error* e : {token ? nullptr : &token.error(), user ? nullptr : &user.error(),
                         workdir ? nullptr : &workdir.error(), envs ? nullptr : &envs.error()}) {
    if (e) return make_error(ErrorCode::kInvalidArgument, e->message());
  }
  // An /init older than one already applied is ignored (they may race).
  int64_t ts_ns = 0;
  if (const json* ts = pj::field(req, "timestamp"); ts && ts->is_string()) {
    struct tm tm {};
    const std::string& s = ts->get_ref<const std::string&>();
    if (strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm)) ts_ns = static_cast<int64_t>(timegm(&tm)) * 1000000000LL;
  }
  if (ts_ns != 0 && ts_ns < init_.last_init_ns) return ok();
  // The workdir is kept as given and resolved per request (a relative or "~"
  // workdir names each requesting user's own home, as in E2B), so only its
  // form is checked here. Nothing is applied unless everything is valid.
  if (*workdir) {
    if (auto r = resolve_user_path(**workdir, "/", ""); !r)
      return make_error(ErrorCode::kInvalidArgument, "defaultWorkdir: " + r.error().message());
  }
  if (*user && !user->value().empty()) {
    auto u = users_.lookup(**user);
    if (!u) return make_error(ErrorCode::kInvalidArgument, "defaultUser: " + u.error().message());
    init_.default_user = **user;
  }
  if (*workdir) init_.default_workdir = **workdir;
  if (*token && !token->value().empty()) init_.access_token = **token;
  for (auto& [k, v] : *envs) init_.env_vars[k] = v;
  if (ts_ns) init_.last_init_ns = ts_ns;
  return ok();
}

Status Envd::apply_init_file(const std::string& path) {
  std::string text;
  {
    sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) return errno_error("open init file " + path);
    auto append = [&text](std::string_view chunk) {
      text.append(chunk);
      return text.size() <= (1u << 20);
    };
    if (auto r = sys::read_chunks(fd.get(), "init file " + path, append); !r) return std::unexpected(std::move(r.error()));
    if (text.size() > (1u << 20)) return make_error(ErrorCode::kInvalidArgument, "init file " + path + " is over 1 MiB");
  }
  // Read once: the token in it is not left lying around.
  (void)::unlink(path.c_str());
  json req = json::parse(text, nullptr, false);
  if (req.is_discarded() || !req.is_object())
    return make_error(ErrorCode::kInvalidArgument, "init file " + path + " is not a JSON object");
  if (auto s = apply_init(req); !s) return std::unexpected(std::move(s.error()).context("init file " + path));
  return ok();
}

asio::awaitable<void> Envd::handle_init(http::Exchange& ex) {
  // Once a token is set, only its holder may initialise again.
  if (init_.access_token && !token_ok(ex)) {
    co_await ex.respond_json(401, rest_error(401, "unauthorized access, please provide a valid access token"));
    co_return;
  }
  auto body = co_await ex.read_body(1 << 20);
  if (!body) {
    unsigned st = body.error().code() == ErrorCode::kTooLarge ? 413 : 400;
    co_await ex.respond_json(st, rest_error(st, body.error().message()));
    co_return;
  }
  json req = json::parse(body->empty() ? std::string_view("{}") : std::string_view(*body), nullptr, false);
  if (req.is_discarded() || !req.is_object()) {
    co_await ex.respond_json(400, rest_error(400, "body must be a JSON object"));
    co_return;
  }
  if (auto s = apply_init(req); !s) {
    co_await ex.respond_json(400, rest_error(400, s.error().message()));
    co_return;
  }
  const http::Fields no_store{{"Cache-Control", "no-store"}};
  co_await ex.respond(204, "", "", no_store);
}

}  // namespace coppice::envd
