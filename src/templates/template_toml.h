// A strict parser for the TOML subset Coppice writes in template.toml.
//
// Accepted, one item per line:
//   # comment                  (also after a value)
//   [section]  [a.b]           (bare names; each section at most once)
//   key = "basic string"       (escapes \b \t \n \f \r \" \\ \uXXXX \UXXXXXXXX)
//   key = 'literal string'
//   key = 42                   (decimal, optional sign, '_' between digits)
//   key = true | false
//   key = ["a", 'b', ]         (single-line arrays of strings; trailing comma ok)
// Keys are bare ([A-Za-z0-9_-]+). Anything else (floats, dates, inline tables,
// multi-line strings or arrays, quoted or dotted keys, duplicate keys) is an
// error naming the line, because these are our own files and a typo must not
// silently become a default.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/result.h"

namespace coppice::templates {

using TomlValue = std::variant<std::string, int64_t, bool, std::vector<std::string>>;

// A parsed document: keys after a [section] header are stored as
// "section.key", keys before any header as "key".
class TomlDoc {
 public:
  const std::map<std::string, TomlValue>& values() const { return values_; }
  bool has(std::string_view key) const { return values_.contains(std::string(key)); }

  // kNotFound if the key is absent, kInvalidArgument if it has another type.
  Result<std::string> get_string(std::string_view key) const;
  Result<int64_t> get_int(std::string_view key) const;
  Result<bool> get_bool(std::string_view key) const;
  Result<std::vector<std::string>> get_strings(std::string_view key) const;

  // kInvalidArgument naming the first key that is not in `known`: callers
  // use it to refuse misspelt settings.
  Status check_known_keys(std::initializer_list<std::string_view> known) const;

 private:
  friend Result<TomlDoc> parse_toml(std::string_view text);
  std::map<std::string, TomlValue> values_;
};

// Parses `text`; errors read "line N: <what is wrong>".
Result<TomlDoc> parse_toml(std::string_view text);

// Reads and parses a file (errors gain the path as context). Files over 1 MiB
// are refused: a template description is a few hundred bytes.
Result<TomlDoc> parse_toml_file(const std::string& path);

// `s` as a TOML basic string, quotes included, escaped so parse_toml reads
// back exactly `s` when `s` is UTF-8 (a TOML file is; other bytes are copied
// as they are, and parse_toml refuses the line).
std::string toml_quote(std::string_view s);
// A TOML array of basic strings: ["a", "b"].
std::string toml_array(const std::vector<std::string>& items);

}  // namespace coppice::templates
