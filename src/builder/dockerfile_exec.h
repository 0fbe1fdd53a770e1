// Runs a parsed Dockerfile (dockerfile.h) on a tree: the instructions after
// its FROM, one by one, each failing with "line N: KEYWORD: what".
//
// Honoured: ARG, ENV, RUN (run_step.h), COPY and ADD of files from the build
// context (no URLs, no archives to unpack, no --from; sources are confined
// to the context: no `..` above it, no symlink out of it), WORKDIR, USER,
// SHELL, CMD, ENTRYPOINT. Noted and ignored: LABEL, EXPOSE, MAINTAINER.
// Refused: a second FROM (multi-stage builds), HEALTHCHECK, ONBUILD,
// VOLUME, STOPSIGNAL and anything unknown.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <map>
#include <string>
#include <vector>

#include "builder/dockerfile.h"
#include "builder/run_tool.h"
#include "common/result.h"

namespace coppice::builder {

// The image a Dockerfile starts from: its FROM line, ARGs before it expanded.
struct DockerfileFrom {
  std::string image;  // "scratch", a registry reference, "oci-layout:DIR[:TAG]" or "docker-archive:PATH"
  int line = 0;
  size_t next = 0;    // index of the first instruction after FROM
};
Result<DockerfileFrom> dockerfile_from(const Dockerfile& df, const std::map<std::string, std::string>& build_args);

struct DockerBuildState {
  std::string rootfs;
  std::string context;                    // the build context directory (a real path)
  std::vector<std::string> env;           // "K=V": the image's, then ENV's
  std::string workdir;                    // absolute; empty: "/"
  std::string user;                       // as USER gave it; empty: root
  std::vector<std::string> entrypoint, cmd;
  bool network_host = false;
  ProgressFn progress;
  const std::atomic<bool>* cancel = nullptr;
  // Set while running:
  bool has_run = false;                   // a RUN step ran
};

// Runs instructions [from.next, end) on the state. `build_args` are the
// --build-arg values (an ARG without one takes its default).
Status run_dockerfile(const Dockerfile& df, size_t first, const std::map<std::string, std::string>& build_args,
                      DockerBuildState& st);

// Whether a Dockerfile has RUN steps after `first` (such a build needs a tree
// of its own, image_build.h).
bool has_run_steps(const Dockerfile& df, size_t first);

struct UserIds {
  uid_t uid = 0;
  gid_t gid = 0;
  std::string name;  // the passwd entry's; empty when the uid has none
};
// Resolves "name", "uid", "name:group" or "uid:gid" with the tree's
// /etc/passwd and /etc/group (read inside the tree, links resolved in it).
// A name that is not there is an error; a numeric uid without an entry has
// gid 0 unless one is given.
Result<UserIds> resolve_user(const std::string& rootfs, const std::string& spec);

// Whether `path` exists in the tree (links resolved inside it).
bool exists_in_tree(const std::string& rootfs, const std::string& path);

// "/a/./b/../c" -> "/a/c"; ".." never climbs above "/".
std::string normalize_abs(const std::string& path);

}  // namespace coppice::builder
