#include "core/routes.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace coppice::core {
namespace {

Route route(const std::string& id, SandboxState st = SandboxState::kRunning) {
  Route r;
  r.id = id;
  r.state = st;
  r.handle.envd_socket = "/run/" + id;
  return r;
}

TEST(RouteTable, PublishLookupReplaceRemove) {
  RouteTable t;
  EXPECT_EQ(t.lookup("a"), nullptr);
  t.publish(route("a"));
  t.publish(route("b"));
  EXPECT_EQ(t.size(), 2u);
  auto a = t.lookup("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->handle.envd_socket, "/run/a");
  EXPECT_TRUE(a->running());
  t.publish(route("a", SandboxState::kPaused));
  EXPECT_EQ(t.size(), 2u);
  EXPECT_FALSE(t.lookup("a")->running());
  EXPECT_TRUE(a->running()) << "an entry a reader holds never changes under it";
  t.remove("a");
  t.remove("a");
  EXPECT_EQ(t.lookup("a"), nullptr);
  EXPECT_EQ(t.size(), 1u);
}

TEST(RouteTable, ReadersSeeWholeEntriesWhileTheOwnerWrites) {
  RouteTable t;
  std::atomic<bool> stop{false};
  std::atomic<long> reads{0};
  std::vector<std::thread> readers;
  for (int i = 0; i < 3; ++i) {
    readers.emplace_back([&] {
      while (!stop) {
        for (int k = 0; k < 100; ++k) {
          auto r = t.lookup("s" + std::to_string(k));
          if (r) {
            ASSERT_EQ(r->handle.envd_socket, "/run/" + r->id);
          }
          ++reads;
        }
      }
    });
  }
  // The owner writes while the readers read: at least 50 rounds, and until
  // they have read a good many times.
  for (int round = 0; round < 50 || reads.load() < 5000; ++round) {
    for (int k = 0; k < 100; ++k) t.publish(route("s" + std::to_string(k)));
    for (int k = 0; k < 100; k += 2) t.remove("s" + std::to_string(k));
  }
  stop = true;
  for (auto& r : readers) r.join();
  EXPECT_EQ(t.size(), 50u);
  EXPECT_GT(reads.load(), 0);
}

}  // namespace
}  // namespace coppice::core
