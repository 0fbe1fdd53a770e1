// Building a template from a recipe (builder/recipe.h) into a templates root.
//
// The template is built in <root>/.<name>.build-<pid> (the registry skips
// dot names) and renamed into place only once complete: a reader sees the
// old template or the new one, never a mix, and a failed or interrupted
// build removes its directory and leaves an existing template untouched.
// A template that replaces another keeps running sandboxes working: the old
// tree is removed unless a sandbox still has it mounted, in which case it
// stays as <root>/.<name>.old-<pid> until a later build finds it unused.
//
// Builds are cached by recipe hash (recipe_hash()): when the template in
// place was built from the same hash, a build does nothing. The host's apt
// sources are not part of the hash: pass `force` to pick up newer packages.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "builder/recipe.h"
#include "builder/run_tool.h"
#include "common/result.h"

namespace coppice::builder {

struct BuildOptions {
  std::string recipe_path;
  std::string templates_root = "/var/lib/coppice/templates";
  std::string name;            // overrides the recipe's name when not empty
  bool force = false;          // rebuild even if the hash matches
  // apt sources for recipes without `sources`: a deb822 file (*.sources) or
  // a one-line list; empty: the host's (sources.h).
  std::string host_sources;
  bool verbose = false;        // mmdebstrap --verbose: apt's own output too
  std::string mmdebstrap = "mmdebstrap";
  ProgressFn progress;         // the steps and mmdebstrap's lines; may be empty
  // Set (by a signal handler, say) to stop the build; it then fails with
  // kCanceled after removing its directory.
  const std::atomic<bool>* cancel = nullptr;
};

struct BuildResult {
  std::string name;
  std::string path;            // <root>/<name>
  std::string recipe_hash;
  bool cached = false;         // the template in place already had this hash
  double seconds = 0;          // wall time of the build (or of the check, if cached)
  uint64_t size_bytes = 0;     // the rootfs on disk (templates::tree_disk_usage)
  std::string replaced_tree;   // where the build it replaced went (templates::retired_path), if any
};

// Builds (or finds up to date) the template a recipe describes. Needs root
// unless the result is cached. Call from a single-threaded process: a step
// forks a child that confines itself to the new tree (tree_edit.h).
Result<BuildResult> build_template(const BuildOptions& opts);

// The template.toml text for a recipe built with `hash` under `build_id`.
std::string template_toml(const Recipe& r, const std::string& hash, const std::string& build_id);

}  // namespace coppice::builder
