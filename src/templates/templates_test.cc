#include "templates/templates.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "common/test_temp_dir.h"

#include <filesystem>
#include <fstream>
#include <set>

namespace coppice::templates {
namespace {

namespace fs = std::filesystem;

// A fresh temp dir per test, removed with its contents.
struct TempDir : coppice::test_util::TempDir {
  TempDir() : coppice::test_util::TempDir("coppice-templates-test") {}
};

void write(const fs::path& p, std::string_view content) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << content;
}

// A directory template <root>/<name> with the given description.
void make_dir_template(const fs::path& root, const std::string& name, std::string_view toml) {
  fs::create_directories(root / name / "rootfs" / "etc");
  write(root / name / "rootfs" / "etc" / "hostname", "sandbox\n");
  write(root / name / "template.toml", toml);
}


// `n` bytes that no file system compresses away, so allocated blocks match
// the size written.
std::string noise(size_t n) {
  std::string out(n, '\0');
  uint64_t x = 0x9e3779b97f4a7c15u;
  for (auto& c : out) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x);
  }
  return out;
}

std::vector<std::string> names(const TemplateRegistry& reg) {
  std::vector<std::string> out;
  for (const auto& t : reg.list()) out.push_back(t.name);
  return out;
}

constexpr std::string_view kBaseToml =
    "backend = \"ns\"\n"
    "ro_binds = [\"/usr\"]\n"
    "cpu_count = 2\n"
    "memory_mb = 768\n"
    "disk_mb = 2048\n"
    "egress_mbps = 80\n"
    "source = \"host\"\n"
    "build_id = \"abc123\"\n";

TEST(TemplateRegistry, DiscoversDirectoryTemplates) {
  TempDir d;
  make_dir_template(d.path(), "base", kBaseToml);
  make_dir_template(d.path(), "web",
                    "start_cmd = \"python3 -m http.server 8000\"\n"
                    "ready_cmd = \"curl -sf localhost:8000\"\n"
                    "recipe_hash = \"feed\"\n"
                    "env = [\"LANG=C.UTF-8\", \"EMPTY=\", \"EQ=a=b\"]\n");
  make_dir_template(d.path(), "badenv", "env = [\"NOEQUALS\"]\n");
  TemplateRegistry reg(d.path().string());
  ASSERT_TRUE(reg.reload());
  EXPECT_EQ(names(reg), (std::vector<std::string>{"base", "web"}));  // badenv is malformed: skipped

  auto base = reg.get("base");
  ASSERT_TRUE(base) << base.error().to_string();
  EXPECT_EQ(base->backend, "ns");
  EXPECT_EQ(base->path, (d.path() / "base").string());
  EXPECT_EQ(base->rootfs, (d.path() / "base" / "rootfs").string());
  EXPECT_EQ(base->ro_binds, (std::vector<std::string>{"/usr"}));
  EXPECT_EQ(base->cpu_count, 2);
  EXPECT_EQ(base->memory_mb, 768);
  EXPECT_EQ(base->disk_mb, 2048);
  EXPECT_EQ(base->egress_mbps, 80);
  EXPECT_EQ(base->source, "host");
  EXPECT_EQ(base->build_id, "abc123");
  EXPECT_TRUE(base->start_cmd.empty());

  auto web = reg.get("web");
  ASSERT_TRUE(web);
  EXPECT_EQ(web->backend, "ns");  // the default
  EXPECT_EQ(web->cpu_count, 0);
  EXPECT_EQ(web->disk_mb, 0);  // the gateway's default
  EXPECT_EQ(web->egress_mbps, 0);  // no cap
  EXPECT_EQ(web->start_cmd, "python3 -m http.server 8000");
  EXPECT_EQ(web->ready_cmd, "curl -sf localhost:8000");
  EXPECT_EQ(web->recipe_hash, "feed");
  EXPECT_EQ(web->env, (std::map<std::string, std::string>{{"EMPTY", ""}, {"EQ", "a=b"}, {"LANG", "C.UTF-8"}}));
  EXPECT_TRUE(base->env.empty());
}

TEST(TemplateRegistry, UnknownTemplateNamesTheOnesThatExist) {
  TempDir d;
  make_dir_template(d.path(), "base", kBaseToml);
  make_dir_template(d.path(), "py", kBaseToml);
  TemplateRegistry reg(d.path().string());
  ASSERT_TRUE(reg.reload());
  auto t = reg.get("nope");
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(t.error().message().find("nope"), std::string::npos);
  EXPECT_NE(t.error().message().find("base, py"), std::string::npos) << t.error().message();
}

TEST(TemplateRegistry, AStrayImageNeverShadowsATemplate) {
  TempDir d;
  make_dir_template(d.path(), "base", kBaseToml);
  write(d.path() / "base.img", "disk");
  write(d.path() / "base.conf", "backend = \"vm\"\n");
  TemplateRegistry reg(d.path().string());
  ASSERT_TRUE(reg.reload());
  EXPECT_EQ(names(reg), (std::vector<std::string>{"base"}));
  auto t = reg.get("base");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->backend, "ns");
  EXPECT_EQ(t->path, (d.path() / "base").string());
}

