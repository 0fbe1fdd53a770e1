#include "core/lifecycle.h"

#include <gtest/gtest.h>

namespace coppice::core {
namespace {

using S = SandboxState;

TEST(Lifecycle, LegalMovesPass) {
  const std::pair<S, S> legal[] = {
      {S::kPooled, S::kCreating},  {S::kPooled, S::kGone},      {S::kCreating, S::kRunning},
      {S::kCreating, S::kGone},    {S::kRunning, S::kPausing},  {S::kPausing, S::kPaused},
      {S::kPausing, S::kRunning},  {S::kPaused, S::kResuming},  {S::kResuming, S::kRunning},
      {S::kResuming, S::kPaused},  {S::kRunning, S::kKilling},  {S::kPaused, S::kKilling},
      {S::kKilling, S::kGone},     {S::kKilling, S::kRunning},  {S::kKilling, S::kPaused},
  };
  for (auto [from, to] : legal) {
    EXPECT_TRUE(check_transition("x", from, to).has_value()) << state_label(from) << " -> " << state_label(to);
  }
}

TEST(Lifecycle, IllegalMovesAreRefusedWithWhatTheSandboxIsDoing) {
  auto r = check_transition("abc", S::kPaused, S::kPausing);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(r.error().message(), "sandbox abc is already paused");

  r = check_transition("abc", S::kRunning, S::kResuming);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(r.error().message(), "sandbox abc is already running");

  r = check_transition("abc", S::kPausing, S::kKilling);
  EXPECT_TRUE(r) << "a kill may interrupt a pause in flight";
  r = check_transition("abc", S::kPausing, S::kResuming);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "sandbox abc is pausing; try again");

  r = check_transition("abc", S::kResuming, S::kPausing);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kFailedPrecondition);
}

TEST(Lifecycle, InvisibleStatesAnswerNotFound) {
  for (S from : {S::kCreating, S::kPooled, S::kKilling, S::kGone}) {
    auto r = check_transition("abc", from, S::kPausing);
    ASSERT_FALSE(r) << state_label(from);
    EXPECT_EQ(r.error().code(), ErrorCode::kNotFound) << state_label(from);
  }
  EXPECT_FALSE(check_transition("abc", S::kGone, S::kRunning));
}

TEST(Lifecycle, ASandboxWhoseEnvdDiedLeavesThroughKillingFromEveryVisibleState) {
  // E2B has no state for a dead sandbox: it is removed (Killing -> Gone) and
  // clients get "not found". A pause or resume in flight finishes first.
  for (S from : {S::kRunning, S::kPaused, S::kPausing, S::kResuming}) {
    EXPECT_TRUE(check_transition("x", from, S::kKilling).has_value()) << state_label(from);
  }
  EXPECT_TRUE(check_transition("x", S::kKilling, S::kGone).has_value());
  for (S from : {S::kCreating, S::kPooled, S::kKilling, S::kGone}) {
    auto r = check_transition("x", from, S::kKilling);
    EXPECT_FALSE(r.has_value()) << state_label(from) << ": nothing to remove twice";
  }
}

TEST(Lifecycle, NamesAsE2BReportsThem) {
  EXPECT_EQ(state_name(S::kRunning), "running");
  EXPECT_EQ(state_name(S::kPausing), "running");
  EXPECT_EQ(state_name(S::kPaused), "paused");
  EXPECT_EQ(state_name(S::kResuming), "paused");
  EXPECT_TRUE(visible(S::kPausing));
  EXPECT_FALSE(visible(S::kCreating));
  EXPECT_FALSE(visible(S::kKilling));
}

}  // namespace
}  // namespace coppice::core
