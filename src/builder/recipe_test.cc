#include "builder/recipe.h"

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <set>

#include <gtest/gtest.h>

#include "builder/builder.h"
#include "builder/mounts.h"
#include "builder/sources.h"
#include "builder/tree_edit.h"
#include "common/test_temp_dir.h"
#include "templates/template_toml.h"

namespace coppice::builder {
namespace {

using test_util::TempDir;

Recipe parse_ok(std::string_view text, std::string dir = "/nonexistent") {
  auto r = parse_recipe(text, "from-file", dir);
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message());
  return r ? *r : Recipe{};
}

std::string parse_err(std::string_view text) {
  auto r = parse_recipe(text, "from-file", "/nonexistent");
  EXPECT_FALSE(r.has_value()) << text;
  return r ? "" : r.error().message();
}

void write(const std::filesystem::path& p, const std::string& s) { std::ofstream(p) << s; }

TEST(Recipe, ParsesEveryKeyAndNormalises) {
  Recipe r = parse_ok(R"(
name = "ci-v1"
suite = "bookworm"
variant = "minbase"
packages = ["python3", "bash", "python3", "git"]
sources = ["deb http://deb.debian.org/debian bookworm main", "deb [trusted=yes] copy:///srv/debs ./"]
exclude_paths = ["/usr/share/man/*", "/usr/share/doc/*"]
files = ["a.py:/opt//app/./a.py", "skel:/home/user/"]
env = ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"]
start_cmd = "/.coppice/interp --port 49999"
ready_cmd = "/.coppice/interp --probe 49999"
cpu_count = 2
memory_mb = 1024
)");
  EXPECT_EQ(r.name, "ci-v1");
  EXPECT_EQ(r.suite, "bookworm");
  EXPECT_EQ(r.variant, "minbase");
  EXPECT_EQ(r.packages, (std::vector<std::string>{"bash", "git", "python3"}));
  ASSERT_EQ(r.sources.size(), 2u);
  EXPECT_EQ(r.sources[1], "deb [trusted=yes] copy:///srv/debs ./");  // apt's order is kept
  EXPECT_EQ(r.exclude_paths, (std::vector<std::string>{"/usr/share/doc/*", "/usr/share/man/*"}));
  ASSERT_EQ(r.files.size(), 2u);
  EXPECT_EQ(r.files[0].src, "a.py");
  EXPECT_EQ(r.files[0].dst, "/opt/app/a.py");
  EXPECT_EQ(r.files[1].dst, "/home/user");
  EXPECT_EQ(r.env, (std::vector<std::string>{"LANG=C.UTF-8", "PATH=/usr/bin:/bin"}));
  EXPECT_EQ(r.start_cmd, "/.coppice/interp --port 49999");
  EXPECT_EQ(r.ready_cmd, "/.coppice/interp --probe 49999");
  EXPECT_EQ(r.cpu_count, 2);
  EXPECT_EQ(r.memory_mb, 1024);
}

TEST(Recipe, DefaultsNameFromTheFileAndVariantApt) {
  Recipe r = parse_ok("suite = \"bookworm\"\n");
  EXPECT_EQ(r.name, "from-file");
  EXPECT_EQ(r.variant, "apt");
  EXPECT_TRUE(r.packages.empty());
  EXPECT_EQ(r.cpu_count, 0);
}

TEST(Recipe, RefusesMistakes) {
  EXPECT_NE(parse_err("suite = \"bookworm\"\npackage = [\"x\"]\n").find("package"), std::string::npos);
  EXPECT_NE(parse_err("variant = \"apt\"\n").find("suite is required"), std::string::npos);
  EXPECT_NE(parse_err("suite = \"bookworm\"\nvariant = \"fat\"\n").find("variant"), std::string::npos);
  EXPECT_NE(parse_err("suite = \"bookworm\"\npackages = [\"--option\"]\n").find("--option"), std::string::npos);
  EXPECT_NE(parse_err("suite = \"bookworm\"\npackages = \"bash\"\n").find("packages"), std::string::npos);
  EXPECT_NE(parse_err("suite = \"bookworm\"\nname = \"../x\"\n").find("template name"), std::string::npos);
  EXPECT_NE(parse_err("suite = \"bookworm\"\nfiles = [\"a\"]\n").find("SRC:DST"), std::string::npos);
  EXPECT_NE(parse_err("suite = \"bookworm\"\nfiles = [\"a:rel/b\"]\n").find("absolute"), std::string::npos);
  EXPECT_NE(parse_err("suite = \"bookworm\"\nfiles = [\"a:/x/../../etc\"]\n").find(".."), std::string::npos);
  EXPECT_NE(parse_err("suite = \"bookworm\"\nfiles = [\"a:/\"]\n").find("root"), std::string::npos);
  EXPECT_NE(parse_err("suite = \"bookworm\"\nenv = [\"NOVALUE\"]\n").find("NAME=value"), std::string::npos);
  EXPECT_NE(parse_err("suite = \"bookworm\"\nenv = [\"A=1\", \"A=2\"]\n").find("twice"), std::string::npos);
  EXPECT_NE(parse_err("suite = \"bookworm\"\ncpu_count = 0\n").find("cpu_count"), std::string::npos);
  EXPECT_NE(parse_err("suite = \"bookworm\"\nsources = [\"http://x\"]\n").find("one-line"), std::string::npos);
  EXPECT_NE(parse_err("suite = \"bookworm\"\nvariant = \"extract\"\nexclude_paths = [\"/usr/share/doc/*\"]\n")
                .find("dpkg"),
            std::string::npos);
}

TEST(Recipe, LoadTakesTheNameAndDirectoryFromThePath) {
  TempDir dir;
  write(dir.path() / "my-tpl.toml", "suite = \"bookworm\"\n");
  auto r = load_recipe((dir.path() / "my-tpl.toml").string());
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->name, "my-tpl");
  EXPECT_EQ(r->dir, dir.path().string());
  auto missing = load_recipe((dir.path() / "nope.toml").string());
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  // A recipe over 1 MiB is refused before parsing.
  write(dir.path() / "huge.toml", "# " + std::string((1 << 20) + 10, 'x') + "\n");
  auto huge = load_recipe((dir.path() / "huge.toml").string());
  ASSERT_FALSE(huge.has_value());
  EXPECT_EQ(huge.error().code(), ErrorCode::kTooLarge);
}

