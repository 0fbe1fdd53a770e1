#include "builder/dockerfile_exec.h"

#include <fcntl.h>
#include <glob.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <set>

#include "builder/image_config.h"
#include "builder/recipe.h"
#include "builder/run_step.h"
#include "builder/tree_edit.h"
#include "common/strings.h"
#include "sys/fd.h"
#include "sys/fsutil.h"
#include "sys/linux_syscalls.h"

namespace coppice::builder {
namespace {

Error at(const DockerInstruction& ins, const std::string& what) {
  return Error(ErrorCode::kInvalidArgument, "line " + std::to_string(ins.line) + ": " + ins.keyword + ": " + what);
}
Error at(const DockerInstruction& ins, Error e) {
  return Error(e.code(), "line " + std::to_string(ins.line) + ": " + ins.keyword + ": " + e.message());
}

bool numeric(const std::string& s) {
  if (s.empty() || s.size() > 10) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return std::strtoull(s.c_str(), nullptr, 10) < (1ull << 32) - 1;
}

// A file of the tree, read inside it; "" when missing.
Result<std::string> read_in_tree(const std::string& rootfs, const char* path) {
  sys::UniqueFd root(::open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return errno_error("open " + rootfs);
  int fd = sys::raw::openat2(root.get(), path, O_RDONLY | O_CLOEXEC, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
  if (fd < 0) {
    if (errno == ENOENT) return std::string();
    return errno_error(std::string("open ") + path + " in the tree");
  }
  sys::UniqueFd f(fd);
  return sys::read_all_limited(f.get(), path, 16 << 20);
}

VarMap vars_of(const DockerBuildState& st, const VarMap& args) {
  VarMap v = args;
  for (const auto& e : st.env) {
    size_t eq = e.find('=');
    if (eq != std::string::npos) v[e.substr(0, eq)] = e.substr(eq + 1);
  }
  return v;
}

std::string workdir_of(const DockerBuildState& st) { return st.workdir.empty() ? "/" : st.workdir; }

// Whether the first bytes of a file are those of an archive ADD would unpack.
bool looks_like_archive(const std::string& path) {
  sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return false;
  unsigned char b[512] = {};
  ssize_t n = ::pread(fd.get(), b, sizeof b, 0);
  if (n < 6) return false;
  if (b[0] == 0x1f && b[1] == 0x8b) return true;                   // gzip
  if (b[0] == 'B' && b[1] == 'Z' && b[2] == 'h') return true;      // bzip2
  if (b[0] == 0xfd && b[1] == '7' && b[2] == 'z' && b[3] == 'X') return true;  // xz
  if (b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd) return true;  // zstd
  return n >= 262 && std::string_view(reinterpret_cast<char*>(b) + 257, 5) == "ustar";
}

struct Step {
  const DockerInstruction& ins;
  DockerBuildState& st;
  VarMap& args;
  const std::map<std::string, std::string>& build_args;
  std::set<std::string>& used_args;
  char escape;
};

Result<std::vector<std::string>> words_of(const Step& s) {
  if (s.ins.json) {
    std::vector<std::string> out;
    const VarMap v = vars_of(s.st, s.args);
    for (const auto& a : s.ins.args) {
      auto e = expand_string(a, v, s.escape);
      if (!e) return std::unexpected(at(s.ins, e.error()));
      out.push_back(*e);
    }
    return out;
  }
  auto w = expand_words(s.ins.text, vars_of(s.st, s.args), s.escape);
  if (!w) return std::unexpected(at(s.ins, w.error()));
  return w;
}

std::vector<std::string> command_of(const DockerInstruction& ins, const std::vector<std::string>& shell) {
  if (ins.json) return ins.args;
  std::vector<std::string> argv = shell;
  argv.push_back(ins.text);
  return argv;
}

Status check_flags(const DockerInstruction& ins, std::initializer_list<std::string_view> known) {
  for (const auto& [name, value] : ins.flags) {
    bool ok_flag = false;
    for (auto k : known) ok_flag = ok_flag || name == k;
    if (!ok_flag) return std::unexpected(at(ins, "the flag --" + name + " is not supported"));
  }
  return ok();
}

std::string flag(const DockerInstruction& ins, std::string_view name) {
  for (const auto& [n, v] : ins.flags)
    if (n == name) return v;
  return "";
}

Status do_run(Step& s) {
  COPPICE_TRY(check_flags(s.ins, {}));
  RunStep r;
  r.rootfs = s.st.rootfs;
  r.argv = command_of(s.ins, {"/bin/sh", "-c"});
  // ARGs are in a RUN's environment, under ENV's of the same name.
  std::vector<std::string> env;
  for (const auto& [k, v] : s.args) env.push_back(k + "=" + v);
  for (const auto& e : s.st.env) {
    size_t eq = e.find('=');
    set_env(env, e.substr(0, eq), e.substr(eq + 1));
  }
  r.env = env;
  r.cwd = workdir_of(s.st);
  if (!s.st.user.empty()) {
    auto ids = resolve_user(s.st.rootfs, s.st.user);
    if (!ids) return std::unexpected(at(s.ins, ids.error()));
    r.uid = ids->uid;
    r.gid = ids->gid;
  }
  r.network_host = s.st.network_host;
  r.progress = [&](std::string_view line) {
    if (s.st.progress) s.st.progress("    | " + std::string(line));
  };
  r.cancel = s.st.cancel;
  s.st.has_run = true;
  if (auto st = run_step(r); !st) {
    if (st.error().code() == ErrorCode::kCanceled) return st;
    std::string msg = st.error().message();
    if (!s.st.network_host) msg += "\n  (RUN steps have no network unless the build is given --network host)";
    return std::unexpected(at(s.ins, "`" + s.ins.text + "` failed: " + msg));
  }
  return ok();
}

Status do_copy(Step& s, bool add) {
  const std::string kw = s.ins.keyword;
  if (std::any_of(s.ins.flags.begin(), s.ins.flags.end(), [](const auto& f) { return f.first == "from"; }))
    return std::unexpected(at(s.ins, "--from (multi-stage builds) is not supported"));
  COPPICE_TRY(check_flags(s.ins, {"chown", "chmod", "link"}));
  COPPICE_ASSIGN_OR_RETURN(auto words, words_of(s));
  if (words.size() < 2) return std::unexpected(at(s.ins, "needs a source and a destination"));
  std::string dst = words.back();
  words.pop_back();
  const bool dst_dir = dst.ends_with("/") || words.size() > 1;
  if (!dst.starts_with("/")) dst = workdir_of(s.st) + "/" + dst;
  dst = normalize_abs(dst);

  int uid = -1, gid = -1;
  if (std::string c = flag(s.ins, "chown"); !c.empty()) {
    auto ids = resolve_user(s.st.rootfs, c);
    if (!ids) return std::unexpected(at(s.ins, ids.error()));
    uid = static_cast<int>(ids->uid);
    gid = static_cast<int>(ids->gid);
  }
  int mode = -1;
  if (std::string m = flag(s.ins, "chmod"); !m.empty()) {
    char* end = nullptr;
    long v = std::strtol(m.c_str(), &end, 8);
    if (*end || v < 0 || v > 07777) return std::unexpected(at(s.ins, "--chmod=" + m + " is not an octal mode"));
    mode = static_cast<int>(v);
  }

  std::vector<std::string> matches;
  for (const auto& src : words) {
    if (src.find("://") != std::string::npos || src.starts_with("git@"))
      return std::unexpected(at(s.ins, "\"" + src + "\": only files from the build context can be added, not URLs"));
    // Lexically inside the context: no ".." above it.
    int depth = 0;
    for (const auto& part : split_string(src, '/')) {
      if (part == "..") --depth;
      else if (!part.empty() && part != ".") ++depth;
      if (depth < 0) return std::unexpected(at(s.ins, "\"" + src + "\" is outside the build context"));
    }
    const std::string rel = normalize_abs("/" + src);
    const std::string pattern = s.st.context + (rel == "/" ? "" : rel);
    std::vector<std::string> found;
    if (rel.find_first_of("*?[") != std::string::npos) {
      glob_t g{};
      int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
      for (size_t i = 0; rc == 0 && i < g.gl_pathc; ++i) found.emplace_back(g.gl_pathv[i]);
      ::globfree(&g);
      if (found.empty()) return std::unexpected(at(s.ins, "nothing in the build context matches \"" + src + "\""));
    } else {
      struct stat st {};
      if (::lstat(pattern.c_str(), &st) != 0)
        return std::unexpected(at(s.ins, "\"" + src + "\" is not in the build context"));
      found.push_back(pattern);
    }
    for (const auto& f : found) {
      char* real = ::realpath(f.c_str(), nullptr);
      if (!real) return std::unexpected(at(s.ins, Error::from_errno(errno, "resolve " + f)));
      std::string r(real);
      ::free(real);
      if (r != s.st.context && !r.starts_with(s.st.context + "/"))
        return std::unexpected(at(s.ins, "\"" + src + "\" leads out of the build context (through a symlink)"));
      matches.push_back(r);
    }
  }
  const bool into_dir = dst_dir || matches.size() > 1;
  std::vector<AddedEntry> entries;
  for (const auto& m : matches) {
    struct stat st {};
    if (::stat(m.c_str(), &st) != 0) return std::unexpected(at(s.ins, Error::from_errno(errno, "stat " + m)));
    if (add && S_ISREG(st.st_mode) && looks_like_archive(m))
      return std::unexpected(at(s.ins, "\"" + m.substr(s.st.context.size() + 1) +
                                           "\" is an archive: ADD does not unpack archives here; COPY it and RUN tar"));
    std::string target = dst;
    if (!S_ISDIR(st.st_mode) && into_dir) target = normalize_abs(dst + "/" + m.substr(m.rfind('/') + 1));
    Recipe r;
    r.dir = s.st.context;
    r.files.push_back(FileCopy{m, target});
    auto listed = list_added_entries(r);
    if (!listed) return std::unexpected(at(s.ins, listed.error()));
    for (auto& e : *listed) {
      // A directory that is there keeps its owner and mode (only what is
      // copied into it is new).
      if (e.kind == AddedEntry::kDir && e.dst == target && exists_in_tree(s.st.rootfs, target)) continue;
      e.uid = uid;
      e.gid = gid;
      if (mode >= 0 && e.kind != AddedEntry::kSymlink) e.mode = static_cast<unsigned>(mode);
      entries.push_back(std::move(e));
    }
  }
  if (auto r = add_entries(s.st.rootfs, entries); !r) return std::unexpected(at(s.ins, r.error()));
  if (s.st.progress) s.st.progress("    " + std::to_string(entries.size()) + " entries to " + dst);
  return ok();
}

Status do_workdir(Step& s) {
  COPPICE_TRY(check_flags(s.ins, {}));
  auto w = expand_string(s.ins.text, vars_of(s.st, s.args), s.escape);
  if (!w) return std::unexpected(at(s.ins, w.error()));
  if (w->empty()) return std::unexpected(at(s.ins, "an empty path"));
  std::string dir = w->starts_with("/") ? *w : workdir_of(s.st) + "/" + *w;
  s.st.workdir = normalize_abs(dir);
  if (exists_in_tree(s.st.rootfs, s.st.workdir)) return ok();
  AddedEntry e;
  e.kind = AddedEntry::kDir;
  e.dst = s.st.workdir;
  e.mode = 0755;
  if (!s.st.user.empty()) {
    auto ids = resolve_user(s.st.rootfs, s.st.user);
    if (!ids) return std::unexpected(at(s.ins, ids.error()));
    e.uid = static_cast<int>(ids->uid);
    e.gid = static_cast<int>(ids->gid);
  } else {
    e.uid = 0;
    e.gid = 0;
  }
  if (auto r = add_entries(s.st.rootfs, {e}); !r) return std::unexpected(at(s.ins, r.error()));
  return ok();
}

Status do_env_or_arg(Step& s, bool env) {
  COPPICE_TRY(check_flags(s.ins, {}));
  auto kvs = parse_key_values(s.ins.text, vars_of(s.st, s.args), env, s.escape);
  if (!kvs) return std::unexpected(at(s.ins, kvs.error()));
  for (const auto& kv : *kvs) {
    if (env) {
      set_env(s.st.env, kv.key, kv.value);
      continue;
    }
    auto given = s.build_args.find(kv.key);
    if (given != s.build_args.end()) {
      s.args[kv.key] = given->second;
      s.used_args.insert(kv.key);
    } else {
      s.args[kv.key] = kv.value;
    }
  }
  return ok();
}

}  // namespace

bool exists_in_tree(const std::string& rootfs, const std::string& path) {
  sys::UniqueFd root(::open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return false;
  int fd = sys::raw::openat2(root.get(), path.c_str(), O_PATH | O_CLOEXEC, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

std::string normalize_abs(const std::string& path) {
  std::vector<std::string> parts;
  for (const auto& p : split_string(path, '/')) {
    if (p.empty() || p == ".") continue;
    if (p == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.push_back(p);
  }
  std::string out;
  for (const auto& p : parts) out += "/" + p;
  return out.empty() ? "/" : out;
}

Result<UserIds> resolve_user(const std::string& rootfs, const std::string& spec) {
  if (spec.empty()) return UserIds{0, 0, "root"};
  const size_t colon = spec.find(':');
  const std::string user = spec.substr(0, colon);
  const std::string group = colon == std::string::npos ? "" : spec.substr(colon + 1);
  if (user.empty()) return make_error(ErrorCode::kInvalidArgument, "\"" + spec + "\" names no user");
  COPPICE_ASSIGN_OR_RETURN(auto passwd, read_in_tree(rootfs, "/etc/passwd"));
  UserIds ids;
  bool found = false;
  for (const auto& line : split_string(passwd, '\n')) {
    auto f = split_string(line, ':');
    if (f.size() < 4 || line.starts_with("#")) continue;
    if (numeric(user) ? f[2] == user : f[0] == user) {
      if (!numeric(f[2]) || !numeric(f[3])) continue;
      ids.name = f[0];
      ids.uid = static_cast<uid_t>(std::strtoul(f[2].c_str(), nullptr, 10));
      ids.gid = static_cast<gid_t>(std::strtoul(f[3].c_str(), nullptr, 10));
      found = true;
      break;
    }
  }
  if (!found) {
    if (!numeric(user))
      return make_error(ErrorCode::kInvalidArgument, "user \"" + user + "\" is not in the image's /etc/passwd");
    ids.uid = static_cast<uid_t>(std::strtoul(user.c_str(), nullptr, 10));
    ids.gid = 0;
  }
  if (!group.empty()) {
    if (numeric(group)) {
      ids.gid = static_cast<gid_t>(std::strtoul(group.c_str(), nullptr, 10));
    } else {
      COPPICE_ASSIGN_OR_RETURN(auto groups, read_in_tree(rootfs, "/etc/group"));
      bool gfound = false;
      for (const auto& line : split_string(groups, '\n')) {
        auto f = split_string(line, ':');
        if (f.size() >= 3 && f[0] == group && numeric(f[2])) {
          ids.gid = static_cast<gid_t>(std::strtoul(f[2].c_str(), nullptr, 10));
          gfound = true;
          break;
        }
      }
      if (!gfound) return make_error(ErrorCode::kInvalidArgument, "group \"" + group + "\" is not in the image's /etc/group");
    }
  }
  return ids;
}

Result<DockerfileFrom> dockerfile_from(const Dockerfile& df, const std::map<std::string, std::string>& build_args) {
  VarMap args;
  for (size_t i = 0; i < df.instructions.size(); ++i) {
    const auto& ins = df.instructions[i];
    if (ins.keyword == "ARG") {
      auto kvs = parse_key_values(ins.text, args, false, df.escape);
      if (!kvs) return std::unexpected(at(ins, kvs.error()));
      for (const auto& kv : *kvs) {
        auto given = build_args.find(kv.key);
        args[kv.key] = given != build_args.end() ? given->second : kv.value;
      }
      continue;
    }
    if (ins.keyword != "FROM")
      return std::unexpected(at(ins, "the first instruction must be FROM (only ARG may come before it)"));
    if (!ins.flags.empty()) return std::unexpected(at(ins, "the flag --" + ins.flags.front().first + " is not supported"));
    auto words = expand_words(ins.text, args, df.escape);
    if (!words) return std::unexpected(at(ins, words.error()));
    if (words->size() == 3 && (words->at(1) == "AS" || words->at(1) == "as")) words->resize(1);
    if (words->size() != 1) return std::unexpected(at(ins, "expected FROM <image> [AS <name>]"));
    for (size_t j = i + 1; j < df.instructions.size(); ++j) {
      if (df.instructions[j].keyword == "FROM")
        return std::unexpected(at(df.instructions[j], "a second FROM: multi-stage builds are not supported"));
    }
    return DockerfileFrom{words->front(), ins.line, i + 1};
  }
  return make_error(ErrorCode::kInvalidArgument, "the Dockerfile has no FROM");
}

bool has_run_steps(const Dockerfile& df, size_t first) {
  for (size_t i = first; i < df.instructions.size(); ++i)
    if (df.instructions[i].keyword == "RUN") return true;
  return false;
}

Status run_dockerfile(const Dockerfile& df, size_t first, const std::map<std::string, std::string>& build_args,
                      DockerBuildState& st) {
  VarMap args;
  std::set<std::string> used;
  bool cmd_set = false;
  std::vector<std::string> shell = {"/bin/sh", "-c"};
  const size_t total = df.instructions.size() - first;
  for (size_t i = first; i < df.instructions.size(); ++i) {
    const auto& ins = df.instructions[i];
    if (st.cancel && st.cancel->load()) return make_error(ErrorCode::kCanceled, "the build was interrupted");
    if (st.progress)
      st.progress("==> step " + std::to_string(i - first + 1) + "/" + std::to_string(total) + " (line " +
                  std::to_string(ins.line) + "): " + ins.keyword + " " + ins.text);
    Step s{ins, st, args, build_args, used, df.escape};
    const std::string& k = ins.keyword;
    if (k == "RUN") {
      // The SHELL in force for the shell form.
      DockerInstruction with_shell = ins;
      if (!ins.json) {
        with_shell.json = true;
        with_shell.args = shell;
        with_shell.args.push_back(ins.text);
      }
      Step rs{with_shell, st, args, build_args, used, df.escape};
      COPPICE_TRY(do_run(rs));
    } else if (k == "COPY" || k == "ADD") {
      COPPICE_TRY(do_copy(s, k == "ADD"));
    } else if (k == "ENV" || k == "ARG") {
      COPPICE_TRY(do_env_or_arg(s, k == "ENV"));
    } else if (k == "WORKDIR") {
      COPPICE_TRY(do_workdir(s));
    } else if (k == "USER") {
      COPPICE_TRY(check_flags(ins, {}));
      auto u = expand_string(ins.text, vars_of(st, args), df.escape);
      if (!u) return std::unexpected(at(ins, u.error()));
      if (auto ids = resolve_user(st.rootfs, *u); !ids) return std::unexpected(at(ins, ids.error()));
      st.user = *u;
    } else if (k == "SHELL") {
      if (!ins.json || ins.args.empty()) return std::unexpected(at(ins, "needs the JSON form, e.g. [\"/bin/bash\", \"-c\"]"));
      shell = ins.args;
    } else if (k == "CMD") {
      COPPICE_TRY(check_flags(ins, {}));
      st.cmd = command_of(ins, shell);
      cmd_set = true;
    } else if (k == "ENTRYPOINT") {
      COPPICE_TRY(check_flags(ins, {}));
      st.entrypoint = command_of(ins, shell);
      // As Docker: the base image's CMD does not outlive a new ENTRYPOINT.
      if (!cmd_set) st.cmd.clear();
    } else if (k == "LABEL" || k == "EXPOSE" || k == "MAINTAINER") {
      if (st.progress)
        st.progress("    note: line " + std::to_string(ins.line) + ": " + k +
                    " has no meaning for a template (ports are reached through the gateway); ignored");
    } else if (k == "FROM") {
      return std::unexpected(at(ins, "a second FROM: multi-stage builds are not supported"));
    } else if (k == "HEALTHCHECK" || k == "ONBUILD" || k == "VOLUME" || k == "STOPSIGNAL") {
      return std::unexpected(at(ins, "is not supported in a template build"));
    } else {
      return std::unexpected(at(ins, "unknown instruction"));
    }
  }
  for (const auto& ins : df.instructions) {
    if (ins.keyword != "ARG") continue;
    if (auto kvs = parse_key_values(ins.text, {}, false, df.escape))
      for (const auto& kv : *kvs) used.insert(kv.key);
  }
  for (const auto& [name, value] : build_args) {
    if (!used.count(name) && st.progress) st.progress("    note: --build-arg " + name + " was not consumed by any ARG");
  }
  return ok();
}

}  // namespace coppice::builder
