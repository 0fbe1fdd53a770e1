#include "core/templates.h"

#include <filesystem>

#include "common/log.h"
#include "core/template_toml.h"

namespace coppice::core {

namespace fs = std::filesystem;

namespace {
Result<Template> load_template(const fs::path& dir) {
  Template t;
  t.name = dir.filename().string();
  t.path = dir.string();
  t.rootfs = (dir / "rootfs").string();
  std::error_code ec;
  if (!fs::is_directory(t.rootfs, ec)) return make_error(ErrorCode::kNotFound, "no rootfs/ in " + t.path);
  auto doc = parse_toml_file((dir / "template.toml").string());
  if (!doc) return std::unexpected(std::move(doc.error()).context("template " + t.name));
  auto str = [&](std::string_view k, std::string& out) {
    if (auto v = doc->get_string(k)) out = *v;
  };
  str("backend", t.backend);
  str("build_id", t.build_id);
  str("source", t.source);
  if (auto v = doc->get_strings("ro_binds")) t.ro_binds = *v;
  if (auto v = doc->get_int("cpu_count")) t.cpu_count = static_cast<int>(*v);
  if (auto v = doc->get_int("memory_mb")) t.memory_mb = static_cast<int>(*v);
  if (t.backend != "ns" && t.backend != "vm")
    return make_error(ErrorCode::kInvalidArgument, "template " + t.name + ": unknown backend " + t.backend);
  return t;
}
}  // namespace

Status TemplateRegistry::reload() {
  std::map<std::string, Template> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root_, ec)) {
    if (!e.is_directory() || e.path().filename().string().starts_with(".")) continue;
    auto t = load_template(e.path());
    if (!t) {
      COPPICE_LOG(warn) << "skipping template " << e.path().string() << ": " << t.error().to_string();
      continue;
    }
    found[t->name] = std::move(*t);
  }
  if (ec) return make_error(ErrorCode::kNotFound, "templates root " + root_ + ": " + ec.message());
  std::lock_guard lk(mu_);
  templates_ = std::move(found);
  return ok();
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
  for (const auto& [n, t] : templates_) out.push_back(t);
  return out;
}

}  // namespace coppice::core
