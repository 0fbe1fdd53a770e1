// The template recipe parser (builder/recipe.h): any text is either refused
// with an error or gives a normalised recipe; a recipe written back out from
// what was parsed reads back to the same recipe (same canonical text), so
// normalisation is stable and the recipe hash does not drift.
#include <string>

#include "builder/recipe.h"
#include "fuzz_check.h"
#include "templates/template_toml.h"

using namespace coppice;
using coppice::templates::toml_array;
using coppice::templates::toml_quote;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto r = builder::parse_recipe(text, "fuzz", "/nonexistent");
  if (!r) {
    FUZZ_CHECK(!r.error().message().empty(), "error without a message");
    return 0;
  }
  std::string canon = builder::canonical_recipe(*r);

  std::string out = "name = " + toml_quote(r->name) + "\n";
  out += "suite = " + toml_quote(r->suite) + "\n";
  out += "variant = " + toml_quote(r->variant) + "\n";
  out += "packages = " + toml_array(r->packages) + "\n";
  out += "sources = " + toml_array(r->sources) + "\n";
  out += "exclude_paths = " + toml_array(r->exclude_paths) + "\n";
  std::vector<std::string> files;
  for (const auto& f : r->files) files.push_back(f.src + ":" + f.dst);
  out += "files = " + toml_array(files) + "\n";
  out += "env = " + toml_array(r->env) + "\n";
  out += "start_cmd = " + toml_quote(r->start_cmd) + "\n";
  out += "ready_cmd = " + toml_quote(r->ready_cmd) + "\n";
  if (r->cpu_count) out += "cpu_count = " + std::to_string(r->cpu_count) + "\n";
  if (r->memory_mb) out += "memory_mb = " + std::to_string(r->memory_mb) + "\n";

  auto again = builder::parse_recipe(out, "other", "/nonexistent");
  if (!again) std::fprintf(stderr, "reparse of\n%s\nfailed: %s\n", out.c_str(), again.error().message().c_str());
  FUZZ_CHECK(again.has_value(), "a parsed recipe written back out does not parse");
  FUZZ_CHECK(again->name == r->name, "name changed");
  FUZZ_CHECK(builder::canonical_recipe(*again) == canon, "canonical recipe changed on a round trip");
  return 0;
}
