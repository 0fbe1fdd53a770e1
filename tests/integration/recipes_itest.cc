// The shipped recipes (templates/recipes) parse, and the Debian-built
// templates match E2B's base: sudo, `python` for python3, and a
// passwordless sudo rule for `user` that sudo will accept.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "builder/recipe.h"
#include "sys/fsutil.h"

namespace coppice::builder {
namespace {

class ShippedRecipe : public ::testing::TestWithParam<const char*> {};

TEST_P(ShippedRecipe, GivesUserPasswordlessSudoAndPython) {
  const std::string path = std::string(COPPICE_SOURCE_DIR "/templates/recipes/") + GetParam();
  auto r = load_recipe(path);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  for (const char* pkg : {"sudo", "python3", "python-is-python3"}) {
    EXPECT_NE(std::find(r->packages.begin(), r->packages.end(), pkg), r->packages.end()) << pkg;
  }
  auto entries = list_added_entries(*r);
  ASSERT_TRUE(entries.has_value()) << entries.error().to_string();
  auto rule = std::find_if(entries->begin(), entries->end(),
                           [](const AddedEntry& e) { return e.dst == "/etc/sudoers.d/user"; });
  ASSERT_NE(rule, entries->end());
  EXPECT_EQ(rule->kind, AddedEntry::kFile);
  // sudo ignores a rule file that its group or others may write.
  EXPECT_EQ(rule->mode & 022, 0u) << std::oct << rule->mode;
  auto text = sys::read_file(rule->src);
  ASSERT_TRUE(text.has_value());
  // No host name lookup (a sandbox's name is in no /etc/hosts): no warning
  // from sudo on every call.
  EXPECT_EQ(*text, "Defaults !fqdn\nuser ALL=(ALL:ALL) NOPASSWD: ALL\n");
}

INSTANTIATE_TEST_SUITE_P(Recipes, ShippedRecipe, ::testing::Values("base.toml", "code-interpreter-v1.toml"));

}  // namespace
}  // namespace coppice::builder
