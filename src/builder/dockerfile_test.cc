#include "builder/dockerfile.h"

#include <gtest/gtest.h>

#include "builder/dockerfile_exec.h"

namespace coppice::builder {
namespace {

Dockerfile parse_ok(std::string_view text) {
  auto r = parse_dockerfile(text);
  EXPECT_TRUE(r) << (r ? "" : r.error().to_string());
  return r ? *r : Dockerfile{};
}

std::string parse_error(std::string_view text) {
  auto r = parse_dockerfile(text);
  EXPECT_FALSE(r);
  return r ? "" : r.error().message();
}

TEST(Dockerfile, KeywordsLinesCommentsAndBlankLines) {
  auto df = parse_ok("# a comment\n\nfrom busybox:1\n  # indented comment\nrun echo hi\n\nCmd [\"a\", \"b c\"]\n");
  ASSERT_EQ(df.instructions.size(), 3u);
  EXPECT_EQ(df.instructions[0].keyword, "FROM");
  EXPECT_EQ(df.instructions[0].line, 3);
  EXPECT_EQ(df.instructions[0].text, "busybox:1");
  EXPECT_EQ(df.instructions[1].keyword, "RUN");
  EXPECT_EQ(df.instructions[1].line, 5);
  EXPECT_FALSE(df.instructions[1].json);
  EXPECT_EQ(df.instructions[1].args, std::vector<std::string>{"echo hi"});
  EXPECT_EQ(df.instructions[2].keyword, "CMD");
  EXPECT_TRUE(df.instructions[2].json);
  EXPECT_EQ(df.instructions[2].args, (std::vector<std::string>{"a", "b c"}));
}

TEST(Dockerfile, ContinuationsJoinLinesAndSkipCommentsInside) {
  auto df = parse_ok("RUN echo a \\\n    b \\\n# not part of it\n\n    c\nENV X=1\n");
  ASSERT_EQ(df.instructions.size(), 2u);
  EXPECT_EQ(df.instructions[0].text, "echo a     b     c");
  EXPECT_EQ(df.instructions[0].line, 1);
  EXPECT_EQ(df.instructions[1].line, 6);
  // No blank before the escape: the words meet, as in Docker.
  EXPECT_EQ(parse_ok("RUN echo a\\\nb\n").instructions[0].text, "echo ab");
  // CRLF line ends; a continuation at the end of the file still ends the instruction.
  EXPECT_EQ(parse_ok("RUN x \\\r\n y\r\n").instructions[0].text, "x  y");
  EXPECT_EQ(parse_ok("RUN x \\").instructions[0].text, "x");
}

TEST(Dockerfile, EscapeDirectiveChangesTheContinuationCharacter) {
  auto df = parse_ok("# escape=`\n# syntax=docker/dockerfile:1\nRUN dir c:\\ `\n  /b\n");
  EXPECT_EQ(df.escape, '`');
  ASSERT_EQ(df.instructions.size(), 1u);
  EXPECT_EQ(df.instructions[0].text, "dir c:\\   /b");
  // A directive after anything else is a plain comment.
  EXPECT_EQ(parse_ok("FROM x\n# escape=`\nRUN a \\\n b\n").escape, '\\');
  EXPECT_NE(parse_error("# escape=x\nFROM a\n").find("line 1: escape must be"), std::string::npos);
}

TEST(Dockerfile, FlagsAndForms) {
  auto df = parse_ok("COPY --chown=app:app --chmod=0644 a b /dst/\nADD [\"x y\", \"/z\"]\nRUN [not json\n");
  ASSERT_EQ(df.instructions.size(), 3u);
  const auto& c = df.instructions[0];
  ASSERT_EQ(c.flags.size(), 2u);
  EXPECT_EQ(c.flags[0], (std::pair<std::string, std::string>{"chown", "app:app"}));
  EXPECT_EQ(c.flags[1], (std::pair<std::string, std::string>{"chmod", "0644"}));
  EXPECT_EQ(c.text, "a b /dst/");
  EXPECT_TRUE(df.instructions[1].json);
  EXPECT_EQ(df.instructions[1].args, (std::vector<std::string>{"x y", "/z"}));
  // Not a valid JSON array of strings: the shell form, as Docker reads it.
  EXPECT_FALSE(df.instructions[2].json);
  EXPECT_EQ(df.instructions[2].args, std::vector<std::string>{"[not json"});
  EXPECT_FALSE(parse_ok("CMD [1, 2]\n").instructions[0].json);
  // ENV takes no JSON form.
  EXPECT_FALSE(parse_ok("ENV [\"a\"]\n").instructions[0].json);
}

TEST(Dockerfile, ErrorsNameTheLine) {
  EXPECT_EQ(parse_error("FROM a\n\nRUN\n"), "line 3: RUN needs arguments");
  EXPECT_EQ(parse_error("FROM a\nRUN --=x y\n"), "line 2: RUN: an empty flag");
  std::string nul = "FROM a\nRUN a";
  nul += '\0';
  EXPECT_EQ(parse_error(nul), "line 2: a NUL byte");
  // An empty JSON array: nothing to copy or run (found by fuzz/dockerfile.cc);
  // for CMD and ENTRYPOINT it is a command of its own (none).
  EXPECT_EQ(parse_error("FROM a\nCOPY --chown=1 []\n"), "line 2: COPY needs arguments");
  EXPECT_EQ(parse_error("FROM a\nRUN []\n"), "line 2: RUN needs arguments");
  auto cmd = parse_dockerfile("FROM a\nCMD []\n");
  ASSERT_TRUE(cmd) << cmd.error().to_string();
  EXPECT_TRUE(cmd->instructions.back().json);
  EXPECT_TRUE(cmd->instructions.back().args.empty());
}

TEST(DockerfileExpand, VariablesQuotesAndEscapes) {
  VarMap v{{"A", "one"}, {"B", "two words"}, {"E", ""}};
  auto w = expand_words("$A ${B} '$A' \"$B x\" \\$A pre${A}post ${E:-dflt} ${A:-dflt} ${A:+alt} ${E:+alt} $", v);
  ASSERT_TRUE(w) << w.error().to_string();
  EXPECT_EQ(*w, (std::vector<std::string>{"one", "two", "words", "$A", "two words x", "$A", "preonepost", "dflt", "one",
                                          "alt", "$"}));
  // The empty word of "" is a word; ${E:+alt} of an empty E is none.
  EXPECT_EQ(*expand_words("\"\" ${E:+alt}", v), std::vector<std::string>{""});
  auto s = expand_string("  /a/$A/\"b c\"  ", v);
  ASSERT_TRUE(s);
  EXPECT_EQ(*s, "/a/one/b c");
  EXPECT_FALSE(expand_words("'open", v));
  EXPECT_FALSE(expand_words("\"open", v));
  EXPECT_FALSE(expand_words("${A", v));
  EXPECT_FALSE(expand_words("${A/x/y}", v));
  EXPECT_FALSE(expand_words("${}", v));
  // With the backtick escape, a backslash is an ordinary character.
  EXPECT_EQ(*expand_words("c:\\x `$A", v, '`'), (std::vector<std::string>{"c:\\x", "$A"}));
}

TEST(DockerfileExpand, KeyValues) {
  VarMap v{{"H", "/home"}};
  auto kv = parse_key_values("A=1 B=\"two words\" C=$H/x D=", v, true);
  ASSERT_TRUE(kv) << kv.error().to_string();
  ASSERT_EQ(kv->size(), 4u);
  EXPECT_EQ((*kv)[1].value, "two words");
  EXPECT_EQ((*kv)[2].value, "/home/x");
  EXPECT_EQ((*kv)[3].value, "");
  // ENV's old form: one name, the rest its value.
  kv = parse_key_values("GREETING hello   big world", v, true);
  ASSERT_TRUE(kv);
  ASSERT_EQ(kv->size(), 1u);
  EXPECT_EQ((*kv)[0].key, "GREETING");
  EXPECT_EQ((*kv)[0].value, "hello   big world");
  // ARG: a name alone has no default.
  kv = parse_key_values("VERSION OTHER=3", v, false);
  ASSERT_TRUE(kv);
  EXPECT_FALSE((*kv)[0].has_value);
  EXPECT_EQ((*kv)[1].value, "3");
  EXPECT_FALSE(parse_key_values("A=1 B", v, true));
  EXPECT_FALSE(parse_key_values("1A=x", v, true));
  EXPECT_FALSE(parse_key_values("ONLY", v, true));
}

TEST(DockerfileExpand, ShellQuoting) {
  EXPECT_EQ(shell_quote("plain/path-1.2"), "plain/path-1.2");
  EXPECT_EQ(shell_quote(""), "''");
  EXPECT_EQ(shell_quote("it's $x"), "'it'\\''s $x'");
  EXPECT_EQ(shell_join({"/bin/sh", "-c", "echo hi > /tmp/x"}), "/bin/sh -c 'echo hi > /tmp/x'");
}

TEST(DockerfileFrom, ArgsBeforeFromAndRefusals) {
  auto df = parse_ok("ARG TAG=1\nARG REG\nFROM ${REG:-127.0.0.1:5000}/app:$TAG AS build\nRUN x\n");
  auto f = dockerfile_from(df, {});
  ASSERT_TRUE(f) << f.error().to_string();
  EXPECT_EQ(f->image, "127.0.0.1:5000/app:1");
  EXPECT_EQ(f->line, 3);
  EXPECT_EQ(f->next, 3u);
  f = dockerfile_from(df, {{"TAG", "2"}});
  ASSERT_TRUE(f);
  EXPECT_EQ(f->image, "127.0.0.1:5000/app:2");

  auto second = dockerfile_from(parse_ok("FROM a AS x\nRUN y\nFROM b\nCOPY --from=x / /\n"), {});
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().message(), "line 3: FROM: a second FROM: multi-stage builds are not supported");
  auto first = dockerfile_from(parse_ok("RUN x\nFROM a\n"), {});
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().message(), "line 1: RUN: the first instruction must be FROM (only ARG may come before it)");
  EXPECT_FALSE(dockerfile_from(parse_ok("ARG A=1\n"), {}));
  EXPECT_FALSE(dockerfile_from(parse_ok("FROM --platform=linux/arm64 a\n"), {}));
}

