#include "envd/fs_entry.h"

#include <gtest/gtest.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "envd/fs_ops.h"
#include "sys/tree_test_util.h"
#include "sys/tree_walk.h"

namespace coppice::envd {
namespace {

namespace stdfs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (stdfs::temp_directory_path() / "coppice-fs-XXXXXX").string();
    char* p = ::mkdtemp(tmpl.data());
    EXPECT_NE(p, nullptr);
    // Canonical, so realpath() results compare equal.
    path_ = stdfs::canonical(tmpl).string();
  }
  ~TempDir() {
    std::error_code ec;
    stdfs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(std::string_view rel) const { return path_ + "/" + std::string(rel); }

 private:
  std::string path_;
};

void write(const std::string& path, std::string_view data, mode_t mode = 0644) {
  std::ofstream(path) << data;
  ::chmod(path.c_str(), mode);
}

TEST(GoModeString, MatchesGoFileModeString) {
  EXPECT_EQ(go_mode_string(S_IFREG | 0644), "-rw-r--r--");
  EXPECT_EQ(go_mode_string(S_IFDIR | 0755), "drwxr-xr-x");
  EXPECT_EQ(go_mode_string(S_IFLNK | 0777), "Lrwxrwxrwx");
  EXPECT_EQ(go_mode_string(S_IFDIR | S_ISVTX | 0777), "dtrwxrwxrwx");
  EXPECT_EQ(go_mode_string(S_IFREG | S_ISUID | 0755), "urwxr-xr-x");
  EXPECT_EQ(go_mode_string(S_IFCHR | 0666), "Dcrw-rw-rw-");
  EXPECT_EQ(go_mode_string(S_IFBLK | 0660), "Drw-rw----");
  EXPECT_EQ(go_mode_string(S_IFIFO | 0600), "prw-------");
  EXPECT_EQ(go_mode_string(S_IFSOCK | 0755), "Srwxr-xr-x");
  EXPECT_EQ(go_mode_string(S_IFREG), "----------");
}

TEST(EntryFromStat, SymlinkReportsTargetTypeAndMode) {
  struct stat lst {};
  lst.st_mode = S_IFLNK | 0777;
  lst.st_size = 8;
  struct stat target {};
  target.st_mode = S_IFDIR | 0750;
  auto e = entry_from_stat("/a/link", lst, &target, std::string("/a/real"));
  EXPECT_EQ(e.name, "link");
  EXPECT_EQ(e.type, FileType::kDirectory);
  EXPECT_EQ(e.mode, 0750u);
  EXPECT_EQ(e.permissions, "Lrwxrwxrwx");
  EXPECT_EQ(e.size, 8);
  EXPECT_EQ(e.symlink_target, "/a/real");

  // A dangling link: no type, no mode, and the link's own path as target.
  auto d = entry_from_stat("/a/dangling", lst, nullptr, std::nullopt);
  EXPECT_EQ(d.type, FileType::kUnspecified);
  EXPECT_EQ(d.mode, 0u);
  EXPECT_EQ(d.symlink_target, "/a/dangling");
}

TEST(EntryFromStat, NameOfRoot) {
  struct stat st {};
  st.st_mode = S_IFDIR | 0755;
  EXPECT_EQ(entry_from_stat("/", st, nullptr, std::nullopt).name, "/");
}

TEST(StatEntry, FileDirectoryAndSymlink) {
  TempDir t;
  write(t / "f.txt", "test", 0644);
  ASSERT_EQ(::mkdir((t / "d").c_str(), 0755), 0);
  ::chmod((t / "d").c_str(), 0755);
  ASSERT_EQ(::symlink("f.txt", (t / "link").c_str()), 0);

  auto f = stat_entry(t / "f.txt");
  ASSERT_TRUE(f) << f.error().message();
  EXPECT_EQ(f->name, "f.txt");
  EXPECT_EQ(f->path, t / "f.txt");
  EXPECT_EQ(f->type, FileType::kFile);
  EXPECT_EQ(f->size, 4);
  EXPECT_EQ(f->mode, 0644u);
  EXPECT_EQ(f->permissions, "-rw-r--r--");
  EXPECT_EQ(f->uid, ::getuid());
  EXPECT_FALSE(f->symlink_target);

  auto d = stat_entry(t / "d");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->type, FileType::kDirectory);
  EXPECT_EQ(d->permissions, "drwxr-xr-x");
  EXPECT_EQ(d->mode, 0755u);