// The hash: every setting and every added file's content, path and mode
// count; what only restates the same recipe does not.
TEST(RecipeHash, ChangesWithEverySettingButNotWithOrderOrName) {
  TempDir dir;
  write(dir.path() / "a.txt", "hello\n");
  std::filesystem::create_directories(dir.path() / "tree/sub");
  write(dir.path() / "tree/sub/b.txt", "bee\n");
  const std::string d = dir.path().string();
  const std::string base =
      "suite = \"bookworm\"\npackages = [\"bash\", \"git\"]\nfiles = [\"a.txt:/opt/a.txt\", \"tree:/opt/tree\"]\n"
      "env = [\"A=1\", \"B=2\"]\n";
  auto hash = [&](const std::string& text) {
    auto r = parse_recipe(text, "x", d);
    EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message());
    auto h = recipe_hash(*r);
    EXPECT_TRUE(h.has_value()) << (h ? "" : h.error().message());
    return h ? *h : std::string();
  };
  const std::string h0 = hash(base);
  EXPECT_EQ(h0.size(), 64u);
  EXPECT_EQ(hash(base), h0);

  // Same recipe, said differently: packages reordered and repeated, env
  // reordered, comments, another name.
  EXPECT_EQ(hash("# same\nname = \"other\"\nsuite = \"bookworm\"\npackages = [\"git\", \"bash\", \"git\"]\n"
                 "files = [\"a.txt:/opt/a.txt\", \"tree:/opt//tree/\"]\nenv = [\"B=2\", \"A=1\"]\n"),
            h0);

  // Every setting counts.
  const std::vector<std::string> changed = {
      base + "variant = \"minbase\"\n",
      "suite = \"trixie\"\npackages = [\"bash\", \"git\"]\nfiles = [\"a.txt:/opt/a.txt\", \"tree:/opt/tree\"]\n"
      "env = [\"A=1\", \"B=2\"]\n",
      "suite = \"bookworm\"\npackages = [\"bash\", \"git\", \"curl\"]\nfiles = [\"a.txt:/opt/a.txt\", "
      "\"tree:/opt/tree\"]\nenv = [\"A=1\", \"B=2\"]\n",
      "suite = \"bookworm\"\npackages = [\"bash\", \"git\"]\nfiles = [\"a.txt:/opt/b.txt\", \"tree:/opt/tree\"]\n"
      "env = [\"A=1\", \"B=2\"]\n",
      "suite = \"bookworm\"\npackages = [\"bash\", \"git\"]\nfiles = [\"a.txt:/opt/a.txt\", \"tree:/opt/tree\"]\n"
      "env = [\"A=1\", \"B=3\"]\n",
      base + "start_cmd = \"sleep 1\"\n",
      base + "ready_cmd = \"true\"\n",
      base + "cpu_count = 2\n",
      base + "memory_mb = 256\n",
      base + "sources = [\"deb http://example.org/debian bookworm main\"]\n",
      base + "exclude_paths = [\"/usr/share/doc/*\"]\n",
  };
  std::set<std::string> seen = {h0};
  for (const auto& text : changed) {
    std::string h = hash(text);
    EXPECT_TRUE(seen.insert(h).second) << "same hash for:\n" << text;
  }

  // Added files: content, mode and a file deep in a directory source count.
  write(dir.path() / "a.txt", "hello!\n");
  const std::string h_content = hash(base);
  EXPECT_NE(h_content, h0);
  ::chmod((dir.path() / "a.txt").c_str(), 0755);
  const std::string h_mode = hash(base);
  EXPECT_NE(h_mode, h_content);
  write(dir.path() / "tree/sub/c.txt", "new\n");
  EXPECT_NE(hash(base), h_mode);
}

