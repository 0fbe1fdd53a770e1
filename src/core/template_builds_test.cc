// Template builds without running one: who owns a name, who may build over
// it, upload links, build ids by team, and status reads by offset.
#include "core/template_builds.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/test_temp_dir.h"

namespace coppice::core {
namespace {

namespace fs = std::filesystem;

struct Fixture {
  coppice::test_util::TempDir dir{"coppice-template-builds-test"};
  std::string state = dir.path().string();
  std::string root = (dir.path() / "templates").string();
  templates::TemplateRegistry registry{root};

  Fixture() {
    // A host template, as the CLI leaves one.
    fs::create_directories(dir.path() / "templates" / "base" / "rootfs");
    std::ofstream(dir.path() / "templates" / "base" / "template.toml") << "source = \"host\"\n";
    EXPECT_TRUE(registry.reload());
  }
};

TEST(TemplateBuilds, NamesBelongToTheFirstTeam) {
  Fixture f;
  std::string first_build;
  {
    TemplateBuilds b(f.state, f.registry, "/nonexistent/coppice");
    auto a = b.request("a", false, "app:v1", {"stable"}, 2, 512);
    ASSERT_TRUE(a.has_value()) << a.error().to_string();
    first_build = a->build_id;
    EXPECT_EQ(a->template_id, "app");
    EXPECT_EQ(a->tags, (std::vector<std::string>{"v1", "stable"}));
    EXPECT_EQ(b.owner("app"), "a");
    EXPECT_TRUE(b.visible("app", "a"));
    EXPECT_FALSE(b.visible("app", "b"));
    EXPECT_TRUE(b.visible("base", "b"));  // the host's: everyone's to read

    auto taken = b.request("b", true, "app", {}, 0, 0);
    ASSERT_FALSE(taken.has_value());
    EXPECT_EQ(taken.error().code(), ErrorCode::kPermissionDenied);
    EXPECT_NE(taken.error().message().find("another team"), std::string::npos);
    // The host's template: an admin key only.
    EXPECT_EQ(b.request("b", false, "base", {}, 0, 0).error().code(), ErrorCode::kPermissionDenied);
    EXPECT_TRUE(b.request("b", true, "base", {}, 0, 0).has_value());
    EXPECT_FALSE(b.owner("base").has_value());

    for (const char* bad : {"../x", "", ".hidden", "a b", "x:bad tag"})
      EXPECT_EQ(b.request("a", true, bad, {}, 0, 0).error().code(), ErrorCode::kInvalidArgument) << bad;
    EXPECT_EQ(b.request("a", true, "y", {}, -1, 0).error().code(), ErrorCode::kInvalidArgument);

    // Builds and their status are the team's own.
    EXPECT_EQ(b.status("b", "app", first_build, 0).error().code(), ErrorCode::kNotFound);
    auto st = b.status("a", "app", first_build, 0);
    ASSERT_TRUE(st.has_value());
    EXPECT_EQ(st->status, "waiting");
    EXPECT_EQ(b.start("b", "app", first_build, {}).error().code(), ErrorCode::kNotFound);
  }
  // The owner survives a restart.
  TemplateBuilds again(f.state, f.registry, "/nonexistent/coppice");
  EXPECT_EQ(again.owner("app"), "a");
  again.release("app");
  EXPECT_FALSE(again.owner("app").has_value());
}

TEST(TemplateBuilds, UploadLinksAreOneUseAndPerTeam) {
  Fixture f;
  TemplateBuilds b(f.state, f.registry, "/nonexistent/coppice");
  auto a = b.request("a", false, "app", {}, 0, 0);
  ASSERT_TRUE(a.has_value());
  const std::string hash(64, 'e');
  EXPECT_EQ(b.upload_link("b", "app", hash).error().code(), ErrorCode::kNotFound);  // no build of b's
  EXPECT_EQ(b.upload_link("a", "app", "nothex").error().code(), ErrorCode::kInvalidArgument);
  auto link = b.upload_link("a", "app", hash);
  ASSERT_TRUE(link.has_value()) << link.error().to_string();
  EXPECT_FALSE(link->present);
  auto path = b.upload_path(link->token);
  ASSERT_TRUE(path.has_value());
  std::ofstream(*path + ".part-" + link->token.substr(0, 8)) << "data";
  ASSERT_TRUE(b.finish_upload(link->token));
  EXPECT_FALSE(b.upload_path(link->token).has_value());  // used
  EXPECT_TRUE(b.upload_link("a", "app", hash)->present);
  // Another team's upload of the same hash is its own.
  ASSERT_TRUE(b.request("b", false, "other", {}, 0, 0).has_value());
  EXPECT_FALSE(b.upload_link("b", "other", hash)->present);
}

TEST(TemplateBuilds, AFailedTriggerFailsTheBuildWithItsReason) {
  Fixture f;
  TemplateBuilds b(f.state, f.registry, "/nonexistent/coppice");
  auto a = b.request("a", false, "app", {}, 0, 0);
  ASSERT_TRUE(a.has_value());
  b.fail("a", "app", a->build_id, "step 2: the step type \"X\" is not supported");
  auto st = b.status("a", "app", a->build_id, 0);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->status, "error");
  EXPECT_NE(st->reason.find("\"X\""), std::string::npos);
  ASSERT_EQ(st->lines.size(), 1u);
  EXPECT_TRUE(b.status("a", "app", a->build_id, 1)->lines.empty());  // past the end: nothing new
  EXPECT_EQ(b.start("a", "app", a->build_id, {}).error().code(), ErrorCode::kFailedPrecondition);
}

}  // namespace
}  // namespace coppice::core
