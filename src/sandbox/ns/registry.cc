#include "sandbox/ns/registry.h"

#include <unistd.h>

#include <cerrno>

#include "common/ids.h"
#include "common/log.h"
#include "sys/fsutil.h"

namespace coppice::sandbox::ns {

RegistryEntry::~RegistryEntry() {
  if (!path_.empty()) {
    if (auto s = sys::remove_file(path_); !s) {
      COPPICE_LOG(warn) << "registry cleanup: " << s.error().to_string();
    }
  }
}

Result<RegistryEntry> RegistryEntry::create(const std::string& registry_dir, const std::string& id,
                                            const std::string& state_dir) {
  std::string link = registry_dir + "/" + id;
  if (::symlink(state_dir.c_str(), link.c_str()) != 0) {
    if (errno == EEXIST) return make_error(ErrorCode::kAlreadyExists, "sandbox " + id + " already exists", EEXIST);
    return errno_error("record sandbox " + id + " in " + registry_dir);
  }
  return RegistryEntry(link);
}

Result<std::string> registry_lookup(const std::string& registry_dir, const std::string& id) {
  auto target = sys::read_symlink(registry_dir + "/" + id);
  if (!target && target.error().sys_errno() == ENOENT) {
    return make_error(ErrorCode::kNotFound, "no record of sandbox " + id, ENOENT);
  }
  return target;
}

Status registry_put(const std::string& registry_dir, const std::string& id, const std::string& state_dir) {
  std::string link = registry_dir + "/" + id;
  std::string tmp = link + ".new";
  (void)sys::remove_file(tmp);
  COPPICE_TRY_CTX(sys::make_symlink(state_dir, tmp), "record sandbox " + id);
  if (::rename(tmp.c_str(), link.c_str()) != 0) return errno_error("record sandbox " + id);
  return ok();
}

Status registry_remove(const std::string& registry_dir, const std::string& id) {
  return sys::remove_file(registry_dir + "/" + id);
}

Result<std::vector<std::string>> registry_list(const std::string& registry_dir) {
  auto names = sys::list_dir(registry_dir);
  if (!names) return std::unexpected(std::move(names.error()).context("list sandbox records"));
  std::vector<std::string> out;
  for (auto& n : *names) {
    if (valid_sandbox_id(n)) out.push_back(std::move(n));  // not "<id>.new" mid-update
  }
  return out;
}

}  // namespace coppice::sandbox::ns