TEST(RecipeHash, MissingFileIsAnError) {
  auto r = parse_recipe("suite = \"bookworm\"\nfiles = [\"nope:/x\"]\n", "x", "/nonexistent-dir");
  ASSERT_TRUE(r.has_value());
  auto h = recipe_hash(*r);
  ASSERT_FALSE(h.has_value());
  EXPECT_NE(h.error().message().find("nope"), std::string::npos);
}

TEST(RecipeEntries, DirectorySourcesExpandSortedWithLinksKept) {
  TempDir dir;
  std::filesystem::create_directories(dir.path() / "t/z");
  write(dir.path() / "t/b", "b");
  write(dir.path() / "t/z/a", "a");
  std::filesystem::create_symlink("/etc/passwd", dir.path() / "t/link");
  auto r = parse_recipe("suite = \"bookworm\"\nfiles = [\"t:/opt/t\"]\n", "x", dir.path().string());
  ASSERT_TRUE(r.has_value());
  auto e = list_added_entries(*r);
  ASSERT_TRUE(e.has_value()) << e.error().message();
  std::vector<std::string> dsts;
  for (const auto& x : *e) dsts.push_back(x.dst);
  EXPECT_EQ(dsts, (std::vector<std::string>{"/opt/t", "/opt/t/b", "/opt/t/link", "/opt/t/z", "/opt/t/z/a"}));
  EXPECT_EQ((*e)[0].kind, AddedEntry::kDir);
  EXPECT_EQ((*e)[2].kind, AddedEntry::kSymlink);
  EXPECT_EQ((*e)[2].target, "/etc/passwd");
  EXPECT_TRUE((*e)[1].src.starts_with("/"));
}

TEST(TemplateToml, WritesWhatTheRegistryReads) {
  Recipe r = parse_ok("suite = \"bookworm\"\nstart_cmd = \"a \\\"b\\\"\"\nready_cmd = \"c\"\ncpu_count = 2\n"
                      "memory_mb = 512\nenv = [\"LANG=C.UTF-8\"]\n");
  auto doc = templates::parse_toml(template_toml(r, "h", "b"));
  ASSERT_TRUE(doc.has_value()) << doc.error().message();
  EXPECT_EQ(*doc->get_string("backend"), "ns");
  EXPECT_EQ(*doc->get_string("source"), "debian");
  EXPECT_EQ(*doc->get_string("recipe_hash"), "h");
  EXPECT_EQ(*doc->get_string("build_id"), "b");
  EXPECT_EQ(*doc->get_string("start_cmd"), "a \"b\"");
  EXPECT_EQ(*doc->get_string("ready_cmd"), "c");
  EXPECT_EQ(*doc->get_int("cpu_count"), 2);
  EXPECT_EQ(*doc->get_int("memory_mb"), 512);
  EXPECT_EQ(*doc->get_strings("env"), std::vector<std::string>{"LANG=C.UTF-8"});
  // Unset settings are left to the gateway's defaults.
  auto bare = templates::parse_toml(template_toml(parse_ok("suite = \"bookworm\"\n"), "h", "b"));
  ASSERT_TRUE(bare.has_value());
  EXPECT_FALSE(bare->has("cpu_count"));
  EXPECT_FALSE(bare->has("start_cmd"));
  EXPECT_FALSE(bare->has("env"));
}

