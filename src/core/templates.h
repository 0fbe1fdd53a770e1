// The template registry: what templates exist under the templates root, and
// how each is launched. Two kinds of entry are found there:
//   <root>/<name>/            a directory holding `rootfs/` and `template.toml`
//                             (backend "ns" unless it says otherwise)
//   <root>/<name>.img         a VM root disk with its `<root>/<name>.conf`
//                             sidecar (the same keys; backend "vm")
// When a name has both, the VM entry wins and the collision is logged once
// per reload. reload() rescans without a restart; lookups are thread-safe.
//
// Description keys (all optional, strictly typed; any other key makes the
// entry malformed, and a malformed entry is skipped with a warning):
//   backend = "ns" | "vm"     cpu_count = 2         memory_mb = 512
//   ro_binds = ["/usr"]       build_id = "..."      source = "host"
//   start_cmd = "..."         ready_cmd = "..."     recipe_hash = "..."
//   env = ["NAME=value"]      (every sandbox's environment; a create's envVars win)
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace coppice::core {

struct Template {
  std::string name;
  std::string backend = "ns";           // "ns" | "vm"
  std::string path;                     // <root>/<name>, or <root>/<name>.img for a VM
  std::string rootfs;                   // <root>/<name>/rootfs; empty for a VM
  std::string image;                    // <root>/<name>.img for a VM; empty otherwise
  std::vector<std::string> ro_binds;    // host paths bound read-only at the same place
  int cpu_count = 0;                    // 0: the gateway's default
  int memory_mb = 0;                    // 0: the gateway's default
  std::string build_id;
  std::string source;                   // "host", "debian", ...
  std::string start_cmd;                // run once the sandbox is up; empty: none
  std::string ready_cmd;                // exits 0 once start_cmd's service is ready; empty: none
  std::string recipe_hash;              // hash of the build recipe the template came from
  std::map<std::string, std::string> env;  // environment of every sandbox (a create's envVars override)
  // Bytes on disk, measured at reload (never per request): the rootfs's
  // allocated blocks, hard links counted once, symlinks not followed, not
  // crossing into other file systems (`du -sx`); for a VM, the image's size.
  // Host binds such as /usr are not part of it.
  uint64_t size_bytes = 0;
};

// Names are what clients pass as templateID: [A-Za-z0-9_-][A-Za-z0-9._-]*,
// at most 128 characters. Other entries under the root are skipped, so a
// name never needs quoting or escaping anywhere.
bool valid_template_name(std::string_view name);

// Disk usage of a tree as described for Template::size_bytes.
uint64_t tree_disk_usage(const std::string& root);

class TemplateRegistry {
 public:
  explicit TemplateRegistry(std::string root) : root_(std::move(root)) {}

  // Rescans the root and replaces the list. Malformed entries are skipped
  // with a warning. Fails (keeping the previous list) only when the root
  // itself cannot be read. Reloads are serialized; lookups are not blocked
  // while a reload measures sizes.
  Status reload();
  // kInvalidArgument naming the templates that exist, when `name` is unknown
  // (a create on a missing template is the client's mistake: 400).
  Result<Template> get(const std::string& name) const;
  // Sorted by name.
  std::vector<Template> list() const;
  const std::string& root() const { return root_; }

 private:
  std::string root_;
  std::mutex reload_mu_;  // one scan at a time, so an older scan never replaces a newer one
  mutable std::mutex mu_;
  std::map<std::string, Template> templates_;
};

}  // namespace coppice::core
