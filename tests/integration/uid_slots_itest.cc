// The uid slot allocator's pool of ready user namespaces: taken by creates,
// made again in the background. Needs root (user namespaces with a mapping
// to other host ids).
#include <gtest/gtest.h>
#include <linux/nsfs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

#include "sandbox/ns/uid_slots.h"

namespace coppice::sandbox::ns {
namespace {

TEST(UidSlots, ReadyNamespacesAreMadeAgainAsTheyAreTaken) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (user namespaces mapping other host ids)";
  // A range far from the gateway's and the other tests' (uid_base 1000000).
  UidSlots slots(3000000000u, 8, /*prepare=*/2, /*cache=*/4);
  EXPECT_EQ(slots.ready(), 2u);
  std::vector<SlotLease> held;
  for (int i = 0; i < 3; ++i) {
    auto l = slots.acquire();
    ASSERT_TRUE(l) << l.error().to_string();
    EXPECT_GE(l->userns_fd(), 0) << "every lease has its namespace, ready or made on the spot";
    held.push_back(std::move(*l));
  }
  // Two slots are ready again, without any create asking.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (slots.ready() < 2 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(slots.ready(), 2u);
  // Distinct slots, distinct host ranges.
  EXPECT_NE(held[0].host_id(), held[1].host_id());
  EXPECT_NE(held[1].host_id(), held[2].host_id());
  // Returned slots keep their namespaces for the next lease, up to the cache size.
  held.clear();
  EXPECT_LE(slots.ready(), 4u);
  EXPECT_GE(slots.ready(), 2u);
}

// The kernel charges a user namespace's per-user counts (inotify instances
// and watches, nested namespaces) one level up to the uid that owns it: each
// slot's namespace is owned by the slot's own host uid, never by host root.
TEST(UidSlots, EachNamespaceIsOwnedByItsSlotsHostUid) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (user namespaces mapping other host ids)";
  UidSlots slots(3100000000u, 4, /*prepare=*/1, /*cache=*/2);
  std::vector<SlotLease> held;
  for (int i = 0; i < 2; ++i) {  // one ready, one made on the spot
    auto l = slots.acquire();
    ASSERT_TRUE(l) << l.error().to_string();
    ASSERT_GE(l->userns_fd(), 0);
    uid_t owner = 0;
    ASSERT_EQ(::ioctl(l->userns_fd(), NS_GET_OWNER_UID, &owner), 0);
    EXPECT_EQ(owner, l->host_id());
    EXPECT_TRUE(UidSlots::is_slot_userns(l->userns_fd()));
    held.push_back(std::move(*l));
  }
  EXPECT_EQ(::geteuid(), 0u) << "making them left our own credentials alone";
}

}  // namespace
}  // namespace coppice::sandbox::ns
