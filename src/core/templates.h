// The template registry: what templates exist under the templates root, and
// how each is launched. A template is `<root>/<name>/` holding `rootfs/` and a
// `template.toml` (backend, cpu and memory defaults, read-only host binds,
// build id). reload() rescans without a restart; lookups are thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common/result.h"

namespace coppice::core {

struct Template {
  std::string name;
  std::string backend = "ns";           // "ns" | "vm"
  std::string path;                     // <root>/<name>
  std::string rootfs;                   // <root>/<name>/rootfs
  std::vector<std::string> ro_binds;    // host paths bound read-only at the same place
  int cpu_count = 0;                    // 0: the gateway's default
  int memory_mb = 0;                    // 0: the gateway's default
  std::string build_id;
  std::string source;                   // "host", "debian", ...
};

class TemplateRegistry {
 public:
  explicit TemplateRegistry(std::string root) : root_(std::move(root)) {}

  // Rescans the root. Malformed templates are skipped with a warning.
  Status reload();
  // kInvalidArgument naming the templates that exist, when `name` is unknown
  // (a create on a missing template is the client's mistake: 400).
  Result<Template> get(const std::string& name) const;
  std::vector<Template> list() const;
  const std::string& root() const { return root_; }

 private:
  std::string root_;
  mutable std::mutex mu_;
  std::map<std::string, Template> templates_;
};

}  // namespace coppice::core
