// OCI images for the template builder: fetched with skopeo into one shared,
// content-addressed OCI layout (the layer cache), read from it, unpacked
// with umoci. Both tools are Debian's (skopeo, umoci); nothing here speaks
// to a registry itself.
//
// The cache is <templates-root>/.oci, an OCI image layout: every blob
// (manifest, config, compressed layer) is stored once under
// blobs/sha256/<digest>, whatever image or template it came with. skopeo
// checks every blob's digest as it copies and does not fetch a blob the
// layout already has, so a second template from the same base (or from an
// image sharing its base layers) downloads and stores only what is new.
// One build at a time uses the cache (a lock on <root>/.oci.lock).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "builder/image_config.h"
#include "builder/run_tool.h"
#include "common/result.h"
#include "sys/fd.h"

namespace coppice::builder {

struct ImageSource {
  enum Kind { kRegistry, kOciLayout, kDockerArchive } kind = kRegistry;
  std::string value;       // the reference, directory[:tag] or tar path, as given
  bool insecure = false;   // registry: plain HTTP / unverified TLS allowed
  // skopeo's name for it: docker://..., oci:DIR:TAG, docker-archive:PATH.
  std::string transport() const;
  std::string describe() const;
};

// Checks a source: a registry reference of [host[:port]/]path[:tag][@sha256:hex],
// an existing OCI layout directory (with oci-layout and index.json), an
// existing archive file. Relative paths are taken from `base_dir`. A
// registry on a loopback address (localhost, 127.*, [::1]) is insecure by
// default, as Docker has it.
Result<ImageSource> make_image_source(ImageSource::Kind kind, const std::string& value, const std::string& base_dir,
                                      bool insecure);

struct PulledImage {
  std::string layout;           // the cache's OCI layout directory
  std::string tag;              // the cache's tag for this source
  std::string manifest_digest;  // "sha256:..."
  ImageConfig config;
  std::vector<uint64_t> layer_sizes;  // compressed, from the manifest
  std::vector<std::string> layer_digests;
};

struct PullOptions {
  std::string templates_root;
  ProgressFn progress;
  const std::atomic<bool>* cancel = nullptr;
  uint64_t max_layer_bytes = 0;  // 0: no limit; a larger layer fails the pull before it is fetched
};

// Holds the cache lock while alive.
class CacheLock {
 public:
  static Result<CacheLock> take(const std::string& templates_root);
 private:
  sys::UniqueFd fd_;
};

std::string cache_layout(const std::string& templates_root);

// Copies the image into the cache (fetching only missing blobs) and reads
// its manifest and config back, checking their digests. A missing image,
// an unreachable registry, a blob whose content does not match its digest
// or a layer over `max_layer_bytes` is an error saying so (skopeo's own
// words quoted). Call with the cache lock held.
Result<PulledImage> pull_image(const ImageSource& src, const PullOptions& o);

// Unpacks a pulled image into `rootfs` (which must not exist) with umoci:
// layers in order, whiteouts applied, owners and modes kept.
Status unpack_image(const PulledImage& img, const std::string& rootfs, const PullOptions& o);

// Drops the cache's tag for a pulled image and removes blobs no tag needs
// (umoci gc): what a failed build fetched does not stay behind.
void forget_image(const PulledImage& img, const PullOptions& o);

}  // namespace coppice::builder
