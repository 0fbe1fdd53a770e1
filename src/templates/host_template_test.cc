#include "templates/host_template.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "common/test_temp_dir.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "templates/template_toml.h"
#include "templates/templates.h"

namespace coppice::templates {
namespace {

namespace fs = std::filesystem;

// A fresh temp dir per test, removed with its contents.
struct TempDir : coppice::test_util::TempDir {
  TempDir() : coppice::test_util::TempDir("coppice-hosttpl-test") {}
};

struct stat lstat_of(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
  return st;
}

bool exists_nofollow(const fs::path& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write(const fs::path& p, std::string_view content, mode_t mode = 0644) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << content;
  ASSERT_EQ(::chmod(p.c_str(), mode), 0);
}

// Every path under `root`, relative to it.
std::vector<fs::path> walk(const fs::path& root) {
  std::vector<fs::path> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    out.push_back(fs::relative(it->path(), root));
  }
  return out;
}

void expect_no_secrets(const fs::path& rootfs) {
  for (const auto& rel : walk(rootfs)) {
    // Our own: an empty machine-id and the sandbox's sudo rule.
    if (rel == "etc/machine-id" || rel == "etc/sudoers" || rel == "etc/sudoers.d" || rel == "etc/sudoers.d/user") {
      continue;
    }
    EXPECT_FALSE(is_host_secret_name(rel.filename().string())) << "secret in template: " << rel;
  }
  for (const char* p : {"etc/shadow", "etc/gshadow", "etc/ssh", "etc/ssl/private", "etc/shadow-", "etc/gshadow-",
                        "etc/security"}) {
    EXPECT_FALSE(exists_nofollow(rootfs / p)) << p;
  }
  ASSERT_TRUE(fs::is_regular_file(rootfs / "etc/machine-id"));
  EXPECT_EQ(fs::file_size(rootfs / "etc/machine-id"), 0u);
  // sudo: the sandbox's rule for `user`, nothing of the host's.
  std::vector<fs::path> rules;
  for (const auto& e : fs::directory_iterator(rootfs / "etc/sudoers.d")) rules.push_back(e.path().filename());
  EXPECT_EQ(rules, std::vector<fs::path>{"user"});
  EXPECT_EQ(read_file(rootfs / "etc/sudoers.d/user"), "user ALL=(ALL:ALL) NOPASSWD: ALL\n");
  const std::string sudoers = read_file(rootfs / "etc/sudoers");
  EXPECT_NE(sudoers.find("@includedir /etc/sudoers.d\n"), std::string::npos);
  EXPECT_EQ(sudoers.find("admin"), std::string::npos);
  for (const char* p : {"etc/sudoers", "etc/sudoers.d/user"}) {
    EXPECT_EQ(lstat_of(rootfs / p).st_mode & 07777, 0440u) << p;
  }
  // PAM: the one generated policy, no host service's.
  std::vector<fs::path> pam;
  for (const auto& e : fs::directory_iterator(rootfs / "etc/pam.d")) pam.push_back(e.path().filename());
  EXPECT_EQ(pam, std::vector<fs::path>{"other"});
}

Result<TomlDoc> load_toml(const fs::path& dir) {
  auto doc = parse_toml_file((dir / "template.toml").string());
  EXPECT_TRUE(doc.has_value()) << doc.error().to_string();
  return doc;
}

TEST(HostTemplate, LayoutFromThisHost) {
  TempDir dir;
  auto made = ensure_host_template(dir.path().string());
  ASSERT_TRUE(made.has_value()) << made.error().to_string();
  const fs::path base = dir.path() / "base";
  EXPECT_EQ(fs::path(*made), base);
  const fs::path rootfs = base / "rootfs";

  struct Want {
    const char* path;
    mode_t mode;
  };
  for (const Want& w : {Want{"usr", 0755}, Want{"proc", 0555}, Want{"sys", 0555}, Want{"dev", 0755},
                        Want{"tmp", 01777}, Want{"run", 0755}, Want{"mnt", 0755}, Want{"opt", 0755},
                        Want{"srv", 0755}, Want{"var/tmp", 01777}, Want{"var/log", 0755},
                        Want{"var/cache", 0755}, Want{"var/lib", 0755}, Want{"root", 0700},
                        Want{"home/user", 0755}, Want{"etc", 0755}}) {
    struct stat st = lstat_of(rootfs / w.path);
    EXPECT_TRUE(S_ISDIR(st.st_mode)) << w.path;
    EXPECT_EQ(st.st_mode & 07777, w.mode) << w.path;
  }
  // Mount points are empty.
  for (const char* p : {"usr", "proc", "sys", "dev", "tmp", "run", "mnt", "opt", "srv"}) {
    EXPECT_TRUE(fs::is_empty(rootfs / p)) << p;
  }

  // Merged-usr links mirror the host's.
  for (const char* name : {"bin", "sbin", "lib", "lib64"}) {
    std::error_code ec;
    fs::path host_target = fs::read_symlink(fs::path("/") / name, ec);
    if (ec) continue;
    if (host_target == fs::path("usr") / name || host_target == fs::path("/usr") / name) {
      EXPECT_EQ(fs::read_symlink(rootfs / name), fs::path("usr") / name) << name;
    }
  }

  // Identity files are the template's own.
  const std::string passwd = read_file(rootfs / "etc/passwd");
  EXPECT_NE(passwd.find("root:x:0:0:root:/root:/bin/bash\n"), std::string::npos);
  EXPECT_NE(passwd.find("user:x:1000:1000::/home/user:/bin/bash\n"), std::string::npos);
  EXPECT_NE(passwd.find("nobody:"), std::string::npos);
  EXPECT_EQ(std::count(passwd.begin(), passwd.end(), '\n'), 3);
  const std::string group = read_file(rootfs / "etc/group");
  EXPECT_NE(group.find("user:x:1000:"), std::string::npos);
  EXPECT_NE(group.find("nogroup:x:65534:"), std::string::npos);
  EXPECT_EQ(group.find("sudo:"), std::string::npos);
  EXPECT_NE(read_file(rootfs / "etc/hosts").find("127.0.0.1\tlocalhost"), std::string::npos);
  EXPECT_NE(read_file(rootfs / "etc/resolv.conf").find("nameserver 127.0.0.1"), std::string::npos);
  EXPECT_FALSE(read_file(rootfs / "etc/hostname").empty());
  const std::string nss = read_file(rootfs / "etc/nsswitch.conf");
  for (const char* module : {"systemd", "ldap", "sss", "mdns", "nis", "winbind"}) {
    EXPECT_EQ(nss.find(module), std::string::npos) << module;
  }
  EXPECT_TRUE(fs::exists(rootfs / "etc/profile"));
  EXPECT_TRUE(fs::exists(rootfs / "etc/bash.bashrc"));

  // The loader cache is a faithful copy.
  if (fs::is_regular_file("/etc/ld.so.cache")) {
    EXPECT_EQ(read_file(rootfs / "etc/ld.so.cache"), read_file("/etc/ld.so.cache"));
  }

  expect_no_secrets(rootfs);
  // Every copied host file is one the host lets anyone read.
  for (const auto& rel : walk(rootfs / "etc")) {
    const fs::path host = fs::path("/etc") / rel;
    struct stat st {};
    if (!fs::is_regular_file(fs::symlink_status(rootfs / "etc" / rel)) || ::lstat(host.c_str(), &st) != 0) {
      continue;
    }
    if (rel == "passwd" || rel == "group" || rel == "hosts" || rel == "resolv.conf" ||
        rel == "hostname" || rel == "nsswitch.conf" || rel == "machine-id" || rel == "sudoers" ||
        rel == "sudoers.d/user" || rel == "pam.d/other") {
      continue;  // generated
    }
    EXPECT_TRUE(st.st_mode & S_IROTH) << "copied a host file others cannot read: " << host;
  }

  auto doc = load_toml(base);
  ASSERT_TRUE(doc.has_value());
  EXPECT_TRUE(
      doc->check_known_keys({"backend", "ro_binds", "cpu_count", "memory_mb", "source", "generation", "build_id"})
          .has_value());
  EXPECT_EQ(*doc->get_string("backend"), "ns");
  EXPECT_EQ(*doc->get_int("generation"), kHostTemplateGeneration);
  auto binds = doc->get_strings("ro_binds");
  ASSERT_TRUE(binds.has_value());
  ASSERT_FALSE(binds->empty());
  EXPECT_EQ((*binds)[0], "/usr");
  EXPECT_EQ(*doc->get_int("cpu_count"), 1);
  EXPECT_EQ(*doc->get_int("memory_mb"), 512);
  EXPECT_EQ(*doc->get_string("source"), "host");
  auto build_id = doc->get_string("build_id");
  ASSERT_TRUE(build_id.has_value());
  EXPECT_EQ(build_id->size(), 64u);

  // Nothing left from the build.
  for (const auto& e : fs::directory_iterator(dir.path())) {
    EXPECT_EQ(e.path().filename(), "base") << "leftover " << e.path();
  }
}

TEST(HostTemplate, HomeIsOwnedByUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "chown of home/user to 1000:1000 needs root";
  TempDir dir;
  auto made = ensure_host_template(dir.path().string());
  ASSERT_TRUE(made.has_value()) << made.error().to_string();
  struct stat st = lstat_of(fs::path(*made) / "rootfs/home/user");
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 1000u);
  st = lstat_of(fs::path(*made) / "rootfs/root");
  EXPECT_EQ(st.st_uid, 0u);
}

