#include "templates/templates.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <utility>

#include "common/log.h"
#include "sys/fd.h"
#include "sys/fsutil.h"
#include "sys/tree_walk.h"
#include "templates/template_toml.h"

namespace coppice::templates {

namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxNameLen = 128;
constexpr int64_t kMaxCpuCount = 1024;
constexpr int64_t kMaxMemoryMb = int64_t{1} << 22;  // 4 TiB
constexpr int64_t kMaxDiskMb = int64_t{1} << 24;    // 16 TiB

// Fills `t` from the description at `toml_path`. Absent keys keep their
// defaults; a key of the wrong type or an unknown key is an error, because a
// typo must not silently become a default.
Status read_description(const std::string& toml_path, Template& t) {
  auto doc = parse_toml_file(toml_path);
  if (!doc) return std::unexpected(std::move(doc.error()));
  if (auto s = doc->check_known_keys({"backend", "cpu_count", "memory_mb", "disk_mb", "egress_mbps", "ro_binds", "build_id", "source",
                                      "generation",
                                      "start_cmd", "ready_cmd", "recipe_hash", "env", "user", "workdir",
                                      "image_digest"});
      !s)
    return std::unexpected(std::move(s.error()).context(toml_path));
  auto str = [&](std::string_view k, std::string& out) -> Status {
    auto v = doc->get_string(k);
    if (v) out = std::move(*v);
    else if (v.error().code() != ErrorCode::kNotFound) return std::unexpected(std::move(v.error()).context(toml_path));
    return ok();
  };
  auto num = [&](std::string_view k, int64_t max, int& out) -> Status {
    auto v = doc->get_int(k);
    if (!v) {
      if (v.error().code() == ErrorCode::kNotFound) return ok();
      return std::unexpected(std::move(v.error()).context(toml_path));
    }
    if (*v < 0 || *v > max)
      return make_error(ErrorCode::kInvalidArgument,
                        toml_path + ": " + std::string(k) + " must be between 0 and " + std::to_string(max));
    out = static_cast<int>(*v);
    return ok();
  };
  const std::pair<std::string_view, std::string*> strings[] = {
      {"backend", &t.backend},     {"build_id", &t.build_id},   {"source", &t.source},
      {"start_cmd", &t.start_cmd}, {"ready_cmd", &t.ready_cmd}, {"recipe_hash", &t.recipe_hash},
      {"user", &t.user},           {"workdir", &t.workdir},     {"image_digest", &t.image_digest}};
  for (const auto& [key, field] : strings) {
    if (auto s = str(key, *field); !s) return s;
  }
  if (!t.workdir.empty() && !t.workdir.starts_with("/"))
    return make_error(ErrorCode::kInvalidArgument, toml_path + ": workdir \"" + t.workdir + "\" is not absolute");
  if (auto s = num("cpu_count", kMaxCpuCount, t.cpu_count); !s) return s;
  if (auto s = num("memory_mb", kMaxMemoryMb, t.memory_mb); !s) return s;
  if (auto s = num("disk_mb", kMaxDiskMb, t.disk_mb); !s) return s;
  if (auto s = num("egress_mbps", 100000, t.egress_mbps); !s) return s;
  if (auto v = doc->get_strings("ro_binds")) t.ro_binds = std::move(*v);
  else if (v.error().code() != ErrorCode::kNotFound) return std::unexpected(std::move(v.error()).context(toml_path));
  if (auto v = doc->get_strings("env")) {
    for (const auto& kv : *v) {
      auto eq = kv.find('=');
      if (eq == 0 || eq == std::string::npos)
        return make_error(ErrorCode::kInvalidArgument, toml_path + ": env entry \"" + kv + "\" is not NAME=VALUE");
      t.env[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
  } else if (v.error().code() != ErrorCode::kNotFound) {
    return std::unexpected(std::move(v.error()).context(toml_path));
  }
  return ok();
}

// A directory template: <dir>/rootfs and <dir>/template.toml.
Result<Template> load_dir_template(const fs::path& dir) {
  Template t;
  t.name = dir.filename().string();
  t.path = dir.string();
  t.rootfs = (dir / "rootfs").string();
  std::error_code ec;
  if (!fs::is_directory(t.rootfs, ec))
    return make_error(ErrorCode::kNotFound, "no rootfs/ directory in " + t.path);
  if (auto s = read_description((dir / "template.toml").string(), t); !s) return std::unexpected(std::move(s.error()));
  if (t.backend != "ns" && t.backend != "vm")
    return make_error(ErrorCode::kInvalidArgument, "unknown backend \"" + t.backend + "\"");
  t.size_bytes = tree_disk_usage(t.rootfs);
  t.tree = tree_key(t.rootfs);
  return t;
}

}  // namespace

bool valid_template_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLen || name.front() == '.') return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              c == '.';
    if (!ok) return false;
  }
  return true;
}

