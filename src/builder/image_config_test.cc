#include "builder/image_config.h"

#include <gtest/gtest.h>

#include "builder/oci.h"

namespace coppice::builder {
namespace {

TEST(ImageConfig, MapsEnvWorkdirUserAndCommand) {
  auto c = parse_image_config(R"({
    "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
    "config": {"Env": ["PATH=/usr/local/bin:/usr/bin", "LANG=C.UTF-8", "PATH=/opt/bin", "EMPTY="],
               "WorkingDir": "/srv/app", "User": "app:staff",
               "Entrypoint": ["/docker-entrypoint.sh"], "Cmd": ["nginx", "-g", "daemon off;"],
               "ExposedPorts": {"80/tcp": {}}, "Labels": {"a": "b"}},
    "rootfs": {"type": "layers", "diff_ids": []}})");
  ASSERT_TRUE(c) << c.error().to_string();
  EXPECT_EQ(c->env, (std::vector<std::string>{"PATH=/opt/bin", "LANG=C.UTF-8", "EMPTY="}));
  EXPECT_EQ(c->workdir, "/srv/app");
  EXPECT_EQ(c->user, "app:staff");
  EXPECT_EQ(c->architecture, "amd64");
  EXPECT_EQ(c->os, "linux");
  EXPECT_EQ(start_command(c->entrypoint, c->cmd), "/docker-entrypoint.sh nginx -g 'daemon off;'");
}

TEST(ImageConfig, MissingPartsAreEmpty) {
  auto c = parse_image_config(R"({"architecture": "amd64"})");
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->env.empty());
  EXPECT_EQ(start_command(c->entrypoint, c->cmd), "");
  c = parse_image_config(R"({"config": {"Env": null, "Cmd": null, "Entrypoint": null}})");
  ASSERT_TRUE(c);
  EXPECT_EQ(start_command({}, {"sh"}), "sh");
  EXPECT_EQ(start_command({"tini", "--"}, {}), "tini --");
}

TEST(ImageConfig, BadFieldsAreErrors) {
  EXPECT_FALSE(parse_image_config("not json"));
  EXPECT_FALSE(parse_image_config("[]"));
  EXPECT_FALSE(parse_image_config(R"({"config": {"Env": "A=1"}})"));
  EXPECT_FALSE(parse_image_config(R"({"config": {"Env": ["NOEQUALS"]}})"));
  EXPECT_FALSE(parse_image_config(R"({"config": {"Env": ["=x"]}})"));
  EXPECT_FALSE(parse_image_config(R"({"config": {"Cmd": [1]}})"));
  EXPECT_FALSE(parse_image_config(R"({"config": {"User": 0}})"));
  auto rel = parse_image_config(R"({"config": {"WorkingDir": "relative"}})");
  ASSERT_FALSE(rel);
  EXPECT_EQ(rel.error().message(), "config.WorkingDir \"relative\" is not absolute");
}

TEST(ImageConfig, SetEnvReplacesInPlace) {
  std::vector<std::string> env{"A=1", "AB=2"};
  set_env(env, "A", "3");
  set_env(env, "C", "4");
  EXPECT_EQ(env, (std::vector<std::string>{"A=3", "AB=2", "C=4"}));
}

TEST(ImageSourceTest, ReferencesAndLoopbackRegistries) {
  auto s = make_image_source(ImageSource::kRegistry, "127.0.0.1:5000/tiny:1", ".", false);
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->insecure);
  EXPECT_EQ(s->transport(), "docker://127.0.0.1:5000/tiny:1");
  s = make_image_source(ImageSource::kRegistry, "debian:bookworm", ".", false);
  ASSERT_TRUE(s);
  EXPECT_FALSE(s->insecure);
  EXPECT_FALSE(make_image_source(ImageSource::kRegistry, "has space", ".", false));
  EXPECT_FALSE(make_image_source(ImageSource::kRegistry, "-rm", ".", false));
  EXPECT_FALSE(make_image_source(ImageSource::kRegistry, "", ".", false));
  auto missing = make_image_source(ImageSource::kOciLayout, "/nonexistent/layout:tag", ".", false);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_FALSE(make_image_source(ImageSource::kDockerArchive, "/nonexistent.tar", ".", false));
}

}  // namespace
}  // namespace coppice::builder
