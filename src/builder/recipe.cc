#include "builder/recipe.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstdio>
#include <set>

#include "common/sha256.h"
#include "templates/template_toml.h"
#include "templates/templates.h"
#include "sys/fd.h"
#include "sys/fsutil.h"

namespace coppice::builder {
namespace {

constexpr int64_t kMaxCpuCount = 1024;
constexpr int64_t kMaxMemoryMb = int64_t{1} << 22;  // 4 TiB, as the registry allows
// Deepest directory nesting below a `files` directory source.
constexpr int kMaxDepth = 32;

constexpr std::string_view kVariants[] = {"extract", "custom", "essential", "apt", "required",
                                          "minbase", "buildd", "important", "standard"};

std::unexpected<Error> invalid(std::string msg) { return make_error(ErrorCode::kInvalidArgument, std::move(msg)); }

// Debian package names (policy 5.6.1), optionally with an architecture
// qualifier or a version / release pin as apt accepts them (pkg:arch,
// pkg=version, pkg/release). Nothing that could read as an option.
bool valid_package(std::string_view p) {
  if (p.empty() || p.size() > 256) return false;
  if (!((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= '0' && p[0] <= '9'))) return false;
  for (char c : p) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' || c == '-' ||
              c == '.' || c == ':' || c == '=' || c == '~' || c == '/' || c == '_';
    if (!ok) return false;
  }
  return true;
}

bool valid_env_name(std::string_view n) {
  if (n.empty() || (n[0] >= '0' && n[0] <= '9')) return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// "/a//b/./c/" -> "/a/b/c"; fails on relative paths and ".." parts, which
// could name something outside the place the recipe means.
Result<std::string> normalise_dst(std::string_view p) {
  if (p.empty() || p[0] != '/') return make_error(ErrorCode::kInvalidArgument, "must be an absolute path");
  std::string out;
  size_t i = 0;
  while (i < p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string_view::npos) j = p.size();
    std::string_view part = p.substr(i, j - i);
    i = j + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") return make_error(ErrorCode::kInvalidArgument, "must not contain \"..\"");
    if (part.find('\0') != std::string_view::npos) return make_error(ErrorCode::kInvalidArgument, "contains NUL");
    out += '/';
    out += part;
  }
  if (out.empty()) return make_error(ErrorCode::kInvalidArgument, "must not be the tree's root");
  return out;
}

