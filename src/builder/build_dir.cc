#include "builder/build_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "builder/mounts.h"
#include "sys/fsutil.h"
#include "templates/template_toml.h"
#include "templates/templates.h"

namespace coppice::builder {
namespace {

// The pid in ".<name>.<kind>-<pid>", or 0.
long pid_suffix(const std::string& entry, const std::string& kind) {
  size_t at = entry.rfind("." + kind + "-");
  if (!entry.starts_with(".") || at == std::string::npos || at == 0) return 0;
  const char* digits = entry.c_str() + at + kind.size() + 2;
  char* end = nullptr;
  long pid = std::strtol(digits, &end, 10);
  return end != digits && *end == '\0' && pid > 0 ? pid : 0;
}

// Removes what earlier builds left: build directories whose builder is gone
// (killed with SIGKILL, a crash, a power cut). Replaced trees are not the
// builder's to remove: sandboxes may run on them (templates.h, retired_root).
void sweep(const std::string& root, const ProgressFn& progress) {
  auto names = sys::list_dir(root);
  if (!names) return;
  for (const auto& n : *names) {
    const std::string path = sys::join_path(root, n);
    bool stale = false;
    if (long pid = pid_suffix(n, "build")) {
      stale = pid == ::getpid() || (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH);
    }
    if (!stale) continue;
    if (auto s = remove_build_tree(path); !s) {
      if (progress) progress("warning: " + s.error().to_string());
    } else if (progress) {
      progress("removed " + path + " (left by an earlier build)");
    }
  }
}

}  // namespace

BuildDir::~BuildDir() {
  if (path_.empty()) return;
  if (auto s = remove_build_tree(path_); !s && on_error_) on_error_("could not remove " + path_ + ": " + s.error().to_string());
}

Result<std::string> make_build_dir(const std::string& root, const std::string& name, const ProgressFn& progress) {
  COPPICE_TRY(templates::make_templates_root(root));
  sweep(root, progress);
  const std::string tmp = sys::join_path(root, "." + name + ".build-" + std::to_string(::getpid()));
  if (::mkdir(tmp.c_str(), 0755) != 0) return errno_error("mkdir " + tmp);
  return tmp;
}

Result<std::string> install_build(const std::string& tmp, const std::string& root, const std::string& name) {
  const std::string final_dir = sys::join_path(root, name);
  struct stat st {};
  if (::lstat(final_dir.c_str(), &st) != 0) {
    if (errno != ENOENT) return errno_error("stat " + final_dir);
    if (::rename(tmp.c_str(), final_dir.c_str()) != 0) return errno_error("rename " + tmp + " to " + final_dir);
    return std::string();
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) != 0)
    return errno_error("swap " + tmp + " with " + final_dir);
  // The new template is in place from here on.
  COPPICE_TRY_CTX(sys::make_dirs(templates::retired_root(root), 0700), "retired builds");
  const std::string old = templates::retired_path(root, name);
  if (::rename(tmp.c_str(), old.c_str()) != 0) return errno_error("move the replaced tree to " + old);
  return old;
}

std::string installed_value(const std::string& dir, const std::string& key) {
  struct stat st {};
  if (::stat(sys::join_path(dir, "rootfs").c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return "";
  auto doc = templates::parse_toml_file(sys::join_path(dir, "template.toml"));
  if (!doc) return "";
  auto h = doc->get_string(key);
  return h ? *h : "";
}

}  // namespace coppice::builder