TEST(HostTemplate, SecondCallIsANoOp) {
  TempDir dir;
  auto first = ensure_host_template(dir.path().string());
  ASSERT_TRUE(first.has_value()) << first.error().to_string();
  const fs::path toml = fs::path(*first) / "template.toml";
  struct stat before = lstat_of(toml);
  const std::string content = read_file(toml);

  auto second = ensure_host_template(dir.path().string());
  ASSERT_TRUE(second.has_value()) << second.error().to_string();
  EXPECT_EQ(*second, *first);
  struct stat after = lstat_of(toml);
  EXPECT_EQ(after.st_ino, before.st_ino);
  EXPECT_EQ(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
  EXPECT_EQ(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
  EXPECT_EQ(read_file(toml), content);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

// A base made by an older coppiced (no `generation`: before sudo for
// `user`) is generated again on start; the old tree is retired, not removed,
// since sandboxes that outlived the restart may still run on it.
TEST(HostTemplate, OlderGenerationIsGeneratedAgainAndTheOldTreeRetired) {
  TempDir dir;
  auto first = ensure_host_template(dir.path().string());
  ASSERT_TRUE(first.has_value()) << first.error().to_string();
  const fs::path toml = fs::path(*first) / "template.toml";
  EXPECT_NE(read_file(toml).find("generation = " + std::to_string(kHostTemplateGeneration) + "\n"),
            std::string::npos);
  // Make it look like an old build: no generation key, no sudoers.
  std::string old = read_file(toml);
  old.erase(old.find("generation = "), old.find('\n', old.find("generation = ")) - old.find("generation = ") + 1);
  { std::ofstream(toml, std::ios::trunc) << old; }
  fs::remove(fs::path(*first) / "rootfs/etc/sudoers.d/user");
  const std::string old_key = tree_key((fs::path(*first) / "rootfs").string());
  ASSERT_FALSE(old_key.empty());

  auto second = ensure_host_template(dir.path().string());
  ASSERT_TRUE(second.has_value()) << second.error().to_string();
  EXPECT_EQ(*second, *first);
  EXPECT_TRUE(exists_nofollow(fs::path(*second) / "rootfs/etc/sudoers.d/user"));
  EXPECT_NE(read_file(toml).find("generation = "), std::string::npos);
  EXPECT_NE(tree_key((fs::path(*second) / "rootfs").string()), old_key);
  auto retired = retired_trees(dir.path().string());
  ASSERT_EQ(retired.size(), 1u);
  EXPECT_EQ(retired[0].key, old_key) << "the old tree is kept, identity intact, for its sandboxes";

  // The new one is current: a third start changes nothing.
  auto third = ensure_host_template(dir.path().string());
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(retired_trees(dir.path().string()).size(), 1u);
  // And the registry loads it (the generation key is known).
  TemplateRegistry reg(dir.path().string());
  ASSERT_TRUE(reg.reload().has_value());
  auto got = reg.get("base");
  ASSERT_TRUE(got.has_value()) << got.error().to_string();
}

// A `base` built from a recipe replaces the host-derived one; a start never
// touches it, whatever generation it has.
TEST(HostTemplate, RecipeBuiltBaseIsLeftAlone) {
  TempDir dir;
  fs::create_directories(dir.path() / "base/rootfs/etc");
  { std::ofstream(dir.path() / "base/template.toml") << "backend = \"ns\"\nsource = \"debian\"\nbuild_id = \"x\"\n"; }
  const std::string key = tree_key((dir.path() / "base/rootfs").string());
  auto made = ensure_host_template(dir.path().string());
  ASSERT_TRUE(made.has_value()) << made.error().to_string();
  EXPECT_EQ(tree_key((dir.path() / "base/rootfs").string()), key);
  EXPECT_TRUE(retired_trees(dir.path().string()).empty());
}

TEST(HostTemplate, RefusesForeignBaseDirectory) {
  TempDir dir;
  fs::create_directories(dir.path() / "base/rootfs");
  auto made = ensure_host_template(dir.path().string());
  ASSERT_FALSE(made.has_value());
  EXPECT_EQ(made.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_TRUE(fs::is_empty(dir.path() / "base/rootfs"));  // untouched
}

TEST(HostTemplate, RemovesStaleBuildsOfDeadProcesses) {
  TempDir dir;
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);
  const fs::path stale = dir.path() / (".base.tmp-" + std::to_string(child));
  write(stale / "rootfs/junk", "x");
  const fs::path live = dir.path() / (".base.tmp-" + std::to_string(::getppid()));
  fs::create_directories(live);

  auto made = ensure_host_template(dir.path().string());
  ASSERT_TRUE(made.has_value()) << made.error().to_string();
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(live));  // its builder may still be running
}

// A fake host with planted secrets, a non-merged /lib and odd files.
class FakeHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const fs::path h = host_.path();
    fs::create_directories(h / "usr/bin");
    fs::create_directories(h / "usr/sbin");
    fs::create_directory_symlink("usr/bin", h / "bin");
    fs::create_directory_symlink("/usr/sbin", h / "sbin");
    fs::create_directories(h / "lib/x86_64-linux-gnu");  // not merged
    fs::create_directory_symlink("elsewhere/lib64", h / "lib64");  // not a merged-usr link

    const fs::path etc = h / "etc";
    write(etc / "passwd", "root:x:0:0::/root:/bin/sh\nadmin:x:1001:1001::/home/admin:/bin/sh\n");
    write(etc / "shadow", "root:$6$secret:19000::::::\n", 0640);
    write(etc / "gshadow", "root:*::\n", 0640);
    write(etc / "sudoers", "root ALL=(ALL) ALL\n", 0440);
    write(etc / "sudoers.d/admin", "admin ALL=(ALL) NOPASSWD: ALL\n", 0440);
    write(etc / "ssh/ssh_host_ed25519_key", "PRIVATE\n", 0600);
    write(etc / "ssh/sshd_config", "PermitRootLogin no\n");
    write(etc / "ssl/private/server.key", "PRIVATE\n", 0600);
    ASSERT_EQ(::chmod((etc / "ssl/private").c_str(), 0700), 0);
    write(etc / "ssl/certs/ca.pem", "-----BEGIN CERTIFICATE-----\n");
    write(etc / "ssl/certs/oops.key", "PRIVATE\n");
    write(etc / "ssl/certs/restricted.pem", "only root\n", 0600);
    fs::create_symlink("/usr/share/ca-certificates/x.crt", etc / "ssl/certs/x.pem");
    write(etc / "ssl/openssl.cnf", "[openssl_init]\n");
    write(etc / "machine-id", "0123456789abcdef0123456789abcdef\n");
    write(etc / "ld.so.cache", std::string("ld.so-1.7.0\0cache", 17));
    write(etc / "ld.so.conf", "include /etc/ld.so.conf.d/*.conf\n");
    write(etc / "ld.so.conf.d/libc.conf", "/usr/local/lib\n");
    ASSERT_EQ(::mkfifo((etc / "ld.so.conf.d/fifo").c_str(), 0644), 0);
    fs::create_directories(etc / "alternatives");
    fs::create_symlink("/usr/bin/vim.basic", etc / "alternatives/editor");
    write(etc / "python3/debian_config", "[install]\n");
    write(etc / "python3.11/sitecustomize.py", "pass\n");
    write(etc / "python3.11/token.txt", "hunter2\n", 0600);
    write(etc / "R/Renviron", "R_LIBS_USER=x\n");
    write(etc / "java-17-openjdk/security/java.security", "security.provider.1=SUN\n");
    write(etc / "security/limits.conf", "* hard nproc 10\n");  // PAM's: the host's policy, not on the list
    write(etc / "javascript-secret", "not a JDK\n");
    write(etc / "environment", "PATH=/usr/bin\n");
    write(etc / "setuid-file", "x", 04755);  // not on the copy list at all
    fs::create_symlink("../usr/lib/os-release", etc / "os-release");
    fs::create_symlink("/usr/share/zoneinfo/Etc/UTC", etc / "localtime");
    write(etc / "inputrc", "set bell-style none\n", 04755);  // odd mode: bits must be dropped
    // No profile or bash.bashrc: fallbacks are written.
  }

  Result<std::string> build(const fs::path& root) {
    HostTemplateOptions opts;
    opts.host_root = host_.path().string();
    return ensure_host_template(root.string(), opts);
  }

  TempDir host_;
  TempDir out_;
};

