#include "builder/oci.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cstdio>

#include <nlohmann/json.hpp>

#include "common/sha256.h"
#include "common/strings.h"
#include "sys/fsutil.h"

namespace coppice::builder {
namespace {

using json = nlohmann::json;

bool is_dir(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string absolute(const std::string& p, const std::string& base) {
  if (p.starts_with("/")) return p;
  return sys::join_path(base.empty() ? "." : base, p);
}

bool loopback_registry(const std::string& ref) {
  size_t slash = ref.find('/');
  if (slash == std::string::npos) return false;
  std::string host = ref.substr(0, slash);
  if (host.starts_with("[::1]")) return true;
  host = host.substr(0, host.find(':'));
  return host == "localhost" || host.starts_with("127.");
}

bool valid_reference(const std::string& ref) {
  if (ref.empty() || ref.size() > 512) return false;
  for (char c : ref) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && std::string_view("._-/:@[]").find(c) == std::string_view::npos)
      return false;
  }
  return ref.front() != '/' && ref.front() != '-' && ref.find("//") == std::string::npos;
}

// The blob with `digest` from the layout, checked against its digest.
Result<std::string> read_blob(const std::string& layout, const std::string& digest) {
  if (!digest.starts_with("sha256:") || digest.size() != 71)
    return make_error(ErrorCode::kInvalidArgument, "unsupported digest \"" + digest + "\"");
  const std::string hex = digest.substr(7);
  for (char c : hex)
    if (!std::isxdigit(static_cast<unsigned char>(c)))
      return make_error(ErrorCode::kInvalidArgument, "bad digest \"" + digest + "\"");
  auto text = sys::read_file(sys::join_path(layout, "blobs/sha256/" + hex));
  if (!text) return std::unexpected(std::move(text.error()).context("blob " + digest));
  if (sha256_hex(*text) != hex)
    return make_error(ErrorCode::kInternal, "blob " + digest + " does not match its digest");
  return text;
}

Status run(std::vector<std::string> argv, const PullOptions& o, const std::string& what) {
  ToolRun t;
  t.argv = std::move(argv);
  t.progress = [&](std::string_view line) {
    if (o.progress) o.progress("    " + std::string(line));
  };
  t.cancel = o.cancel;
  COPPICE_TRY_CTX(run_tool(t), what);
  return ok();
}

Error layer_too_big(const std::string& what, const std::string& digest, uint64_t size, uint64_t max) {
  return Error(ErrorCode::kResourceExhausted, what + ": layer " + digest + " is " + format_mib(size) +
                                                  ", more than the build's disk limit of " + format_mib(max) +
                                                  " (--max-size)");
}

}  // namespace

std::string ImageSource::transport() const {
  switch (kind) {
    case kRegistry: return "docker://" + value;
    case kOciLayout: return "oci:" + value;
    case kDockerArchive: return "docker-archive:" + value;
  }
  return value;
}

std::string ImageSource::describe() const {
  switch (kind) {
    case kRegistry: return "image " + value;
    case kOciLayout: return "OCI layout " + value;
    case kDockerArchive: return "docker archive " + value;
  }
  return value;
}

Result<ImageSource> make_image_source(ImageSource::Kind kind, const std::string& value, const std::string& base_dir,
                                      bool insecure) {
  ImageSource s;
  s.kind = kind;
  s.insecure = insecure;
  switch (kind) {
    case ImageSource::kRegistry:
      if (!valid_reference(value))
        return make_error(ErrorCode::kInvalidArgument, "\"" + value + "\" is not an image reference");
      s.value = value;
      s.insecure = insecure || loopback_registry(value);
      return s;
    case ImageSource::kOciLayout: {
      // DIR[:TAG]; a directory whose name has a ':' needs the tag given.
      std::string dir = value, tag;
      if (size_t c = value.rfind(':'); c != std::string::npos && value.find('/', c) == std::string::npos) {
        dir = value.substr(0, c);
        tag = value.substr(c + 1);
      }
      dir = absolute(dir, base_dir);
      if (!is_dir(dir) || !is_file(sys::join_path(dir, "index.json")) || !is_file(sys::join_path(dir, "oci-layout")))
        return make_error(ErrorCode::kNotFound, dir + " is not an OCI image layout (no oci-layout and index.json)");
      s.value = tag.empty() ? dir : dir + ":" + tag;
      return s;
    }
    case ImageSource::kDockerArchive: {
      std::string path = absolute(value, base_dir);
      if (!is_file(path)) return make_error(ErrorCode::kNotFound, "no docker archive at " + path);
      s.value = path;
      return s;
    }
  }
  return s;
}

std::string cache_layout(const std::string& templates_root) { return sys::join_path(templates_root, ".oci"); }

