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
// Ids with a record.
Result<std::vector<std::string>> registry_list(const std::string& registry_dir);

}  // namespace coppice::sandbox::ns
