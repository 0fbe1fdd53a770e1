// filesystem.Filesystem as E2B's envd serves it. envd runs as root and acts
// on any path (as in E2B); paths are resolved for the requesting user (home,
// workdir, "~"), and what it creates is owned by that user.
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
#include "envd/fs_ops.h"
#include "envd/fs_watch.h"
#include "envd/protojson.h"
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

RpcError fs_error(const Error& e) { return rpc_error(connect::code_for(e.code()), e.message()); }

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

std::optional<json> entry_or_none(const Envd& envd, const std::string& path) {
  auto e = stat_entry(path);
  if (!e) return std::nullopt;
  OwnerNames names(envd.users());
  return entry_json(*e, names);
}

std::expected<json, RpcError> entry_response(const Envd& envd, const std::string& path) {
  auto e = stat_entry(path);
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

DirWatcher::EntryFn entry_fn(const Envd* envd, bool include_entry) {
  if (!include_entry) return {};
  return [envd](const std::string& path) { return entry_or_none(*envd, path); };
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
    co_return entry_response(*envd, t->path);
  });

  rpc.unary("/filesystem.Filesystem/MakeDir", [envd](connect::CallContext& ctx, const json& req) -> UnaryResult {
    auto t = resolve(*envd, ctx, req, "path");
    if (!t) co_return std::unexpected(t.error());
    struct stat st;
    if (::stat(t->path.c_str(), &st) == 0) {
      if (S_ISDIR(st.st_mode))
        co_return std::unexpected(rpc_error(Code::already_exists, "directory already exists: " + t->path));
      co_return std::unexpected(
          rpc_error(Code::invalid_argument, "path already exists but it is not a directory: " + t->path));
    }
    if (errno != ENOENT) co_return std::unexpected(fs_error(Error::from_errno(errno, "stat " + t->path)));
    if (auto s = ensure_dirs(t->path, t->user.uid, t->user.gid); !s)
      co_return std::unexpected(fs_error(s.error().context("make directory " + t->path)));
    co_return entry_response(*envd, t->path);
  });

  rpc.unary("/filesystem.Filesystem/Move", [envd](connect::CallContext& ctx, const json& req) -> UnaryResult {
    auto src = resolve(*envd, ctx, req, "source");
    if (!src) co_return std::unexpected(src.error());
    auto dst = resolve(*envd, ctx, req, "destination");
    if (!dst) co_return std::unexpected(dst.error());
    // As E2B: the destination's missing parents are created for the user.
    // The moved entry keeps its owner.
    if (auto s = ensure_dirs(parent_dir(dst->path), dst->user.uid, dst->user.gid); !s)
      co_return std::unexpected(fs_error(s.error().context("move " + src->path + " to " + dst->path)));
    if (::rename(src->path.c_str(), dst->path.c_str()) != 0) {
      int err = errno;
      if (err == ENOENT) co_return std::unexpected(rpc_error(Code::not_found, "source file not found: " + src->path));
      co_return std::unexpected(fs_error(Error::from_errno(err, "move " + src->path + " to " + dst->path)));
    }
    co_return entry_response(*envd, dst->path);
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
    char buf[PATH_MAX];
    if (!::realpath(t->path.c_str(), buf)) {
      int err = errno;
      if (err == ENOENT) co_return std::unexpected(rpc_error(Code::not_found, "path not found: " + t->path));
      if (err == ELOOP)
        co_return std::unexpected(rpc_error(Code::failed_precondition, "cyclic symlink or chain >40 links at " + t->path));
      co_return std::unexpected(fs_error(Error::from_errno(err, "resolve " + t->path)));
    }
    std::string resolved(buf);
    struct stat st;
    if (::stat(resolved.c_str(), &st) != 0) {
      if (errno == ENOENT) co_return std::unexpected(rpc_error(Code::not_found, "directory not found: " + t->path));
      co_return std::unexpected(fs_error(Error::from_errno(errno, "stat " + t->path)));
    }
    if (!S_ISDIR(st.st_mode))
      co_return std::unexpected(rpc_error(Code::invalid_argument, "path is not a directory: " + t->path));
    TreeWalker walker(t->path, resolved, static_cast<int>(d));
    std::vector<EntryInfo> entries;
    for (;;) {
      auto more = walker.step(entries, kStepBudget);
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
    for (;;) {
      auto more = remover.step(kStepBudget);
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
    if (auto s = check_watch_dir(t->path, *allow_net); !s) co_return fs_error(s.error());
    auto ex = ctx.ex.executor();
    auto started = co_await DirWatcher::start(ex, t->path, *recursive, entry_fn(envd, *include_entry));
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
    if (auto s = check_watch_dir(t->path, *allow_net); !s) co_return std::unexpected(fs_error(s.error()));
    auto started = co_await DirWatcher::start(ctx.ex.executor(), t->path, *recursive, entry_fn(envd, *include_entry));
    if (!started) co_return std::unexpected(fs_error(started.error()));
    std::string id = new_watcher_id();
    impl->watchers[id] = std::move(*started);
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

  rpc.unary("/filesystem.Filesystem/RemoveWatcher", [impl](connect::CallContext&, const json& req) -> UnaryResult {
    auto id = pj::get_string(req, "watcherId");
    if (!id) co_return std::unexpected(rpc_error(Code::invalid_argument, id.error().message()));
    auto it = impl->watchers.find(id->value_or(""));
    if (it == impl->watchers.end())
      co_return std::unexpected(rpc_error(Code::not_found, "watcher with id " + id->value_or("") + " not found"));
    it->second->stop();
    impl->watchers.erase(it);
    co_return json::object();
  });
}

}  // namespace coppice::envd
