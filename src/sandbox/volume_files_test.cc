#include "sandbox/volume_files.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "common/test_temp_dir.h"

namespace coppice::sandbox::volfs {
namespace {

namespace fs = std::filesystem;

struct VolumeFilesTest : ::testing::Test {
  coppice::test_util::TempDir tmp{"coppice-volfs-test"};
  std::string root() const { return (tmp.path() / "vol").string(); }
  fs::path outside() const { return tmp.path() / "outside"; }
  void SetUp() override {
    fs::create_directories(root());
    fs::create_directories(outside());
    std::ofstream(outside() / "secret") << "host secret";
  }
  void write(const std::string& rel, const std::string& data) {
    fs::create_directories(fs::path(root() + rel).parent_path());
    std::ofstream(root() + rel) << data;
  }
};

TEST(VolumePaths, CleanPath) {
  EXPECT_EQ(*clean_path("/"), "/");
  EXPECT_EQ(*clean_path("//a///b/"), "/a/b");
  for (const char* bad : {"", "a", "/a/../b", "/..", "/./x", "/a\nb"}) {
    auto r = clean_path(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  }
  EXPECT_FALSE(clean_path("/" + std::string(256, 'x')));
  EXPECT_FALSE(clean_path(std::string(5000, '/') + "x"));
}

TEST_F(VolumeFilesTest, SymlinksResolveInsideTheVolume) {
  write("/inner/file", "inside");
  fs::create_symlink(outside() / "secret", root() + "/abs");           // a host path, absolute
  fs::create_symlink("../../outside/secret", root() + "/up");          // climbing out
  fs::create_symlink("/", root() + "/rootlink");
  fs::create_symlink("/inner/file", root() + "/to-inner");             // absolute, inside
  EXPECT_EQ(read_file(root(), "/abs").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(read_file(root(), "/up").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(*read_file(root(), "/to-inner"), "inside");
  EXPECT_EQ(*read_file(root(), "/rootlink/inner/file"), "inside");
  auto l = list(root(), "/rootlink", 1);
  ASSERT_TRUE(l) << l.error().to_string();
  EXPECT_EQ(l->size(), 5u) << "the volume's own root";
  auto st = stat(root(), "/abs");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->type, "symlink");
  EXPECT_EQ(st->target, (outside() / "secret").string());
  // Removing a link removes the link, never what it names.
  ASSERT_TRUE(remove(root(), "/rootlink"));
  EXPECT_TRUE(fs::exists(root() + "/inner/file"));
  EXPECT_TRUE(fs::exists(outside() / "secret"));
}

TEST_F(VolumeFilesTest, OnlyRegularFilesAreReadAndAFifoDoesNotBlock) {
  ASSERT_EQ(::mkfifo((root() + "/fifo").c_str(), 0644), 0);
  auto t0 = std::chrono::steady_clock::now();
  auto r = read_file(root(), "/fifo");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  EXPECT_EQ(read_file(root(), "/").error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(remove(root(), "/").error().code(), ErrorCode::kInvalidArgument);
}

TEST_F(VolumeFilesTest, ListIsBreadthFirstAndBounded) {
  std::string deep;
  for (int i = 0; i < 30; ++i) deep += "/d";
  fs::create_directories(root() + deep);
  write("/a.txt", "a");
  auto one = list(root(), "/", 1);
  ASSERT_TRUE(one);
  EXPECT_EQ(one->size(), 2u);
  auto many = list(root(), "/", kMaxDepth);
  ASSERT_TRUE(many);
  EXPECT_EQ(many->size(), 1u + kMaxDepth) << "stops at kMaxDepth levels";
  EXPECT_FALSE(list(root(), "/", kMaxDepth + 1));
  EXPECT_FALSE(list(root(), "/", 0));
  EXPECT_EQ(list(root(), "/missing", 1).error().code(), ErrorCode::kNotFound);
  // A whole tree goes, depth and all.
  ASSERT_TRUE(remove(root(), "/d"));
  EXPECT_FALSE(fs::exists(root() + "/d"));
}

TEST_F(VolumeFilesTest, WriteMakeDirAndMetadata) {
  if (::geteuid() != 0) GTEST_SKIP() << "files get the sandboxes' owner ids (chown): needs root";
  auto w = write_file(root(), "/x/y/f.txt", "data", Meta{});
  ASSERT_TRUE(w) << w.error().to_string();
  EXPECT_EQ(w->uid, kDefaultOwner);
  EXPECT_EQ(w->mode, 0644u);
  EXPECT_EQ(stat(root(), "/x/y")->uid, kDefaultOwner);
  EXPECT_EQ(*read_file(root(), "/x/y/f.txt"), "data");
  ASSERT_TRUE(write_file(root(), "/x/y/f.txt", "replaced", Meta{0, 0, 0600}));
  auto st = stat(root(), "/x/y/f.txt");
  EXPECT_EQ(st->uid, 0u);
  EXPECT_EQ(st->mode, 0600u);
  EXPECT_EQ(*read_file(root(), "/x/y/f.txt"), "replaced");
  EXPECT_EQ(list(root(), "/x/y", 1)->size(), 1u) << "no temporary file left";
  EXPECT_EQ(make_dir(root(), "/x", Meta{}, false).error().code(), ErrorCode::kAlreadyExists);
  EXPECT_TRUE(make_dir(root(), "/x", Meta{}, true));
  EXPECT_EQ(make_dir(root(), "/p/q", Meta{}, false).error().code(), ErrorCode::kNotFound);
  EXPECT_TRUE(make_dir(root(), "/p/q", Meta{}, true));
  EXPECT_EQ(update(root(), "/x/y/f.txt", Meta{70000, {}, {}}).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(update(root(), "/x/y/f.txt", Meta{{}, {}, 04755}).value().mode, 0755u) << "no set-id bits";
  // Through a symlink to the host: stays in the volume.
  fs::create_symlink(outside(), root() + "/out");
  // (it names a directory the volume lacks: not found)
  EXPECT_FALSE(write_file(root(), "/out/secret", "not the host's", Meta{}));
  std::ifstream host(outside() / "secret");
  std::string text((std::istreambuf_iterator<char>(host)), {});
  EXPECT_EQ(text, "host secret");
}

}  // namespace
}  // namespace coppice::sandbox::volfs
