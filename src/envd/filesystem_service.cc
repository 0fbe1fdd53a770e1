// filesystem.Filesystem as E2B's envd serves it. envd runs as root, but
// every file-system operation of an RPC runs with the requesting user's
// credentials (sys/run_as.h): the kernel decides what the user may see,
// create, move or remove, and what is created is the user's. Paths are
// resolved for that user (home, workdir, "~").
#include "envd/filesystem_service.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <random>

#include "common/log.h"
#include "envd/fs_entry.h"
#include "envd/fs_errors.h"
#include "envd/fs_ops.h"
#include "envd/fs_watch.h"
#include "envd/protojson.h"
#include "sys/run_as.h"
#include "sys/tree_walk.h"

namespace coppice::envd {

using json = nlohmann::json;
using connect::Code;
using connect::RpcError;
using connect::rpc_error;
using asio::use_awaitable;
using namespace asio::experimental::awaitable_operators;

namespace {

using UnaryResult = asio::awaitable<std::expected<json, RpcError>>;
constexpr auto kTuple = asio::as_tuple(use_awaitable);
// envd's keepalive interval when the client sends no Keepalive-Ping-Interval.
constexpr std::chrono::seconds kDefaultKeepalive{90};
// Entries listed or removed between two yields to the event loop.
constexpr size_t kStepBudget = 256;

RpcError fs_error(const Error& e) { return rpc_error(fs_rpc_code(e), fs_error_message(e)); }

struct Target {
  User user;
  std::string path;  // absolute, clean
};

// The requesting user and the path in `field`, resolved for that user
// (invalid_argument for a path envd refuses, as E2B's envd answers).
std::expected<Target, RpcError> resolve(const Envd& envd, connect::CallContext& ctx, const json& req,
                                        std::string_view field) {
  auto user = envd.request_user(ctx.ex);
  if (!user) return std::unexpected(rpc_error(Code::unauthenticated, user.error().message()));
  auto p = pj::get_string(req, field);
  if (!p) return std::unexpected(rpc_error(Code::invalid_argument, p.error().message()));
  auto path = envd.resolve_path(p->value_or(""), *user);
  if (!path) {
    return std::unexpected(rpc_error(Code::invalid_argument, std::string(field) + ": " + path.error().message()));
  }
  return Target{std::move(*user), std::move(*path)};
}

std::expected<bool, RpcError> get_flag(const json& req, std::string_view name) {
  auto v = pj::get_bool(req, name);
  if (!v) return std::unexpected(rpc_error(Code::invalid_argument, v.error().message()));
  return v->value_or(false);
}

// The entry at `path` as the user with `creds` sees it.
Result<EntryInfo> stat_as(const sys::Credentials& creds, const std::string& path) {
  return sys::run_as(creds, [&path] { return stat_entry(path); });
}

std::optional<json> entry_or_none(const Envd& envd, const sys::Credentials& creds, const std::string& path) {
  auto e = stat_as(creds, path);
  if (!e) return std::nullopt;
  OwnerNames names(envd.users());
  return entry_json(*e, names);
}

std::expected<json, RpcError> entry_response(const Envd& envd, const User& user, const std::string& path) {
  auto e = stat_as(user.credentials(), path);
  if (!e) return std::unexpected(fs_error(e.error()));
  OwnerNames names(envd.users());
  json out = json::object();
  out["entry"] = entry_json(*e, names);
  return out;
}

// Watching needs an existing directory, and (unless allowed) not one on a
// network file system, whose events inotify does not see reliably.
Status check_watch_dir(const std::string& path, bool allow_network_mounts) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return make_error(ErrorCode::kNotFound, "path " + path + " not found", ENOENT);
    return errno_error("stat " + path);
  }
  if (!S_ISDIR(st.st_mode)) return make_error(ErrorCode::kInvalidArgument, "path " + path + " is not a directory");
  if (!allow_network_mounts) {
    struct statfs fs;
    if (::statfs(path.c_str(), &fs) != 0) return errno_error("statfs " + path);
    switch (static_cast<unsigned long>(fs.f_type)) {
      case 0x6969:      // NFS
      case 0xFF534D42:  // CIFS
      case 0x517B:      // SMB
      case 0xFE534D42:  // SMB2
      case 0x65735546:  // FUSE
        return make_error(ErrorCode::kInvalidArgument, "cannot watch path on network filesystem: " + path);
      default:
        break;
    }
  }
  return ok();
}

