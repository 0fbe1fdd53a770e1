// Snapshots (SandboxManager::create_snapshot, delete_snapshot, and a create
// whose template is a snapshot or a fork's start point; fork itself is in
// fork.cc).
//
// A snapshot keeps a read-only copy of a running sandbox's writable layer
// (Backend::copy_layer: a btrfs snapshot where layers are subvolumes) and,
// with memory, a checkpoint of its processes taken with leave_running. A
// sandbox started from it gets the template below, the snapshot's layers
// (the copy and those the source itself stood on) in the middle and a
// fresh writable layer on top; with memory its processes are restored and
// envd is given the new sandbox's token (it would otherwise keep the
// source's, which it holds in memory).
//
// Ownership of ids in the layers: each copy keeps the host uids the source
// wrote it with, and every sandbox shows it through an idmapped mount whose
// user namespace maps that range onto its own (LowerLayer::host_root). No
// file is rewritten (a walk of a tree the sandbox shaped would cost what it
// holds and run on a request path), and the copy stays one O(1) snapshot
// shared by every sandbox started from it.
//
// Where: <state>/sandboxes/.snapshots/<layer> (the copy) and
// <layer>.images (the checkpoint), beside the sandboxes' state dirs so the
// copy is a snapshot on the same file system. A layer is kept while a stored
// snapshot or a sandbox names it, or an operation in flight has pinned it;
// collect_layers() removes the rest (after a restart too, so a snapshot or
// fork cut short by a crash leaves nothing).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <set>

#include "common/ids.h"
#include "common/log.h"
#include "common/scope_exit.h"
#include "core/offload.h"
#include "core/sandbox_manager.h"
#include "core/sandbox_manager_internal.h"
#include "http/client.h"
#include "core/envd_client.h"
#include "sys/fsutil.h"
#include "sys/tree_copy.h"

namespace coppice::core {

using asio::use_awaitable;

json layers_json(const std::vector<sandbox::LowerLayer>& layers) {
  json out = json::array();
  for (const auto& l : layers) out.push_back(json{{"dir", l.dir}, {"hostRoot", l.host_root}});
  return out;
}

std::vector<sandbox::LowerLayer> layers_from_json(const json& j) {
  std::vector<sandbox::LowerLayer> out;
  if (!j.is_array()) return out;
  for (const auto& e : j) {
    if (!e.is_object()) continue;
    auto d = e.find("dir");
    auto h = e.find("hostRoot");
    if (d == e.end() || !d->is_string() || h == e.end() || !h->is_number_unsigned()) continue;
    out.push_back(sandbox::LowerLayer{d->get<std::string>(), h->get<uint32_t>()});
  }
  return out;
}

namespace {

double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
}

// The layer a LowerLayer's dir belongs to: ".../.snapshots/<layer>/upper" -> "<layer>".
std::string layer_key(const std::string& dir) {
  std::string d = dir;
  if (d.ends_with("/upper")) d.resize(d.size() - 6);
  auto slash = d.find_last_of('/');
  return slash == std::string::npos ? d : d.substr(slash + 1);
}

SnapshotView snapshot_view(const store::SnapshotRecord& r) {
  SnapshotView v;
  v.id = r.id;
  v.name = r.name;
  v.team = r.team;
  v.source_sandbox = r.source_sandbox;
  v.template_id = r.template_id;
  v.memory = r.memory;
  v.created_at = Clock::time_point(std::chrono::milliseconds(r.created_at));
  v.disk_bytes = static_cast<uint64_t>(r.disk_bytes);
  return v;
}

// Bytes the files directly in `dir` hold (a checkpoint's images are one
// flat directory).
uint64_t flat_dir_bytes(const std::string& dir) {
  uint64_t total = 0;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  while (auto* e = ::readdir(d)) {
    struct stat st;
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
      total += static_cast<uint64_t>(st.st_blocks) * 512;
  }
  ::closedir(d);
  return total;
}

// 507: the team's snapshots keep `kept` bytes, a new one would add `more`.
std::unexpected<Error> snapshot_budget_error(uint64_t kept, uint64_t more, uint64_t budget) {
  auto mib = [](uint64_t b) { return std::to_string((b + (1 << 20) - 1) >> 20); };
  std::string msg = "the team's snapshots keep " + mib(kept) + " MiB of the " + mib(budget) +
                    " MiB they may keep on disk (--snapshot-disk-mb)";
  if (more > 0) msg += ", and this one would add " + mib(more) + " MiB";
  return make_error(ErrorCode::kResourceExhausted, msg + ": delete a snapshot first", ENOSPC);
}

// Gives a restored envd the new sandbox's token: /init authorised with the
// token it holds from the checkpoint (the source's), which it then drops.
asio::awaitable<Status> envd_rekey(std::string socket, std::string old_token, std::string new_token,
                                   std::map<std::string, std::string> env) {
  const http::Endpoint ep{socket, "", 0};
  http::Fields headers{{"Content-Type", "application/json"}};
  if (!old_token.empty()) headers.emplace_back("X-Access-Token", old_token);
  json body = json::object();
  if (!new_token.empty()) body["accessToken"] = new_token;
  if (!env.empty()) body["envVars"] = env;
  std::string target = "/init", payload = body.dump();
  const std::chrono::milliseconds limit = std::chrono::seconds(5);
  auto r = co_await http::fetch(ep, http::bhttp::verb::post, std::move(target), headers, std::move(payload), limit);
  if (!r) co_return std::unexpected(std::move(r.error()).context("envd /init after restore"));
  if (r->status != 204 && r->status != 200)
    co_return make_error(ErrorCode::kInternal, "envd /init after restore answered " + std::to_string(r->status));
  co_return ok();
}

// What the team's stored snapshots hold on disk, in bytes.
Result<uint64_t> team_snapshot_bytes(store::Store& st, const std::string& team) {
  COPPICE_ASSIGN_OR_RETURN(auto rows, st.list_snapshots(team));
  uint64_t sum = 0;
  for (const auto& r : rows) sum += static_cast<uint64_t>(std::max<int64_t>(0, r.disk_bytes));
  return sum;
}

}  // namespace

