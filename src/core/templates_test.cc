#include "core/templates.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "common/test_temp_dir.h"

#include <filesystem>
#include <fstream>

namespace coppice::core {
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

// A VM template <root>/<name>.img of `size` bytes (sparse) and its sidecar.
void make_vm_template(const fs::path& root, const std::string& name, off_t size, std::string_view conf) {
  write(root / (name + ".img"), "");
  ASSERT_EQ(::truncate((root / (name + ".img")).c_str(), size), 0);
  write(root / (name + ".conf"), conf);
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
  EXPECT_TRUE(base->image.empty());
  EXPECT_EQ(base->ro_binds, (std::vector<std::string>{"/usr"}));
  EXPECT_EQ(base->cpu_count, 2);
  EXPECT_EQ(base->memory_mb, 768);
  EXPECT_EQ(base->source, "host");
  EXPECT_EQ(base->build_id, "abc123");
  EXPECT_TRUE(base->start_cmd.empty());

  auto web = reg.get("web");
  ASSERT_TRUE(web);
  EXPECT_EQ(web->backend, "ns");  // the default
  EXPECT_EQ(web->cpu_count, 0);
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

TEST(TemplateRegistry, VmImageWithSidecar) {
  TempDir d;
  make_vm_template(d.path(), "debian-vm", 8 << 20,
                   "cpu_count = 2\nmemory_mb = 1024\nbuild_id = \"vm1\"\nsource = \"debian\"\n");
  TemplateRegistry reg(d.path().string());
  ASSERT_TRUE(reg.reload());
  auto t = reg.get("debian-vm");
  ASSERT_TRUE(t) << t.error().to_string();
  EXPECT_EQ(t->backend, "vm");
  EXPECT_EQ(t->path, (d.path() / "debian-vm.img").string());
  EXPECT_EQ(t->image, t->path);
  EXPECT_TRUE(t->rootfs.empty());
  EXPECT_EQ(t->cpu_count, 2);
  EXPECT_EQ(t->memory_mb, 1024);
  EXPECT_EQ(t->build_id, "vm1");
  EXPECT_EQ(t->source, "debian");
  EXPECT_EQ(t->size_bytes, uint64_t{8} << 20);  // the image's size, though sparse
}

TEST(TemplateRegistry, VmEntriesNeedBothFilesAndTheVmBackend) {
  TempDir d;
  write(d.path() / "lonely.img", "disk");                       // no sidecar
  write(d.path() / "orphan.conf", "cpu_count = 1\n");            // no image
  make_vm_template(d.path(), "wrong", 4096, "backend = \"ns\"\n");  // an image cannot be an ns template
  make_vm_template(d.path(), "explicit", 4096, "backend = \"vm\"\n");
  TemplateRegistry reg(d.path().string());
  ASSERT_TRUE(reg.reload());
  EXPECT_EQ(names(reg), (std::vector<std::string>{"explicit"}));
}

TEST(TemplateRegistry, VmEntryWinsANameCollision) {
  TempDir d;
  make_dir_template(d.path(), "dual", kBaseToml);
  make_vm_template(d.path(), "dual", 4096, "memory_mb = 2048\n");
  make_dir_template(d.path(), "base", kBaseToml);
  TemplateRegistry reg(d.path().string());
  ASSERT_TRUE(reg.reload());
  EXPECT_EQ(names(reg), (std::vector<std::string>{"base", "dual"}));
  auto t = reg.get("dual");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->backend, "vm");
  EXPECT_EQ(t->path, (d.path() / "dual.img").string());
  EXPECT_EQ(t->memory_mb, 2048);
  EXPECT_EQ(t->size_bytes, 4096u);
}

TEST(TemplateRegistry, ReloadPicksUpNewTemplatesAndDropsRemovedOnes) {
  TempDir d;
  make_dir_template(d.path(), "base", kBaseToml);
  make_dir_template(d.path(), "old", kBaseToml);
  TemplateRegistry reg(d.path().string());
  ASSERT_TRUE(reg.reload());
  EXPECT_EQ(names(reg), (std::vector<std::string>{"base", "old"}));

  make_dir_template(d.path(), "fresh", kBaseToml);
  make_vm_template(d.path(), "vm", 4096, "");
  fs::remove_all(d.path() / "old");
  EXPECT_EQ(names(reg), (std::vector<std::string>{"base", "old"}));  // nothing changes before a reload
  ASSERT_TRUE(reg.reload());
  EXPECT_EQ(names(reg), (std::vector<std::string>{"base", "fresh", "vm"}));
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
  make_vm_template(d.path(), "badvm", 4096, "cpu_count = [\"x\"]\n");
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
}  // namespace coppice::core