TEST(DockerfileExec, UnsupportedInstructionsFailWithTheirLine) {
  // Refused before anything touches the tree, so an empty rootfs will do.
  for (const char* kw : {"HEALTHCHECK CMD true", "ONBUILD RUN x", "VOLUME /data", "STOPSIGNAL SIGTERM", "FOO bar"}) {
    auto df = parse_ok(std::string("FROM scratch\nENV A=1\n") + kw + "\n");
    DockerBuildState st;
    st.rootfs = "/nonexistent";
    auto s = run_dockerfile(df, 1, {}, st);
    ASSERT_FALSE(s) << kw;
    const std::string word = std::string(kw).substr(0, std::string(kw).find(' '));
    EXPECT_EQ(s.error().message().rfind("line 3: " + word + ": ", 0), 0u) << s.error().message();
  }
  auto df = parse_ok("FROM scratch\nCOPY --from=build /a /b\n");
  DockerBuildState st;
  auto s = run_dockerfile(df, 1, {}, st);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message(), "line 2: COPY: --from (multi-stage builds) is not supported");
  df = parse_ok("FROM scratch\nADD https://example.com/x.tgz /x\n");
  s = run_dockerfile(df, 1, {}, st);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message(),
            "line 2: ADD: \"https://example.com/x.tgz\": only files from the build context can be added, not URLs");
  df = parse_ok("FROM scratch\nCOPY ../secret /x\n");
  s = run_dockerfile(df, 1, {}, st);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message(), "line 2: COPY: \"../secret\" is outside the build context");
  df = parse_ok("FROM scratch\nSHELL /bin/bash -c\n");
  EXPECT_FALSE(run_dockerfile(df, 1, {}, st));
}

TEST(DockerfileExec, NormalizeAbs) {
  EXPECT_EQ(normalize_abs("/a/./b/../c/"), "/a/c");
  EXPECT_EQ(normalize_abs("/../../x"), "/x");
  EXPECT_EQ(normalize_abs("/"), "/");
  EXPECT_EQ(normalize_abs(""), "/");
}

}  // namespace
}  // namespace coppice::builder