Result<std::optional<std::string>> copy_frozen(sandbox::Backend& backend, const std::string& id, const std::string& dir,
                                               bool only_if_all_in_files) {
  if (auto f = backend.freeze(id); !f) return std::unexpected(std::move(f.error()).context("freeze"));
  std::optional<std::string> out;
  Status copied = ok();
  if (!only_if_all_in_files || backend.runs_only_its_own(id)) {
    if (auto c = backend.copy_layer(id, dir)) {
      out = std::move(*c);
    } else {
      copied = std::unexpected(std::move(c.error()));
    }
  }
  auto thawed = backend.thaw(id);
  if (!thawed || !copied) {
    if (out) (void)backend.remove_layer(dir);
    return std::unexpected(!copied ? std::move(copied.error()) : std::move(thawed.error()).context("thaw"));
  }
  return out;
}


std::shared_ptr<const SandboxManager::StartPoint> SandboxManager::start_point_of(const store::SnapshotRecord& r) {
  auto from = std::make_shared<StartPoint>();
  from->snapshot_id = r.id;
  from->parent = r.source_sandbox;
  from->template_id = r.template_id;
  from->layers = layers_from_json(r.data.value("layers", json::array()));
  if (r.memory) from->images = r.data.value("images", std::string());
  from->old_token = r.data.value("token", std::string());
  from->cpu_count = r.data.value("cpuCount", 1);
  from->memory_mb = r.data.value("memoryMB", 512);
  from->disk_mb = r.data.value("diskMB", 0);
  return from;
}

// --- public entry points ---

asio::awaitable<Result<SnapshotView>> SandboxManager::create_snapshot(std::string id, TeamScope team, std::string name,
                                                                      bool memory) {
  auto op = do_create_snapshot(std::move(id), std::move(team), std::move(name), memory);
  co_return co_await asio::co_spawn(owner_, std::move(op), use_awaitable);
}