json event_json(const WatchEvent& ev) {
  json j = json::object();
  j["name"] = ev.name;
  j["type"] = event_type_name(ev.type);
  if (ev.entry) j["entry"] = *ev.entry;
  return j;
}

DirWatcher::EntryFn entry_fn(const Envd* envd, const User& user, bool include_entry) {
  if (!include_entry) return {};
  return [envd, creds = user.credentials()](const std::string& path) { return entry_or_none(*envd, creds, path); };
}

std::string new_watcher_id() {
  static std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string id = "w";
  for (int i = 0; i < 20; ++i) id += kAlphabet[rng() % 36];
  return id;
}

}  // namespace

struct FilesystemService::Impl {
  // Polling watchers by id. They live until RemoveWatcher or envd's exit.
  std::map<std::string, std::shared_ptr<DirWatcher>> watchers;
  ~Impl() {
    for (auto& [id, w] : watchers) w->stop();
  }
};

FilesystemService::FilesystemService(Envd& envd) : envd_(envd), impl_(std::make_unique<Impl>()) {}
FilesystemService::~FilesystemService() = default;

void FilesystemService::register_routes(connect::Router& rpc) {
  Envd* envd = &envd_;
  Impl* impl = impl_.get();

  rpc.unary("/filesystem.Filesystem/Stat", [envd](connect::CallContext& ctx, const json& req) -> UnaryResult {
    auto t = resolve(*envd, ctx, req, "path");
    if (!t) co_return std::unexpected(t.error());
    co_return entry_response(*envd, t->user, t->path);
  });

  rpc.unary("/filesystem.Filesystem/MakeDir", [envd](connect::CallContext& ctx, const json& req) -> UnaryResult {
    auto t = resolve(*envd, ctx, req, "path");
    if (!t) co_return std::unexpected(t.error());
    const std::string& path = t->path;
    auto made = sys::run_as(t->user.credentials(), [&path]() -> Status {
      struct stat st;
      if (::stat(path.c_str(), &st) == 0) {
        if (S_ISDIR(st.st_mode)) return make_error(ErrorCode::kAlreadyExists, "directory already exists: " + path);
        return make_error(ErrorCode::kInvalidArgument, "path already exists but it is not a directory: " + path);
      }
      if (errno != ENOENT) return errno_error("stat " + path);
      COPPICE_TRY_CTX(ensure_dirs(path), "make directory " + path);
      return ok();
    });
    if (!made) co_return std::unexpected(fs_error(made.error()));
    co_return entry_response(*envd, t->user, t->path);
  });

  rpc.unary("/filesystem.Filesystem/Move", [envd](connect::CallContext& ctx, const json& req) -> UnaryResult {
    auto src = resolve(*envd, ctx, req, "source");
    if (!src) co_return std::unexpected(src.error());
    auto dst = resolve(*envd, ctx, req, "destination");
    if (!dst) co_return std::unexpected(dst.error());
    // As E2B: the destination's missing parents are created for the user.
    // The moved entry keeps its owner.
    const std::string& from = src->path;
    const std::string& to = dst->path;
    auto moved = sys::run_as(dst->user.credentials(), [&from, &to]() -> Status {
      COPPICE_TRY_CTX(ensure_dirs(parent_dir(to)), "move " + from + " to " + to);
      if (::rename(from.c_str(), to.c_str()) != 0) {
        if (errno == ENOENT) return make_error(ErrorCode::kNotFound, "source file not found: " + from, ENOENT);
        return errno_error("move " + from + " to " + to);
      }
      return ok();
    });
    if (!moved) co_return std::unexpected(fs_error(moved.error()));
    co_return entry_response(*envd, dst->user, dst->path);
  });

  rpc.unary("/filesystem.Filesystem/ListDir", [envd](connect::CallContext& ctx, const json& req) -> UnaryResult {
    auto t = resolve(*envd, ctx, req, "path");
    if (!t) co_return std::unexpected(t.error());
    auto depth = pj::get_int(req, "depth");
    if (!depth) co_return std::unexpected(rpc_error(Code::invalid_argument, depth.error().message()));
    int64_t d = depth->value_or(0);
    if (d < 0) co_return std::unexpected(rpc_error(Code::invalid_argument, "depth should be at least one"));
    if (d == 0) d = 1;
    if (d > INT_MAX) d = INT_MAX;
    // The walk reads the directory with symlinks resolved but reports paths
    // under the name the caller used.
    const sys::Credentials creds = t->user.credentials();
    const std::string& path = t->path;
    auto found = sys::run_as(creds, [&path]() -> Result<std::string> {
      char buf[PATH_MAX];
      if (!::realpath(path.c_str(), buf)) {
        int err = errno;
        if (err == ENOENT) return make_error(ErrorCode::kNotFound, "path not found: " + path, err);
        if (err == ELOOP)
          return make_error(ErrorCode::kFailedPrecondition, "cyclic symlink or chain >40 links at " + path, err);
        return errno_error("resolve " + path, err);
      }
      std::string resolved(buf);
      struct stat st;
      if (::stat(resolved.c_str(), &st) != 0) {
        if (errno == ENOENT) return make_error(ErrorCode::kNotFound, "directory not found: " + path, ENOENT);
        return errno_error("stat " + path);
      }
      if (!S_ISDIR(st.st_mode)) return make_error(ErrorCode::kInvalidArgument, "path is not a directory: " + path);
      return resolved;
    });
    if (!found) co_return std::unexpected(fs_error(found.error()));
    TreeWalker walker(t->path, *found, static_cast<int>(d));
    std::vector<EntryInfo> entries;
    for (;;) {
      auto more = sys::run_as(creds, [&] { return walker.step(entries, kStepBudget); });
      if (!more) co_return std::unexpected(fs_error(more.error().context("list directory " + t->path)));
      if (!*more) break;
      co_await asio::post(ctx.ex.executor(), use_awaitable);
    }
    OwnerNames names(envd->users());
    json list = json::array();
    for (const auto& e : entries) list.push_back(entry_json(e, names));
    json out = json::object();
    if (!list.empty()) out["entries"] = std::move(list);
    co_return out;
  });

  rpc.unary("/filesystem.Filesystem/Remove", [envd](connect::CallContext& ctx, const json& req) -> UnaryResult {
    auto t = resolve(*envd, ctx, req, "path");
    if (!t) co_return std::unexpected(t.error());
    sys::TreeRemover remover(t->path);
    const sys::Credentials creds = t->user.credentials();
    for (;;) {
      auto more = sys::run_as(creds, [&] { return remover.step(kStepBudget); });
      if (!more) co_return std::unexpected(fs_error(more.error()));
      if (!*more) break;
      co_await asio::post(ctx.ex.executor(), use_awaitable);
    }
    co_return json::object();
  });

  rpc.stream("/filesystem.Filesystem/WatchDir", [envd](connect::CallContext& ctx, const json& req,
                                                       connect::StreamWriter& w)
                                                    -> asio::awaitable<std::optional<RpcError>> {
    auto t = resolve(*envd, ctx, req, "path");
    if (!t) co_return t.error();
    auto recursive = get_flag(req, "recursive");
    auto include_entry = get_flag(req, "includeEntry");
    auto allow_net = get_flag(req, "allowNetworkMounts");
    for (auto* f : {&recursive, &include_entry, &allow_net})
      if (!*f) co_return f->error();
    sys::Credentials creds = t->user.credentials();
    const std::string& path = t->path;
    bool allow = *allow_net;
    if (auto s = sys::run_as(creds, [&] { return check_watch_dir(path, allow); }); !s) co_return fs_error(s.error());
    auto ex = ctx.ex.executor();
    DirWatcher::EntryFn efn = entry_fn(envd, t->user, *include_entry);
    auto started = co_await DirWatcher::start(ex, t->path, *recursive, creds, efn);
    if (!started) co_return fs_error(started.error());
    std::shared_ptr<DirWatcher> watcher = std::move(*started);
    asio::steady_timer wake(ex);
    watcher->set_notify([&wake] { wake.cancel(); });
    struct Stop {
      std::shared_ptr<DirWatcher> w;
      ~Stop() { w->stop(); }
    } stop{watcher};

    json start_msg = json::object();
    start_msg["start"] = json::object();
    if (auto s = co_await w.send(start_msg); !s) co_return std::nullopt;
    json keepalive_msg = json::object();
    keepalive_msg["keepalive"] = json::object();

    using clock = std::chrono::steady_clock;
    const auto keepalive = ctx.keepalive.value_or(kDefaultKeepalive);
    auto next_keepalive = clock::now() + keepalive;
    // Connect-Timeout-Ms bounds the stream: it then ends deadline_exceeded,
    // as a Go handler returning ctx.Err() does.
    std::optional<clock::time_point> deadline;
    if (ctx.timeout) deadline = clock::now() + *ctx.timeout;
    for (;;) {
      while (!watcher->events().empty()) {
        WatchEvent ev = std::move(watcher->events().front());
        watcher->events().pop_front();
        json msg = json::object();
        msg["filesystem"] = event_json(ev);
        if (auto s = co_await w.send(msg); !s) co_return std::nullopt;  // client gone
        next_keepalive = clock::now() + keepalive;
      }
      if (watcher->error()) co_return fs_error(*watcher->error());
      auto now = clock::now();
      if (deadline && now >= *deadline) co_return rpc_error(Code::deadline_exceeded, "watch deadline exceeded");
      if (now >= next_keepalive) {
        if (auto s = co_await w.send(keepalive_msg); !s) co_return std::nullopt;
        next_keepalive = now + keepalive;
        continue;
      }
      wake.expires_at(deadline && *deadline < next_keepalive ? *deadline : next_keepalive);
      // Also wait for the client to hang up, so an idle watch ends promptly.
      auto r = co_await (wake.async_wait(kTuple) || ctx.ex.wait_peer_closed());
      if (r.index() == 1) co_return std::nullopt;
    }
  });

  rpc.unary("/filesystem.Filesystem/CreateWatcher", [envd, impl](connect::CallContext& ctx,
                                                                 const json& req) -> UnaryResult {
    auto t = resolve(*envd, ctx, req, "path");
    if (!t) co_return std::unexpected(t.error());
    auto recursive = get_flag(req, "recursive");
    auto include_entry = get_flag(req, "includeEntry");
    auto allow_net = get_flag(req, "allowNetworkMounts");
    for (auto* f : {&recursive, &include_entry, &allow_net})
      if (!*f) co_return std::unexpected(f->error());
    sys::Credentials creds = t->user.credentials();
    const std::string& path = t->path;
    bool allow = *allow_net;
    if (auto s = sys::run_as(creds, [&] { return check_watch_dir(path, allow); }); !s)
      co_return std::unexpected(fs_error(s.error()));
    auto ex = ctx.ex.executor();
    DirWatcher::EntryFn efn = entry_fn(envd, t->user, *include_entry);
    auto started = co_await DirWatcher::start(ex, t->path, *recursive, creds, efn);
    if (!started) co_return std::unexpected(fs_error(started.error()));
    std::string id = new_watcher_id();
    impl->watchers[id] = std::move(*started);
    ++envd->held().watchers;
    ++envd->held().watchers_made;
    json out = json::object();
    out["watcherId"] = id;
    co_return out;
  });

  rpc.unary("/filesystem.Filesystem/GetWatcherEvents", [impl](connect::CallContext&, const json& req) -> UnaryResult {
    auto id = pj::get_string(req, "watcherId");
    if (!id) co_return std::unexpected(rpc_error(Code::invalid_argument, id.error().message()));
    auto it = impl->watchers.find(id->value_or(""));
    if (it == impl->watchers.end())
      co_return std::unexpected(rpc_error(Code::not_found, "watcher with id " + id->value_or("") + " not found"));
    DirWatcher& w = *it->second;
    // Events queued before a failure are still handed out; the error comes
    // with the next call.
    if (w.events().empty() && w.error()) co_return std::unexpected(fs_error(*w.error()));
    json list = json::array();
    while (!w.events().empty()) {
      list.push_back(event_json(w.events().front()));
      w.events().pop_front();
    }
    json out = json::object();
    if (!list.empty()) out["events"] = std::move(list);
    co_return out;
  });

  rpc.unary("/filesystem.Filesystem/RemoveWatcher", [envd, impl](connect::CallContext&, const json& req) -> UnaryResult {
    auto id = pj::get_string(req, "watcherId");
    if (!id) co_return std::unexpected(rpc_error(Code::invalid_argument, id.error().message()));
    auto it = impl->watchers.find(id->value_or(""));
    if (it == impl->watchers.end())
      co_return std::unexpected(rpc_error(Code::not_found, "watcher with id " + id->value_or("") + " not found"));
    it->second->stop();
    impl->watchers.erase(it);
    --envd->held().watchers;
    co_return json::object();
  });
}

}  // namespace coppice::envd
