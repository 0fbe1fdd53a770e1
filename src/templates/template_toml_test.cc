#include "templates/template_toml.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace coppice::templates {
namespace {

TEST(TemplateToml, ParsesTheSubset) {
  auto doc = parse_toml(R"(# a template
backend = "ns"   # trailing comment
ro_binds = ["/usr", '/lib', ]
empty = []
cpu_count = 1
memory_mb = 1_024
neg = -42
plus = +7
big = -9223372036854775808
yes = true
no = false
literal = 'C:\path\no-escapes'
escaped = "tab\there \"q\" back\\slash \u00e9 \U0001F600"
unicode = "héllo"

[start]
cmd = "python3 -m http.server"
[ready . check ]
port = 8080
)");
  ASSERT_TRUE(doc.has_value()) << doc.error().to_string();
  EXPECT_EQ(*doc->get_string("backend"), "ns");
  EXPECT_EQ(*doc->get_strings("ro_binds"), (std::vector<std::string>{"/usr", "/lib"}));
  EXPECT_TRUE(doc->get_strings("empty")->empty());
  EXPECT_EQ(*doc->get_int("cpu_count"), 1);
  EXPECT_EQ(*doc->get_int("memory_mb"), 1024);
  EXPECT_EQ(*doc->get_int("neg"), -42);
  EXPECT_EQ(*doc->get_int("plus"), 7);
  EXPECT_EQ(*doc->get_int("big"), INT64_MIN);
  EXPECT_TRUE(*doc->get_bool("yes"));
  EXPECT_FALSE(*doc->get_bool("no"));
  EXPECT_EQ(*doc->get_string("literal"), "C:\\path\\no-escapes");
  EXPECT_EQ(*doc->get_string("escaped"), "tab\there \"q\" back\\slash \xc3\xa9 \xf0\x9f\x98\x80");
  EXPECT_EQ(*doc->get_string("unicode"), "h\xc3\xa9llo");
  EXPECT_EQ(*doc->get_string("start.cmd"), "python3 -m http.server");
  EXPECT_EQ(*doc->get_int("ready.check.port"), 8080);
  EXPECT_EQ(doc->values().size(), 15u);
}

TEST(TemplateToml, EmptyAndCrlf) {
  EXPECT_TRUE(parse_toml("")->values().empty());
  EXPECT_TRUE(parse_toml("\n\n  # only a comment\n")->values().empty());
  auto doc = parse_toml("a = 1\r\nb = \"x\"\r\n");
  ASSERT_TRUE(doc.has_value()) << doc.error().to_string();
  EXPECT_EQ(*doc->get_int("a"), 1);
  EXPECT_EQ(*doc->get_string("b"), "x");
}

TEST(TemplateToml, TypedGetters) {
  auto doc = parse_toml("n = 1\ns = \"x\"\n");
  ASSERT_TRUE(doc.has_value());
  EXPECT_EQ(doc->get_string("n").error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(doc->get_string("n").error().message().find("not an integer"), std::string::npos);
  EXPECT_EQ(doc->get_int("missing").error().code(), ErrorCode::kNotFound);
  EXPECT_TRUE(doc->has("s"));
  EXPECT_FALSE(doc->has("t"));
  EXPECT_TRUE(doc->check_known_keys({"n", "s", "other"}).has_value());
  auto unknown = doc->check_known_keys({"n"});
  ASSERT_FALSE(unknown.has_value());
  EXPECT_NE(unknown.error().message().find("\"s\""), std::string::npos);
}

struct BadCase {
  const char* text;
  int line;
  const char* fragment;  // expected in the message
};

TEST(TemplateToml, MalformedInputNamesTheLine) {
  const BadCase cases[] = {
      {"a = 1\na = 2\n", 2, "duplicate key \"a\" (first defined on line 1)"},
      {"a = \n", 1, "missing value"},
      {"a 1\n", 1, "expected '='"},
      {"= 1\n", 1, "expected a key"},
      {"\"a\" = 1\n", 1, "quoted keys"},
      {"a.b = 1\n", 1, "dotted keys"},
      {"x = 1\n\na = \"unterminated\n", 3, "unterminated string"},
      {"a = 'unterminated\n", 1, "unterminated string"},
      {"a = \"\\q\"\n", 1, "unknown escape \\q"},
      {"a = \"\\u12\"\n", 1, "short \\u escape"},
      {"a = \"\\uD800\"\n", 1, "Unicode scalar"},
      {"a = \"\"\"x\"\"\"\n", 1, "multi-line strings"},
      {"a = 1.5\n", 1, "only decimal integers"},
      {"a = 0x10\n", 1, "only decimal integers"},
      {"a = 1979-05-27\n", 1, "unsupported value"},
      {"a = 01\n", 1, "leading zero"},
      {"a = 1__0\n", 1, "misplaced '_'"},
      {"a = 10_\n", 1, "misplaced '_'"},
      {"a = 9223372036854775808\n", 1, "out of range"},
      {"a = tru\n", 1, "unsupported value"},
      {"a = trueish\n", 1, "unsupported value"},
      {"a = {x = 1}\n", 1, "inline tables"},
      {"a = [1, 2]\n", 1, "only strings"},
      {"a = [\"x\"\n", 1, "unterminated array"},
      {"a = [\n\"x\"]\n", 1, "unterminated array"},
      {"a = [\"x\" \"y\"]\n", 1, "expected ',' or ']'"},
      {"a = \"x\" y\n", 1, "after the value"},
      {"a = 1 2\n", 1, "after the value"},
      {"[s]\n[s]\n", 2, "already defined on line 1"},
      {"[s\n", 1, "expected ']'"},
      {"[[s]]\n", 1, "arrays of tables"},
      {"[]\n", 1, "expected a key"},
      {"[s] x\n", 1, "after the value"},
      {"s = 1\n[s]\n", 2, "already defined"},
      {"[a]\nb = 1\n[a.b]\n", 3, "already defined"},
      {"a = \"bad \x01 char\"\n", 1, "control character"},
      {"a = \"\xff\"\n", 1, "UTF-8"},
      {"a = 1 # \x01\n", 1, "control character"},
  };
  for (const auto& c : cases) {
    auto doc = parse_toml(c.text);
    ASSERT_FALSE(doc.has_value()) << "accepted: " << c.text;
    EXPECT_EQ(doc.error().code(), ErrorCode::kInvalidArgument) << c.text;
    const std::string& msg = doc.error().message();
    EXPECT_TRUE(msg.starts_with("line " + std::to_string(c.line) + ": ")) << c.text << " -> " << msg;
    EXPECT_NE(msg.find(c.fragment), std::string::npos) << c.text << " -> " << msg;
  }
}

TEST(TemplateToml, QuoteRoundTrips) {
  const std::string samples[] = {"", "plain", "a \"quoted\" \\ value", "new\nline\ttab\rcr",
                                 std::string("nul\0ctl\x7f", 8), "h\xc3\xa9llo"};
  for (const auto& s : samples) {
    auto doc = parse_toml("k = " + toml_quote(s) + "\n");
    ASSERT_TRUE(doc.has_value()) << doc.error().to_string();
    EXPECT_EQ(*doc->get_string("k"), s);
  }
}

TEST(TemplateToml, ParseFile) {
  std::filesystem::path dir = std::filesystem::temp_directory_path() /
                              ("coppice-toml-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  {
    std::ofstream(dir / "ok.toml") << "a = \"b\"\n";
    std::ofstream(dir / "bad.toml") << "a = \"b\"\nc = \n";
  }
  auto ok = parse_toml_file((dir / "ok.toml").string());
  ASSERT_TRUE(ok.has_value()) << ok.error().to_string();
  EXPECT_EQ(*ok->get_string("a"), "b");

  auto bad = parse_toml_file((dir / "bad.toml").string());
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message().find("bad.toml: line 2: missing value"), std::string::npos)
      << bad.error().message();

  auto missing = parse_toml_file((dir / "missing.toml").string());
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace coppice::templates