asio::awaitable<Status> SandboxManager::delete_snapshot(std::string ref, std::string team) {
  auto op = do_delete_snapshot(std::move(ref), std::move(team));
  co_return co_await asio::co_spawn(owner_, std::move(op), use_awaitable);
}

Result<std::vector<SnapshotView>> SandboxManager::list_snapshots(const std::string& team,
                                                                 const std::string& source_sandbox) const {
  auto rows = store_.list_snapshots(team, source_sandbox);
  if (!rows) return std::unexpected(rows.error());
  std::vector<SnapshotView> out;
  for (const auto& r : *rows) out.push_back(snapshot_view(r));
  return out;
}

// --- on the owner ---

asio::awaitable<Result<SandboxManager::Taken>> SandboxManager::take(std::shared_ptr<Live> l, std::string layer_id,
                                                                    bool memory, bool durable) {
  const std::string id = l->id;
  COPPICE_CO_TRY(transition(*l, SandboxState::kPausing));  // one operation at a time; a kill waits (409)
  Taken t;
  t.dir = snapshots_dir() + "/" + layer_id;
  t.images = memory ? t.dir + ".images" : "";
  const std::string parent = snapshots_dir();
  auto job = [this, id, t, parent, durable]() -> Result<Taken> {
    Taken out = t;
    auto t0 = std::chrono::steady_clock::now();
    COPPICE_TRY_CTX(sys::make_dirs(parent, 0700), "snapshots dir");
    // With memory: the processes are dumped and, still stopped, their
    // files copied: both of one instant. Files only: frozen for the copy.
    Result<std::string> copied = make_error(ErrorCode::kInternal, "no copy");
    auto t1 = t0;
    if (!out.images.empty()) {
      auto copy_files = [&]() -> Status {
        t1 = std::chrono::steady_clock::now();
        copied = backend_.copy_layer(id, out.dir);
        if (!copied) return std::unexpected(copied.error());
        return ok();
      };
      if (auto c = backend_.checkpoint(id, out.images, /*leave_running=*/true, durable, copy_files); !c) {
        (void)sys::remove_tree(out.images);
        if (copied) (void)backend_.remove_layer(out.dir);
        return std::unexpected(std::move(c.error()));
      }
    } else {
      COPPICE_ASSIGN_OR_RETURN(auto c, copy_frozen(backend_, id, out.dir, /*only_if_all_in_files=*/false));
      copied = std::move(*c);
    }
    out.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    auto used = backend_.layer_bytes(id);
    out.bytes = (used ? *used : 0) + (out.images.empty() ? 0 : flat_dir_bytes(out.images));
    out.top.dir = *copied;
    COPPICE_LOG(debug).sandbox(id) << "taken: checkpoint " << ms_between(t0, t1) << " ms, files "
                                   << ms_between(t1, std::chrono::steady_clock::now()) << " ms";
    return out;
  };
  auto r = co_await run_on(workers_, std::move(job));
  (void)transition(*l, SandboxState::kRunning);
  if (!r) co_return std::unexpected(std::move(r.error()).context("snapshot of sandbox " + id));
  r->top.host_root = l->handle.host_uid;
  co_return r;
}

