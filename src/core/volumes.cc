// The manager's volume operations: make and remove volumes (on a worker: a
// subvolume ioctl, a rename into the trash), and mount them into running
// sandboxes (on the owner, which knows the sandbox's state, with the kernel
// work on a worker). Which volume is mounted where is in the store
// (volume_mounts), written before the mount and removed after the unmount, so
// a volume is never deleted under a sandbox, a gateway restart included.
#include "core/volumes.h"

#include "common/ids.h"
#include "common/log.h"
#include "core/offload.h"
#include "core/sandbox_manager.h"
#include "core/sandbox_manager_internal.h"
#include "sandbox/volume_files.h"

namespace coppice::core {

Result<std::string> clean_mount_path(std::string_view path) {
  const std::string shown(path.substr(0, 200));
  auto bad = [&](const std::string& why) {
    return make_error(ErrorCode::kInvalidArgument, "volume mount path \"" + shown + "\" " + why);
  };
  if (path.size() > 1024) return bad("is longer than 1024 bytes");
  auto clean = sandbox::volfs::clean_path(path);
  if (!clean) return bad("is refused: " + clean.error().message());
  if (*clean == "/") return bad("must not be the sandbox's root");
  const std::string first = clean->substr(1, clean->find('/', 1) - 1);
  if (first == "proc" || first == "sys" || first == "dev" || first == ".coppice")
    return bad("is in /" + first + ", which the sandbox's own file systems hold");
  return clean;
}

asio::awaitable<Result<store::VolumeRecord>> SandboxManager::create_volume(std::string team, std::string name,
                                                                           uint64_t quota_bytes) {
  // Without quotas (--disk-quota=off) nothing caps a volume: it says so (0).
  if (!backend_.volume_quotas()) quota_bytes = 0;
  auto job = [this, team, name, quota_bytes]() -> Result<store::VolumeRecord> {
    store::VolumeRecord v;
    v.id = new_sandbox_id();
    v.team = team;
    v.name = name;
    v.token = new_token();
    v.quota_bytes = static_cast<int64_t>(quota_bytes);
    v.created_at = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
    // Taken names are refused before anything is made.
    if (auto taken = store_.get_volume_by_name(team, name); taken) {
      return make_error(ErrorCode::kAlreadyExists, "the team has a volume named " + name + " already");
    }
    // The directory first: a crash before the row leaves only a directory
    // no row names, never a row without its directory.
    auto dir = backend_.make_volume(v.id, quota_bytes);
    if (!dir) return std::unexpected(std::move(dir.error()).context("create volume " + name));
    if (auto s = store_.add_volume(v); !s) {
      (void)backend_.remove_volume(v.id);
      return std::unexpected(s.error());
    }
    COPPICE_LOG(info) << "volume " << v.id << " (" << name << ", team " << team << ") created, cap "
                      << (quota_bytes >> 20) << " MiB";
    return v;
  };
  auto op = run_on(workers_, std::move(job));
  co_return co_await std::move(op);
}

asio::awaitable<Status> SandboxManager::delete_volume(std::string id, std::string team) {
  auto job = [this, id, team]() -> Status {
    // The in-use check and the delete are one transaction in the store.
    COPPICE_TRY(store_.delete_volume(id, team));
    if (auto s = backend_.remove_volume(id); !s) {
      COPPICE_LOG(error) << "volume " << id << " deleted, its files not removed: " << s.error().to_string();
    }
    COPPICE_LOG(info) << "volume " << id << " deleted";
    return ok();
  };
  auto op = run_on(workers_, std::move(job));
  co_return co_await std::move(op);
}

asio::awaitable<Status> SandboxManager::mount_volume(std::string sandbox_id, TeamScope team, VolumeMountParam m) {
  auto op = do_mount_volume(std::move(sandbox_id), std::move(team), std::move(m));
  co_return co_await on_owner(std::move(op));
}

asio::awaitable<Status> SandboxManager::unmount_volume(std::string sandbox_id, TeamScope team, std::string volume_id,
                                                       std::string path) {
  auto op = do_unmount_volume(std::move(sandbox_id), std::move(team), std::move(volume_id), std::move(path));
  co_return co_await on_owner(std::move(op));
}

namespace {
// Volumes are mounted and unmounted in running sandboxes only.
Status check_running(const std::string& id, SandboxState state, const char* what) {
  if (state == SandboxState::kRunning) return ok();
  return make_error(ErrorCode::kFailedPrecondition, "sandbox " + id + " is " + std::string(state_name(state)) +
                                                        ": volumes are " + what + " running sandboxes only");
}
}  // namespace

asio::awaitable<Status> SandboxManager::do_mount_volume(std::string sandbox_id, TeamScope team, VolumeMountParam m) {
  auto found = find(sandbox_id, team);
  if (!found) co_return std::unexpected(found.error());
  auto l = *found;
  COPPICE_CO_TRY(check_running(sandbox_id, l->state, "mounted in"));
  std::vector<store::VolumeMountRecord> rows{{sandbox_id, m.volume_id, m.name, m.path}};
  auto add = [sandbox_id, rows](store::Store& st) { return st.add_volume_mounts(sandbox_id, rows); };
  auto w = co_await store_q_.write(std::move(add));
  if (!w) co_return std::unexpected(w.error());
  sandbox::SandboxHandle handle = l->handle;
  sandbox::VolumeMount vm{backend_.volume_dir(m.volume_id), m.path};
  auto job = [this, handle, vm] { return backend_.mount_volume(handle, vm); };
  auto r = co_await run_on(workers_, std::move(job));
  if (!r) {
    auto undo = [sandbox_id, path = m.path](store::Store& st) { return st.delete_volume_mount(sandbox_id, path); };
    store_q_.post(std::move(undo), "forget a failed volume mount");
    co_return std::unexpected(std::move(r.error()));
  }
  COPPICE_LOG(info).sandbox(sandbox_id) << "volume " << m.volume_id << " (" << m.name << ") mounted at " << m.path;
  co_return ok();
}

asio::awaitable<Status> SandboxManager::do_unmount_volume(std::string sandbox_id, TeamScope team,
                                                          std::string volume_id, std::string path) {
  auto found = find(sandbox_id, team);
  if (!found) co_return std::unexpected(found.error());
  auto l = *found;
  COPPICE_CO_TRY(check_running(sandbox_id, l->state, "unmounted from"));
  sandbox::SandboxHandle handle = l->handle;
  sandbox::VolumeMount vm{backend_.volume_dir(volume_id), path};
  auto job = [this, handle, vm] { return backend_.unmount_volume(handle, vm); };
  auto r = co_await run_on(workers_, std::move(job));
  // Not there (any more): the record goes all the same.
  if (!r && r.error().code() != ErrorCode::kNotFound) co_return std::unexpected(std::move(r.error()));
  auto del = [sandbox_id, path](store::Store& st) { return st.delete_volume_mount(sandbox_id, path); };
  auto w = co_await store_q_.write(std::move(del));
  if (!w) co_return std::unexpected(w.error());
  COPPICE_LOG(info).sandbox(sandbox_id) << "volume " << volume_id << " unmounted from " << path;
  co_return ok();
}

asio::awaitable<Status> SandboxManager::reserve_volumes(const std::string& id,
                                                        const std::vector<VolumeMountParam>& volumes,
                                                        sandbox::SandboxSpec& spec) {
  if (volumes.empty()) co_return ok();
  std::vector<store::VolumeMountRecord> rows;
  for (const auto& v : volumes) {
    rows.push_back({id, v.volume_id, v.name, v.path});
    spec.volumes.push_back(sandbox::VolumeMount{backend_.volume_dir(v.volume_id), v.path});
  }
  auto add = [id, rows](store::Store& st) { return st.add_volume_mounts(id, rows); };
  auto w = co_await store_q_.write(std::move(add));
  co_return w;
}

asio::awaitable<void> SandboxManager::release_volumes(std::string id) {
  auto del = [id](store::Store& st) { return st.delete_volume_mounts(id); };
  auto w = co_await store_q_.write(std::move(del));
  if (!w) {
    COPPICE_LOG_RATE(warn, 5).sandbox(id) << "store: forget volume mounts: " << w.error().to_string();
  }
}

}  // namespace coppice::core
