#include "builder/image_build.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "builder/build_dir.h"
#include "builder/dockerfile.h"
#include "builder/dockerfile_exec.h"
#include "builder/mounts.h"
#include "builder/run_step.h"
#include "builder/tree_edit.h"
#include "common/sha256.h"
#include "common/strings.h"
#include "sys/fsutil.h"
#include "sys/tree_copy.h"
#include "templates/template_toml.h"
#include "templates/templates.h"

namespace coppice::builder {
namespace {

using Clock = std::chrono::steady_clock;

// Dockerfiles are small; a larger file is not one.
constexpr size_t kMaxDockerfileBytes = 1 << 20;

Result<std::string> real_dir(const std::string& path, const std::string& what) {
  char* real = ::realpath(path.c_str(), nullptr);
  if (!real) return std::unexpected(Error::from_errno(errno, what + " " + path));
  std::string r(real);
  ::free(real);
  struct stat st {};
  if (::stat(r.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return make_error(ErrorCode::kInvalidArgument, what + " " + path + " is not a directory");
  return r;
}

std::string dir_of(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// FROM's image: a registry reference, or a local image named with a prefix.
Result<ImageSource> source_of(const std::string& ref, const std::string& base_dir, bool insecure) {
  if (ref.starts_with("oci-layout:")) return make_image_source(ImageSource::kOciLayout, ref.substr(11), base_dir, false);
  if (ref.starts_with("docker-archive:"))
    return make_image_source(ImageSource::kDockerArchive, ref.substr(15), base_dir, false);
  if (ref.starts_with("docker://")) return make_image_source(ImageSource::kRegistry, ref.substr(9), base_dir, insecure);
  return make_image_source(ImageSource::kRegistry, ref, base_dir, insecure);
}

std::string toml_for(const std::string& source, const std::string& build_id, const std::string& hash,
                     const std::string& digest, const std::vector<std::string>& env, const std::string& user,
                     const std::string& workdir, const std::string& start_cmd) {
  std::string t = "# Built by `coppice template build` from " + std::string(source == "image" ? "an OCI image" : "a Dockerfile") + ".\n" +
                  "backend = \"ns\"\n"
                  "source = " + templates::toml_quote(source) + "\n"
                  "build_id = " + templates::toml_quote(build_id) + "\n";
  if (!hash.empty()) t += "recipe_hash = " + templates::toml_quote(hash) + "\n";
  if (!digest.empty()) t += "image_digest = " + templates::toml_quote(digest) + "\n";
  if (!user.empty()) t += "user = " + templates::toml_quote(user) + "\n";
  if (!workdir.empty()) t += "workdir = " + templates::toml_quote(workdir) + "\n";
  if (!start_cmd.empty()) t += "start_cmd = " + templates::toml_quote(start_cmd) + "\n";
  if (!env.empty()) t += "env = " + templates::toml_array(env) + "\n";
  return t;
}

std::string images_dir(const std::string& root) { return sys::join_path(root, ".images"); }

}  // namespace

void collect_image_cache(const std::string& root, const ProgressFn& progress) {
  auto names = sys::list_dir(root);
  if (!names) return;
  std::set<std::string> used;
  for (const auto& n : *names) {
    if (n.starts_with(".")) continue;
    std::string d = installed_value(sys::join_path(root, n), "image_digest");
    if (d.starts_with("sha256:")) used.insert(d.substr(7));
  }
  auto images = sys::list_dir(images_dir(root));
  if (!images) return;
  for (const auto& hex : *images) {
    if (used.count(hex)) continue;
    if (auto s = sys::remove_tree(sys::join_path(images_dir(root), hex)); !s && progress)
      progress("warning: " + s.error().to_string());
  }
}

namespace {

Result<ImageBuildResult> build(const ImageBuildOptions& o) {
  const auto t0 = Clock::now();
  auto say = [&](const std::string& s) {
    if (o.progress) o.progress(s);
  };
  auto check_cancel = [&]() -> Status {
    if (o.cancel && o.cancel->load()) return make_error(ErrorCode::kCanceled, "the build was interrupted");
    return ok();
  };
  if (!templates::valid_template_name(o.name))
    return make_error(ErrorCode::kInvalidArgument, "\"" + o.name + "\" is not a template name (--name)");
  if (o.image.has_value() == !o.dockerfile.empty())
    return make_error(ErrorCode::kInvalidArgument, "give an image or a Dockerfile, not both or neither");
  const std::string step = "build template " + o.name;

  // Everything about the input is checked before any work.
  std::optional<Dockerfile> df;
  DockerfileFrom from;
  std::string context;
  std::optional<ImageSource> src = o.image;
  std::string source_kind = src ? src->describe() : "Dockerfile " + o.dockerfile;
  if (!o.dockerfile.empty()) {
    auto fd = sys::open_file(o.dockerfile, O_RDONLY | O_CLOEXEC);
    if (!fd) return std::unexpected(std::move(fd.error()).context("Dockerfile"));
    auto text = sys::read_all_limited(fd->get(), o.dockerfile, kMaxDockerfileBytes);
    if (!text) return std::unexpected(std::move(text.error()).context("Dockerfile"));
    auto parsed = parse_dockerfile(*text);
    if (!parsed) return std::unexpected(std::move(parsed.error()).context(o.dockerfile));
    df = std::move(*parsed);
    auto f = dockerfile_from(*df, o.build_args);
    if (!f) return std::unexpected(std::move(f.error()).context(o.dockerfile));
    from = *f;
    auto ctx = real_dir(o.context.empty() ? dir_of(o.dockerfile) : o.context, "build context");
    if (!ctx) return std::unexpected(std::move(ctx.error()));
    context = *ctx;
    if (from.image != "scratch") {
      auto s = source_of(from.image, context, o.insecure_registry);
      if (!s) return std::unexpected(std::move(s.error()).context(o.dockerfile + " line " + std::to_string(from.line)));
      src = *s;
    }
  }
  if (::geteuid() != 0)
    return make_error(ErrorCode::kPermissionDenied,
                      "building a template from an image needs root (files owned by other users; RUN in namespaces)");

  ImageBuildResult res;
  res.name = o.name;
  res.path = sys::join_path(o.templates_root, o.name);
  COPPICE_TRY_CTX(templates::make_templates_root(o.templates_root), step);
  // The build's mounts (a RUN step's /dev) go with this process.
  COPPICE_TRY_CTX(enter_private_mount_namespace(), step);
  auto lock = CacheLock::take(o.templates_root);
  if (!lock) return std::unexpected(std::move(lock.error()).context(step));
  auto made = make_build_dir(o.templates_root, o.name, o.progress);
  if (!made) return std::unexpected(std::move(made.error()).context(step));
  const std::string tmp = *made;
  BuildDir owner(tmp);
  owner.on_error([&](std::string_view s) { say("warning: " + std::string(s)); });
  const std::string rootfs = sys::join_path(tmp, "rootfs");

  PullOptions po;
  po.templates_root = o.templates_root;
  po.progress = o.progress;
  po.cancel = o.cancel;
  po.max_layer_bytes = o.max_bytes;
  PulledImage img;
  ImageConfig config;
  if (src) {
    say("==> fetching " + src->describe() + " into the layer cache");
    auto pulled = pull_image(*src, po);
    if (!pulled) return std::unexpected(std::move(pulled.error()).context(step));
    img = std::move(*pulled);
    config = img.config;
    res.image_digest = img.manifest_digest;
    say("    " + img.manifest_digest + ", " + std::to_string(img.layer_digests.size()) + " layers");
  }
  COPPICE_TRY_CTX(check_cancel(), step);
  // A template from an image alone is what its manifest says: the same
  // manifest again is a no-op.
  if (!df) {
    res.hash = sha256_hex("coppice-image-build " + std::to_string(kImageBuildFormatVersion) + " " + img.manifest_digest);
    if (!o.force && installed_value(res.path, "recipe_hash") == res.hash) {
      res.cached = true;
      res.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      return res;
    }
  }

  const bool own_copy = df && has_run_steps(*df, from.next);
  if (src) {
    const std::string hex = img.manifest_digest.substr(7);
    const std::string unpacked = sys::join_path(images_dir(o.templates_root), hex);
    if (!sys::path_exists(unpacked)) {
      say("==> unpacking " + std::to_string(img.layer_digests.size()) + " layers (umoci)");
      const std::string scratch_dir = sys::join_path(tmp, "unpack");
      if (::mkdir(scratch_dir.c_str(), 0700) != 0) return std::unexpected(Error::from_errno(errno, "mkdir").context(step));
      COPPICE_TRY_CTX(unpack_image(img, sys::join_path(scratch_dir, "rootfs"), po), step);
      const uint64_t size = templates::tree_disk_usage(sys::join_path(scratch_dir, "rootfs"));
      if (o.max_bytes && size > o.max_bytes)
        return make_error(ErrorCode::kResourceExhausted, step + ": the unpacked image takes " + format_mib(size) +
                                                             ", more than the build's disk limit of " + format_mib(o.max_bytes) +
                                                             " (--max-size)");
      COPPICE_TRY_CTX(sys::make_dirs(images_dir(o.templates_root), 0700), step);
      if (::rename(scratch_dir.c_str(), unpacked.c_str()) != 0)
        return std::unexpected(Error::from_errno(errno, "rename " + scratch_dir + " to " + unpacked).context(step));
    } else {
      say("==> the image is unpacked already (" + unpacked + ")");
    }
    COPPICE_TRY_CTX(check_cancel(), step);
    const std::string base = sys::join_path(unpacked, "rootfs");
    if (own_copy) {
      say("==> copying the image's tree (RUN steps need a copy of their own)");
      auto copied = sys::copy_tree(base, rootfs);
      if (!copied) return std::unexpected(std::move(copied.error()).context(step));
    } else {
      say("==> linking the image's tree (files shared with the layer cache by hard links)");
      ToolRun cp;
      cp.argv = {"cp", "-a", "--link", base, rootfs};
      cp.cancel = o.cancel;
      COPPICE_TRY_CTX(run_tool(cp), step);
    }
  } else {
    if (::mkdir(rootfs.c_str(), 0755) != 0) return std::unexpected(Error::from_errno(errno, "mkdir " + rootfs).context(step));
  }
  COPPICE_TRY_CTX(check_cancel(), step);

  DockerBuildState st;
  st.rootfs = rootfs;
  st.context = context;
  st.env = config.env;
  st.workdir = config.workdir;
  st.user = config.user;
  st.entrypoint = config.entrypoint;
  st.cmd = config.cmd;
  st.network_host = o.network_host;
  st.progress = o.progress;
  st.cancel = o.cancel;
  if (df) {
    // The accounts first, so that USER user and --chown=user work as in
    // every template (again at the end, after what RUN steps changed).
    COPPICE_TRY_CTX(edit_tree(rootfs, {}), step);
    if (own_copy) COPPICE_TRY_CTX(mount_build_dev(rootfs), step);
    auto ran = run_dockerfile(*df, from.next, o.build_args, st);
    if (own_copy) {
      if (auto u = unmount_under(sys::join_path(rootfs, "dev")); !u) say("warning: " + u.error().to_string());
    }
    if (!ran) return std::unexpected(std::move(ran.error()).context(o.dockerfile));
  }

  say("==> accounts root and user, identity files");
  COPPICE_TRY_CTX(edit_tree(rootfs, {}), step);
  std::string user;
  if (!st.user.empty()) {
    auto ids = resolve_user(rootfs, st.user);
    if (!ids) return std::unexpected(std::move(ids.error()).context(step + ": USER " + st.user));
    if (ids->name.empty())
      return make_error(ErrorCode::kInvalidArgument, step + ": USER " + st.user +
                                                         ": the image's /etc/passwd has no entry for that uid, and "
                                                         "sandboxes need a named user");
    if (st.user.find(':') != std::string::npos)
      say("    note: sandboxes run commands as " + ids->name + " in its own group; the group of USER " + st.user +
          " applied to RUN steps only");
    user = ids->name;
  }
  // As a container runtime would: the working directory exists.
  if (!st.workdir.empty() && !exists_in_tree(rootfs, st.workdir)) {
    AddedEntry e;
    e.kind = AddedEntry::kDir;
    e.dst = normalize_abs(st.workdir);
    e.mode = 0755;
    e.uid = e.gid = 0;
    if (!st.user.empty()) {
      auto ids = resolve_user(rootfs, st.user);
      if (ids) {
        e.uid = static_cast<int>(ids->uid);
        e.gid = static_cast<int>(ids->gid);
      }
    }
    COPPICE_TRY_CTX(add_entries(rootfs, {e}), step + ": WORKDIR " + st.workdir);
  }
  if (!exists_in_tree(rootfs, "/bin/bash"))
    say("    warning: the tree has no /bin/bash, which the SDK's commands.run starts (`/bin/bash -l -c`)");
  const std::string start_cmd = start_command(st.entrypoint, st.cmd);
  COPPICE_TRY_CTX(check_cancel(), step);

  say("==> template.toml");
  const std::string build_id =
      sha256_hex(res.image_digest + " " + o.name + " " +
                 std::to_string(std::chrono::system_clock::now().time_since_epoch().count()) + " " +
                 std::to_string(::getpid()));
  const std::string toml_path = sys::join_path(tmp, "template.toml");
  const std::string source = df ? "dockerfile" : "image";
  COPPICE_TRY_CTX(sys::write_new_file(toml_path,
                                      toml_for(source, build_id, res.hash, res.image_digest, st.env, user,
                                               st.workdir, start_cmd),
                                      0644),
                  step);
  COPPICE_TRY_CTX(sys::fsync_path(toml_path, 0), step);
  COPPICE_TRY_CTX(check_cancel(), step);

  say("==> installing as " + res.path);
  auto kept = install_build(tmp, o.templates_root, o.name);
  if (!kept) return std::unexpected(std::move(kept.error()).context(step));
  owner.release();
  if (auto s = sys::fsync_path(o.templates_root, O_DIRECTORY); !s) say("warning: " + s.error().to_string());
  res.replaced_tree = *kept;
  collect_image_cache(o.templates_root, o.progress);
  res.size_bytes = templates::tree_disk_usage(sys::join_path(res.path, "rootfs"));
  res.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return res;
}

}  // namespace

Result<ImageBuildResult> build_image_template(const ImageBuildOptions& o) {
  auto r = build(o);
  // What a failed build unpacked and no template uses does not stay.
  if (!r && sys::path_exists(images_dir(o.templates_root))) {
    if (auto lock = CacheLock::take(o.templates_root)) collect_image_cache(o.templates_root, o.progress);
  }
  return r;
}

}  // namespace coppice::builder
