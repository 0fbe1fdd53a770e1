// `coppice template install`: a template a user built rootless
// (rootless.h), taken into the gateway's templates root by root.
//
// The user's tree is owned by host ids of the user (the image's root) and
// of its subordinate range (the image's other accounts). Installing copies
// it (sys/tree_copy.h: no symlink followed, nothing outside it reached) into
// a build directory of the templates root and shifts every owner back: the
// user's uid and primary gid to 0, subordinate id start+i to i+1. The
// mapping comes from who owns the build's directory and from /etc/subuid and
// /etc/subgid, never from the user's files. An entry owned by any other id
// (a file someone else owns, hard-linked in) or a device node other than an
// overlay whiteout (0/0) fails the install, naming it. The template's
// settings are re-read from its template.toml and written anew (only the
// keys an image build writes). The installed template's directory is
// root's alone (0700): its set-id files, the user's to shape, are never
// reachable by host users. It replaces a template of that name as a build
// does (build_dir.h). A file capability the build's root set (version 3,
// its root id the builder's uid) is set again, after the chown that drops
// it, as the version 2 a build as root makes; one of another root id is
// dropped.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "builder/run_tool.h"
#include "common/result.h"

namespace coppice::builder {

struct RootlessInstallOptions {
  std::string from;            // the user's template directory (<its root>/<name>: rootfs/ + template.toml)
  std::string templates_root = "/var/lib/coppice/templates";
  std::string name;            // default: the last component of `from`
  ProgressFn progress;
};

struct RootlessInstallResult {
  std::string name;
  std::string path;
  std::string owner;           // the user whose build it was
  std::string replaced_tree;   // as ImageBuildResult's
  uint64_t entries = 0;
  double seconds = 0;
};

// Needs root. Fails leaving the templates root as it was.
Result<RootlessInstallResult> install_rootless_template(const RootlessInstallOptions& o);

}  // namespace coppice::builder
