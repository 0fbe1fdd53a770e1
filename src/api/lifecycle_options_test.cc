// The lifecycle options of a create, in the shapes the e2b SDKs send
// (2.51 and 2.45: top-level autoPause / autoPauseMemory / autoResume) and the
// SDK's own `lifecycle` shape.
#include "api/lifecycle_options.h"

#include <gtest/gtest.h>

namespace coppice::api {
namespace {

using json = nlohmann::json;

core::LifecyclePolicy parse_ok(const char* body, bool pause_supported, bool memory = true) {
  auto r = parse_lifecycle(json::parse(body), pause_supported, memory);
  EXPECT_TRUE(r.has_value()) << body << ": " << (r ? "" : r.error().to_string());
  return r ? *r : core::LifecyclePolicy{};
}

std::string refused(const char* body, bool pause_supported, bool memory = true) {
  auto r = parse_lifecycle(json::parse(body), pause_supported, memory);
  EXPECT_FALSE(r.has_value()) << body;
  if (r) return "";
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument) << body;
  return r.error().message();
}

TEST(LifecycleOptions, NothingAskedIsKillOnTimeout) {
  for (bool supported : {false, true}) {
    auto p = parse_ok("{}", supported);
    EXPECT_EQ(p, core::LifecyclePolicy{});
    EXPECT_FALSE(p.pause);
    EXPECT_TRUE(p.keep_memory);
    EXPECT_FALSE(p.auto_resume);
    EXPECT_EQ(parse_ok(R"({"autoPause":null,"autoResume":null,"lifecycle":null})", supported), core::LifecyclePolicy{});
  }
}

TEST(LifecycleOptions, WhatTheSdksSendForKillIsAccepted) {
  // lifecycle: {onTimeout: 'kill', autoResume: false} as 2.51 and 2.45 send it.
  auto p = parse_ok(R"({"templateID":"base","autoPause":false,"autoResume":{"enabled":false}})", false);
  EXPECT_FALSE(p.pause);
  EXPECT_FALSE(p.auto_resume);
  EXPECT_EQ(parse_ok(R"({"lifecycle":{"onTimeout":"kill","autoResume":false}})", false), p);
  EXPECT_EQ(parse_ok(R"({"lifecycle":{"onTimeout":{"action":"kill"}}})", false), p);
  EXPECT_EQ(parse_ok(R"({"autoResume":false})", false), p);  // a bare boolean too
  // Both shapes at once, agreeing.
  EXPECT_EQ(parse_ok(R"({"autoPause":false,"lifecycle":{"onTimeout":"kill"}})", false), p);
}

TEST(LifecycleOptions, PauseOnTimeoutIsRefusedUntilTheGatewayCanDoIt) {
  for (const char* body : {R"({"autoPause":true})", R"({"autoPause":true,"autoPauseMemory":false})",
                           R"({"autoPause":true,"autoResume":{"enabled":true}})",
                           R"({"lifecycle":{"onTimeout":"pause"}})",
                           R"({"lifecycle":{"onTimeout":{"action":"pause","keepMemory":true},"autoResume":true}})"}) {
    EXPECT_NE(refused(body, false).find("not supported by this gateway yet"), std::string::npos) << body;
  }
}

TEST(LifecycleOptions, WithFilesOnlyPauseOnlyAutoPauseMemoryFalseIsTaken) {
  auto p = parse_ok(R"({"autoPause":true,"autoPauseMemory":false})", true, false);
  EXPECT_TRUE(p.pause);
  EXPECT_FALSE(p.keep_memory);
  EXPECT_EQ(parse_ok(R"({"lifecycle":{"onTimeout":{"action":"pause","keepMemory":false}}})", true, false), p);
  for (const char* body : {R"({"autoPause":true})", R"({"autoPause":true,"autoResume":{"enabled":true}})",
                           R"({"lifecycle":{"onTimeout":"pause"}})"}) {
    EXPECT_NE(refused(body, true, false).find("autoPauseMemory: false"), std::string::npos) << body;
  }
}

TEST(LifecycleOptions, WithPauseSupportedTheFieldsBecomeThePolicy) {
  auto p = parse_ok(R"({"autoPause":true,"autoPauseMemory":false})", true);
  EXPECT_TRUE(p.pause);
  EXPECT_FALSE(p.keep_memory);
  EXPECT_FALSE(p.auto_resume);
  p = parse_ok(R"({"autoPause":true,"autoResume":{"enabled":true}})", true);
  EXPECT_TRUE(p.pause);
  EXPECT_TRUE(p.keep_memory);
  EXPECT_TRUE(p.auto_resume);
  EXPECT_EQ(parse_ok(R"({"lifecycle":{"onTimeout":{"action":"pause","keepMemory":true},"autoResume":true}})", true), p);
  // What info reports, and what the store keeps, round trip.
  EXPECT_EQ(core::to_e2b_json(p), json::parse(R"({"onTimeout":"pause","autoResume":true})"));
  EXPECT_EQ(core::lifecycle_from_store_json(core::to_store_json(p)), p);
  core::LifecyclePolicy files_only{true, false, false};
  EXPECT_EQ(core::lifecycle_from_store_json(core::to_store_json(files_only)), files_only);
  EXPECT_EQ(core::lifecycle_from_store_json(json()), core::LifecyclePolicy{});  // records from before
}

TEST(LifecycleOptions, CombinationsE2bRefusesAreRefused) {
  for (bool supported : {false, true}) {
    EXPECT_NE(refused(R"({"autoPause":true,"autoPauseMemory":false,"autoResume":{"enabled":true}})", supported)
                  .find("autoPauseMemory: false"),
              std::string::npos);
    EXPECT_NE(refused(R"({"lifecycle":{"onTimeout":{"action":"pause","keepMemory":false},"autoResume":true}})",
                      supported)
                  .find("autoPauseMemory: false"),
              std::string::npos);
    EXPECT_NE(refused(R"({"autoResume":{"enabled":true}})", supported).find("autoPause: true"), std::string::npos);
    EXPECT_NE(refused(R"({"lifecycle":{"onTimeout":"kill","autoResume":true}})", supported).find("autoPause: true"),
              std::string::npos);
    EXPECT_NE(refused(R"({"autoPauseMemory":true})", supported).find("autoPause: true"), std::string::npos);
    EXPECT_NE(refused(R"({"autoPause":false,"autoPauseMemory":false})", supported).find("autoPause: true"),
              std::string::npos);
    EXPECT_NE(refused(R"({"lifecycle":{"onTimeout":{"action":"kill","keepMemory":false}}})", supported)
                  .find("only allowed with action \"pause\""),
              std::string::npos);
    EXPECT_NE(refused(R"({"autoPause":false,"lifecycle":{"onTimeout":"pause"}})", supported).find("disagree"),
              std::string::npos);
  }
}

TEST(LifecycleOptions, BadTypesNameTheField) {
  struct Case {
    const char* body;
    const char* names;
  } cases[] = {
      {R"({"autoPause":"yes"})", "autoPause must be a boolean"},
      {R"({"autoPause":1})", "autoPause must be a boolean"},
      {R"({"autoPauseMemory":"no"})", "autoPauseMemory must be a boolean"},
      {R"({"autoResume":"on"})", "autoResume must be an object"},
      {R"({"autoResume":{}})", "autoResume.enabled must be a boolean"},
      {R"({"autoResume":{"enabled":"true"}})", "autoResume.enabled must be a boolean"},
      {R"({"lifecycle":"kill"})", "lifecycle must be an object"},
      {R"({"lifecycle":{"onTimeout":"explode"}})", "lifecycle.onTimeout must be \"kill\" or \"pause\""},
      {R"({"lifecycle":{"onTimeout":7}})", "lifecycle.onTimeout must be"},
      {R"({"lifecycle":{"onTimeout":{}}})", "lifecycle.onTimeout.action is required"},
      {R"({"lifecycle":{"onTimeout":{"action":"stop"}}})", "lifecycle.onTimeout.action must be"},
      {R"({"lifecycle":{"onTimeout":{"action":"pause","keepMemory":0}}})", "keepMemory must be a boolean"},
      {R"({"lifecycle":{"autoResume":"false"}})", "lifecycle.autoResume must be a boolean"},
  };
  for (const auto& c : cases) {
    for (bool supported : {false, true}) EXPECT_NE(refused(c.body, supported).find(c.names), std::string::npos) << c.body;
  }
}

}  // namespace
}  // namespace coppice::api
