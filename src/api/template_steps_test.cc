// The SDK's template build (Template.build()'s JSON) as a Dockerfile; what
// cannot be built is refused by name, and every word reaches the Dockerfile
// parser as the SDK sent it.
#include "api/template_steps.h"

#include <gtest/gtest.h>

#include "builder/dockerfile.h"

namespace coppice::api {
namespace {

using json = nlohmann::json;

const std::string kHash(64, 'a');

core::TemplateBuildSpec translate_ok(const json& body) {
  auto r = translate_sdk_build(body);
  EXPECT_TRUE(r.has_value()) << body.dump() << ": " << (r ? "" : r.error().to_string());
  return r ? *r : core::TemplateBuildSpec{};
}

std::string refused(const json& body) {
  auto r = translate_sdk_build(body);
  EXPECT_FALSE(r.has_value()) << body.dump();
  return r ? "" : r.error().message();
}

TEST(TemplateSteps, StepsBecomeDockerfileLines) {
  json body = {{"fromImage", "127.0.0.1:5000/tiny:1"},
               {"startCmd", "serve"},
               {"readyCmd", "true"},
               {"force", false},
               {"steps",
                {{{"type", "COPY"}, {"args", {"a.txt", "/opt/", "user", "0640"}}, {"filesHash", kHash}, {"force", false}},
                 {{"type", "ENV"}, {"args", {"A", "x y", "B", ""}}},
                 {{"type", "RUN"}, {"args", {"apt-get update && echo \"$HOME\"", "root"}}},
                 {{"type", "WORKDIR"}, {"args", {"/srv/my app"}}}}}};
  auto b = translate_ok(body);
  EXPECT_EQ(b.start_cmd, "serve");
  EXPECT_EQ(b.ready_cmd, "true");
  ASSERT_EQ(b.file_hashes, std::vector<std::string>{kHash});
  EXPECT_NE(b.dockerfile.find("FROM 127.0.0.1:5000/tiny:1\n"), std::string::npos);
  EXPECT_NE(b.dockerfile.find("COPY --chown=user --chmod=0640 [\"" + kHash + "/a.txt\",\"/opt/\"]\n"),
            std::string::npos);
  EXPECT_NE(b.dockerfile.find("RUN [\"/bin/sh\",\"-c\",\"apt-get update && echo \\\"$HOME\\\"\"]\n"), std::string::npos);
  // RUN's own user is put back: the sandbox's default stays E2B's `user`.
  EXPECT_TRUE(b.dockerfile.ends_with("USER user\n")) << b.dockerfile;

  // The parser reads back exactly what the SDK sent.
  auto df = builder::parse_dockerfile(b.dockerfile);
  ASSERT_TRUE(df.has_value()) << df.error().to_string();
  bool env_seen = false, workdir_seen = false;
  for (const auto& ins : df->instructions) {
    if (ins.keyword == "ENV") {
      auto kv = builder::parse_key_values(ins.text, {}, true);
      ASSERT_TRUE(kv.has_value());
      ASSERT_EQ(kv->size(), 2u);
      EXPECT_EQ((*kv)[0].value, "x y");
      EXPECT_EQ((*kv)[1].value, "");
      env_seen = true;
    }
    if (ins.keyword == "WORKDIR") {
      auto w = builder::expand_string(ins.text, {});
      ASSERT_TRUE(w.has_value());
      EXPECT_EQ(*w, "/srv/my app");
      workdir_seen = true;
    }
    if (ins.keyword == "RUN") {
      ASSERT_TRUE(ins.json);
      EXPECT_EQ(ins.args.back(), "apt-get update && echo \"$HOME\"");
    }
  }
  EXPECT_TRUE(env_seen && workdir_seen);
  // Each Dockerfile line knows its step: FROM is the base (0), COPY step 1.
  ASSERT_GE(b.line_steps.size(), 3u);
  EXPECT_EQ(b.line_steps[1], 0u);
  EXPECT_EQ(b.line_steps[2], 1u);
}

TEST(TemplateSteps, EnvValuesWithQuotesAndDollarsStayLiteral) {
  auto b = translate_ok({{"fromImage", "debian:12"},
                         {"steps", {{{"type", "ENV"}, {"args", {"V", "a \"b\" 'c' $D \\e"}}}}}});
  auto df = builder::parse_dockerfile(b.dockerfile);
  ASSERT_TRUE(df.has_value());
  for (const auto& ins : df->instructions) {
    if (ins.keyword != "ENV") continue;
    auto kv = builder::parse_key_values(ins.text, {{"D", "expanded"}}, true);
    ASSERT_TRUE(kv.has_value()) << kv.error().to_string();
    EXPECT_EQ((*kv)[0].value, "a \"b\" 'c' $D \\e");
  }
}

TEST(TemplateSteps, WhatCannotBeBuiltIsRefusedByName) {
  EXPECT_NE(refused({{"steps", json::array()}}).find("fromImage"), std::string::npos);
  EXPECT_NE(refused({{"fromTemplate", "base"}}).find("fromTemplate"), std::string::npos);
  EXPECT_NE(refused({{"fromImage", "x:1"}, {"fromImageRegistry", {{"type", "aws"}}}}).find("\"aws\""),
            std::string::npos);
  EXPECT_NE(refused({{"fromImage", "x:1"}, {"steps", {{{"type", "HEALTHCHECK"}, {"args", {"true"}}}}}})
                .find("step 1: the step type \"HEALTHCHECK\" is not supported"),
            std::string::npos);
  // Local images are the operator's, not a caller's.
  for (const char* ref : {"oci-layout:/etc", "docker-archive:/root/x.tar", "docker://x", "scratch", "a b", "$X"})
    EXPECT_FALSE(translate_sdk_build({{"fromImage", ref}}).has_value()) << ref;
  // COPY stays inside its upload.
  EXPECT_NE(refused({{"fromImage", "x:1"},
                     {"steps", {{{"type", "COPY"}, {"args", {"../etc", "/x"}}, {"filesHash", kHash}}}}})
                .find("step 1: COPY"),
            std::string::npos);
  EXPECT_NE(refused({{"fromImage", "x:1"}, {"steps", {{{"type", "COPY"}, {"args", {"a", "/x"}}, {"filesHash", "zz"}}}}})
                .find("filesHash"),
            std::string::npos);
  EXPECT_NE(refused({{"fromImage", "x:1"}, {"steps", {{{"type", "ENV"}, {"args", {"A-B", "1"}}}}}}).find("variable name"),
            std::string::npos);
  EXPECT_NE(refused({{"fromImage", "x:1"}, {"steps", {{{"type", "ENV"}, {"args", {"A", "1\n2"}}}}}}).find("line break"),
            std::string::npos);
  EXPECT_NE(refused({{"fromImage", "x:1"}, {"steps", {{{"type", "USER"}, {"args", {"--x"}}}}}}).find("USER"),
            std::string::npos);
  EXPECT_NE(refused({{"fromImage", "x:1"}, {"steps", {{{"type", "RUN"}, {"args", json::array()}}}}}).find("RUN"),
            std::string::npos);
  EXPECT_NE(refused({{"fromImage", "x:1"}, {"steps", "RUN true"}}).find("steps must be an array"), std::string::npos);
  EXPECT_FALSE(translate_sdk_build(json::array()).has_value());
}

TEST(TemplateSteps, SetUserIsTheSandboxDefault) {
  auto b = translate_ok({{"fromImage", "x:1"},
                         {"steps",
                          {{{"type", "USER"}, {"args", {"app"}}},
                           {{"type", "RUN"}, {"args", {"apt-get install -y x", "root"}}},
                           {{"type", "RUN"}, {"args", {"whoami"}}}}}});
  EXPECT_TRUE(b.dockerfile.ends_with("USER root\nRUN [\"/bin/sh\",\"-c\",\"apt-get install -y x\"]\nUSER app\n"
                                     "RUN [\"/bin/sh\",\"-c\",\"whoami\"]\n"))
      << b.dockerfile;
}

TEST(TemplateSteps, FilesHash) {
  EXPECT_TRUE(core::valid_files_hash(kHash));
  EXPECT_FALSE(core::valid_files_hash(std::string(63, 'a')));
  EXPECT_FALSE(core::valid_files_hash(std::string(64, 'A')));
  EXPECT_FALSE(core::valid_files_hash("../" + std::string(61, 'a')));
}

}  // namespace
}  // namespace coppice::api