TEST_F(FakeHostTest, CopiesOnlyHarmlessConfig) {
  auto made = build(out_.path());
  ASSERT_TRUE(made.has_value()) << made.error().to_string();
  const fs::path rootfs = fs::path(*made) / "rootfs";
  const fs::path etc = rootfs / "etc";

  expect_no_secrets(rootfs);
  EXPECT_FALSE(exists_nofollow(etc / "ssl/certs/oops.key"));
  EXPECT_FALSE(exists_nofollow(etc / "ssl/certs/restricted.pem"));
  EXPECT_FALSE(exists_nofollow(etc / "python3.11/token.txt"));
  EXPECT_FALSE(exists_nofollow(etc / "ld.so.conf.d/fifo"));
  EXPECT_FALSE(exists_nofollow(etc / "setuid-file"));
  EXPECT_EQ(read_file(etc / "passwd").find("admin"), std::string::npos);

  EXPECT_EQ(read_file(etc / "ssl/certs/ca.pem"), "-----BEGIN CERTIFICATE-----\n");
  EXPECT_EQ(fs::read_symlink(etc / "ssl/certs/x.pem"), "/usr/share/ca-certificates/x.crt");
  EXPECT_TRUE(fs::is_regular_file(etc / "ssl/openssl.cnf"));
  EXPECT_EQ(read_file(etc / "ld.so.cache"), std::string("ld.so-1.7.0\0cache", 17));
  EXPECT_TRUE(fs::is_regular_file(etc / "ld.so.conf.d/libc.conf"));
  EXPECT_EQ(fs::read_symlink(etc / "alternatives/editor"), "/usr/bin/vim.basic");
  EXPECT_TRUE(fs::is_regular_file(etc / "python3/debian_config"));
  EXPECT_TRUE(fs::is_regular_file(etc / "python3.11/sitecustomize.py"));
  EXPECT_TRUE(fs::is_regular_file(etc / "R/Renviron"));
  EXPECT_TRUE(fs::is_regular_file(etc / "java-17-openjdk/security/java.security"));
  EXPECT_FALSE(exists_nofollow(etc / "javascript-secret"));
  EXPECT_EQ(fs::read_symlink(etc / "os-release"), "../usr/lib/os-release");
  EXPECT_EQ(fs::read_symlink(etc / "localtime"), "/usr/share/zoneinfo/Etc/UTC");
  EXPECT_EQ(lstat_of(etc / "inputrc").st_mode & 07777, 0755u);
  EXPECT_NE(read_file(etc / "profile").find("PATH="), std::string::npos);
  EXPECT_TRUE(fs::is_regular_file(etc / "bash.bashrc"));

  // /bin and /sbin are merged-usr links; /lib is a real directory, so it is
  // bound; /lib64 points elsewhere and is left out.
  EXPECT_EQ(fs::read_symlink(rootfs / "bin"), "usr/bin");
  EXPECT_EQ(fs::read_symlink(rootfs / "sbin"), "usr/sbin");
  EXPECT_TRUE(fs::is_directory(fs::symlink_status(rootfs / "lib")));
  EXPECT_TRUE(fs::is_empty(rootfs / "lib"));
  EXPECT_FALSE(exists_nofollow(rootfs / "lib64"));
  auto doc = load_toml(*made);
  ASSERT_TRUE(doc.has_value());
  EXPECT_EQ(*doc->get_strings("ro_binds"), (std::vector<std::string>{"/usr", "/lib"}));
}

TEST_F(FakeHostTest, BuildIdIsDeterministicAndTracksContent) {
  TempDir a, b, c;
  ASSERT_TRUE(build(a.path()).has_value());
  ASSERT_TRUE(build(b.path()).has_value());
  auto id_a = load_toml(a.path() / "base")->get_string("build_id");
  auto id_b = load_toml(b.path() / "base")->get_string("build_id");
  ASSERT_TRUE(id_a.has_value());
  EXPECT_EQ(*id_a, *id_b);

  write(host_.path() / "etc/ld.so.conf.d/libc.conf", "/usr/local/lib64\n");
  ASSERT_TRUE(build(c.path()).has_value());
  EXPECT_NE(*load_toml(c.path() / "base")->get_string("build_id"), *id_a);
}

}  // namespace
}  // namespace coppice::templates
