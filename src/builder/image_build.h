// Building a template from an OCI image or from a Dockerfile.
//
//   image (registry, OCI layout dir, docker-archive tar)
//     -> skopeo copy into the layer cache (oci.h: blobs stored once, by digest)
//     -> umoci raw unpack, once per image manifest, into
//        <root>/.images/<manifest-hex>/rootfs (whiteouts applied)
//     -> the template's rootfs: a copy of that tree made of hard links
//        (cp -al), so templates of one base share its files on disk; a
//        Dockerfile with RUN steps gets a real copy instead (a RUN command
//        may write a file in place, which must not reach other templates)
//     -> the Dockerfile's instructions (dockerfile.h), if any
//     -> what every template gets (tree_edit.h: root and user, identity
//        files; files are replaced by new inodes, never written through a
//        shared link)
//     -> template.toml: env, workdir, user and start_cmd from the image's
//        config and the Dockerfile (ENV, WORKDIR, USER, ENTRYPOINT/CMD)
//     -> installed in one rename, as recipe builds are (builder.h): a failed
//        or interrupted build leaves the template of that name as it was
//        and nothing of its own behind.
//
// RUN steps run in the tree through unshare(1): new mount, pid, uts, ipc
// and network namespaces (loopback only unless `network_host`), chrooted
// into the tree, /proc its own, /dev a tmpfs with null, zero, full, random,
// urandom and tty, as the Dockerfile's USER in its WORKDIR with its ENV and
// ARGs. They run as root on the host's kernel without a user namespace: a
// Dockerfile is trusted code, as with `docker build` on a rootful daemon.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "builder/oci.h"
#include "builder/run_tool.h"
#include "common/result.h"

namespace coppice::builder {

// Bumped whenever the same image would make a different tree.
inline constexpr int kImageBuildFormatVersion = 1;

struct ImageBuildOptions {
  std::string templates_root = "/var/lib/coppice/templates";
  std::string name;                 // the template's name (required)
  // Exactly one of: an image source, or a Dockerfile (whose FROM names the image).
  std::optional<ImageSource> image;
  std::string dockerfile;           // path of the Dockerfile
  std::string context;              // build context dir; default: the Dockerfile's directory
  std::map<std::string, std::string> build_args;  // --build-arg NAME=value
  bool insecure_registry = false;   // FROM images: allow plain HTTP registries
  bool network_host = false;        // RUN steps share the host's network
  bool force = false;               // rebuild even when the template was built from the same image
  uint64_t max_bytes = 0;           // 0: no limit; a layer or the unpacked tree over it fails the build
  ProgressFn progress;
  const std::atomic<bool>* cancel = nullptr;
};

struct ImageBuildResult {
  std::string name;
  std::string path;
  std::string image_digest;  // the base image's manifest; empty for FROM scratch
  std::string hash;          // what a rebuild compares (image builds only)
  bool cached = false;
  double seconds = 0;
  uint64_t size_bytes = 0;
  std::string replaced_tree;
};

// Builds the template; needs root. Call from a single-threaded process: it
// moves itself into a private mount namespace for the build's mounts.
Result<ImageBuildResult> build_image_template(const ImageBuildOptions& o);

// Removes unpacked images (<root>/.images/*) that no template under the
// root names in its image_digest, and the layer cache's blobs of sources no
// template came from. Best effort: problems go to `progress`.
void collect_image_cache(const std::string& templates_root, const ProgressFn& progress);

}  // namespace coppice::builder
