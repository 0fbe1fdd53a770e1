// A real build with mmdebstrap from the local repository that
// scripts/test-debs.sh makes (no network), then a cached one. Needs root.
#include "builder/builder.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "common/test_temp_dir.h"
#include "templates/template_toml.h"

namespace coppice::builder {
namespace {

namespace fs = std::filesystem;
using test_util::TempDir;

std::string test_debs() {
  const char* d = std::getenv("COPPICE_TEST_DEBS");
  return d && *d ? d : "/var/cache/coppice/test-debs";
}

std::string skip_reason() {
  if (::geteuid() != 0) return "needs root (mmdebstrap --mode=root)";
  if (!fs::exists(test_debs() + "/Packages")) return "no local test repository at " + test_debs() + " (scripts/test-debs.sh)";
  if (std::system("command -v mmdebstrap >/dev/null") != 0) return "mmdebstrap is not installed";
  return "";
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Path, type, mode, owner and size of every entry: what "the same tree" means.
std::string describe(const fs::path& root) {
  std::vector<std::string> lines;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    struct stat st {};
    ::lstat(it->path().c_str(), &st);
    lines.push_back(it->path().lexically_relative(root).string() + " " + std::to_string(st.st_mode) + " " +
                    std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid) + " " + std::to_string(st.st_size) +
                    " " + std::to_string(st.st_ino));
  }
  std::sort(lines.begin(), lines.end());
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

TEST(Builder, BuildsFromALocalRepositoryThenCaches) {
  if (auto why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
  TempDir dir("coppice-builder-test");
  const fs::path recipe_dir = dir.path() / "recipe";
  const fs::path root = dir.path() / "templates";
  fs::create_directories(recipe_dir / "home");
  std::ofstream(recipe_dir / "hello.txt") << "hello\n";
  std::ofstream(recipe_dir / "home" / "notes.txt") << "mine\n";
  std::ofstream(recipe_dir / "tiny.toml")
      << "suite = \"bookworm\"\nvariant = \"extract\"\npackages = [\"busybox-static\"]\n"
      << "sources = [\"deb [trusted=yes] copy://" << test_debs() << " ./\"]\n"
      << "files = [\"hello.txt:/etc/hello.txt\", \"home:/home/user\"]\n"
      << "start_cmd = \"/bin/busybox sleep 1000\"\nenv = [\"GREETING=hi\"]\n";

  BuildOptions o;
  o.recipe_path = (recipe_dir / "tiny.toml").string();
  o.templates_root = root.string();
  std::vector<std::string> lines;
  o.progress = [&](std::string_view l) { lines.emplace_back(l); };
  auto first = build_template(o);
  ASSERT_TRUE(first.has_value()) << first.error().to_string();
  EXPECT_FALSE(first->cached);
  EXPECT_EQ(first->name, "tiny");
  EXPECT_EQ(first->path, (root / "tiny").string());
  EXPECT_GT(first->size_bytes, 1u << 20);
  // Steps and mmdebstrap's own lines were reported.
  std::string all;
  for (const auto& l : lines) all += l + "\n";
  EXPECT_NE(all.find("[1/4]"), std::string::npos) << all;
  EXPECT_NE(all.find("I: extracting archives"), std::string::npos) << all;

  const fs::path rootfs = root / "tiny" / "rootfs";
  EXPECT_TRUE(fs::exists(rootfs / "bin" / "busybox"));
  EXPECT_EQ(slurp(rootfs / "etc" / "hello.txt"), "hello\n");
  const std::string passwd = slurp(rootfs / "etc" / "passwd");
  EXPECT_NE(passwd.find("root:x:0:0:"), std::string::npos) << passwd;
  EXPECT_NE(passwd.find("user:x:1000:1000::/home/user:"), std::string::npos) << passwd;
  EXPECT_NE(slurp(rootfs / "etc" / "group").find("user:x:1000:"), std::string::npos);
  EXPECT_EQ(slurp(rootfs / "etc" / "hostname"), "sandbox\n");
  struct stat st {};
  ASSERT_EQ(::stat((rootfs / "home" / "user").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 1000u);
  ASSERT_EQ(::stat((rootfs / "home" / "user" / "notes.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u);
  ASSERT_EQ(::stat((rootfs / "etc" / "hello.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);

  auto doc = templates::parse_toml_file((root / "tiny" / "template.toml").string());
  ASSERT_TRUE(doc.has_value()) << doc.error().message();
  EXPECT_EQ(*doc->get_string("recipe_hash"), first->recipe_hash);
  EXPECT_EQ(*doc->get_string("start_cmd"), "/bin/busybox sleep 1000");
  // Nothing but the template is left in the root.
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(root)) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"tiny"});

  // The same recipe again: a no-op that says so, quickly, tree untouched.
  const std::string before = describe(rootfs);
  const std::string toml_before = slurp(root / "tiny" / "template.toml");
  auto t0 = std::chrono::steady_clock::now();
  auto second = build_template(o);
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(second.has_value()) << second.error().to_string();
  EXPECT_TRUE(second->cached);
  EXPECT_EQ(second->recipe_hash, first->recipe_hash);
  EXPECT_LT(took, std::chrono::milliseconds(500));
  EXPECT_EQ(describe(rootfs), before);
  EXPECT_EQ(slurp(root / "tiny" / "template.toml"), toml_before);

  // A changed added file changes the hash: the template is rebuilt and
  // replaced in one step; the old tree is retired whole (sandboxes may run
  // on it: the gateway removes it after the last), never emptied.
  std::ofstream(recipe_dir / "hello.txt") << "hello again\n";
  auto third = build_template(o);
  ASSERT_TRUE(third.has_value()) << third.error().to_string();
  EXPECT_FALSE(third->cached);
  EXPECT_NE(third->recipe_hash, first->recipe_hash);
  EXPECT_EQ(slurp(rootfs / "etc" / "hello.txt"), "hello again\n");
  names.clear();
  for (const auto& e : fs::directory_iterator(root)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{".retired", "tiny"}));
  ASSERT_FALSE(third->replaced_tree.empty());
  EXPECT_EQ(slurp(fs::path(third->replaced_tree) / "rootfs" / "etc" / "hello.txt"), "hello\n")
      << "the replaced build is kept whole";
}

TEST(Builder, FailedBuildLeavesTheTemplateInPlaceAndNothingElse) {
  if (auto why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
  TempDir dir("coppice-builder-test");
  const fs::path root = dir.path() / "templates";
  fs::create_directories(root / "tiny" / "rootfs");
  std::ofstream(root / "tiny" / "template.toml") << "backend = \"ns\"\nrecipe_hash = \"old\"\n";
  std::ofstream(dir.path() / "tiny.toml")
      << "suite = \"bookworm\"\nvariant = \"extract\"\npackages = [\"no-such-package-here\"]\n"
      << "sources = [\"deb [trusted=yes] copy://" << test_debs() << " ./\"]\n";
  BuildOptions o;
  o.recipe_path = (dir.path() / "tiny.toml").string();
  o.templates_root = root.string();
  auto r = build_template(o);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("mmdebstrap"), std::string::npos) << r.error().message();
  EXPECT_EQ(slurp(root / "tiny" / "template.toml"), "backend = \"ns\"\nrecipe_hash = \"old\"\n");
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(root)) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"tiny"});
}

TEST(Builder, CanceledBuildRemovesItsDirectory) {
  if (auto why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
  TempDir dir("coppice-builder-test");
  const fs::path root = dir.path() / "templates";
  std::ofstream(dir.path() / "tiny.toml")
      << "suite = \"bookworm\"\nvariant = \"extract\"\npackages = [\"busybox-static\"]\n"
      << "sources = [\"deb [trusted=yes] copy://" << test_debs() << " ./\"]\n";
  std::atomic<bool> cancel{false};
  BuildOptions o;
  o.recipe_path = (dir.path() / "tiny.toml").string();
  o.templates_root = root.string();
  o.cancel = &cancel;
  // Cancel as soon as mmdebstrap reports its first step.
  o.progress = [&](std::string_view l) {
    if (l.find("I: ") != std::string_view::npos) cancel = true;
  };
  auto r = build_template(o);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kCanceled) << r.error().to_string();
  EXPECT_TRUE(fs::is_empty(root));
}

}  // namespace
}  // namespace coppice::builder
