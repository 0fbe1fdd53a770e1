// Fork (SandboxManager::fork): N children of a running sandbox, each with
// its memory and files, each its own sandbox.
//
// Three ways, the cheapest that is faithful:
//  * The parent runs nothing of its users' (take_if_all_in_files: only its
//    init and envd, envd holding nothing for them, no volume): its files
//    are all there is of it. They are copied frozen (one reflink or btrfs
//    snapshot of its writable layer) and
//     - given to spares: sandboxes of its template's warm pool, which are
//       running already and nobody has used, take the copy's changes into
//       their own writable layer (Backend::adopt_fork) and its boot id. No
//       process is started for such a child: it costs the merge of what
//       the parent changed, so only a layer of at most kForkSpareMaxEntries
//       entries and kForkSpareMaxBytes goes this way, and only where the
//       spare is what a child started afresh would be (same template build
//       and resources, no start command, no snapshot layers under the
//       parent);
//     - or each child starts afresh on the copy as a lower layer
//       (do_create_from), when there is no spare or the layer does not fit.
//  * Otherwise its processes are checkpointed with criu (leave running) and
//    every child restores them on the copy.
// Lineage (parentSandboxID) is kept in each child's record either way.
#include <fcntl.h>

#include "common/ids.h"
#include "common/log.h"
#include "common/scope_exit.h"
#include "core/envd_client.h"
#include "core/offload.h"
#include "core/sandbox_manager.h"
#include "core/sandbox_manager_internal.h"
#include "sys/fd.h"
#include "sys/fsutil.h"
#include "sys/tree_copy.h"