  auto l = stat_entry(t / "link");
  ASSERT_TRUE(l);
  EXPECT_EQ(l->type, FileType::kFile);
  EXPECT_EQ(l->permissions, "Lrwxrwxrwx");
  EXPECT_EQ(l->mode, 0644u);
  EXPECT_EQ(l->size, 5);  // strlen("f.txt")
  EXPECT_EQ(l->symlink_target, t / "f.txt");

  auto missing = stat_entry(t / "nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
}

TEST(StatEntry, MetadataFromUserE2bXattrs) {
  TempDir t;
  write(t / "m", "x");
  if (::setxattr((t / "m").c_str(), "user.e2b.owner", "alice", 5, 0) != 0)
    GTEST_SKIP() << "no user xattrs on " << t.path();
  ::setxattr((t / "m").c_str(), "user.other", "ignored", 7, 0);
  ::setxattr((t / "m").c_str(), "user.e2b.bad", "\xff\xfe", 2, 0);
  auto e = stat_entry(t / "m");
  ASSERT_TRUE(e);
  std::map<std::string, std::string> want{{"owner", "alice"}};
  EXPECT_EQ(e->metadata, want);
}

TEST(EntryJson, ProtoJsonShape) {
  EntryInfo e;
  e.name = "f";
  e.type = FileType::kFile;
  e.path = "/f";
  e.size = 1234567890123;
  e.mode = 0644;
  e.permissions = "-rw-r--r--";
  e.uid = 12345;
  e.gid = 12345;
  e.mtime = {1700000000, 500000000};
  UserDb db("/nonexistent");
  OwnerNames names(db);
  auto j = entry_json(e, names);
  EXPECT_EQ(j["type"], "FILE_TYPE_FILE");
  EXPECT_EQ(j["size"], "1234567890123");
  EXPECT_EQ(j["mode"], 0644);
  EXPECT_EQ(j["owner"], "12345");
  EXPECT_EQ(j["modifiedTime"], "2023-11-14T22:13:20.500Z");
  EXPECT_FALSE(j.contains("symlinkTarget"));
  EXPECT_FALSE(j.contains("metadata"));

  EntryInfo z;  // zero values are omitted
  z.uid = 0;
  z.name = "z";
  auto jz = entry_json(z, names);
  EXPECT_FALSE(jz.contains("type"));
  EXPECT_FALSE(jz.contains("size"));
  EXPECT_FALSE(jz.contains("mode"));
  EXPECT_FALSE(jz.contains("modifiedTime"));

  z.symlink_target = "";
  z.metadata["k"] = "v";
  auto jl = entry_json(z, names);
  EXPECT_EQ(jl["symlinkTarget"], "");
  EXPECT_EQ(jl["metadata"]["k"], "v");
}

std::vector<std::string> list(const std::string& requested, const std::string& dir, int depth, size_t budget = 3) {
  TreeWalker w(requested, dir, depth);
  std::vector<EntryInfo> out;
  for (;;) {
    auto more = w.step(out, budget);
    EXPECT_TRUE(more);
    if (!more || !*more) break;
  }
  std::vector<std::string> paths;
  for (auto& e : out) paths.push_back(e.path);
  return paths;
}

TEST(TreeWalker, DepthLimitedLexicalDepthFirst) {
  TempDir t;
  for (auto d : {"b", "b/b1", "b/b2", "b/b1/deep", "a"}) ::mkdir((t / d).c_str(), 0755);
  write(t / "file1.txt", "x");
  write(t / "b/b1/deep/f", "x");
  ASSERT_EQ(::symlink(t.path().c_str(), (t / "loop").c_str()), 0);

  using V = std::vector<std::string>;
  EXPECT_EQ(list("/req", t.path(), 1), (V{"/req/a", "/req/b", "/req/file1.txt", "/req/loop"}));
  EXPECT_EQ(list("/req", t.path(), 2),
            (V{"/req/a", "/req/b", "/req/b/b1", "/req/b/b2", "/req/file1.txt", "/req/loop"}));
  EXPECT_EQ(list("/", t.path(), 4, 1),
            (V{"/a", "/b", "/b/b1", "/b/b1/deep", "/b/b1/deep/f", "/b/b2", "/file1.txt", "/loop"}));
}

// A chain deeper than PATH_MAX allows paths for: the listing ends with an
// error at the first path too long, without exhausting stack or memory.
TEST(TreeWalker, DeepChainEndsWithABoundedDepthError) {
  test_util::Scratch t;
  test_util::make_chain(t.path(), 3000);
  TreeWalker w("/req", t.path(), 1 << 30);
  std::vector<EntryInfo> out;
  Result<bool> more = true;
  while (more && *more) more = w.step(out, 256);
  ASSERT_FALSE(more);
  EXPECT_EQ(more.error().sys_errno(), ENAMETOOLONG) << more.error().to_string();
  EXPECT_GT(out.size(), 1000u);
  EXPECT_LT(out.size(), 4096u);
}

TEST(TreeWalker, ListingsAreBoundedInEntries) {
  test_util::Scratch t;
  ASSERT_EQ(::mkdir((t / "sub").c_str(), 0755), 0);
  test_util::make_files(t / "sub", 50);
  test_util::make_files(t.path(), 20);
  std::vector<EntryInfo> out;
  TreeWalker fits("/req", t.path(), 2, 71);  // 21 at level 1, 50 at level 2
  Result<bool> more = true;
  while (more && *more) more = fits.step(out, 256);
  ASSERT_TRUE(more) << more.error().to_string();
  EXPECT_EQ(out.size(), 71u);
  out.clear();
  TreeWalker over("/req", t.path(), 2, 70);
  more = true;
  while (more && *more) more = over.step(out, 256);
  ASSERT_FALSE(more);
  EXPECT_EQ(more.error().code(), ErrorCode::kResourceExhausted);
  // A single directory past the bound is refused before its names are all read.
  auto names = sorted_names(t / "sub", 10);
  ASSERT_FALSE(names);
  EXPECT_EQ(names.error().code(), ErrorCode::kResourceExhausted);
}

TEST(TreeWalker, MissingRootIsNotFound) {
  TreeWalker w("/x", "/nonexistent/coppice", 1);
  std::vector<EntryInfo> out;
  auto r = w.step(out, 10);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound);
}

