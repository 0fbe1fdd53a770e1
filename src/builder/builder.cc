#include "builder/builder.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>

#include "builder/build_dir.h"
#include "builder/mounts.h"
#include "builder/sources.h"
#include "builder/tree_edit.h"
#include "common/sha256.h"
#include "templates/template_toml.h"
#include "templates/templates.h"
#include "sys/fd.h"
#include "sys/fsutil.h"

namespace coppice::builder {
namespace {

using Clock = std::chrono::steady_clock;


double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The recipe hash of the template at `dir`, empty if there is none or it
// has no hash.
std::string installed_hash(const std::string& dir) { return installed_value(dir, "recipe_hash"); }

Status check_cancel(const BuildOptions& o) {
  if (o.cancel && o.cancel->load()) return make_error(ErrorCode::kCanceled, "the build was interrupted");
  return ok();
}

// The mirror arguments for mmdebstrap: the recipe's own sources, or a copy of
// the host's retargeted to the recipe's suite and kept in the build
// directory (outside the tree).
Result<std::vector<std::string>> mirror_args(const Recipe& r, const BuildOptions& o, const std::string& build_dir) {
  if (!r.sources.empty()) return r.sources;
  std::string host = o.host_sources.empty() ? default_host_sources() : o.host_sources;
  if (host.empty())
    return make_error(ErrorCode::kNotFound, std::string("no apt sources: neither ") + kHostDeb822Sources + " nor " +
                                                kHostListSources + " exists; give the recipe `sources`");
  auto text = sys::read_file(host);
  if (!text) return std::unexpected(std::move(text.error()).context("read apt sources"));
  const bool deb822 = host.ends_with(".sources");
  const std::string copy = sys::join_path(build_dir, deb822 ? "debian.sources" : "debian.list");
  COPPICE_TRY_CTX(sys::write_new_file(copy, retarget_sources(*text, deb822, r.suite), 0644), "apt sources");
  return std::vector<std::string>{copy};
}

std::vector<std::string> mmdebstrap_argv(const Recipe& r, const BuildOptions& o, const std::string& rootfs,
                                         const std::vector<std::string>& mirrors) {
  std::vector<std::string> argv = {o.mmdebstrap, "--mode=root", "--format=directory", "--variant=" + r.variant,
                                   // The recipe lists what it wants; Recommends
                                   // would make trees larger and less predictable.
                                   "--aptopt=APT::Install-Recommends \"false\"",
                                   "--aptopt=Acquire::Languages \"none\""};
  if (!r.packages.empty()) {
    std::string inc = "--include=";
    for (size_t i = 0; i < r.packages.size(); ++i) inc += (i ? "," : "") + r.packages[i];
    argv.push_back(inc);
  }
  for (const auto& p : r.exclude_paths) argv.push_back("--dpkgopt=path-exclude=" + p);
  if (o.verbose) argv.push_back("--verbose");
  argv.push_back(r.suite);
  argv.push_back(rootfs);
  argv.insert(argv.end(), mirrors.begin(), mirrors.end());
  return argv;
}



}  // namespace

std::string template_toml(const Recipe& r, const std::string& hash, const std::string& build_id) {
  std::string t =
      "# Built by `coppice template build` from the recipe named by recipe_hash;\n"
      "# a build of the same recipe is a no-op, --force rebuilds.\n"
      "backend = \"ns\"\n"
      "source = \"debian\"\n"
      "build_id = " + templates::toml_quote(build_id) + "\n"
      "recipe_hash = " + templates::toml_quote(hash) + "\n";
  if (r.cpu_count) t += "cpu_count = " + std::to_string(r.cpu_count) + "\n";
  if (r.memory_mb) t += "memory_mb = " + std::to_string(r.memory_mb) + "\n";
  if (!r.start_cmd.empty()) t += "start_cmd = " + templates::toml_quote(r.start_cmd) + "\n";
  if (!r.ready_cmd.empty()) t += "ready_cmd = " + templates::toml_quote(r.ready_cmd) + "\n";
  if (!r.env.empty()) t += "env = " + templates::toml_array(r.env) + "\n";
  return t;
}

Result<BuildResult> build_template(const BuildOptions& o) {
  const auto t0 = Clock::now();
  auto say = [&](const std::string& s) {
    if (o.progress) o.progress(s);
  };
  auto recipe = load_recipe(o.recipe_path);
  if (!recipe) return std::unexpected(std::move(recipe.error()));
  Recipe& r = *recipe;
  if (!o.name.empty()) {
    if (!templates::valid_template_name(o.name))
      return make_error(ErrorCode::kInvalidArgument, "--name \"" + o.name + "\" is not a template name");
    r.name = o.name;
  }
  auto hash = recipe_hash(r);
  if (!hash) return std::unexpected(std::move(hash.error()).context("recipe " + o.recipe_path));

  BuildResult res;
  res.name = r.name;
  res.path = sys::join_path(o.templates_root, r.name);
  res.recipe_hash = *hash;
  if (!o.force && installed_hash(res.path) == *hash) {
    res.cached = true;
    res.seconds = since(t0);
    return res;
  }
  if (::geteuid() != 0)
    return make_error(ErrorCode::kPermissionDenied,
                      "building a template needs root (mmdebstrap --mode=root; files owned by root and uid 1000)");

  const std::string step = "build template " + r.name;
  auto made = make_build_dir(o.templates_root, r.name, o.progress);
  if (!made) return std::unexpected(std::move(made.error()).context(step));
  const std::string tmp = *made;
  BuildDir owner(tmp);
  owner.on_error([&](std::string_view s) { say("warning: " + std::string(s)); });
  const std::string rootfs = sys::join_path(tmp, "rootfs");

  auto mirrors = mirror_args(r, o, tmp);
  if (!mirrors) return std::unexpected(std::move(mirrors.error()).context(step));
  say("==> [1/4] packages: mmdebstrap " + r.suite + ", variant " + r.variant + ", " +
      std::to_string(r.packages.size()) + " named packages");
  ToolRun run;
  run.argv = mmdebstrap_argv(r, o, rootfs, *mirrors);
  run.progress = [&](std::string_view line) { say("    " + std::string(line)); };
  run.cancel = o.cancel;
  COPPICE_TRY_CTX(run_tool(run), step);
  // mmdebstrap unmounts what it mounted; make sure before anything else
  // writes in the tree.
  COPPICE_TRY_CTX(unmount_under(rootfs), step);
  COPPICE_TRY_CTX(check_cancel(o), step);

  auto entries = list_added_entries(r);
  if (!entries) return std::unexpected(std::move(entries.error()).context(step));
  say("==> [2/4] accounts root and user, identity files, " + std::to_string(entries->size()) + " added entries");
  COPPICE_TRY_CTX(edit_tree(rootfs, *entries), step);
  COPPICE_TRY_CTX(check_cancel(o), step);

  say("==> [3/4] template.toml");
  const std::string build_id =
      sha256_hex(*hash + " " + std::to_string(std::chrono::system_clock::now().time_since_epoch().count()) + " " +
                 std::to_string(::getpid()));
  const std::string toml_path = sys::join_path(tmp, "template.toml");
  COPPICE_TRY_CTX(sys::write_new_file(toml_path, template_toml(r, *hash, build_id), 0644), step);
  for (const char* f : {"debian.sources", "debian.list"}) COPPICE_TRY_CTX(sys::remove_file(sys::join_path(tmp, f)), step);
  // The tree can be rebuilt; the description that marks it complete is
  // forced to disk before the rename publishes it.
  COPPICE_TRY_CTX(sys::fsync_path(toml_path, 0), step);
  COPPICE_TRY_CTX(check_cancel(o), step);

  say("==> [4/4] installing as " + res.path);
  auto kept = install_build(tmp, o.templates_root, r.name);
  if (!kept) return std::unexpected(std::move(kept.error()).context(step));
  owner.release();
  if (auto s = sys::fsync_path(o.templates_root, O_DIRECTORY); !s) say("warning: " + s.error().to_string());
  res.replaced_tree = *kept;
  res.size_bytes = templates::tree_disk_usage(sys::join_path(res.path, "rootfs"));
  res.seconds = since(t0);
  return res;
}

}  // namespace coppice::builder
