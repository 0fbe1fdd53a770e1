// The template registry: what templates exist under the templates root, and
// how each is launched. A template is a directory <root>/<name>/ holding
// `rootfs/` and `template.toml` (backend "ns" unless it says otherwise; a
// template for a backend this gateway does not run is listed, and a create
// from it is refused). Entries starting with '.' are builds in progress or
// replaced builds (retired_root). reload() rescans without a restart;
// lookups are thread-safe.
//
// Description keys (all optional, strictly typed; any other key makes the
// entry malformed, and a malformed entry is skipped with a warning):
//   backend = "ns" | "vm"     cpu_count = 2         memory_mb = 512
//   disk_mb = 1024            (cap on a sandbox's writable layer, its diskSizeMB)
//   egress_mbps = 100         (cap on what a sandbox sends; a create's network.maxEgressMbps wins)
//   ro_binds = ["/usr"]       build_id = "..."      source = "host"
//   start_cmd = "..."         ready_cmd = "..."     recipe_hash = "..."
//   env = ["NAME=value"]      (every sandbox's environment; a create's envVars win)
//   user = "app"              (envd's default user, and who runs start_cmd; default: commands as
//                              `user`, start_cmd as root)
//   workdir = "/srv"          (envd's default working directory and start_cmd's; default: the
//                              user's home, start_cmd in /)
//   image_digest = "sha256:..." (the manifest of the OCI image it was built from)
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace coppice::templates {

struct Template {
  std::string name;
  std::string backend = "ns";           // "ns" | "vm"
  std::string path;                     // <root>/<name>
  std::string rootfs;                   // <root>/<name>/rootfs; empty for a VM
  std::vector<std::string> ro_binds;    // host paths bound read-only at the same place
  int cpu_count = 0;                    // 0: the gateway's default
  int memory_mb = 0;                    // 0: the gateway's default
  int disk_mb = 0;                      // 0: the gateway's default (its diskSizeMB)
  int egress_mbps = 0;                  // 0: no cap on what its sandboxes send
  std::string build_id;
  std::string source;                   // "host", "debian", ...
  std::string start_cmd;                // run once the sandbox is up; empty: none
  std::string ready_cmd;                // exits 0 once start_cmd's service is ready; empty: none
  std::string recipe_hash;              // hash of the build recipe the template came from
  std::map<std::string, std::string> env;  // environment of every sandbox (a create's envVars override)
  std::string user;                     // envd's default user and start_cmd's; empty: see above
  std::string workdir;                  // absolute; envd's default cwd and start_cmd's; empty: see above
  std::string image_digest;             // the OCI image manifest it was built from; empty: none
  // Bytes on disk, measured at reload (never per request): the rootfs's
  // allocated blocks, hard links counted once, symlinks not followed, not
  // crossing into other file systems (`du -sx`).
  // Host binds such as /usr are not part of it.
  uint64_t size_bytes = 0;
  // Identity of the rootfs directory at reload (tree_key).
  std::string tree;
};

// "<dev>:<ino>" of a directory: what a sandbox records of the template tree
// it runs on. Stable across renames, so a build moved aside while sandboxes
// use it keeps its identity. "" when it cannot be read.
std::string tree_key(const std::string& dir);

// Makes the templates root if missing and closes it to everyone but its
// owner (0700): templates come from images nobody vetted, whose set-uid
// files (owned by host root in a root build) no host user may reach and run.
Status make_templates_root(const std::string& root);

// Where replaced builds wait for their last sandbox: <root>/.retired. A
// rebuild never removes the tree it replaces (sandboxes may be running on
// it); it moves it here, and the gateway removes it once no sandbox names
// its tree (its rootfs's tree_key) any more.
std::string retired_root(const std::string& templates_root);
// A new, unused path under retired_root for a replaced build of `name`.
std::string retired_path(const std::string& templates_root, const std::string& name);
struct RetiredTree {
  std::string path;  // the build's directory (holding rootfs/)
  std::string key;   // tree_key of its rootfs/; "" if it has none
};
// The retired builds: <root>/.retired/*, and the <root>/.<name>.old-<pid>
// trees older builders left beside the templates.
std::vector<RetiredTree> retired_trees(const std::string& templates_root);

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

}  // namespace coppice::templates
