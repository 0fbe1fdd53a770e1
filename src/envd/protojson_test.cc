#include "envd/protojson.h"

#include <gtest/gtest.h>

namespace coppice::pj {
namespace {

TEST(ProtoJson, FieldsAcceptCamelAndSnakeCase) {
  auto camel = json::parse(R"({"exitCode": 3})");
  auto snake = json::parse(R"({"exit_code": 4})");
  EXPECT_EQ(**get_int(camel, "exitCode"), 3);
  EXPECT_EQ(**get_int(snake, "exitCode"), 4);
  EXPECT_EQ(snake_case("includeEntry"), "include_entry");
  EXPECT_EQ(field(json::parse(R"({"a":null})"), "a"), nullptr) << "null is absent";
  EXPECT_FALSE(get_string(json::parse("{}"), "missing")->has_value());
}

TEST(ProtoJson, Int64AsStringOrNumber) {
  EXPECT_EQ(**get_int(json::parse(R"({"size":"9007199254740993"})"), "size"), 9007199254740993LL);
  EXPECT_EQ(**get_int(json::parse(R"({"size":-12})"), "size"), -12);
  EXPECT_EQ(**get_int(json::parse(R"({"size":"-7"})"), "size"), -7);
  EXPECT_EQ(**get_int(json::parse(R"({"size":5.0})"), "size"), 5);
  for (const char* bad : {R"({"size":"12x"})", R"({"size":""})", R"({"size":"-"})", R"({"size":1.5})",
                          R"({"size":true})", R"({"size":"99999999999999999999"})", R"({"size":[1]})",
                          // Numbers beyond int64: a float does not convert (found by fuzz_protojson),
                          // nor does an unsigned one above INT64_MAX.
                          R"({"size":388888888888877777333333333})", R"({"size":-1e300})", R"({"size":9.3e18})",
                          R"({"size":18446744073709551615})"}) {
    auto r = get_int(json::parse(bad), "size");
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message().find("size"), std::string::npos) << "the error names the field";
  }
}

TEST(ProtoJson, EnumsByNameOrNumber) {
  std::vector<std::pair<std::string_view, int>> sig = {{"SIGNAL_SIGTERM", 15}, {"SIGNAL_SIGKILL", 9}};
  EXPECT_EQ(**get_enum(json::parse(R"({"signal":"SIGNAL_SIGKILL"})"), "signal", sig), 9);
  EXPECT_EQ(**get_enum(json::parse(R"({"signal":15})"), "signal", sig), 15);
  EXPECT_FALSE(get_enum(json::parse(R"({"signal":"SIGNAL_NOPE"})"), "signal", sig).has_value());
  EXPECT_FALSE(get_enum(json::parse(R"({"signal":{}})"), "signal", sig).has_value());
}

TEST(ProtoJson, BytesAreBase64BothAlphabets) {
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  for (size_t n = 0; n < 8; ++n) {
    auto enc = base64_encode(all.substr(0, n));
    EXPECT_EQ(*base64_decode(enc), all.substr(0, n)) << n;
  }
  EXPECT_EQ(base64_encode("hi\n"), "aGkK");
  EXPECT_EQ(*base64_decode("aGkK"), "hi\n");
  EXPECT_EQ(*base64_decode("_-8"), *base64_decode("/+8")) << "URL-safe alphabet";
  EXPECT_EQ(*base64_decode("aGk"), "hi") << "padding optional";
  EXPECT_FALSE(base64_decode("a").has_value());
  EXPECT_FALSE(base64_decode("a$bc").has_value());
  EXPECT_FALSE(get_bytes(json::parse(R"({"stdin":"!!"})"), "stdin").has_value());
  EXPECT_EQ(**get_bytes(json::parse(R"({"stdin":"aGkK"})"), "stdin"), "hi\n");
}

TEST(ProtoJson, MapsListsAndMessagesAreTypeChecked) {
  auto m = json::parse(R"({"envs":{"A":"1","B":"2"},"args":["-l","-c"],"process":{"cmd":"x"}})");
  EXPECT_EQ(get_string_map(m, "envs")->at("B"), "2");
  EXPECT_EQ(get_string_list(m, "args")->size(), 2u);
  EXPECT_NE(*get_message(m, "process"), nullptr);
  EXPECT_EQ(*get_message(m, "pty"), nullptr);
  EXPECT_FALSE(get_string_map(json::parse(R"({"envs":{"A":1}})"), "envs").has_value());
  EXPECT_FALSE(get_string_list(json::parse(R"({"args":"-l"})"), "args").has_value());
  EXPECT_FALSE(get_string_list(json::parse(R"({"args":[1]})"), "args").has_value());
  EXPECT_FALSE(get_message(json::parse(R"({"process":"x"})"), "process").has_value());
  EXPECT_FALSE(get_bool(json::parse(R"({"stdin":"true"})"), "stdin").has_value());
  EXPECT_FALSE(get_string(json::parse(R"({"path":7})"), "path").has_value());
}

TEST(ProtoJson, UnknownFieldsAreIgnored) {
  auto m = json::parse(R"({"path":"/x","somethingNew":{"deep":[1,2]},"another_one":5})");
  EXPECT_EQ(**get_string(m, "path"), "/x");
}

TEST(ProtoJson, TimestampsAreRfc3339WithTrimmedNanos) {
  EXPECT_EQ(timestamp({0, 0}), "1970-01-01T00:00:00Z");
  EXPECT_EQ(timestamp({1700000000, 500000000}), "2023-11-14T22:13:20.500Z");
  EXPECT_EQ(timestamp({1700000000, 123456000}), "2023-11-14T22:13:20.123456Z");
  EXPECT_EQ(timestamp({1700000000, 123456789}), "2023-11-14T22:13:20.123456789Z");
  EXPECT_EQ(int64(42), json("42"));
}

}  // namespace
}  // namespace coppice::pj
