// The template.toml parser (templates/template_toml.h): any text is either
// refused with an error naming a line or parsed; every parsed value can be
// read back with its typed getter; a document written back out from its
// values parses to the same values; and toml_quote of any string reads back
// exactly for any UTF-8 string (the promise its header makes).
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz_check.h"
#include "templates/template_toml.h"

using namespace coppice;
using namespace coppice::templates;

namespace {
std::string write_value(const TomlValue& v) {
  if (auto* s = std::get_if<std::string>(&v)) return toml_quote(*s);
  if (auto* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  return toml_array(std::get<std::vector<std::string>>(v));
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);

  // toml_quote's promise, for the raw input as a string value when it is
  // UTF-8 (TOML text is UTF-8: other bytes cannot be written in it). The
  // JSON library's strict encoder is the independent judge of UTF-8 here.
  bool utf8 = true;
  try {
    (void)nlohmann::json(std::string(text)).dump();
  } catch (const nlohmann::json::exception&) {
    utf8 = false;
  }
  if (utf8) {
    auto quoted = parse_toml("k = " + toml_quote(text) + "\n");
    if (!quoted) std::fprintf(stderr, "toml_quote output refused: %s\n", quoted.error().message().c_str());
    FUZZ_CHECK(quoted.has_value(), "toml_quote output does not parse");
    auto back = quoted->get_string("k");
    FUZZ_CHECK(back && *back == text, "toml_quote does not read back exactly");
  }

  auto doc = parse_toml(text);
  if (!doc) {
    FUZZ_CHECK(doc.error().message().starts_with("line "), "error does not name a line");
    return 0;
  }
  // Written back: top-level keys first, then each section under its header.
  std::map<std::string, std::map<std::string, std::string>> sections;
  for (const auto& [key, v] : doc->values()) {
    size_t dot = key.rfind('.');
    std::string section = dot == std::string::npos ? "" : key.substr(0, dot);
    sections[section][dot == std::string::npos ? key : key.substr(dot + 1)] = write_value(v);
    bool typed = std::holds_alternative<std::string>(v)   ? doc->get_string(key).has_value()
                 : std::holds_alternative<int64_t>(v)     ? doc->get_int(key).has_value()
                 : std::holds_alternative<bool>(v)        ? doc->get_bool(key).has_value()
                                                          : doc->get_strings(key).has_value();
    FUZZ_CHECK(typed, "a parsed value cannot be read with its getter");
  }
  std::string out;
  for (const auto& [section, kv] : sections) {
    if (!section.empty()) out += "[" + section + "]\n";
    for (const auto& [k, v] : kv) out += k + " = " + v + "\n";
  }
  auto again = parse_toml(out);
  if (!again) std::fprintf(stderr, "reparse of\n%s\nfailed: %s\n", out.c_str(), again.error().message().c_str());
  FUZZ_CHECK(again.has_value(), "a parsed document written back out does not parse");
  FUZZ_CHECK(again->values() == doc->values(), "values changed on a round trip");
  return 0;
}