TEST(Sources, RetargetsTheHostReleaseInDeb822AndOneLineFiles) {
  const std::string deb822 =
      "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
      "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n";
  EXPECT_EQ(retarget_sources(deb822, true, "bookworm"), deb822);
  EXPECT_EQ(retarget_sources(deb822, true, "trixie"),
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie trixie-updates\nComponents: main\n\n"
            "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: trixie-security\nComponents: main\n");
  const std::string list =
      "# comment bookworm\ndeb http://deb.debian.org/debian bookworm main\n"
      "deb [arch=amd64 signed-by=/k.gpg] http://deb.debian.org/debian-security bookworm-security main\n"
      "deb http://ppa.example.org/x focal main\n";
  EXPECT_EQ(retarget_sources(list, false, "trixie"),
            "# comment bookworm\ndeb http://deb.debian.org/debian trixie main\n"
            "deb [arch=amd64 signed-by=/k.gpg] http://deb.debian.org/debian-security trixie-security main\n"
            "deb http://ppa.example.org/x focal main\n");
  EXPECT_EQ(retarget_sources("", false, "trixie"), "");
}

TEST(Accounts, MergeKeepsExistingEntriesAndRefusesClashes) {
  const std::string passwd = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/:/usr/sbin/nologin\n";
  auto same = merge_account(passwd, "root:x:0:0:root:/root:/bin/sh", 2);
  ASSERT_TRUE(same.has_value());
  EXPECT_EQ(*same, passwd);
  auto added = merge_account(passwd, "user:x:1000:1000::/home/user:/bin/bash", 2);
  ASSERT_TRUE(added.has_value());
  EXPECT_EQ(*added, passwd + "user:x:1000:1000::/home/user:/bin/bash\n");
  EXPECT_EQ(*merge_account("", "root:x:0:", 2), "root:x:0:\n");
  EXPECT_EQ(*merge_account("a:x:5:", "root:x:0:", 2), "a:x:5:\nroot:x:0:\n");
  EXPECT_FALSE(merge_account("user:x:1001:1001::/home/user:/bin/sh\n", "user:x:1000:1000::/home/user:/bin/sh", 2));
  EXPECT_FALSE(merge_account("ubuntu:x:1000:1000::/home/ubuntu:/bin/sh\n", "user:x:1000:1000::/home/user:/bin/sh", 2));
  // Shadow files have no ids: a name is enough.
  EXPECT_EQ(*merge_account("user:!:1::::::\n", "user:*::0:99999:7:::", -1), "user:!:1::::::\n");
}

TEST(Mounts, MountPointsUnderADirectoryDeepestFirst) {
  const std::string info =
      "22 1 8:1 / / rw - ext4 /dev/vda rw\n"
      "30 22 0:5 / /t/.x.build-1/rootfs/proc rw - proc proc rw\n"
      "31 22 0:6 / /t/.x.build-1/rootfs/dev rw - devtmpfs udev rw\n"
      "32 31 0:7 / /t/.x.build-1/rootfs/dev/pts rw - devpts devpts rw\n"
      "33 22 0:8 / /t/.x.build-10/rootfs/proc rw - proc proc rw\n"
      "34 22 0:9 / /t/.x.build-1/with\\040space rw - tmpfs t rw\n";
  auto mps = mount_points_under(info, "/t/.x.build-1");
  ASSERT_EQ(mps.size(), 4u);
  EXPECT_EQ(mps[0], "/t/.x.build-1/rootfs/dev/pts");
  EXPECT_NE(std::find(mps.begin(), mps.end(), "/t/.x.build-1/with space"), mps.end());
  EXPECT_EQ(std::find(mps.begin(), mps.end(), "/t/.x.build-10/rootfs/proc"), mps.end());
}

}  // namespace
}  // namespace coppice::builder
