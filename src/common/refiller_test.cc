#include "common/refiller.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "sys/background.h"

namespace coppice {
namespace {

struct Counters {
  std::atomic<int> made{0}, discarded{0}, running{0}, max_running{0};
};

Refiller<int>::Post post_to(sys::BackgroundPool& pool) {
  return [&pool](std::function<void()> job) { pool.post(std::move(job)); };
}

TEST(Refiller, FillsToTargetAndRefillsWhatIsTaken) {
  sys::BackgroundPool pool(2);
  Counters c;
  RefillPolicy p;
  p.target = 5;
  Refiller<int> r(post_to(pool), p, [&]() -> std::optional<int> { return ++c.made; },
                  [&](int&) { ++c.discarded; });
  r.start();
  ASSERT_TRUE(r.wait_ready(5, std::chrono::seconds(5)));
  EXPECT_EQ(r.ready(), 5u);
  auto a = r.take();
  ASSERT_TRUE(a);
  EXPECT_EQ(*a, 1) << "oldest first";
  ASSERT_TRUE(r.wait_ready(5, std::chrono::seconds(5)));
  EXPECT_EQ(c.made.load(), 6);
  EXPECT_EQ(r.hits_misses().first, 1u);
  r.stop();
  EXPECT_EQ(c.discarded.load(), 5);
  EXPECT_FALSE(r.take());
}

TEST(Refiller, RunsInParallelOnlyBelowTheLowMark) {
  sys::BackgroundPool pool(8);
  Counters c;
  std::atomic<bool> slow{true};
  auto make = [&]() -> std::optional<int> {
    int now = ++c.running;
    int prev = c.max_running.load();
    while (now > prev && !c.max_running.compare_exchange_weak(prev, now)) {
    }
    if (slow) std::this_thread::sleep_for(std::chrono::milliseconds(30));
    --c.running;
    return ++c.made;
  };
  RefillPolicy p;
  p.target = 8;
  p.max_parallel = 4;
  Refiller<int> r(post_to(pool), p, make, [&](int&) {});
  r.start();
  ASSERT_TRUE(r.wait_ready(8, std::chrono::seconds(10)));
  EXPECT_EQ(c.max_running.load(), 4) << "empty: below the low mark, max_parallel at once";
  // At the target, one take leaves 7 >= low mark 4: refills one at a time.
  c.max_running = 0;
  for (int i = 0; i < 2; ++i) (void)r.take();
  ASSERT_TRUE(r.wait_ready(8, std::chrono::seconds(10)));
  EXPECT_EQ(c.max_running.load(), 1);
}

TEST(Refiller, GateHoldsBackOnlyRefillsThatAreNotUrgent) {
  sys::BackgroundPool pool(2);
  std::atomic<int> gated{0};
  RefillPolicy p;
  p.target = 4;
  Refiller<int> r(post_to(pool), p, [] { return std::optional<int>(1); }, [](int&) {}, [&] { ++gated; });
  r.start();
  ASSERT_TRUE(r.wait_ready(4, std::chrono::seconds(5)));
  int after_fill = gated.load();
  EXPECT_LE(after_fill, 2) << "the first makes (below the low mark of 2) are urgent";
  (void)r.take();
  ASSERT_TRUE(r.wait_ready(4, std::chrono::seconds(5)));
  EXPECT_EQ(gated.load(), after_fill + 1);
}

TEST(Refiller, FailuresBackOffInsteadOfSpinning) {
  sys::BackgroundPool pool(2);
  std::atomic<int> tries{0};
  RefillPolicy p;
  p.target = 3;
  p.max_parallel = 1;
  Refiller<int> r(post_to(pool), p, [&]() -> std::optional<int> {
    ++tries;
    return std::nullopt;
  }, [](int&) {});
  r.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  // 250 ms then 500 ms between tries: about two in 600 ms, never hundreds.
  EXPECT_GE(tries.load(), 1);
  EXPECT_LE(tries.load(), 3);
  r.stop();
}

TEST(Refiller, GiveKeepsUpToKeepMaxAndTargetChangesDiscardSurplus) {
  sys::BackgroundPool pool(1);
  std::atomic<int> discarded{0};
  RefillPolicy p;
  p.target = 0;
  p.keep_max = 2;
  Refiller<int> r(post_to(pool), p, [] { return std::optional<int>(0); }, [&](int&) { ++discarded; });
  r.start();
  int a = 1, b = 2, c = 3;
  EXPECT_TRUE(r.give(a));
  EXPECT_TRUE(r.give(b));
  EXPECT_FALSE(r.give(c)) << "beyond keep_max the caller keeps it";
  EXPECT_EQ(r.ready(), 2u);
  r.set_target(1);
  EXPECT_EQ(r.ready(), 2u) << "keep_max still allows two";
  auto drained = r.drain();
  EXPECT_EQ(drained.size(), 2u);
  EXPECT_EQ(r.target(), 0u);
  EXPECT_EQ(discarded.load(), 0);
}

TEST(Refiller, StopWaitsForMakesInFlightAndDiscardsTheirWork) {
  sys::BackgroundPool pool(2);
  std::atomic<int> discarded{0};
  std::atomic<bool> started{false};
  RefillPolicy p;
  p.target = 1;
  Refiller<int> r(post_to(pool), p, [&] {
    started = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    return std::optional<int>(1);
  }, [&](int&) { ++discarded; });
  r.start();
  while (!started) std::this_thread::yield();
  r.stop();
  EXPECT_EQ(r.in_flight(), 0u);
  EXPECT_EQ(discarded.load(), 1) << "made after stop began: discarded, not leaked";
}

}  // namespace
}  // namespace coppice