// The Remove RPC's remover, stepped as the RPC steps it.
TEST(TreeRemover, RemovesTreeButNotSymlinkTargets) {
  using sys::TreeRemover;
  TempDir t;
  TempDir outside;
  write(outside / "keep", "x");
  ::mkdir((t / "victim").c_str(), 0755);
  ::mkdir((t / "victim/sub").c_str(), 0755);
  for (int i = 0; i < 20; ++i) write(t / ("victim/sub/f" + std::to_string(i)), "x");
  ASSERT_EQ(::symlink(outside.path().c_str(), (t / "victim/link").c_str()), 0);
  TreeRemover r(t / "victim");
  int steps = 0;
  for (;;) {
    auto more = r.step(4);
    ASSERT_TRUE(more) << more.error().message();
    ++steps;
    if (!*more) break;
  }
  EXPECT_GT(steps, 1);
  EXPECT_FALSE(stdfs::exists(t / "victim"));
  EXPECT_TRUE(stdfs::exists(outside / "keep"));
  // Missing paths are fine.
  TreeRemover again(t / "victim");
  auto more = again.step(4);
  ASSERT_TRUE(more);
  EXPECT_FALSE(*more);
}

TEST(EnsureDirs, CreatesParentsAndRejectsFiles) {
  TempDir t;
  ASSERT_TRUE(ensure_dirs(t / "a/b/c"));
  EXPECT_TRUE(stdfs::is_directory(t / "a/b/c"));
  ASSERT_TRUE(ensure_dirs(t / "a/b/c"));  // exists: fine
  write(t / "file", "x");
  auto s = ensure_dirs(t / "file/sub");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(parent_dir("/a/b"), "/a");
  EXPECT_EQ(parent_dir("/a"), "/");
  EXPECT_EQ(parent_dir("/"), "/");
}

}  // namespace
}  // namespace coppice::envd