namespace coppice::core {

using asio::use_awaitable;

// The most entries a parent's writable layer may hold for its children to be
// made on spares: each child merges all of them (a few syscalls each), and
// past a few hundred a child started afresh on the copy is cheaper.
constexpr uint64_t kForkSpareMaxEntries = 256;
// And the most file bytes: where the file system cannot reflink, each child
// copies them.
constexpr uint64_t kForkSpareMaxBytes = 16ull << 20;

asio::awaitable<Result<std::vector<ForkChild>>> SandboxManager::fork(std::string id, TeamScope team, int count,
                                                                     std::optional<int> timeout_s) {
  auto op = do_fork(std::move(id), std::move(team), count, timeout_s);
  co_return co_await asio::co_spawn(owner_, std::move(op), use_awaitable);
}

asio::awaitable<Result<std::optional<SandboxManager::Taken>>> SandboxManager::take_if_all_in_files(
    std::shared_ptr<Live> l, std::string layer_id) {
  const std::string id = l->id;
  using Maybe = std::optional<Taken>;
  // A volume's mount is no file of its own: criu's way.
  auto mounts_job = [this, id] { return store_.volume_mounts(id); };
  auto mounts = co_await run_on(workers_, std::move(mounts_job));
  if (!mounts || !mounts->empty()) co_return Maybe();
  // envd holds nothing for its users (a polling watcher would be lost).
  const http::Endpoint ep{l->handle.envd_socket, "", 0};
  auto before = co_await envd_held(ep, l->token);
  if (!before || before->watchers > 0) co_return Maybe();
  COPPICE_CO_TRY(transition(*l, SandboxState::kPausing));  // one operation at a time
  Taken t;
  t.dir = snapshots_dir() + "/" + layer_id;
  const std::string parent = snapshots_dir(), boot_file = l->state_dir + "/boot_id";
  // Frozen: no process can start between the look and the copy.
  auto job = [this, id, t, parent, boot_file]() -> Result<Maybe> {
    auto t0 = std::chrono::steady_clock::now();
    COPPICE_TRY_CTX(sys::make_dirs(parent, 0700), "snapshots dir");
    COPPICE_ASSIGN_OR_RETURN(auto c, copy_frozen(backend_, id, t.dir, /*only_if_all_in_files=*/true));
    Maybe out;
    if (!c) return out;
    out = t;
    out->top.dir = std::move(*c);
    out->ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    auto used = backend_.layer_bytes(id);
    out->bytes = used ? *used : 0;
    if (auto b = sys::read_file(boot_file)) out->boot_id = b->substr(0, b->find('\n'));
    return out;
  };
  auto r = co_await run_on(workers_, std::move(job));
  (void)transition(*l, SandboxState::kRunning);
  if (!r) co_return std::unexpected(std::move(r.error()).context("fork of sandbox " + id));
  if (!*r) co_return Maybe();
  // No watcher was made while the files were copied (else it goes by criu).
  auto after = co_await envd_held(ep, l->token);
  if (!after || after->watchers_made != before->watchers_made) {
    const std::string dir = t.dir;
    auto drop = [this, dir] { return backend_.remove_layer(dir); };
    (void)co_await run_on(workers_, std::move(drop));
    co_return Maybe();
  }
  (*r)->top.host_root = l->handle.host_uid;
  co_return r;
}

asio::awaitable<Result<std::vector<ForkChild>>> SandboxManager::do_fork(std::string id, TeamScope team, int count,
                                                                        std::optional<int> timeout_s) {
  auto found = find(id, team);
  if (!found) co_return std::unexpected(found.error());
  auto l = *found;
  if (l->state != SandboxState::kRunning) {
    co_return make_error(ErrorCode::kFailedPrecondition,
                         "sandbox " + id + " is " + std::string(state_label(l->state)) + ": only a running sandbox can be forked");
  }
  if (l->lowers.size() >= sandbox::kMaxLowerLayers) {
    co_return make_error(ErrorCode::kFailedPrecondition,
                         "sandbox " + id + " stands on the most snapshot layers a sandbox may have");
  }
  const std::string layer_id = new_sandbox_id();
  const std::string dir = snapshots_dir() + "/" + layer_id;
  ++pinned_layers_[dir];
  auto unpin_now = [this, dir] {
    if (--pinned_layers_[dir] <= 0) pinned_layers_.erase(dir);
  };
  ScopeExit unpin(unpin_now);
  auto t0 = std::chrono::steady_clock::now();
  // Nothing but its files to copy (an idle sandbox): no checkpoint.
  auto looking = take_if_all_in_files(l, layer_id);
  auto files_only = co_await std::move(looking);
  if (!files_only) co_return std::unexpected(files_only.error());
  const bool all_in_files = files_only->has_value();
  Result<Taken> taken = make_error(ErrorCode::kInternal, "not taken");
  if (all_in_files) {
    taken = std::move(**files_only);
  } else {
    auto taking = take(l, layer_id, /*memory=*/true, /*durable=*/false);
    taken = co_await std::move(taking);
  }
  if (!taken) co_return std::unexpected(taken.error());
  auto t1 = std::chrono::steady_clock::now();
  auto from = std::make_shared<StartPoint>();
  from->parent = id;
  from->template_id = l->template_id;
  from->layers.push_back(taken->top);
  from->layers.insert(from->layers.end(), l->lowers.begin(), l->lowers.end());
  from->images = taken->images;
  from->all_in_files = all_in_files;
  from->boot_id = taken->boot_id;
  from->old_token = all_in_files ? "" : l->token;
  from->cpu_count = l->cpu_count;
  from->memory_mb = l->memory_mb;
  from->disk_mb = l->disk_mb;
  CreateParams p;
  p.template_id = l->template_id;
  p.team = l->team;
  p.timeout_s = timeout_s;
  p.metadata = l->metadata;
  // Its environment: a child restored by criu has it in envd's memory; one
  // started afresh gets it here; both keep it for a resume without memory.
  if (l->env_vars.is_object()) {
    for (auto& [k, v] : l->env_vars.items())
      if (v.is_string()) p.env_vars[k] = v.get<std::string>();
  }
  p.secure = !l->token.empty();
  p.network = l->network;
  p.public_traffic = l->traffic_token.empty();
  p.mask_request_host = l->mask_host;
  p.https_ports = l->https_ports;

  // The children in parallel: each create runs its kernel work on a worker.
  struct Gather {
    std::vector<std::optional<ForkChild>> out;
    int left;
    asio::steady_timer done;
  };
  auto g = std::make_shared<Gather>(Gather{std::vector<std::optional<ForkChild>>(static_cast<size_t>(count)), count,
                                           asio::steady_timer(owner_, asio::steady_timer::time_point::max())});
  std::vector<std::shared_ptr<Live>> spares;
  if (all_in_files) {
    auto taking_spares = take_fork_spares(l, taken->top.dir, count);
    spares = co_await std::move(taking_spares);
  }
  auto on_spares = std::make_shared<int>(0);
  for (int i = 0; i < count; ++i) {
    auto child = static_cast<size_t>(i) < spares.size()
                     ? fork_onto_spare(spares[static_cast<size_t>(i)], p, from, taken->top, on_spares)
                     : do_create_from(p, from);
    asio::co_spawn(owner_, std::move(child),
                   asio::bind_executor(owner_, [g, i](std::exception_ptr e, Result<SandboxView> r) {
                     g->out[static_cast<size_t>(i)] =
                         e ? ForkChild(make_error(ErrorCode::kInternal, "fork child failed")) : std::move(r);
                     if (--g->left == 0) g->done.cancel();
                   }));
  }
  if (g->left > 0) co_await g->done.async_wait(asio::as_tuple(use_awaitable));
  // The checkpoint is spent (every child has restored it); the layer stays
  // while a child stands on it.
  const std::string images = taken->images;
  auto drop = [images] {
    if (!images.empty()) (void)sys::remove_tree(images);
    return true;
  };
  (void)co_await run_on(workers_, std::move(drop));
  unpin.release();
  unpin_now();
  co_await collect_layers();
  std::vector<ForkChild> out;
  int made = 0;
  for (auto& c : g->out) {
    made += (*c).has_value() ? 1 : 0;
    out.push_back(std::move(*c));
  }
  metrics_.fork_children_spare.inc(static_cast<uint64_t>(*on_spares));
  (all_in_files ? metrics_.fork_children_files : metrics_.fork_children_checkpoint)
      .inc(static_cast<uint64_t>(made - *on_spares));
  auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
  COPPICE_LOG(info).sandbox(id) << "forked: " << made << " of " << count << " children (" << *on_spares
                                << " on spares) in "
                                << ms(t0, std::chrono::steady_clock::now()) << " ms ("
                                << (all_in_files ? "its files, all there was of it, " : "checkpoint and files ")
                                << ms(t0, t1) << " ms, " << taken->bytes << " bytes)";
  co_return out;
}

asio::awaitable<std::vector<std::shared_ptr<SandboxManager::Live>>> SandboxManager::take_fork_spares(
    std::shared_ptr<Live> parent, std::string layer, int count) {
  std::vector<std::shared_ptr<Live>> out;
  auto tmpl = templates_.get(parent->template_id);
  // A spare is what a child started afresh would be only if: the template
  // starts nothing of its own (the parent, running nothing of its users',
  // runs none of it either), the parent stands on the template alone, on
  // the build the pool is of, with the template's resources, and is secured
  // (every pooled sandbox is).
  if (!tmpl || !tmpl->start_cmd.empty() || !tmpl->ready_cmd.empty() || !parent->lowers.empty() ||
      parent->token.empty() || parent->build != build_of(*tmpl)) {
    co_return out;
  }
  if (resources_of(*tmpl) != Resources{parent->cpu_count, parent->memory_mb, parent->disk_mb}) co_return out;
  {
    std::lock_guard lk(pools_mu_);
    auto it = pools_.find(tmpl->name);
    if (it == pools_.end() || it->second->refiller->ready() == 0) co_return out;
  }
  auto scan_job = [layer]() -> Result<sys::LayerScan> {
    auto fd = sys::open_file(layer, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (!fd) return std::unexpected(std::move(fd.error()));
    return sys::scan_overlay_layer(fd->get(), kForkSpareMaxEntries);
  };
  auto scan = co_await run_on(workers_, std::move(scan_job));
  if (scan && scan->refused.empty() && scan->bytes > kForkSpareMaxBytes) {
    scan->refused = "holds more than " + std::to_string(kForkSpareMaxBytes >> 20) + " MiB";
  }
  if (!scan || !scan->refused.empty()) {
    COPPICE_LOG(debug).sandbox(parent->id) << "fork: no spares, its layer: "
                                           << (scan ? scan->refused : scan.error().to_string());
    co_return out;
  }
  while (static_cast<int>(out.size()) < count) {
    auto s = take_pooled(*tmpl);
    if (!s) break;
    out.push_back(std::move(s));
  }
  co_return out;
}

asio::awaitable<Result<SandboxView>> SandboxManager::fork_onto_spare(std::shared_ptr<Live> s, CreateParams p,
                                                                     std::shared_ptr<const StartPoint> from,
                                                                     sandbox::LowerLayer layer,
                                                                     std::shared_ptr<int> on_spares) {
  const auto t0 = std::chrono::steady_clock::now();
  auto job = [this, h = s->handle, layer, boot = from->boot_id] {
    return backend_.adopt_fork(h, layer.dir, layer.host_root, boot);
  };
  auto adopted = co_await run_on(workers_, std::move(job));
  if (!adopted) {
    COPPICE_LOG_RATE(warn, 5).sandbox(s->id) << "fork onto a spare failed (a child is made afresh instead): "
                                             << adopted.error().to_string();
    (void)transition(*s, SandboxState::kGone);
    co_await discard(s);
    auto afresh = do_create_from(std::move(p), std::move(from));
    co_return co_await std::move(afresh);
  }
  s->lineage = json::object();
  s->lineage["parentSandboxID"] = from->parent;
  const auto t_adopted = std::chrono::steady_clock::now();
  auto v = co_await hand_out(s, p, true, t0);
  if (v) ++*on_spares;
  COPPICE_LOG(debug).sandbox(s->id) << "fork child on a spare: " << *adopted << " entries merged in "
                                    << std::chrono::duration<double, std::milli>(t_adopted - t0).count() << " ms";
  co_return v;
}

}  // namespace coppice::core