asio::awaitable<Result<SnapshotView>> SandboxManager::do_create_snapshot(std::string id, TeamScope team,
                                                                         std::string name, bool memory) {
  auto found = find(id, team);
  if (!found) co_return std::unexpected(found.error());
  auto l = *found;
  if (l->state != SandboxState::kRunning) {
    co_return make_error(ErrorCode::kFailedPrecondition,
                         "sandbox " + id + " is " + std::string(state_label(l->state)) + ": only a running sandbox can be snapshotted");
  }
  if (l->lowers.size() >= sandbox::kMaxLowerLayers) {
    co_return make_error(ErrorCode::kFailedPrecondition, "sandbox " + id + " stands on " +
                                                             std::to_string(l->lowers.size()) +
                                                             " snapshot layers already, the most a sandbox may have");
  }
  // The team's snapshots' budget: refused at once when it is spent, and
  // below once the new one's size is known.
  const uint64_t budget = static_cast<uint64_t>(std::max(0, cfg_.snapshot_disk_mb)) << 20;
  const std::string owner_team = l->team;
  auto kept_job = [this, owner_team] { return team_snapshot_bytes(store_, owner_team); };
  uint64_t kept = 0;
  if (budget > 0) {
    auto k = co_await run_on(workers_, std::move(kept_job));
    if (!k) co_return std::unexpected(std::move(k.error()).context("snapshot of sandbox " + id));
    kept = *k;
    if (kept >= budget) co_return snapshot_budget_error(kept, 0, budget);
  }
  std::string snap_id = new_sandbox_id();
  const std::string dir = snapshots_dir() + "/" + snap_id;
  ++pinned_layers_[dir];
  auto unpin_now = [this, dir] {
    if (--pinned_layers_[dir] <= 0) pinned_layers_.erase(dir);
  };
  ScopeExit unpin(unpin_now);
  auto taking = take(l, snap_id, memory, /*durable=*/true);
  auto taken = co_await std::move(taking);
  if (!taken) co_return std::unexpected(taken.error());
  std::vector<sandbox::LowerLayer> layers{taken->top};
  layers.insert(layers.end(), l->lowers.begin(), l->lowers.end());
  store::SnapshotRecord rec;
  rec.id = snap_id;
  rec.team = l->team;
  rec.name = name;
  rec.source_sandbox = id;
  rec.template_id = l->template_id;
  rec.memory = memory;
  rec.created_at = now_ms();
  rec.disk_bytes = static_cast<int64_t>(taken->bytes);
  rec.data = json{{"layers", layers_json(layers)},     {"images", taken->images},
                  {"token", l->token},                {"cpuCount", l->cpu_count},
                  {"memoryMB", l->memory_mb},         {"diskMB", l->disk_mb},
                  {"lineage", l->lineage.is_null() ? json::object() : l->lineage}};
  // The budget is checked again where the snapshot is stored, in the same
  // store operation: snapshots taken at the same time are stored one after
  // the other, and each sees the others' bytes.
  bool over_budget = false;
  auto op = [rec, budget, &over_budget](store::Store& st) -> Status {
    if (budget > 0) {
      COPPICE_ASSIGN_OR_RETURN(uint64_t sum, team_snapshot_bytes(st, rec.team));
      const auto more = static_cast<uint64_t>(rec.disk_bytes);
      if (sum + more > budget) {
        over_budget = true;
        return snapshot_budget_error(sum, more, budget);
      }
    }
    return st.add_snapshot(rec);
  };
  auto w = co_await store_q_.write(std::move(op));
  if (!w) {
    // Not stored: its copy and checkpoint go with the pin.
    unpin.release();
    unpin_now();
    co_await collect_layers();
    if (over_budget) co_return std::unexpected(std::move(w.error()));
    co_return std::unexpected(std::move(w.error()).context("store snapshot"));
  }
  COPPICE_LOG(info).sandbox(id) << "snapshot " << snap_id << (memory ? " (memory and files)" : " (files)")
                                << " taken in " << taken->ms << " ms, " << taken->bytes << " bytes";
  co_return snapshot_view(rec);
}

asio::awaitable<Status> SandboxManager::do_delete_snapshot(std::string ref, std::string team) {
  auto find_job = [this, team, ref] { return store_.find_snapshot(team, ref); };
  auto found = co_await run_on(workers_, std::move(find_job));
  if (!found) co_return std::unexpected(found.error());
  const std::string id = found->id;
  auto op = [id, team](store::Store& st) { return st.delete_snapshot(id, team); };
  auto w = co_await store_q_.write(std::move(op));
  if (!w) co_return std::unexpected(w.error());
  co_await collect_layers();
  co_return ok();
}