uint64_t tree_disk_usage(const std::string& root) {
  struct stat top {};
  if (::stat(root.c_str(), &top) != 0) return 0;  // the root itself may be a symlink
  uint64_t total = static_cast<uint64_t>(top.st_blocks) * 512;
  if (!S_ISDIR(top.st_mode)) return total;
  // A tree built from a recipe can be any shape: the walk is iterative with
  // bounded memory and fds (sys/tree_walk.h).
  sys::UniqueFd fd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return total;
  auto below = sys::disk_usage_below(fd.get());
  return below ? total + below->bytes : total;
}

Status TemplateRegistry::reload() {
  std::lock_guard scan(reload_mu_);
  std::map<std::string, Template> found;
  std::error_code ec;
  fs::directory_iterator dir(root_, ec);
  if (ec) return make_error(ErrorCode::kInternal, "templates root " + root_ + ": " + ec.message(), ec.value());
  for (; !ec && dir != fs::directory_iterator(); dir.increment(ec)) {
    const fs::path& p = dir->path();
    std::string file = p.filename().string();
    if (file.starts_with(".")) continue;  // a build in progress, a retired build, or hidden
    std::error_code sec;
    if (!dir->is_directory(sec)) continue;
    if (!valid_template_name(file)) {
      COPPICE_LOG(warn) << "skipping template " << p.string() << ": the name is not a valid template name";
      continue;
    }
    auto t = load_dir_template(p);
    if (!t) {
      COPPICE_LOG(warn) << "skipping template " << p.string() << ": " << t.error().to_string();
      continue;
    }
    found[t->name] = std::move(*t);
  }
  if (ec) return make_error(ErrorCode::kInternal, "read templates root " + root_ + ": " + ec.message(), ec.value());
  std::lock_guard lk(mu_);
  templates_ = std::move(found);
  return ok();
}

std::string tree_key(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return "";
  return std::to_string(static_cast<unsigned long long>(st.st_dev)) + ":" +
         std::to_string(static_cast<unsigned long long>(st.st_ino));
}

Status make_templates_root(const std::string& root) {
  COPPICE_TRY(sys::make_dirs(root, 0700));
  if (::chmod(root.c_str(), 0700) != 0) return errno_error("chmod " + root);
  return ok();
}

std::string retired_root(const std::string& templates_root) { return templates_root + "/.retired"; }

std::string retired_path(const std::string& templates_root, const std::string& name) {
  auto now = std::chrono::system_clock::now().time_since_epoch();
  return retired_root(templates_root) + "/" + name + "-" +
         std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(now).count()) + "-" +
         std::to_string(::getpid());
}

std::vector<RetiredTree> retired_trees(const std::string& templates_root) {
  std::vector<RetiredTree> out;
  std::error_code ec;
  for (fs::directory_iterator d(retired_root(templates_root), ec); !ec && d != fs::directory_iterator();
       d.increment(ec)) {
    out.push_back(RetiredTree{d->path().string(), tree_key((d->path() / "rootfs").string())});
  }
  ec.clear();
  for (fs::directory_iterator d(templates_root, ec); !ec && d != fs::directory_iterator(); d.increment(ec)) {
    std::string n = d->path().filename().string();
    // .<name>.old-<pid>: how builders before .retired put a replaced tree aside.
    auto at = n.rfind(".old-");
    if (!n.starts_with(".") || at == std::string::npos || at == 0) continue;
    out.push_back(RetiredTree{d->path().string(), tree_key((d->path() / "rootfs").string())});
  }
  return out;
}

Result<Template> TemplateRegistry::get(const std::string& name) const {
  std::lock_guard lk(mu_);
  auto it = templates_.find(name);
  if (it != templates_.end()) return it->second;
  std::string names;
  for (const auto& [n, t] : templates_) names += (names.empty() ? "" : ", ") + n;
  return make_error(ErrorCode::kInvalidArgument,
                    "template '" + name + "' does not exist; templates here: " + (names.empty() ? "none" : names));
}

std::vector<Template> TemplateRegistry::list() const {
  std::lock_guard lk(mu_);
  std::vector<Template> out;
  out.reserve(templates_.size());
  for (const auto& [n, t] : templates_) out.push_back(t);
  return out;
}

}  // namespace coppice::templates
