// A Dockerfile parser for the subset `coppice template build --dockerfile`
// runs (image_build.h). Parsing only: which instructions are honoured is the
// executor's business, so every instruction is returned with its line.
//
// What the parser understands, as Docker's does:
//  - parser directives at the very top (`# escape=\`` or `# escape=\\`,
//    `# syntax=...`, which is read and ignored);
//  - comment lines (first non-blank character `#`), also between the lines
//    of a continued instruction; blank lines;
//  - line continuations: the escape character as the last non-blank
//    character of a line joins the next line;
//  - keywords in any case; leading `--name=value` flags (RUN, COPY, ADD,
//    FROM); the JSON (exec) form `["a", "b"]` of RUN, CMD, ENTRYPOINT,
//    SHELL, COPY and ADD, and the shell form otherwise.
// Errors read "line N: what is wrong". Never throws.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace coppice::builder {

struct DockerInstruction {
  int line = 0;                  // where it starts (1-based)
  std::string keyword;           // upper case: "RUN"
  std::vector<std::pair<std::string, std::string>> flags;  // "--chown=a:b" -> {"chown", "a:b"}
  bool json = false;             // the exec form: `args` are the array's strings
  std::vector<std::string> args; // the exec form's strings, or one element: the rest of the line
  std::string text;              // everything after the keyword (and flags), continuations joined
};

struct Dockerfile {
  char escape = '\\';
  std::vector<DockerInstruction> instructions;
};

Result<Dockerfile> parse_dockerfile(std::string_view text);

// Variables for expansion: ARG and ENV values in scope.
using VarMap = std::map<std::string, std::string>;

// Expands $NAME, ${NAME}, ${NAME:-word} and ${NAME:+word} in `s` (an
// unknown name is empty), and splits it into words as Docker does for COPY,
// ADD, ENV, ARG, USER, WORKDIR and FROM: blanks separate words, '...' and
// "..." quote (no expansion inside '...'), the escape character takes the
// next character literally. A malformed ${...} or an unclosed quote is an
// error.
Result<std::vector<std::string>> expand_words(std::string_view s, const VarMap& vars, char escape = '\\');

// The same, as one string (quotes removed, blanks kept): WORKDIR, USER.
Result<std::string> expand_string(std::string_view s, const VarMap& vars, char escape = '\\');

// Parses ENV's and ARG's `a=b c="d e"` pairs (and ENV's old form `a b c`,
// one variable whose value is the rest). For ARG a name without `=` has no
// default: its value is empty and `has_value` false.
struct KeyValue {
  std::string key, value;
  bool has_value = true;
};
Result<std::vector<KeyValue>> parse_key_values(std::string_view text, const VarMap& vars, bool legacy_space_form,
                                               char escape = '\\');

// `s` quoted for /bin/sh: 'it'\''s'.
std::string shell_quote(std::string_view s);
// argv as one /bin/sh command line, each word quoted where it needs it.
std::string shell_join(const std::vector<std::string>& argv);

}  // namespace coppice::builder