asio::awaitable<Result<SandboxView>> SandboxManager::do_create_from(CreateParams p,
                                                                    std::shared_ptr<const StartPoint> from) {
  auto t0 = std::chrono::steady_clock::now();
  if (stopping_) co_return make_error(ErrorCode::kUnavailable, "the gateway is shutting down");
  auto tmpl = templates_.get(from->template_id);
  if (!tmpl) {
    co_return make_error(ErrorCode::kFailedPrecondition,
                         "template " + from->template_id + " the snapshot was taken on is gone");
  }
  const bool memory = !from->images.empty();
  // A restored envd holds the source's token until told another: a child of
  // a secured source is always secured.
  auto l = new_live(*tmpl, p.secure || !from->old_token.empty());
  while (live_.count(l->id)) l->id = new_sandbox_id();
  l->state_dir = cfg_.state_dir + "/sandboxes/" + l->id;
  l->cpu_count = from->cpu_count;
  l->memory_mb = from->memory_mb;
  if (cfg_.disk_quota) l->disk_mb = from->disk_mb;
  l->lowers = from->layers;
  l->lineage = json::object();
  if (!from->parent.empty()) l->lineage["parentSandboxID"] = from->parent;
  if (!from->snapshot_id.empty()) l->lineage["snapshotID"] = from->snapshot_id;
  live_[l->id] = l;  // reserved: invisible until handed out
  EnvdInit init;
  init.access_token = l->token;
  init.env_vars = tmpl->env;
  for (const auto& [k, v] : p.env_vars) init.env_vars[k] = v;
  auto spec = spec_for(*l, *tmpl, init);
  // Every restore reads the one checkpoint (children restore it in
  // parallel) and works in a dir of its own beside it: criu's log and stats.
  const std::string work = memory ? from->images + ".restore-" + l->id : "";
  spec.boot_id = from->boot_id;
  if (memory) {
    spec.restore_from = from->images;
    spec.restore_work_dir = work;
    spec.init_json.clear();
    ++pinned_layers_[work];
    ++pinned_layers_[from->images];  // a snapshot deleted meanwhile keeps them until we are done
  }
  ScopeExit unpin([this, work, images = from->images] {
    if (work.empty()) return;
    for (const std::string& p : {work, images}) {
      if (--pinned_layers_[p] <= 0) pinned_layers_.erase(p);
    }
  });
  auto job = [this, spec, work]() -> std::pair<std::string, Result<sandbox::SandboxHandle>> {
    std::string tree = templates::tree_key(spec.rootfs);
    auto h = backend_.create(spec);
    if (!work.empty()) (void)sys::remove_tree(work);
    return {std::move(tree), std::move(h)};
  };
  auto made = co_await run_on(workers_, std::move(job));
  const auto t_made = std::chrono::steady_clock::now();
  l->tree = std::move(made.first);
  auto& handle = made.second;
  if (!handle) {
    live_.erase(l->id);
    metrics_.create_failures.inc();
    // A snapshot deleted meanwhile kept its checkpoint for us (pinned until
    // we return): nobody stands on it now.
    if (memory && !from->snapshot_id.empty()) asio::co_spawn(owner_, collect_layers(), asio::detached);
    COPPICE_LOG_RATE(warn, 5) << "create from " << (from->snapshot_id.empty() ? "a fork of " + from->parent
                                                                              : "snapshot " + from->snapshot_id)
                              << " failed: " << handle.error().to_string();
    co_return std::unexpected(std::move(handle.error()).context(memory ? "restore sandbox" : "create sandbox"));
  }
  l->handle = *handle;
  Status s = ok();
  if (memory) {
    // Not routed yet: nobody can reach it with the source's token meanwhile.
    std::string socket = l->handle.envd_socket, old_token = from->old_token, token = l->token;
    std::map<std::string, std::string> env = p.env_vars;
    auto rekey = envd_rekey(std::move(socket), std::move(old_token), std::move(token), std::move(env));
    s = co_await std::move(rekey);
  } else if (!from->all_in_files) {
    std::string socket = l->handle.envd_socket, token = l->token;
    Template t = *tmpl;
    auto commands = run_template_commands(std::move(socket), std::move(token), std::move(t));
    s = co_await std::move(commands);
  }
  if (!s) {
    (void)transition(*l, SandboxState::kGone);
    co_await discard(l);
    metrics_.create_failures.inc();
    co_return std::unexpected(std::move(s.error()));
  }
  // (p.env_vars were given to envd above or at its start; hand_out keeps
  // them in its record, for a resume without memory.)
  const auto t_init = std::chrono::steady_clock::now();
  auto v = co_await hand_out(l, p, false, t0);
  COPPICE_LOG(debug).sandbox(l->id) << "started from "
                                    << (memory ? "a checkpoint" : from->all_in_files ? "a fork's files" : "files")
                                    << ": sandbox "
                                    << ms_between(t0, t_made) << " ms (queue, launch, restore), envd "
                                    << ms_between(t_made, t_init) << " ms, handed out "
                                    << ms_between(t_init, std::chrono::steady_clock::now()) << " ms";
  if (!v) metrics_.create_failures.inc();
  co_return v;
}

