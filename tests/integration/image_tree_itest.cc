// The template builder's work on image trees, as root: editing a tree whose
// files are hard links shared with the unpacked image never changes the
// image's files; a RUN step runs in the tree, isolated (its own network
// with loopback only, its own pid namespace, /dev, the user asked for) and
// fails with its output.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "builder/mounts.h"
#include "builder/run_step.h"
#include "builder/tree_edit.h"
#include "common/test_temp_dir.h"
#include "sys/fsutil.h"

namespace coppice::builder {
namespace {

namespace fs = std::filesystem;

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  ASSERT_TRUE(sys::write_new_file(p.string(), text, 0644).has_value()) << p;
}

std::string read(const fs::path& p) {
  auto t = sys::read_file(p.string());
  return t ? *t : "<" + t.error().to_string() + ">";
}

// `to` as a tree of hard links to `from`'s files (cp -al).
void link_tree(const fs::path& from, const fs::path& to) {
  fs::copy(from, to, fs::copy_options::recursive | fs::copy_options::create_hard_links);
}

TEST(ImageTree, EditingALinkedTreeLeavesTheSharedFilesAlone) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (chroot, chown)";
  test_util::TempDir dir("coppice-image-tree");
  const fs::path base = dir.path() / "base", tree = dir.path() / "tree";
  write(base / "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
  write(base / "etc/group", "root:x:0:\n");
  write(base / "etc/hostname", "image\n");
  write(base / "etc/hosts", "10.0.0.1 image\n");
  write(base / "bin/tool", "binary\n");
  link_tree(base, tree);
  ASSERT_EQ(fs::hard_link_count(tree / "etc/passwd"), 2u);

  ASSERT_TRUE(edit_tree(tree.string(), {}).has_value());
  // The tree has what every template gets...
  EXPECT_NE(read(tree / "etc/passwd").find("user:x:1000:1000::/home/user:"), std::string::npos);
  EXPECT_EQ(read(tree / "etc/hostname"), "sandbox\n");
  // ...and the image's files are as they were.
  EXPECT_EQ(read(base / "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
  EXPECT_EQ(read(base / "etc/group"), "root:x:0:\n");
  EXPECT_EQ(read(base / "etc/hostname"), "image\n");
  EXPECT_EQ(read(base / "etc/hosts"), "10.0.0.1 image\n");
  // What it did not touch is still shared; a replaced file kept its mode.
  EXPECT_EQ(fs::hard_link_count(base / "bin/tool"), 2u);
  EXPECT_EQ(fs::hard_link_count(base / "etc/passwd"), 1u);
  EXPECT_EQ(fs::status(tree / "etc/passwd").permissions(), fs::status(base / "etc/passwd").permissions());

  // A COPY over a shared file replaces it too.
  write(dir.path() / "src.txt", "mine\n");
  AddedEntry e;
  e.kind = AddedEntry::kFile;
  e.src = (dir.path() / "src.txt").string();
  e.dst = "/bin/tool";
  e.mode = 0755;
  e.uid = 1000;
  e.gid = 1000;
  ASSERT_TRUE(add_entries(tree.string(), {e}).has_value());
  EXPECT_EQ(read(tree / "bin/tool"), "mine\n");
  EXPECT_EQ(read(base / "bin/tool"), "binary\n");
  struct stat st {};
  ASSERT_EQ(::stat((tree / "bin/tool").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u);
}

// A tree with busybox from the test packages (scripts/test-debs.sh), or "".
std::string busybox_deb() {
  const fs::path dir = "/var/cache/coppice/test-debs";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().filename().string().starts_with("busybox-static_")) return e.path().string();
  return "";
}

// Runs the test body in a child in a mount namespace of its own (as a build
// does), so the tree's /dev mount never reaches the test process.
template <typename F>
void in_child(F f) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (!enter_private_mount_namespace()) ::_exit(2);
    ::_exit(f() ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(ImageTree, RunStepIsIsolatedAndReportsItsOutput) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (namespaces, chroot)";
  const std::string deb = busybox_deb();
  if (deb.empty()) GTEST_SKIP() << "no busybox-static in /var/cache/coppice/test-debs (run scripts/test-debs.sh)";
  test_util::TempDir dir("coppice-run-step");
  const fs::path tree = dir.path() / "rootfs";
  ASSERT_EQ(std::system(("dpkg-deb -x '" + deb + "' '" + tree.string() + "'").c_str()), 0);
  fs::create_symlink("busybox", tree / "bin/sh");
  fs::create_directories(tree / "out");
  fs::permissions(tree / "out", fs::perms::all);
  in_child([&] {
    if (!mount_build_dev(tree.string())) return false;
    RunStep r;
    r.rootfs = tree.string();
    r.argv = {"/bin/sh", "-c",
              "busybox ip -o link | busybox cut -d: -f2 > /out/links; echo $$ > /out/pid; "
              "busybox id -u > /out/uid; echo x > /dev/null && echo $GREETING > /out/env; busybox pwd > /out/pwd"};
    r.env = {"GREETING=hi"};
    r.cwd = "/out";
    r.uid = 1000;
    r.gid = 1000;
    auto s = run_step(r);
    if (!s) {
      ADD_FAILURE() << s.error().to_string();
      return false;
    }
    std::vector<std::string> lines;
    RunStep bad = r;
    bad.argv = {"/bin/sh", "-c", "echo doomed; exit 7"};
    bad.progress = [&](std::string_view l) { lines.emplace_back(l); };
    auto f = run_step(bad);
    EXPECT_FALSE(f);
    if (!f) {
      EXPECT_NE(f.error().message().find("exited with status 7; its last lines:\n  doomed"), std::string::npos);
    }
    EXPECT_EQ(lines, std::vector<std::string>{"doomed"});
    return static_cast<bool>(unmount_under((tree / "dev").string()));
  });
  EXPECT_EQ(read(tree / "out/links"), " lo\n");  // no network but its own loopback
  EXPECT_EQ(read(tree / "out/pid"), "1\n");       // its own pid namespace
  EXPECT_EQ(read(tree / "out/uid"), "1000\n");
  EXPECT_EQ(read(tree / "out/env"), "hi\n");
  EXPECT_EQ(read(tree / "out/pwd"), "/out\n");
  // The /dev it had was a mount of the build's: nothing of it is in the tree.
  EXPECT_TRUE(fs::is_empty(tree / "dev"));
}

}  // namespace
}  // namespace coppice::builder
