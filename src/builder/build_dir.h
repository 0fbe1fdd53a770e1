// The pieces every kind of template build shares: the build directory that
// disappears unless the build completes, the sweep of what killed builds
// left, and the one-rename install that replaces a template.
#pragma once

#include <string>

#include "builder/run_tool.h"
#include "common/result.h"

namespace coppice::builder {

// A build directory that is removed (mounts first) unless released.
class BuildDir {
 public:
  explicit BuildDir(std::string path) : path_(std::move(path)) {}
  ~BuildDir();
  BuildDir(const BuildDir&) = delete;
  BuildDir& operator=(const BuildDir&) = delete;
  void release() { path_.clear(); }
  void on_error(ProgressFn fn) { on_error_ = std::move(fn); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  ProgressFn on_error_;
};

// Makes <root>/.<name>.build-<pid> (the registry skips dot names) after
// removing what builds killed before they finished left under the root.
Result<std::string> make_build_dir(const std::string& root, const std::string& name, const ProgressFn& progress);

// Puts the finished build `tmp` at <root>/<name>. An existing template is
// swapped out in one step (renameat2 RENAME_EXCHANGE) and moved to the
// retired builds, whole: sandboxes running on it keep every file, and the
// gateway removes it after the last of them. Returns where the replaced
// tree went ("" when there was none).
Result<std::string> install_build(const std::string& tmp, const std::string& root, const std::string& name);

// Value of a string key in <dir>/template.toml, "" when there is no such
// template or key.
std::string installed_value(const std::string& dir, const std::string& key);

}  // namespace coppice::builder