asio::awaitable<void> SandboxManager::collect_layers() {
  // Three steps, in this order, so that nothing an operation in flight is
  // making is taken for garbage: the names on disk first; then, on the
  // owner, what live sandboxes stand on and what operations have pinned (a
  // snapshot or fork pins its layer and images before making them and lets
  // go only once a sandbox or the store names them); then the store.
  const std::string dir = snapshots_dir();
  auto list_job = [dir]() -> Result<std::vector<std::string>> {
    std::vector<std::string> names;
    if (!sys::path_exists(dir)) return names;
    DIR* d = ::opendir(dir.c_str());
    if (!d) return errno_error("open " + dir);
    while (auto* e = ::readdir(d)) {
      if (e->d_name[0] != '.') names.emplace_back(e->d_name);
    }
    ::closedir(d);
    return names;
  };
  auto listed = co_await run_on(workers_, std::move(list_job));
  if (!listed) {
    COPPICE_LOG_RATE(warn, 60) << "snapshots: collect: " << listed.error().to_string();
    co_return;
  }
  if (listed->empty()) co_return;
  std::set<std::string> keys, pinned;
  for (const auto& [id, l] : live_)
    for (const auto& layer : l->lowers) keys.insert(layer_key(layer.dir));
  for (const auto& [path, n] : pinned_layers_) pinned.insert(path);
  auto job = [this, keys, pinned, dir, names = std::move(*listed)]() mutable -> Status {
    COPPICE_ASSIGN_OR_RETURN(auto rows, store_.list_snapshots(""));
    std::set<std::string> images;
    for (const auto& r : rows) {
      for (const auto& layer : layers_from_json(r.data.value("layers", json::array()))) keys.insert(layer_key(layer.dir));
      if (auto i = r.data.find("images"); i != r.data.end() && i->is_string() && !i->get<std::string>().empty())
        images.insert(i->get<std::string>());
    }
    for (const auto& n : names) {
      const std::string path = dir + "/" + n;
      const bool is_images = n.find(".images") != std::string::npos;
      // An operation pins a layer's dir; its images are "<dir>.images".
      const std::string layer_path = is_images ? path.substr(0, path.rfind(".images")) : path;
      if (pinned.count(path) || pinned.count(layer_path)) continue;
      if (is_images ? images.count(path) > 0 : keys.count(n.substr(0, n.find('.'))) > 0) continue;
      COPPICE_LOG(info) << "snapshots: " << n << " is no longer needed: removing it";
      auto r = is_images ? sys::remove_tree(path) : backend_.remove_layer(path);
      if (!r) {
        COPPICE_LOG(warn) << "snapshots: remove " << path << ": " << r.error().to_string();
      }
    }
    return ok();
  };
  auto r = co_await run_on(workers_, std::move(job));
  if (!r) {
    COPPICE_LOG_RATE(warn, 60) << "snapshots: collect: " << r.error().to_string();
  }
}

// --- directory snapshots ---

asio::awaitable<Result<store::DirSnapshotRecord>> SandboxManager::create_dir_snapshot(std::string id, TeamScope team,
                                                                                      std::string path,
                                                                                      std::string name) {
  auto op = do_create_dir_snapshot(std::move(id), std::move(team), std::move(path), std::move(name));
  co_return co_await asio::co_spawn(owner_, std::move(op), use_awaitable);
}