void sort_unique(std::vector<std::string>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

std::string join_path(const std::string& a, std::string_view b) {
  if (a.empty()) return std::string(b);
  return a.back() == '/' ? a + std::string(b) : a + "/" + std::string(b);
}

Status add_entries(const std::string& src, const std::string& dst, bool follow, int depth,
                   std::vector<AddedEntry>& out) {
  struct stat st {};
  if ((follow ? ::stat(src.c_str(), &st) : ::lstat(src.c_str(), &st)) != 0) return errno_error("stat " + src);
  AddedEntry e;
  e.src = src;
  e.dst = dst;
  e.mode = st.st_mode & 0777;
  if (S_ISREG(st.st_mode)) {
    e.kind = AddedEntry::kFile;
    out.push_back(std::move(e));
    return ok();
  }
  if (S_ISLNK(st.st_mode)) {
    char target[PATH_MAX];
    ssize_t n = ::readlink(src.c_str(), target, sizeof target);
    if (n < 0) return errno_error("readlink " + src);
    e.kind = AddedEntry::kSymlink;
    e.target.assign(target, static_cast<size_t>(n));
    out.push_back(std::move(e));
    return ok();
  }
  if (!S_ISDIR(st.st_mode)) return invalid(src + ": not a regular file, directory or symlink");
  if (depth > kMaxDepth) return invalid(src + ": nested deeper than " + std::to_string(kMaxDepth));
  e.kind = AddedEntry::kDir;
  out.push_back(std::move(e));
  std::vector<std::string> names;
  {
    sys::UniqueFd fd(::open(src.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return errno_error("open " + src);
    DIR* d = ::fdopendir(fd.get());
    if (!d) return errno_error("opendir " + src);
    fd.release();
    while (struct dirent* de = ::readdir(d)) {
      std::string_view n(de->d_name);
      if (n != "." && n != "..") names.emplace_back(n);
    }
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    COPPICE_TRY_CTX(add_entries(join_path(src, n), join_path(dst, n), false, depth + 1, out), "files");
  }
  return ok();
}

}  // namespace

Result<Recipe> parse_recipe(std::string_view text, std::string default_name, std::string dir) {
  auto doc = templates::parse_toml(text);
  if (!doc) return std::unexpected(std::move(doc.error()));
  if (auto s = doc->check_known_keys({"name", "suite", "variant", "packages", "sources", "exclude_paths", "files",
                                      "env", "start_cmd", "ready_cmd", "cpu_count", "memory_mb"});
      !s)
    return std::unexpected(std::move(s.error()));

  Recipe r;
  r.name = std::move(default_name);
  r.dir = std::move(dir);
  auto str = [&](std::string_view k, std::string& out) -> Status {
    auto v = doc->get_string(k);
    if (v) out = std::move(*v);
    else if (v.error().code() != ErrorCode::kNotFound) return std::unexpected(std::move(v.error()));
    return ok();
  };
  auto strs = [&](std::string_view k, std::vector<std::string>& out) -> Status {
    auto v = doc->get_strings(k);
    if (v) out = std::move(*v);
    else if (v.error().code() != ErrorCode::kNotFound) return std::unexpected(std::move(v.error()));
    return ok();
  };
  auto num = [&](std::string_view k, int64_t max, int& out) -> Status {
    auto v = doc->get_int(k);
    if (!v) return v.error().code() == ErrorCode::kNotFound ? ok() : Status(std::unexpected(std::move(v.error())));
    if (*v < 1 || *v > max) return invalid(std::string(k) + " must be between 1 and " + std::to_string(max));
    out = static_cast<int>(*v);
    return ok();
  };
  std::vector<std::string> files;
  for (auto s : {str("name", r.name), str("suite", r.suite), str("variant", r.variant),
                 str("start_cmd", r.start_cmd), str("ready_cmd", r.ready_cmd), strs("packages", r.packages),
                 strs("sources", r.sources), strs("exclude_paths", r.exclude_paths), strs("files", files),
                 strs("env", r.env), num("cpu_count", kMaxCpuCount, r.cpu_count),
                 num("memory_mb", kMaxMemoryMb, r.memory_mb)}) {
    if (!s) return std::unexpected(std::move(s.error()));
  }

  if (!templates::valid_template_name(r.name))
    return invalid("name \"" + r.name + "\" is not a template name ([A-Za-z0-9_-][A-Za-z0-9._-]*, at most 128)");
  if (r.suite.empty()) return invalid("suite is required (the Debian release, e.g. \"bookworm\")");
  if (!valid_package(r.suite)) return invalid("suite \"" + r.suite + "\" is not a release name");
  if (std::find(std::begin(kVariants), std::end(kVariants), r.variant) == std::end(kVariants))
    return invalid("variant \"" + r.variant + "\" is not one of mmdebstrap's variants");
  for (const auto& p : r.packages) {
    if (!valid_package(p)) return invalid("packages: \"" + p + "\" is not a Debian package name");
  }
  sort_unique(r.packages);
  for (const auto& s : r.sources) {
    if (!(s.starts_with("deb ") || s.starts_with("deb-src ")) || s.find('\n') != std::string::npos)
      return invalid("sources: \"" + s + "\" is not a one-line apt source (\"deb URI SUITE [COMPONENT...]\")");
  }
  for (const auto& p : r.exclude_paths) {
    if (!p.starts_with("/") || p.find_first_of("\n\r") != std::string::npos)
      return invalid("exclude_paths: \"" + p + "\" must be an absolute path glob");
  }
  if (!r.exclude_paths.empty() && (r.variant == "extract" || r.variant == "custom"))
    return invalid("exclude_paths needs a variant that runs dpkg (not extract or custom)");
  sort_unique(r.exclude_paths);

  for (const auto& f : files) {
    size_t colon = f.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == f.size())
      return invalid("files: \"" + f + "\" is not \"SRC:DST\"");
    auto dst = normalise_dst(std::string_view(f).substr(colon + 1));
    if (!dst) return invalid("files: \"" + f + "\": the destination " + dst.error().message());
    r.files.push_back({f.substr(0, colon), *dst});
  }

  std::set<std::string> env_names;
  for (const auto& e : r.env) {
    size_t eq = e.find('=');
    std::string name = e.substr(0, eq);
    if (eq == std::string::npos || !valid_env_name(name))
      return invalid("env: \"" + e + "\" is not NAME=value");
    if (e.find('\0') != std::string::npos) return invalid("env: \"" + name + "\" contains NUL");
    if (!env_names.insert(name).second) return invalid("env: " + name + " is set twice");
  }
  std::sort(r.env.begin(), r.env.end(), [](const std::string& a, const std::string& b) {
    return a.substr(0, a.find('=')) < b.substr(0, b.find('='));
  });
  return r;
}

Result<Recipe> load_recipe(const std::string& path) {
  auto slash = path.rfind('/');
  std::string file = slash == std::string::npos ? path : path.substr(slash + 1);
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  std::string name = file.ends_with(".toml") ? file.substr(0, file.size() - 5) : file;
  sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::unexpected(Error::from_errno(errno, "open recipe " + path));
  auto text = sys::read_all_limited(fd.get(), "recipe " + path, 1 << 20);
  if (!text) return std::unexpected(std::move(text.error()));
  auto r = parse_recipe(*text, name, dir);
  if (!r) return std::unexpected(std::move(r.error()).context("recipe " + path));
  return r;
}

std::string canonical_recipe(const Recipe& r) {
  std::string out;
  auto line = [&](std::string_view k, std::string_view v) {
    out += k;
    out += ' ';
    out += templates::toml_quote(v);
    out += '\n';
  };
  auto lines = [&](std::string_view k, const std::vector<std::string>& vs) {
    for (const auto& v : vs) line(k, v);
  };
  line("suite", r.suite);
  line("variant", r.variant);
  lines("package", r.packages);
  lines("source", r.sources);
  lines("exclude_path", r.exclude_paths);
  for (const auto& f : r.files) line("file", f.dst);
  lines("env", r.env);
  line("start_cmd", r.start_cmd);
  line("ready_cmd", r.ready_cmd);
  line("cpu_count", std::to_string(r.cpu_count));
  line("memory_mb", std::to_string(r.memory_mb));
  return out;
}

std::string source_path(const Recipe& r, const FileCopy& f) {
  return f.src.starts_with("/") ? f.src : join_path(r.dir, f.src);
}

Result<std::vector<AddedEntry>> list_added_entries(const Recipe& r) {
  std::vector<AddedEntry> out;
  for (const auto& f : r.files) {
    const std::string ctx = "files \"" + f.src + ":" + f.dst + "\"";
    // Symlink-free and absolute: the tree editor reads sources by this path
    // from inside its chroot, through a descriptor of the host's root.
    const std::string src = source_path(r, f);
    char* real = ::realpath(src.c_str(), nullptr);
    if (!real) return std::unexpected(Error::from_errno(errno, "resolve " + src).context(ctx));
    std::string resolved(real);
    ::free(real);
    COPPICE_TRY_CTX(add_entries(resolved, f.dst, true, 0, out), ctx);
  }
  return out;
}

Result<std::string> recipe_hash(const Recipe& r) {
  std::string text = "coppice-template-builder " + std::to_string(kBuilderFormatVersion) + "\n";
  text += canonical_recipe(r);
  auto entries = list_added_entries(r);
  if (!entries) return std::unexpected(std::move(entries.error()));
  for (const auto& e : *entries) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", e.mode);
    std::string digest = "-";
    if (e.kind == AddedEntry::kFile) {
      auto h = sys::sha256_file_hex(e.src);
      if (!h) return std::unexpected(std::move(h.error()).context("files"));
      digest = *h;
    } else if (e.kind == AddedEntry::kSymlink) {
      digest = sha256_hex(e.target);
    }
    const char* kind = e.kind == AddedEntry::kFile ? "f" : e.kind == AddedEntry::kDir ? "d" : "l";
    text += "added " + templates::toml_quote(e.dst) + " " + kind + " " + mode + " " + digest + "\n";
  }
  return sha256_hex(text);
}

}  // namespace coppice::builder
