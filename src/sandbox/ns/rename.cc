#include "sandbox/ns/rename.h"

#include "common/log.h"
#include "sandbox/ns/launch.h"
#include "sandbox/ns/registry.h"
#include "sys/fsutil.h"
#include "sys/pidfd_owner.h"
#include "sys/uts.h"

namespace coppice::sandbox::ns {

Status rename_sandbox(const CgroupManager& cgroups, const std::string& registry_dir, const RenameRequest& r) {
  const std::string ctx = "rename sandbox " + r.id + " to " + r.new_id;
  COPPICE_TRY_CTX(validate_id(r.new_id), ctx);
  if (r.new_id == r.id) return make_error(ErrorCode::kInvalidArgument, ctx + ": same id");
  const std::string& nd = r.new_state_dir;
  if (nd.size() < 2 || nd[0] != '/' || nd.back() == '/' || nd.find(',') != std::string::npos ||
      nd.find(':') != std::string::npos) {
    // The state dir's paths end up in overlayfs options, like at create.
    return make_error(ErrorCode::kInvalidArgument, ctx + ": bad state dir \"" + nd + "\"");
  }
  if (cgroups.exists(r.new_id)) {
    return make_error(ErrorCode::kAlreadyExists, ctx + ": a cgroup named " + r.new_id + " exists", EEXIST);
  }
  // Pin PID 1 for the hostname step; a sandbox that is gone cannot be renamed.
  auto init = sys::Pidfd::open(r.init_pid);
  if (!init) return make_error(ErrorCode::kNotFound, ctx + ": it is not running", ESRCH);
  if (size_t slash = nd.find_last_of('/'); slash > 0) {
    COPPICE_TRY_CTX(sys::make_dirs(nd.substr(0, slash), 0755), ctx + ": state dir parent");
  }
  // Reserves new_id: a create or another rename to it fails from here on.
  auto record = RegistryEntry::create(registry_dir, r.new_id, nd);
  if (!record) return std::unexpected(std::move(record.error()).context(ctx));
  COPPICE_TRY_CTX(registry_begin_rename(registry_dir, PendingRename{r.id, r.new_id, nd}), ctx);

  // Each step undoes the ones before it when it fails.
  bool undo_failed = false;
  auto end_journal = [&] {
    if (!undo_failed) (void)registry_end_rename(registry_dir, r.id, r.new_id);
  };
  // Moving the directory moves everything the sandbox uses inside it (the
  // overlay's upper and work dirs, run/ behind /.coppice/run): its mounts hold
  // the dentries, not the path.
  if (auto s = sys::rename_noreplace(r.state_dir, nd); !s) {
    end_journal();
    return std::unexpected(std::move(s.error()).context(ctx));
  }
  if (auto s = cgroups.rename(r.id, r.new_id); !s) {
    undo_failed = !sys::rename_noreplace(nd, r.state_dir);
    end_journal();
    if (undo_failed) record->release();
    return std::unexpected(std::move(s.error()).context(undo_failed ? ctx + " (left for recovery to complete)" : ctx));
  }
  if (auto s = sys::set_hostname_of(init->get(), r.new_id); !s) {
    undo_failed = !cgroups.rename(r.new_id, r.id) || !sys::rename_noreplace(nd, r.state_dir);
    end_journal();
    if (undo_failed) record->release();
    return std::unexpected(std::move(s.error()).context(undo_failed ? ctx + " (left for recovery to complete)" : ctx));
  }
  record->release();
  COPPICE_TRY_CTX(registry_remove(registry_dir, r.id), ctx);
  COPPICE_TRY_CTX(registry_end_rename(registry_dir, r.id, r.new_id), ctx);
  return ok();
}

void finish_pending_renames(const CgroupManager& cgroups, const std::string& registry_dir,
                            const std::set<std::string>& in_flight) {
  auto pending = registry_pending_renames(registry_dir);
  if (!pending) {
    COPPICE_LOG(warn) << "pending renames: " << pending.error().to_string();
    return;
  }
  for (const PendingRename& p : *pending) {
    if (in_flight.contains(p.id)) continue;
    auto step = [&](const char* what, Status s) {
      if (!s) {
        COPPICE_LOG(warn).sandbox(p.new_id) << "completing rename from " << p.id << ": " << what << ": "
                                            << s.error().to_string();
      }
      return s.has_value();
    };
    bool good = true;
    if (auto old_state = registry_lookup(registry_dir, p.id); old_state && sys::path_exists(*old_state) &&
                                                              !sys::path_exists(p.new_state_dir)) {
      good &= step("state dir", sys::rename_noreplace(*old_state, p.new_state_dir));
    }
    if (cgroups.exists(p.id)) good &= step("cgroups", cgroups.rename(p.id, p.new_id));
    if (auto pid = cgroups.find_init(p.new_id); pid) {
      if (auto init = sys::Pidfd::open(*pid); init) (void)step("hostname", sys::set_hostname_of(init->get(), p.new_id));
    }
    if (!good) continue;  // the journal stays: the next pass tries again
    good &= step("record", registry_put(registry_dir, p.new_id, p.new_state_dir));
    good &= step("old record", registry_remove(registry_dir, p.id));
    if (good) {
      (void)step("journal", registry_end_rename(registry_dir, p.id, p.new_id));
      COPPICE_LOG(info).sandbox(p.new_id) << "completed an interrupted rename from " << p.id;
    }
  }
}

}  // namespace coppice::sandbox::ns
