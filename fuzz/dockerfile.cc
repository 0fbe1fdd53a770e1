// The Dockerfile parser and its word expansion (builder/dockerfile.h): any
// text is either refused with an error naming a line, or gives instructions
// in line order with upper-case keywords; the expansion of every
// instruction's text (as words, as one string, as ENV/ARG pairs) ends in a
// value or an error, never a crash or a hang.
#include <string>

#include "builder/dockerfile.h"
#include "fuzz_check.h"

using namespace coppice;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto df = builder::parse_dockerfile(text);
  if (!df) {
    FUZZ_CHECK(df.error().message().starts_with("line "), "an error that names no line");
    return 0;
  }
  FUZZ_CHECK(df->escape == '\\' || df->escape == '`', "escape");
  int last = 0;
  const builder::VarMap vars{{"A", "a b"}, {"EMPTY", ""}, {"X", "${A}"}};
  for (const auto& ins : df->instructions) {
    FUZZ_CHECK(ins.line > last, "instructions out of line order");
    last = ins.line;
    FUZZ_CHECK(!ins.keyword.empty(), "empty keyword");
    for (char c : ins.keyword) FUZZ_CHECK(!(c >= 'a' && c <= 'z'), "keyword not upper case");
    FUZZ_CHECK(!ins.args.empty() || (ins.json && (ins.keyword == "CMD" || ins.keyword == "ENTRYPOINT")),
               "no arguments");
    FUZZ_CHECK(ins.json || ins.args.size() == 1, "shell form with several arguments");
    if (auto w = builder::expand_words(ins.text, vars, df->escape); !w) FUZZ_CHECK(!w.error().message().empty(), "words");
    if (auto s = builder::expand_string(ins.text, vars, df->escape); !s) FUZZ_CHECK(!s.error().message().empty(), "string");
    (void)builder::parse_key_values(ins.text, vars, true, df->escape);
    (void)builder::parse_key_values(ins.text, vars, false, df->escape);
    (void)builder::shell_join(ins.args);
  }
  return 0;
}
