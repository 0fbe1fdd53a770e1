// A template recipe: what `coppice template build` makes a template from.
//
// A recipe is a file in the TOML subset of templates/template_toml.h (one item per
// line, arrays on one line). Every key but `suite` is optional; any other key
// is an error, so a misspelt setting never silently becomes a default:
//
//   name = "code-interpreter-v1"   # the template's directory under the templates
//                                  # root; default: the file name less ".toml"
//   suite = "bookworm"             # the Debian release mmdebstrap installs
//   variant = "apt"                # mmdebstrap's package set: extract, custom,
//                                  # essential, apt (default), required, minbase,
//                                  # buildd, important, standard
//   packages = ["python3", "git"]  # installed with their dependencies; order and
//                                  # repeats do not matter
//   sources = ["deb [trusted=yes] copy:///srv/debs ./"]
//                                  # apt sources, one-line format, used instead
//                                  # of the host's (a local directory must be
//                                  # copy://, which mmdebstrap reads from outside
//                                  # the tree)
//   exclude_paths = ["/usr/share/doc/*"]   # dpkg path-exclude globs (variants
//                                  # that run dpkg: not extract or custom)
//   files = ["interp.py:/opt/interp.py", "skel:/home/user"]
//                                  # "SRC:DST": SRC relative to the recipe's
//                                  # directory (a file or a directory, copied
//                                  # recursively), DST absolute in the tree.
//                                  # Owned by root, or by `user` under /home/user;
//                                  # permission bits kept, set-id bits dropped
//   env = ["LANG=C.UTF-8"]         # every sandbox's environment
//   start_cmd = "..."              # run in every new sandbox
//   ready_cmd = "..."              # exits 0 once start_cmd's service is ready
//   cpu_count = 2                  # default: the gateway's
//   memory_mb = 1024               # default: the gateway's
//
// Every template gets the accounts root (0) and user (1000, home /home/user)
// whatever its packages are.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace coppice::builder {

// Bumped whenever the same recipe would make a different tree (a change in
// what the builder adds or how it calls mmdebstrap), so that caches made by
// an older builder are not taken for current.
inline constexpr int kBuilderFormatVersion = 1;

struct FileCopy {
  std::string src;  // as written in the recipe
  std::string dst;  // absolute, normalised ("/a/b", no "." or ".." parts)
};

struct Recipe {
  std::string name;
  std::string suite;
  std::string variant = "apt";
  std::vector<std::string> packages;       // sorted, without repeats
  std::vector<std::string> sources;        // in recipe order (apt's order)
  std::vector<std::string> exclude_paths;  // sorted, without repeats
  std::vector<FileCopy> files;             // in recipe order: a later copy may overwrite an earlier one
  std::vector<std::string> env;            // "K=V", sorted by name, names unique
  std::string start_cmd;
  std::string ready_cmd;
  int cpu_count = 0;  // 0: the gateway's default
  int memory_mb = 0;  // 0: the gateway's default
  std::string dir;    // the recipe's directory, which `files` sources are relative to
};

// Parses and normalises a recipe. `default_name` is used when the recipe has
// no `name`; `dir` is where relative `files` sources are found. Errors name
// the offending key or line.
Result<Recipe> parse_recipe(std::string_view text, std::string default_name, std::string dir);

// Reads a recipe file: the default name is the file name less ".toml" and
// `files` are relative to the file's directory.
Result<Recipe> load_recipe(const std::string& path);

// The normalised recipe as text: one line per setting, in a fixed order,
// packages and exclude_paths sorted, env sorted by name. Two recipes that
// build the same template give the same text. `name` is not part of it: the
// name says where a template goes, not what is in it.
std::string canonical_recipe(const Recipe& r);

// The recipe hash: SHA-256 of the builder's format version, the canonical
// recipe and a description of every added file (destination, type,
// permission bits, content or link target), so a change in any setting or
// in any added file's content gives another hash. Fails when a `files`
// source cannot be read.
Result<std::string> recipe_hash(const Recipe& r);

// The path a `files` source is read from.
std::string source_path(const Recipe& r, const FileCopy& f);

// One entry the `files` setting adds to the tree, a directory source being
// expanded into its contents (sorted, parents before children).
struct AddedEntry {
  enum Kind { kFile, kDir, kSymlink } kind = kFile;
  std::string src;     // host path
  std::string dst;     // absolute path in the tree
  unsigned mode = 0;   // permission bits, set-id and sticky bits dropped
  std::string target;  // for a symlink
  int uid = -1;        // owner; -1: root, or user under /home/user
  int gid = -1;
};

// Expands `files` into entries. Sources are read without following
// symlinks below a directory source (a link is copied as a link); only
// regular files, directories and symlinks are accepted.
Result<std::vector<AddedEntry>> list_added_entries(const Recipe& r);

}  // namespace coppice::builder