asio::awaitable<Status> SandboxManager::restore_dir_snapshot(std::string id, TeamScope team, std::string name,
                                                             std::string path) {
  auto op = do_restore_dir_snapshot(std::move(id), std::move(team), std::move(name), std::move(path));
  co_return co_await asio::co_spawn(owner_, std::move(op), use_awaitable);
}

asio::awaitable<Result<store::DirSnapshotRecord>> SandboxManager::do_create_dir_snapshot(std::string id,
                                                                                         TeamScope team,
                                                                                         std::string path,
                                                                                         std::string name) {
  auto found = find(id, team);
  if (!found) co_return std::unexpected(found.error());
  auto l = *found;
  if (l->state != SandboxState::kRunning) {
    co_return make_error(ErrorCode::kFailedPrecondition, "sandbox " + id + " is " + std::string(state_label(l->state)));
  }
  store::DirSnapshotRecord rec;
  rec.team = l->team;
  rec.name = name;
  rec.id = new_sandbox_id();
  rec.source_sandbox = id;
  rec.path = path;
  rec.host_root = l->handle.host_uid;
  rec.created_at = now_ms();
  const sandbox::SandboxHandle h = l->handle;
  const std::string parent = dir_snapshots_dir(), dst = parent + "/" + rec.id;
  auto job = [this, h, path, parent, dst, rec]() mutable -> Result<store::DirSnapshotRecord> {
    if (auto taken = store_.get_dir_snapshot(rec.team, rec.name); taken) {
      return make_error(ErrorCode::kAlreadyExists, "the team has a directory snapshot named " + rec.name + " already");
    }
    COPPICE_TRY_CTX(sys::make_dirs(parent, 0700), "directory snapshots dir");
    COPPICE_ASSIGN_OR_RETURN(uint64_t bytes, backend_.save_dir(h, path, dst, kMaxDirSnapshotBytes));
    rec.bytes = static_cast<int64_t>(bytes);
    if (auto w = store_.add_dir_snapshot(rec); !w) {
      (void)sys::remove_tree(dst);
      return std::unexpected(w.error());
    }
    return rec;
  };
  auto r = co_await run_on(workers_, std::move(job));
  if (!r) co_return std::unexpected(std::move(r.error()).context("directory snapshot of sandbox " + id));
  co_return r;
}

asio::awaitable<Status> SandboxManager::do_restore_dir_snapshot(std::string id, TeamScope team, std::string name,
                                                                std::string path) {
  auto found = find(id, team);
  if (!found) co_return std::unexpected(found.error());
  auto l = *found;
  if (l->state != SandboxState::kRunning) {
    co_return make_error(ErrorCode::kFailedPrecondition, "sandbox " + id + " is " + std::string(state_label(l->state)));
  }
  const sandbox::SandboxHandle h = l->handle;
  const std::string owner_team = l->team, dir = dir_snapshots_dir();
  auto job = [this, h, owner_team, name, path, dir]() -> Status {
    COPPICE_ASSIGN_OR_RETURN(auto rec, store_.get_dir_snapshot(owner_team, name));
    return backend_.restore_dir(h, dir + "/" + rec.id, static_cast<uint32_t>(rec.host_root), path);
  };
  auto r = co_await run_on(workers_, std::move(job));
  if (!r) co_return std::unexpected(std::move(r.error()).context("restore into sandbox " + id));
  co_return ok();
}

asio::awaitable<Status> SandboxManager::delete_dir_snapshot(std::string team, std::string name) {
  const std::string dir = dir_snapshots_dir();
  auto job = [this, team, name, dir]() -> Status {
    COPPICE_ASSIGN_OR_RETURN(auto rec, store_.get_dir_snapshot(team, name));
    COPPICE_TRY(store_.delete_dir_snapshot(team, name));
    return sys::remove_tree(dir + "/" + rec.id);
  };
  co_return co_await run_on(workers_, std::move(job));
}

}  // namespace coppice::core