TEST(TemplateRegistry, RetiredBuildsAreNotTemplatesAndKeepTheirTreeKey) {
  TempDir d;
  make_dir_template(d.path(), "base", kBaseToml);
  TemplateRegistry reg(d.path().string());
  ASSERT_TRUE(reg.reload());
  const std::string key = reg.get("base")->tree;
  EXPECT_FALSE(key.empty());
  // A rebuild moves the old tree aside: it keeps its identity.
  const std::string retired = retired_path(d.path().string(), "base");
  fs::create_directories(retired_root(d.path().string()));
  fs::rename(d.path() / "base", retired);
  make_dir_template(d.path(), "base", kBaseToml);
  make_dir_template(d.path(), ".base.old-99", kBaseToml);  // what older builders left
  ASSERT_TRUE(reg.reload());
  EXPECT_EQ(names(reg), (std::vector<std::string>{"base"}));
  EXPECT_NE(reg.get("base")->tree, key);
  auto r = retired_trees(d.path().string());
  ASSERT_EQ(r.size(), 2u);
  std::set<std::string> keys;
  for (const auto& t : r) keys.insert(t.key);
  EXPECT_TRUE(keys.count(key));
  EXPECT_EQ(tree_key((d.path() / "missing").string()), "");
}

TEST(TemplateRegistry, ReloadPicksUpNewTemplatesAndDropsRemovedOnes) {
  TempDir d;
  make_dir_template(d.path(), "base", kBaseToml);
  make_dir_template(d.path(), "old", kBaseToml);
  TemplateRegistry reg(d.path().string());
  ASSERT_TRUE(reg.reload());
  EXPECT_EQ(names(reg), (std::vector<std::string>{"base", "old"}));

  make_dir_template(d.path(), "fresh", kBaseToml);
  fs::remove_all(d.path() / "old");
  EXPECT_EQ(names(reg), (std::vector<std::string>{"base", "old"}));  // nothing changes before a reload
  ASSERT_TRUE(reg.reload());
  EXPECT_EQ(names(reg), (std::vector<std::string>{"base", "fresh"}));
  EXPECT_FALSE(reg.get("old"));
  EXPECT_TRUE(reg.get("fresh"));
}

TEST(TemplateRegistry, MalformedTemplatesAreSkipped) {
  TempDir d;
  make_dir_template(d.path(), "good", kBaseToml);
  make_dir_template(d.path(), "syntax", "backend = ns\n");             // unquoted string
  make_dir_template(d.path(), "typed", "cpu_count = \"two\"\n");       // wrong type
  make_dir_template(d.path(), "typo", "memroy_mb = 512\n");            // unknown key
  make_dir_template(d.path(), "backend", "backend = \"firecracker\"\n");
  make_dir_template(d.path(), "negative", "memory_mb = -1\n");
  fs::create_directories(d.path() / "norootfs");
  write(d.path() / "norootfs" / "template.toml", kBaseToml);
  fs::create_directories(d.path() / "notoml" / "rootfs");
  make_dir_template(d.path(), "bad name", kBaseToml);                  // not a template name
  make_dir_template(d.path(), ".base.tmp-123", kBaseToml);             // a build in progress
  write(d.path() / "README", "not a template\n");
  TemplateRegistry reg(d.path().string());
  ASSERT_TRUE(reg.reload());
  EXPECT_EQ(names(reg), (std::vector<std::string>{"good"}));
}

TEST(TemplateRegistry, MissingRootFailsAndKeepsTheList) {
  TempDir d;
  make_dir_template(d.path() / "t", "base", kBaseToml);
  TemplateRegistry reg((d.path() / "t").string());
  ASSERT_TRUE(reg.reload());
  fs::remove_all(d.path() / "t");
  auto s = reg.reload();
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message().find("templates root"), std::string::npos);
  EXPECT_EQ(names(reg), (std::vector<std::string>{"base"}));
}

TEST(TemplateRegistry, SizesAreMeasuredAtReload) {
  TempDir d;
  make_dir_template(d.path(), "sized", kBaseToml);
  const fs::path rootfs = d.path() / "sized" / "rootfs";
  write(rootfs / "data" / "blob", noise(256 << 10));
  // A second name for the same file is not counted twice.
  fs::create_hard_link(rootfs / "data" / "blob", rootfs / "data" / "blob-again");
  // A symlink is not followed: the big file outside the rootfs does not count.
  write(d.path() / "outside", std::string(1 << 20, 'y'));
  fs::create_symlink(d.path() / "outside", rootfs / "link");
  TemplateRegistry reg(d.path().string());
  ASSERT_TRUE(reg.reload());
  auto t = reg.get("sized");
  ASSERT_TRUE(t);
  EXPECT_GE(t->size_bytes, uint64_t{256} << 10);
  EXPECT_LT(t->size_bytes, uint64_t{256 + 128} << 10) << "hard link counted twice or symlink followed?";
  EXPECT_EQ(t->size_bytes, tree_disk_usage(rootfs.string()));

  // The figure is the one from the last reload, not recomputed per lookup.
  write(rootfs / "data" / "more", noise(512 << 10));
  EXPECT_EQ(reg.get("sized")->size_bytes, t->size_bytes);
  ASSERT_TRUE(reg.reload());
  EXPECT_GE(reg.get("sized")->size_bytes, t->size_bytes + (uint64_t{512} << 10));
}

TEST(TemplateRegistry, TemplateNames) {
  EXPECT_TRUE(valid_template_name("base"));
  EXPECT_TRUE(valid_template_name("code-interpreter_v1.2"));
  EXPECT_FALSE(valid_template_name(""));
  EXPECT_FALSE(valid_template_name(".hidden"));
  EXPECT_FALSE(valid_template_name("a b"));
  EXPECT_FALSE(valid_template_name("a/b"));
  EXPECT_FALSE(valid_template_name(std::string(129, 'a')));
}

}  // namespace
}  // namespace coppice::templates
