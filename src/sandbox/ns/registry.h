// The host-side record of which sandboxes exist and where their state lives:
// one symlink <registry_dir>/<id> -> <state_dir> per sandbox. It survives a
// gateway restart (with the cgroups, it is what recovery starts from) and
// costs no fd while the sandbox runs.
#pragma once

#include <string>
#include <vector>

#include "common/result.h"

namespace coppice::sandbox::ns {

class RegistryEntry {
 public:
  RegistryEntry(RegistryEntry&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  RegistryEntry& operator=(RegistryEntry&&) = delete;
  ~RegistryEntry();

  // Records `id` -> `state_dir`; kAlreadyExists if `id` is recorded. Removed
  // again when the entry is destroyed, unless release()d.
  static Result<RegistryEntry> create(const std::string& registry_dir, const std::string& id,
                                      const std::string& state_dir);
  void release() { path_.clear(); }

 private:
  explicit RegistryEntry(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// The state dir recorded for `id`; kNotFound if none.
Result<std::string> registry_lookup(const std::string& registry_dir, const std::string& id);
// Records `id` -> `state_dir`, replacing an existing record.
Status registry_put(const std::string& registry_dir, const std::string& id, const std::string& state_dir);
Status registry_remove(const std::string& registry_dir, const std::string& id);
// Ids with a record (journal entries of renames are not ids).
Result<std::vector<std::string>> registry_list(const std::string& registry_dir);

// The journal of a rename in progress: <registry_dir>/<id>=<new_id> ->
// <new_state_dir> ('=' is never part of an id). It exists from the moment a
// rename starts changing things until it has finished; one found after a
// crash is completed, never undone.
struct PendingRename {
  std::string id, new_id, new_state_dir;
};
Status registry_begin_rename(const std::string& registry_dir, const PendingRename& r);
Status registry_end_rename(const std::string& registry_dir, const std::string& id, const std::string& new_id);
Result<std::vector<PendingRename>> registry_pending_renames(const std::string& registry_dir);

}  // namespace coppice::sandbox::ns