Result<CacheLock> CacheLock::take(const std::string& templates_root) {
  const std::string path = sys::join_path(templates_root, ".oci.lock");
  auto fd = sys::open_file(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (!fd) return std::unexpected(std::move(fd.error()).context("layer cache lock"));
  COPPICE_TRY_CTX(sys::lock_file(fd->get(), "the layer cache"), "layer cache lock");
  CacheLock l;
  l.fd_ = std::move(*fd);
  return l;
}

Result<PulledImage> pull_image(const ImageSource& src, const PullOptions& o) {
  PulledImage img;
  img.layout = cache_layout(o.templates_root);
  img.tag = "src-" + sha256_hex(src.transport()).substr(0, 24);
  const std::string what = "fetch " + src.describe();
  // The layers' sizes before any is fetched, where the source has a plain
  // manifest (a multi-platform index is checked after the copy).
  if (o.max_layer_bytes) {
    std::vector<std::string> argv = {"skopeo", "inspect", "--raw"};
    if (src.insecure) argv.push_back("--tls-verify=false");
    argv.push_back(src.transport());
    std::string raw;
    ToolRun t;
    t.argv = argv;
    t.progress = [&](std::string_view line) { raw.append(line).append("\n"); };
    t.cancel = o.cancel;
    COPPICE_TRY_CTX(run_tool(t), what);
    json m = json::parse(raw, nullptr, false);
    if (m.is_object() && m.contains("layers") && m["layers"].is_array()) {
      for (const auto& l : m["layers"]) {
        uint64_t size = l.value("size", uint64_t{0});
        if (size > o.max_layer_bytes)
          return std::unexpected(layer_too_big(what, l.value("digest", std::string("?")), size, o.max_layer_bytes));
      }
    }
  }
  if (o.progress) o.progress("    skopeo copy " + src.transport() + " (blobs already in " + img.layout + " are not fetched again)");
  std::vector<std::string> argv = {"skopeo", "copy"};
  if (src.insecure) argv.push_back("--src-tls-verify=false");
  argv.push_back(src.transport());
  argv.push_back("oci:" + img.layout + ":" + img.tag);
  COPPICE_TRY(run(argv, o, what));

  auto index_text = sys::read_file(sys::join_path(img.layout, "index.json"));
  if (!index_text) return std::unexpected(std::move(index_text.error()).context(what));
  json index = json::parse(*index_text, nullptr, false);
  if (!index.is_object() || !index.contains("manifests") || !index["manifests"].is_array())
    return make_error(ErrorCode::kInternal, what + ": the cache's index.json is malformed");
  for (const auto& m : index["manifests"]) {
    if (m.is_object() && m.contains("annotations") && m["annotations"].is_object() &&
        m["annotations"].value("org.opencontainers.image.ref.name", std::string()) == img.tag)
      img.manifest_digest = m.value("digest", std::string());
  }
  if (img.manifest_digest.empty()) return make_error(ErrorCode::kInternal, what + ": skopeo left no manifest tagged " + img.tag);
  auto manifest_text = read_blob(img.layout, img.manifest_digest);
  if (!manifest_text) return std::unexpected(std::move(manifest_text.error()).context(what));
  json manifest = json::parse(*manifest_text, nullptr, false);
  if (!manifest.is_object() || !manifest.contains("config") || !manifest["config"].is_object() ||
      !manifest.contains("layers") || !manifest["layers"].is_array())
    return make_error(ErrorCode::kInternal, what + ": the manifest is not an image manifest");
  for (const auto& l : manifest["layers"]) {
    if (!l.is_object()) return make_error(ErrorCode::kInternal, what + ": a manifest layer is not an object");
    img.layer_digests.push_back(l.value("digest", std::string()));
    img.layer_sizes.push_back(l.value("size", uint64_t{0}));
    if (o.max_layer_bytes && img.layer_sizes.back() > o.max_layer_bytes)
      return std::unexpected(layer_too_big(what, img.layer_digests.back(), img.layer_sizes.back(), o.max_layer_bytes));
  }
  auto config_text = read_blob(img.layout, manifest["config"].value("digest", std::string()));
  if (!config_text) return std::unexpected(std::move(config_text.error()).context(what + ": config"));
  auto config = parse_image_config(*config_text);
  if (!config) return std::unexpected(std::move(config.error()).context(what));
  img.config = std::move(*config);
  if (!img.config.os.empty() && img.config.os != "linux")
    return make_error(ErrorCode::kInvalidArgument, what + ": the image is for " + img.config.os + ", not linux");
  const std::string arch = host_architecture();
  if (!img.config.architecture.empty() && img.config.architecture != arch)
    return make_error(ErrorCode::kInvalidArgument,
                      what + ": the image is for " + img.config.architecture + "; this machine runs " + arch);
  return img;
}

Status unpack_image(const PulledImage& img, const std::string& rootfs, const PullOptions& o) {
  return run({"umoci", "raw", "unpack", "--image", img.layout + ":" + img.tag, rootfs}, o,
             "unpack " + img.manifest_digest);
}

void forget_image(const PulledImage& img, const PullOptions& o) {
  PullOptions quiet = o;
  quiet.cancel = nullptr;
  if (auto s = run({"umoci", "rm", "--image", img.layout + ":" + img.tag}, quiet, "drop a cache tag"); !s && o.progress)
    o.progress("warning: " + s.error().to_string());
  if (auto s = run({"umoci", "gc", "--layout", img.layout}, quiet, "collect the layer cache"); !s && o.progress)
    o.progress("warning: " + s.error().to_string());
}

}  // namespace coppice::builder
